"""The paper's claims as data: a notebook's last cell builds a :class:`Claim` per claim it
checks, writes them (:func:`write_claims`) and asserts the ``asserted`` ones (:func:`check`).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Optional, Sequence

from . import outputs

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"  # e.g. no dataset
NOT_RESOLVED = "not resolved at this profile"  # the deciding difference is inside the noise
VERDICTS = (HOLDS, FAILS, NOT_MEASURED, NOT_RESOLVED)


class ClaimFailed(AssertionError):
    """An asserted claim did not hold; the message lists each one with its numbers."""


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim as one notebook checked it (``id`` e.g. ``"table2.vfagan_below_vfa"``,
    ``section`` e.g. ``"5, Table 2"``, ``evidence`` e.g. ``"figures/<name>.png"``). ValueError:
    an unknown verdict, no ``why`` unless it holds, an asserted claim not measured or resolved."""

    id: str
    section: str
    text: str
    paper: str
    ours: str
    verdict: str
    why: str = ""
    evidence: tuple[str, ...] = ()
    asserted: bool = False

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id!r}: verdict must be one of {list(VERDICTS)}, "
                             f"got {self.verdict!r}")
        if self.verdict != HOLDS and not self.why:
            raise ValueError(f"claim {self.id!r} is {self.verdict!r}: say why (why=...)")
        if self.asserted and self.verdict in (NOT_MEASURED, NOT_RESOLVED):
            raise ValueError(f"claim {self.id!r} cannot be asserted: it is {self.verdict}")


def verdict(ok: Optional[bool]) -> str:
    """``True`` -> "holds", ``False`` -> "does not hold", ``None`` -> "not measured"."""
    return NOT_MEASURED if ok is None else (HOLDS if ok else FAILS)


def claims_dir(profile: Optional[str] = None) -> Path:
    """``results/claims/`` at ``profile`` (created)."""
    path = outputs.results_dir(profile) / "claims"
    path.mkdir(exist_ok=True)
    return path


def write_claims(notebook: str, dataset: str, claims: Sequence[Claim], *, profile: str,
                 notes: str = "") -> Path:
    """Write ``results/claims/<notebook>_<dataset>.json`` (``dataset`` "-" for none) and the
    table ``results/claims_<notebook>_<dataset>.md``; the table's path. ValueError: a repeated
    id."""
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"claim ids must be unique, got {ids}")
    data = {"notebook": notebook, "dataset": dataset, "profile": profile,
            "written": outputs.utc_now(), "notes": notes,
            "claims": [dataclasses.asdict(c) for c in claims]}
    outputs.write_atomic(claims_dir(profile) / f"{notebook}_{dataset}.json",
                         json.dumps(data, indent=2) + "\n")
    rows = [(c.section, c.text, c.paper, c.ours, c.verdict + " (asserted)" * c.asserted,
             c.why or "-") for c in claims]
    return outputs.write_table(
        f"claims_{notebook}_{dataset}", f"The paper's claims checked by notebook {notebook} on "
        f"{dataset}", ["paper", "claim", "paper's evidence", "ours", "verdict", "why"], rows,
        profile=profile, notes=notes, source=f"notebooks/{notebook}.ipynb")


def check(claims: Iterable[Claim]) -> None:
    """Raise :class:`ClaimFailed` listing every asserted claim that does not hold."""
    failed = [c for c in claims if c.asserted and c.verdict != HOLDS]
    if failed:
        raise ClaimFailed("; ".join(f"{c.id}: {c.text} (ours: {c.ours}; paper: {c.paper})"
                                    for c in failed))


def summary(claims: Sequence[Claim], where: str = "") -> str:
    """E.g. "14 of 17 claims hold<where>; 1 does not hold; 2 not measured"."""
    n = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    parts = [f"{n[HOLDS]} of {len(claims)} claims hold{where}"]
    parts += [f"{n[FAILS]} {'does' if n[FAILS] == 1 else 'do'} not hold"] * bool(n[FAILS])
    parts += [f"{n[NOT_RESOLVED]} not resolved (inside the noise)"] * bool(n[NOT_RESOLVED])
    parts += [f"{n[NOT_MEASURED]} not measured"] * bool(n[NOT_MEASURED])
    return "; ".join(parts)
