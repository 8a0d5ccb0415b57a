"""Losses with explicit reductions: KL and the reparameterisation (Eq. 5), least squares
GAN (Eq. 7-8, real +1, fake -1), the perceptual moments of Eq. 7."""
from __future__ import annotations

import torch

#: Bounds of the log-variance (those of the latent-diffusion autoencoders): exp(20) keeps the
#: variance and KL far inside float32, exp(-30) keeps sigma = 3e-7 > 0.
LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0


def bounded_logvar(logvar: torch.Tensor) -> torch.Tensor:
    """``logvar`` clamped to [LOGVAR_MIN, LOGVAR_MAX] in value, its gradient passed straight
    through (a unit beyond a bound is still pulled back by KL). Any shape -> the same."""
    return logvar + (logvar.clamp(LOGVAR_MIN, LOGVAR_MAX) - logvar).detach()


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, logvar bounded: (B, Z), (B, Z) -> (B,)."""
    logvar = bounded_logvar(logvar)
    # KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)     (Kingma & Welling, App. B)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + eps sigma, eps ~ N(0, I) from ``generator``, logvar bounded: (B, Z) -> (B, Z)."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype,
                      device=generator.device if generator is not None else mu.device)
    # Eq. 5: z = mu + eps * sigma, sigma = exp(logvar / 2)
    return mu + eps.to(mu.device) * (0.5 * bounded_logvar(logvar)).exp()


def lsgan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 8, each term a batch mean: (B,), (B',) -> scalar."""
    # L_D = ||1 - D(x)||^2 + ||-1 - D(G(r))||^2
    return (1.0 - d_real).pow(2).mean() + (-1.0 - d_fake).pow(2).mean()


def lsgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 7's adversarial term ||1 - D(G(r))||^2, batch mean: (B,) -> scalar."""
    return (1.0 - d_fake).pow(2).mean()


def perceptual_moments_loss(mu_x: torch.Tensor, var_x: torch.Tensor, mu_g: torch.Tensor,
                            var_g: torch.Tensor) -> torch.Tensor:
    """Eq. 7's ||mu(x) - mu(G(r))||^2 + ||sigma^2(x) - sigma^2(G(r))||^2, summed over latent
    dimensions, batch mean: four (B, Z) -> scalar."""
    return ((mu_x - mu_g).pow(2).sum(1) + (var_x - var_g).pow(2).sum(1)).mean()
