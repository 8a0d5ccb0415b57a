"""``results/REPORT.md``: every claim of the paper that the notebooks check, in one page.

Reads the claims files that the notebooks' final cells write with
:func:`fa_utils.claims.write_claims` (``results/claims/<notebook>_<dataset>.json``, at the
smoke profile under ``runs/smoke/results/claims/``, see :func:`fa_utils.outputs.results_dir`)
and writes ``REPORT.md`` beside them in ``results/``: the profile, the git commit and the
date at the top, a summary line, then one row per claim grouped by paper section (the claim,
the paper's evidence, ours with links to our figures and tables, the verdict and why), with
thumbnails of our key figures beside the paper's figure numbers.

:data:`CATALOGUE` lists the claim ids each notebook is expected to write. A claim whose
notebook wrote no claims file at this profile (it was not run, failed before its claims
cell, or its file is from another profile) still gets a row, "not measured", saying which
notebook and why, so that no claim silently vanishes. A claim a notebook writes that the
catalogue does not list is reported too (its row says so).

The runner (:mod:`fa_utils.runner`) calls :func:`write_report` at the end of
``reproduce`` and ``run``; ``python -m fa_utils report [--profile P]`` rebuilds it alone.
A notebook that fails or is interrupted keeps the claims of its last successful run (the
report adds a line naming its executed copy). When the report is the committed
``results/REPORT.md`` of the repository, a successful ``reproduce`` (or ``report``) also
rewrites the summary line in ``README.md`` between :data:`README_START` and
:data:`README_END` (:func:`update_readme`).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Optional, Sequence

from . import claims as claims_mod
from . import outputs

REPORT_NAME = "REPORT.md"
README_START = "<!-- report-summary -->"
README_END = "<!-- /report-summary -->"
#: Width in pixels of the figure thumbnails in the report.
THUMB_WIDTH = 120


@dataclass(frozen=True)
class Expected:
    """A claim the catalogue expects a notebook to write: its id, the paper's section and
    the claim in a sentence (what a "not measured" row shows when the notebook did not
    write it)."""

    id: str
    section: str
    text: str


def _e(cid: str, section: str, text: str) -> Expected:
    return Expected(cid, section, text)


#: notebook stem -> the claims it is expected to write (ids as its claim cell writes them).
#: 01, 04 and 06 write these; the entries for 02, 03 and 05 are the ids their claim cells
#: are to use when they are converted to :class:`fa_utils.claims.Claim` objects.
CATALOGUE: Mapping[str, tuple[Expected, ...]] = MappingProxyType({
    "01_toy_sin": (
        _e("fig2.fa_error_much_lower", "3.2, Figure 2",
           "With FA the input is recovered far better than by inverting the plain network"),
        _e("fig2.fa_whole_domain", "3.2, Figure 2", "With FA x is recovered on the entire domain"),
        _e("fig2.plain_partial", "3.2, Figure 2", "Without FA x is recovered only partially"),
        _e("fig2.every_branch", "3.2, Figure 2", "FA's advantage holds on every monotone branch"),
    ),
    "02_fa_mnist": (
        _e("fig1.fa_reconstructs", "3.1, Figure 1",
           "FA recovers held-out images from the encoder's output alone (well below the "
           "mean-image error)"),
        _e("fig6a.latent_groups_digits", "5, Figure 6a",
           "A 2-neuron FA latent groups the digits by class"),
    ),
    "03_vfa": (
        _e("fig3.vfa_reconstructs", "3.3, Figure 3",
           "VFA reconstructs held-out images better than the mean image"),
        _e("fig8.onehot_emphasis", "3.4, Figure 8",
           "A larger one-hot value makes the conditional samples show the wanted class"),
    ),
    "04_vfa_gan": (
        _e("table2.vae_below_vfa", "5, Table 2", "VAE samples score a lower FID than VFA's"),
        _e("table2.gan_below_vfa", "5, Table 2", "GAN samples score a lower FID than VFA's"),
        _e("table2.vfagan_below_vfa", "5, Table 2", "The generator lowers VFA's FID (VFA-GAN "
           "below VFA)"),
        _e("fig15.ae_lowest", "5, Figure 15", "Autoencoders have the lowest reconstruction loss"),
        _e("fig15.r_comparable_vae", "5, Figure 15", "r's reconstruction error is comparable to "
           "the VAE's"),
        _e("fig15.gr_comparable_gan", "5, Figure 15", "G(r)'s reconstruction error is comparable "
           "to the GAN's"),
        _e("tables3-5.vfa_half_vae", "5, Tables 3-5", "VFA has half the parameters of the VAE"),
        _e("tables3-6.vfa_same_time", "5, Tables 3-6", "VFA takes about the same time as the VAE "
           "to draw a sample"),
    ),
    "05_local_fa": (
        _e("fig16.local_reconstructs", "3.5, Figure 16",
           "Local training can reconstruct images (well below the mean-image error)"),
        _e("3.5.local_less_memory", "3.5", "Local FA saves less memory for backward than "
           "global FA"),
    ),
    "06_appendix_convergence": (
        _e("a71.closed_form", "Appendix 7.1, Eq. 13-18", "The one-weight inner step has the "
           "closed form of Eq. 18"),
        _e("a71.converges_iff", "Appendix 7.1, Eq. 19", "The inner iteration converges exactly "
           "when 0 < w^2 < 2"),
        _e("a71.rate", "Appendix 7.1, Eq. 18", "The distance to the limit shrinks as "
           "|1 - w^2|^p"),
        _e("a72.square_pinv", "Appendix 7.2, Eq. 22", "FA drives a square layer's W^T to "
           "pinv(W)"),
        _e("a72.fewer_outputs_projector", "Appendix 7.2, Eq. 22", "With fewer outputs W^T W "
           "reaches the row-space projector"),
        _e("eq9.clamp_prevents_divergence", "3.1, Eq. 9 (Appendix 7.1)", "The sqrt 2 clamp "
           "keeps training from diverging"),
        _e("eq9.trained_weights_converge", "3.1, Eq. 9 (Appendix 7.1)", "With the clamp the "
           "trained weights make the inner iteration converge"),
    ),
})

#: Titles of the report's groups, by the part of a claim's section before the comma.
SECTION_TITLES: Mapping[str, str] = MappingProxyType({
    "3.1": "Section 3.1: feature alignment",
    "3.2": "Section 3.2: the toy example",
    "3.3": "Section 3.3: variational feature alignment",
    "3.4": "Section 3.4: conditional VFA and VFA-GAN",
    "3.5": "Section 3.5: local feature alignment",
    "5": "Section 5: experiments and comparisons",
    "Appendix 7.1": "Appendix A, 7.1: one weight",
    "Appendix 7.2": "Appendix A, 7.2: a linear layer",
})


@dataclass(frozen=True)
class NotebookRun:
    """What the runner knows of one notebook in this run: ``state`` is "ok", "failed",
    "interrupted" or "not run"; ``detail`` e.g. its executed copy, or why it did not run."""

    state: str
    detail: str = ""


@dataclass(frozen=True)
class Row:
    """One row of the report: a claim as a notebook wrote it, or a catalogue entry that no
    claims file gave (``written`` False: "not measured", with its ``why``); ``notebook`` and
    ``dataset`` as in the claims file; ``catalogued``: the catalogue lists its id."""

    claim: claims_mod.Claim
    notebook: str
    dataset: str
    catalogued: bool = True
    written: bool = True


def _nb_word(stem: str) -> str:
    return stem[:2] if stem[:2].isdigit() else stem


def _missing_reason(stem: str, profile: str, run: Optional[NotebookRun],
                    other_profiles: Sequence[str]) -> str:
    nn = _nb_word(stem)
    again = f"run `python -m fa_utils run {nn} --profile {profile}`"
    if run is not None and run.state == "failed":
        return f"notebook {nn} failed before writing its claims ({run.detail or 'see its executed copy'})"
    if run is not None and run.state == "interrupted":
        return f"notebook {nn} was interrupted before writing its claims; {again}"
    if run is not None and run.state == "ok":
        return (f"notebook {nn} ran but wrote no claims file (its final cell does not call "
                f"fa_utils.claims.write_claims yet)")
    if run is not None and run.state == "not run":
        return f"notebook {nn} did not run ({run.detail or 'an earlier notebook stopped the run'})"
    if other_profiles:
        return (f"notebook {nn} did not run at {profile}: its claims are from profile "
                f"{', '.join(sorted(set(other_profiles)))}; {again}")
    return f"notebook {nn} did not run (no claims file at {profile}); {again}"


def collect(folder: Path, profile: str, runs: Optional[Mapping[str, NotebookRun]] = None,
            catalogue: Mapping[str, Sequence[Expected]] = CATALOGUE) -> list[Row]:
    """The report's rows from the claims files in ``folder`` (``results/claims/``).

    A file counts when its profile is ``profile``: a notebook that failed or was
    interrupted in this run (``runs``) keeps the claims of its last successful run.
    Every catalogue entry without a counted claim becomes a "not measured" row naming the
    notebook and why; claims not in the catalogue are kept (``catalogued=False``).

    Raises:
        ValueError: a claims file is not the JSON :func:`fa_utils.claims.write_claims` writes.
    """
    runs = runs or {}
    folder = Path(folder)
    counted: dict[str, list[dict]] = {}
    other_profiles: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            stem, items = data["notebook"], data["claims"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a claims file written by fa_utils.claims."
                             f"write_claims ({exc}); delete it or rerun its notebook") from exc
        run = runs.get(stem)
        if data.get("profile") != profile:
            other_profiles.setdefault(stem, []).append(str(data.get("profile")))
            continue
        counted.setdefault(stem, []).append(data)

    rows: list[Row] = []
    for stem in sorted(set(catalogue) | set(counted)):
        expected = {e.id: e for e in catalogue.get(stem, ())}
        seen: set[str] = set()
        for data in counted.get(stem, []):
            for c in data["claims"]:
                seen.add(c["id"])
                try:
                    claim = claims_mod.Claim(**{**c, "evidence": tuple(c.get("evidence", ()))})
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"notebook {stem}'s claims file has a bad claim "
                                     f"{c.get('id')!r}: {exc}; rerun the notebook") from exc
                rows.append(Row(claim, stem, data.get("dataset", "-"), c["id"] in expected))
        for cid, e in expected.items():
            if cid in seen:
                continue
            why = (f"notebook {_nb_word(stem)} wrote claims but not this one (the catalogue in "
                   f"fa_utils/report.py and the notebook disagree)" if counted.get(stem)
                   else _missing_reason(stem, profile, runs.get(stem), other_profiles.get(stem, ())))
            rows.append(Row(claims_mod.Claim(cid, e.section, e.text, "-", "-",
                                             claims_mod.NOT_MEASURED, why), stem, "-",
                            written=False))
    return rows


def _group_key(section: str) -> str:
    return section.split(",")[0].strip()


def _group_order(key: str) -> tuple:
    if key.startswith("Appendix"):
        return (1, key)
    nums = re.findall(r"\d+", key)
    return (0, tuple(int(n) for n in nums) or (999,), key)


def summary_line(rows: Sequence[Row], profile: str) -> str:
    """E.g. "14 of 17 claims hold at quick; 1 does not hold; 2 not measured (notebook 05
    did not run)"."""
    n = len(rows)
    held = sum(r.claim.verdict == claims_mod.HOLDS for r in rows)
    failed = sum(r.claim.verdict == claims_mod.FAILS for r in rows)
    unmeasured = [r for r in rows if r.claim.verdict == claims_mod.NOT_MEASURED]
    unresolved = sum(r.claim.verdict == claims_mod.NOT_RESOLVED for r in rows)
    parts = [f"{held} of {n} claims hold at {profile}"]
    if failed:
        parts.append(f"{failed} {'does' if failed == 1 else 'do'} not hold")
    if unresolved:
        parts.append(f"{unresolved} not resolved (inside the noise)")
    if unmeasured:
        absent = sorted({_nb_word(r.notebook) for r in unmeasured if not r.written})
        other = sum(r.written for r in unmeasured)
        reasons = []
        if absent:
            reasons.append(f"notebook{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
                           f"wrote no claims")
        if other:
            reasons.append(f"{other} cannot be measured here, see why")
        parts.append(f"{len(unmeasured)} not measured ({'; '.join(reasons)})")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or "-"


