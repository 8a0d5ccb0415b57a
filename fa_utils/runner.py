"""``python -m fa_utils``: execute the notebooks headlessly with papermill.

    python -m fa_utils reproduce [--profile quick]        # the main job: every notebook, in order
    python -m fa_utils run 01 -p seed 3 --profile smoke   # or notebooks/01_toy_sin.ipynb
    python -m fa_utils report [--profile quick]           # rebuild results/REPORT.md alone
    python -m fa_utils download cifar10 [--data-root DIR] # fetch a dataset (torchvision)

The profile and each ``-p NAME VALUE`` (a Python literal, else the word) are checked before any
kernel starts (exit 2); Ctrl-C checkpoints, exits 130 and names the command that resumes.
"""

import argparse
import ast
import os
import re
import shlex
import sys
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional, Sequence, get_type_hints
from unittest import mock

import nbformat

from . import claims, outputs
from .config import PROFILES, SECTIONS, ConfigError, check_type, make_config, resolve_profile

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # 130 = 128 + SIGINT, as a shell says
OTHER_PARAMETERS = MappingProxyType({"interactive": Optional[bool]})  # feed no config field


class RunnerError(RuntimeError):
    """A notebook that cannot be run as asked: missing, or a bad parameter."""


class NotebookStopped(RunnerError):
    """A notebook whose run stopped; ``state`` "failed" or "interrupted"."""

    def __init__(self, message: str, state: str):
        super().__init__(message)
        self.state = state


