"""The project's VFA step and VFA-GAN batch against the authors' procedure, side by side.

    python -m benchmarks.vs_authors                 # MNIST and CIFAR-10 shapes, 8 repeats
    python -m benchmarks.vs_authors --repeats 3 --datasets mnist

Also section 8 of ``python -m benchmarks.run``, which writes it into
``results/benchmarks.md``. Every contender runs on the same shapes (batch 128, Z = 128,
10 classes, random images in [0, 1] and random labels), interleaved round by round in one
process (:func:`fa_utils.metrics.interleaved_times`); speed-ups are the authors' median
over ours, and the paired median of the per-round ratios beside it.

Contenders (what each network gets per batch is the same on both sides: one encoder
update; for the full batch also one G update and D's two terms):

* ``authors``: :class:`benchmarks.authors.AuthorsProcedure` (steps 1-5, or 1-7).
* ``vfa_step``: :func:`fa_utils.vfa.vfa_step` with the project's settings (random side
  mu(r), no squash, fused Adam, the Eq. 9 clamp), and with the authors' method settings
  (side mu(r) + sigma(r), sigmoid squash).
* ``vfagan_step(opt_e=...)``: joint training (Figure 4), the encoder step and then G and D,
  for each fake source: ``"reconstruction"`` (Eq. 7-8) and ``"authors"`` (D's fakes from the
  prior), with the authors' perceptual weight 0 (the same update of G; ours then skips the
  term), and once with the project's lambda = 0.01 (a different update, for scale). D
  (Table 10, with BatchNorm; the authors' has none) takes Eq. 8 as one loss and one Adam
  step where the authors take two (one per term); G (Table 11 at k = 3) is unconditional
  where the authors' has a label channel.

Also the FA step against a plain training step of the same encoder (forward, MSE of the
latent against a target, backward, Adam): the price of the inner problem.
"""
from __future__ import annotations

import argparse
import functools
import sys
from statistics import median

import torch

from benchmarks.authors import AuthorsProcedure
from benchmarks.measure import flops_of, paired_ratio
from fa_utils import fa, models, train, vfa
from fa_utils.metrics import interleaved_times
from fa_utils.outputs import markdown_table

BATCH, LATENT, CLASSES = 128, 128, 10
ADAM = dict(lr=1e-4, betas=(0.5, 0.999))
#: the goals of issue 14 (speed-up over the authors' procedure on 2 CPU cores)
GOALS = {"vfa step": 1.6, "full batch": 2.0}
#: the project's lambda of Eq. 7 (``VFAGANConfig.perceptual_weight``); the authors weight it 0
PERCEPTUAL = 0.01


def batch(dataset: str, device, n: int = BATCH, seed: int = 0):
    """Random images (n, C, H, W) in [0, 1] and labels (n,) for ``dataset``'s shapes."""
    arch = models.architecture(dataset)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, arch.channels, arch.size, arch.size, generator=g)
    y = torch.randint(CLASSES, (n,), generator=g)
    return x.to(device), y.to(device)


def project_settings(authors_method: bool) -> vfa.VFASettings:
    """The project's conditional VFA settings, or the same with the authors' method
    settings (mu + sigma side, sigmoid squash)."""
    if authors_method:
        return vfa.VFASettings(num_classes=CLASSES, rand_side="mu+sigma", squash="sigmoid")
    return vfa.VFASettings(num_classes=CLASSES)


def project_models(dataset: str, device):
    """The project's VFA encoder, refiner G and discriminator D as `fa_utils.experiments` builds them
    (:func:`fa_utils.models.to_device`: channels_last on a CPU), with fused Adam."""
    arch = models.architecture(dataset)
    enc = models.to_device(vfa.make_vfa_encoder(dataset, LATENT, CLASSES, orthogonal=False),
                           device)
    g = models.to_device(models.FAGenerator(arch.channels, 128, 3), device)
    d = models.to_device(models.Discriminator(arch), device)
    opts = [train.make_adam(m.parameters(), **ADAM) for m in (enc, g, d)]
    return enc, g, d, opts


