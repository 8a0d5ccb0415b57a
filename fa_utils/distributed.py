"""Data-parallel FA (Algorithm 1): ``torchrun --nproc_per_node N -m fa_utils.distributed``."""
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

from . import experiments, fa, train
from .config import describe, make_config


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
    """torchrun's group (none without WORLD_SIZE), nccl or gloo. RuntimeError: bad env or GPUs."""
    if "WORLD_SIZE" not in os.environ:
        return DistInfo(device=train.resolve_device(device))
    if not all(os.environ.get(v) for v in ("RANK", "MASTER_ADDR", "MASTER_PORT")):
        raise RuntimeError("WORLD_SIZE is set without RANK, MASTER_ADDR or MASTER_PORT: start "
                           "with torchrun --standalone --nproc_per_node 2 -m fa_utils.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda and local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"local rank {local_rank} needs a GPU, {torch.cuda.device_count()} "
                           f"found: use --nproc_per_node <= the number of GPUs, or --device cpu")
    dev = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    elif os.environ["MASTER_ADDR"] in ("127.0.0.1", "localhost", "::1"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    if not dist.is_initialized():  # 30 minutes: rank 0 may be downloading the data
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return DistInfo(dist.get_rank(), dist.get_world_size(), dev, dist.get_backend())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int = 0) -> None:
    """Flush, then ``os._exit``, skipping gloo's destructors (docs/choices.md section 9)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def wrap_ddp(module: nn.Module, info: DistInfo, **kwargs) -> nn.Module:
    """``module`` on ``info.device``, in ``DistributedDataParallel(**kwargs)`` under a group."""
    module = module.to(info.device)
    if info.device.type == "cuda":
        kwargs.setdefault("device_ids", [info.device.index])
    return nn.parallel.DistributedDataParallel(module, **kwargs) if info.distributed else module


def fa_step_distributed(encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                        *, info: DistInfo, global_batch: int | None = None, generator=None,
                        r_init: str = "zeros", **kwargs) -> dict[str, float]:
    """Algorithm 1 on this rank's rows x (B_local, C, H, W) of a batch B: ``{"loss", "mse"}``."""
    local, global_batch = x.shape[0], global_batch or x.shape[0] * info.world_size
    if r_init != "zeros":  # a random r_0: this rank's rows of one global draw
        r0 = fa.init_r((global_batch, *x.shape[1:]), r_init, generator=generator,
                       device=x.device, dtype=x.dtype)
        kwargs["r0"] = r0[info.rank * local:(info.rank + 1) * local]
    return fa.fa_step(encoder, optimizer, x, generator=generator, r_init=r_init,
                      loss_scale=info.world_size * local / global_batch, **kwargs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fa_utils.distributed", description=__doc__)
    ap.add_argument("--profile", default="paper", choices=["smoke", "quick", "paper"])
    for flag, kind in (("dataset", str), ("epochs", int), ("batch-size", int), ("lr", float),
                       ("n-train", int), ("data-root", str), ("device", str), ("seed", int),
                       ("stop-after", int), ("checkpoint", Path)):
        ap.add_argument(f"--{flag}", type=kind, help="default: the profile's")
    for flag in ("tf32", "bf16", "channels-last"):
        ap.add_argument(f"--{flag}", action="store_true", help="docs/choices.md section 10")
    args = ap.parse_args(argv)
    cfg = make_config("fa", args.profile, **{k: getattr(args, k) for k in (
        "dataset", "epochs", "batch_size", "lr", "n_train", "data_root", "device", "seed")})
    info = init_from_env(cfg.device)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        if info.is_main:
            print(f"{describe(cfg)}\nprocesses: {info.world_size} ({info.backend}), {info.device}")
        else:
            dist.barrier()  # rank 0 loads (maybe downloads) the data first
        data = experiments.load_image_data(cfg, verbose=info.is_main)
        if info.is_main and info.distributed:
            dist.barrier()
        make_step = lambda encoder, optimizer, **settings: functools.partial(  # noqa: E731
            fa_step_distributed, wrap_ddp(encoder, info), optimizer, info=info,
            global_batch=cfg.batch_size, autocast_dtype=torch.bfloat16 if args.bf16 else None,
            **settings)
        _, history = experiments.train_fa_encoder(
            cfg, data, distributed=info, make_step=make_step, channels_last=args.channels_last,
            stop_after=args.stop_after, checkpoint=args.checkpoint)
        if info.is_main:
            print("done:", {k: v[-1][1] for k, v in {**history.train, **history.eval}.items()})
    finally:
        cleanup()
    return 0


if __name__ == "__main__":  # a torchrun rank ends by exit_process
    (exit_process if os.environ.get("WORLD_SIZE", "1") != "1" else sys.exit)(main())
