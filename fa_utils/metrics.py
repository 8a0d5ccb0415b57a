"""Reconstruction error and its reference levels; timers, one-thread pinning and memory meters
(bytes autograd saves for backward, the CUDA peak of a block)."""
from __future__ import annotations

import contextlib
import time
import weakref
from typing import Callable, Mapping, Sequence

import torch


def mse_per_pixel(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error over every pixel of x and x_hat (B, C, H, W). ValueError: shapes."""
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    return float((x.float() - x_hat.float()).pow(2).mean())


def mean_image_mse(train_x: torch.Tensor, test_x: torch.Tensor) -> float:
    """Per-pixel MSE of predicting every test image by the mean training image (a floor)."""
    mean = train_x.float().mean(0, keepdim=True)
    return mse_per_pixel(test_x, mean.expand_as(test_x))


def top_right_singular_vectors(a: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` leading right singular vectors of ``a`` (N, D) as rows (k', D), from the
    eigendecomposition of the smaller Gram matrix (docs/choices.md section 2); directions
    with singular value below 1e-9 of the largest are dropped (k' < k only if rank < k)."""
    n, d = a.shape
    vals, vecs = torch.linalg.eigh(a @ a.T if n < d else a.T @ a)  # ascending
    vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
    keep = vals > 1e-18 * vals[0].clamp_min(0)
    if n < d:  # right singular vectors v = a^T u / s
        return (vecs[:, keep].T @ a) / vals[keep].sqrt()[:, None]
    return vecs[:, keep].T


def pca_mse(train_x: torch.Tensor, test_x: torch.Tensor, k: int, center: bool = True) -> float:
    """Per-pixel MSE on ``test_x`` (M, C, H, W) of the best rank-k reconstruction fitted on
    ``train_x`` (N, C, H, W): PCA (``center``), else the best k-dim subspace through 0, a lower
    bound for one-step FA from r_0 = 0 (r_1 is in the span of J_E(0)^T's k = Z columns)."""
    a = train_x.flatten(1).double()
    mean = a.mean(0, keepdim=True) if center else torch.zeros_like(a[:1])
    basis = top_right_singular_vectors(a - mean, k)  # (k', D), k' <= k
    b = test_x.flatten(1).double() - mean
    rec = (b @ basis.T) @ basis + mean
    return mse_per_pixel(test_x.flatten(1).double(), rec)


def _synchronize(device=None) -> None:
    """Wait for the CUDA work queued on ``device`` (None: the current CUDA device, if any)."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize(device)


class Stopwatch:
    """``with Stopwatch(device) as sw:`` sets ``sw.seconds`` on exit (also on an exception),
    CUDA synchronised at both ends."""

    def __init__(self, device=None):
        self.device, self.seconds = device, None

    def __enter__(self) -> "Stopwatch":
        _synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        _synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


def interleaved_times(fns: Mapping[str, Callable[[], object]], repeats: int, *,
                      warmup: int = 1, device=None) -> dict[str, list[float]]:
    """{name: [seconds of round 0, 1, ...]}: after ``warmup`` rounds, round i calls each
    function once, ``fns`` rotated by i (a shared machine's load falls on all alike)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(repeats):
        k = i % max(len(names), 1)
        for name in names[k:] + names[:k]:
            with Stopwatch(device) as sw:
                fns[name]()
            times[name].append(sw.seconds)
    return times


def fastest_times(calls: Mapping[str, Callable[[], object]], *, repeats: int = 10,
                  warmup: int = 2, device=None) -> dict[str, float]:
    """{name: the fastest of :func:`interleaved_times`' rounds, in seconds}."""
    times = interleaved_times(calls, repeats, warmup=warmup, device=device)
    return {m: min(ts) for m, ts in times.items()}


@contextlib.contextmanager
def one_thread():
    """One intra-op torch thread in the block or function, then the count restored
    (docs/choices.md section 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class CudaPeak:
    """``peak_bytes`` (``torch.cuda.max_memory_allocated``) of a ``with`` block on a CUDA
    ``device`` and ``step_bytes``, that less what was allocated on entry; None elsewhere."""

    def __init__(self, device):
        self.device = torch.device(device or "cpu")
        self.before = self.peak_bytes = self.step_bytes = None

    def __enter__(self) -> "CudaPeak":
        if self.device.type == "cuda":
            _synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            _synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            self.step_bytes = self.peak_bytes - self.before


class SavedTensorMeter:
    """Bytes autograd saves for backward in ``with SavedTensorMeter(exclude=params)``:
    ``total_bytes`` / ``count`` of every tensor packed (twice saved counts twice); ``peak_bytes``
    of live saved storages, each once, ``exclude`` and empty ones not counted (local FA peaks
    per layer); ``distinct_bytes`` of the distinct storages ever saved."""

    def __init__(self, exclude: Sequence[torch.Tensor] = ()):
        self.excluded = {p.untyped_storage().data_ptr() for p in exclude}
        self.total_bytes = self.count = self.live_bytes = self.peak_bytes = 0
        self._live: dict[int, list[int]] = {}  # storage address -> [bytes, references]
        self._distinct: dict[int, int] = {}   # storage address -> largest bytes seen

    @property
    def distinct_bytes(self) -> int:
        return sum(self._distinct.values())

    def _pack(self, t: torch.Tensor) -> Callable[[], torch.Tensor]:
        def packed() -> torch.Tensor:  # what autograd keeps; its death releases t
            return t

        self.total_bytes += t.numel() * t.element_size()
        self.count += 1
        try:
            ptr, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. a subclass without storage
            return packed
        if ptr in self.excluded or nbytes == 0:
            return packed
        self._distinct[ptr] = max(self._distinct.get(ptr, 0), nbytes)
        entry = self._live.setdefault(ptr, [nbytes, 0])
        if entry[1] == 0:
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        entry[1] += 1
        weakref.finalize(packed, self._release, ptr)
        return packed

    def _release(self, ptr: int) -> None:
        entry = self._live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.live_bytes -= entry[0]
            del self._live[ptr]

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda packed: packed())
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
