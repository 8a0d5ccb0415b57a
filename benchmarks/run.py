"""The FA training step measured against a VAE step of the same encoder, in one run.

    python -m benchmarks.run            # --quick (default): about 13 min measured on 2 CPU cores
    python -m benchmarks.run --full     # more repeats, batch up to 1024; meant for a GPU
    python -m benchmarks.run --sections 1,6 --no-write    # a subset, printed only

Prints a markdown report and writes it to ``results/benchmarks.md``
(``fa_utils.outputs.results_dir()``; ``FA_OUTPUT_ROOT`` redirects it). Every number is a
median or a ratio of medians measured in this run, the contenders interleaved repeat by
repeat (the order rotating), so that a machine shared with other jobs slows all of them
alike (:func:`fa_utils.metrics.interleaved_times`, CUDA synchronised around each call); the
paired ratio is the median over repeats of (FA time / VAE time) in the same repeat
(:func:`benchmarks.measure.paired_ratio`). Inputs are random images unless a section says
otherwise; the networks are Tables 7-9's (VAE: the encoder with ``mu``/``logvar`` heads and
:class:`fa_utils.models.MirroredDecoder`).

Sections: (1) FA step / VAE step per architecture, with the textbook FA step, the optimised
one, and both optimisers (for-loop and fused Adam) and memory formats; (2) FA step time
against batch size and against T (MNIST encoder); (3) bytes saved for backward per step (the
distinct storages, :class:`fa_utils.metrics.SavedTensorMeter`'s ``distinct_bytes``) and CUDA
peak memory when a GPU is present (:class:`fa_utils.metrics.CudaPeak`); (4) FLOPs per step
(``torch.utils.flop_counter``) and the time per epoch on one GPU *estimated* from them
(labelled, unmeasured without a GPU); (5) sampling: VFA vs VAE decoding (batch of 500) and,
per image at batch 1 as the paper times it, VAE, GAN, VFA and VFA-GAN on the networks Tables
3-6's sizes imply (:func:`fa_utils.baselines.sampling_calls`) beside the paper's ratios;
local vs global FA peak memory (notebook 05's ``compare_memory``) and step time; (6)
images per second: the training step (from section 1's medians), ``fa_utils.train.fit`` end
to end on the real MNIST sample (data loading included, no checkpoint written), and FID
feature extraction with the extractor :mod:`fa_utils.fid` uses on this machine; (7)
precision drift of the FA step: the outer loss gradient and the reconstruction r under fp32,
bf16 autocast (and TF32 on CUDA) against an fp64 reference, and the setting kept; (8) the
authors' training procedure (``benchmarks/authors.py``) against the project's VFA step and
VFA-GAN batch on MNIST and CIFAR-10 shapes, and the FA step against a plain training step
of the same encoder (:mod:`benchmarks.vs_authors`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import math
import os
import platform
import sys
import time
from statistics import median
from typing import Callable, Optional

import torch

from benchmarks.measure import TRAINING_SET_SIZES, flops_of, paired_ratio
from fa_utils import baselines, fa, models, paper, train
from fa_utils.metrics import CudaPeak, SavedTensorMeter, interleaved_times
from fa_utils.outputs import markdown_table, results_dir

#: (label, dataset of the architecture); epoch sizes: benchmarks.measure.TRAINING_SET_SIZES
ARCHS = (("mnist", "mnist"), ("cifar10", "cifar10"),
         ("celeba / stl10", "celeba"))  # Table 9: one architecture for both
LATENT = 128
BATCH = 128
ADAM = dict(lr=1e-4, betas=(0.5, 0.999))
ALL_SECTIONS = "1,2,3,4,5,6,7,8"


# --------------------------------------------------------------------------------------
# The contenders
# --------------------------------------------------------------------------------------


def fa_model(dataset: str, device, fused: bool, channels_last: bool = False, orthogonal=True):
    enc = (models.make_encoder(dataset, {"z": LATENT}) if orthogonal
           else models.Encoder(models.architecture(dataset), {"z": LATENT})).to(device)
    if channels_last:
        enc = enc.to(memory_format=torch.channels_last)
    return enc, (train.make_adam if fused else torch.optim.Adam)(enc.parameters(), **ADAM)


def vae_model(dataset: str, device, fused: bool, channels_last: bool = False, orthogonal=True):
    arch = models.architecture(dataset)
    enc = (models.make_encoder(dataset, {"mu": LATENT, "logvar": LATENT}) if orthogonal
           else models.Encoder(arch, {"mu": LATENT, "logvar": LATENT}))
    dec = models.MirroredDecoder(arch, LATENT)
    if orthogonal:
        models.init_orthogonal_(dec)
    enc, dec = enc.to(device), dec.to(device)
    if channels_last:
        enc, dec = enc.to(memory_format=torch.channels_last), dec.to(memory_format=torch.channels_last)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = (train.make_adam if fused else torch.optim.Adam)(params, **ADAM)
    return enc, dec, opt


def contenders(dataset: str, x: torch.Tensor, device, *, variants: list[str], orthogonal=True):
    """name -> zero-argument step function. Variants:

    fa-textbook   fa_step(shared_start=False): batch-B E(r_0), for-loop Adam (the old step)
    fa            fa_step (shared-start first step), for-loop Adam
    vae           vae_step, for-loop Adam
    fa+fused / vae+fused              the same with fused Adam
    fa+fused+cl / vae+fused+cl        and channels_last weights and inputs
    """
    fns = {}
    gen = torch.Generator(device=device).manual_seed(0)
    for v in variants:
        fused = "fused" in v
        cl = v.endswith("+cl")
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        if v.startswith("fa"):
            enc, opt = fa_model(dataset, device, fused, cl, orthogonal)
            fns[v] = functools.partial(fa.fa_step, enc, opt, xx,
                                       shared_start=False if v == "fa-textbook" else None)
        else:
            enc, dec, opt = vae_model(dataset, device, fused, cl, orthogonal)
            fns[v] = functools.partial(baselines.vae_step, enc, dec, opt, xx, generator=gen)
    return fns


# --------------------------------------------------------------------------------------
# Memory and FLOPs
# --------------------------------------------------------------------------------------


def memory_of(step: Callable[[], object], params, device) -> tuple[int, Optional[int]]:
    """(bytes of the distinct storages saved for backward during one step, parameters
    excluded: ``SavedTensorMeter.distinct_bytes``; CUDA peak bytes of the step above what
    was allocated before it, ``CudaPeak.step_bytes``, or None without CUDA), after one
    unmeasured warm-up step (the optimiser state exists before measuring)."""
    step()
    with CudaPeak(device) as cuda, SavedTensorMeter(params) as meter:
        step()
    return meter.distinct_bytes, cuda.step_bytes


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


def environment(device: torch.device) -> list[str]:
    lines = [f"- platform: {platform.platform()}; python {platform.python_version()}",
             f"- CPU: {platform.processor() or platform.machine()}, os.cpu_count() = "
             f"{os.cpu_count()}, torch threads = {torch.get_num_threads()}, "
             f"mkldnn = {torch.backends.mkldnn.is_available()}",
             f"- torch {torch.__version__}; device {device}"
             + (f" ({torch.cuda.get_device_name(device)}, TF32 matmul "
                f"{torch.backends.cuda.matmul.allow_tf32})" if device.type == "cuda" else "")]
    if hasattr(os, "getloadavg"):
        lines.append("- load average at start (1, 5, 15 min): "
                     + ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    return lines


def section_ratio(args, device, out: list[str], archs) -> dict[str, dict[str, float]]:
    all_variants = ["fa-textbook", "fa", "vae", "fa+fused", "vae+fused", "fa+fused+cl",
                    "vae+fused+cl"]
    rows, per_step = [], {}
    for label, dataset in archs:
        arch = models.architecture(dataset)
        x = torch.rand(BATCH, arch.channels, arch.size, arch.size, device=device,
                       generator=torch.Generator(device=device).manual_seed(0))
        reps = args.repeats if arch.size < 64 else args.repeats_64
        # quick: channels_last is measured on the 28/32-pixel architectures only
        variants = all_variants if args.full or arch.size < 64 else all_variants[:5]
        t0 = time.perf_counter()
        fns = contenders(dataset, x, device, variants=variants, orthogonal=args.orthogonal)
        times = interleaved_times(fns, reps, device=device)
        per_step[dataset] = {k: median(v) for k, v in times.items()}
        row = [label, reps] + [1e3 * median(times[v]) if v in times else None
                               for v in all_variants]
        row += [median(times["fa-textbook"]) / median(times["vae"]),
                median(times["fa"]) / median(times["vae"]),
                paired_ratio(times["fa"], times["vae"]),
                median(times["fa+fused"]) / median(times["vae+fused"]),
                paired_ratio(times["fa+fused"], times["vae+fused"])]
        if "fa+fused+cl" in times:
            row += [median(times["fa+fused+cl"]) / median(times["vae+fused+cl"]),
                    median(times["fa+fused+cl"]) / median(times["fa+fused"])]
        else:
            row += [None, None]
        rows.append(row)
        print(f"  {label}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    cols = (["architecture", "repeats"] + [f"{v} (ms)" for v in all_variants]
            + ["textbook FA / VAE", "FA / VAE", "FA / VAE paired", "FA / VAE (fused Adam)",
               "paired (fused)", "FA / VAE (fused, channels_last)",
               "FA channels_last / contiguous"])
    out += [f"## 1. FA training step / VAE training step (batch {BATCH}, Z = {LATENT})", "",
            markdown_table(cols, rows), "",
            "`fa-textbook`: `fa_step(shared_start=False)`, the inner step from a batch of "
            "zeros (the step before this work). `fa`: `fa_step` as shipped: the first inner "
            "step from one shared r_0 = 0 (`fa.first_step`: E(0) on one example, its "
            "transposed Jacobian applied layer by layer to the B residuals). `vae`: `vae_step`, same encoder with mu/logvar heads + "
            "MirroredDecoder. `+fused`: `train.make_adam` (fused Adam); otherwise "
            "`torch.optim.Adam`'s default (for-loop on a CPU). `+cl`: channels_last "
            "weights and inputs (`-`: not measured at --quick). Paired: the median over "
            "repeats of the ratio within one repeat. Target: FA / VAE <= 1.2.", ""]
    return per_step


def section_scaling(args, device, out: list[str]) -> None:
    arch = models.architecture("mnist")
    enc, opt = fa_model("mnist", device, True, orthogonal=args.orthogonal)
    xs = {b: torch.rand(b, 1, 28, 28, device=device) for b in args.batches}
    fns = {f"B={b}": functools.partial(fa.fa_step, enc, opt, xs[b]) for b in args.batches}
    times = interleaved_times(fns, args.scale_repeats, device=device, warmup=0)
    base = median(times[f"B={BATCH}"]) if f"B={BATCH}" in times else None
    rows = [[b, 1e3 * median(times[f"B={b}"]), 1e6 * median(times[f"B={b}"]) / b,
             None if base is None else median(times[f"B={b}"]) / base] for b in args.batches]
    out += [f"## 2. Cost growth (MNIST encoder, fused Adam, {args.scale_repeats} repeats)", "",
            "### FA step time against batch size (T = 1)", "",
            markdown_table(["batch", "FA step (ms)", "per example (us)",
                            f"time / time at B={BATCH}"], rows), ""]
    x = xs.get(BATCH, torch.rand(BATCH, 1, 28, 28, device=device))
    fns = {f"T={T}": functools.partial(fa.fa_step, enc, opt, x, T=T) for T in args.Ts}
    times = interleaved_times(fns, args.scale_repeats, device=device, warmup=0)
    base = median(times["T=1"]) if "T=1" in times else None
    rows = [[T, 1e3 * median(times[f"T={T}"]),
             None if base is None else median(times[f"T={T}"]) / base] for T in args.Ts]
    out += [f"### FA step time against T (batch {BATCH}, tau = 1)", "",
            markdown_table(["T", "FA step (ms)", "time / time at T=1"], rows), "",
            "T = 1 uses the shared-start step alone; each further step is a batch-B "
            "E(r), an inner gradient and its double backward.", ""]
    del arch


def section_memory(args, device, out: list[str], archs) -> None:
    rows = []
    for label, dataset in archs:
        arch = models.architecture(dataset)
        x = torch.rand(BATCH, arch.channels, arch.size, arch.size, device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        res = {}
        for name in ("fa-textbook", "fa", "vae"):
            if name.startswith("fa"):
                enc, opt = fa_model(dataset, device, True, orthogonal=False)
                params = list(enc.parameters())
                step = functools.partial(fa.fa_step, enc, opt, x,
                                         shared_start=False if name == "fa-textbook" else None)
            else:
                enc, dec, opt = vae_model(dataset, device, True, orthogonal=False)
                params = list(enc.parameters()) + list(dec.parameters())
                step = functools.partial(baselines.vae_step, enc, dec, opt, x, generator=gen)
            res[name] = memory_of(step, params, device)
            del enc, opt, step
        mib = lambda b: None if b is None else b / 2 ** 20  # noqa: E731
        rows.append([label, mib(res["fa-textbook"][0]), mib(res["fa"][0]), mib(res["vae"][0]),
                     res["fa"][0] / res["vae"][0], mib(res["fa-textbook"][1]),
                     mib(res["fa"][1]), mib(res["vae"][1]),
                     None if res["fa"][1] is None else res["fa"][1] / res["vae"][1]])
    out += [f"## 3. Memory per training step (batch {BATCH})", "",
            markdown_table(["architecture", "FA textbook: saved (MiB)", "FA: saved (MiB)",
                            "VAE: saved (MiB)", "FA / VAE (saved)",
                            "FA textbook: CUDA peak (MiB)", "FA: CUDA peak (MiB)",
                            "VAE: CUDA peak (MiB)", "FA / VAE (CUDA)"], rows), "",
            "Saved: bytes of the distinct tensors saved for backward during one step "
            "(`saved_tensors_hooks`, parameters excluded). CUDA peak: "
            "`torch.cuda.max_memory_allocated` during the step minus what was allocated "
            "before it (weights, gradients, Adam moments); `-` without a GPU.", ""]


def section_flops(args, device, out: list[str], per_step) -> None:
    rows, counted = [], {}
    for dataset in ("mnist", "cifar10", "celeba", "stl10"):
        arch = models.architecture(dataset)
        if arch not in counted:  # celeba and stl10 share Table 9's architecture
            x = torch.rand(BATCH, arch.channels, arch.size, arch.size, device=device)
            enc, opt = fa_model(dataset, device, True, orthogonal=False)
            venc, dec, vopt = vae_model(dataset, device, True, orthogonal=False)
            counted[arch] = (
                flops_of(functools.partial(fa.fa_step, enc, opt, x)),
                flops_of(functools.partial(fa.fa_step, enc, opt, x, shared_start=False)),
                flops_of(functools.partial(baselines.vae_step, venc, dec, vopt, x)))
            del enc, opt, venc, dec, vopt
        fa_f, fa_tb, vae_f = counted[arch]
        steps = TRAINING_SET_SIZES[dataset] // BATCH
        measured = per_step.get(dataset, {}).get("fa+fused") or per_step.get(
            "celeba" if dataset == "stl10" else dataset, {}).get("fa+fused")
        cpu_rate = None if measured is None else fa_f / measured / 1e9
        est = steps * fa_f / (args.assumed_tflops * 1e12)
        rows.append([dataset, fa_tb / 1e9, fa_f / 1e9, vae_f / 1e9, fa_f / vae_f, steps,
                     cpu_rate, None if measured is None else steps * measured / 60,
                     est if device.type != "cuda" else None,
                     steps * measured if device.type == "cuda" and measured else None])
    out += ["## 4. FLOPs per step and time per epoch", "",
            markdown_table(["dataset", "FA textbook GFLOP/step", "FA GFLOP/step",
                            "VAE GFLOP/step", "FA / VAE (FLOPs)", "steps/epoch (B=128)",
                            f"achieved GFLOP/s here ({device.type})",
                            f"min/epoch here ({device.type}, measured step)",
                            f"GPU s/epoch ESTIMATE at {args.assumed_tflops:g} TFLOP/s",
                            "GPU s/epoch measured"], rows), "",
            f"FLOPs: `torch.utils.flop_counter`'s formulas over the aten calls of one step "
            f"(matmuls and convolutions: forward, inner gradient, double backward; the "
            f"optimiser's elementwise work is not counted). The GPU column is "
            f"an ESTIMATE, not a measurement: FA FLOPs per step x steps per epoch / "
            f"{args.assumed_tflops:g} TFLOP/s, an assumed sustained fp32 rate (about half "
            f"of an A100's 19.5 TFLOP/s fp32 peak without TF32); data loading, the per-epoch "
            f"evaluation and kernel-launch overheads are not in it. Epoch sizes: the paper's "
            f"training splits (MNIST 60k, CIFAR-10 50k, CelebA 162,770, STL-10 unlabeled "
            f"100k). celeba and stl10 share Table 9's architecture; their measured step is "
            f"section 1's `celeba / stl10`.", ""]


def section_sampling(args, device, out: list[str]) -> None:
    """Section 5a: VFA sampling vs VAE decoding (MNIST, a batch of ``args.samples``) and,
    per image at batch 1, the four models of Tables 3-6 beside the paper's ratios."""
    from fa_utils import vfa
    n = args.samples
    arch = models.architecture("mnist")
    enc = vfa.make_vfa_encoder("mnist", LATENT, orthogonal=False).to(device).eval()
    settings = vfa.VFASettings()
    dec = models.MirroredDecoder(arch, LATENT).to(device).eval()
    gen = torch.Generator(device=device).manual_seed(0)

    def vfa_sample():
        vfa.sample(enc, n, (arch.channels, arch.size, arch.size), settings=settings,
                   latent_dim=LATENT)

    @torch.no_grad()
    def vae_sample():
        dec(torch.randn(n, LATENT, generator=gen, device=device))

    times = interleaved_times({"vfa": vfa_sample, "vae": vae_sample}, args.scale_repeats,
                              device=device)
    rows = [["VFA sampling (T=1, r_0=0) vs VAE decoding, MNIST", n,
             1e6 * median(times["vfa"]) / n, 1e6 * median(times["vae"]) / n,
             median(times["vfa"]) / median(times["vae"]), paired_ratio(times["vfa"], times["vae"])]]
    out += ["## 5. Sampling, and local vs global FA", "",
            "### VFA sampling vs VAE decoding (a batch)", "",
            markdown_table(["what", "n", "VFA (us/sample)", "VAE (us/sample)", "VFA / VAE",
                            "paired"], rows), "",
            "`fa_utils.vfa.sample` (unconditional, head mu: the shared-start step, E(0) "
            "computed by every call) against "
            "`MirroredDecoder(z)`; target: VFA / VAE <= 1.2.", ""]

    rows = []
    for dataset in args.sample_datasets:
        calls = baselines.sampling_calls(dataset, batch=1, device=device)
        calls["VFA, E(0) each call"] = baselines.sampling_calls(dataset, batch=1, device=device,
                                                               frozen=False)["VFA"]
        t = interleaved_times(calls, args.sample_repeats, device=device, warmup=2)
        reported = paper.SIZES_AND_TIMES[dataset][3]
        pr = lambda a, b: reported[a][1] / reported[b][1]  # noqa: E731 - units cancel
        rows.append([dataset] + [1e3 * median(t[m]) for m in ("VAE", "GAN", "VFA", "VFA-GAN")]
                    + [median(t["VFA"]) / median(t["VAE"]),
                       median(t["VFA, E(0) each call"]) / median(t["VAE"]), pr("VFA", "VAE"),
                       median(t["VFA-GAN"]) / median(t["GAN"]),
                       paired_ratio(t["VFA-GAN"], t["GAN"]),
                       pr("VFA-GAN", "GAN")])
        del calls
    out += [f"### One sample (batch 1, {args.sample_repeats} repeats): the paper's Tables 3-6", "",
            markdown_table(["dataset", "VAE (ms)", "GAN (ms)", "VFA (ms)", "VFA-GAN (ms)",
                            "VFA / VAE", "VFA / VAE, E(0) each call", "paper VFA / VAE",
                            "VFA-GAN / GAN", "VFA-GAN / GAN paired", "paper VFA-GAN / GAN"],
                           rows), "",
            "Networks as the paper's sizes imply (`fa_utils.baselines.paper_models`, fresh "
            "weights; the calls of `baselines.sampling_calls`): VAE and GAN decode z; VFA is "
            "one inner step from r_0 = 0, r_1 = J_E(0)^T (z - E(0)): the transposed Jacobian, "
            "E(0) and its Jacobian built once for the trained encoder (`fa.frozen_start`; "
            "'E(0) each call' times the encoder forward on a batch of one as well); VFA-GAN adds "
            f"the refiner G. Paper: Tables 3-6's sampling times ({paper.SAMPLING_DEVICE}); the "
            "ratios cancel the tables' time units. The notebooks' `results/table0[3-6]*.md` give the "
            "fastest-of-N times of the same calls.", ""]


