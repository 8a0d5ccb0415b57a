"""``results/REPORT.md``: a header, a summary line (also in README.md between the markers),
a row per claim of :data:`fa_utils.paper.CATALOGUE` by paper section ("not measured", saying
why, when no claims file at this profile has it); ``results/run_times.md``: the main job's times.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Sequence

from . import claims as claims_mod
from . import outputs
from .paper import CATALOGUE, SECTION_TITLES

README_START, README_END = "<!-- report-summary -->", "<!-- /report-summary -->"
RUN_TIMES_NAME, RUN_TIMES_HISTORY = "run_times.md", 10  # earlier main jobs kept


class NotebookRun(NamedTuple):
    """``state`` "ok", "failed", "interrupted" or "not run"; ``detail``: its copy, or why."""

    state: str
    detail: str = ""


class Row(NamedTuple):
    """``claim`` as ``notebook`` wrote it on ``dataset``, or a catalogue entry that no claims
    file gave (``written`` False)."""

    claim: claims_mod.Claim
    notebook: str
    dataset: str
    catalogued: bool = True
    written: bool = True


def _nb(stem: str) -> str:
    return stem[:2] if stem[:2].isdigit() else stem


def collect(folder: Path, profile: str,
            runs: Optional[Mapping[str, NotebookRun]] = None) -> list[Row]:
    """The rows of the claims files in ``folder`` at ``profile`` and a "not measured" row for
    each catalogue entry they lack (``runs``: the runner's states, for why). ValueError: a
    file or claim that :func:`fa_utils.claims.write_claims` did not write."""
    runs, counted, others = runs or {}, {}, {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            stem, _ = data["notebook"], data["claims"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a claims file written by fa_utils.claims."
                             f"write_claims ({exc}); delete it or rerun its notebook") from exc
        if data.get("profile") == profile:
            counted.setdefault(stem, []).append(data)
        else:
            others.setdefault(stem, []).append(str(data.get("profile")))
    rows: list[Row] = []
    for stem in sorted(set(CATALOGUE) | set(counted)):
        expected = {e.id: e for e in CATALOGUE.get(stem, ())}
        for data in counted.get(stem, []):
            for c in data["claims"]:
                try:
                    claim = claims_mod.Claim(**{**c, "evidence": tuple(c.get("evidence", ()))})
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"notebook {stem}'s claims file has a bad claim "
                                     f"{c.get('id')!r}: {exc}; rerun the notebook") from exc
                rows.append(Row(claim, stem, data.get("dataset", "-"), claim.id in expected))
        seen = {r.claim.id for r in rows}
        again = f"run `python -m fa_utils run {_nb(stem)} --profile {profile}`"
        state, detail = runs.get(stem) or ("other profile" if stem in others else "absent", "")
        why = f"notebook {_nb(stem)} " + {
            "disagree": "wrote claims but not this one (the catalogue in fa_utils/paper.py and "
                        "the notebook disagree)",
            "failed": f"failed before writing its claims ({detail})",
            "interrupted": f"was interrupted before writing its claims; {again}",
            "ok": "ran but wrote no claims file (its final cell does not call "
                  "fa_utils.claims.write_claims)",
            "not run": f"did not run ({detail})",
            "other profile": f"did not run at {profile}: its claims are from profile "
                             f"{', '.join(sorted(set(others.get(stem, ()))))}; {again}",
            "absent": f"did not run (no claims file at {profile}); {again}",
        }["disagree" if counted.get(stem) else state]
        for e in (e for e in expected.values() if e.id not in seen):
            missing = claims_mod.Claim(e.id, e.section, e.text, "-", "-", claims_mod.NOT_MEASURED,
                                       why)
            rows.append(Row(missing, stem, "-", written=False))
    return rows


def summary_line(rows: Sequence[Row], profile: str) -> str:
    """E.g. "14 of 17 claims hold at quick; 1 does not hold; 2 not measured (...)"."""
    n = {v: sum(r.claim.verdict == v for r in rows) for v in claims_mod.VERDICTS}
    fails, unresolved = n[claims_mod.FAILS], n[claims_mod.NOT_RESOLVED]
    parts = [f"{n[claims_mod.HOLDS]} of {len(rows)} claims hold at {profile}"]
    parts += [f"{fails} {'does' if fails == 1 else 'do'} not hold"] * bool(fails)
    parts += [f"{unresolved} not resolved (inside the noise)"] * bool(unresolved)
    unmeasured = [r for r in rows if r.claim.verdict == claims_mod.NOT_MEASURED]
    if unmeasured:
        absent = sorted({_nb(r.notebook) for r in unmeasured if not r.written})
        other = sum(r.written for r in unmeasured)
        reasons = [f"notebook{'s' * (len(absent) > 1)} {', '.join(absent)} wrote no claims"]
        reasons *= bool(absent)
        reasons += [f"{other} cannot be measured here, see why"] * bool(other)
        parts.append(f"{len(unmeasured)} not measured ({'; '.join(reasons)})")
    return "; ".join(parts)


def _row(r: Row, profile: str, report_dir: Path, shown: set) -> str:
    """One table line; links to our figures and tables, the first new figure as a thumbnail."""
    links, thumb = [], ""
    for item in r.claim.evidence:
        kind, _, name = item.partition("/")
        folder = {"figures": outputs.figures_dir, "results": outputs.results_dir}.get(kind)
        path = folder(profile) / name if folder else None
        if path is None or not path.exists():
            links.append(f"{item} (missing)")
            continue
        rel = Path(os.path.relpath(path, report_dir)).as_posix()
        links.append(f"[{path.name}]({rel})")
        if path.suffix == ".png" and not thumb and path not in shown:
            shown.add(path)
            thumb = f'<a href="{rel}"><img src="{rel}" width="120" alt="{path.stem}"></a> '
    ours = r.claim.ours + (f" ({r.dataset})" if r.dataset not in ("-", "") else "")
    ours += "; " + ", ".join(links) if links else ""
    verdict = (r.claim.verdict + " (asserted)" * r.claim.asserted
               + f": {r.claim.why}" * bool(r.claim.why)
               + " [not in the catalogue of fa_utils/paper.py]" * (not r.catalogued))
    cells = [str(c).replace("|", "\\|").replace("\n", " ").strip() or "-" for c in (
        f"`{r.claim.id}`", f"{r.claim.section} (nb {_nb(r.notebook)})", r.claim.text,
        r.claim.paper, ours, verdict)]
    cells[4] = thumb + cells[4]
    return "| " + " | ".join(cells) + " |"


def write_report(profile: str, runs: Optional[Mapping[str, NotebookRun]] = None,
                 commit: str = "") -> tuple[Path, str]:
    """Write the report at ``profile`` (a line per notebook that failed or was interrupted in
    ``runs``); its path and summary line. ValueError: a claims file that cannot be read."""
    rows = collect(claims_mod.claims_dir(profile), profile, runs)
    path, line = outputs.results_dir(profile) / "REPORT.md", summary_line(rows, profile)
    lines = ["# Which of the paper's claims hold: the reproduction report", "",
             f"Profile **{profile}** | commit {commit or 'unknown'} | written "
             f"{outputs.utc_now()} by `python -m fa_utils reproduce` (rebuild alone: "
             f"`python -m fa_utils report --profile {profile}`).", "", f"**{line}.**", "",
             "Each row is a claim of Farias & Maziero (2023) as one notebook's final cell "
             "checked it (`results/claims/*.json`); *asserted* marks the claims that the "
             "notebook asserts at this profile, so a run whose asserted claim does not hold "
             "fails. \"Our reading\" says how we turned a qualitative claim into a test.", ""]
    stopped = [f"- Notebook {_nb(stem)} {run.state} in the latest run ({run.detail}): its rows "
               f"are those of its last successful run, if any."
               for stem, run in sorted((runs or {}).items())
               if run.state in ("failed", "interrupted")]
    lines += stopped + [""] * bool(stopped)
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.claim.section.split(",")[0].strip(), []).append(r)
    shown: set[Path] = set()
    for key in sorted(groups, key=lambda k: (k.startswith("Appendix"),
                                             [int(n) for n in re.findall(r"\d+", k)], k)):
        lines += [f"## {SECTION_TITLES.get(key, key)}", "",
                  "| id | paper section | claim | paper's evidence | ours | verdict |",
                  "|---|---|---|---|---|---|",
                  *(_row(r, profile, path.parent, shown) for r in groups[key]), ""]
    outputs.write_atomic(path, "\n".join(lines) + "\n")
    return path, line


def update_readme(line: str, report: Path) -> bool:
    """Put ``line`` between the README's markers if ``report`` is the committed REPORT.md;
    whether the README changed. ValueError: a marker is missing or repeated."""
    root = outputs.repo_root()
    readme = root / "README.md"
    if Path(report).resolve() != (root / "results" / "REPORT.md").resolve() or not readme.exists():
        return False
    text = readme.read_text()
    if (text.count(README_START), text.count(README_END)) != (1, 1):
        if README_START in text or README_END in text:
            raise ValueError(f"{readme}: expected one {README_START} and one {README_END}")
        return False
    head, rest = text.split(README_START)
    new = (f"{head}{README_START}**{line}** ([results/REPORT.md](results/REPORT.md))"
           f"{README_END}{rest.split(README_END)[1]}")
    if new != text:
        outputs.write_atomic(readme, new)
    return new != text


def write_run_times(profile: str, times: Sequence[tuple[str, float]], reference_s: float,
                    commit: str) -> Path:
    """Write ``results/run_times.md``: seconds per notebook, the machine, ``reference_s``
    (:func:`fa_utils.runner.reference_seconds`), a line per job (:data:`RUN_TIMES_HISTORY` kept)."""
    import torch

    path = outputs.results_dir(profile) / RUN_TIMES_NAME
    heading = "## The last jobs, newest first"
    old = path.read_text().split(heading)[-1] if path.exists() else ""
    date, total = outputs.utc_now(), sum(t for _, t in times)
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    machine = (os.cpu_count(), torch.get_num_threads(), load)
    cells = [date, profile, commit, *machine, f"{reference_s:.1f}", f"{total:.0f}",
             ", ".join(f"{n[:2]} {t:.0f}" for n, t in times)]
    text = ["# Run times of the main job", "",
            f"The last `python -m fa_utils reproduce --profile {profile}`: {date}, commit "
            f"{commit}; {machine[0]} CPUs, {machine[1]} torch threads, load average {machine[2]} "
            f"(1 / 5 / 15 min) at the end. The reference computation (20 FA steps of the MNIST "
            f"encoder at batch 128 on fixed random data, CPU), timed at the start of the job, "
            f"took **{reference_s:.1f} s**: compare it between jobs before comparing their "
            f"times (these machines vary 2-5x from day to day).", "",
            outputs.markdown_table(["notebook", "seconds"], [(n, f"{t:.0f}") for n, t in times]
                                   + [("total", f"{total:.0f}")]), "", heading, "",
            outputs.markdown_table(["date", "profile", "commit", "CPUs", "torch threads",
                                    "load at the end", "reference s", "total s",
                                    "seconds per notebook"], [cells]),
            *[ln for ln in old.splitlines() if ln.startswith("| 2")][:RUN_TIMES_HISTORY], ""]
    return outputs.write_atomic(path, "\n".join(text))