def contenders(dataset: str, device, part: str) -> dict:
    """name -> zero-argument call, for ``part`` "vfa step" or "full batch"."""
    x, y = batch(dataset, device)
    gen = torch.Generator(device=device).manual_seed(0)
    ref = AuthorsProcedure(dataset, LATENT, CLASSES, device)
    fns = {"authors": functools.partial(ref.vfa_step if part == "vfa step" else ref.full_batch,
                                        x, y)}
    if part == "vfa step":
        for label, authors_method in (("ours", False), ("ours, authors' side and squash", True)):
            enc, _, _, (opt_e, _, _) = project_models(dataset, device)
            fns[label] = functools.partial(vfa.vfa_step, enc, opt_e, x, y,
                                           settings=project_settings(authors_method),
                                           generator=gen)
        return fns
    for source in ("reconstruction", "authors"):
        fns[f"G and D alone, fakes: {source}"] = adversarial_work(dataset, device, x, source)
    for source, weight in (("reconstruction", 0.0), ("authors", 0.0), ("authors", PERCEPTUAL)):
        enc, g, d, (opt_e, opt_g, opt_d) = project_models(dataset, device)
        label = f"ours, fakes: {source}" + (f", lambda {weight:g}" if weight else "")
        fns[label] = functools.partial(
            vfa.vfagan_step, enc, g, d, opt_g, opt_d, x, y, settings=project_settings(False),
            latent_dim=LATENT, fake_source=source, generator=gen, opt_e=opt_e,
            perceptual_weight=weight)
    return fns


def adversarial_work(dataset: str, device, x, source: str):
    """What G and D cost in one of our VFA-GAN batches, alone (without the encoder's step
    and the decoding of r): G's forward with a graph (and, for the authors' fake source,
    its forward without one on other images), D's step on the real and fake images, and
    G's step through D. The authors' batch needs the same passes of G and D (and also
    computes D's weight gradients in G's step), so authors' time / this time bounds the
    speed-up."""
    arch = models.architecture(dataset)
    g = models.to_device(models.FAGenerator(arch.channels, 128, 3), device)
    d = models.to_device(models.Discriminator(arch), device)
    opt_g, opt_d = (train.make_adam(m.parameters(), **ADAM) for m in (g, d))
    r, r_prior = torch.rand_like(x), torch.rand_like(x)

    def work():
        fake_g = g(r)
        if source == "authors":
            with torch.no_grad():
                fake_d = g(r_prior)
        else:
            fake_d = fake_g.detach()
        opt_d.zero_grad(set_to_none=True)
        vfa.lsgan_discriminator_loss(d(x), d(fake_d)).backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        vfa.lsgan_generator_loss(d(fake_g)).backward(inputs=list(g.parameters()))
        opt_g.step()
    return work


def plain_step(encoder, optimizer, x, target):
    """A plain training step of the encoder: forward, MSE of the latent, backward, Adam."""
    optimizer.zero_grad(set_to_none=True)
    loss = (encoder(x)["z"] - target).pow(2).sum(1).mean()
    loss.backward()
    optimizer.step()
    return loss.detach()


def fa_vs_plain(dataset: str, device, repeats: int) -> list:
    """[architecture, FA step ms, plain step ms, ratio, paired ratio, FLOP ratio] (fused
    Adam on both; FLOPs: :func:`benchmarks.measure.flops_of`)."""
    x, _ = batch(dataset, device)
    fns = {}
    for name in ("fa", "plain"):
        enc = models.Encoder(models.architecture(dataset), {"z": LATENT}).to(device)
        opt = train.make_adam(enc.parameters(), **ADAM)
        target = torch.randn(x.shape[0], LATENT, device=device)
        fns[name] = (functools.partial(fa.fa_step, enc, opt, x) if name == "fa"
                     else functools.partial(plain_step, enc, opt, x, target))
    t = interleaved_times(fns, repeats, device=device)
    flops = flops_of(fns["fa"]) / flops_of(fns["plain"])
    return [dataset, 1e3 * median(t["fa"]), 1e3 * median(t["plain"]),
            median(t["fa"]) / median(t["plain"]), paired_ratio(t["fa"], t["plain"]), flops]