def local_floor_bytes(model, batch: int) -> int:
    """The least that one layer of Algorithm 2 must save for its backward, largest over
    the layers: its input x_l (the operator's weight gradient), its residual op(r_0) -
    op(x_l) (the transposed product's weight gradient) and its reconstruction error
    x_l - r_hat_l (the quadratic loss), fp32: 4 * batch * (2 * dim(x_l) + dim(x_{l+1}))."""
    dims = [math.prod(s) for s in model.input_shapes] + [model.latent_dim]
    return max(4 * batch * (2 * dims[i] + dims[i + 1]) for i in range(len(model.blocks)))


def arcsinh_call(model, batch: int, device):
    """The arcsinh of every layer's output at ``batch`` (x_{l+1} = arcsinh(a_l), no graph):
    what the local network's activation costs per step (global FA's LeakyReLU is cheap)."""
    shapes = model.input_shapes[1:]
    pre = [torch.randn(batch, *shape, device=device)
           for block, shape in zip(model.blocks, shapes) if block.activation]

    def call():
        with torch.no_grad():
            for a in pre:
                torch.asinh(a)
    return call


def section_local(args, device, out: list[str]) -> None:
    """Section 5b: local vs global FA: peak saved memory (notebook 05's ``compare_memory``)
    beside the floor of what Algorithm 2 must save, and step time (``make_training_step``,
    interleaved) with the local network's arcsinh timed alone."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
    from notebook_code import local_fa  # the memory measure lives in notebook 05
    local = local_fa()
    res = local.compare_memory(args.local_datasets, batch=BATCH, device=device)
    mib = lambda b: None if b is None else b / 2 ** 20  # noqa: E731
    rows = []
    for label, g, l in res:
        dataset = label.split(" / ")[0]
        fns = {}
        for method in ("global", "local"):
            fns[method], model = local.make_training_step(dataset, method, batch=BATCH,
                                                          latent_dim=LATENT, device=device)
        floor = local_floor_bytes(model, BATCH)
        fns["arcsinh"] = arcsinh_call(model, BATCH, device)
        t = interleaved_times(fns, args.local_repeats, device=device)
        gm = g.saved_peak_bytes
        rows.append([label, mib(gm), mib(l.saved_peak_bytes),
                     None if not gm else l.saved_peak_bytes / gm,
                     None if not gm else floor / gm,
                     mib(g.cuda_step_bytes), mib(l.cuda_step_bytes),
                     1e3 * median(t["global"]), 1e3 * median(t["local"]),
                     median(t["local"]) / median(t["global"]),
                     paired_ratio(t["local"], t["global"]), 1e3 * median(t["arcsinh"]),
                     (median(t["local"]) - median(t["arcsinh"])) / median(t["global"])])
        del fns
    out += [f"### Local vs global FA (batch {BATCH}, {args.local_repeats} repeats)", "",
            markdown_table(["architecture", "global: peak saved (MiB)",
                            "local: peak saved (MiB)", "local / global (memory)",
                            "floor / global", "global: CUDA step (MiB)",
                            "local: CUDA step (MiB)", "global step (ms)", "local step (ms)",
                            "local / global (time)", "paired (time)", "local's arcsinh (ms)",
                            "local without arcsinh / global"], rows), "",
            "Memory from notebook 05's `compare_memory` (its definitions: peak of live "
            "tensors saved for backward; CUDA: the step's peak above what was allocated "
            "before). Floor: the largest layer's input, residual and reconstruction error "
            "(`local_floor_bytes`), what one layer's backward cannot do without; below it "
            "only recomputation in the backward (more time) would go. Times: the same two "
            "steps (notebook 05's `make_training_step`: global `fa.fa_step` on the encoder, local "
            "`local.local_step` on `LocalFANet`, for-loop Adam on both) interleaved with "
            "the arcsinh of every local layer's output alone (`arcsinh_call`; global FA's "
            "network has LeakyReLU instead).", ""]


def section_hooks(args, device, out: list[str]) -> None:
    """Section 5: sampling and local FA; a part that fails is reported, not fatal."""
    for part in (section_sampling, section_local):
        try:
            part(args, device, out)
        except Exception as exc:  # noqa: BLE001 - the report says why
            out += [f"- {part.__name__}: not measured ({type(exc).__name__}: "
                    f"{str(exc)[:160]})", ""]


# --------------------------------------------------------------------------------------
# 6. Images per second: training and FID features
# --------------------------------------------------------------------------------------


def random_fid_inception(device: torch.device) -> torch.nn.Module:
    """pytorch-fid's FID Inception-v3 (pool3, 2048-d) built without its weights file: the
    same network and input path as :func:`fa_utils.fid.inception_feature` (resize to 299,
    scale to [-1, 1]), with untrained weights. Its *speed* is the real extractor's (the
    cost of a forward pass does not depend on the weights' values); its features mean
    nothing. For timing only, when ``FA_INCEPTION_WEIGHTS`` / the hub cache is absent."""
    from unittest import mock

    import pytorch_fid.inception as pfi
    from torchvision.models.inception import Inception3

    from fa_utils import fid
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(Inception3, "load_state_dict", lambda self, *a, **k: None):
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[fid.INCEPTION_DIM]])
    return model.eval().to(device)


def _fit_throughput(args, device) -> tuple[list[list], str]:
    """Images per second of ``train.fit`` on the real MNIST sample against the bare
    ``fa.fa_step`` loop on one resident batch (same encoder, fused Adam)."""
    from fa_utils import config, experiments
    steps = args.fit_steps
    t0 = time.perf_counter()
    cfg = config.make_config("fa", "quick", data_source="sample", n_train=BATCH * steps,
                             batch_size=BATCH, device=str(device))
    data = experiments.load_image_data(cfg, verbose=False)
    load_s = time.perf_counter() - t0

    def model():
        enc, opt = fa_model("mnist", device, True, orthogonal=args.orthogonal)
        return enc, opt

    def fit_call(dataset, enc, opt):
        gen = train.seeded_generator(1)
        train.fit(train.images_only(functools.partial(fa.fa_step, enc, opt, generator=gen)),
                  modules={"encoder": enc}, optimizers={"adam": opt}, dataset=dataset,
                  batch_size=BATCH, epochs=1, seed=0, config={"bench": "fit"}, generator=gen,
                  device=device, checkpoint=None, stop_after=steps, progress=False)

    x = data.test_x[:BATCH].to(device)
    bare_enc, bare_opt = model()

    def bare():
        for _ in range(steps):
            fa.fa_step(bare_enc, bare_opt, x)

    fns = {"fit": functools.partial(fit_call, data.train, *model()), "fa_step loop": bare}
    t = interleaved_times(fns, args.fit_repeats, device=device)
    rows = [[name, steps, BATCH * steps / median(t[name]),
             median(t[name]) / median(t["fa_step loop"]),
             paired_ratio(t[name], t["fa_step loop"])] for name in fns]
    note = (f"`fa_utils.train.fit` (one epoch of {steps} steps of {BATCH}, `checkpoint=None`: "
            f"nothing written; no eval, no progress bar) on the real MNIST sample "
            f"(`experiments.load_image_data`, `make_config('fa', 'quick', "
            f"data_source='sample', n_train={BATCH * steps})`: {load_s:.2f} s to load, once, "
            f"not in the rates), batches through its DataLoader (per-item collate). `fa_step "
            f"loop`: the same number of steps on one held-out batch already on the device. {args.fit_repeats} repeats.")
    return rows, note


def _fid_throughput(args, device) -> tuple[list[list], str]:
    """Images per second of the FID feature extractors on real MNIST images."""
    from fa_utils import data as data_mod
    from fa_utils import fid
    x_all, _ = data_mod.mnist_sample(0)
    try:
        weights = fid.inception_weights_path()
    except fid.InceptionUnavailable:
        weights = None
    n_inc = args.fid_inception_n
    xi = x_all[:n_inc]
    if weights is not None:
        inc_label = f"Inception-v3 pool3 (pytorch-fid, weights {weights.name})"
        net = fid.inception_feature(device=device)

        def inception():
            with torch.inference_mode():
                net(xi)
    else:
        inc_label = "Inception-v3 pool3 (pytorch-fid's network, UNTRAINED weights: speed only)"
        net = random_fid_inception(device)

        def inception():
            with torch.inference_mode():
                net(fid.to_inception_input(xi).to(device))[0].reshape(n_inc, -1).double().cpu()

    judge = fid.judge_feature(fid.make_judge(1, 10).to(device))
    n_clf = args.fid_classifier_n
    xc = x_all[:n_clf]

    def judge_features():
        with torch.inference_mode():
            judge(xc)

    fns = {"inception": inception, "classifier": judge_features}
    t = interleaved_times(fns, args.fid_repeats, device=device)
    used = ("Inception (comparable to the paper's FID when N >= 2048)" if weights is not None
            else "the judge's features (`fid.frechet_feature`: labelled 'judge-128', "
                 "NOT comparable to the paper's FID); Inception weights absent")
    rows = [[inc_label, n_inc, n_inc / median(t["inception"]),
             "yes" if weights is not None else "no"],
            ["judge-128 (`fid.make_judge`, the offline fallback)", n_clf,
             n_clf / median(t["classifier"]), "yes" if weights is None else "no"]]
    note = (f"Real MNIST sample digits (28x28, repeated to 3 channels and resized to 299 by "
            f"pytorch-fid's network), {args.fid_repeats} repeats, one batch per call. "
            f"`fa_utils.fid` on this machine uses: {used}. The paper's FID needs "
            f"{paper.FID_IMAGES:,} real + {paper.FID_IMAGES:,} generated images per number: "
            f"at the Inception rate above that is "
            f"{2 * paper.FID_IMAGES / (n_inc / median(t['inception'])) / 60:.1f} min here.")
    return rows, note


def section_throughput(args, device, out: list[str], per_step) -> None:
    """Section 6: images per second of training (per step and end to end) and of FID
    feature extraction."""
    out += ["## 6. Images per second", ""]
    rows = []
    for label, dataset in ARCHS:
        m = per_step.get(dataset)
        if not m:
            continue
        rows.append([label] + [BATCH / m[k] if k in m else None
                               for k in ("fa-textbook", "fa", "fa+fused", "vae+fused")])
    if rows:
        out += ["### Training step (from section 1's medians, batch 128)", "",
                markdown_table(["architecture", "FA textbook (img/s)", "FA (img/s)",
                                "FA, fused Adam (img/s)", "VAE, fused Adam (img/s)"], rows),
                "", "B / median step time; `FA, fused Adam` is the step `fit` runs.", ""]
    else:
        out += ["- training step: run section 1 in the same run for these numbers", ""]
    for title, part in (("`fit` end to end (MNIST encoder, batch 128)", _fit_throughput),
                        ("FID feature extraction", _fid_throughput)):
        try:
            prows, note = part(args, device)
        except Exception as exc:  # noqa: BLE001
            out += [f"- {title}: not measured ({type(exc).__name__}: {str(exc)[:160]})", ""]
            continue
        cols = (["what", "steps per call", "images/s", "time / fa_step loop", "paired"]
                if part is _fit_throughput else
                ["extractor", "images per call", "images/s", "what fa_utils.fid uses here"])
        out += [f"### {title}", "", markdown_table(cols, prows), "", note, ""]


# --------------------------------------------------------------------------------------
# 7. Precision drift
# --------------------------------------------------------------------------------------

#: A reduced-precision setting is kept only if it moves the FA gradient and r by at most
#: this much (relative L2 distance to the fp64 reference) on every architecture measured.
DRIFT_TOLERANCE = 1e-3


class _TF32:
    """Set ``torch.backends.cuda.matmul.allow_tf32`` and ``cudnn.allow_tf32`` inside the
    context (None: leave them as they are), restoring them after."""

    def __init__(self, matmul: Optional[bool], cudnn: Optional[bool]):
        self.want = (matmul, cudnn)

    def __enter__(self):
        self.before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        if self.want[0] is not None:
            torch.backends.cuda.matmul.allow_tf32 = self.want[0]
        if self.want[1] is not None:
            torch.backends.cudnn.allow_tf32 = self.want[1]

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.before


def fa_gradient(encoder: torch.nn.Module, x: torch.Tensor,
                autocast_dtype: Optional[torch.dtype] = None
                ) -> tuple[list[torch.Tensor], torch.Tensor, float]:
    """The FA step's gradient on one batch, without the optimiser: ``fa.fa_loss``
    (T = 1, r_0 = 0, the shared-start step), optionally under ``torch.autocast`` with
    ``autocast_dtype``, then backward.

    Shapes: x (B, C, H, W). Returns (the gradient of every encoder parameter, as float64
    copies in ``encoder.parameters()`` order; the reconstruction r (B, C, H, W) float64;
    the loss C as a float)."""
    encoder.zero_grad(set_to_none=True)
    if autocast_dtype is None:
        loss, image = fa.fa_loss(encoder, x)
    else:
        with torch.autocast(x.device.type, dtype=autocast_dtype):
            loss, image = fa.fa_loss(encoder, x)
    loss.float().backward()
    grads = [p.grad.detach().double().clone() for p in encoder.parameters()]
    return grads, image.detach().double(), float(loss.detach())


def relative_drift(a: list[torch.Tensor] | torch.Tensor,
                   ref: list[torch.Tensor] | torch.Tensor) -> float:
    """||a - ref|| / ||ref|| (L2 over all entries of all tensors; dimensionless)."""
    a = [a] if isinstance(a, torch.Tensor) else a
    ref = [ref] if isinstance(ref, torch.Tensor) else ref
    num = sum(float((u.double() - v.double()).pow(2).sum()) for u, v in zip(a, ref))
    den = sum(float(v.double().pow(2).sum()) for v in ref)
    return (num / den) ** 0.5 if den > 0 else float("nan")


def precision_modes(device: torch.device) -> dict[str, tuple[Optional[torch.dtype], _TF32]]:
    """name -> (autocast dtype, TF32 setting) of the precisions measured on ``device``."""
    if device.type != "cuda":
        return {"fp32": (None, _TF32(None, None)),
                "bf16 autocast": (torch.bfloat16, _TF32(None, None))}
    default = (f"torch default (TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
               f"cuDNN {torch.backends.cudnn.allow_tf32})")
    return {"fp32 (TF32 off)": (None, _TF32(False, False)),
            "TF32 (matmul + cuDNN)": (None, _TF32(True, True)),
            default: (None, _TF32(None, None)),
            "bf16 autocast (TF32 off)": (torch.bfloat16, _TF32(False, False))}


def section_precision(args, device, out: list[str]) -> None:
    """Section 7: drift of the FA gradient and of r in reduced precision, vs fp64."""
    import copy
    modes = precision_modes(device)
    rows, worst = [], {m: 0.0 for m in modes}
    for label, dataset in ARCHS:
        if dataset not in args.precision_datasets:
            continue
        arch = models.architecture(dataset)
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(args.precision_batch, arch.channels, arch.size, arch.size,
                       device=device, generator=g)
        enc, _ = fa_model(dataset, device, True, orthogonal=args.orthogonal)
        ref_enc = copy.deepcopy(enc).double()
        with _TF32(False, False):
            g_ref, r_ref, loss_ref = fa_gradient(ref_enc, x.double())
        del ref_enc
        fns = {}
        for name, (dtype, tf32) in modes.items():
            with tf32:
                grads, r, loss = fa_gradient(enc, x, dtype)
            weights = [i for i, p in enumerate(enc.parameters()) if p.dim() > 1]
            dg, dr = relative_drift(grads, g_ref), relative_drift(r, r_ref)
            worst[name] = max(worst[name], dg, dr)
            rows.append([label, name, dg, max(relative_drift(grads[i], g_ref[i]) for i in weights),
                         dr, abs(loss - loss_ref) / abs(loss_ref)])

            def timed(dtype=dtype, tf32=tf32):
                with tf32:
                    fa_gradient(enc, x, dtype)
            fns[name] = timed
        t = interleaved_times(fns, args.precision_repeats, device=device)
        base = median(t[next(iter(modes))])
        for row, name in zip(rows[-len(modes):], modes):
            row += [1e3 * median(t[name]), median(t[name]) / base]
        del enc, fns
    kept = [m for m in list(modes)[1:] if worst[m] <= DRIFT_TOLERANCE]
    keep = kept[0] if kept else list(modes)[0]
    verdict = (f"**Kept: {keep}.** " + ("; ".join(
        f"{m}: largest drift {worst[m]:.1e} {'<=' if worst[m] <= DRIFT_TOLERANCE else '>'} "
        f"{DRIFT_TOLERANCE:g}" for m in list(modes)[1:])) + ".")
    out += [f"## 7. Precision drift of the FA step (batch {args.precision_batch})", "",
            markdown_table(["architecture", "precision", "gradient drift",
                            "worst weight tensor", "r drift", "loss drift",
                            "loss + backward (ms)", f"time / {list(modes)[0]}"], rows), "",
            "Drift: ||a - a_fp64|| / ||a_fp64|| against the same step in float64 (same "
            "weights and batch): the outer loss gradient wrt all encoder parameters "
            "(`gradient`; `worst weight tensor`: the largest per-tensor drift over the "
            "weight matrices and kernels), the reconstruction r (T = 1, r_0 = 0), and the "
            "loss C. Times: `fa.fa_loss` + backward, no optimiser, "
            f"{args.precision_repeats} repeats interleaved. Rule: a reduced precision is kept "
            f"only if every drift is <= {DRIFT_TOLERANCE:g} on every architecture measured "
            f"(one bf16 rounding is 2^-8 = 3.9e-3 relative, one TF32 rounding 2^-11 = "
            f"4.9e-4); otherwise fp32. {verdict}", ""]


# --------------------------------------------------------------------------------------
# 8. The authors' procedure, side by side
# --------------------------------------------------------------------------------------


def section_authors(args, device, out: list[str]) -> None:
    """Section 8: the authors' VFA step and VFA-GAN batch against ours, and the FA step
    against a plain training step (:mod:`benchmarks.vs_authors`)."""
    from benchmarks import vs_authors
    out += ["## 8. The authors' training procedure against ours", "",
            *vs_authors.report(args.vs_datasets, args.vs_repeats, device)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the default: about 13 min measured on 2 CPU cores")
    mode.add_argument("--full", action="store_true", help="more repeats and sizes (a GPU)")
    mode.add_argument("--smoke", action="store_true",
                      help="one repeat at the smallest sizes: checks that every section runs "
                           "(about 1-2 min on 2 CPU cores); its numbers mean little")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--assumed-tflops", type=float, default=10.0,
                    help="sustained fp32 TFLOP/s for the GPU-time estimate (default 10)")
    ap.add_argument("--orthogonal", action="store_true",
                    help="orthogonal init as in training (slow QR of the 4096-wide layers on "
                         "a CPU; the step's cost does not depend on the weights' values)")
    ap.add_argument("--threads", default="auto",
                    help="torch.set_num_threads: a number, 'torch' (torch's default), or "
                         "'auto' (default): 1 on a CPU whose 1-minute load average exceeds "
                         "its core count, else torch's default. On a shared CPU one thread "
                         "is faster and far steadier: a parallel region waits for its "
                         "slowest, descheduled thread (docs/choices.md section 1)")
    ap.add_argument("--sections", default=ALL_SECTIONS, help="comma-separated subset")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    device = train.resolve_device(args.device)
    threads_note = "torch's default"
    if args.threads == "auto":
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if device.type == "cpu" and load > (os.cpu_count() or 1):
            torch.set_num_threads(1)
            threads_note = f"1 (auto: load average {load:.1f} > {os.cpu_count()} cores)"
    elif args.threads != "torch":
        torch.set_num_threads(int(args.threads))
        threads_note = f"{int(args.threads)} (--threads)"
    all4 = ("mnist", "cifar10", "celeba", "stl10")
    if args.full:
        args.repeats, args.repeats_64, args.scale_repeats = 15, 10, 7
        args.batches, args.Ts, args.samples = (32, 64, 128, 256, 512, 1024), (1, 2, 4, 8), 1000
        args.sample_datasets, args.sample_repeats = all4, 50
        args.local_datasets, args.local_repeats = all4, 7
        args.fit_steps, args.fit_repeats = 50, 5
        args.fid_inception_n, args.fid_classifier_n, args.fid_repeats = 500, 5000, 5
        args.precision_datasets, args.precision_batch, args.precision_repeats = all4, 128, 7
        args.vs_datasets, args.vs_repeats = ("mnist", "cifar10"), 8
    elif args.smoke:
        args.repeats, args.repeats_64, args.scale_repeats = 1, 1, 1
        args.batches, args.Ts, args.samples = (32, 128), (1, 2), 50
        args.sample_datasets, args.sample_repeats = ("mnist",), 2
        args.local_datasets, args.local_repeats = ("mnist",), 1
        args.fit_steps, args.fit_repeats = 2, 1
        args.fid_inception_n, args.fid_classifier_n, args.fid_repeats = 2, 100, 1
        args.precision_datasets, args.precision_batch, args.precision_repeats = ("mnist",), 16, 1
        args.vs_datasets, args.vs_repeats = ("mnist",), 1
    else:
        args.repeats, args.repeats_64, args.scale_repeats = 5, 3, 3
        args.batches, args.Ts, args.samples = (32, 128, 512), (1, 2, 4, 8), 500
        args.sample_datasets, args.sample_repeats = all4, 15
        args.local_datasets, args.local_repeats = ("mnist", "cifar10"), 3
        args.fit_steps, args.fit_repeats = 8, 5
        args.fid_inception_n, args.fid_classifier_n, args.fid_repeats = 16, 1000, 3
        args.precision_datasets, args.precision_batch, args.precision_repeats = (
            ("mnist", "cifar10"), 64, 3)
        args.vs_datasets, args.vs_repeats = ("mnist", "cifar10"), 5
    sections = {s.strip() for s in args.sections.split(",")}
    t_start = time.perf_counter()
    mode_name = "full" if args.full else "smoke" if args.smoke else "quick"
    out = [f"# Benchmarks: the FA step ({mode_name})", "",
           *environment(device), f"- threads: {threads_note}", ""]
    torch.manual_seed(0)
    per_step: dict = {}
    steps = [("1", lambda: per_step.update(section_ratio(args, device, out, ARCHS))),
             ("2", lambda: section_scaling(args, device, out)),
             ("3", lambda: section_memory(args, device, out, ARCHS)),
             ("4", lambda: section_flops(args, device, out, per_step)),
             ("5", lambda: section_hooks(args, device, out)),
             ("6", lambda: section_throughput(args, device, out, per_step)),
             ("7", lambda: section_precision(args, device, out)),
             ("8", lambda: section_authors(args, device, out))]
    for key, run in steps:
        if key in sections:
            t0 = time.perf_counter()
            print(f"section {key} ...", file=sys.stderr, flush=True)
            run()
            print(f"section {key}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            if not args.no_write:  # a run cut short (a time limit) keeps what it measured
                (results_dir() / "benchmarks.md").write_text(
                    "\n".join(out + [f"_Partial: sections up to {key} of {args.sections}._"])
                    + "\n")
    load = (", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg")
            else "n/a")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    flags = ("" if mode_name == "quick" else f" --{mode_name}") + (
        "" if args.device == "auto" else f" --device {args.device}") + (
        "" if args.sections == ALL_SECTIONS else f" --sections {args.sections}") + (
        f" --threads {args.threads}" if args.threads != "auto" else "")
    out += [f"_`python -m benchmarks.run{flags}`: "
            f"{time.perf_counter() - t_start:.0f} s at {stamp}; load average at the end "
            f"{load}._"]
    text = "\n".join(out) + "\n"
    print(text)
    if not args.no_write:
        path = results_dir() / "benchmarks.md"
        path.write_text(text)
        print(f"written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