def _evidence_path(item: str, profile: str) -> Optional[Path]:
    kind, _, name = item.partition("/")
    if kind == "figures":
        return outputs.figures_dir(profile) / name
    if kind == "results":
        return outputs.results_dir(profile) / name
    return None


def _link(path: Path, report_dir: Path) -> str:
    return Path(os.path.relpath(path, report_dir)).as_posix()


def render(rows: Sequence[Row], profile: str, report_dir: Path, *, commit: str = "",
           date: str = "", runs: Optional[Mapping[str, NotebookRun]] = None) -> str:
    """The report's markdown: header (profile, commit, date), summary line, a line per
    notebook that failed or was interrupted in this run (``runs``), one table per paper
    section. Links and thumbnails point from ``report_dir`` to our figures and tables
    at ``profile``; a file that does not exist is named without a link."""
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Which of the paper's claims hold: the reproduction report", "",
             f"Profile **{profile}** | commit {commit or 'unknown'} | written {date} by "
             f"`python -m fa_utils reproduce` (rebuild alone: `python -m fa_utils report "
             f"--profile {profile}`).", "",
             f"**{summary_line(rows, profile)}.**", "",
             "Each row is a claim of Farias & Maziero (2023) as one notebook's final cell "
             "checked it (`results/claims/*.json`); *asserted* marks the claims that the "
             "notebook asserts at this profile, so a run whose asserted claim does not hold "
             "fails. \"Our reading\" says how we turned a qualitative claim into a test.", ""]
    stopped = [f"- Notebook {_nb_word(stem)} {run.state} in the latest run ({run.detail}): "
               f"its rows are those of its last successful run, if any."
               for stem, run in sorted((runs or {}).items())
               if run.state in ("failed", "interrupted")]
    lines += stopped + [""] * bool(stopped)
    shown: set[Path] = set()
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(_group_key(r.claim.section), []).append(r)
    for key in sorted(groups, key=_group_order):
        lines += [f"## {SECTION_TITLES.get(key, key)}", "",
                  "| id | paper section | claim | paper's evidence | ours | verdict |",
                  "|---|---|---|---|---|---|"]
        for r in groups[key]:
            links, thumb = [], ""
            for item in r.claim.evidence:
                path = _evidence_path(item, profile)
                if path is None or not path.exists():
                    links.append(f"{item} (missing)")
                    continue
                rel = _link(path, report_dir)
                links.append(f"[{path.name}]({rel})")
                if path.suffix == ".png" and not thumb and path not in shown:
                    shown.add(path)
                    thumb = (f'<a href="{rel}"><img src="{rel}" width="{THUMB_WIDTH}" '
                             f'alt="{path.stem}"></a> ')
            ours = r.claim.ours + (f" ({r.dataset})" if r.dataset not in ("-", "") else "")
            if links:
                ours += "; " + ", ".join(links)
            verdict = r.claim.verdict + (" (asserted)" if r.claim.asserted else "")
            if r.claim.why:
                verdict += f": {r.claim.why}"
            if not r.catalogued:
                verdict += " [not in the catalogue of fa_utils/report.py]"
            nb = f"{r.claim.section} (nb {_nb_word(r.notebook)})"
            cells = [_cell(f"`{r.claim.id}`"), _cell(nb), _cell(r.claim.text), _cell(r.claim.paper),
                     thumb + _cell(ours), _cell(verdict)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def parse_rows(text: str) -> list[dict[str, str]]:
    """The report's claim rows read back from its markdown: dicts with keys id, section,
    claim, paper (the paper's evidence), ours, verdict (cells as written, pipes unescaped).
    For tests.

    Raises:
        ValueError: a claim row without six cells."""
    out = []
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|")
                 for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) != 6:
            raise ValueError(f"report row with {len(cells)} cells: {line}")
        out.append(dict(zip(("id", "section", "claim", "paper", "ours", "verdict"),
                            [cells[0].strip("`"), *cells[1:]])))
    return out


