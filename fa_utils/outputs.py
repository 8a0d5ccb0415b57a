"""Where results go, and the writers of figures (with a manifest) and tables.

Figures, tables and ``runs/`` go under the repository, or ``$FA_OUTPUT_ROOT`` (the tests,
``python -m fa_utils --out``; relative to the folder the command started in). The ``smoke``
profile, and a Jupyter kernel without ``FA_UPDATE_COMMITTED=1`` (the runner sets it), write
``runs/<profile>/figures/`` and ``runs/<profile>/results/``, never the committed folders.
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
#: Profiles whose figures and tables go to ``runs/<profile>/`` unless ``$FA_OUTPUT_ROOT`` is set.
SCRATCH_PROFILES = ("smoke",)


def repo_root() -> Path:
    """The repository holding this package (editable install), else the current folder."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() and (here / "notebooks").is_dir() else Path.cwd().resolve()


def resolve_output_root(value: str) -> Path:
    """An output root as an absolute path: ``~`` expanded, a relative path taken from
    ``$PWD`` when it is an existing absolute folder (a kernel inherits it while it runs in
    ``notebooks/``), else from the current folder."""
    pwd = os.environ.get("PWD")
    launch = Path(pwd) if pwd and os.path.isabs(pwd) and os.path.isdir(pwd) else Path.cwd()
    return (launch / Path(value).expanduser()).resolve()


def project_root() -> Path:
    """Where outputs go: ``$FA_OUTPUT_ROOT`` if set, else :func:`repo_root`."""
    env = os.environ.get(OUTPUT_ROOT_ENV)
    return resolve_output_root(env) if env else repo_root()


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter (ipykernel) kernel; imports nothing."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def writes_committed() -> bool:
    """Whether figures and results may go to the committed folders: outside a Jupyter kernel,
    and in one with ``FA_UPDATE_COMMITTED=1``."""
    flag = os.environ.get(UPDATE_COMMITTED_ENV, "").strip().lower()
    return flag in ("1", "true", "yes") or not in_jupyter_kernel()


def _output_path(kind: str, profile: Optional[str]) -> Path:
    """``<root>/<kind>``, or ``<root>/runs/<profile>/<kind>`` for a scratch profile or an
    interactive kernel when ``$FA_OUTPUT_ROOT`` is not set. Creates nothing."""
    if not os.environ.get(OUTPUT_ROOT_ENV) and (profile in SCRATCH_PROFILES or not writes_committed()):
        return project_root() / "runs" / (profile or "default") / kind
    return project_root() / kind


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe_destination(profile: Optional[str]) -> str:
    """One sentence: where figures and tables at ``profile`` go in this process and, when
    that is not the committed folders, how to update those. Creates nothing."""
    figs, res = _output_path("figures", profile), _output_path("results", profile)
    where = f"outputs: figures -> {figs}, tables -> {res}"
    if figs == project_root() / "figures":
        return where
    if profile in SCRATCH_PROFILES:
        return where + f" (the {profile} profile never writes the committed figures/ and results/)"
    return (where + " (an interactive run: the committed figures/ and results/ are left as they "
            f"are; to update them run `python -m fa_utils run NN --profile {profile}`, or set "
            f"{UPDATE_COMMITTED_ENV}=1 in the kernel, e.g. `%env {UPDATE_COMMITTED_ENV}=1`, "
            "before this cell)")


def figures_dir(profile: Optional[str] = None) -> Path:
    """The folder figures at ``profile`` go to (created): ``figures/`` or ``runs/<profile>/figures/``."""
    return _made(_output_path("figures", profile))


def results_dir(profile: Optional[str] = None) -> Path:
    """The folder tables at ``profile`` go to (created): ``results/`` or ``runs/<profile>/results/``."""
    return _made(_output_path("results", profile))


def runs_dir() -> Path:
    """The ignored ``runs/`` folder (created): checkpoints, executed notebooks, logs."""
    return _made(project_root() / "runs")


def checkpoint_path(name: str, profile: str) -> Path:
    """``runs/checkpoints/<name>-<profile>.pt``: a smoke run never resumes a quick one."""
    return _made(runs_dir() / "checkpoints") / f"{name}-{profile}.pt"


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def save_figure(fig, name: str, *, caption: str, profile: str, source: str = "",
                dpi: int = 110) -> Path:
    """Save ``fig`` as ``<figures_dir(profile)>/<name>.png`` (named after the paper's figure,
    e.g. ``fig02b_toy_with_fa``) and record caption, profile, source and time in its
    ``MANIFEST.json`` (written atomically). Returns the path."""
    folder = figures_dir(profile)
    path, manifest = folder / f"{name}.png", folder / MANIFEST
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    try:
        data = json.loads(manifest.read_text()) if manifest.exists() else {}
    except json.JSONDecodeError:
        data = {}
    data[path.name] = {"caption": caption, "profile": profile, "source": source, "written": _stamp()}
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")
    os.replace(tmp, manifest)
    return path


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats with 4 significant digits, None as '-'."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows])


def write_table(name: str, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                *, profile: str, notes: Optional[str] = None, source: str = "") -> Path:
    """Write ``<results_dir(profile)>/<name>.md``: the title, the table (rows as given),
    ``notes`` and provenance. Returns the path."""
    text = [f"# {title}", "", markdown_table(columns, rows), ""] + ([notes.strip(), ""] if notes else [])
    text.append(f"_Written by {source or 'fa_utils'} at profile `{profile}`, {_stamp()}._")
    path = results_dir(profile) / f"{name}.md"
    path.write_text("\n".join(text) + "\n")
    return path
