"""``python -m fa_utils``: execute the notebooks headlessly with papermill.

    python -m fa_utils reproduce [--profile quick]        # the main job: every notebook, in order
    python -m fa_utils run 01 -p seed 3 --profile smoke   # or notebooks/01_toy_sin.ipynb
    python -m fa_utils report [--profile quick]           # rebuild results/REPORT.md alone
    python -m fa_utils download cifar10 [--data-root DIR] # fetch a dataset (torchvision)

Checked before any kernel starts (one message, exit 2): the profile, each ``-p NAME VALUE``
(as the config field it feeds), a clean work tree. Executed copies go to
``runs/notebooks/<profile>/``. Ctrl-C interrupts the kernel and exits 130, naming the command
that resumes; a second kills the kernel.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, Optional, Sequence
from unittest import mock

import nbformat

from . import outputs, report
from .config import PROFILES, SECTIONS, ConfigError, make_config, resolve_profile

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # 130 = 128 + SIGINT, as a shell says
KERNEL_TRANSPORT = "ipc"  # no TCP port, no warning about it (os.killpg: POSIX only anyway)
OTHER_PARAMETERS = types.MappingProxyType({"interactive": Optional[bool]})  # feed no config field


class RunnerError(RuntimeError):
    """A notebook that cannot be run as asked: missing, a bad parameter, a dirty work tree."""


class NotebookStopped(RunnerError):
    """``state`` "failed" or "interrupted"; ``copy``: the executed copy."""

    def __init__(self, message: str, state: str, copy: Optional[Path] = None):
        super().__init__(message)
        self.state, self.copy = state, copy


def all_notebooks() -> list[Path]:
    """``notebooks/NN_*.ipynb`` in numeric order."""
    return sorted((outputs.repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _find(name: str) -> Path:
    """A notebook by path, stem or prefix (``01``, ``01_toy``); prepare() names a missing one."""
    matches = [p for p in all_notebooks() if p.name.startswith(name)]
    path = Path(name)
    return path.resolve() if path.exists() else matches[0] if len(matches) == 1 else path


def _code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The cell tagged ``parameters`` as name -> default; RunnerError unless exactly one such
    cell of literal defaults."""
    cells = [c for c in _code_cells(path) if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise RunnerError(f"{path.name} must have one cell tagged 'parameters', found {len(cells)}")
    params = {}
    for node in ast.parse(cells[0].source).body:
        try:
            target = getattr(node, "target", None) or node.targets[0]
            params[target.id] = ast.literal_eval(node.value)
        except (ValueError, AttributeError) as exc:
            raise RunnerError(f"{path.name}: the default on line {node.lineno} is not a "
                              "literal") from exc
    return params


def config_sections(path: Path) -> tuple[str, ...]:
    """The sections of the notebook's ``make_config("<section>", ...)`` calls; all if none."""
    code = "\n".join(c.source for c in _code_cells(path))
    found = re.findall(r"make_config\(\s*[\"'](\w+)", code)
    return tuple(s for s in dict.fromkeys(found) if s in SECTIONS) or tuple(SECTIONS)


def annotation_of(default: Any) -> Any:
    """The type of a parameter that feeds no config field, from its default (Any for None)."""
    return Any if default is None else tuple if isinstance(default, list) else type(default)


def _word(value: Any) -> str:
    return shlex.quote(json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value))


def parse_word(name: str, raw: str, tp: Any, example: Any = None) -> Any:
    """``raw`` read as ``tp``: bool (true/false/1/0/yes/no), int, float, str (``001`` stays a
    string), tuple (a Python list, returned as a list), Optional of one (``None``), or Any (a
    literal, else the string). RunnerError names the parameter and ``example``."""
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType)
    if optional and raw.strip() == "None":
        return None
    tp = next(a for a in typing.get_args(tp) if a is not type(None)) if optional else tp
    low = raw.strip().lower()
    with contextlib.suppress(ValueError, SyntaxError):
        if tp in (str, int, float):
            return tp(raw)
        if tp is Any:
            return ast.literal_eval(raw)
        if tp is bool and low in ("true", "1", "yes", "false", "0", "no"):
            return low in ("true", "1", "yes")
        if tp is tuple and isinstance(value := ast.literal_eval(raw), (list, tuple)):
            return list(value)
    if tp is Any:
        return raw
    label = {bool: "a bool (True or False)", int: "an int", float: "a float", tuple: "a list"}
    hint = f"; e.g. -p {name} {_word(example)}" if example is not None else ""
    raise RunnerError(f"parameter {name!r}: {raw!r} is not {label.get(tp, tp)}"
                      f"{' or None' * optional}{hint}")


