"""Scale FA training out with ``torch.distributed``: data-parallel (DDP) FA on N processes.

    torchrun --standalone --nproc_per_node N -m fa_utils.distributed --dataset mnist --profile paper
    python -m fa_utils.distributed --dataset mnist --profile paper          # one process

Every process holds the whole encoder and a 1/N slice of each global batch; gradients are
averaged by ``DistributedDataParallel`` (gloo on CPUs, nccl on GPUs). After k steps the
parameters equal, within fp32 rounding, those of one process on the same global batch
(``tests/test_distributed.py``; with Adam's default eps, coordinates whose exact gradient
is zero can move by up to lr per step on round-off, in either run). How the second-order FA
step meets DDP (``benchmarks/ddp_variants.py`` compares the variants; docs/choices.md
section 8):

* DDP prepares its gradient reducer once per forward of the wrapper. The FA step evaluates
  the encoder twice (E(x), then E(r) inside the inner problem) before its one backward.
  We call the wrapper once, for E(x), and run the inner problem on ``ddp.module``
  (:func:`fa_utils.fa.fa_loss` does this for a DDP encoder). The parameters' gradient
  hooks fire once per backward whatever the number of uses, so every path's gradient is
  all-reduced. The inner gradient is taken with ``torch.autograd.grad(..., inputs=r)``
  only, which runs no parameter hook. Do not wrap with ``static_graph=True``: it gives
  wrong gradients without an error here.
* Loss scale: each rank's loss is the mean over its B/N examples and DDP averages over the
  N ranks, so the gradient is that of the mean over the global batch of B: the
  single-process gradient. (:func:`fa_step_distributed` multiplies by
  N * B_local / B, which is 1 for the equal shards that ``fit`` hands out.)
* r_0 = 0 (the default) needs no random numbers. For ``uniform``/``normal`` r_0 every
  rank draws the global batch's r_0 from the same seeded generator and keeps its rows, so
  the random stream, and the result, match one process.
* Data: :func:`fa_utils.train.fit` with ``distributed=`` gives rank k the k-th slice of
  every single-process batch (:func:`fa_utils.train.shard_order`); :class:`EpochShardSampler`
  is the same order as a ``torch.utils.data.Sampler`` for loops of one's own.
* Checkpoints are written by rank 0 only (atomic), read by every rank; they hold the
  unwrapped encoder's state, so they are the same files as one process's and resume with
  any number of processes.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from . import fa, train
from .models import clamp_weights_

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among ``world_size`` processes, its device.

    ``backend`` is ``None`` when no process group was started (one plain process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None and self.world_size > 1


def _env_int(name: str, default: Optional[int] = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise RuntimeError(f"environment variable {name} is not set: start the processes "
                               f"with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, "
                               f"MASTER_ADDR and MASTER_PORT)")
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"environment variable {name}={value!r} is not an integer") from None


def init_from_env(device: str = "auto", backend: Optional[str] = None,
                  timeout_s: float = 1800.0) -> DistInfo:
    """Start the process group from torchrun's environment variables, or return a
    one-process :class:`DistInfo` when they are absent.

    Args:
        device: ``"auto"`` (GPU ``cuda:LOCAL_RANK`` if CUDA is available, else CPU),
            ``"cpu"`` or ``"cuda"``.
        backend: default nccl for CUDA, gloo for the CPU. On Linux, with a loopback
            MASTER_ADDR and no ``GLOO_SOCKET_IFNAME``, gloo is told to use ``lo``, so a
            single machine without network works.
        timeout_s: the collectives' timeout.

    Raises:
        RuntimeError: WORLD_SIZE set without the other variables; CUDA asked for but
            absent; fewer GPUs than local ranks.
    """
    if "WORLD_SIZE" not in os.environ:
        return DistInfo(device=train.resolve_device(device))
    world = _env_int("WORLD_SIZE")
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", rank)
    if not os.environ.get("MASTER_ADDR"):
        _env_int("MASTER_ADDR")  # raises the message that says to use torchrun
    _env_int("MASTER_PORT")
    use_cuda = (device == "auto" and torch.cuda.is_available()) or device.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local_rank} but only {torch.cuda.device_count()} "
                               f"GPU(s): use --nproc_per_node <= the number of GPUs")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if (backend == "gloo" and sys.platform.startswith("linux")
            and os.environ.get("MASTER_ADDR") in LOOPBACK
            and "GLOO_SOCKET_IFNAME" not in os.environ):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=_dt.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev,
                    backend=backend)


def cleanup() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int = 0) -> None:
    """End a rank's process *now*, after :func:`cleanup`: flush stdout/stderr, then
    ``os._exit(code)``, skipping the interpreter's C++ static destructors. With gloo, those
    sometimes abort a rank whose work is done ("terminate called without an active
    exception", SIGABRT), and torchrun would then report the run as failed
    (docs/choices.md section 9)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def wrap_ddp(module: nn.Module, info: DistInfo, **kwargs) -> nn.Module:
    """``DistributedDataParallel(module)`` on ``info.device``; the module itself when there is
    no process group. Keyword arguments go to DDP (default ``find_unused_parameters=False``:
    every encoder parameter gets a gradient in the FA step)."""
    module = module.to(info.device)
    if not info.distributed:
        return module
    if info.device.type == "cuda":
        kwargs.setdefault("device_ids", [info.device.index])
        kwargs.setdefault("output_device", info.device.index)
    return nn.parallel.DistributedDataParallel(module, **kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


class EpochShardSampler(Sampler[int]):
    """The indices of this rank's slices of every full global batch of an epoch, in the
    order of :func:`fa_utils.train.fit` (a permutation seeded by (seed, epoch)); use with a
    ``DataLoader(batch_size=batch_size // world_size)``. Call :meth:`set_epoch` each epoch.
    """

    def __init__(self, n: int, batch_size: int, *, rank: int, world_size: int, seed: int):
        if batch_size % world_size:
            raise ValueError(f"the global batch size {batch_size} must be divisible by the "
                             f"number of processes {world_size}")
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        order = train._epoch_order(self.n, self.seed, self.epoch)
        return iter(train.shard_order(order, self.batch_size, self.rank,
                                      self.world_size).tolist())

    def __len__(self) -> int:
        return (self.n // self.batch_size) * (self.batch_size // self.world_size)


def fa_step_distributed(encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                        *, info: DistInfo, global_batch: Optional[int] = None,
                        generator: Optional[torch.Generator] = None,
                        weight_clamp: Optional[float] = math.sqrt(2), head: str = "z",
                        T: int = 1, tau: float = 1.0, r_init: str = "zeros",
                        squash: str = "none", shared_start: Optional[bool] = None,
                        sync: bool = True,
                        autocast_dtype: Optional[torch.dtype] = None) -> dict[str, float]:
    """One FA step on this rank's rows ``x`` (B_local, C, H, W) of a global batch.

    ``encoder`` is DDP-wrapped (or plain, in one process); E(x) goes through the wrapper,
    the inner problem through its module. With r_0 = 0 this is
    :func:`fa_utils.fa.fa_step`; for random r_0 the global batch's r_0 is drawn from
    ``generator`` (identical on every rank) and this rank's rows are kept. Logged values
    are this rank's (``fit(distributed=...)`` averages them).

    Args:
        global_batch: B (default ``B_local * world_size``); the loss is scaled by
            world_size * B_local / B so that DDP's average is the global-batch gradient.
        autocast_dtype: as in :func:`fa_utils.fa.fa_step` (off: bf16 drifts, see there).
    """
    local = x.shape[0]
    global_batch = global_batch or local * info.world_size
    scale = info.world_size * local / global_batch
    if r_init == "zeros" and scale == 1.0:
        return fa.fa_step(encoder, optimizer, x, generator=generator,
                          weight_clamp=weight_clamp, sync=sync, head=head, T=T, tau=tau,
                          r_init=r_init, squash=squash, shared_start=shared_start,
                          autocast_dtype=autocast_dtype)
    optimizer.zero_grad(set_to_none=True)
    with (contextlib.nullcontext() if autocast_dtype is None
          else torch.autocast(x.device.type, dtype=autocast_dtype)):
        z_x = fa.head_encoder(encoder, head)(x)  # the one forward through the wrapper
        if r_init == "zeros":
            result = fa.solve(unwrap(encoder), z_x, x.shape[1:], head=head, T=T, tau=tau,
                              r_init=r_init, squash=squash, create_graph=True,
                              shared_start=shared_start)
        else:
            r0 = fa.init_r((global_batch, *x.shape[1:]), r_init, generator=generator,
                           device=x.device, dtype=x.dtype)
            r0 = r0[info.rank * local:(info.rank + 1) * local]
            result = fa.align(fa.head_encoder(unwrap(encoder), head), z_x, r0, T=T, tau=tau,
                              create_graph=True, squash=squash)
        loss = fa.reconstruction_loss(x, result.image).float()
    (loss * scale if scale != 1.0 else loss).backward()
    optimizer.step()
    if weight_clamp is not None:
        clamp_weights_(unwrap(encoder), weight_clamp)
    return fa._step_values(loss, x[0].numel(), sync)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (for a local process group)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def launch_local(argv: Sequence[str], nprocs: int = 2, *, timeout_s: float = 120.0,
                 env: Optional[dict] = None, threads: int = 1) -> list[str]:
    """Run ``python *argv`` as ``nprocs`` local processes with torchrun's environment
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, a free MASTER_PORT,
    OMP_NUM_THREADS=threads): ``torchrun --standalone`` without its agent, for tests and
    benchmarks on one machine without network.

    Returns:
        Each rank's stdout.

    Raises:
        RuntimeError: a rank failed or the time ran out (all ranks are then killed); the
            message holds the exit codes and the end of every rank's stderr.
    """
    import subprocess
    import tempfile
    import time

    port = free_port()
    procs, logs = [], []
    for rank in range(nprocs):
        penv = dict(os.environ, **(env or {}))
        penv.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nprocs),
                    LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads))
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        logs.append((out, err))
        procs.append(subprocess.Popen([sys.executable, *argv], env=penv, stdout=out, stderr=err))
    deadline = time.monotonic() + timeout_s
    timed_out = False
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                timed_out = True
                break
            if any(p.poll() not in (None, 0) for p in procs):  # one failed: do not wait
                time.sleep(2.0)
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = []
    for out, err in logs:
        out.seek(0), err.seek(0)
        texts.append((out.read(), err.read()))
        out.close(), err.close()
    codes = [p.returncode for p in procs]
    if timed_out or any(codes):
        why = (f"timed out after {timeout_s:.0f} s" if timed_out
               else f"exit codes {codes}")
        detail = "\n".join(f"--- rank {r} stderr (end) ---\n{e[-3000:]}"
                           for r, (_, e) in enumerate(texts))
        raise RuntimeError(f"{nprocs} local processes of {' '.join(argv)}: {why}\n{detail}")
    return [o for o, _ in texts]


