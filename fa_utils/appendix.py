"""Appendix A (Sections 7.1-7.2): the convergence analysis, checked numerically.

7.1, one weight w and target activation a (Eq. 11-19): with L = 1/2 (a - w r)^2 and
tau = 1 the inner step is r_{p+1} = r_p + w (a - w r_p) (Eq. 13), whose closed form is

    r_p = r_0 (1 - w^2)^p + sum_{q<p} (1 - w^2)^q w a                        (Eq. 18)

and which converges to a / w iff |1 - w^2| < 1, i.e. 0 < w^2 < 2 (Eq. 19): the reason for
the sqrt(2) clamp of Eq. 9. :func:`one_weight_iteration` runs the project's own inner loop
(:func:`fa_utils.fa.align`), :func:`one_weight_closed_form` evaluates Eq. 18.

7.2, a linear layer z = W x (Eq. 20-22): one step from r_0 = 0 gives r_1 = W^T W x, so
minimising ||x - r_1||^2 drives W^T W towards the identity on the data's span; with fewer
outputs than inputs (m < n) W W^T -> I_m and W^T W -> the projector onto W's row space, so
in both cases W^T -> pinv(W), the Moore-Penrose pseudo-inverse.
:func:`train_linear_fa` trains such a layer with the FA loss (through ``fa.align``) and
records the distances.

The clamp (Eq. 9): :func:`train_diagonal_fa` trains a diagonal layer initialised outside
the bound with T inner steps, with and without clamping, and :func:`inner_errors` shows
the inner iteration at inference with the resulting weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from . import fa
from .metrics import one_thread

SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------------------
# 7.1: one weight
# --------------------------------------------------------------------------------------


def _weights(ws, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(ws, dtype=dtype).reshape(-1)


@one_thread()  # tiny problems (docs/choices.md section 1)
def one_weight_iteration(ws: Sequence[float], x: float = 1.0, r0: float = 0.0,
                         steps: int = 40) -> torch.Tensor:
    """Iterate Eq. 13 with :func:`fa.align` (L = 1/2 (a - w r)^2, tau = 1), a = w x.

    Every w is an independent example of one batch (the inner energy is a per-example
    sum). Returns (len(ws), steps + 1) float64: r_0 ... r_steps for each w.
    """
    w = _weights(ws)[:, None]
    a = w * x
    r_init = torch.full_like(w, float(r0))
    res = fa.align(lambda r: w * r, a, r_init, T=steps, tau=1.0, create_graph=False,
                   track_trajectory=True)
    return torch.cat(res.trajectory, dim=1)


def one_weight_closed_form(ws: Sequence[float], x: float = 1.0, r0: float = 0.0,
                           steps: int = 40) -> torch.Tensor:
    """Eq. 18: r_p = r_0 (1 - w^2)^p + sum_{q<p} (1 - w^2)^q w a, with a = w x.

    Returns (len(ws), steps + 1) float64.
    """
    w = _weights(ws)[:, None]
    a = w * x
    p = torch.arange(steps + 1, dtype=torch.float64)[None, :]
    powers = (1 - w ** 2) ** p  # (K, P + 1): (1 - w^2)^p
    partial = torch.cumsum(powers, dim=1) - powers  # sum_{q < p} (1 - w^2)^q
    return r0 * powers + partial * w * a


def one_weight_limit(ws: Sequence[float], x: float = 1.0) -> torch.Tensor:
    """Eq. 19's limit a / w (= x) where 0 < w^2 < 2, nan where the recursion diverges."""
    w = _weights(ws)
    lim = (w * x) / w
    return torch.where((w ** 2 > 0) & (w ** 2 < 2), lim, torch.full_like(w, float("nan")))


def contraction(ws: Sequence[float]) -> torch.Tensor:
    """|1 - w^2|: the factor by which |r_p - a / w| shrinks (< 1) or grows (> 1) per step."""
    return (1 - _weights(ws) ** 2).abs()


# --------------------------------------------------------------------------------------
# 7.2: a linear layer
# --------------------------------------------------------------------------------------


