"""Section 5's baselines (AE, VAE, least squares GAN), Tables 3-6's networks; docs/baselines.md."""
from __future__ import annotations

import functools
from typing import Any, Optional

import torch
from torch import nn

from . import fa, vfa
from .fa import check_batch, refuse_non_finite
from .models import (DCGANDiscriminator, Discriminator, FAGenerator, GANGenerator,
                     MirroredDecoder, architecture, count_parameters, init_he_,
                     scaled_architectures)
from .paper import IMPLIED_ARCHITECTURES
from .train import resolve_device
from .vfa import kl_normal, lsgan_discriminator_loss, lsgan_generator_loss, reparameterise

DECODERS = ("auto", "mirrored", "table12")
DISCRIMINATORS = ("table10", "dcgan")


def make_decoder(dataset: str, latent_dim: int, kind: str = "auto", *,
                 batchnorm: bool = False) -> nn.Module:
    """AE / VAE decoder or (``batchnorm``) GAN's G, He init: (B, Z) -> (B, C, H, W). ValueError."""
    arch = architecture(dataset)  # ValueError: an unknown dataset
    fa.check_choice("decoder", kind, DECODERS)
    kind = IMPLIED_ARCHITECTURES[dataset].decoder if kind == "auto" else kind
    cls = MirroredDecoder if kind == "mirrored" else GANGenerator
    return init_he_(cls(arch, latent_dim, batchnorm=batchnorm))


def make_discriminator(dataset: str, kind: str = "table10") -> nn.Module:
    """Table 10's or ``"dcgan"``'s D: (B, C, H, W) -> (B,). Raises ValueError: unknown kind."""
    fa.check_choice("discriminator", kind, DISCRIMINATORS)
    return (Discriminator if kind == "table10" else DCGANDiscriminator)(architecture(dataset))


def _rec(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x - x_hat).pow(2).flatten(1).sum(1)  # ||x - x_hat||^2 per example; losses: batch means


def ae_step(encoder: nn.Module, decoder: nn.Module, optimizer: torch.optim.Optimizer,
            x: torch.Tensor) -> dict[str, float]:
    """One AE step on ||x - D(E(x)[z])||^2: {"loss", "mse"}. ValueError; NonFiniteLossError."""
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
    """One VAE step on ||x - D(z)||^2 + beta KL: {"loss", "mse", "kl"}. Raises as ae_step."""
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
    """One least squares GAN step, D then G: {"loss_d", "loss_g"}. Raises as :func:`ae_step`."""
    check_batch(x, generator_net)
    fake = generator_net(vfa.prior(x.shape[0], latent_dim, generator, device=x.device))
    opt_d.zero_grad(set_to_none=True)
    # Eq. 8: L_D = ||1 - D(x)||^2 + ||-1 - D(G(z))||^2
    loss_d = lsgan_discriminator_loss(discriminator(x), discriminator(fake.detach()))
    refuse_non_finite({"adversarial": loss_d, "adversarial (G's images)": fake},
                      what="the GAN discriminator loss (Eq. 8) or its fakes")
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    # Eq. 7's adversarial term L_G = ||1 - D(G(z))||^2, its gradient to G's parameters only
    loss_g = lsgan_generator_loss(discriminator(fake))
    refuse_non_finite({"adversarial": loss_g}, what="the GAN generator loss (Eq. 7)")
    loss_g.backward(inputs=[p for p in generator_net.parameters() if p.requires_grad])
    opt_g.step()
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}


@fa.inner_autograd()  # works under torch.no_grad() / inference_mode() alike
def gan_reconstruct(generator_net: nn.Module, x: torch.Tensor, *, latent_dim: int,
                    steps: int = 100, lr: float = 0.05, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Section 4's z* = argmin_z ||x - G(z)||^2 by Adam from z ~ N(0, I), G frozen: x (N, C, H, W)
    -> (G(z*), z* (N, Z), the mean error before each step and after the last)."""
    fa.check_weights(generator_net)
    device = next(generator_net.parameters()).device
    g = torch.Generator().manual_seed(int(seed))
    images, zs, curves = [], [], []
    for chunk in x.split(256):
        chunk = fa.fresh(chunk.to(device))
        z = torch.randn(len(chunk), latent_dim, generator=g).to(device).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        curve = []
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            per = _rec(chunk, generator_net(z))
            curve.append(per.detach().mean().item())
            # the examples' errors summed: Adam's steps on z_i do not depend on the batch
            per.sum().backward(inputs=[z])
            opt.step()
        with torch.no_grad():
            final = generator_net(z)
        curves.append(torch.tensor(curve + [_rec(chunk, final).mean().item()]) * len(chunk))
        images.append(final.to(x.device))
        zs.append(z.detach().to(x.device))
    return torch.cat(images), torch.cat(zs), (torch.stack(curves).sum(0) / len(x)).tolist()


def paper_models(dataset: str, device: str = "meta") -> dict[str, list[nn.Module]]:
    """The networks Tables 3-6 count (VAE: E + D, GAN: G, VFA-GAN: E + G) at the paper's sizes."""
    a = IMPLIED_ARCHITECTURES[dataset]
    with torch.device(device), scaled_architectures(1.0):
        vfa_enc = vfa.make_vfa_encoder(dataset, a.latent_dim, a.num_classes, orthogonal=False)
        vae_enc = vfa.make_vfa_encoder(dataset, a.latent_dim, 0, orthogonal=False)
        dec = make_decoder(dataset, a.latent_dim, a.decoder)
        gen = make_decoder(dataset, a.latent_dim, a.decoder, batchnorm=True)
        refiner = FAGenerator(architecture(dataset).channels, 128, a.gen_kernel)
    nets = {"VAE": [vae_enc, dec], "GAN": [gen], "VFA": [vfa_enc], "VFA-GAN": [vfa_enc, refiner]}
    return {m: [n.eval() for n in group] for m, group in nets.items()}


def parameter_counts(dataset: str) -> dict[str, int]:
    """Trainable parameters of each model of :func:`paper_models`."""
    return {m: sum(count_parameters(n) for n in nets) for m, nets in paper_models(dataset).items()}


def sampling_calls(dataset: str, *, batch: int = 1, device: str | torch.device = "auto",
                   frozen: bool = True) -> dict[str, Any]:
    """{model: a call drawing ``batch`` samples} of :func:`paper_models`; ``frozen``: E(0) once."""
    a = IMPLIED_ARCHITECTURES[dataset]
    device = str(resolve_device(str(device)))
    nets = paper_models(dataset, device=device)
    enc, refiner = nets["VFA-GAN"]
    settings = vfa.VFASettings(num_classes=a.num_classes)
    shape = (enc.arch.channels, enc.arch.size, enc.arch.size)
    z = torch.randn(batch, a.latent_dim, device=device)
    labels = torch.zeros(batch, dtype=torch.long, device=device) if settings.conditional else None
    start = fa.frozen_start(enc, shape, head=settings.heads) if frozen else None
    draw = functools.partial(vfa.decode, enc, z, shape, settings=settings, labels=labels,
                             start=start)

    @torch.no_grad()
    def decode(net):
        return net(z)

    return {"VAE": lambda: decode(nets["VAE"][1]), "GAN": lambda: decode(nets["GAN"][0]),
            "VFA": draw, "VFA-GAN": lambda: draw(refiner=refiner)}