def all_notebooks() -> list[Path]:
    """``notebooks/NN_*.ipynb`` in numeric order."""
    return sorted((outputs.repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _find(name: str) -> Path:
    """A notebook by path, stem or prefix (``01``, ``01_toy``); prepare() names a missing one."""
    matches = [p for p in all_notebooks() if p.name.startswith(name)]
    path = Path(name)
    return path.resolve() if path.exists() else matches[0] if len(matches) == 1 else path


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The defaults of the cell tagged ``parameters``, as papermill reads them."""
    import papermill as pm

    return {n: ast.literal_eval(p["default"]) for n, p in pm.inspect_notebook(str(path)).items()}


def config_sections(path: Path) -> tuple[str, ...]:
    """The sections of the notebook's ``make_config("<section>", ...)`` calls; all if none."""
    cells = nbformat.read(path, as_version=4).cells
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    found = re.findall(r"make_config\(\s*[\"'](\w+)", code)
    return tuple(s for s in dict.fromkeys(found) if s in SECTIONS) or tuple(SECTIONS)


def _read(raw: str, annotation: Any) -> Any:
    """A ``-p`` word as a Python literal, else the string itself; a str parameter keeps it raw."""
    if annotation in (str, Optional[str]) and raw != "None":
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError):
        return raw
    return list(value) if isinstance(value, tuple) else value  # papermill writes no tuples


def prepare(notebooks: Sequence[Path], raw_params: Sequence[Sequence[str]],
            profile: Optional[str]) -> list[tuple[Path, dict[str, Any]]]:
    """(notebook, parameters) per notebook, each ``-p`` checked by config; RunnerError: what."""
    profile, plans = resolve_profile(profile), []
    for nb in notebooks:
        if not nb.exists():
            raise RunnerError(f"no notebook {nb}; available: {[p.name for p in all_notebooks()]}")
        declared = notebook_parameters(nb)
        hints = {s: get_type_hints(SECTIONS[s]) for s in config_sections(nb)}
        fields = {name: tp for h in hints.values() for name, tp in h.items()}
        params = {}
        try:
            for name, raw in raw_params:
                if name not in declared:
                    raise RunnerError(f"unknown parameter {name!r} for {nb.name}; its parameters "
                                      f"are {sorted(declared)}")
                if name == "profile":
                    raise RunnerError(f"set the profile with --profile {shlex.quote(raw)}, not "
                                      "with -p profile")
                tp = (fields.get(name) or OTHER_PARAMETERS.get(name)
                      or (Any if declared[name] is None else type(declared[name])))
                params[name] = _read(raw, tp)
                if name not in fields:
                    check_type("notebook", name, params[name], tp)
            for s, h in hints.items():
                make_config(s, profile, **{n: v for n, v in params.items() if n in h})
        except ConfigError as exc:
            raise RunnerError(f"{nb.name}: {exc}") from None
        plans.append((nb, {**params, **({"profile": profile} if "profile" in declared else {})}))
    return plans


def execute(nb: Path, params: dict[str, Any], out_dir: Path, timeout: Optional[int] = None) -> Path:
    """``out_dir/<name>``: ``nb`` run by papermill. NotebookStopped: a cell failed, or Ctrl-C."""
    import papermill as pm
    from jupyter_core.paths import jupyter_runtime_dir
    from traitlets.config import Config

    out_dir.mkdir(parents=True, exist_ok=True)
    runtime = Path(jupyter_runtime_dir())
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    # ipc: no TCP port; Ctrl-C interrupts the kernel (a training loop checkpoints), then stops it
    kernel = Config(KernelManager={"transport": "ipc", "ip": str(runtime / f"fa-{os.getpid()}"),
                                   "shutdown_wait_time": 10.0})
    out, started = out_dir / nb.name, []
    try:
        pm.execute_notebook(nb, out, parameters=params, kernel_name="python3", cwd=nb.parent,
                            progress_bar={"desc": nb.stem}, execution_timeout=timeout,
                            config=kernel, extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                            on_cell_execute=lambda cell, cell_index: started.append(
                                f"cell {cell_index}, which begins `{cell.source.splitlines()[0]}`"))
        return out
    except (Exception, KeyboardInterrupt) as exc:
        where = (started or ["its start"])[-1]
        if isinstance(exc, KeyboardInterrupt):
            raise NotebookStopped(f"notebook {nb.name} stopped in {where} by Ctrl-C; a training "
                                  "loop (train.fit) saved a checkpoint in "
                                  f"{outputs.runs_dir() / 'checkpoints'}, other cells rerun.\n"
                                  f"  executed up to there: {out}", "interrupted") from exc
        ename = getattr(exc, "ename", None) or type(exc).__name__
        text = str(getattr(exc, "evalue", exc)).strip().splitlines() or [""]
        raise NotebookStopped(f"notebook {nb.name} failed in {where}: {ename}: {text[0]}\n  the "
                              f"executed notebook shows the traceback: {out}", "failed") from exc


def _resume_command(args, words: Sequence[str], profile: str) -> str:
    cmd = [sys.executable, "-m", "fa_utils", "run", *words, "--profile", profile]
    cmd += [w for name, raw in args.parameter for w in ("-p", name, raw)]
    if outputs.project_root() != outputs.repo_root():
        cmd += ["--out", str(outputs.project_root())]
    cmd += ["--timeout", str(args.timeout)] * bool(args.timeout)
    return shlex.join(cmd)


def _run_all(plans, args, profile: str, runs: dict, times: list) -> int:
    """The exit status of the plans run in order; fills ``runs`` and ``times`` (name, seconds)."""
    words = [nb.name[:2] if nb in all_notebooks() else str(nb) for nb, _ in plans]
    out_dir = outputs.runs_dir() / "notebooks" / profile
    for i, (nb, params) in enumerate(plans):
        try:
            print(f"running {nb.name} with {params} ...", flush=True)
            t0 = time.perf_counter()
            out = execute(nb, params, out_dir, args.timeout)
            runs[nb.stem] = claims.NotebookRun("ok", str(out))
            times.append((nb.name, time.perf_counter() - t0))
            print(f"  done in {times[-1][1]:.0f} s", flush=True)
        except (NotebookStopped, KeyboardInterrupt) as exc:
            state = getattr(exc, "state", "interrupted")
            runs[nb.stem] = claims.NotebookRun(state, f"executed notebook: {out_dir / nb.name}")
            for later, _ in plans[i + 1:]:
                runs[later.stem] = claims.NotebookRun("not run", f"{words[i]} {state} first")
            message = f"{state.upper()}: {str(exc) or 'Ctrl-C between notebooks'}"
            if state == "interrupted":
                message += ("\n  to resume (training continues from the checkpoints):\n    "
                            + _resume_command(args, words[i:], profile))
            print(message, file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED if state == "interrupted" else EXIT_FAILED
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fa_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch a dataset's files with torchvision")
    dl.add_argument("dataset", help="mnist, cifar10, celeba or stl10")
    dl.add_argument("--data-root", default="data", help="the notebooks' data_root (default data)")
    for name in ("reproduce", "run", "report"):
        p = sub.add_parser(name)
        if name == "run":
            p.add_argument("notebooks", nargs="+", help="notebook paths or names (01, 01_toy)")
        p.add_argument("--profile", help=f"one of {list(PROFILES)} (default: $FA_PROFILE or quick)")
        p.add_argument("--out", help="write figures/, results/ and runs/ under this folder")
        if name != "report":
            p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                           metavar=("NAME", "VALUE"), help="set a notebook parameter")
            p.add_argument("--timeout", type=int, help="seconds per cell")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "download":  # exit 2: an unknown dataset, 1: the files cannot be had
        from . import data

        try:
            paths = data.download(args.dataset, data.data_root(args.data_root))
        except (ValueError, data.DatasetUnavailable) as exc:
            usage = isinstance(exc, ValueError)
            print(f"{'error' if usage else 'FAILED'}: {exc}", file=sys.stderr)
            return EXIT_USAGE if usage else EXIT_FAILED
        print(f"{args.dataset}: in place: {', '.join(paths)}")
        return 0
    root = args.out or os.environ.get(outputs.OUTPUT_ROOT_ENV)  # relative: to the launch folder
    env = {outputs.UPDATE_COMMITTED_ENV: "1", "FA_HEADLESS": os.environ.get("FA_HEADLESS", "1"),
           **({outputs.OUTPUT_ROOT_ENV: str(outputs.resolve_output_root(root))} if root else {})}
    runs, times = {}, []
    with mock.patch.dict(os.environ, env):  # restored afterwards
        try:
            profile = resolve_profile(args.profile)
            notebooks = (all_notebooks() if args.command == "reproduce" else
                         [_find(n) for n in getattr(args, "notebooks", [])])
            plans = prepare(notebooks, getattr(args, "parameter", []), profile)
            commit = outputs.source_commit()
        except (RunnerError, ValueError) as exc:  # ConfigError is a ValueError
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        status = _run_all(plans, args, profile, runs, times) if plans else 0
        try:
            path, line = claims.write_report(profile, runs, commit)
            print(f"claims: {line}\nreport: {path}", flush=True)
            if not status and args.command == "reproduce":
                print(f"run times: {claims.write_run_times(profile, times, commit)}")
        except (ValueError, OSError) as exc:
            print(f"error: the report could not be written: {exc}", file=sys.stderr)
            return status or (EXIT_USAGE if args.command == "report" else EXIT_FAILED)
    return status
