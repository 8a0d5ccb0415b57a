"""Where results go: ``figures/``, ``results/`` and ``runs/`` of the project, and the
writers of figures (with a manifest) and result tables.

The root is the repository (found from this package's location when it is installed in
editable mode, else the current folder); the environment variable ``FA_OUTPUT_ROOT``
redirects all three folders, which the tests use so that a test run never overwrites the
main job's figures. A relative ``FA_OUTPUT_ROOT`` is taken relative to the folder where the
user started the command (:func:`launch_dir`), not to a kernel's working folder
(``notebooks/``), so the runner, papermill and the notebooks' setup cells agree.

A notebook run interactively (a Jupyter kernel: JupyterLab, ``jupyter nbconvert``, papermill
outside the runner) never overwrites the committed ``figures/`` and ``results/``: it writes
to ``runs/<profile>/figures/`` and ``runs/<profile>/results/`` unless ``FA_UPDATE_COMMITTED=1``
is in its environment, which the runner (``python -m fa_utils reproduce`` / ``run``) sets for
its kernels (:func:`writes_committed`). :func:`describe_destination` is the sentence a
notebook's setup cell prints (through :func:`fa_utils.config.describe`) saying where it
writes and how to update the committed files. Scripts (the benchmarks, pytest) are not
kernels: they write where they did, ``$FA_OUTPUT_ROOT`` first.

Executed notebooks go to ``runs/notebooks/<profile>/`` (:func:`executed_notebooks_dir`),
one folder per profile, as figures are kept apart by profile.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

OUTPUT_ROOT_ENV = "FA_OUTPUT_ROOT"
#: Set to 1 (true, yes) to let a Jupyter kernel write the committed figures/ and results/.
UPDATE_COMMITTED_ENV = "FA_UPDATE_COMMITTED"
MANIFEST = "MANIFEST.json"


def repo_root() -> Path:
    """The repository holding this package (editable install), else the current folder."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists() and (here / "notebooks").is_dir():
        return here
    return Path.cwd().resolve()


def launch_dir() -> Path:
    """The folder where the user started the command: ``$PWD`` when it is an absolute path
    to an existing folder (a shell sets it; a Jupyter kernel or a papermill kernel inherits
    it while its working folder is ``notebooks/``), else the current working folder."""
    pwd = os.environ.get("PWD")
    if pwd and os.path.isabs(pwd) and os.path.isdir(pwd):
        return Path(pwd)
    return Path.cwd()


