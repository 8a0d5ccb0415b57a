"""Losses with explicit reductions."""
from __future__ import annotations

import torch


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, exp(logvar)) || N(0, I) ) per example, summed over latent dimensions.

    = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)   (Kingma & Welling, App. B)

    Shapes: (B, Z), (B, Z) -> (B,).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + eps * sigma with eps ~ N(0, I) drawn from ``generator``. (B, Z) -> (B, Z)."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype,
                      device=generator.device if generator is not None else mu.device)
    return mu + eps.to(mu.device) * (0.5 * logvar).exp()
