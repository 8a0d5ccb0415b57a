"""What only the benchmarks measure: the paired ratio of two interleaved timings and the
FLOPs of a call (the timers and meters the package uses too are in :mod:`fa_utils.metrics`)."""
from __future__ import annotations

import statistics
from typing import Callable, Sequence

import torch

#: The paper's Section 4: images in one training epoch (STL-10: its unlabeled split; CelebA:
#: the training partition).
TRAINING_SET_SIZES = {"mnist": 60_000, "cifar10": 50_000, "celeba": 162_770, "stl10": 100_000}


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of ``a[i] / b[i]``, two calls timed in the same round of
    :func:`fa_utils.metrics.interleaved_times` (the load of a round cancels)."""
    return statistics.median(x / y for x, y in zip(a, b))


def flops_of(step: Callable[[], object]) -> int:
    """FLOPs of one call: ``torch.utils.flop_counter``'s formulas (matmuls, convolutions and
    their backward) plus matrix-vector products, counted by a dispatch mode without module
    tracking (``FlopCounterMode``'s module hooks do not mix with ``autograd.grad``)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry
    aten = torch.ops.aten
    extra = {aten.mv: lambda a, b, *_, **__: 2 * a.shape[0] * a.shape[1],
             aten.addmv: lambda bias, a, b, *_, **__: 2 * a.shape[0] * a.shape[1],
             aten.outer: lambda a, b, *_, **__: a.numel() * b.numel(),
             aten.ger: lambda a, b, *_, **__: a.numel() * b.numel()}
    total = [0]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            packet = func._overloadpacket
            if packet in flop_registry:
                total[0] += flop_registry[packet](*args, **kwargs, out_val=out)
            elif packet in extra:
                total[0] += extra[packet](*args, **kwargs)
            return out

    with Counter():
        step()
    return int(total[0])
