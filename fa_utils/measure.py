"""Measurement helpers shared by :mod:`fa_utils`, ``benchmarks/``, the tests and the
notebooks: wall-clock timers, a meter of the bytes autograd saves for backward, the CUDA
peak of a block, and one-thread pinning.

Timers (seconds, ``time.perf_counter``; CUDA synchronised before the clock starts and
after the call, :func:`synchronize`, so a time covers the queued kernels too):

* :class:`Stopwatch`: one block, ``with Stopwatch(device) as sw: ...; sw.seconds``;
* :func:`interleaved_times`: every call of a dict ``repeats`` times, interleaved round by
  round in rotating order (a machine shared with other jobs slows all of them alike), the
  raw list of times per call;
* :func:`fastest_times`: the minimum of each call's interleaved times (on a shared
  machine, the best estimate of the unloaded cost);
* :func:`paired_ratio`: the median over rounds of a / b within the same round.

Memory: :class:`SavedTensorMeter` (bytes saved for backward, through
``torch.autograd.graph.saved_tensors_hooks``; works on a CPU) and :class:`CudaPeak`
(``torch.cuda.max_memory_allocated`` over a block; None without CUDA).

Threads: :func:`one_thread` runs a block, or a decorated function, on one intra-op thread
(docs/choices.md section 1).

Nothing here holds state between calls; every meter is an object the caller makes.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Mapping, Optional, Sequence, Union

import torch

Device = Union[str, torch.device, None]


# --------------------------------------------------------------------------------------
# Wall-clock timers
# --------------------------------------------------------------------------------------


def synchronize(device: Device = None) -> None:
    """Wait for the CUDA work queued on ``device``; nothing on other devices.

    ``device=None``: the current CUDA device when CUDA is available (whatever device the
    timed code uses), else nothing. A ``"cpu"`` (or ``"mps"``) device: nothing.
    """
    if device is None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Wall-clock seconds of the ``with`` block, CUDA synchronised (:func:`synchronize`
    on ``device``) when it starts and when it ends; ``seconds`` is set on exit (also when
    the block raises), None before.

    ``with Stopwatch(device) as sw: step()`` then ``sw.seconds`` (float, s).
    """

    def __init__(self, device: Device = None):
        self.device = device
        self.seconds: Optional[float] = None
        self._t0 = 0.0

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


def interleaved_times(fns: Mapping[str, Callable[[], object]], repeats: int, *,
                      warmup: int = 1, device: Device = None) -> dict[str, list[float]]:
    """Seconds per call of every function, ``repeats`` rounds, the calls interleaved.

    First ``warmup`` unmeasured rounds (every function once per round: cuDNN plans,
    optimiser state, caches). Round i then calls the functions in the order of ``fns``
    rotated by i, each inside a :class:`Stopwatch` on ``device``, so that every function
    meets the same machine load and no function is always first.

    Returns:
        {name: [seconds of round 0, round 1, ...]} (``repeats`` floats each, in round
        order, so that ``a[i]`` and ``b[i]`` come from the same round).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(repeats):
        k = i % len(names) if names else 0
        for name in names[k:] + names[:k]:
            with Stopwatch(device) as sw:
                fns[name]()
            times[name].append(sw.seconds)
    return times


def fastest_times(calls: Mapping[str, Callable[[], object]], *, repeats: int = 10,
                  warmup: int = 2, device: Device = None) -> dict[str, float]:
    """Minimum wall time (s) of each call over ``repeats`` interleaved rounds
    (:func:`interleaved_times`): on a shared machine the minimum is the best estimate of
    the unloaded cost, and the interleaving gives every call the same load.

    Returns:
        {name: seconds}.
    """
    return {m: min(ts) for m, ts in interleaved_times(calls, repeats, warmup=warmup,
                                                      device=device).items()}


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a[i] / b[i]``: the ratio of two interleaved calls taken
    within each round (the load of a round cancels), e.g. from :func:`interleaved_times`.
    Dimensionless."""
    return statistics.median(x / y for x, y in zip(a, b))


# --------------------------------------------------------------------------------------
# Memory: bytes saved for backward, CUDA peaks
# --------------------------------------------------------------------------------------