def gram_distances(W: torch.Tensor) -> dict[str, float]:
    """Relative Frobenius distances of a weight W (m, n) from what Section 7.2 predicts.

    * ``"WtW-I"``: ||W^T W - I_n|| / ||I_n||, reachable only if m >= n;
    * ``"WWt-I"``: ||W W^T - I_m|| / ||I_m||, orthonormal rows;
    * ``"WtW-P"``: ||W^T W - P|| / ||P|| with P = pinv(W) W, the projector onto the row
      space (equals I_n for a square invertible W);
    * ``"Wt-pinv"``: ||W^T - pinv(W)|| / ||pinv(W)||.
    """
    W = W.detach().double()
    m, n = W.shape
    pinv = torch.linalg.pinv(W)
    proj = pinv @ W
    wtw = W.T @ W
    fro = torch.linalg.matrix_norm
    return {
        "WtW-I": float(fro(wtw - torch.eye(n, dtype=W.dtype)) / math.sqrt(n)),
        "WWt-I": float(fro(W @ W.T - torch.eye(m, dtype=W.dtype)) / math.sqrt(m)),
        "WtW-P": float(fro(wtw - proj) / fro(proj)),
        "Wt-pinv": float(fro(W.T - pinv) / fro(pinv)),
    }


@dataclass
class LinearFAResult:
    """What :func:`train_linear_fa` returns: the final W (m, n), and per recorded step
    the distances of :func:`gram_distances` and the FA loss (per-example sum, batch mean)."""

    W: torch.Tensor
    steps: list[int] = field(default_factory=list)
    distances: dict[str, list[float]] = field(default_factory=dict)
    loss: list[float] = field(default_factory=list)

    def final(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.distances.items()}


