"""The toy example of Section 3.2 (Figure 2): invert y = sin(3 pi x) on [-domain, domain].

Two networks of :class:`fa_utils.models.ToyMLP` (1 -> hidden -> hidden -> out):

* plain (Figure 2a): trained on ||y - f_x||^2 only, then inverted by gradient descent on
  its input from x_hat = 0 (Adam on the input, ``invert_steps`` steps);
* FA (Figure 2b): an extra latent neuron l; trained on C = ||y - f_x||^2 + ||x - r_hat||^2
  (Eq. 4), where r_hat is one inner step of Eq. 3, L = ||l_x - l_r||^2 + alpha ||f_x - f_r||^2,
  from r_0 = 0. Eq. 3 has no 1/2; :func:`fa_utils.fa.align` uses 1/2 ||.||^2, so the toy's
  latent is (sqrt(2) l, sqrt(2 alpha) f), which makes the two identical.

The claim checked (:func:`figure2_claims`; our results: docs/method.md section 9): FA
recovers x on the whole domain, the plain network only on the branch around its starting
point (about [-1/6, 1/6] for x_hat_0 = 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import fa
from .config import ToyConfig
from .models import ToyMLP, clamp_weights_
from .train import seeded_generator


def target(x: torch.Tensor) -> torch.Tensor:
    """y = sin(3 pi x), elementwise."""
    return torch.sin(3 * math.pi * x)


def fa_latent(net: ToyMLP, alpha: float):
    """The inner problem's latent of Eq. 3: r -> (sqrt(2) l_r, sqrt(2 alpha) f_r), (B, 2)."""
    scale = torch.tensor([math.sqrt(2 * alpha), math.sqrt(2.0)])

    def encode(r: torch.Tensor) -> torch.Tensor:
        return net(r) * scale.to(r.device, r.dtype)
    return encode


def _batch(cfg: ToyConfig, g: torch.Generator, device) -> torch.Tensor:
    return ((torch.rand(cfg.batch_size, 1, generator=g) * 2 - 1) * cfg.domain).to(device)


