"""Data-parallel FA under ``torchrun --nproc_per_node N -m fa_utils.distributed``: rank k steps on
slice k of each global batch, rank 0 checkpoints (docs/choices.md sections 8-10)."""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from . import fa, train


@dataclass(frozen=True)
class DistInfo:
    """This process's ``rank`` of ``world_size``, its ``device``; ``backend`` None: one process."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    is_main = property(lambda self: self.rank == 0)
    distributed = property(lambda self: self.backend is not None and self.world_size > 1)


def init_from_env(device: str = "auto") -> DistInfo:
    """The process group of torchrun's environment (none without WORLD_SIZE): nccl on
    ``cuda:LOCAL_RANK``, else gloo on the CPU (over ``lo`` for a loopback MASTER_ADDR).
    Raises RuntimeError: RANK / MASTER_ADDR / MASTER_PORT missing, or too few GPUs."""
    env = os.environ
    if "WORLD_SIZE" not in env:
        return DistInfo(device=train.resolve_device(device))
    if not all(env.get(v) for v in ("RANK", "MASTER_ADDR", "MASTER_PORT")):
        raise RuntimeError("WORLD_SIZE is set without RANK, MASTER_ADDR or MASTER_PORT: start "
                           "with torchrun --standalone --nproc_per_node 2 -m fa_utils.distributed")
    local_rank = int(env.get("LOCAL_RANK", env["RANK"]))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"local rank {local_rank} needs a GPU, {torch.cuda.device_count()} "
                           f"found: use --nproc_per_node <= the number of GPUs, or --device cpu")
    dev = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    elif env["MASTER_ADDR"] in ("127.0.0.1", "localhost", "::1"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if not dist.is_initialized():  # env://; 30 minutes: rank 0 may be downloading the data
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return DistInfo(dist.get_rank(), dist.get_world_size(), dev, dist.get_backend())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int = 0) -> None:
    """End this rank now (after :func:`cleanup`): flush, then ``os._exit``, skipping gloo's C++
    static destructors, which sometimes abort a finished rank (docs/choices.md section 9)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def wrap_ddp(module: nn.Module, info: DistInfo, **kwargs) -> nn.Module:
    """``DistributedDataParallel(module, **kwargs)`` on ``info.device``; without a process
    group, the module itself moved there."""
    module = module.to(info.device)
    if info.device.type == "cuda":
        kwargs.setdefault("device_ids", [info.device.index])
    return nn.parallel.DistributedDataParallel(module, **kwargs) if info.distributed else module


def fa_step_distributed(encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                        *, info: DistInfo, global_batch: int | None = None, generator=None,
                        r_init: str = "zeros", **kwargs) -> dict[str, float]:
    """Algorithm 1 (:func:`fa.fa_step`, ``kwargs`` go there) on this rank's rows x (B_local, C,
    H, W) of a global batch (default B_local x world_size): this rank's ``{"loss", "mse"}``; the
    loss scaled by world_size x B_local / B, a random r_0 this rank's rows of one global draw."""
    local, global_batch = x.shape[0], global_batch or x.shape[0] * info.world_size
    if r_init != "zeros":
        r0 = fa.init_r((global_batch, *x.shape[1:]), r_init, generator=generator,
                       device=x.device, dtype=x.dtype)
        kwargs["r0"] = r0[info.rank * local:(info.rank + 1) * local]
    # Double backward under DDP: E(x) once through the wrapper, the inner E(r) through the module
    # (fa.fa_loss); never static_graph=True: wrong gradients, no error (docs/choices.md section 8).
    return fa.fa_step(encoder, optimizer, x, generator=generator, r_init=r_init,
                      loss_scale=info.world_size * local / global_batch, **kwargs)


def train_fa(cfg, info: DistInfo, *, autocast_dtype: torch.dtype | None = None, **kwargs):
    """:func:`fa_utils.experiments.train_fa_encoder` (``kwargs`` go there) data-parallel with
    global batch ``cfg.batch_size``; rank 0 loads (maybe downloads) the data first."""
    from . import experiments
    if not info.is_main:
        dist.barrier()
    data = experiments.load_image_data(cfg, verbose=info.is_main)
    if info.is_main and info.distributed:
        dist.barrier()
    make_step = lambda encoder, optimizer, **settings: functools.partial(  # noqa: E731
        fa_step_distributed, wrap_ddp(encoder, info), optimizer, info=info,
        global_batch=cfg.batch_size, autocast_dtype=autocast_dtype, **settings)
    return experiments.train_fa_encoder(cfg, data, distributed=info, make_step=make_step, **kwargs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fa_utils.distributed", description=(
        "Train the FA encoder (Algorithm 1) at a profile; under torchrun --nproc_per_node N "
        "(DDP, gloo on CPUs, nccl on GPUs) --batch-size is the global batch."))
    ap.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10", "celeba", "stl10"])
    ap.add_argument("--profile", default="paper", choices=["smoke", "quick", "paper"])
    for flag, kind in (("epochs", int), ("batch-size", int), ("lr", float), ("n-train", int),
                       ("data-root", str), ("device", str), ("seed", int)):
        ap.add_argument(f"--{flag}", type=kind, help="default: the profile's")
    ap.add_argument("--stop-after", type=int)
    ap.add_argument("--checkpoint", type=Path, help="default: the one-process run's")
    for flag in ("no-fused-adam", "tf32", "bf16", "channels-last", "no-progress"):
        ap.add_argument(f"--{flag}", action="store_true", help="docs/choices.md section 10")
    args = ap.parse_args(argv)
    from .config import describe, make_config
    cfg = make_config("fa", args.profile, **{k: getattr(args, k) for k in (
        "dataset", "epochs", "batch_size", "lr", "n_train", "data_root", "device", "seed")})
    info = init_from_env(cfg.device)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        if info.is_main:
            print(f"{describe(cfg)}\nprocesses: {info.world_size} ({info.backend}), {info.device}")
        _, history = train_fa(cfg, info, fused_adam=False if args.no_fused_adam else None,
                              autocast_dtype=torch.bfloat16 if args.bf16 else None,
                              channels_last=args.channels_last, progress=not args.no_progress,
                              stop_after=args.stop_after, checkpoint=args.checkpoint)
        if info.is_main:
            print(f"done: loss {history.last('train', 'loss')}, test mse "
                  f"{history.last('eval', 'test_mse')}")
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    # a torchrun rank ends by exit_process (docs/choices.md section 9)
    (exit_process if os.environ.get("WORLD_SIZE", "1") != "1" else sys.exit)(main())
