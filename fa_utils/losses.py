"""Losses with explicit reductions."""
from __future__ import annotations

import torch

#: Bounds of the log-variance wherever it is used (:func:`bounded_logvar`). exp(20) = 4.9e8
#: keeps the variance, the KL term (at most Z * 2.4e8 per example: 3e10 for Z = 128) and
#: sigma = exp(10) = 2.2e4 far below float32's 3.4e38 (and bfloat16's); exp(-30) = 9.4e-14
#: keeps sigma = 3e-7 > 0. The same bounds as the latent-diffusion autoencoders
#: (``DiagonalGaussianDistribution`` clamps its log-variance to [-30, 20]). A trained VFA or
#: VAE encoder on MNIST stays well inside them, so the bound changes nothing there.
LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0


def bounded_logvar(logvar: torch.Tensor) -> torch.Tensor:
    """The log-variance clamped to [:data:`LOGVAR_MIN`, :data:`LOGVAR_MAX`] in value, with
    the gradient passed straight through (as if unclamped).

    Inside the bounds the value and the gradient are exactly those of ``logvar``. Outside,
    the value is the bound, so exp(logvar) cannot overflow, while the gradient still
    reaches the head that produced it: a unit at logvar = 100 is pulled back by the KL
    term instead of being stuck at the bound with zero gradient (a plain ``clamp``).

    Shapes: any -> the same.
    """
    return logvar + (logvar.clamp(LOGVAR_MIN, LOGVAR_MAX) - logvar).detach()


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, exp(logvar)) || N(0, I) ) per example, summed over latent dimensions.

    = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)   (Kingma & Welling, App. B)

    ``logvar`` is bounded by :func:`bounded_logvar` first (so the result is finite for any
    finite mu whose square does not overflow).

    Shapes: (B, Z), (B, Z) -> (B,).
    """
    logvar = bounded_logvar(logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + eps * sigma with eps ~ N(0, I) drawn from ``generator`` and
    sigma = exp(logvar / 2), ``logvar`` bounded by :func:`bounded_logvar`. (B, Z) -> (B, Z)."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype,
                      device=generator.device if generator is not None else mu.device)
    return mu + eps.to(mu.device) * (0.5 * bounded_logvar(logvar)).exp()


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
