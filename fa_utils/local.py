"""Local feature alignment (Section 3.5, Algorithms 2-3, Figure 16; docs/method.md section 5)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import fa
from .metrics import one_thread
from .models import Architecture, architecture, init_orthogonal_

SQRT2 = 2 ** 0.5  # the Eq. 9 bound
LOCAL_NET_FORMAT = 2  #: in a checkpoint's identity: bumped when LocalFANet's layout changes


class LocalBlock(nn.Module):
    """One layer: ``op`` (Conv2d, or Flatten + Linear), then arcsinh if ``activation``."""

    def __init__(self, op: nn.Module, activation: bool):
        super().__init__()
        self.op = op
        self.activation = bool(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.op(x)
        return torch.asinh(a) if self.activation else a


class LocalFANet(nn.Module):
    """Tables 7-9's encoder, arcsinh after every layer but Linear(Z): (B, C, H, W) -> (B, Z)."""

    def __init__(self, arch: Architecture, latent_dim: int = 128, bias: bool = False):
        # no biases unless asked (docs/choices.md section 3)
        super().__init__()
        self.latent_dim = int(latent_dim)
        ops, shapes, c, s = [], [], arch.channels, arch.size
        for w in arch.widths:
            ops += [nn.Conv2d(c, w, 3, 1, 1, bias=bias), nn.Conv2d(w, w, 3, 2, 1, bias=bias)]
            shapes += [(c, s, s), (w, s, s)]
            c, s = w, (s + 1) // 2
        ops.append(nn.Sequential(nn.Flatten(), nn.Linear(arch.flat_dim, arch.hidden, bias=bias)))
        self.input_shapes: list[tuple[int, ...]] = shapes + [(c, s, s), (arch.hidden,)]  # x_l
        last = LocalBlock(nn.Linear(arch.hidden, self.latent_dim, bias=bias), False)
        self.blocks = nn.Sequential(*[LocalBlock(op, True) for op in ops], last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[x_0 = x, x_1, ..., x_{L+1} = z], no graph."""
        out = [x]
        for block in self.blocks:
            out.append(block(out[-1]))
        return out


def make_local_net(arch: str | Architecture, latent_dim: int = 128, *,
                   spectral_init: bool = True, seed: int = 0, bias: bool = False) -> LocalFANet:
    """Section 4's orthogonal weights, zero biases; ``spectral_init``: each at operator norm 1."""
    net = LocalFANet(architecture(arch) if isinstance(arch, str) else arch, latent_dim, bias)
    init_orthogonal_(net, zero_bias=True)
    if spectral_init:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for block, shape in zip(net.blocks, net.input_shapes):
                norm = operator_norm(block.op, shape, generator=g)
                for w in (m.weight for m in block.op.modules() if hasattr(m, "weight")):
                    w.div_(norm)
    return net


@one_thread()  # a batch of one (docs/choices.md section 1)
def operator_norm(op: nn.Module, input_shape, iters: int = 30,
                  generator: torch.Generator | None = None) -> float:
    """||W|| of ``op`` without its bias on (1, *input_shape), by power iteration on W^T W."""
    p = next(op.parameters())
    v = torch.randn((1, *input_shape), generator=generator).to(p.device, p.dtype)
    with fa.inner_autograd():
        zero = op(torch.zeros_like(v)).detach()
        for _ in range(iters):
            v = (v / v.norm()).requires_grad_(True)
            # W^T W v = d/dv 1/2 ||W v||^2
            (v,) = torch.autograd.grad(0.5 * (op(v) - zero).pow(2).sum(), v)
    return float(v.norm().sqrt())


def make_optimizers(net: LocalFANet, lr: float, betas=(0.5, 0.999)) -> list[torch.optim.Adam]:
    """One Adam per layer: a layer's update never touches another layer's state."""
    return [torch.optim.Adam(b.parameters(), lr=lr, betas=betas) for b in net.blocks]


def local_layer_loss(block: LocalBlock, x: torch.Tensor, *, align_activation: bool = False,
                     **inner):
    """Algorithm 2, lines 2-12, on x (B, ...): C_l (a graph to ``block`` only), x_{l+1}, r_hat_l."""
    x = x.detach()
    a = block.op(x)
    with torch.no_grad():  # x_{l+1} = arcsinh(a_l): a constant for the next layer
        x_next = torch.asinh(a) if block.activation else a.detach()
    # Alg. 2: r_hat_l = r_0 - tau d/dr 1/2 ||a_l - op_l(r)||^2, T steps (align_activation:
    # the target arcsinh(a_l) and the whole block instead of op_l)
    r = fa.solve(block if align_activation else block.op, block(x) if align_activation else a,
                 tuple(x.shape[1:]), create_graph=True, **inner).r
    # C_l = ||x_l - r_hat_l||^2
    return fa.reconstruction_loss(x, r), x_next, r.detach()


def local_layer_step(block: LocalBlock, optimizer: torch.optim.Optimizer, x: torch.Tensor, *,
                     clamp: float | None = SQRT2, **kwargs) -> tuple[torch.Tensor, float]:
    """Algorithm 2 for layer l: C_l, Adam, the Eq. 9 clamp (None: none): (x_{l+1}, C_l)."""
    optimizer.zero_grad(set_to_none=True)
    loss, x_next, _ = local_layer_loss(block, x, **kwargs)
    fa.update(block, optimizer, loss, None, {}, "the local FA loss", clamp)  # no finite check
    return x_next, loss.item()


def local_step(net: LocalFANet, optimizers: Sequence[torch.optim.Optimizer], x: torch.Tensor,
               **kwargs) -> dict[str, float]:
    """Algorithm 2 on x (B, C, H, W), layer by layer: {"c0": C_0, ..., "loss": mean C_l/dim x_l}."""
    out, per_elem = {}, []
    for i, (block, opt) in enumerate(zip(net.blocks, optimizers)):
        n = x[0].numel()
        x, out[f"c{i}"] = local_layer_step(block, opt, x, **kwargs)
        per_elem.append(out[f"c{i}"] / n)
    out["loss"] = sum(per_elem) / len(per_elem)
    return out


def invert_block(block: LocalBlock, h: torch.Tensor, input_shape, *,
                 align_activation: bool = False, **inner) -> torch.Tensor:
    """One layer of Algorithm 3 (:func:`fa.solve`'s ``inner``): h (B, *out) -> (B, *input_shape)."""
    # Alg. 3: T steps of 1/2 ||sinh(h) - op(r)||^2 (align_activation: ||h - block(r)||^2)
    target = h if align_activation or not block.activation else torch.sinh(h)
    return fa.solve(block if align_activation else block.op, target.detach(),
                    tuple(input_shape), **inner).r


def local_recover(net: LocalFANet, x: torch.Tensor, *, batch_size: int = 500, seed: int = 0,
                  **kwargs) -> torch.Tensor:
    """Algorithm 3 from z = net(x), in batches: (N, C, H, W) -> (N, C, H, W) on x's device."""
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        zs = [net(chunk.to(device)) for chunk in x.split(batch_size)]
    out = []
    for z in zs:  # Algorithm 3, layer by layer, no squashing
        for block, shape in zip(reversed(net.blocks), reversed(net.input_shapes)):
            z = invert_block(block, z, shape, generator=g, **kwargs)
        out.append(z.to(x.device))
    return torch.cat(out)


def recon_kwargs(cfg) -> dict:
    """Algorithm 3's settings from a :class:`fa_utils.config.LocalFAConfig`."""
    return dict(T=cfg.recon_T, tau=cfg.recon_tau, r_init=cfg.r_init,
                align_activation=cfg.align_activation)
