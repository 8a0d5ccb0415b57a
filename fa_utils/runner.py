"""The headless runner: ``python -m fa_utils ...`` executes the notebooks with papermill.

    python -m fa_utils list                          # notebooks and their parameters
    python -m fa_utils reproduce [--profile quick]   # every notebooks/NN_*.ipynb, in order
    python -m fa_utils run 01 -p seed 3 --profile smoke   # or notebooks/01_toy_sin.ipynb

Before anything runs, the profile, every ``-p NAME VALUE`` name (it must be a parameter of
each selected notebook's ``parameters`` cell) and every value's type (that of the
parameter's default; strings stay strings, so ``-p dataset 001`` is not turned into an int)
are checked. Executed notebooks go to ``runs/notebooks/``. A failing notebook stops the run
with a message naming the notebook, the cell and the error, and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .config import PROFILES, ConfigError, resolve_profile
from .outputs import repo_root, runs_dir

EXIT_FAILED = 1
EXIT_USAGE = 2


class RunnerError(RuntimeError):
    """A notebook that cannot be run as asked (missing, bad parameter) or that failed."""


@dataclass
class NotebookFailure(RunnerError):
    notebook: str
    cell_index: Optional[int]
    exec_count: Optional[int]
    ename: str
    evalue: str
    output: str

    def __str__(self) -> str:
        cell = (f"cell {self.cell_index} of the executed copy (In [{self.exec_count}])"
                if self.cell_index is not None else "an unknown cell")
        return (f"notebook {self.notebook} failed in {cell}: {self.ename}: {self.evalue}\n"
                f"  executed copy with the traceback: {self.output}")


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def all_notebooks() -> list[Path]:
    """``notebooks/NN_*.ipynb`` in numeric order."""
    return sorted(p for p in notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The ``parameters`` cell of ``path`` as name -> default value (a Python literal).

    Raises:
        RunnerError: the notebook has no cell tagged ``parameters``, or a default that is
            not a literal.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise RunnerError(f"{path.name} must have exactly one cell tagged 'parameters', "
                          f"found {len(cells)}")
    params: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            try:
                params[target.id] = ast.literal_eval(node.value)
            except (ValueError, AttributeError) as exc:
                raise RunnerError(f"{path.name}: parameter default on line {node.lineno} is "
                                  f"not a literal") from exc
    return params


def coerce(name: str, raw: str, default: Any) -> Any:
    """Turn the command-line string ``raw`` into the type of ``default``.

    ``None`` defaults accept any Python literal (else the string itself); strings stay
    strings; bools accept true/false/1/0.

    Raises:
        RunnerError: ``raw`` cannot be read as that type.
    """
    def literal() -> Any:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw

    if default is None:
        return literal()
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
    elif isinstance(default, str):
        return raw
    elif isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            pass
    elif isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            pass
    elif isinstance(default, (list, tuple)):
        value = literal()
        if isinstance(value, (list, tuple)):
            return list(value)
    kind = {"int": "an int", "float": "a float", "bool": "a bool (True or False)",
            "list": "a list", "tuple": "a list"}.get(type(default).__name__, type(default).__name__)
    raise RunnerError(f"parameter {name!r}: {raw!r} is not {kind} (its default is {default!r}); "
                      f"e.g. -p {name} {default!r}")


def prepare(notebooks: Sequence[Path], raw_params: Sequence[tuple[str, str]],
            profile: Optional[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Check everything that can be checked before running; return (notebook, parameters).

    Raises:
        RunnerError / ConfigError: a missing notebook, unknown profile, unknown parameter or
            a value of the wrong type.
    """
    profile = resolve_profile(profile)
    plans = []
    for nb in notebooks:
        if not nb.exists():
            raise RunnerError(f"no notebook {nb}; available: "
                              f"{[p.name for p in all_notebooks()]}")
        declared = notebook_parameters(nb)
        params: dict[str, Any] = {}
        for name, raw in raw_params:
            if name not in declared:
                raise RunnerError(f"unknown parameter {name!r} for {nb.name}; its parameters "
                                  f"are {sorted(declared)}")
            params[name] = coerce(name, raw, declared[name])
        if "profile" in declared:
            params["profile"] = profile
        plans.append((nb, params))
    return plans


def execute(nb: Path, params: dict[str, Any], out_dir: Path, timeout: Optional[int] = None) -> Path:
    """Execute one notebook with papermill into ``out_dir``; return the executed copy.

    Raises:
        NotebookFailure: a cell raised; names the cell and the error.
    """
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / nb.name
    try:
        pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name="python3",
                            cwd=str(nb.parent), progress_bar=False, execution_timeout=timeout)
    except pm.PapermillExecutionError as exc:
        raise NotebookFailure(nb.name, getattr(exc, "cell_index", None),
                              getattr(exc, "exec_count", None), exc.ename,
                              str(exc.evalue).splitlines()[0] if exc.evalue else "",
                              str(out)) from exc
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fa_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the notebooks and their parameters")
    for name, helptext in (("reproduce", "run every notebook in order (the main job)"),
                           ("run", "run the given notebooks")):
        p = sub.add_parser(name, help=helptext)
        if name == "run":
            p.add_argument("notebooks", nargs="+", help="notebook paths or names (01, 01_toy)")
        p.add_argument("--profile", default=None,
                       help=f"one of {list(PROFILES)} (default: $FA_PROFILE or quick)")
        p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                       metavar=("NAME", "VALUE"), help="set a notebook parameter")
        p.add_argument("--out", default=None, help="folder for executed notebooks "
                       "(default runs/notebooks)")
        p.add_argument("--timeout", type=int, default=None, help="per-cell timeout, seconds")
    args = parser.parse_args(argv)

    if args.command == "list":
        for nb in all_notebooks():
            print(f"{nb.name}: {notebook_parameters(nb)}")
        return 0

    if args.command == "reproduce":
        notebooks = all_notebooks()
    else:
        notebooks = [_find(n) for n in args.notebooks]
    try:
        plans = prepare(notebooks, [tuple(p) for p in args.parameter], args.profile)
    except (RunnerError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out_dir = Path(args.out) if args.out else runs_dir() / "notebooks"
    # no widget front end here: the explorers draw static figures (inherited by the kernel)
    os.environ.setdefault("FA_HEADLESS", "1")
    times = []
    for nb, params in plans:
        print(f"running {nb.name} with {params} ...", flush=True)
        t0 = time.perf_counter()
        try:
            out = execute(nb, params, out_dir, args.timeout)
        except NotebookFailure as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return EXIT_FAILED
        times.append((nb.name, time.perf_counter() - t0))
        print(f"  done in {times[-1][1]:.0f} s -> {out}", flush=True)
    total = sum(t for _, t in times)
    print("\n".join([f"{n:40s} {t:7.0f} s" for n, t in times] + [f"{'total':40s} {total:7.0f} s"]))
    return 0


def _find(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path.resolve()
    matches = [p for p in all_notebooks() if p.name.startswith(name) or p.stem == name]
    if len(matches) == 1:
        return matches[0]
    return path  # prepare() reports it missing