def prepare(notebooks: Sequence[Path], raw_params: Sequence[Sequence[str]],
            profile: Optional[str]) -> list[tuple[Path, dict[str, Any]]]:
    """(notebook, parameters) for each notebook: each ``-p`` word read as the config field it
    feeds (else :data:`OTHER_PARAMETERS` or its default), then each config section the notebook
    builds checked once with them (docs/choices.md, runner.py). RunnerError: what, and a fix."""
    profile, plans = resolve_profile(profile), []
    for nb in notebooks:
        if not nb.exists():
            raise RunnerError(f"no notebook {nb}; available: {[p.name for p in all_notebooks()]}")
        declared = notebook_parameters(nb)
        configs = {s: make_config(s, profile) for s in config_sections(nb)}
        hints = {s: typing.get_type_hints(SECTIONS[s]) for s in configs}
        params = {}
        for name, raw in raw_params:
            if name not in declared:
                raise RunnerError(f"unknown parameter {name!r} for {nb.name}; its parameters "
                                  f"are {sorted(declared)}")
            if name == "profile":
                raise RunnerError(f"set the profile with --profile {shlex.quote(raw)}, not with "
                                  "-p profile")
            s = next((s for s in configs if name in hints[s]), None)
            tp = hints[s][name] if s else OTHER_PARAMETERS.get(name, annotation_of(declared[name]))
            try:
                params[name] = parse_word(name, raw, tp, getattr(configs[s], name) if s else
                                          declared[name])
            except RunnerError as exc:
                raise RunnerError(f"{nb.name}: {exc}") from None
        for s, default in configs.items():
            try:
                make_config(s, profile, **{n: v for n, v in params.items() if n in hints[s]})
            except ConfigError as exc:  # blamed on the first -p that the message names
                bad = [(n, raw) for n, raw in raw_params
                       if n in hints[s] and re.search(rf"\b{n}\b", str(exc))]
                if not bad:
                    raise RunnerError(f"{nb.name}: {exc}") from exc
                (name, raw), example = bad[0], getattr(default, bad[0][0])
                hint = f"; e.g. -p {name} {_word(example)} (the {profile} profile's value)"
                raise RunnerError(f"{nb.name}: -p {name} {shlex.quote(raw)}: {exc}"
                                  f"{hint * (example is not None)}") from exc
        plans.append((nb, {**params, **({"profile": profile} if "profile" in declared else {})}))
    return plans


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def uncommitted_changes(root: Path) -> Optional[list[str]]:
    """Tracked files changed outside figures/ and results/, then untracked files in fa_utils/
    and notebooks/; None when ``root`` is not a git work tree."""
    tracked = _git(root, "diff", "HEAD", "--name-only", "--", ".", ":!figures", ":!results")
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "fa_utils", "notebooks")
    return None if tracked is None or untracked is None else (tracked + untracked).splitlines()


def source_commit(profile: str, allow_dirty: bool, argv: Sequence[str]) -> str:
    """The commit of the outputs, as markdown for REPORT.md's header. RunnerError: the run
    would write the committed figures/ and results/ from uncommitted changes."""
    root = outputs.repo_root()
    head = (_git(root, "rev-parse", "--short", "HEAD") or "").strip()
    changed = uncommitted_changes(root)
    if not head or changed is None:
        return "unknown (not a git work tree)"
    if not changed:
        return f"`{head}`"
    if outputs.project_root() != root or profile in outputs.SCRATCH_PROFILES:
        return f"`{head}` with uncommitted changes"
    listed = ", ".join(changed[:8]) + " ..." * (len(changed) > 8)
    if allow_dirty:
        return (f"`{head}` **WITH UNCOMMITTED CHANGES** (`--allow-dirty`; {listed}): **these "
                "results match no commit**")
    cmd = shlex.join([sys.executable, "-m", "fa_utils", *argv])
    raise RunnerError(f"the work tree has uncommitted changes ({listed}), and this run would "
                      "write the committed figures/ and results/, whose REPORT.md must name a "
                      "clean commit. Commit them or stash them (git stash -u) and rerun; or "
                      f"write elsewhere:\n  {cmd} --out runs/elsewhere\nor write here anyway, "
                      f"which REPORT.md's header then says loudly:\n  {cmd} --allow-dirty")


