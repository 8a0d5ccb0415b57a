"""The FA training step measured against a VAE step of the same encoder, in one run.

    python -m benchmarks.run            # --quick (default): <= 10 min on 2 CPU cores
    python -m benchmarks.run --full     # more repeats, batch up to 1024; meant for a GPU

Prints a markdown report and writes it to ``results/benchmarks.md``
(``fa_utils.outputs.results_dir()``; ``FA_OUTPUT_ROOT`` redirects it). Every number is a
median or a ratio of medians measured in this run, the contenders interleaved repeat by
repeat (the order rotating), so that a machine shared with other jobs slows all of them
alike; the paired ratio is the median over repeats of (FA time / VAE time) in the same
repeat. Inputs are random images; the networks are Tables 7-9's (VAE: the encoder with
``mu``/``logvar`` heads and :class:`fa_utils.models.MirroredDecoder`).

Sections: (1) FA step / VAE step per architecture, with the textbook FA step, the
optimised one, and both optimisers (for-loop and fused Adam) and memory formats;
(2) FA step time against batch size and against T (MNIST encoder); (3) bytes saved for
backward per step (``torch.autograd.graph.saved_tensors_hooks``) and CUDA peak memory when
a GPU is present; (4) FLOPs per step (``torch.utils.flop_counter``) and the time per epoch
on one GPU *estimated* from them (labelled, unmeasured without a GPU); (5) VFA sampling
vs VAE decoding and local vs global FA memory, when ``fa_utils.vfa`` / ``fa_utils.local``
provide them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import statistics
import sys
import time
from typing import Callable, Optional

import torch

from fa_utils import models, train
from fa_utils.outputs import markdown_table, results_dir

#: (label, dataset of the architecture, training-set size of the paper's split)
ARCHS = [("mnist", "mnist", 60_000), ("cifar10", "cifar10", 50_000),
         ("celeba / stl10", "celeba", 162_770)]  # Table 9: one architecture for both
EPOCH_SIZES = {"mnist": 60_000, "cifar10": 50_000, "celeba": 162_770, "stl10": 100_000}
LATENT = 128
BATCH = 128
ADAM = dict(lr=1e-4, betas=(0.5, 0.999))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in rotating order, ``repeats`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(repeats):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            _sync(device)
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


# --------------------------------------------------------------------------------------
# The contenders
# --------------------------------------------------------------------------------------


def fa_model(dataset: str, device, fused: bool, channels_last: bool = False, orthogonal=True):
    enc = (models.make_encoder(dataset, {"z": LATENT}) if orthogonal
           else models.Encoder(models.architecture(dataset), {"z": LATENT})).to(device)
    if channels_last:
        enc = enc.to(memory_format=torch.channels_last)
    return enc, train.make_adam(enc.parameters(), fused=fused, **ADAM)


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
    opt = train.make_adam(list(enc.parameters()) + list(dec.parameters()), fused=fused, **ADAM)
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
            fns[v] = functools.partial(train.fa_step, enc, opt, xx,
                                       shared_start=False if v == "fa-textbook" else None)
        else:
            enc, dec, opt = vae_model(dataset, device, fused, cl, orthogonal)
            fns[v] = functools.partial(train.vae_step, enc, dec, opt, xx, generator=gen)
    return fns


# --------------------------------------------------------------------------------------
# Memory and FLOPs
# --------------------------------------------------------------------------------------


class SavedBytes:
    """Bytes of the distinct storages saved for backward inside the context (parameters
    excluded): the activation memory a step holds for its backward."""

    def __init__(self, exclude):
        self.exclude = {p.untyped_storage().data_ptr() for p in exclude}
        self.seen: dict[int, int] = {}

    def _pack(self, t):
        try:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in self.exclude:
                self.seen[ptr] = max(self.seen.get(ptr, 0), st.nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def memory_of(step: Callable[[], object], params, device) -> tuple[int, Optional[int]]:
    """(saved-for-backward bytes, CUDA peak bytes of the step above what was allocated
    before it, or None)."""
    step()  # warm-up: optimiser state exists before measuring
    _sync(device)
    before = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    with SavedBytes(params) as meter:
        step()
    _sync(device)
    peak = None if before is None else torch.cuda.max_memory_allocated(device) - before
    return meter.total, peak


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
        lines.append(f"- load average at start (1, 5, 15 min): "
                     + ", ".join(f"{v:.1f}" for v in os.getloadavg()))
    return lines


def section_ratio(args, device, out: list[str], archs) -> dict[str, dict[str, float]]:
    all_variants = ["fa-textbook", "fa", "vae", "fa+fused", "vae+fused", "fa+fused+cl",
                    "vae+fused+cl"]
    rows, per_step = [], {}
    for label, dataset, _ in archs:
        arch = models.architecture(dataset)
        x = torch.rand(BATCH, arch.channels, arch.size, arch.size, device=device,
                       generator=torch.Generator(device=device).manual_seed(0))
        reps = args.repeats if arch.size < 64 else args.repeats_64
        # quick: channels_last is measured on the 28/32-pixel architectures only
        variants = all_variants if args.full or arch.size < 64 else all_variants[:5]
        t0 = time.perf_counter()
        fns = contenders(dataset, x, device, variants=variants, orthogonal=args.orthogonal)
        times = interleaved(fns, reps, device)
        per_step[dataset] = {k: med(v) for k, v in times.items()}
        row = [label, reps] + [1e3 * med(times[v]) if v in times else None
                               for v in all_variants]
        row += [med(times["fa-textbook"]) / med(times["vae"]),
                med(times["fa"]) / med(times["vae"]), paired(times["fa"], times["vae"]),
                med(times["fa+fused"]) / med(times["vae+fused"]),
                paired(times["fa+fused"], times["vae+fused"])]
        if "fa+fused+cl" in times:
            row += [med(times["fa+fused+cl"]) / med(times["vae+fused+cl"]),
                    med(times["fa+fused+cl"]) / med(times["fa+fused"])]
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
            "step from r_0 = 0 by `fa.shared_start_step` (E(0) on one example, J^T applied "
            "to the B residuals). `vae`: `vae_step`, same encoder with mu/logvar heads + "
            "MirroredDecoder. `+fused`: `train.make_adam` (fused Adam); otherwise "
            "`torch.optim.Adam`'s default (for-loop on a CPU). `+cl`: channels_last "
            "weights and inputs (`-`: not measured at --quick). Paired: the median over "
            "repeats of the ratio within one repeat. Goal of issue 5: FA / VAE <= 1.2.", ""]
    return per_step


def section_scaling(args, device, out: list[str]) -> None:
    arch = models.architecture("mnist")
    enc, opt = fa_model("mnist", device, True, orthogonal=args.orthogonal)
    xs = {b: torch.rand(b, 1, 28, 28, device=device) for b in args.batches}
    fns = {f"B={b}": functools.partial(train.fa_step, enc, opt, xs[b]) for b in args.batches}
    times = interleaved(fns, args.scale_repeats, device, warmup=0)
    base = med(times[f"B={BATCH}"]) if f"B={BATCH}" in times else None
    rows = [[b, 1e3 * med(times[f"B={b}"]), 1e6 * med(times[f"B={b}"]) / b,
             None if base is None else med(times[f"B={b}"]) / base] for b in args.batches]
    out += [f"## 2. Cost growth (MNIST encoder, fused Adam, {args.scale_repeats} repeats)", "",
            "### FA step time against batch size (T = 1)", "",
            markdown_table(["batch", "FA step (ms)", "per example (us)",
                            f"time / time at B={BATCH}"], rows), ""]
    x = xs.get(BATCH, torch.rand(BATCH, 1, 28, 28, device=device))
    fns = {f"T={T}": functools.partial(train.fa_step, enc, opt, x, T=T) for T in args.Ts}
    times = interleaved(fns, args.scale_repeats, device, warmup=0)
    base = med(times["T=1"]) if "T=1" in times else None
    rows = [[T, 1e3 * med(times[f"T={T}"]),
             None if base is None else med(times[f"T={T}"]) / base] for T in args.Ts]
    out += [f"### FA step time against T (batch {BATCH}, tau = 1)", "",
            markdown_table(["T", "FA step (ms)", "time / time at T=1"], rows), "",
            "T = 1 uses the shared-start step alone; each further step is a batch-B "
            "E(r), an inner gradient and its double backward.", ""]
    del arch


def section_memory(args, device, out: list[str], archs) -> None:
    rows = []
    for label, dataset, _ in archs:
        arch = models.architecture(dataset)
        x = torch.rand(BATCH, arch.channels, arch.size, arch.size, device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        res = {}
        for name in ("fa-textbook", "fa", "vae"):
            if name.startswith("fa"):
                enc, opt = fa_model(dataset, device, True, orthogonal=False)
                params = list(enc.parameters())
                step = functools.partial(train.fa_step, enc, opt, x,
                                         shared_start=False if name == "fa-textbook" else None)
            else:
                enc, dec, opt = vae_model(dataset, device, True, orthogonal=False)
                params = list(enc.parameters()) + list(dec.parameters())
                step = functools.partial(train.vae_step, enc, dec, opt, x, generator=gen)
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
                flops_of(functools.partial(train.fa_step, enc, opt, x)),
                flops_of(functools.partial(train.fa_step, enc, opt, x, shared_start=False)),
                flops_of(functools.partial(train.vae_step, venc, dec, vopt, x)))
            del enc, opt, venc, dec, vopt
        fa_f, fa_tb, vae_f = counted[arch]
        steps = EPOCH_SIZES[dataset] // BATCH
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


def section_hooks(args, device, out: list[str]) -> None:
    rows = []
    try:
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

        times = interleaved({"vfa": vfa_sample, "vae": vae_sample}, args.scale_repeats, device)
        rows.append(["VFA sampling (T=1, r_0=0) vs VAE decoding, MNIST", n,
                     1e6 * med(times["vfa"]) / n, 1e6 * med(times["vae"]) / n,
                     med(times["vfa"]) / med(times["vae"]), "fa_utils.vfa.sample"])
    except Exception as exc:  # noqa: BLE001 - the row says why
        rows.append(["VFA sampling vs VAE decoding", None, None, None, None,
                     f"not measured yet: needs fa_utils.vfa ({type(exc).__name__}: "
                     f"{str(exc)[:80]})"])
    out += ["## 5. Sampling and local FA (when the modules exist)", "",
            markdown_table(["what", "n", "VFA (us/sample)", "VAE (us/sample)", "VFA / VAE",
                            "source"], rows), ""]
    try:
        from fa_utils import local
        datasets = ["mnist"] if not args.full else ["mnist", "cifar10", "celeba", "stl10"]
        res = local.compare_memory(datasets, batch=BATCH, device=device)
        mib = lambda b: None if b is None else b / 2 ** 20  # noqa: E731
        lrows = [[label, mib(g.saved_peak_bytes), mib(l.saved_peak_bytes),
                  None if not g.saved_peak_bytes else l.saved_peak_bytes / g.saved_peak_bytes,
                  mib(g.cuda_step_bytes), mib(l.cuda_step_bytes)] for label, g, l in res]
        out += [markdown_table(["local vs global FA memory", "global: peak saved (MiB)",
                                "local: peak saved (MiB)", "local / global",
                                "global: CUDA step (MiB)", "local: CUDA step (MiB)"], lrows),
                "", "From `fa_utils.local.compare_memory` (its own definitions; global FA "
                "there is `train.fa_step`).", ""]
    except Exception as exc:  # noqa: BLE001
        out += [markdown_table(["local vs global FA memory", "status"],
                               [["-", f"not measured yet: needs fa_utils.local "
                                      f"({type(exc).__name__}: {str(exc)[:80]})"]]), ""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the default: <= 10 min on 2 CPU cores")
    mode.add_argument("--full", action="store_true", help="more repeats and sizes (a GPU)")
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
                         "is faster and far steadier (measured here: FA step 0.48 s at 1 "
                         "thread vs 2.07 s at 2, load ~4 on 2 cores): a parallel region "
                         "waits for its slowest, descheduled thread")
    ap.add_argument("--sections", default="1,2,3,4,5", help="comma-separated subset")
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
    if args.full:
        args.repeats, args.repeats_64, args.scale_repeats = 15, 10, 7
        args.batches, args.Ts, args.samples = (32, 64, 128, 256, 512, 1024), (1, 2, 4, 8), 1000
    else:
        args.repeats, args.repeats_64, args.scale_repeats = 5, 3, 3
        args.batches, args.Ts, args.samples = (32, 128, 512), (1, 2, 4, 8), 500
    sections = {s.strip() for s in args.sections.split(",")}
    t_start = time.perf_counter()
    out = [f"# Benchmarks: the FA step ({'full' if args.full else 'quick'})", "",
           *environment(device), f"- threads: {threads_note}", ""]
    torch.manual_seed(0)
    per_step: dict = {}
    steps = [("1", lambda: per_step.update(section_ratio(args, device, out, ARCHS))),
             ("2", lambda: section_scaling(args, device, out)),
             ("3", lambda: section_memory(args, device, out, ARCHS)),
             ("4", lambda: section_flops(args, device, out, per_step)),
             ("5", lambda: section_hooks(args, device, out))]
    for key, run in steps:
        if key in sections:
            t0 = time.perf_counter()
            print(f"section {key} ...", file=sys.stderr, flush=True)
            run()
            print(f"section {key}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    load = (", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg")
            else "n/a")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    flags = (" --full" if args.full else "") + (f" --threads {args.threads}"
                                                 if args.threads != "auto" else "")
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