def report(datasets, repeats: int, device) -> list[str]:
    """The section's markdown lines (tables and the notes under them)."""
    rows = []
    for dataset in datasets:
        for part in ("vfa step", "full batch"):
            fns = contenders(dataset, device, part)
            t = interleaved_times(fns, repeats, device=device)
            a = median(t["authors"])
            for name in fns:
                if name == "authors" or name.startswith("G and D alone"):
                    continue
                s = a / median(t[name])
                share = bound = None
                if part == "full batch":
                    source = name.split("fakes: ")[1].split(",")[0]
                    g_work = median(t["G and D alone, fakes: " + source])
                    share, bound = g_work / median(t[name]), a / g_work
                rows.append([dataset, part, name, 1e3 * a, 1e3 * median(t[name]), s,
                             1 / paired_ratio(t[name], t["authors"]), share, bound,
                             "-" if "lambda" in name else "met" if s >= GOALS[part]
                             else f"not met (goal {GOALS[part]:g}x)"])
            del fns
    plain = [fa_vs_plain(d, device, repeats) for d in datasets]
    return [
        f"### The authors' procedure against ours (batch {BATCH}, Z = {LATENT}, "
        f"{CLASSES} classes, {repeats} repeats interleaved)", "",
        markdown_table(["shapes", "step", "ours", "authors (ms)", "ours (ms)", "speed-up",
                        "paired speed-up", "G and D's share of ours", "bound from G and D",
                        "goal"], rows), "",
        "Authors: `benchmarks/authors.py`, their MNIST procedure restated (B zero starts "
        "through the encoder, the unused class-head forward, the one-hot loop, two D steps "
        "with their D, which has no BatchNorm, G with a label channel, a perceptual term "
        "computed and weighted 0); it took 0.95-0.98x (VFA step) and 1.01x (full batch) "
        "the time of the authors' own script, side by side in one process (paired "
        "medians). Ours: `vfa.vfa_step` (VFA step) and "
        "`vfa.vfagan_step(opt_e=...)` (joint training: the encoder step, then D and G, "
        "reusing the encoder step's E(x) and r_hat). Speed-up: the authors' median over "
        "ours; paired: the median of per-round ratios. G and D's share: the passes and "
        "updates of G and D in our batch (`vs_authors.adversarial_work`: G's forward, "
        "its second forward on the prior's images for the authors' fake source, D's step, "
        "G's step through D), timed alone in the same rounds. The authors' batch needs "
        "the same passes, so authors / that time bounds any speed-up (what it would be "
        "if the encoder's step and the decoding of r cost nothing).", "",
        "### The FA step against a plain training step of the same encoder", "",
        markdown_table(["architecture", "FA step (ms)", "plain step (ms)", "FA / plain",
                        "paired", "FLOPs FA / plain"], plain), "",
        "Plain step: forward, per-example squared error of the latent against a fixed "
        "target, backward, Adam (fused on both). The FA step adds E(0) on a batch of one, "
        "a transposed-Jacobian product and its part of the backward: per layer a forward, "
        "a transposed product and the backward of both against a forward and its "
        "backward, about 2 in arithmetic (the FLOP column, `benchmarks.measure.flops_of`). "
        "Time above the FLOP ratio is elementwise work (the activation slopes applied to "
        "B-sized tensors, forward and backward), which is bound by memory traffic.", ""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.vs_authors",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="mnist,cifar10")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    device = train.resolve_device(args.device)
    torch.manual_seed(0)
    print("\n".join(report(args.datasets.split(","), args.repeats, device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
