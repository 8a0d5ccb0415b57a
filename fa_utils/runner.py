"""``python -m fa_utils``: execute the notebooks headlessly with papermill.

    python -m fa_utils reproduce [--profile quick]        # the main job: every notebook, in order
    python -m fa_utils run 01 -p seed 3 --profile smoke   # or notebooks/01_toy_sin.ipynb
    python -m fa_utils report [--profile quick]           # rebuild results/REPORT.md alone
    python -m fa_utils download cifar10 [--data-root DIR] # fetch a dataset (torchvision)

Before any kernel starts: the profile, each ``-p NAME VALUE`` (a parameter of each notebook,
its word read as the type of the config field it feeds, then checked by
:func:`fa_utils.config.make_config`), and the work tree: the repository's figures/ and
results/ are written only from a clean commit (:func:`source_commit`). ``--out DIR`` writes
figures/, results/ and runs/ under DIR (as ``FA_OUTPUT_ROOT``). Each mistake: one message,
exit 2. A notebook runs into ``runs/notebooks/<profile>/NN_name.running.ipynb``, renamed to
``NN_name.ipynb``, or ``.failed`` / ``.interrupted``, so a failure never replaces a success;
the kernel's own messages go to ``NN_name.kernel.log``. A progress line per cell of 2 s or
more; at the end the times and REPORT.md's summary (:mod:`fa_utils.report`); a successful
``reproduce`` also writes ``results/run_times.md``. Ctrl-C interrupts the kernel (a training
loop checkpoints), names the command that resumes and exits 130; a second kills the kernel.
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
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional, Sequence

from . import outputs, report
from .config import PROFILES, SECTIONS, ConfigError, make_config, resolve_profile

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # 130 = 128 + SIGINT, as a shell says
#: The type of parameters that feed no config field.
OTHER_PARAMETERS = MappingProxyType({"interactive": Optional[bool]})
PROGRESS_MIN_S = 2.0  # a code cell this slow gets a progress line
KERNEL_TRANSPORT = "ipc" if os.name == "posix" else "tcp"  # no TCP port, no warning about it
CODE_FOLDERS = ("fa_utils", "notebooks")  # their untracked files count as uncommitted
REFERENCE_STEPS = 20


class RunnerError(RuntimeError):
    """A notebook that cannot be run as asked: missing, a bad parameter, a dirty work tree."""


@dataclass
class NotebookStopped(RunnerError):
    """A notebook that did not finish: ``state`` "failed" (a cell raised or timed out) or
    "interrupted" (Ctrl-C); ``cell``: its index in the executed copy ``copy``."""

    notebook: str
    state: str
    cell: Optional[int] = None
    first_line: str = ""
    error: str = ""
    copy: Optional[Path] = None
    killed: bool = False

    def __str__(self) -> str:
        where = ("an unknown cell" if self.cell is None else f"cell {self.cell} of the executed "
                 "copy" + (f", which begins `{self.first_line}`" if self.first_line else ""))
        if self.state == "interrupted":
            how = "its kernel was killed (second Ctrl-C)" if self.killed else "by Ctrl-C"
            return f"notebook {self.notebook} stopped in {where} {how}"
        return (f"notebook {self.notebook} failed in {where}: {self.error}\n  executed copy "
                f"with the traceback: {self.copy or '(none written)'}")


def all_notebooks() -> list[Path]:
    """``notebooks/NN_*.ipynb`` in numeric order."""
    return sorted((outputs.repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path: Path) -> list:
    import nbformat

    return nbformat.read(path, as_version=4).cells


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The ``parameters`` cell of ``path`` as name -> default (a Python literal).

    Raises:
        RunnerError: not exactly one cell tagged ``parameters``, or a default not a literal.
    """
    cells = [c for c in _cells(path) if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise RunnerError(f"{path.name} must have one cell tagged 'parameters', found {len(cells)}")
    params = {}
    for node in ast.parse(cells[0].source).body:
        target = getattr(node, "target", None) or getattr(node, "targets", [None])[0]
        try:
            params[target.id] = ast.literal_eval(node.value)
        except (ValueError, AttributeError) as exc:
            raise RunnerError(f"{path.name}: the default on line {node.lineno} is not a literal") from exc
    return params


def config_sections(path: Path) -> tuple[str, ...]:
    """The config sections the notebook builds (its ``make_config("<section>", ...)``
    calls); every section when it builds none itself (07: the explorers build them)."""
    text = "\n".join(c.source for c in _cells(path) if c.cell_type == "code")
    found = [s for s in dict.fromkeys(re.findall(r"make_config\(\s*[\"'](\w+)", text)) if s in SECTIONS]
    return tuple(found) or tuple(SECTIONS)


def annotation_of(default: Any) -> Any:
    """The type a parameter that feeds no config field takes from its default (Any for None)."""
    return Any if default is None else tuple if isinstance(default, list) else type(default)


def _label(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _label(next(a for a in typing.get_args(tp) if a is not type(None))) + " or None"
    return {bool: "a bool (True or False)", int: "an int", float: "a float", str: "a string",
            tuple: "a list"}.get(tp, str(tp))


def _word(value: Any) -> str:
    """``value`` as one shell word that :func:`parse_word` reads back."""
    return shlex.quote(json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value))


def parse_word(name: str, raw: str, tp: Any, example: Any = None) -> Any:
    """The command-line word ``raw`` read as ``tp`` (bool, int, float, str, tuple, Optional
    of one, or Any: a Python literal, else the string). Strings stay strings (``001``);
    bools take true/false/1/0/yes/no; tuples a Python list, returned as a list.

    Raises:
        RunnerError: ``raw`` is not a ``tp``; names the parameter and a word that works.
    """
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if raw.strip() == "None":
            return None
        tp, outer = next(a for a in typing.get_args(tp) if a is not type(None)), tp
    else:
        outer = tp
    low = raw.strip().lower()
    with contextlib.suppress(ValueError, SyntaxError):
        if tp is str:
            return raw
        if tp is Any:
            return ast.literal_eval(raw)
        if tp is bool and low in ("true", "1", "yes", "false", "0", "no"):
            return low in ("true", "1", "yes")
        if tp in (int, float):
            return tp(raw)
        if tp is tuple and isinstance(value := ast.literal_eval(raw), (list, tuple)):
            return list(value)
    if tp is Any:
        return raw
    hint = f"; e.g. -p {name} {_word(example)}" if example is not None else ""
    raise RunnerError(f"parameter {name!r}: {raw!r} is not {_label(outer)}{hint}")


def _parameter(nb: Path, name: str, raw: str, default: Any, sections: Sequence[str],
               profile: str) -> Any:
    """One ``-p`` value of ``nb``: parsed as the config field it feeds and checked by
    building each section it feeds, else parsed as :data:`OTHER_PARAMETERS` or its default."""
    feeds = [s for s in sections if name in typing.get_type_hints(SECTIONS[s])]
    if not feeds:
        try:
            return parse_word(name, raw, OTHER_PARAMETERS.get(name, annotation_of(default)), default)
        except RunnerError as exc:
            raise RunnerError(f"{nb.name}: {exc}") from exc
    example = getattr(make_config(feeds[0], profile), name)
    try:
        value = parse_word(name, raw, typing.get_type_hints(SECTIONS[feeds[0]])[name], example)
        for section in feeds:
            make_config(section, profile, **{name: value})
    except RunnerError as exc:
        raise RunnerError(f"{nb.name}: {exc}") from exc
    except ConfigError as exc:
        hint = f"; e.g. -p {name} {_word(example)} (the {profile} profile's value)" * (example is not None)
        raise RunnerError(f"{nb.name}: -p {name} {shlex.quote(raw)}: {exc}{hint}") from exc
    return value


def prepare(notebooks: Sequence[Path], raw_params: Sequence[tuple[str, str]],
            profile: Optional[str]) -> list[tuple[Path, dict[str, Any]]]:
    """(notebook, parameters) for each notebook, everything checked before any kernel starts.

    Raises:
        RunnerError / ConfigError: a missing notebook, an unknown profile or parameter,
            ``-p profile``, a value of the wrong type or range (the config's validation).
    """
    profile = resolve_profile(profile)
    plans = []
    for nb in notebooks:
        if not nb.exists():
            raise RunnerError(f"no notebook {nb}; available: {[p.name for p in all_notebooks()]}")
        declared, sections = notebook_parameters(nb), config_sections(nb)
        params = {}
        for name, raw in raw_params:
            if name not in declared:
                raise RunnerError(f"unknown parameter {name!r} for {nb.name}; its parameters "
                                  f"are {sorted(declared)}")
            if name == "profile":
                raise RunnerError(f"set the profile with --profile {shlex.quote(raw)}, not with -p profile")
            params[name] = _parameter(nb, name, raw, declared[name], sections, profile)
        for section in sections:  # the values together (e.g. linear_out < linear_in)
            fields = typing.get_type_hints(SECTIONS[section])
            with_values = {n: v for n, v in params.items() if n in fields}
            try:
                make_config(section, profile, **with_values)
            except ConfigError as exc:
                raise RunnerError(f"{nb.name}: {exc}") from exc
        plans.append((nb, {**params, **({"profile": profile} if "profile" in declared else {})}))
    return plans


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def uncommitted_changes(root: Path) -> Optional[list[str]]:
    """How the work tree at ``root`` differs from its commit, for the main job: tracked files
    changed outside the output folders (figures/, results/) and untracked files in
    :data:`CODE_FOLDERS`, as paths. None when ``root`` is not a git work tree."""
    status = _git(root, "status", "--porcelain", "--untracked-files=all")
    if status is None:
        return None
    changed = []
    for line in status.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        top, untracked = path.split("/")[0], line[:2] == "??"
        if top in CODE_FOLDERS if untracked else top not in ("figures", "results"):
            changed.append(path)
    return changed


def source_commit(profile: str, allow_dirty: bool, argv: Sequence[str]) -> str:
    """The commit the outputs come from, as markdown for REPORT.md's header.

    Raises:
        RunnerError: the run would write the repository's figures/ and results/ from
            uncommitted changes (:func:`uncommitted_changes`) without ``allow_dirty``; the
            message names them and the commands that go on.
    """
    root = outputs.repo_root()
    head, changed = (_git(root, "rev-parse", "--short", "HEAD") or "").strip(), uncommitted_changes(root)
    if not head or changed is None:
        return "unknown (not a git work tree)"
    listed = ", ".join(changed[:8]) + " ..." * (len(changed) > 8)
    if not changed:
        return f"`{head}`"
    if outputs.project_root() != root or profile in outputs.SCRATCH_PROFILES:
        return f"`{head}` with uncommitted changes"
    if allow_dirty:
        return (f"`{head}` **WITH UNCOMMITTED CHANGES** (`--allow-dirty`; {listed}): **these "
                f"results match no commit**")
    cmd = shlex.join([sys.executable, "-m", "fa_utils", *argv])
    raise RunnerError(f"the work tree has uncommitted changes ({listed}), and this run would "
                      f"write the committed figures/ and results/, whose REPORT.md must name a "
                      f"clean commit. Commit them (git commit) or stash them (git stash) and "
                      f"rerun; or write elsewhere:\n  {cmd} --out runs/elsewhere\nor write "
                      f"here anyway, which REPORT.md's header then says loudly:\n  {cmd} --allow-dirty")


def reference_seconds(steps: int = REFERENCE_STEPS, batch: int = 128) -> float:
    """Seconds of a fixed computation that shows how fast the machine is today: ``steps``
    :func:`fa_utils.fa.fa_step` of the MNIST encoder (Table 7) at ``batch`` on fixed random
    data, on the CPU, after one untimed step. The global random state is left as it was."""
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


@dataclass
class _Interrupts:
    """SIGINT while notebooks run: the first interrupts the running kernel (SIGINT to its
    process group, as Jupyter's *Interrupt*); a second, or one while no kernel runs, kills
    the kernel and raises KeyboardInterrupt. ``managers``: the running notebook's kernels."""

    count: int = 0
    killed: bool = False
    managers: list = field(default_factory=list)

    def signal_kernel(self, signum: int) -> bool:
        """Send ``signum`` to the running kernel's process group; False when none runs."""
        for km in reversed(self.managers):
            prov = getattr(km, "provisioner", None)
            process = getattr(prov, "process", None)
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(getattr(prov, "pgid", None) or process.pid), signum)
                return True
        return False

    def handler(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1 and self.signal_kernel(signal.SIGINT):
            print("\nCtrl-C: interrupting the notebook (a training loop first writes a "
                  "checkpoint); press Ctrl-C again to kill its kernel", file=sys.stderr, flush=True)
            return
        self.killed = self.signal_kernel(signal.SIGKILL) or self.killed
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self):
        previous = signal.signal(signal.SIGINT, self.handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def kernel_manager(sink: list, stderr=None) -> type:
    """nbclient's kernel manager class, recording each instance in ``sink`` (so that the
    runner can signal its kernel), over :data:`KERNEL_TRANSPORT` (IPC sockets in Jupyter's
    user-only runtime folder, not in notebooks/), the kernel process's messages to ``stderr``."""
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    class RecordingKernelManager(AsyncKernelManager):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("transport", KERNEL_TRANSPORT)
            if kwargs["transport"] == "ipc" and "ip" not in kwargs:
                runtime = Path(jupyter_runtime_dir())
                runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
                kwargs["ip"] = str(runtime / f"fa-kernel-{uuid.uuid4().hex[:12]}")
            super().__init__(*args, **kwargs)
            sink.append(self)

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if stderr is not None:
                kw.setdefault("stderr", stderr)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return RecordingKernelManager


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 3].rstrip() + "..."


