"""One FA training step of an encoder against one VAE step of the same encoder with a
mirrored decoder, batch 128, measured in the same run (interleaved, the order rotating,
CUDA synchronised: :func:`fa_utils.metrics.interleaved_times`; medians, ms). The full
suite (all architectures, scaling, memory, FLOPs) is ``python -m benchmarks.run``.

    python benchmarks/fa_vs_vae_step.py [--dataset mnist] [--batch 128] [--repeats 10]

Prints the medians and the ratio FA / VAE. Issue goal: ratio <= 1.2 on the CPU.
"""
import argparse
import functools
import platform
import statistics

import torch

from fa_utils import baselines, fa, models, train
from fa_utils.metrics import interleaved_times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--latent", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = train.resolve_device(args.device)
    arch = models.architecture(args.dataset)
    torch.manual_seed(0)
    x = torch.rand(args.batch, arch.channels, arch.size, arch.size, device=dev)

    fa_enc = models.make_encoder(args.dataset, {"z": args.latent}).to(dev)
    fa_opt = torch.optim.Adam(fa_enc.parameters(), lr=1e-4, betas=(0.5, 0.999))
    fa_fn = functools.partial(fa.fa_step, fa_enc, fa_opt, x, generator=None)

    vae_enc = models.make_encoder(args.dataset, {"mu": args.latent, "logvar": args.latent}).to(dev)
    vae_dec = models.init_orthogonal_(models.MirroredDecoder(arch, args.latent)).to(dev)
    vae_opt = torch.optim.Adam(list(vae_enc.parameters()) + list(vae_dec.parameters()), lr=1e-4)
    gen = torch.Generator(device=dev).manual_seed(0)
    vae_fn = functools.partial(baselines.vae_step, vae_enc, vae_dec, vae_opt, x, generator=gen)

    times = interleaved_times({"fa": fa_fn, "vae": vae_fn}, args.repeats, warmup=2, device=dev)
    fa_t, vae_t = statistics.median(times["fa"]), statistics.median(times["vae"])
    print(f"{args.dataset} batch {args.batch} Z={args.latent} on {dev} "
          f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__})")
    print(f"  FA step  (encoder {models.count_parameters(fa_enc)/1e6:.2f} M params): {fa_t*1e3:8.1f} ms")
    print(f"  VAE step (encoder + mirrored decoder "
          f"{(models.count_parameters(vae_enc)+models.count_parameters(vae_dec))/1e6:.2f} M): {vae_t*1e3:8.1f} ms")
    print(f"  ratio FA / VAE = {fa_t / vae_t:.2f}   (goal <= 1.2)")


if __name__ == "__main__":
    main()
