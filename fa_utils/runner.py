"""The headless runner: ``python -m fa_utils ...`` executes the notebooks with papermill.

    python -m fa_utils list                          # notebooks and their parameters
    python -m fa_utils reproduce [--profile quick]   # every notebooks/NN_*.ipynb, in order
    python -m fa_utils run 01 -p seed 3 --profile smoke   # or notebooks/01_toy_sin.ipynb
    python -m fa_utils download cifar10 [--data-root DIR] # fetch a dataset (torchvision)

Before any kernel starts, the profile, every ``-p NAME VALUE`` name (it must be a parameter
of each selected notebook's ``parameters`` cell) and every value are checked: its type (the
config field the parameter feeds, read from the setup cell's ``make_config("<section>",
...)`` call, or else the parameter's default; strings stay strings, so ``-p dataset 001`` is
not turned into an int) and its range and choices (the config's own validation, e.g.
``-p epochs -3``). Each mistake gives one message and exit status 2.

Executed notebooks go to ``runs/notebooks/<profile>/`` (or ``--out``): a notebook runs into
``NN_name.running.ipynb``, which becomes ``NN_name.ipynb`` when it succeeds,
``NN_name.failed.ipynb`` when a cell fails (exit 1, with a message naming the notebook, the
cell and the error) or ``NN_name.interrupted.ipynb`` on Ctrl-C, so a failed run never
replaces a successful run's copy. ``FA_OUTPUT_ROOT`` is made absolute (relative to the
folder the command was started in) before any kernel starts.

Console: one line per code cell that took at least :data:`PROGRESS_MIN_S` seconds
(``03_vfa: cell 12/30 (Figure 8 ...) 45 s``, :class:`_Progress`), the time of each notebook,
and at the end the per-notebook times and the summary line of ``results/REPORT.md``, which
the runner assembles after every ``reproduce`` and ``run`` (also after a failure) from the
claims the notebooks wrote (:mod:`fa_utils.report`). Kernels talk to the runner over IPC
(Unix sockets) rather than TCP on POSIX systems: nothing listens on a port, and ipykernel
has no reason to warn that TCP is unencrypted.

Kernels started by the runner get ``FA_UPDATE_COMMITTED=1``: they may write the committed
``figures/`` and ``results/`` (an interactive kernel without it writes under
``runs/<profile>/``, :func:`fa_utils.outputs.writes_committed`).

    python -m fa_utils report [--profile quick]      # rebuild results/REPORT.md alone

Ctrl-C: the first interrupts the kernel (its running cell gets a KeyboardInterrupt; a
training loop writes a checkpoint of the step it reached, :func:`fa_utils.train.fit`), the
runner says which notebook stopped, where the checkpoint is and the command that resumes,
and exits with status 130. A second Ctrl-C kills the kernel at once.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence

from .config import PROFILES, ConfigError, resolve_profile
from . import outputs
from .outputs import OUTPUT_ROOT_ENV, UPDATE_COMMITTED_ENV, repo_root, runs_dir

EXIT_FAILED = 1
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130

#: Functions of the setup cells that feed their keyword arguments to these config sections
#: (besides ``make_config("<section>", ...)``, which is read from the call itself).
CONFIG_FEEDERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"exploration_models": ("fa", "vfa", "local")})
#: A code cell that took at least this many seconds gets a progress line.
PROGRESS_MIN_S = 2.0
#: The kernels' transport: "ipc" (Unix sockets) where the OS has them, else "tcp".
KERNEL_TRANSPORT = "ipc" if os.name == "posix" else "tcp"
#: Parameters that feed no config field, and the type their setup cell checks.
OTHER_PARAMETERS: Mapping[str, Any] = MappingProxyType({"interactive": Optional[bool]})
#: Top-level folders whose untracked files count as uncommitted changes.
CODE_FOLDERS = ("fa_utils", "notebooks")
#: FA steps of the reference computation timed at the start of the main job.
REFERENCE_STEPS = 20


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
    source: str = ""  # the cell's first line

    def __str__(self) -> str:
        cell = (f"cell {self.cell_index} of the executed copy"
                + (f" (In [{self.exec_count}])" if self.exec_count is not None else "")
                + (f", which begins `{self.source}`" if self.source else "")
                if self.cell_index is not None else "an unknown cell")
        return (f"notebook {self.notebook} failed in {cell}: {self.ename}: {self.evalue}\n"
                f"  executed copy with the traceback: {self.output}")


@dataclass
class NotebookInterrupted(RunnerError):
    """A notebook stopped by Ctrl-C (the runner's SIGINT)."""

    notebook: str
    cell_index: Optional[int]
    exec_count: Optional[int]
    evalue: str
    output: Optional[str]
    killed: bool = False

    def __str__(self) -> str:
        where = (f"in cell {self.cell_index} of the executed copy (In [{self.exec_count}])"
                 if self.cell_index is not None else "")
        how = "its kernel was killed (second Ctrl-C)" if self.killed else "by Ctrl-C"
        return f"notebook {self.notebook} stopped {where} {how}".replace("  ", " ")


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


def _type_label(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return f"{_type_label(args[0])} or None"
    return {bool: "a bool (True or False)", int: "an int", float: "a float", str: "a string",
            tuple: "a list"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def coerce_to(name: str, raw: str, annotation: Any, example: Any = None) -> Any:
    """Turn the command-line string ``raw`` into a value of the type ``annotation`` (a
    config field's: bool, int, float, str, tuple, or Optional of one; ``None`` is the word
    None). Strings stay strings; bools accept true/false/1/0/yes/no; tuples a Python list.

    Raises:
        RunnerError: ``raw`` cannot be read as that type; the message gives a value that
            works (``example``, e.g. the profile's value).
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if raw.strip() == "None":
            return None
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        try:
            return coerce_to(name, raw, inner[0], example)
        except RunnerError:
            pass
    elif annotation is str:
        return raw
    elif annotation is bool:
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
    elif annotation is int:
        try:
            return int(raw)
        except ValueError:
            pass
    elif annotation is float:
        try:
            return float(raw)
        except ValueError:
            pass
    elif annotation is tuple:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, (list, tuple)):
            return list(value)
    else:
        return coerce(name, raw, None)
    hint = f"; e.g. -p {name} {_cli_value(example)}" if example is not None else ""
    raise RunnerError(f"parameter {name!r}: {raw!r} is not {_type_label(annotation)}{hint}")


def _cli_value(value: Any) -> str:
    """A value as one shell word that :func:`coerce_to` reads back."""
    if isinstance(value, (list, tuple)):
        return shlex.quote(json.dumps(list(value)))
    return shlex.quote(str(value))


def _config_feeds(path: Path, declared: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """parameter -> [(config section, field)] read from the notebook's code cells: the
    keyword arguments ``field=parameter`` of ``make_config("<section>", ...)`` calls and of
    the functions in :data:`CONFIG_FEEDERS`."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    feeds: dict[str, list[tuple[str, str]]] = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fname = (node.func.attr if isinstance(node.func, ast.Attribute)
                     else getattr(node.func, "id", None))
            if fname == "make_config" and node.args and isinstance(node.args[0], ast.Constant):
                sections: tuple[str, ...] = (str(node.args[0].value),)
            elif fname in CONFIG_FEEDERS:
                sections = CONFIG_FEEDERS[fname]
            else:
                continue
            for kw in node.keywords:
                if kw.arg and isinstance(kw.value, ast.Name) and kw.value.id in declared:
                    for section in sections:
                        feeds.setdefault(kw.value.id, []).append((section, kw.arg))
    return feeds


def _check_against_configs(nb: Path, params: dict[str, Any], raw: dict[str, str],
                           feeds: dict[str, list[tuple[str, str]]], profile: str) -> None:
    """Build every config section the given parameters feed, at ``profile``, with the
    config's own validation: one parameter at a time (to name it), then together."""
    from . import config

    by_section: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        for section, fld in feeds.get(name, ()):
            try:
                config.make_config(section, profile, **{fld: value})
            except ConfigError as exc:
                example = getattr(config.make_config(section, profile), fld, None)
                hint = (f"; e.g. -p {name} {_cli_value(example)} (the {profile} profile's value)"
                        if example is not None else "")
                raise RunnerError(f"{nb.name}: -p {name} {shlex.quote(raw[name])}: {exc}{hint}"
                                  ) from exc
            by_section.setdefault(section, {})[fld] = value
    for section, values in by_section.items():
        try:
            config.make_config(section, profile, **values)
        except ConfigError as exc:
            raise RunnerError(f"{nb.name}: {exc}") from exc


def prepare(notebooks: Sequence[Path], raw_params: Sequence[tuple[str, str]],
            profile: Optional[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Check everything that can be checked before running; return (notebook, parameters).

    Each ``-p`` value is read as the type of the config field it feeds (found by
    :func:`_config_feeds`), else of :data:`OTHER_PARAMETERS`, else of its default, and
    checked by building that config (types, ranges, choices), so no kernel starts for a
    value that the setup cell would refuse.

    Raises:
        RunnerError / ConfigError: a missing notebook, unknown profile, unknown parameter,
            ``-p profile`` (use ``--profile``), or a value of the wrong type or range.
    """
    from . import config

    profile = resolve_profile(profile)
    plans = []
    for nb in notebooks:
        if not nb.exists():
            raise RunnerError(f"no notebook {nb}; available: "
                              f"{[p.name for p in all_notebooks()]}")
        declared = notebook_parameters(nb)
        feeds = _config_feeds(nb, declared)
        params: dict[str, Any] = {}
        raw_by_name: dict[str, str] = {}
        for name, raw in raw_params:
            if name not in declared:
                raise RunnerError(f"unknown parameter {name!r} for {nb.name}; its parameters "
                                  f"are {sorted(declared)}")
            if name == "profile":
                raise RunnerError(f"set the profile with --profile {shlex.quote(raw)}, not "
                                  f"with -p profile")
            try:
                if name in feeds:
                    section, fld = feeds[name][0]
                    annotation = typing.get_type_hints(config.SECTIONS[section])[fld]
                    example = getattr(config.make_config(section, profile), fld, None)
                    params[name] = coerce_to(name, raw, annotation, example)
                elif name in OTHER_PARAMETERS:
                    params[name] = coerce_to(name, raw, OTHER_PARAMETERS[name], False)
                else:
                    params[name] = coerce(name, raw, declared[name])
            except RunnerError as exc:
                raise RunnerError(f"{nb.name}: {exc}") from exc
            raw_by_name[name] = raw
        _check_against_configs(nb, params, raw_by_name, feeds, profile)
        if "profile" in declared:
            params["profile"] = profile
        plans.append((nb, params))
    return plans


@dataclass
class _Interrupts:
    """The runner's SIGINT handling while notebooks run: the first SIGINT interrupts the
    running kernel (SIGINT to its process group, what Jupyter's *Interrupt* does); a second,
    or one while no kernel runs, kills the kernel (SIGKILL) and raises KeyboardInterrupt in
    the runner. ``managers``: the kernel managers of the current notebook."""

    count: int = 0
    killed: bool = False
    managers: list = field(default_factory=list)

    def kernel_pgid(self) -> Optional[int]:
        """The process group of the running kernel (it runs in its own session, so the
        terminal's Ctrl-C never reaches it), or None when no kernel process is alive."""
        for km in reversed(self.managers):
            prov = getattr(km, "provisioner", None)
            process = getattr(prov, "process", None)
            if process is None or process.poll() is not None:  # not started, or exited
                continue
            pgid = getattr(prov, "pgid", None) or process.pid
            if pgid:
                return int(pgid)
        return None

    def kill_kernels(self) -> bool:
        """SIGKILL the running kernel's process group; True if there was one."""
        pgid = self.kernel_pgid()
        if pgid is None:
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        return True

    def handler(self, signum, frame) -> None:
        self.count += 1
        pgid = self.kernel_pgid()
        if self.count == 1 and pgid is not None:
            print("\nCtrl-C: interrupting the notebook (a training loop first writes a "
                  "checkpoint); press Ctrl-C again to kill its kernel", file=sys.stderr,
                  flush=True)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGINT)
                return
        self.killed = self.kill_kernels() or self.killed
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self):
        previous = signal.signal(signal.SIGINT, self.handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _recording_kernel_manager(sink: list, stderr=None):
    """nbclient's kernel manager class, recording each instance in ``sink`` (so the runner
    can signal the kernel it starts), with :data:`KERNEL_TRANSPORT`: over IPC the kernel
    binds Unix sockets in Jupyter's runtime folder (user-only; jupyter_client's default for
    IPC would be the kernel's working folder, ``notebooks/``) instead of TCP ports, so
    ipykernel does not log "Kernel is running over TCP without encryption" for every
    notebook. jupyter_client removes the socket files when the kernel shuts down.
    ``stderr``: a file for the kernel process's own messages (e.g. ipykernel's traceback
    when it is stopped after a cell timeout), which would otherwise reach the terminal."""
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


def _cell_labels(cells) -> list[str]:
    """Per cell: the first line of the nearest markdown cell above it (heading marks
    stripped, at most 40 characters), or "" before any markdown."""
    labels, current = [], ""
    for cell in cells:
        if cell.cell_type == "markdown":
            first = next((ln.strip().lstrip("#").strip() for ln in cell.source.splitlines()
                          if ln.strip()), "")
            current = first if len(first) <= 40 else first[:37].rstrip() + "..."
        labels.append(current)
    return labels


@dataclass
class _Progress:
    """nbclient hooks that print one line per code cell that took at least ``min_s``
    seconds: ``<name>: cell <k>/<n> (<label>) <seconds> s``, k counting code cells
    (papermill's injected parameters cell included), the label from the markdown above."""

    name: str
    min_s: float = PROGRESS_MIN_S
    stream: Any = None
    _labels: list = field(default_factory=list)
    _code_index: dict = field(default_factory=dict)
    _started: float = 0.0
    _first_lines: list = field(default_factory=list)
    current: Optional[int] = None  # the index of the cell running or last run

    def on_notebook_start(self, notebook=None, **_):
        cells = notebook.cells if notebook is not None else []
        self._labels = _cell_labels(cells)
        self._first_lines = [next((ln.strip() for ln in c.source.splitlines() if ln.strip()), "")
                             for c in cells]
        code = [i for i, c in enumerate(cells) if c.cell_type == "code"]
        self._code_index = {i: k + 1 for k, i in enumerate(code)}

    def on_cell_start(self, cell=None, cell_index=None, **_):
        self._started = time.perf_counter()
        self.current = cell_index

    def first_line(self, cell_index: Optional[int]) -> str:
        """The first non-empty line of a cell (at most 60 characters), "" if unknown."""
        if cell_index is None or cell_index >= len(self._first_lines):
            return ""
        line = self._first_lines[cell_index]
        return line if len(line) <= 60 else line[:57] + "..."

    def on_cell_executed(self, cell=None, cell_index=None, **_):
        dt = time.perf_counter() - self._started
        if dt < self.min_s or cell_index not in self._code_index:
            return
        label = self._labels[cell_index] if cell_index < len(self._labels) else ""
        print(f"  {self.name}: cell {self._code_index[cell_index]}/{len(self._code_index)}"
              + (f" ({label})" if label else "") + f" {dt:.0f} s",
              file=self.stream or sys.stdout, flush=True)

    def hooks(self) -> dict:
        return {"on_notebook_start": self.on_notebook_start,
                "on_cell_start": self.on_cell_start, "on_cell_executed": self.on_cell_executed}


def executed_copy(out_dir: Path, nb: Path, state: str = "") -> Path:
    """The executed copy of ``nb`` in ``out_dir``: ``NN_name.ipynb`` for a success,
    ``NN_name.<state>.ipynb`` for ``state`` in running / failed / interrupted."""
    return out_dir / (f"{nb.stem}.{state}.ipynb" if state else nb.name)


def execute(nb: Path, params: dict[str, Any], out_dir: Path, timeout: Optional[int] = None,
            interrupts: Optional[_Interrupts] = None) -> Path:
    """Execute one notebook with papermill into ``out_dir``; return the executed copy.
    Prints a progress line per code cell of at least :data:`PROGRESS_MIN_S` seconds.

    It runs into ``NN_name.running.ipynb``, renamed to ``NN_name.ipynb`` on success (older
    failed / interrupted copies of it are removed), else to ``NN_name.failed.ipynb`` or
    ``NN_name.interrupted.ipynb``: a failure never replaces a successful copy. The kernel
    process's own messages (not the cells' output) go to ``NN_name.kernel.log`` there, kept
    when not empty.

    Raises:
        NotebookFailure: a cell raised; names the cell and the error.
        NotebookInterrupted: Ctrl-C (``interrupts``) or a KeyboardInterrupt in a cell.
        KeyboardInterrupt: a second Ctrl-C (the kernel was killed) or one before the kernel ran.
    """
    import papermill as pm

    interrupts = interrupts if interrupts is not None else _Interrupts()
    out_dir.mkdir(parents=True, exist_ok=True)
    running = executed_copy(out_dir, nb, "running")
    interrupts.managers = []
    progress = _Progress(nb.stem)
    try:
        with open(out_dir / f"{nb.stem}.kernel.log", "wb") as log:
            pm.execute_notebook(str(nb), str(running), parameters=params, kernel_name="python3",
                                cwd=str(nb.parent), progress_bar=False,
                                execution_timeout=timeout, kernel_manager_class=
                                _recording_kernel_manager(interrupts.managers, log),
                                **progress.hooks())
    except pm.PapermillExecutionError as exc:
        evalue = str(exc.evalue).strip() if exc.evalue else ""
        if interrupts.count or exc.ename in ("KeyboardInterrupt", "TrainingInterrupted"):
            out = _settle(running, executed_copy(out_dir, nb, "interrupted"))
            raise NotebookInterrupted(nb.name, getattr(exc, "cell_index", None),
                                      getattr(exc, "exec_count", None), evalue,
                                      str(out) if out else None) from exc
        out = _settle(running, executed_copy(out_dir, nb, "failed"))
        index = getattr(exc, "cell_index", None)
        raise NotebookFailure(nb.name, index, getattr(exc, "exec_count", None), exc.ename,
                              evalue.splitlines()[0] if evalue else "", str(out),
                              progress.first_line(index)) from exc
    except BaseException as exc:  # Ctrl-C in the runner, a dead kernel, a papermill error
        interrupts.kill_kernels()  # never leave a kernel behind
        if isinstance(exc, KeyboardInterrupt) or interrupts.count:
            out = _settle(running, executed_copy(out_dir, nb, "interrupted"))
            raise NotebookInterrupted(nb.name, None, None, "", str(out) if out else None,
                                      killed=interrupts.killed) from exc
        out = _settle(running, executed_copy(out_dir, nb, "failed"))
        if isinstance(exc, Exception):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            index = progress.current  # e.g. nbclient's CellTimeoutError names no cell
            raise NotebookFailure(nb.name, index, None, type(exc).__name__, first,
                                  str(out) if out else "(none written)",
                                  progress.first_line(index)) from exc
        raise
    finally:
        interrupts.managers = []
        log = out_dir / f"{nb.stem}.kernel.log"
        if log.exists() and not log.stat().st_size:
            log.unlink()
    final = executed_copy(out_dir, nb)
    os.replace(running, final)
    for state in ("failed", "interrupted"):
        executed_copy(out_dir, nb, state).unlink(missing_ok=True)
    return final


def _settle(src: Path, dst: Path) -> Optional[Path]:
    if src.exists():
        os.replace(src, dst)
        return dst
    return None


def _resume_command(args, names: Sequence[str], profile: str) -> str:
    words = [sys.executable, "-m", "fa_utils", "run", *names, "--profile", profile]
    for name, raw in args.parameter:
        words += ["-p", name, raw]
    if outputs.project_root() != repo_root():
        words += ["--out", str(outputs.project_root())]
    if args.timeout:
        words += ["--timeout", str(args.timeout)]
    if args.allow_dirty:
        words += ["--allow-dirty"]
    return shlex.join(words)


def _notebook_word(nb: Path) -> str:
    """How to name ``nb`` on the command line: ``02`` for the repository's notebooks."""
    if nb.parent == notebooks_dir() and nb.name[:2].isdigit():
        prefix = nb.name[:2]
        if sum(p.name.startswith(prefix) for p in all_notebooks()) == 1:
            return prefix
    return str(nb)


@contextlib.contextmanager
def _kernel_environment(out: Optional[str] = None):
    """The environment while the runner runs (restored afterwards): ``FA_OUTPUT_ROOT`` made
    absolute (``out`` when given, else its value; relative to the folder the command was
    started in, before papermill changes into ``notebooks/``), ``FA_HEADLESS=1`` unless set
    (no widget front end) and ``FA_UPDATE_COMMITTED=1`` (the runner's kernels write the
    committed figures/ and results/; smoke still goes to runs/smoke/)."""
    saved = {k: os.environ.get(k) for k in (OUTPUT_ROOT_ENV, "FA_HEADLESS", UPDATE_COMMITTED_ENV)}
    try:
        root = out or saved[OUTPUT_ROOT_ENV]
        if root:
            os.environ[OUTPUT_ROOT_ENV] = str(outputs.resolve_output_root(root))
        os.environ.setdefault("FA_HEADLESS", "1")
        os.environ[UPDATE_COMMITTED_ENV] = "1"
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def uncommitted_changes(root: Path) -> Optional[list[str]]:
    """The paths by which the work tree at ``root`` differs from its commit, for the main job:
    tracked files with changes outside the output folders (figures/, results/) and untracked
    files in the code (:data:`CODE_FOLDERS`). None when ``root`` is not a git work tree."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    changed = []
    for line in out.stdout.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        top = path.split("/")[0]
        if (line[:2] == "??" and top in CODE_FOLDERS) or (line[:2] != "??" and top not in
                                                          ("figures", "results")):
            changed.append(path)
    return changed


def source_commit(profile: str, allow_dirty: bool, argv: Sequence[str]) -> str:
    """The commit this run's outputs come from, as REPORT.md's header names it.

    Raises:
        RunnerError: the run would write the repository's figures/ and results/ while the
            work tree has uncommitted changes (:func:`uncommitted_changes`) and
            ``allow_dirty`` is False; the message says how to proceed.
    """
    root = outputs.repo_root()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip() if shutil.which("git") else ""
    changed = uncommitted_changes(root) if head else None
    if not head or changed is None:
        return "unknown (not a git work tree)"
    if not changed:
        return f"`{head}`"
    if outputs.project_root() != root or profile in outputs.SCRATCH_PROFILES:
        return f"`{head}` with uncommitted changes"
    if allow_dirty:
        return (f"`{head}` **WITH UNCOMMITTED CHANGES** (`--allow-dirty`; {', '.join(changed[:8])}"
                f"{' ...' if len(changed) > 8 else ''}): **these results match no commit**")
    cmd = shlex.join([sys.executable, "-m", "fa_utils", *argv])
    raise RunnerError(
        f"the work tree has uncommitted changes ({', '.join(changed[:8])}"
        f"{' ...' if len(changed) > 8 else ''}), and this run would write the committed "
        f"figures/ and results/, whose REPORT.md must name a clean commit. Either commit them "
        f"(git commit) or stash them (git stash) and rerun; or write elsewhere:\n"
        f"  {cmd} --out runs/elsewhere\nor write here anyway, which REPORT.md's header then "
        f"says loudly:\n  {cmd} --allow-dirty")


def reference_seconds(steps: int = REFERENCE_STEPS, batch: int = 128) -> float:
    """Seconds of a fixed computation that shows how fast this machine is today: ``steps``
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fa_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the notebooks and their parameters")
    dl = sub.add_parser("download", help="fetch a dataset's files with torchvision")
    dl.add_argument("dataset", help="mnist, cifar10, celeba or stl10")
    dl.add_argument("--data-root", default="data", help="folder for the datasets, as the "
                    "notebooks' data_root parameter (relative: to the repository; default data)")
    rep = sub.add_parser("report", help="rebuild results/REPORT.md from results/claims/*.json")
    for p in (rep, *(sub.add_parser(name, help=helptext) for name, helptext in (
            ("reproduce", "run every notebook in order (the main job)"),
            ("run", "run the given notebooks")))):
        if p.prog.endswith(" run"):
            p.add_argument("notebooks", nargs="+", help="notebook paths or names (01, 01_toy)")
        p.add_argument("--profile", default=None,
                       help=f"one of {list(PROFILES)} (default: $FA_PROFILE or quick)")
        p.add_argument("--out", default=None, help="write figures/, results/ and runs/ under "
                       "this folder instead of the repository (as $FA_OUTPUT_ROOT)")
        p.add_argument("--allow-dirty", action="store_true", help="write the committed "
                       "figures/ and results/ from uncommitted changes (REPORT.md says so)")
        if p is not rep:
            p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                           metavar=("NAME", "VALUE"), help="set a notebook parameter")
            p.add_argument("--timeout", type=int, default=None, help="per-cell timeout, seconds")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)

    if args.command == "list":
        for nb in all_notebooks():
            print(f"{nb.name}: {notebook_parameters(nb)}")
        return 0

    if args.command == "download":
        return _download(args.dataset, args.data_root)

    if args.command == "report":
        try:
            profile = resolve_profile(args.profile)
            with _kernel_environment(args.out):
                _write_report(profile, {}, source_commit(profile, args.allow_dirty, argv))
        except (RunnerError, ConfigError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
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
    profile = resolve_profile(args.profile)
    interrupts = _Interrupts()
    times: list[tuple[str, float]] = []
    words = [_notebook_word(n) for n, _ in plans]
    runs: dict[str, Any] = {}
    with _kernel_environment(args.out), interrupts.installed():
        try:
            commit = source_commit(profile, args.allow_dirty, argv)
        except RunnerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        reference = None
        if args.command == "reproduce":
            print(f"reference computation: {REFERENCE_STEPS} FA steps of the MNIST encoder ...",
                  flush=True)
            try:
                reference = reference_seconds()
            except KeyboardInterrupt:
                print("INTERRUPTED (Ctrl-C) before the first notebook", file=sys.stderr)
                return EXIT_INTERRUPTED
            print(f"  {reference:.1f} s", flush=True)
        status = _run_plans(plans, args, profile, interrupts, words, times, runs)
        _print_times(times)
        main_job = not status and args.command == "reproduce"
        try:
            _write_report(profile, runs, commit, readme=main_job)
            if main_job:
                from .report import write_run_times

                print(f"run times: {write_run_times(profile, times, reference, commit)}")
        except (ValueError, OSError) as exc:
            print(f"error: the report could not be written: {exc}", file=sys.stderr)
            return status or EXIT_FAILED
    return status


def _run_plans(plans, args, profile: str, interrupts: _Interrupts, words: Sequence[str],
               times: list, runs: dict) -> int:
    """Run the planned notebooks in order; fill ``times`` (name, seconds) and ``runs``
    (stem -> :class:`fa_utils.report.NotebookRun`); return the exit status."""
    from .report import NotebookRun

    done = 0
    try:
        out_dir = runs_dir() / "notebooks" / profile
        for i, (nb, params) in enumerate(plans):
            if interrupts.count:  # a Ctrl-C that the previous notebook survived
                raise KeyboardInterrupt
            print(f"running {nb.name} with {params} ...", flush=True)
            t0, started = time.perf_counter(), time.time()
            try:
                out = execute(nb, params, out_dir, args.timeout, interrupts)
            except NotebookFailure as exc:
                runs[nb.stem] = NotebookRun("failed", started, f"executed copy: {exc.output}")
                _mark_not_run(plans[i + 1:], runs, f"notebook {words[i]} failed first")
                print(f"FAILED: {exc}", file=sys.stderr)
                return EXIT_FAILED
            except NotebookInterrupted as exc:
                runs[nb.stem] = NotebookRun("interrupted", started, exc.output or "")
                _mark_not_run(plans[i + 1:], runs, "the run was interrupted first")
                _report_interrupt(exc, args, words[i:], profile)
                return EXIT_INTERRUPTED
            runs[nb.stem] = NotebookRun("ok", started, str(out))
            done = i + 1
            times.append((nb.name, time.perf_counter() - t0))
            print(f"  done in {times[-1][1]:.0f} s -> {out}", flush=True)
    except KeyboardInterrupt:  # between notebooks: nothing was running
        _mark_not_run(plans[done:], runs, "the run was interrupted first")
        print(f"INTERRUPTED (Ctrl-C) between notebooks; "
              f"{'no notebook had finished' if not done else plans[done - 1][0].name + ' had finished'}.\n"
              f"  to run the rest: {_resume_command(args, words[done:], profile)}",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


def _mark_not_run(rest, runs: dict, why: str) -> None:
    from .report import NotebookRun

    for nb, _ in rest:
        runs[nb.stem] = NotebookRun("not run", 0.0, why)


def _print_times(times: Sequence[tuple[str, float]]) -> None:
    if not times:
        return
    total = sum(t for _, t in times)
    print("\n".join(["", "time per notebook:"] + [f"  {n:40s} {t:7.0f} s" for n, t in times]
                    + [f"  {'total':40s} {total:7.0f} s"]), flush=True)


def _write_report(profile: str, runs: Mapping[str, Any], commit: str, readme: bool = True) -> None:
    """Assemble the report (:func:`fa_utils.report.write_report`), print its summary line
    and path, and, with ``readme`` (a successful main job, or ``report``), update the
    README's summary line when the report is the committed one."""
    from . import report

    path, line = report.write_report(profile, runs, commit)
    print(f"claims: {line}\nreport: {path}", flush=True)
    if readme and report.update_readme(line, path):
        print("  (README.md's summary line updated)", flush=True)


def _report_interrupt(exc: NotebookInterrupted, args, remaining: Sequence[str],
                      profile: str) -> None:
    lines = [f"INTERRUPTED: {exc}."]
    if exc.evalue:
        lines.append(f"  {exc.evalue}")
    else:
        lines.append(f"  the cell was not in a checkpointed training loop (train.fit), so it "
                     f"saved nothing and reruns from its start; the checkpoints written so "
                     f"far are in {runs_dir() / 'checkpoints'}")
    lines.append("  to resume (training continues from the checkpoints):")
    lines.append(f"    {_resume_command(args, remaining, profile)}")
    if exc.output:
        lines.append(f"  executed copy up to the interrupt: {exc.output}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _download(dataset: str, data_root: str) -> int:
    """``python -m fa_utils download``: exit 0 with the files in place, 2 for an unknown
    dataset, 1 when the files cannot be had (the message says why and what to do)."""
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


def _find(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path.resolve()
    matches = [p for p in all_notebooks() if p.name.startswith(name) or p.stem == name]
    if len(matches) == 1:
        return matches[0]
    return path  # prepare() reports it missing
