"""Where figures, tables, checkpoints and executed notebooks go; the figure and table writers."""

import contextlib
import datetime as _dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

OUTPUT_ROOT_ENV = "FA_OUTPUT_ROOT"
UPDATE_COMMITTED_ENV = "FA_UPDATE_COMMITTED"  # 1 (true, yes): a kernel writes figures/, results/
MANIFEST = "MANIFEST.json"
SCRATCH_PROFILES = ("smoke",)  # write runs/<profile>/ unless $FA_OUTPUT_ROOT is set


def repo_root() -> Path:
    """The repository holding this package (editable install), else the current folder."""
    here = Path(__file__).resolve().parent.parent
    is_repo = (here / "pyproject.toml").exists() and (here / "notebooks").is_dir()
    return here if is_repo else Path.cwd().resolve()


def resolve_output_root(value: str) -> Path:
    """``value`` made absolute against the launch folder ``$PWD``, else the cwd."""
    pwd = os.environ.get("PWD")
    launch = Path(pwd) if pwd and os.path.isabs(pwd) and os.path.isdir(pwd) else Path.cwd()
    return (launch / Path(value).expanduser()).resolve()


def project_root() -> Path:
    """Where outputs go: ``$FA_OUTPUT_ROOT`` if set, else :func:`repo_root`."""
    env = os.environ.get(OUTPUT_ROOT_ENV)
    return resolve_output_root(env) if env else repo_root()


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter (ipykernel) kernel."""
    loaded = "ipykernel" in sys.modules and "IPython" in sys.modules
    shell = sys.modules["IPython"].get_ipython() if loaded else None
    return getattr(shell, "kernel", None) is not None


def _output_path(kind: str, profile: Optional[str], make: bool = True) -> Path:
    """``<root>/<kind>``; ``<root>/runs/<profile>/<kind>`` at smoke or in an interactive kernel."""
    flag = os.environ.get(UPDATE_COMMITTED_ENV, "").strip().lower()
    interactive = flag not in ("1", "true", "yes") and in_jupyter_kernel()
    path = project_root() / kind
    if not os.environ.get(OUTPUT_ROOT_ENV) and (profile in SCRATCH_PROFILES or interactive):
        path = project_root() / "runs" / (profile or "default") / kind
    if make:
        path.mkdir(parents=True, exist_ok=True)
    return path


def describe_destination(profile: Optional[str]) -> str:
    """Where figures and tables at ``profile`` go, and how to update the committed ones."""
    figs = _output_path("figures", profile, make=False)
    where = f"outputs: figures -> {figs}, tables -> {_output_path('results', profile, False)}"
    if figs == project_root() / "figures" or profile in SCRATCH_PROFILES:
        return where
    return where + (f" (an interactive run; to update figures/ and results/: `python -m fa_utils "
                    f"run NN --profile {profile}` or `%env {UPDATE_COMMITTED_ENV}=1`)")


def results_dir(profile: Optional[str] = None) -> Path:
    """``results/`` or ``runs/<profile>/results/``."""
    return _output_path("results", profile)


def runs_dir() -> Path:
    """The ignored ``runs/`` (created): checkpoints, executed notebooks, logs."""
    path = project_root() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_path(name: str, profile: str) -> Path:
    """``runs/checkpoints/<name>-<profile>.pt``: a smoke run never resumes a quick one."""
    (runs_dir() / "checkpoints").mkdir(exist_ok=True)
    return runs_dir() / "checkpoints" / f"{name}-{profile}.pt"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file (a reader never sees half)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    return tmp.replace(path)


def save_figure(fig, name: str, *, caption: str, profile: str, source: str = "") -> Path:
    """Save ``fig`` as ``<figures>/<name>.png``, noted in ``MANIFEST.json``; its path."""
    folder = _output_path("figures", profile)
    path, manifest = folder / f"{name}.png", folder / MANIFEST
    fig.savefig(path, dpi=110, bbox_inches="tight")
    data = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):  # none yet, or not JSON
        data = json.loads(manifest.read_text())
    data[path.name] = {"caption": caption, "profile": profile, "source": source,
                       "written": utc_now()}
    write_atomic(manifest, json.dumps(dict(sorted(data.items())), indent=2) + "\n")
    return path


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats with 4 significant digits, None as '-'."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
                                for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_table(name: str, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                *, profile: str, notes: Optional[str] = None, source: str = "") -> Path:
    """Write ``<results_dir(profile)>/<name>.md``: title, table, ``notes``, provenance."""
    text = [f"# {title}", "", markdown_table(columns, rows), ""]
    text += [notes.strip(), ""] if notes else []
    text.append(f"_Written by {source or 'fa_utils'} at profile `{profile}`, {utc_now()}._")
    return write_atomic(results_dir(profile) / f"{name}.md", "\n".join(text) + "\n")


def source_commit() -> str:
    """The commit checked out, as markdown for REPORT.md's header, marked when the code that
    makes the outputs (fa_utils/, notebooks/) differs from it."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head, dirty = (subprocess.check_output(["git", *args], cwd=repo_root(), text=True,
                                               timeout=60, stderr=subprocess.DEVNULL)
                       for args in (["rev-parse", "--short", "HEAD"],
                                    ["status", "--porcelain", "--", "fa_utils", "notebooks"]))
        return f"`{head.strip()}`" + (" with uncommitted changes" if dirty.strip() else "")
    return "unknown (not a git work tree)"
