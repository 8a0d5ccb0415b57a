"""Metrics: reconstruction error and its reference levels; timers, one-thread pinning and
the memory meters (the bytes autograd saves for backward, the CUDA peak of a block).

(FID is :mod:`fa_utils.fid`; parameter counts :func:`fa_utils.models.count_parameters`;
the benchmarks' own measures are ``benchmarks/measure.py``.) Nothing here holds state
between calls: every meter is an object the caller makes.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Mapping, Sequence

import torch


def mse_per_pixel(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error over every pixel and channel of the batch (the paper's L2 per pixel).

    Shapes: (B, C, H, W) and (B, C, H, W) -> float.
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    return float((x.float() - x_hat.float()).pow(2).mean())


def mean_image_mse(train_x: torch.Tensor, test_x: torch.Tensor) -> float:
    """Per-pixel MSE of predicting every test image by the mean training image: the error of
    a "decoder" that ignores its input (a floor any reconstruction must beat)."""
    mean = train_x.float().mean(0, keepdim=True)
    return mse_per_pixel(test_x, mean.expand_as(test_x))


def top_right_singular_vectors(a: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` leading right singular vectors of ``a`` (N, D), as rows (k', D), from the
    eigendecomposition of the smaller Gram matrix (a a^T, N x N, when N < D; else a^T a):
    the same subspace as ``torch.linalg.svd`` (tested), and faster (docs/choices.md
    section 2). Directions whose singular value
    is below 1e-9 of the largest are dropped (k' < k only when a has rank < k: they would
    add nothing to a projection)."""
    n, d = a.shape
    if n < d:
        vals, vecs = torch.linalg.eigh(a @ a.T)  # ascending
        vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
        keep = vals > 1e-18 * vals[0].clamp_min(0)
        basis = (vecs[:, keep].T @ a) / vals[keep].sqrt()[:, None]
    else:
        vals, vecs = torch.linalg.eigh(a.T @ a)
        vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
        keep = vals > 1e-18 * vals[0].clamp_min(0)
        basis = vecs[:, keep].T
    return basis


def pca_mse(train_x: torch.Tensor, test_x: torch.Tensor, k: int, center: bool = True) -> float:
    """Per-pixel MSE of the best rank-k linear reconstruction fitted on ``train_x``.

    ``center=True``: PCA with k components (an affine k-dim subspace through the mean).
    ``center=False``: the best k-dim *linear* subspace through the origin. One-step FA from
    r_0 = 0 returns r_1 = J_E(0)^T (z - E(0)), which always lies in the k-dim span of
    J_E(0)^T's columns (k = Z), so this is a lower bound on its error (up to the
    train/test difference of the fitted subspace).

    Shapes: (N, C, H, W), (M, C, H, W) -> float.
    """
    a = train_x.flatten(1).double()
    mean = a.mean(0, keepdim=True) if center else torch.zeros_like(a[:1])
    basis = top_right_singular_vectors(a - mean, k)  # (k', D), k' <= k
    b = test_x.flatten(1).double() - mean
    rec = (b @ basis.T) @ basis + mean
    return mse_per_pixel(test_x.flatten(1).double(), rec)


# --------------------------------------------------------------------------------------
# Timers, threads and memory meters (used by local FA, the explorers, the sampling table)
# --------------------------------------------------------------------------------------


def _synchronize(device=None) -> None:
    """Wait for the CUDA work queued on ``device`` (None: the current CUDA device, if any)."""
    if device is None and torch.cuda.is_available():
        torch.cuda.synchronize()
    elif device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` sets ``sw.seconds`` (wall clock, float) on exit,
    also when the block raises; CUDA is synchronised when the block starts and ends."""

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
    """{name: [seconds of round 0, 1, ...]}: after ``warmup`` unmeasured rounds, round i calls
    every function once, in the order of ``fns`` rotated by i (a shared machine's load falls
    on all alike; ``a[i]`` and ``b[i]`` come from the same round)."""
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
    """{name: seconds}, the minimum over :func:`interleaved_times`' rounds (on a shared
    machine, the best estimate of the unloaded cost)."""
    return {m: min(ts) for m, ts in interleaved_times(calls, repeats, warmup=warmup,
                                                      device=device).items()}


@contextlib.contextmanager
def one_thread():
    """Torch on one intra-op CPU thread inside the block (or a function decorated with
    ``@one_thread()``), the previous count restored after, also on an exception. For small
    problems, where a second thread only adds synchronisation (docs/choices.md section 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class CudaPeak:
    """``peak_bytes`` (``torch.cuda.max_memory_allocated``) of a ``with`` block on a CUDA
    ``device`` and ``step_bytes``, that less what was allocated on entry; both None elsewhere."""

    def __init__(self, device):
        self.device = torch.device(device if device is not None else "cpu")
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


class _Packed:
    """What the pack hook stores instead of a tensor; its death releases the tensor."""

    __slots__ = ("tensor", "meter", "key", "__weakref__")

    def __init__(self, tensor, meter, key):
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self):
        if self.key is not None:
            self.meter._release(self.key)


class SavedTensorMeter:
    """Bytes autograd saves for backward inside ``with SavedTensorMeter(exclude=params) as m``
    (``torch.autograd.graph.saved_tensors_hooks``; works on a CPU):

    * ``total_bytes`` / ``count``: every tensor packed (numel x element size; saved twice
      counts twice; parameters count; so does a tensor without readable storage);
    * ``peak_bytes``: the peak of live saved storage, each storage once while a saved
      reference to it lives, ``exclude`` and empty storages not counted: a freed graph
      releases its tensors, so local FA (Alg. 2) peaks per layer, global FA on the whole graph;
    * ``distinct_bytes``: the distinct storages saved at any time (largest size per address),
      alive together or not: the activations a step holds for its backward.
    """

    def __init__(self, exclude: Sequence[torch.Tensor] = ()):
        self.excluded = {p.untyped_storage().data_ptr() for p in exclude}
        self.total_bytes = self.count = self.live_bytes = self.peak_bytes = 0
        self._live: dict[int, list[int]] = {}  # storage address -> [bytes, references]
        self._distinct: dict[int, int] = {}   # storage address -> largest bytes seen

    @property
    def distinct_bytes(self) -> int:
        return sum(self._distinct.values())

    def _pack(self, t: torch.Tensor) -> _Packed:
        self.total_bytes += t.numel() * t.element_size()
        self.count += 1
        try:
            ptr, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. a subclass without storage
            return _Packed(t, self, None)
        if ptr in self.excluded:
            return _Packed(t, self, None)
        self._distinct[ptr] = max(self._distinct.get(ptr, 0), nbytes)
        if nbytes == 0:
            return _Packed(t, self, None)
        entry = self._live.setdefault(ptr, [nbytes, 0])
        if entry[1] == 0:
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        entry[1] += 1
        return _Packed(t, self, ptr)

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.live_bytes -= entry[0]
                del self._live[ptr]

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda p: p.tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
