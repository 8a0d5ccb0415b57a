"""Paper-profile smoke for all four architectures: a few FA training steps of each
dataset's encoder on random images, timed, with the time per epoch they imply.

    python -m benchmarks.gpu_smoke                          # CUDA if present, batch 128
    python -m benchmarks.gpu_smoke --device cpu --batch 4 --steps 1 --init default   # a dry run

What runs is the paper profile's training step (``make_config("fa", "paper")``: Adam lr
1e-5, betas (0.9, 0.999), T = 1, r_0 = 0, Eq. 9 clamp) on ``models.make_encoder`` (Tables
7-9, orthogonal init) with fused Adam (``train.make_adam``), batch 128, Z = 128, inputs
random images in [0, 1] (no data files: a GPU machine may be offline). One unmeasured
warm-up step (cuDNN plans, Adam state), then ``--steps`` measured steps, each in a
CUDA-synchronised :class:`fa_utils.metrics.Stopwatch`, under one
:class:`fa_utils.metrics.CudaPeak`.
The report per dataset: median step time, images per second, CUDA peak memory, whether
every loss was finite, and seconds per epoch of the paper's training split at that step
time (FA steps only: no data loading, no per-epoch evaluation). Markdown on stdout and in
``--out`` when given.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.measure import TRAINING_SET_SIZES
from fa_utils import config, fa, models, train
from fa_utils.metrics import CudaPeak, Stopwatch


def smoke(dataset: str, *, device: torch.device, batch: int, steps: int, latent: int = 128,
          orthogonal: bool = True) -> dict:
    """Run 1 + ``steps`` paper-profile FA steps of ``dataset``'s encoder on random images
    (batch, C, H, W).

    Returns a dict: ``step_ms`` (median of the measured steps, milliseconds),
    ``images_per_s`` (batch / median step), ``epoch_s`` (steps per epoch of the paper's
    training split, :data:`benchmarks.measure.TRAINING_SET_SIZES`, at batch ``batch`` x median
    step, seconds), ``cuda_peak_mib``
    (``torch.cuda.max_memory_allocated`` over the measured steps, MiB; None on a CPU),
    ``finite`` (every loss finite), ``loss`` (the last loss), ``params`` (parameters)."""
    cfg = config.make_config("fa", "paper", dataset=dataset)
    arch = models.architecture(dataset)
    torch.manual_seed(0)
    enc = (models.make_encoder(dataset, {"z": latent}) if orthogonal
           else models.Encoder(arch, {"z": latent})).to(device)
    opt = train.make_adam(enc.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, arch.channels, arch.size, arch.size, device=device, generator=g)
    kw = dict(T=cfg.T, tau=cfg.tau, r_init=cfg.r_init, squash=cfg.squash,
              weight_clamp=cfg.weight_clamp)
    losses = [fa.fa_step(enc, opt, x, **kw)["loss"]]  # warm-up
    times = []
    with CudaPeak(device) as cuda:
        for _ in range(steps):
            with Stopwatch(device) as sw:
                losses.append(fa.fa_step(enc, opt, x, **kw)["loss"])
            times.append(sw.seconds)
    step = statistics.median(times)
    return {"step_ms": 1e3 * step, "images_per_s": batch / step,
            "epoch_s": TRAINING_SET_SIZES[dataset] // batch * step,
            "cuda_peak_mib": None if cuda.peak_bytes is None else cuda.peak_bytes / 2 ** 20,
            "finite": all(v == v and abs(v) != float("inf") for v in losses),
            "loss": losses[-1], "params": models.count_parameters(enc)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_smoke",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="measured steps per dataset")
    ap.add_argument("--datasets", default="mnist,cifar10,celeba,stl10")
    ap.add_argument("--init", choices=("orthogonal", "default"), default="orthogonal",
                    help="orthogonal (training's) or PyTorch's default (skips the slow QR "
                         "of the 4096-wide layers on a CPU; the step costs the same)")
    ap.add_argument("--out", help="also write the markdown report to this file")
    args = ap.parse_args(argv)
    device = train.resolve_device(args.device)
    rows, ok = [], True
    t_start = time.perf_counter()
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        r = smoke(dataset, device=device, batch=args.batch, steps=args.steps,
                  orthogonal=args.init == "orthogonal")
        ok &= r["finite"]
        rows.append([dataset, r["params"], r["step_ms"], r["images_per_s"], r["epoch_s"],
                     r["cuda_peak_mib"], "yes" if r["finite"] else "NO", r["loss"]])
        print(f"  {dataset}: {r['step_ms']:.1f} ms/step", file=sys.stderr, flush=True)
    from fa_utils.outputs import markdown_table
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    text = "\n".join([
        f"# Paper-profile FA smoke ({device}, {name}; torch {torch.__version__})", "",
        markdown_table(["dataset", "parameters", "FA step (ms)", "images/s",
                        "s/epoch (FA steps only)", "CUDA peak (MiB)", "losses finite",
                        "last loss"], rows), "",
        f"Batch {args.batch}, {args.steps} measured steps after one warm-up, random images, "
        f"`make_config('fa', 'paper')`'s step (lr 1e-5, T = 1, r_0 = 0, clamp), fused Adam, "
        f"{args.init} init. s/epoch: the paper's training split / batch x the median step "
        f"(no data loading or evaluation). {time.perf_counter() - t_start:.0f} s in all.", ""])
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