def train_plain(cfg: ToyConfig, device="cpu", progress: bool = True) -> tuple[ToyMLP, list]:
    """Figure 2a's network: ||y - f_x||^2 only. Returns (network, [(step, loss)])."""
    from tqdm.auto import tqdm
    torch.manual_seed(cfg.seed)
    net = ToyMLP(cfg.hidden, out=1).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = seeded_generator(cfg.seed)
    history = []
    for step in tqdm(range(1, cfg.steps + 1), desc="toy plain", disable=not progress, leave=False):
        x = _batch(cfg, g, device)
        loss = (target(x) - net(x)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append((step, loss.item()))
    return net, history


def train_fa(cfg: ToyConfig, device="cpu", progress: bool = True) -> tuple[ToyMLP, list]:
    """Figure 2b's network, trained with Eq. 4. Returns (network, [(step, C)])."""
    from tqdm.auto import tqdm
    torch.manual_seed(cfg.seed)
    net = ToyMLP(cfg.hidden, out=2).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = seeded_generator(cfg.seed)
    encode = fa_latent(net, cfg.alpha)
    history = []
    for step in tqdm(range(1, cfg.steps + 1), desc="toy FA", disable=not progress, leave=False):
        x = _batch(cfg, g, device)
        out = net(x)
        r0 = fa.init_r(x.shape, cfg.r_init, generator=g, device=device, low=-cfg.domain,
                       high=cfg.domain)
        z_x = out * torch.tensor([math.sqrt(2 * cfg.alpha), math.sqrt(2.0)], device=device)
        r_hat = fa.align(encode, z_x, r0, T=cfg.T, tau=cfg.tau, create_graph=True).r
        loss = (target(x) - out[:, :1]).pow(2).mean() + (x - r_hat).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clamp_weights_(net)
        history.append((step, loss.item()))
    return net, history


def invert_plain(net: ToyMLP, y: torch.Tensor, steps: int, lr: float,
                 x0: float = 0.0) -> torch.Tensor:
    """argmin_x (F(x) - y)^2 by Adam on the input from x0, independently per point.

    Shapes: y (N, 1) -> x_hat (N, 1).
    """
    x = torch.full_like(y, x0).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        loss = (net(x) - y).pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return x.detach()


def invert_fa(net: ToyMLP, x: torch.Tensor, cfg: ToyConfig, T: int | None = None) -> torch.Tensor:
    """Recover x from the FA network's outputs (f_x, l_x) alone: the inner problem of Eq. 3
    from r_0 (zeros unless ``cfg.r_init`` says otherwise), ``T`` steps (default ``cfg.T``).

    Shapes: x (N, 1) -> x_hat (N, 1).
    """
    encode = fa_latent(net, cfg.alpha)
    with torch.no_grad():
        z_x = encode(x)
    r0 = fa.init_r(x.shape, cfg.r_init, generator=seeded_generator(cfg.seed + 1),
                   device=x.device, low=-cfg.domain, high=cfg.domain)
    return fa.align(encode, z_x, r0, T=T or cfg.T, tau=cfg.tau, create_graph=False).r


@dataclass
class ToyResult:
    """Inversion over a dense grid of the domain (all tensors (N,))."""

    x: torch.Tensor
    x_hat_plain: torch.Tensor
    x_hat_fa: torch.Tensor
    f_plain: torch.Tensor
    f_fa: torch.Tensor

    @property
    def err_plain(self) -> torch.Tensor:
        return (self.x_hat_plain - self.x).abs()

    @property
    def err_fa(self) -> torch.Tensor:
        return (self.x_hat_fa - self.x).abs()

    def summary(self, tolerance: float) -> dict[str, float]:
        """Mean |x_hat - x|, fraction of the grid recovered within ``tolerance``, and the
        fit error of f (mean squared) for both networks."""
        y = target(self.x)
        return {
            "plain_mean_error": float(self.err_plain.mean()),
            "fa_mean_error": float(self.err_fa.mean()),
            "plain_recovered_fraction": float((self.err_plain < tolerance).float().mean()),
            "fa_recovered_fraction": float((self.err_fa < tolerance).float().mean()),
            "plain_fit_mse": float((self.f_plain - y).pow(2).mean()),
            "fa_fit_mse": float((self.f_fa - y).pow(2).mean()),
        }


def evaluate(plain: ToyMLP, fa_net: ToyMLP, cfg: ToyConfig, device="cpu") -> ToyResult:
    """Invert both networks on ``cfg.grid`` points evenly spaced over the domain."""
    x = torch.linspace(-cfg.domain, cfg.domain, cfg.grid, device=device).unsqueeze(1)
    plain.eval()
    fa_net.eval()
    with torch.no_grad():
        y = target(x)
        f_plain = plain(x)[:, 0]
        f_fa = fa_net(x)[:, 0]
    x_plain = invert_plain(plain, y, cfg.invert_steps, cfg.invert_lr)
    x_fa = invert_fa(fa_net, x, cfg)
    return ToyResult(x=x[:, 0].cpu(), x_hat_plain=x_plain[:, 0].cpu(), x_hat_fa=x_fa[:, 0].cpu(),
                     f_plain=f_plain.cpu(), f_fa=f_fa.cpu())


def error_by_branch(result: ToyResult, branches: int = 6) -> dict[str, torch.Tensor]:
    """Mean |x_hat - x| on each of the ``branches`` equal intervals of the domain (for
    [-1, 1] and 6 branches, the intervals on which sin(3 pi x) is monotone).

    Returns ``{"plain": (branches,), "fa": (branches,)}``.
    """
    lo, hi = float(result.x.min()), float(result.x.max())
    idx = ((result.x - lo) / (hi - lo) * branches).long().clamp(max=branches - 1)
    out = {}
    for name, err in (("plain", result.err_plain), ("fa", result.err_fa)):
        out[name] = torch.stack([err[idx == b].mean() for b in range(branches)])
    return out


#: Section of the paper the toy's claims belong to (a report groups rows by it).
SECTION = "3.2, Figure 2"
#: Our table and figures of Figure 2 (paths relative to the output root).
EVIDENCE = ("results/toy_inversion.md", "figures/fig02b_toy_with_fa.png",
            "figures/fig02a_toy_without_fa.png", "figures/fig02c_toy_inversion_error.png")


def figure2_claims(summary: dict[str, float], bins: dict[str, torch.Tensor], *,
                   asserted: bool = True) -> list:
    """Figure 2's qualitative claim as four :class:`fa_utils.claims.Claim` objects, with the
    thresholds notebook 01 asserts: FA's mean inversion error below 0.2 x the plain
    network's, FA recovers more than 90 % of the domain within the tolerance, the plain
    network less than 50 %, and FA's worst branch below a quarter of the plain network's.

    Args:
        summary: :meth:`ToyResult.summary` at the config's tolerance.
        bins: :func:`error_by_branch` (mean error per monotone branch).
        asserted: mark every claim as asserted (the notebook then checks them with
            :func:`fa_utils.claims.check`).

    Returns:
        The claims, ids ``fig2.*`` (the catalogue in :mod:`fa_utils.report`).
    """
    from . import claims

    s = summary
    worst_fa, worst_plain = float(bins["fa"].max()), float(bins["plain"].max())

    def make(cid, text, paper, ours, ok, why):
        return claims.Claim(cid, SECTION, text, paper, ours, claims.verdict(ok),
                            "" if ok else why, EVIDENCE, asserted)

    return [
        make("fig2.fa_error_much_lower", "With feature alignment the input is recovered from "
             "the output far better than by inverting the plain network (our reading: mean "
             "|x_hat - x| below 0.2 x the plain network's)", "Figure 2a vs 2b (plot, no number)",
             f"mean error {s['fa_mean_error']:.3f} with FA vs {s['plain_mean_error']:.3f} without "
             f"(ratio {s['fa_mean_error'] / max(s['plain_mean_error'], 1e-12):.2f})",
             s["fa_mean_error"] < 0.2 * s["plain_mean_error"],
             "FA's inversion error is not five times lower at this budget"),
        make("fig2.fa_whole_domain", "With FA one inner step recovers x \"on the entire domain\" "
             "(our reading: more than 90 % of the grid within the tolerance)",
             "Figure 2b (plot, no number)",
             f"{s['fa_recovered_fraction']:.0%} of the domain recovered",
             s["fa_recovered_fraction"] > 0.9, "FA misses more than 10 % of the domain"),
        make("fig2.plain_partial", "Without FA, gradient descent on the input recovers x only "
             "partially (our reading: on less than half of the domain)",
             "Figure 2a (plot, no number)",
             f"{s['plain_recovered_fraction']:.0%} of the domain recovered",
             s["plain_recovered_fraction"] < 0.5,
             "the plain network is inverted on more than half of the domain"),
        make("fig2.every_branch", "FA's advantage holds on every monotone branch of sin(3 pi x), "
             "not only on average (our reading: FA's worst branch below a quarter of the plain "
             "network's worst)", "Figure 2b (plot, no number)",
             f"worst branch mean error {worst_fa:.3f} with FA vs {worst_plain:.3f} without",
             worst_fa < worst_plain / 4, "on some branch FA is not four times better"),
    ]
