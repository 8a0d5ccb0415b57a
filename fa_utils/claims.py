"""The paper's claims as data: what each notebook checks, with the paper's evidence, our
number and a verdict, written where a report can gather them.

A notebook's last cells build a :class:`Claim` per claim it can check and call
:func:`write_claims`, which writes ``results/claims/<notebook>_<dataset>.json`` (the data)
and ``results/claims_<notebook>_<dataset>.md`` (a table to read). :func:`check` then
raises for every claim marked ``asserted`` that does not hold, so that what a notebook
asserts and what it reports cannot disagree: both come from the same objects.

Verdicts:

``"holds"`` / ``"does not hold"``
    measured at this profile; a claim that does not hold keeps its evidence and a sentence
    on why in ``why``.
``"not measured"``
    this run cannot measure it (e.g. the Inception weights or the full dataset are absent);
    ``why`` says what is missing.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from . import outputs

HOLDS = "holds"
FAILS = "does not hold"
NOT_MEASURED = "not measured"
#: Measured, but the difference that decides it is inside the noise (the claim states its rule).
NOT_RESOLVED = "not resolved at this profile"
VERDICTS = (HOLDS, FAILS, NOT_MEASURED, NOT_RESOLVED)

CLAIMS_DIR = "claims"


class ClaimFailed(AssertionError):
    """An asserted claim did not hold; the message lists each one with its numbers."""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, checked by one notebook.

    Attributes:
        id: stable key, e.g. ``"table2.vfagan_below_vfa"`` (a report row's identity).
        section: where the paper makes it, e.g. ``"5, Table 2"``.
        text: the claim in a sentence, in the paper's words where it has them.
        paper: the paper's evidence: its number(s) or the figure that shows it.
        ours: our number(s) at this profile, as text.
        verdict: one of :data:`VERDICTS`.
        why: for "does not hold" or "not measured": the reason, in a sentence.
        evidence: our figure or table names (``figures/<name>.png``, ``results/<name>.md``).
        asserted: the notebook asserts it at this profile (it must then hold).
    """

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
    """``results/claims/`` (``runs/smoke/results/claims/`` at smoke, as every result)."""
    path = outputs.results_dir(profile) / CLAIMS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_claims(notebook: str, dataset: str, claims: Sequence[Claim], *, profile: str,
                 notes: str = "") -> Path:
    """Write the claims of one notebook run: JSON data and a markdown table.

    Args:
        notebook: the notebook's stem, e.g. ``"04_vfa_gan"``.
        dataset: the dataset the run used (``"-"`` for none, e.g. the toy).
        claims: the :class:`Claim` objects, in reading order (ids unique).
        profile: the run's profile.
        notes: a paragraph under the table (budgets, features, caveats).

    Returns:
        The path of the markdown table, ``results/claims_<notebook>_<dataset>.md``.

    Raises:
        ValueError: two claims share an id.
    """
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"claim ids must be unique, got {ids}")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tag = f"{notebook}_{dataset}"
    data = {"notebook": notebook, "dataset": dataset, "profile": profile, "written": stamp,
            "notes": notes, "claims": [dataclasses.asdict(c) for c in claims]}
    path = claims_dir(profile) / f"{tag}.json"
    path.with_suffix(".json.tmp").write_text(json.dumps(data, indent=2) + "\n")
    path.with_suffix(".json.tmp").replace(path)
    rows = [(c.section, c.text, c.paper, c.ours, c.verdict + (" (asserted)" if c.asserted else ""),
             c.why or "-") for c in claims]
    return outputs.write_table(
        f"claims_{tag}", f"The paper's claims checked by notebook {notebook} on {dataset}",
        ["paper", "claim", "paper's evidence", "ours", "verdict", "why"], rows,
        profile=profile, notes=notes, source=f"notebooks/{notebook}.ipynb")


def read_claims(folder: Path) -> list[dict]:
    """The dicts :func:`write_claims` wrote in ``folder``, sorted by file name."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


def check(claims: Iterable[Claim]) -> None:
    """Raise :class:`ClaimFailed` listing every asserted claim that does not hold.

    Raises:
        ClaimFailed: one or more asserted claims have verdict "does not hold".
    """
    failed = [c for c in claims if c.asserted and c.verdict != HOLDS]
    if failed:
        raise ClaimFailed("; ".join(f"{c.id}: {c.text} (ours: {c.ours}; paper: {c.paper})"
                                    for c in failed))


def summary(claims: Sequence[Claim]) -> str:
    """One line: how many claims hold, do not hold, were not measured."""
    n = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    return (f"{n[HOLDS]} of {len(claims)} claims hold, {n[FAILS]} do not hold, "
            f"{n[NOT_MEASURED]} not measured" + (f", {n[NOT_RESOLVED]} not resolved"
                                                 if n[NOT_RESOLVED] else ""))
