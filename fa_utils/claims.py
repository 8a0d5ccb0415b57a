"""The paper's claims as the notebooks check them, and ``results/REPORT.md``: one row per claim."""

import dataclasses
import json
import re
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Optional, Sequence

from . import outputs
from .paper import CATALOGUE, SECTION_TITLES

HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"  # e.g. no dataset
NOT_RESOLVED = "not resolved at this profile"  # the deciding difference is inside the noise
VERDICTS = (HOLDS, FAILS, NOT_MEASURED, NOT_RESOLVED)
RUN_TIMES_NAME = "run_times"  # results/run_times.md


class ClaimFailed(AssertionError):
    """An asserted claim did not hold; the message lists each one with its numbers."""


@dataclasses.dataclass(frozen=True)
class Claim:
    """A notebook's claim; ValueError: unknown verdict, no ``why``, an unmeasured one asserted."""

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
    """Write ``claims/<notebook>_<dataset>.json``, a table (returned); ValueError: a repeated id."""
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


class NotebookRun(NamedTuple):
    """``state`` "ok", "failed", "interrupted" or "not run"; ``detail``: its notebook, or why."""

    state: str
    detail: str = ""


class Row(NamedTuple):
    """A claim as ``notebook`` wrote it, or a catalogue entry no file gave (``written`` False)."""

    claim: Claim
    notebook: str
    dataset: str
    written: bool = True


def _nb(stem: str) -> str:
    return stem[:2] if stem[:2].isdigit() else stem


def collect(folder: Path, profile: str,
            runs: Optional[Mapping[str, NotebookRun]] = None) -> list[Row]:
    """The claims in ``folder`` at ``profile``, and those not measured; ValueError: a bad file."""
    runs, counted, others = runs or {}, {}, {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            stem, _ = data["notebook"], data["claims"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a claims file ({exc}); delete it or rerun its "
                             "notebook") from exc
        (counted if data.get("profile") == profile else others).setdefault(stem, []).append(data)
    rows: list[Row] = []
    for stem in sorted(set(CATALOGUE) | set(counted)):
        for data in counted.get(stem, []):
            for c in data["claims"]:
                try:
                    claim = Claim(**{**c, "evidence": tuple(c.get("evidence", ()))})
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"notebook {stem}'s claims file has a bad claim "
                                     f"{c.get('id')!r}: {exc}; rerun the notebook") from exc
                rows.append(Row(claim, stem, data.get("dataset", "-")))
        seen = {r.claim.id for r in rows}
        again = f"; run `python -m fa_utils run {_nb(stem)} --profile {profile}`"
        elsewhere = ", ".join(sorted({str(d.get("profile")) for d in others.get(stem, [])}))
        state, detail = runs.get(stem) or ("other profile" if elsewhere else "absent", "")
        why = f"notebook {_nb(stem)} " + {
            "disagree": "wrote claims but not this one (fa_utils/paper.py's catalogue differs)",
            "failed": f"failed before writing its claims ({detail})",
            "interrupted": f"was interrupted before writing its claims{again}",
            "ok": "ran but wrote no claims file (no claims.write_claims in its last cell)",
            "not run": f"did not run ({detail})",
            "other profile": f"did not run at {profile}: its claims are from profile {elsewhere}"
                             + again,
            "absent": f"did not run (no claims file at {profile}){again}",
        }["disagree" if counted.get(stem) else state]
        for e in (e for e in CATALOGUE.get(stem, ()) if e.id not in seen):
            missing = Claim(e.id, e.section, e.text, "-", "-", NOT_MEASURED, why)
            rows.append(Row(missing, stem, "-", written=False))
    return rows


def _row(r: Row) -> list[str]:
    """A REPORT.md row; ``ours`` ends with the claim's evidence (paths under figures/, results/)."""
    ours = r.claim.ours + (f" ({r.dataset})" if r.dataset not in ("-", "") else "")
    ours += "; " + ", ".join(r.claim.evidence) if r.claim.evidence else ""
    verdict = (r.claim.verdict + " (asserted)" * r.claim.asserted
               + f": {r.claim.why}" * bool(r.claim.why))
    return [str(c).replace("|", "\\|").replace("\n", " ").strip() or "-" for c in (
        f"`{r.claim.id}`", f"{r.claim.section} (nb {_nb(r.notebook)})", r.claim.text,
        r.claim.paper, ours, verdict)]


def write_report(profile: str, runs: Optional[Mapping[str, NotebookRun]] = None,
                 commit: str = "") -> tuple[Path, str]:
    """Write ``REPORT.md`` at ``profile`` (failed ``runs`` noted): (its path, summary line)."""
    rows = collect(claims_dir(profile), profile, runs)
    unmeasured = [r for r in rows if r.claim.verdict == NOT_MEASURED]
    absent = sorted({_nb(r.notebook) for r in unmeasured if not r.written})
    other = sum(r.written for r in unmeasured)
    why = [f"notebook{'s' * (len(absent) > 1)} {', '.join(absent)} wrote no claims"] * bool(absent)
    why += [f"{other} cannot be measured here, see why"] * bool(other)
    line = summary([r.claim for r in rows], f" at {profile}") + f" ({'; '.join(why)})" * bool(why)
    lines = ["# Which of the paper's claims hold: the reproduction report", "",
             f"Profile **{profile}** | commit {commit or 'unknown'} | written {outputs.utc_now()} "
             f"(rebuild: `python -m fa_utils report --profile {profile}`).", "", f"**{line}.**",
             "", "A row per claim as a notebook's last cell checked it (`results/claims/*.json`);"
             " *asserted*: the notebook fails unless it holds.", ""]
    stopped = [f"- Notebook {_nb(stem)} {run.state} in the latest run ({run.detail}): its rows "
               "are those of its last successful run, if any."
               for stem, run in sorted((runs or {}).items())
               if run.state in ("failed", "interrupted")]
    lines += stopped + [""] * bool(stopped)
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.claim.section.split(",")[0].strip(), []).append(r)
    for key in sorted(groups, key=lambda k: (k.startswith("Appendix"),
                                             [int(n) for n in re.findall(r"\d+", k)], k)):
        columns = ["id", "paper section", "claim", "paper's evidence", "ours", "verdict"]
        table = outputs.markdown_table(columns, [_row(r) for r in groups[key]])
        lines += [f"## {SECTION_TITLES.get(key, key)}", "", table, ""]
    path = outputs.write_atomic(outputs.results_dir(profile) / "REPORT.md", "\n".join(lines) + "\n")
    return path, line


def write_run_times(profile: str, times: Sequence[tuple[str, float]], commit: str) -> Path:
    """Write ``results/run_times.md``: the main job's seconds per notebook."""
    rows = [(n, f"{t:.0f}") for n, t in times] + [("total", f"{sum(t for _, t in times):.0f}")]
    return outputs.write_table(RUN_TIMES_NAME, "Run times of the main job", ["notebook", "seconds"],
                               rows, profile=profile, notes=f"Commit {commit}.",
                               source=f"`python -m fa_utils reproduce --profile {profile}`")