@one_thread()  # tiny problems (docs/choices.md section 1)
def train_linear_fa(n_in: int, n_out: int, *, steps: int = 1500, lr: float = 3e-3,
                    batch: int = 256, seed: int = 0, init_scale: float = 1.0,
                    record_every: int = 10, device="cpu") -> LinearFAResult:
    """Train a bias-free linear layer z = W x (W: n_out x n_in) with one-step FA.

    Inner problem (:func:`fa.align`): r_1 = r_0 - d/dr 1/2 ||W x - W r||^2 from r_0 = 0,
    i.e. r_1 = W^T W x; outer: ||x - r_1||^2 by Adam, lr decayed linearly to 0 (so the
    stochastic optimum is reached, not just approached). Inputs x ~ N(0, I_n), fresh each
    step, float64. W starts Gaussian with entries N(0, init_scale^2 / n_in): singular values spread
    around ``init_scale``, far from orthogonal.
    """
    g = torch.Generator().manual_seed(seed)
    # float64: in the square case the loss reaches ~0 and float32 gradients would turn
    # into denormals (slow on CPUs) before the distances stop shrinking
    W0 = torch.randn(n_out, n_in, generator=g, dtype=torch.float64) * init_scale / math.sqrt(n_in)
    W = W0.to(device).requires_grad_(True)
    opt = torch.optim.Adam([W], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    out = LinearFAResult(W=W.detach().clone())

    def record(step: int, loss: float) -> None:
        out.steps.append(step)
        out.loss.append(loss)
        for k, v in gram_distances(W).items():
            out.distances.setdefault(k, []).append(v)

    for step in range(steps + 1):
        x = torch.randn(batch, n_in, generator=g, dtype=torch.float64).to(device)
        encode = lambda r: r @ W.T  # noqa: E731
        r1 = fa.align(encode, encode(x), torch.zeros_like(x), T=1, tau=1.0,
                      create_graph=True).r
        loss = fa.reconstruction_loss(x, r1)
        if step % record_every == 0 or step == steps:
            record(step, loss.item())
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    out.W = W.detach().clone()
    return out


# --------------------------------------------------------------------------------------
# Eq. 9: what the sqrt(2) clamp changes
# --------------------------------------------------------------------------------------


@dataclass
class DiagonalRun:
    """:func:`train_diagonal_fa`'s record: ``weights`` (steps + 1, d) as trained (rows
    after the first non-finite value are absent), ``loss`` per step, ``diverged_at`` the
    step at which the loss or a weight became non-finite or |w| > 1e6 (None if never)."""

    clamp: Optional[float]
    weights: torch.Tensor
    loss: list[float]
    diverged_at: Optional[int]


@one_thread()  # tiny problems (docs/choices.md section 1)
def train_diagonal_fa(w0: Sequence[float], *, T: int = 4, lr: float = 0.01, steps: int = 200,
                      clamp: Optional[float] = SQRT2, batch: int = 256,
                      seed: int = 0) -> DiagonalRun:
    """Train a diagonal layer z = w * x (elementwise, w of size d) with T-step FA by SGD.

    Inner: T steps of L = 1/2 ||w x - w r||^2 from r_0 = 0, tau = 1 (so r_T =
    (1 - (1 - w^2)^T) x, Eq. 18); outer: ||x - r_T||^2, x ~ N(0, I_d). After each step the
    weights are clamped to [-clamp, clamp] (Eq. 9) unless ``clamp`` is None. Stops at the
    first non-finite loss or weight (or |w| > 1e6).
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.as_tensor(w0, dtype=torch.float64).clone().requires_grad_(True)
    if clamp is not None:
        with torch.no_grad():
            w.clamp_(-clamp, clamp)
    opt = torch.optim.SGD([w], lr=lr)
    weights, losses, diverged = [w.detach().clone()], [], None
    for step in range(1, steps + 1):
        x = torch.randn(batch, w.numel(), generator=g, dtype=torch.float64)
        r = fa.align(lambda r: w * r, w * x, torch.zeros_like(x), T=T, tau=1.0,
                     create_graph=True).r
        loss = fa.reconstruction_loss(x, r)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if clamp is not None:
            with torch.no_grad():
                w.clamp_(-clamp, clamp)
        losses.append(loss.item())
        if not (math.isfinite(losses[-1]) and torch.isfinite(w).all() and w.abs().max() < 1e6):
            diverged = step
            break
        weights.append(w.detach().clone())
    return DiagonalRun(clamp=clamp, weights=torch.stack(weights), loss=losses,
                       diverged_at=diverged)


def inner_errors(w: Sequence[float] | torch.Tensor, steps: int = 20, x: float = 1.0) -> torch.Tensor:
    """|r_p - x| for p = 0..steps of the inference-time inner iteration from r_0 = 0 with
    each weight w (a = w x). Returns (len(w), steps + 1); grows without bound where w^2 > 2."""
    w = torch.as_tensor(w, dtype=torch.float64).reshape(-1)
    return (one_weight_iteration(w.tolist(), x=x, r0=0.0, steps=steps) - x).abs()


#: Our tables and figures of Appendix A (paths relative to the output root).
EVIDENCE_ONE_WEIGHT = ("results/appendix_one_weight.md", "figures/fig_appendix_one_weight.png")
EVIDENCE_LINEAR = ("results/appendix_linear_pinv.md", "figures/fig_appendix_linear_pinv.png")
EVIDENCE_CLAMP = ("figures/fig_appendix_clamp.png",)


def appendix_claims(*, ws: Sequence[float], closed_gap: float, err: torch.Tensor,
                    rho: torch.Tensor, steps: int, square: dict[str, float],
                    fewer: dict[str, float], projector_gap: float, tolerance: float,
                    no_clamp: DiagonalRun, clamped: DiagonalRun, trained_w2_max: float,
                    trained_inner_last: float, init_inner: torch.Tensor,
                    asserted: bool = True) -> list:
    """Appendix A's statements as :class:`fa_utils.claims.Claim` objects, with the
    thresholds notebook 06 asserts.

    Args:
        ws: the weights of 7.1; ``err`` (len(ws), steps + 1) their |r_p - a/w|;
            ``rho`` :func:`contraction`; ``closed_gap`` the largest relative gap between the
            iteration and Eq. 18.
        square, fewer: :meth:`LinearFAResult.final` of the square and the fewer-outputs layer.
        projector_gap: | ||W^T W - I|| - sqrt(1 - m/n) | of the fewer-outputs layer.
        tolerance: ``linear_tolerance`` of the config.
        no_clamp, clamped: the two :func:`train_diagonal_fa` runs.
        trained_w2_max: the largest w^2 trained with the clamp; ``trained_inner_last`` the
            inner iteration's last error with those weights; ``init_inner`` the inner errors
            at the initial weight (outside the bound).
        asserted: mark every claim as asserted.

    Returns:
        The claims, ids ``a71.*``, ``a72.*``, ``eq9.*`` (the catalogue in :mod:`fa_utils.report`).
    """
    from . import claims

    w = torch.tensor(list(ws), dtype=torch.float64)
    converged = err[:, -1] < err[:, 0]
    stable = (w ** 2 > 0) & (w ** 2 < 2)
    rate_ok = bool(torch.allclose(err[:, -1], err[:, 0] * rho ** steps, rtol=1e-8, atol=1e-12))
    rate_gap = float(((err[:, -1] - err[:, 0] * rho ** steps).abs()
                      / (err[:, 0] * rho ** steps).abs().clamp_min(1e-300)).max())
    analytic = "analytic statement, no number:"
    out = []

    def add(cid, section, text, paper, ours, ok, why, evidence):
        out.append(claims.Claim(cid, section, text, paper, ours, claims.verdict(ok),
                                "" if ok else why, tuple(evidence), asserted))

    add("a71.closed_form", "Appendix 7.1, Eq. 13-18", "The one-weight inner step "
        "r_{p+1} = r_p + w (a - w r_p) has the closed form of Eq. 18",
        f"{analytic} Eq. 18", f"largest relative gap between fa.align and Eq. 18: {closed_gap:.1e}",
        closed_gap < 1e-9, "the iteration departs from Eq. 18 by more than 1e-9",
        EVIDENCE_ONE_WEIGHT)
    add("a71.converges_iff", "Appendix 7.1, Eq. 19", "The inner iteration converges to a / w "
        "exactly when 0 < w^2 < 2", f"{analytic} Eq. 19",
        "converged for w in " + str([v for v, c in zip(ws, converged.tolist()) if c])
        + ", diverged for " + str([v for v, c in zip(ws, converged.tolist()) if not c]),
        bool(torch.equal(converged, stable)), "convergence does not follow the bound w^2 < 2",
        EVIDENCE_ONE_WEIGHT)
    add("a71.rate", "Appendix 7.1, Eq. 18", "The distance to the limit shrinks as "
        "|1 - w^2|^p |r_0 - a/w|", f"{analytic} Eq. 18",
        f"largest relative gap to |1 - w^2|^p after {steps} steps: {rate_gap:.1e}", rate_ok,
        "the distance does not follow |1 - w^2|^p", EVIDENCE_ONE_WEIGHT)
    add("a72.square_pinv", "Appendix 7.2, Eq. 22", "FA on a square linear layer drives "
        "W^T W to I, i.e. W^T to the pseudo-inverse pinv(W)", f"{analytic} Eq. 22",
        f"||W^T W - I|| {square['WtW-I']:.1e}, ||W^T - pinv(W)|| {square['Wt-pinv']:.1e} "
        f"(tolerance {tolerance:g})", square["WtW-I"] < tolerance and square["Wt-pinv"] < tolerance,
        "the square layer did not reach the pseudo-inverse within the tolerance", EVIDENCE_LINEAR)
    add("a72.fewer_outputs_projector", "Appendix 7.2, Eq. 22", "With fewer outputs than inputs "
        "W^T W reaches the row-space projector (not I), W W^T -> I and W^T -> pinv(W)",
        f"{analytic} Eq. 22 (our reading for m < n)",
        f"||W W^T - I|| {fewer['WWt-I']:.1e}, ||W^T W - P_row|| {fewer['WtW-P']:.1e}, "
        f"||W^T - pinv(W)|| {fewer['Wt-pinv']:.1e}, ||W^T W - I|| off sqrt(1 - m/n) by "
        f"{projector_gap:.1e} (tolerance {tolerance:g})",
        max(fewer["WWt-I"], fewer["WtW-P"], fewer["Wt-pinv"], projector_gap) < tolerance,
        "the fewer-outputs layer did not reach the projector within the tolerance",
        EVIDENCE_LINEAR)
    add("eq9.clamp_prevents_divergence", "3.1, Eq. 9 (Appendix 7.1)", "Clamping the weights to "
        "[-sqrt 2, sqrt 2] keeps training with T inner steps from diverging",
        "Eq. 9 (motivated by Eq. 19, no number)",
        f"without the clamp diverged at step {no_clamp.diverged_at}; with it "
        + ("never" if clamped.diverged_at is None else f"at step {clamped.diverged_at}"),
        no_clamp.diverged_at is not None and clamped.diverged_at is None,
        "the unclamped run did not diverge or the clamped one did", EVIDENCE_CLAMP)
    add("eq9.trained_weights_converge", "3.1, Eq. 9 (Appendix 7.1)", "With the clamp, training "
        "moves the weights inside w^2 < 2 and the inner iteration then converges, while it "
        "diverges at the initial weight", "Eq. 9 and Eq. 19 (no number)",
        f"largest trained w^2 {trained_w2_max:.3f}; last inner error {trained_inner_last:.1e} "
        f"(trained) vs {float(init_inner[-1]):.1e} from {float(init_inner[0]):.1e} (initial weight)",
        trained_w2_max < 2 and trained_inner_last < 1e-3 and float(init_inner[-1]) > float(init_inner[0]),
        "the trained weights or the inner iteration did not behave as Eq. 19 says", EVIDENCE_CLAMP)
    return out
