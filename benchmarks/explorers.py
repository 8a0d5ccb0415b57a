"""Latency of every explorer interaction (target: at most 0.5 s each on 2 CPU cores).

    python -m benchmarks.explorers                   # quick-profile checkpoints (the main job's)
    python -m benchmarks.explorers --profile smoke   # anything, fast

Loads the models as notebook 07 does (its cell ``exploration-models``), builds
each explorer's widget (no front end needed), then times a fixed, seeded sequence of
interactions from the control change to the new PNG in the widget (callback, method, drawing,
PNG encoding; not the browser's transfer and paint). Prints a table and writes
``results/explorers_latency.md``.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
from pathlib import Path

import nbformat
import torch

from fa_utils import experiments, explorers
from fa_utils.metrics import Stopwatch
from fa_utils.outputs import markdown_table, results_dir

TARGET_S = 0.5
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "07_explore.ipynb"


def exploration_models(profile, device):
    """Notebook 07's models: its cell ``exploration-models``, run here."""
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    source = next(c.source for c in cells if c.get("id") == "exploration-models")
    namespace = {}
    exec(compile(source, f"{NOTEBOOK.name}#exploration-models", "exec"), namespace)
    return namespace["exploration_models"](profile, device=device, progress=sys.stderr.isatty())


def interactions(m, rng: random.Random):
    """(explorer, [(description, zero-argument action)]) for every explorer."""
    x, y, shape = m.test_x, m.test_y, m.shape
    kw = dict(T=m.fa_cfg.T, tau=m.fa_cfg.tau, r_init=m.fa_cfg.r_init, squash=m.fa_cfg.squash)
    out = []
    e = explorers.InnerOptimisation(m.fa, x, **kw)
    acts = [("step", lambda v=v, e=e: e.set(step=v)) for v in (0, 1, 0, 1)]
    acts += [("T", lambda v=v, e=e: e.set(T=v)) for v in (8, 3, 12)]
    acts += [("step", lambda v=v, e=e: e.set(step=v)) for v in (0, 5, 12)]
    acts += [("image", lambda v=v, e=e: e.set(image=v)) for v in (3, 7, 11)]
    acts += [("tau", lambda v=v, e=e: e.set(tau=v)) for v in (0.5, 2.0)]
    acts += [("r_init", lambda v=v, e=e: e.set(r_init=v)) for v in ("uniform", "zeros")]
    out.append((e, acts))
    encode2, decode2 = experiments.fa_codec(m.fa2, shape, **kw)
    e = explorers.LatentPad(decode2, encode2(x), y)
    pts = [(rng.uniform(0, e.pad_pixels), rng.uniform(0, e.pad_pixels)) for _ in range(12)]
    out.append((e, [("click/drag", lambda p=p, e=e: e.click(*p)) for p in pts]))
    e = explorers.LatentSliders(*experiments.fa_codec(m.fa, shape, **kw), x)
    acts = [(f"pc{i}", lambda i=i, v=v, e=e: e.set(**{f"pc{i}": v}))
            for i, v in [(1, 1.0), (2, -2.0), (3, 0.5), (1, -1.5), (6, 2.5), (4, 1.0)]]
    acts += [("start", lambda v=v, e=e: e.set(start=v)) for v in (2, 5, -1)]
    out.append((e, acts))
    if m.vfa_settings.conditional:
        e = explorers.ConditionalSampling(m.vfa, m.vfa_settings, m.vfa_cfg.latent_dim, shape)
        acts = [("class", lambda v=v, e=e: e.set(label=v)) for v in (3, 7, 1)]
        acts += [("one-hot value", lambda v=v, e=e: e.set(scale=v)) for v in (3.0, 5.0, 0.0)]
        acts += [("new samples", e.resample) for _ in range(4)]
        out.append((e, acts))
    e = explorers.Interpolation(*experiments.vfa_codec(m.vfa, m.vfa_settings, shape), x)
    acts = [("a/b", lambda a=a, b=b, e=e: e.set(a=a, b=b)) for a, b in [(2, 9), (4, 4), (10, 1)]]
    acts += [("steps", lambda v=v, e=e: e.set(steps=v)) for v in (12, 16, 4)]
    out.append((e, acts))
    e = explorers.LocalLayers(m.local_net, x, recon_kwargs=m.local_kwargs)
    acts = [("depth", lambda v=v, e=e: e.set(depth=v)) for v in (0, 2, 4, 5, 1)]
    acts += [("image", lambda v=v, e=e: e.set(image=v)) for v in (3, 8, 13)]
    out.append((e, acts))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.explorers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    with Stopwatch(args.device) as loading:
        m = exploration_models(args.profile, args.device)
    rows, worst = [], 0.0
    for e, acts in interactions(m, random.Random(0)):
        with Stopwatch(args.device) as first:
            e.widget  # build + first render
        times = {}
        for name, act in acts:
            n = e.renders
            with Stopwatch(args.device) as sw:
                act()
            if e.renders != n + 1 or e.error:
                raise RuntimeError(f"{e.kind}: {name} did not redraw once ({e.error})")
            times.setdefault(name, []).append(sw.seconds)
        all_t = [t for ts in times.values() for t in ts]
        worst = max(worst, max(all_t))
        rows.append([e.kind, len(all_t), 1e3 * first.seconds, 1e3 * statistics.median(all_t),
                     1e3 * max(all_t), max(times, key=lambda k: max(times[k])),
                     "yes" if max(all_t) <= TARGET_S else "NO"])
    cols = ["explorer", "interactions", "first render (ms)", "median (ms)", "max (ms)",
            "slowest control", f"max <= {TARGET_S} s"]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    text = "\n".join([
        f"# Explorer latency per interaction ({args.profile} profile, {args.device})", "",
        f"- {platform.platform()}; {os.cpu_count()} CPUs; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average at the end {load}",
        f"- models loaded (or trained) in {loading.seconds:.1f} s", "",
        markdown_table(cols, rows), "",
        "Each interaction: a control set from code, timed from the change to the new PNG in "
        "the widget (callback, the method on one image or one small batch, matplotlib "
        "drawing, PNG encoding). Not included: the comm message to the browser and its paint "
        f"(a few ms on localhost). Target: every interaction <= {TARGET_S} s.", ""])
    print(text)
    if not args.no_write:
        path = results_dir(args.profile) / "explorers_latency.md"
        path.write_text(text)
        print(f"written: {path}", file=sys.stderr)
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