def resolve_output_root(value: str) -> Path:
    """``FA_OUTPUT_ROOT``'s value as an absolute path: ``~`` expanded, a relative path taken
    relative to :func:`launch_dir`."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = launch_dir() / path
    return path.resolve()


def project_root() -> Path:
    """Where outputs go: ``$FA_OUTPUT_ROOT`` if set (made absolute by
    :func:`resolve_output_root`), else :func:`repo_root`."""
    env = os.environ.get(OUTPUT_ROOT_ENV)
    if env:
        return resolve_output_root(env)
    return repo_root()


def _sub(name: str) -> Path:
    path = project_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Profiles whose figures and tables stay out of the committed ``figures/`` and
#: ``results/`` (unless ``$FA_OUTPUT_ROOT`` says where): they go to ``runs/<profile>/``.
SCRATCH_PROFILES = ("smoke",)


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter (ipykernel) kernel: an IPython shell with a kernel
    is running. Checked without importing IPython when it was not imported."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def writes_committed() -> bool:
    """Whether figures and results may go to the committed ``figures/`` and ``results/``:
    always outside a Jupyter kernel, and in a kernel only with ``FA_UPDATE_COMMITTED=1``
    (the runner sets it for its kernels). ``$FA_OUTPUT_ROOT`` makes the question moot."""
    flag = os.environ.get(UPDATE_COMMITTED_ENV, "").strip().lower()
    return flag in ("1", "true", "yes") or not in_jupyter_kernel()


def _scratch(kind: str, profile: Optional[str]) -> Optional[Path]:
    """``runs/<profile>/<kind>`` when outputs at ``profile`` must stay out of the committed
    folders (a scratch profile, or an interactive kernel), else None."""
    if os.environ.get(OUTPUT_ROOT_ENV):
        return None
    if profile in SCRATCH_PROFILES or not writes_committed():
        return project_root() / "runs" / (profile or "default") / kind
    return None


def _output_dir(kind: str, profile: Optional[str]) -> Path:
    path = _scratch(kind, profile)
    if path is None:
        return _sub(kind)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _output_path(kind: str, profile: Optional[str]) -> Path:
    """:func:`_output_dir` without creating anything."""
    return _scratch(kind, profile) or project_root() / kind


def describe_destination(profile: Optional[str]) -> str:
    """One sentence: where figures and tables at ``profile`` go in this process, and, when
    that is not the committed folders, how to update those. Creates nothing."""
    figs, res = _output_path("figures", profile), _output_path("results", profile)
    where = f"outputs: figures -> {figs}, tables -> {res}"
    if os.environ.get(OUTPUT_ROOT_ENV) or _scratch("figures", profile) is None:
        return where
    if profile in SCRATCH_PROFILES:
        return where + f" (the {profile} profile never writes the committed figures/ and results/)"
    return (where + " (an interactive run: the committed figures/ and results/ are left as they "
            f"are; to update them run `python -m fa_utils run NN --profile {profile}`, or set "
            f"{UPDATE_COMMITTED_ENV}=1 in the kernel, e.g. `%env {UPDATE_COMMITTED_ENV}=1`, "
            "before this cell)")


def figures_dir(profile: Optional[str] = None) -> Path:
    """The ``figures/`` folder (created if needed); ``runs/<profile>/figures/`` for the
    smoke profile and in an interactive kernel without ``FA_UPDATE_COMMITTED=1``, so that a
    quick check or a run in Lab never overwrites the committed figures."""
    return _output_dir("figures", profile)


def results_dir(profile: Optional[str] = None) -> Path:
    """The ``results/`` folder (created if needed); ``runs/<profile>/results/`` where
    :func:`figures_dir` uses ``runs/<profile>/figures/``."""
    return _output_dir("results", profile)


def runs_dir() -> Path:
    """The ignored ``runs/`` folder: checkpoints, executed notebooks, logs."""
    return _sub("runs")


def executed_notebooks_dir(profile: str) -> Path:
    """``runs/notebooks/<profile>/`` (created if needed): the runner's executed notebooks,
    one folder per profile, so a smoke or failed run never replaces the main job's copies."""
    path = runs_dir() / "notebooks" / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_path(name: str, profile: str) -> Path:
    """``runs/checkpoints/<name>-<profile>.pt``: one checkpoint per experiment and profile,
    so that a smoke run never resumes from (or overwrites) a quick one."""
    path = runs_dir() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{name}-{profile}.pt"


def _update_manifest(folder: Path, key: str, entry: dict) -> None:
    manifest = folder / MANIFEST
    data = {}
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            data = {}
    data[key] = entry
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
    os.replace(tmp, manifest)


def save_figure(fig, name: str, *, caption: str, profile: str, source: str = "",
                dpi: int = 110) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` and record it in ``figures/MANIFEST.json``
    (``runs/smoke/figures/`` at the smoke profile, see :func:`figures_dir`).

    Args:
        name: named after the paper's figure, e.g. ``"fig02b_toy_with_fa"``.
        caption: one sentence saying what it shows (and how it relates to the paper's).
        profile: the profile that produced it (smoke / quick / paper).
        source: the notebook or function that made it.
    """
    folder = figures_dir(profile)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _update_manifest(folder, path.name, {
        "caption": caption, "profile": profile, "source": source,
        "written": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})
    return path


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4g}"
    return str(v)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats with 4 significant digits, None as '-'."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def write_table(name: str, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                *, profile: str, notes: Optional[str] = None, source: str = "") -> Path:
    """Write ``results/<name>.md`` (``runs/smoke/results/`` at the smoke profile): a title,
    the table, notes, and provenance.

    Returns the path. Rows are written as given; nothing is filled in by hand.
    """
    rows = list(rows)
    text = [f"# {title}", "", markdown_table(columns, rows), ""]
    if notes:
        text += [notes.strip(), ""]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text.append(f"_Written by {source or 'fa_utils'} at profile `{profile}`, {stamp}._")
    path = results_dir(profile) / f"{name}.md"
    path.write_text("\n".join(text) + "\n")
    return path
