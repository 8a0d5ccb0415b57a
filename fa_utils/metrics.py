"""Reconstruction error and its reference levels; timers, thread pinning, memory meters."""
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
    return mse_per_pixel(test_x, train_x.float().mean(0, keepdim=True).expand_as(test_x))


def top_right_singular_vectors(a: torch.Tensor, k: int) -> torch.Tensor:
    """The k leading right singular vectors of a (N, D) as rows (k', D); k' < k if rank(a) < k."""
    n, d = a.shape
    # from the smaller Gram matrix (docs/choices.md section 2); eigh: ascending
    vals, vecs = torch.linalg.eigh(a @ a.T if n < d else a.T @ a)
    vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
    keep = vals > 1e-18 * vals[0].clamp_min(0)  # singular values above 1e-9 of the largest
    if n < d:  # right singular vectors v = a^T u / s
        return (vecs[:, keep].T @ a) / vals[keep].sqrt()[:, None]
    return vecs[:, keep].T


def pca_mse(train_x: torch.Tensor, test_x: torch.Tensor, k: int, center: bool = True) -> float:
    """Per-pixel MSE on test_x (M, C, H, W) of the best rank-k fit to train_x: PCA, or through 0."""
    a = train_x.flatten(1).double()
    mean = a.mean(0, keepdim=True) if center else torch.zeros_like(a[:1])
    basis = top_right_singular_vectors(a - mean, k)  # (k', D), k' <= k
    rec = ((test_x.flatten(1).double() - mean) @ basis.T) @ basis + mean
    return mse_per_pixel(test_x.flatten(1).double(), rec)


def _synchronize(device=None) -> None:
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize(device)


class Stopwatch:
    """``with Stopwatch(device) as sw:`` sets ``sw.seconds`` on exit, CUDA synchronised."""

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
    """{name: [seconds per round]}: round i (after ``warmup``) calls ``fns`` rotated by i."""
    names, times = list(fns), {k: [] for k in fns}
    for i in range(-warmup, repeats):
        k = max(i, 0) % max(len(names), 1)
        for name in names[k:] + names[:k]:
            with Stopwatch(device) as sw:
                fns[name]()
            if i >= 0:
                times[name].append(sw.seconds)
    return times


@contextlib.contextmanager
def one_thread():
    """One intra-op torch thread in the block or function (docs/choices.md section 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class CudaPeak(Stopwatch):
    """A :class:`Stopwatch` with CUDA ``peak_bytes`` and ``step_bytes`` (peak - entry) or None."""

    def __enter__(self) -> "CudaPeak":
        self.before = self.peak_bytes = self.step_bytes = None
        if torch.device(self.device or "cpu").type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self.before is not None:
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            self.step_bytes = self.peak_bytes - self.before


class SavedTensorMeter(torch.autograd.graph.saved_tensors_hooks):
    """Bytes saved for backward in the block: ``total_bytes``, ``count`` of all saves; the storages'
    (each once, not ``exclude`` or empty) ``peak_bytes`` alive and ``distinct_bytes`` ever."""

    def __init__(self, exclude: Sequence[torch.Tensor] = ()):
        super().__init__(self._pack, lambda packed: packed())
        self.excluded = {p.untyped_storage().data_ptr() for p in exclude}
        self.total_bytes = self.count = self.live_bytes = self.peak_bytes = self.distinct_bytes = 0
        self._refs: dict[int, int] = {}  # storage address -> saves alive
        self._distinct: dict[int, int] = {}  # storage address -> largest bytes seen

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
        self.distinct_bytes += max(nbytes - self._distinct.get(ptr, 0), 0)
        self._distinct[ptr] = max(self._distinct.get(ptr, 0), nbytes)
        if self._refs.get(ptr, 0) == 0:
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        self._refs[ptr] = self._refs.get(ptr, 0) + 1
        weakref.finalize(packed, self._release, ptr, nbytes)
        return packed

    def _release(self, ptr: int, nbytes: int) -> None:
        self._refs[ptr] -= 1
        if self._refs[ptr] == 0:
            self.live_bytes -= nbytes

    def __enter__(self) -> "SavedTensorMeter":
        super().__enter__()
        return self