def report_path(profile: str) -> Path:
    """``results/REPORT.md`` at ``profile`` (``runs/smoke/results/REPORT.md`` at smoke)."""
    return outputs.results_dir(profile) / REPORT_NAME


def write_report(profile: str, runs: Optional[Mapping[str, NotebookRun]] = None,
                 commit: str = "") -> tuple[Path, str]:
    """Assemble the report from ``results/claims/*.json`` at ``profile`` and write it.

    Reads: :func:`fa_utils.claims.claims_dir` ``(profile)``; writes :func:`report_path`
    ``(profile)``. ``runs``: the runner's notebook states (see :func:`collect`); ``commit``:
    the header's commit, as markdown (the runner's :func:`fa_utils.runner.source_commit`).

    Returns:
        (the report's path, its summary line).

    Raises:
        ValueError: a claims file that cannot be read (named, with the fix).
    """
    rows = collect(claims_mod.claims_dir(profile), profile, runs)
    path = report_path(profile)
    line = summary_line(rows, profile)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render(rows, profile, path.parent, commit=commit, runs=runs))
    tmp.replace(path)
    return path, line


def update_readme(line: str, report: Path, readme: Optional[Path] = None) -> bool:
    """Rewrite the text between :data:`README_START` and :data:`README_END` in the
    repository's ``README.md`` with the report's summary line and a link, when ``report``
    is the committed ``results/REPORT.md`` of the repository (never for a smoke report or
    one under ``$FA_OUTPUT_ROOT``). Returns whether the README changed.

    Raises:
        ValueError: the README has one marker without the other.
    """
    root = outputs.repo_root()
    readme = readme or root / "README.md"
    if Path(report).resolve() != (root / "results" / REPORT_NAME).resolve() or not readme.exists():
        return False
    text = readme.read_text()
    if README_START not in text and README_END not in text:
        return False
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{readme}: expected one {README_START} and one {README_END}")
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    new = f"{head}{README_START}**{line}** ([results/REPORT.md](results/REPORT.md)){README_END}{tail}"
    if new == text:
        return False
    readme.write_text(new)
    return True