# --------------------------------------------------------------------------------------
# The command line: FA training at a profile, on one or N processes
# --------------------------------------------------------------------------------------


def train_fa(cfg, info: DistInfo, *, name: str = "fa", fused_adam: Optional[bool] = None,
             autocast_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
             progress: bool = True, stop_after: Optional[int] = None,
             checkpoint: Optional[str] = None):
    """Train (or resume) the FA encoder of ``cfg`` (an ``FAConfig``) data-parallel:
    :func:`fa_utils.wiring.train_fa_encoder` with ``distributed=info`` (the same encoder,
    optimiser, data order, checkpoint path and contents as one process, so notebook 02
    picks up the result), ``cfg.batch_size`` being the global batch. Rank 0 loads the data
    first (it may download), the others after a barrier.

    Args:
        fused_adam, channels_last: as in :func:`fa_utils.wiring.train_fa_encoder`.
        autocast_dtype: the step under ``torch.autocast`` (off: docs/choices.md section 10).
        checkpoint: another file than the one-process run's.

    Returns:
        (encoder, history) on every rank.
    """
    from . import experiments, wiring

    if not info.is_main:
        barrier(info)
    data = experiments.load_image_data(cfg, verbose=info.is_main)
    if info.is_main:
        barrier(info)
    def make_step(encoder, optimizer, **settings):
        return functools.partial(fa_step_distributed, wrap_ddp(encoder, info), optimizer,
                                 info=info, global_batch=cfg.batch_size,
                                 autocast_dtype=autocast_dtype, **settings)

    return wiring.train_fa_encoder(cfg, data, name=name, progress=progress,
                                   stop_after=stop_after, distributed=info, make_step=make_step,
                                   fused_adam=fused_adam, channels_last=channels_last,
                                   checkpoint=None if checkpoint is None else Path(checkpoint))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fa_utils.distributed",
        description="Train the FA encoder (Algorithm 1) at a profile, on one process or "
                    "under torchrun --nproc_per_node N (DDP; --batch-size is the global batch).")
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10", "celeba", "stl10"])
    ap.add_argument("--profile", default="paper", choices=["smoke", "quick", "paper"])
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int, help="global batch (default: the profile's)")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--n-train", type=int)
    ap.add_argument("--data-root")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--checkpoint", help="default: the one-process run's, "
                    "runs/checkpoints/fa-<dataset>-<digest>-<profile>.pt (fa_utils.wiring)")
    ap.add_argument("--stop-after", type=int, help="stop (after checkpointing) at this step")
    ap.add_argument("--no-fused-adam", action="store_true",
                    help="the for-loop Adam instead of the fused one")
    ap.add_argument("--tf32", action="store_true",
                    help="also allow TF32 matmuls on Ampere+ GPUs (PyTorch already allows it for "
                         "cuDNN convolutions by default; docs/choices.md section 10)")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast of the FA loss (off by default: docs/choices.md "
                         "section 10)")
    ap.add_argument("--channels-last", action="store_true",
                    help="channels_last encoder (docs/choices.md section 10)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from .config import describe, make_config
    overrides = dict(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.lr, n_train=args.n_train, data_root=args.data_root,
                     device=args.device, seed=args.seed)
    cfg = make_config("fa", args.profile, **overrides)
    info = init_from_env(cfg.device)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        if info.is_main:
            print(describe(cfg))
            print(f"processes: {info.world_size} ({info.backend or 'no process group'}), "
                  f"device {info.device}, torch {torch.__version__}")
        _, history = train_fa(cfg, info, fused_adam=False if args.no_fused_adam else None,
                              autocast_dtype=torch.bfloat16 if args.bf16 else None,
                              channels_last=args.channels_last,
                              progress=not args.no_progress, stop_after=args.stop_after,
                              checkpoint=args.checkpoint)
        if info.is_main:
            print(f"done: step {history.train['loss'][-1][0] if history.train else 0}, "
                  f"last loss {history.last('train', 'loss')}, "
                  f"test mse {history.last('eval', 'test_mse')}")
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    code = main()
    if dist.is_available() and os.environ.get("WORLD_SIZE", "1") != "1":
        exit_process(code)  # a torchrun rank: see exit_process
    sys.exit(code)
