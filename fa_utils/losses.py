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


# --------------------------------------------------------------------------------------
# VFA-GAN and GAN baseline (Section 3.4, Eq. 7-8): least squares, real +1, fake -1
# --------------------------------------------------------------------------------------

LSGAN_REAL = 1.0
LSGAN_FAKE = -1.0


def lsgan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ||1 - D(x)||^2 + ||-1 - D(G(r))||^2 (Mao et al., labels +1 real, -1 fake).

    Reduction: each term is the batch *mean* of the per-example squared error (D outputs
    one number per example), and the two are added. Shapes: (B,), (B',) -> scalar.
    """
    return ((LSGAN_REAL - d_real).pow(2).mean()
            + (LSGAN_FAKE - d_fake).pow(2).mean())


def lsgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 7's adversarial term ||1 - D(G(r))||^2, batch mean. (B,) -> scalar."""
    return (LSGAN_REAL - d_fake).pow(2).mean()


def perceptual_moments_loss(mu_x: torch.Tensor, var_x: torch.Tensor, mu_g: torch.Tensor,
                            var_g: torch.Tensor) -> torch.Tensor:
    """Eq. 7's perceptual term ||mu(x) - mu(G(r))||^2 + ||sigma^2(x) - sigma^2(G(r))||^2:
    the encoder's mean and variance heads as "high-level features" (Section 3.4).

    Reduction: per-example sum over latent dimensions, batch mean.
    Shapes: four (B, Z) tensors -> scalar.
    """
    return ((mu_x - mu_g).pow(2).sum(1) + (var_x - var_g).pow(2).sum(1)).mean()