class _Packed:
    """What the pack hook stores instead of a tensor; its death marks the tensor's release."""

    __slots__ = ("tensor", "meter", "key", "__weakref__")

    def __init__(self, tensor, meter, key):
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self):
        if self.key is not None:
            self.meter._release(self.key)


class SavedTensorMeter:
    """Count what autograd saves for backward while the context is active (bytes).

    Three definitions, all kept because results report each:

    * ``total_bytes``: the bytes of every tensor packed (numel * element size), summed over
      the context (a tensor saved twice counts twice; parameters count). ``count``: the
      number of tensors packed.
    * ``peak_bytes``: the peak of *live* saved storage: each storage counted once while any
      saved reference to it is alive, the storages of ``exclude`` (the parameters) and
      empty ones not counted. A graph freed by ``backward`` (or by going out of scope)
      releases its saved tensors, so for local FA this is the peak over layers, and for
      global FA the whole graph (:func:`fa_utils.local.measure_step_memory`, notebook 05,
      ``benchmarks/run.py`` section 5).
    * ``distinct_bytes``: the bytes of the distinct storages saved at any time in the
      context (the largest size seen at each storage address, summed; ``exclude`` not
      counted), whether or not they were alive together: the activation memory a step
      holds for its backward (``benchmarks/run.py`` section 3).

    A tensor whose storage cannot be read (``RuntimeError`` / ``NotImplementedError``, e.g.
    a tensor subclass without storage) counts in ``total_bytes`` and ``count`` only.

    ``with SavedTensorMeter(exclude=model.parameters()) as meter: step()``.
    """

    def __init__(self, exclude: Sequence[torch.Tensor] = ()):
        self.excluded = {p.untyped_storage().data_ptr() for p in exclude}
        self.total_bytes = 0
        self.count = 0
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: dict[int, list[int]] = {}  # storage ptr -> [nbytes, references]
        self._distinct: dict[int, int] = {}  # storage ptr -> largest nbytes seen
        self._ctx = None

    @property
    def distinct_bytes(self) -> int:
        return sum(self._distinct.values())

    def _pack(self, t: torch.Tensor):
        self.total_bytes += t.numel() * t.element_size()
        self.count += 1
        try:
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):
            return _Packed(t, self, None)
        if ptr in self.excluded:
            return _Packed(t, self, None)
        self._distinct[ptr] = max(self._distinct.get(ptr, 0), nbytes)
        if nbytes == 0:
            return _Packed(t, self, None)
        entry = self._live.get(ptr)
        if entry is None:
            self._live[ptr] = [nbytes, 1]
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        else:
            entry[1] += 1
        return _Packed(t, self, ptr)

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live_bytes -= entry[0]
            del self._live[ptr]

    @staticmethod
    def _unpack(p: _Packed) -> torch.Tensor:
        return p.tensor

    def __enter__(self) -> "SavedTensorMeter":
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)
        self._ctx = None


class CudaPeak:
    """The CUDA memory a ``with`` block needs on ``device`` (bytes); on a non-CUDA device
    both values stay None and nothing is touched.

    On entry: :func:`synchronize`, ``torch.cuda.reset_peak_memory_stats`` and the bytes
    allocated then (``before``: weights, gradients, optimiser state ...). On exit:
    :func:`synchronize`, then ``peak_bytes`` = ``torch.cuda.max_memory_allocated`` during
    the block and ``step_bytes`` = ``peak_bytes - before``, what the block itself needed
    on top of what was resident.
    """

    def __init__(self, device: Device):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cuda = self.device.type == "cuda"
        self.before: Optional[int] = None
        self.peak_bytes: Optional[int] = None
        self.step_bytes: Optional[int] = None

    def __enter__(self) -> "CudaPeak":
        if self.cuda:
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            self.step_bytes = self.peak_bytes - self.before


# --------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op CPU thread inside the block, restoring the previous count
    after (also on an exception). Also a decorator: ``@one_thread()``.

    For small problems (a batch of one, 32 x 32 matrices, one image in an explorer): there
    a second thread only adds synchronisation, and on a loaded CPU it waits for its
    descheduled partner (docs/choices.md section 1).
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