@dataclass
class Progress:
    """nbclient hooks: a line per code cell of at least ``min_s`` seconds, ``<name>: cell
    k/n (<first line of the markdown above>) <s> s`` (k counts code cells, papermill's
    injected one included); ``current``: the index of the cell running or last run."""

    name: str
    min_s: float = PROGRESS_MIN_S
    labels: list = field(default_factory=list)
    first_lines: list = field(default_factory=list)
    code: dict = field(default_factory=dict)
    current: Optional[int] = None
    started: float = 0.0

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
        dt = time.perf_counter() - self.started
        if dt >= self.min_s and cell_index in self.code:
            label = f" ({self.labels[cell_index]})" if self.labels[cell_index] else ""
            print(f"  {self.name}: cell {self.code[cell_index]}/{len(self.code)}{label} {dt:.0f} s",
                  flush=True)

    def hooks(self) -> dict:
        return {"on_notebook_start": self.on_notebook_start, "on_cell_start": self.on_cell_start,
                "on_cell_executed": self.on_cell_executed}


def executed_copy(out_dir: Path, nb: Path, state: str = "") -> Path:
    """``NN_name.ipynb`` in ``out_dir`` for a success, ``NN_name.<state>.ipynb`` for ``state``
    running / failed / interrupted."""
    return out_dir / (f"{nb.stem}.{state}.ipynb" if state else nb.name)


