"""Executing one notebook headlessly with papermill: the executed copies
(``NN_name.running.ipynb`` renamed to ``NN_name.ipynb``, ``.failed`` or ``.interrupted``),
the kernel process's own messages in ``NN_name.kernel.log``, a progress line per slow cell,
and Ctrl-C forwarded to the kernel (a second kills it).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .notebooks import RunnerError

PROGRESS_MIN_S = 2.0  # a code cell this slow gets a progress line
KERNEL_TRANSPORT = "ipc" if os.name == "posix" else "tcp"  # no TCP port, no warning about it


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


@dataclass
class Interrupts:
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
            interrupts: Optional[Interrupts] = None) -> Path:
    """Execute ``nb`` with papermill into ``out_dir`` (see the module's doc for the copies
    and the kernel log); return the executed copy. ``timeout``: seconds per cell.

    Raises:
        NotebookStopped: a cell raised or timed out, or Ctrl-C (``interrupts``).
    """
    import papermill as pm

    interrupts = interrupts or Interrupts()
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
