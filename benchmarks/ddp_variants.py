"""Which way of running the two-forward, second-order FA step under DDP gives the
single-process gradient? Two gloo processes on this machine, one variant per process group.

    python benchmarks/ddp_variants.py

The FA step evaluates the encoder twice before its one backward: E(x), then E(r) inside the
inner problem. Variants (``--variant``):

    twice           E(x) and E(r) both through the DDP wrapper (default DDP settings)
    twice-unused    the same with find_unused_parameters=True
    twice-static    the same with static_graph=True
    once            E(x) through the wrapper, the inner problem on ddp.module (textbook
                    inner step, batch B)
    once-shared     as ``once`` with the shared-start first step (what fa_step does)

For each, two iterations of (loss, backward) on a global batch of 8 split 4 + 4, compared
with one process on the 8 examples: the largest |g_ddp - g_ref| / max|g_ref| over the
parameters, or the error raised. Prints one line per variant.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

VARIANTS = ("twice", "twice-unused", "twice-static", "once", "once-shared")


def _model():
    from fa_utils import models
    torch.manual_seed(0)
    enc = models.Encoder(models.Architecture(1, 12, (4, 8), 32), {"z": 8})
    models.init_orthogonal_(enc)
    return enc


def _loss(encoder, x, variant, ddp=None):
    from fa_utils import fa
    if ddp is None:
        return fa.fa_loss(encoder, x, shared_start=(variant == "once-shared"))[0]
    if variant.startswith("twice"):  # E(r) through the wrapper too: a second DDP forward
        r = fa.solve(ddp, ddp(x)["z"], x.shape[1:], head="z", create_graph=True,
                     shared_start=False)
        return fa.reconstruction_loss(x, r.image)
    return fa.fa_loss(ddp, x, shared_start=(variant == "once-shared"))[0]


def worker(variant: str) -> None:
    from fa_utils import distributed as D
    info = D.init_from_env("cpu")
    try:
        torch.manual_seed(1)
        xs = [torch.rand(8, 1, 12, 12) for _ in range(2)]
        ref = _model()
        enc = _model()
        kw = {"twice-unused": dict(find_unused_parameters=True),
              "twice-static": dict(static_graph=True)}.get(variant, {})
        ddp = D.wrap_ddp(enc, info, **kw)
        errs = []
        for it, x in enumerate(xs):
            ref.zero_grad(set_to_none=True)
            _loss(ref, x, variant).backward()
            enc.zero_grad(set_to_none=True)
            local = x[info.rank * 4:(info.rank + 1) * 4]
            try:
                _loss(enc, local, variant, ddp).backward()
            except Exception as exc:  # noqa: BLE001 - reported, not hidden
                errs.append(f"iteration {it}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:150]}")
                break
            worst = 0.0
            for (name, p), q in zip(enc.named_parameters(), ref.parameters()):
                if p.grad is None:
                    worst = float("inf")
                    continue
                worst = max(worst, float((p.grad - q.grad).abs().max()
                                         / q.grad.abs().max().clamp_min(1e-30)))
            errs.append(f"it{it} rel err {worst:.1e}")
            # keep the two models equal for the next iteration: same plain SGD step
            with torch.no_grad():
                for p, q in zip(enc.parameters(), ref.parameters()):
                    q -= 1e-2 * q.grad
                    p.copy_(q)
        if info.is_main:
            print(f"{variant:13s} " + "; ".join(errs), flush=True)
    finally:
        D.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=VARIANTS)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--verbose", action="store_true", help="print failing ranks' stderr")
    args = ap.parse_args()
    if "RANK" in os.environ:
        worker(args.variant)
        return
    from benchmarks.launch import launch_local
    print(f"torch {torch.__version__}, gloo, 2 processes on this CPU; "
          f"global batch 8 = 4 + 4, reference = one process on 8")
    for variant in ([args.variant] if args.variant else VARIANTS):
        try:
            out = launch_local([os.path.abspath(__file__), "--variant", variant], 2,
                               timeout_s=args.timeout)
            print(out[0].strip())
        except RuntimeError as exc:
            lines = [ln for ln in str(exc).splitlines() if "rror" in ln or "what()" in ln]
            print(f"{variant:13s} failed: {str(exc).splitlines()[0][-40:]}; "
                  f"{(lines[-1] if lines else '')[:300]}")
            if args.verbose:
                print(str(exc)[-4000:])
        sys.stdout.flush()


if __name__ == "__main__":
    main()