def execute(nb: Path, params: dict[str, Any], out_dir: Path, timeout: Optional[int] = None,
            interrupts: Optional[_Interrupts] = None) -> Path:
    """Execute ``nb`` with papermill into ``out_dir`` (see the module's doc for the copies
    and the kernel log); return the executed copy. ``timeout``: seconds per cell.

    Raises:
        NotebookStopped: a cell raised or timed out, or Ctrl-C (``interrupts``).
    """
    import papermill as pm

    interrupts = interrupts or _Interrupts()
    out_dir.mkdir(parents=True, exist_ok=True)
    running, log = executed_copy(out_dir, nb, "running"), out_dir / f"{nb.stem}.kernel.log"
    progress = Progress(nb.stem)
    try:
        with open(log, "wb") as stderr:
            pm.execute_notebook(str(nb), str(running), parameters=params, kernel_name="python3",
                                cwd=str(nb.parent), progress_bar=False, execution_timeout=timeout,
                                kernel_manager_class=kernel_manager(interrupts.managers, stderr),
                                **progress.hooks())
    except BaseException as exc:
        interrupts.signal_kernel(signal.SIGKILL)  # never leave a kernel behind
        ename = getattr(exc, "ename", None) or type(exc).__name__
        interrupted = bool(interrupts.count) or ename in ("KeyboardInterrupt", "TrainingInterrupted")
        if not (interrupted or isinstance(exc, Exception)):
            raise
        state = "interrupted" if interrupted else "failed"
        copy = executed_copy(out_dir, nb, state) if running.exists() else None
        if copy:
            os.replace(running, copy)
        text = str(getattr(exc, "evalue", exc) or "").strip()
        cell = getattr(exc, "cell_index", progress.current)
        raise NotebookStopped(nb.name, state, cell, progress.first_lines[cell] if cell is not None else "",
                              text if interrupted else f"{ename}: {text.splitlines()[0] if text else ''}",
                              copy, interrupts.killed) from exc
    finally:
        interrupts.managers.clear()
        if log.exists() and not log.stat().st_size:
            log.unlink()
    os.replace(running, executed_copy(out_dir, nb))
    for state in ("failed", "interrupted"):
        executed_copy(out_dir, nb, state).unlink(missing_ok=True)
    return executed_copy(out_dir, nb)