def reference_seconds(steps: int = 20, batch: int = 128) -> float:
    """How fast the machine is today: seconds of ``steps`` FA steps (after an untimed one) of the
    MNIST encoder (Table 7) at ``batch`` on fixed random data, CPU; the random state is kept."""
    import torch

    from . import fa, models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = models.make_encoder("mnist", {"z": 128})
        opt = torch.optim.Adam(enc.parameters(), lr=5e-4, betas=(0.5, 0.999))
        x = torch.rand(batch, 1, 28, 28)
        fa.fa_step(enc, opt, x)
        t0 = time.perf_counter()
        for _ in range(steps):
            fa.fa_step(enc, opt, x)
        return time.perf_counter() - t0


class Interrupts:
    """The SIGINT handler: the first interrupts the running kernel (as Jupyter's *Interrupt*); a
    second, or one while no kernel runs, kills it and raises KeyboardInterrupt."""

    def __init__(self):
        self.count, self.killed, self.managers = 0, False, []

    def signal_kernel(self, signum: int) -> bool:
        """Send ``signum`` to the running kernel's process group; False when none runs."""
        for km in self.managers:
            process = getattr(km.provisioner, "process", None)
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(km.provisioner.pgid or process.pid, signum)
                return True
        return False

    def __call__(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1 and self.signal_kernel(signal.SIGINT):
            print("\nCtrl-C: interrupting the notebook (a training loop first writes a "
                  "checkpoint); press Ctrl-C again to kill its kernel", file=sys.stderr)
            return
        self.killed = self.signal_kernel(signal.SIGKILL) or self.killed
        raise KeyboardInterrupt


def kernel_manager(sink: list, stderr=None) -> type:
    """nbclient's kernel manager class: each instance recorded in ``sink``, its sockets in
    Jupyter's user-only runtime folder, its kernel process's messages to ``stderr``."""
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    class RecordingKernelManager(AsyncKernelManager):
        def __init__(self, *args, **kwargs):
            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
            kwargs.setdefault("ip", str(runtime / f"fa-kernel-{uuid.uuid4().hex[:12]}"))
            super().__init__(*args, **{"transport": KERNEL_TRANSPORT, **kwargs})
            sink.append(self)

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            return await super()._async_launch_kernel(kernel_cmd, **{"stderr": stderr, **kw})

    return RecordingKernelManager


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 3].rstrip() + "..."


class Progress:
    """nbclient hooks: ``<name>: cell k/n (<markdown heading above>) <s> s`` for each code cell
    of at least ``min_s`` seconds (k counts code cells, papermill's injected one included)."""

    def __init__(self, name: str, min_s: float = 2.0):
        self.name, self.min_s, self.labels, self.first_lines = name, min_s, [], []
        self.code, self.current, self.started = {}, None, 0.0

    def on_notebook_start(self, notebook, **_) -> None:
        label = ""
        for cell in notebook.cells:
            lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip()] or [""]
            if cell.cell_type == "markdown":
                label = _short(lines[0].lstrip("#").strip(), 40)
            self.labels.append(label)
            self.first_lines.append(_short(lines[0], 60))
        code = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
        self.code = {i: k + 1 for k, i in enumerate(code)}

    def on_cell_start(self, cell_index, **_) -> None:
        self.started, self.current = time.perf_counter(), cell_index

    def on_cell_executed(self, cell_index, **_) -> None:
        dt, label = time.perf_counter() - self.started, self.labels[cell_index]
        if dt >= self.min_s and cell_index in self.code:
            print(f"  {self.name}: cell {self.code[cell_index]}/{len(self.code)}"
                  f"{f' ({label})' if label else ''} {dt:.0f} s", flush=True)


