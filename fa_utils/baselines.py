"""The baselines of Section 5: autoencoder (AE), variational autoencoder (VAE), least-squares
GAN, and GAN reconstruction by argmin_z ||x - G(z)||^2 (Section 4, Figure 15).

Architectures (what the paper's sizes imply; see :func:`paper_decoder_kind`):

* encoder: Tables 7-9 (:class:`fa_utils.models.Encoder`), heads ``z`` (AE) or
  ``mu``/``logvar`` (VAE);
* decoder of the AE and VAE = generator of the GAN: the paper's parameter counts (Tables
  3-5) equal exactly the encoder mirrored (:class:`fa_utils.models.MirroredDecoder`,
  Linear(Z, hidden), Linear(hidden, flat), transposed convs) for MNIST, CIFAR-10 and
  CelebA, and Table 12's generator (:class:`fa_utils.models.GANGenerator`) with Z = 512 for
  STL-10 (Table 6); Table 12's caption describes the latter for every dataset. ``"auto"``
  follows the sizes. The GAN's generator has a BatchNorm after every hidden convolution
  (Section 4: "the generator utilizes batch normalization after each convolution"; the
  AE/VAE decoder has none);
* discriminator (:func:`make_discriminator`, LSGAN losses, :mod:`fa_utils.losses`):
  Table 10's (:class:`fa_utils.models.Discriminator`) for VFA-GAN at every profile and for
  the GAN at the paper profile; a DCGAN-style one
  (:class:`fa_utils.models.DCGANDiscriminator`) for the GAN at smoke and quick (why:
  ``docs/baselines.md``, "The GAN's discriminator at smoke and quick"). Neither is counted
  in Tables 3-6.

Initialisation: the AE and VAE encoder and decoder and the GAN's generator are
He-initialised (:func:`fa_utils.models.init_he_`: Kaiming-normal for LeakyReLU(0.01), zero
biases); the discriminators keep PyTorch's default. The paper states orthogonal
initialisation for FA's encoder and generator only and nothing for the baselines; with
PyTorch's default the AE of Tables 7-9 stays at the mean image for hundreds of steps: its
output does not depend on its input at initialisation (``docs/baselines.md``).

All losses are per-example sums over pixels / latent dimensions, averaged over the batch.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from . import fa
from .losses import (kl_normal, lsgan_discriminator_loss, lsgan_generator_loss,
                     reparameterise)
from .models import (Architecture, DCGANDiscriminator, Discriminator, Encoder, GANGenerator,
                     MirroredDecoder, architecture, init_he_)
from .paper import IMPLIED_ARCHITECTURES

DECODERS = ("auto", "mirrored", "table12")
DISCRIMINATORS = ("table10", "dcgan")

def paper_decoder_kind(dataset: str, choice: str = "auto") -> str:
    """``choice`` unless ``"auto"``, else the kind the paper's sizes imply for ``dataset``
    (its parameter count equals the paper's VAE / GAN sizes, Tables 3-6:
    :data:`fa_utils.paper.IMPLIED_ARCHITECTURES`).

    Raises:
        ValueError: unknown choice or dataset.
    """
    if choice not in DECODERS:
        raise ValueError(f"unknown decoder {choice!r}; choose one of {list(DECODERS)}")
    if choice != "auto":
        return choice
    architecture(dataset)  # validates the name
    return IMPLIED_ARCHITECTURES[dataset].decoder


def make_encoder(dataset: str, heads: Mapping[str, int]) -> Encoder:
    """The AE / VAE encoder (Tables 7-9) with ``heads`` (``{"z": Z}`` or ``{"mu": Z,
    "logvar": Z}``), He-initialised. (B, C, H, W) -> {head: (B, width)}."""
    return init_he_(Encoder(architecture(dataset), heads))


def make_decoder(dataset: str, latent_dim: int, kind: str = "auto", *,
                 batchnorm: bool = False) -> nn.Module:
    """The AE/VAE decoder (= the GAN's generator with ``batchnorm``) for ``dataset``,
    He-initialised: (B, Z) -> (B, C, H, W) in [0, 1].

    Raises:
        ValueError: unknown dataset or decoder kind.
    """
    arch: Architecture = architecture(dataset)
    kind = paper_decoder_kind(dataset, kind)
    cls = MirroredDecoder if kind == "mirrored" else GANGenerator
    return init_he_(cls(arch, latent_dim, batchnorm=batchnorm))


def make_generator(dataset: str, latent_dim: int, kind: str = "auto") -> nn.Module:
    """The GAN baseline's generator: :func:`make_decoder` with BatchNorm after every hidden
    convolution. (B, Z) -> (B, C, H, W) in [0, 1]."""
    return make_decoder(dataset, latent_dim, kind, batchnorm=True)


def make_discriminator(dataset: str, kind: str = "table10") -> nn.Module:
    """The discriminator for ``dataset``: ``"table10"`` (:class:`fa_utils.models.Discriminator`)
    or ``"dcgan"`` (:class:`fa_utils.models.DCGANDiscriminator`), PyTorch's default
    initialisation. (B, C, H, W) -> (B,).

    Raises:
        ValueError: unknown dataset or kind.
    """
    if kind not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {kind!r}; choose one of {list(DISCRIMINATORS)}")
    arch = architecture(dataset)
    return Discriminator(arch) if kind == "table10" else DCGANDiscriminator(arch)


def _rec(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x - x_hat).pow(2).flatten(1).sum(1)


def ae_step(encoder: nn.Module, decoder: nn.Module, optimizer: torch.optim.Optimizer,
            x: torch.Tensor) -> dict[str, float]:
    """One autoencoder step: ||x - D(E(x)[z])||^2 (per-example sum, batch mean), Adam.

    x: (B, C, H, W) float in [0, 1]. Returns floats ``loss`` and ``mse`` (per pixel).

    Raises:
        ValueError: bad images (:func:`fa_utils.train.check_batch`).
        NonFiniteLossError: rec not finite; refused before the update (weights unchanged).
    """
    from .train import check_batch, refuse_non_finite

    check_batch(x, encoder)
    optimizer.zero_grad(set_to_none=True)
    rec = _rec(x, decoder(encoder(x)["z"]))
    refuse_non_finite({"rec": rec}, what="the AE loss")
    loss = rec.mean()
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "mse": loss.item() / x[0].numel()}


def vae_step(encoder: nn.Module, decoder: nn.Module, optimizer: torch.optim.Optimizer,
             x: torch.Tensor, *, betas: torch.Tensor | float = 1.0,
             generator: Optional[torch.Generator] = None) -> dict[str, float]:
    """One VAE step: ||x - D(mu + eps sigma)||^2 + beta KL per example, batch mean, Adam.

    ``betas``: a number, or (B,) per-example weights (Section 4's beta ~ U(0, 1), drawn by
    the caller, e.g. :func:`fa_utils.vfa.draw_betas`).
    x: (B, C, H, W) float in [0, 1]. Returns floats ``loss``, ``mse`` (per pixel) and ``kl``.
    The log-variance is bounded (:func:`fa_utils.losses.bounded_logvar`).

    Raises:
        ValueError: bad images (:func:`fa_utils.train.check_batch`).
        NonFiniteLossError: rec or KL not finite; refused before the update.
    """
    from .train import check_batch, refuse_non_finite

    check_batch(x, encoder)
    optimizer.zero_grad(set_to_none=True)
    out = encoder(x)
    rec = _rec(x, decoder(reparameterise(out["mu"], out["logvar"], generator)))
    kl = kl_normal(out["mu"], out["logvar"])
    refuse_non_finite({"rec": rec, "KL": kl}, what="the VAE loss")
    loss = (rec + betas * kl).mean()
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "mse": rec.detach().mean().item() / x[0].numel(),
            "kl": kl.detach().mean().item()}


def gan_step(generator_net: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
             opt_d: torch.optim.Optimizer, x: torch.Tensor, latent_dim: int, *,
             generator: Optional[torch.Generator] = None) -> dict[str, float]:
    """One least-squares GAN step (real +1, fake -1): a D step then a G step on the same
    z ~ N(0, I) batch. x: (B, C, H, W) float in [0, 1]. Returns floats ``loss_d`` and
    ``loss_g``.

    Raises:
        ValueError: bad images (:func:`fa_utils.train.check_batch`).
        NonFiniteLossError: D's loss or the fakes not finite (refused before D's update),
            or G's loss (refused before G's update; D's update of this step was applied).
    """
    from .train import check_batch, refuse_non_finite

    check_batch(x, generator_net)
    n = x.shape[0]
    z = torch.randn(n, latent_dim, generator=generator,
                    device=generator.device if generator is not None else x.device).to(x.device)
    fake = generator_net(z)
    opt_d.zero_grad(set_to_none=True)
    loss_d = lsgan_discriminator_loss(discriminator(x), discriminator(fake.detach()))
    refuse_non_finite({"adversarial": loss_d, "adversarial (G's images)": fake},
                      what="the GAN discriminator loss (Eq. 8) or its fakes")
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    flags = [p.requires_grad for p in discriminator.parameters()]
    discriminator.requires_grad_(False)
    try:
        loss_g = lsgan_generator_loss(discriminator(fake))
        refuse_non_finite({"adversarial": loss_g}, what="the GAN generator loss (Eq. 7)")
        loss_g.backward()
    finally:
        for p, f in zip(discriminator.parameters(), flags):
            p.requires_grad_(f)
    opt_g.step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}


@fa.inner_autograd()  # works under torch.no_grad() / inference_mode() alike
def gan_reconstruct(generator_net: nn.Module, x: torch.Tensor, *, latent_dim: int,
                    steps: int = 100, lr: float = 0.05, z0: Optional[torch.Tensor] = None,
                    seed: int = 0, batch_size: int = 256
                    ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """GAN "reconstruction" (Section 4): z* = argmin_z ||x - G(z)||^2 by Adam on z.

    Each example has its own z and its own term (the batch loss is their *sum*, so Adam's
    per-coordinate steps do not depend on the batch). z starts at ``z0`` or N(0, I) drawn
    with ``seed``; G is frozen (its parameters get no gradient) and left in its mode.

    Shapes: x (N, C, H, W) -> (G(z*) (N, C, H, W), z* (N, Z), per-step mean of
    ||x - G(z)||^2 per example (length steps + 1, the first before any step)).
    """
    fa.check_weights(generator_net)
    device = next(generator_net.parameters()).device
    g = torch.Generator().manual_seed(int(seed))
    flags = [p.requires_grad for p in generator_net.parameters()]
    generator_net.requires_grad_(False)
    images, zs, curves = [], [], []
    try:
        for i, chunk in enumerate(x.split(batch_size)):
            chunk = fa.fresh(chunk.to(device))
            start = (z0[i * batch_size:i * batch_size + len(chunk)] if z0 is not None
                     else torch.randn(len(chunk), latent_dim, generator=g))
            z = start.clone().to(device).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            curve = []
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                per = _rec(chunk, generator_net(z))
                curve.append(per.detach().mean().item())
                per.sum().backward()
                opt.step()
            with torch.no_grad():
                final = generator_net(z)
            curve.append(_rec(chunk, final).mean().item())
            curves.append(torch.tensor(curve) * len(chunk))
            images.append(final.to(x.device))
            zs.append(z.detach().to(x.device))
    finally:
        for p, f in zip(generator_net.parameters(), flags):
            p.requires_grad_(f)
    curve = (torch.stack(curves).sum(0) / len(x)).tolist()
    return torch.cat(images), torch.cat(zs), curve
