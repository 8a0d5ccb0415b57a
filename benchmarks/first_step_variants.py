"""Three ways to take FA's first inner step from a start shared by the batch, timed as a
whole training step (loss, double backward, fused Adam), interleaved in one run:

- ``hand``: :func:`fa_utils.fa.first_step`, E(0) on a batch of one and its
  transposed Jacobian written layer by layer (what the package uses);
- ``vmap(vjp)``: E(0) on a batch of one through ``torch.func.vjp``, its backward applied to
  the B residuals with ``torch.func.vmap`` (no list of supported layers);
- ``textbook``: B copies of r_0 = 0 through E and ``torch.autograd.grad`` (Algorithm 1 as
  written).

    python -m benchmarks.first_step_variants [--datasets mnist,cifar10] [--repeats 10]

Prints medians (ms per step; :func:`fa_utils.metrics.interleaved_times`), ratios to
``hand``, the largest difference of r_1 from ``hand``, and whether autograd's saved-tensor
hooks (:class:`fa_utils.metrics.SavedTensorMeter`, the memory meter of Section 3.5) run under
each variant.
"""
from __future__ import annotations

import argparse
from statistics import median

import torch
from torch.func import vjp, vmap

from fa_utils import fa, models, train
from fa_utils.metrics import SavedTensorMeter, interleaved_times


def variants(enc, x):
    shape = x.shape[1:]

    def hand(z):
        return fa.first_step(enc, z, torch.zeros(1, *shape), head="z")

    def vmapped(z):
        r0 = torch.zeros(1, *shape)
        e0, fn = vjp(lambda r: enc(r)["z"], r0)
        return r0 - vmap(lambda v: fn(v.unsqueeze(0))[0][0])(e0 - z)

    def textbook(z):
        r = torch.zeros(x.shape, requires_grad=True)
        energy = 0.5 * (z - enc(r)["z"]).pow(2).sum()
        (g,) = torch.autograd.grad(energy, r, create_graph=True)
        return r - g
    return {"hand": hand, "vmap(vjp)": vmapped, "textbook": textbook}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="mnist,cifar10")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    device = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, Z = 128")
    print("| architecture | hand (ms) | vmap(vjp) (ms) | textbook (ms) | vmap / hand | "
          "textbook / hand | max abs r_1 diff vs hand | saved-tensor hooks |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in args.datasets.split(","):
        torch.manual_seed(0)
        enc = models.Encoder(models.architecture(dataset), {"z": 128})
        opt = train.make_adam(enc.parameters(), 1e-4)
        x = torch.rand(args.batch, enc.arch.channels, enc.arch.size, enc.arch.size)
        fns = variants(enc, x)

        def step(fn):
            opt.zero_grad(set_to_none=True)
            r1 = fn(enc(x)["z"])
            (x - r1).pow(2).flatten(1).sum(1).mean().backward()
            opt.step()

        with torch.no_grad():
            z = enc(x)["z"]
        with torch.enable_grad():
            ref = fns["hand"](z).detach()
            diffs = {k: float((f(z).detach() - ref).abs().max()) for k, f in fns.items()}
        hooks = {}
        for k, f in fns.items():
            try:
                with SavedTensorMeter(list(enc.parameters())):
                    f(enc(x)["z"]).sum().backward()
                hooks[k] = "run"
            except RuntimeError as exc:
                hooks[k] = "refused" if "saved tensor hooks" in str(exc) else f"error: {exc}"
        enc.zero_grad(set_to_none=True)
        t = interleaved_times({k: (lambda f=f: step(f)) for k, f in fns.items()}, args.repeats,
                              device=device)
        h = median(t["hand"])
        print(f"| {dataset} | {1e3 * h:.0f} | {1e3 * median(t['vmap(vjp)']):.0f} | "
              f"{1e3 * median(t['textbook']):.0f} | {median(t['vmap(vjp)']) / h:.2f} | "
              f"{median(t['textbook']) / h:.2f} | "
              f"{max(diffs['vmap(vjp)'], diffs['textbook']):.1e} | "
              + ", ".join(f"{k} {v}" for k, v in hooks.items()) + " |", flush=True)


if __name__ == "__main__":
    main()