def execute(nb: Path, params: dict[str, Any], out_dir: Path, timeout: Optional[int] = None,
            interrupts: Optional[Interrupts] = None) -> Path:
    """Execute ``nb`` with papermill into ``out_dir`` (``timeout``: seconds per cell; kernel
    messages to ``NN_name.kernel.log``); the executed copy. NotebookStopped: a cell raised or
    timed out, or Ctrl-C (``interrupts``); its copy is ``NN_name.failed`` / ``.interrupted``."""
    import papermill as pm

    interrupts = interrupts or Interrupts()
    out_dir.mkdir(parents=True, exist_ok=True)
    copy = {s: out_dir / f"{nb.stem}.{s}.ipynb" for s in ("running", "failed", "interrupted")}
    log, progress = out_dir / f"{nb.stem}.kernel.log", Progress(nb.stem)
    try:
        with open(log, "wb") as stderr:
            pm.execute_notebook(nb, copy["running"], parameters=params, kernel_name="python3",
                                cwd=nb.parent, progress_bar=False, execution_timeout=timeout,
                                kernel_manager_class=kernel_manager(interrupts.managers, stderr),
                                on_notebook_start=progress.on_notebook_start,
                                on_cell_start=progress.on_cell_start,
                                on_cell_executed=progress.on_cell_executed)
    except BaseException as exc:
        interrupts.signal_kernel(signal.SIGKILL)  # never leave a kernel behind
        ename = getattr(exc, "ename", None) or type(exc).__name__
        interrupted = interrupts.count > 0 or ename in ("KeyboardInterrupt", "TrainingInterrupted")
        if not (interrupted or isinstance(exc, Exception)):
            raise
        state = "interrupted" if interrupted else "failed"
        kept = copy["running"].replace(copy[state]) if copy["running"].exists() else None
        text = str(getattr(exc, "evalue", exc) or "").strip()
        cell = getattr(exc, "cell_index", progress.current)
        first = "" if cell is None else progress.first_lines[cell]
        where = ("an unknown cell" if cell is None else f"cell {cell} of the executed copy"
                 + f", which begins `{first}`" * bool(first))
        if interrupted:  # text: where a training loop wrote its checkpoint
            how = "its kernel was killed (second Ctrl-C)" if interrupts.killed else "by Ctrl-C"
            saved = text or ("the cell was not in a checkpointed training loop (train.fit), so "
                             "it saved nothing and reruns from its start; the checkpoints "
                             f"written so far are in {outputs.runs_dir() / 'checkpoints'}")
            raise NotebookStopped(f"notebook {nb.name} stopped in {where} {how}.\n  {saved}",
                                  state, kept) from exc
        raise NotebookStopped(f"notebook {nb.name} failed in {where}: {ename}: "
                              f"{(text.splitlines() or [''])[0]}\n  executed copy with the "
                              f"traceback: {kept or '(none written)'}", state, kept) from exc
    finally:
        interrupts.managers.clear()
        if log.exists() and not log.stat().st_size:
            log.unlink()
    for state in ("failed", "interrupted"):
        copy[state].unlink(missing_ok=True)
    return copy["running"].replace(out_dir / nb.name)


def _resume_command(args, words: Sequence[str], profile: str) -> str:
    cmd = [sys.executable, "-m", "fa_utils", "run", *words, "--profile", profile]
    cmd += [w for name, raw in args.parameter for w in ("-p", name, raw)]
    if outputs.project_root() != outputs.repo_root():
        cmd += ["--out", str(outputs.project_root())]
    cmd += ["--timeout", str(args.timeout)] * bool(args.timeout)
    cmd += ["--allow-dirty"] * args.allow_dirty
    return shlex.join(cmd)