def _find(name: str) -> Path:
    """A notebook by path, stem or prefix (``01``, ``01_toy``); prepare() names a missing one."""
    path = Path(name)
    matches = [p for p in all_notebooks() if p.name.startswith(name) or p.stem == name]
    return path.resolve() if path.exists() else matches[0] if len(matches) == 1 else path


def _word_for(nb: Path) -> str:
    """How to name ``nb`` on the command line: ``02`` for the repository's notebooks."""
    return nb.name[:2] if nb in all_notebooks() and _find(nb.name[:2]) == nb else str(nb)


def _resume_command(args, words: Sequence[str], profile: str) -> str:
    cmd = [sys.executable, "-m", "fa_utils", "run", *words, "--profile", profile]
    for name, raw in args.parameter:
        cmd += ["-p", name, raw]
    if outputs.project_root() != outputs.repo_root():
        cmd += ["--out", str(outputs.project_root())]
    cmd += ["--timeout", str(args.timeout)] * bool(args.timeout) + ["--allow-dirty"] * args.allow_dirty
    return shlex.join(cmd)


def _stopped_message(exc: NotebookStopped, resume: str) -> str:
    if exc.state == "failed":
        return f"FAILED: {exc}"
    saved = exc.error or (f"the cell was not in a checkpointed training loop (train.fit), so it "
                          f"saved nothing and reruns from its start; the checkpoints written so "
                          f"far are in {outputs.runs_dir() / 'checkpoints'}")
    return "\n".join([f"INTERRUPTED: {exc}.", f"  {saved}", "  to resume (training continues "
                      "from the checkpoints):", f"    {resume}"]
                     + [f"  executed copy up to the interrupt: {exc.copy}"] * bool(exc.copy))