RUN_TIMES_NAME = "run_times.md"
#: Earlier main jobs kept in ``run_times.md`` besides the last one.
RUN_TIMES_HISTORY = 10
_EARLIER = "## Earlier jobs"


def write_run_times(profile: str, times: Sequence[tuple[str, float]], reference_s: float,
                    commit: str) -> Path:
    """Write ``results/run_times.md`` after a successful main job: its seconds per notebook,
    the machine (CPU count, torch threads, load average at the end) and ``reference_s``, the
    seconds of the reference computation timed at its start
    (:func:`fa_utils.runner.reference_seconds`), which tells a slow day from slow code;
    then one line per earlier job (at most :data:`RUN_TIMES_HISTORY`, read from the file)."""
    import torch

    path = outputs.results_dir(profile) / RUN_TIMES_NAME
    old = path.read_text().split(_EARLIER, 1)[-1] if path.exists() else ""
    earlier = [ln for ln in old.splitlines() if ln.startswith("| 2")]
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    total = sum(t for _, t in times)
    line = "| " + " | ".join([date, profile, commit, str(os.cpu_count()),
                              str(torch.get_num_threads()), load, f"{reference_s:.1f}",
                              f"{total:.0f}", ", ".join(f"{n[:2]} {t:.0f}" for n, t in times)]) + " |"
    text = ["# Run times of the main job", "",
            f"The last `python -m fa_utils reproduce --profile {profile}`: {date}, commit "
            f"{commit}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, load "
            f"average {load} (1 / 5 / 15 min) at the end. The reference computation (20 FA "
            f"steps of the MNIST encoder at batch 128 on fixed random data, CPU), timed at the "
            f"start of the job, took **{reference_s:.1f} s**: compare it between jobs before "
            f"comparing their times (these machines vary 2-5x from day to day).", "",
            outputs.markdown_table(["notebook", "seconds"], [(n, f"{t:.0f}") for n, t in times]
                                   + [("total", f"{total:.0f}")]), "", _EARLIER, "",
            outputs.markdown_table(["date", "profile", "commit", "CPUs", "torch threads",
                                    "load at the end", "reference s", "total s",
                                    "seconds per notebook"], []),
            line, *earlier[:RUN_TIMES_HISTORY], ""]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(text))
    tmp.replace(path)
    return path