def _run_all(plans, args, profile: str, interrupts: Interrupts, runs: dict,
             times: list) -> tuple[int, Optional[float]]:
    """Run the plans in order (``reproduce``: the reference computation first), filling
    ``runs`` (stem -> report.NotebookRun) and ``times``; the exit status and reference s."""
    words, reference = [nb.name[:2] if nb in all_notebooks() else str(nb) for nb, _ in plans], None
    try:
        if args.command == "reproduce":
            print("reference computation (20 FA steps, MNIST encoder) ...", flush=True)
            reference = reference_seconds()
            print(f"  {reference:.1f} s", flush=True)
        for nb, params in plans:
            if interrupts.count:  # a Ctrl-C that the previous notebook survived
                raise KeyboardInterrupt
            print(f"running {nb.name} with {params} ...", flush=True)
            t0 = time.perf_counter()
            out = execute(nb, params, outputs.runs_dir() / "notebooks" / profile, args.timeout,
                          interrupts)
            runs[nb.stem] = report.NotebookRun("ok", str(out))
            times.append((nb.name, time.perf_counter() - t0))
            print(f"  done in {times[-1][1]:.0f} s -> {out}", flush=True)
        return 0, reference
    except NotebookStopped as exc:
        i = len(times)
        runs[plans[i][0].stem] = report.NotebookRun(exc.state, f"executed copy: {exc.copy}")
        message, why = f"FAILED: {exc}", f"notebook {words[i]} {exc.state} first"
        if exc.state == "interrupted":
            message = (f"INTERRUPTED: {exc}\n  to resume (training continues from the "
                       f"checkpoints):\n    {_resume_command(args, words[i:], profile)}"
                       + f"\n  executed copy up to the interrupt: {exc.copy}" * bool(exc.copy))
        status, i = EXIT_INTERRUPTED if exc.state == "interrupted" else EXIT_FAILED, i + 1
    except KeyboardInterrupt:  # between notebooks: nothing was running
        i, why, status = len(times), "the run was interrupted first", EXIT_INTERRUPTED
        message = (f"INTERRUPTED (Ctrl-C) between notebooks.\n  to run the rest: "
                   f"{_resume_command(args, words[i:], profile)}")
    runs.update({nb.stem: report.NotebookRun("not run", why) for nb, _ in plans[i:]})
    print(message, file=sys.stderr, flush=True)
    return status, reference


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fa_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch a dataset's files with torchvision")
    dl.add_argument("dataset", help="mnist, cifar10, celeba or stl10")
    dl.add_argument("--data-root", default="data", help="the notebooks' data_root (default data)")
    for name, what in (("reproduce", "run every notebook in order (the main job)"),
                       ("run", "run the given notebooks"),
                       ("report", "rebuild results/REPORT.md from results/claims/*.json")):
        p = sub.add_parser(name, help=what)
        if name == "run":
            p.add_argument("notebooks", nargs="+", help="notebook paths or names (01, 01_toy)")
        p.add_argument("--profile", help=f"one of {list(PROFILES)} (default: $FA_PROFILE or quick)")
        p.add_argument("--out", help="write figures/, results/ and runs/ under this folder")
        p.add_argument("--allow-dirty", action="store_true", help="write the committed figures/ "
                       "and results/ from uncommitted changes (REPORT.md's header says so)")
        if name != "report":
            p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                           metavar=("NAME", "VALUE"), help="set a notebook parameter")
            p.add_argument("--timeout", type=int, help="seconds per cell")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
    interrupts, runs, times, status, reference = Interrupts(), {}, [], 0, None
    with mock.patch.dict(os.environ, env):  # restored afterwards
        try:
            profile = resolve_profile(args.profile)
            notebooks = (all_notebooks() if args.command == "reproduce" else
                         [_find(n) for n in getattr(args, "notebooks", [])])
            plans = prepare(notebooks, getattr(args, "parameter", []), profile)
            commit = source_commit(profile, args.allow_dirty, argv)
        except (RunnerError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        previous = signal.signal(signal.SIGINT, interrupts)
        try:
            if plans:
                status, reference = _run_all(plans, args, profile, interrupts, runs, times)
            if times:
                total = [("total", sum(t for _, t in times))]
                print("\ntime per notebook:", *(f"  {n:40s} {t:7.0f} s" for n, t in times + total),
                      sep="\n", flush=True)
            path, line = report.write_report(profile, runs, commit)
            print(f"claims: {line}\nreport: {path}", flush=True)
            if not status and args.command != "run" and report.update_readme(line, path):
                print("  (README.md's summary line updated)", flush=True)
            if not status and reference is not None:
                print(f"run times: {report.write_run_times(profile, times, reference, commit)}")
        except (ValueError, OSError) as exc:
            print(f"error: the report could not be written: {exc}", file=sys.stderr)
            return status or (EXIT_USAGE if args.command == "report" else EXIT_FAILED)
        finally:
            signal.signal(signal.SIGINT, previous)
    return status