def _run_all(plans, args, profile: str, interrupts: _Interrupts, runs: dict, times: list) -> int:
    """Run the plans in order (the reference computation first for ``reproduce``); fill
    ``runs`` (stem -> :class:`fa_utils.report.NotebookRun`) and ``times``; the exit status."""
    words, done = [_word_for(nb) for nb, _ in plans], 0
    not_run = lambda why: runs.update({nb.stem: report.NotebookRun("not run", why)  # noqa: E731
                                       for nb, _ in plans[done + 1:]})
    try:
        if args.command == "reproduce":
            print(f"reference computation ({REFERENCE_STEPS} FA steps, MNIST encoder) ...", flush=True)
            runs["reference_s"] = reference_seconds()
            print(f"  {runs['reference_s']:.1f} s", flush=True)
        for done, (nb, params) in enumerate(plans):
            if interrupts.count:  # a Ctrl-C that the previous notebook survived
                raise KeyboardInterrupt
            print(f"running {nb.name} with {params} ...", flush=True)
            t0 = time.perf_counter()
            try:
                out = execute(nb, params, outputs.runs_dir() / "notebooks" / profile, args.timeout,
                              interrupts)
            except NotebookStopped as exc:
                runs[nb.stem] = report.NotebookRun(exc.state, f"executed copy: {exc.copy}")
                not_run(f"notebook {words[done]} {exc.state} first")
                print(_stopped_message(exc, _resume_command(args, words[done:], profile)),
                      file=sys.stderr, flush=True)
                return EXIT_INTERRUPTED if exc.state == "interrupted" else EXIT_FAILED
            runs[nb.stem] = report.NotebookRun("ok", str(out))
            times.append((nb.name, time.perf_counter() - t0))
            print(f"  done in {times[-1][1]:.0f} s -> {out}", flush=True)
    except KeyboardInterrupt:  # between notebooks: nothing was running
        done = len(times) - 1
        not_run("the run was interrupted first")
        print(f"INTERRUPTED (Ctrl-C) between notebooks.\n  to run the rest: "
              f"{_resume_command(args, words[len(times):], profile)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


@contextlib.contextmanager
def _environment(out: Optional[str]):
    """While the runner runs (restored after): ``FA_OUTPUT_ROOT`` absolute (``out``, else its
    value; relative to the launch folder, not the kernels' notebooks/), ``FA_HEADLESS=1``
    unless set, ``FA_UPDATE_COMMITTED=1`` (the kernels write the committed folders)."""
    keys = (outputs.OUTPUT_ROOT_ENV, "FA_HEADLESS", outputs.UPDATE_COMMITTED_ENV)
    saved = {k: os.environ.get(k) for k in keys}
    if out or saved[keys[0]]:
        os.environ[keys[0]] = str(outputs.resolve_output_root(out or saved[keys[0]]))
    os.environ.setdefault("FA_HEADLESS", "1")
    os.environ[keys[2]] = "1"
    try:
        yield
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})
        for k in (k for k, v in saved.items() if v is None):
            os.environ.pop(k, None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fa_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch a dataset's files with torchvision")
    dl.add_argument("dataset", help="mnist, cifar10, celeba or stl10")
    dl.add_argument("--data-root", default="data", help="as the notebooks' data_root (default data)")
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
    if args.command == "download":
        return _download(args.dataset, args.data_root)
    try:
        profile = resolve_profile(args.profile)
        notebooks = (all_notebooks() if args.command == "reproduce" else
                     [_find(n) for n in getattr(args, "notebooks", [])])
        plans = prepare(notebooks, [tuple(p) for p in getattr(args, "parameter", [])], profile)
        with _environment(args.out):
            commit = source_commit(profile, args.allow_dirty, argv)
    except (RunnerError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runs, times = {}, []
    with _environment(args.out), _Interrupts().installed() as interrupts:
        status = _run_all(plans, args, profile, interrupts, runs, times) if plans else 0
        reference = runs.pop("reference_s", None)
        lines = [f"  {n:40s} {t:7.0f} s" for n, t in times + [("total", sum(t for _, t in times))]]
        print("\n".join(["", "time per notebook:", *lines]) if times else "", flush=True)
        try:
            path, line = report.write_report(profile, runs, commit)
            print(f"claims: {line}\nreport: {path}", flush=True)
            if not status and args.command != "run" and report.update_readme(line, path):
                print("  (README.md's summary line updated)", flush=True)
            if not status and reference is not None:
                print(f"run times: {report.write_run_times(profile, times, reference, commit)}")
        except (ValueError, OSError) as exc:
            print(f"error: the report could not be written: {exc}", file=sys.stderr)
            return status or (EXIT_USAGE if args.command == "report" else EXIT_FAILED)
    return status


def _download(dataset: str, data_root: str) -> int:
    """Exit 0 with the files in place, 2 for an unknown dataset, 1 when they cannot be had."""
    from . import data, experiments

    try:
        paths = data.download(dataset, experiments.data_root(data_root))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except data.DatasetUnavailable as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{dataset}: in place: {', '.join(paths)}")
    return 0
