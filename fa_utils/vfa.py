"""VFA (Section 3.3, Eq. 5, Figure 3), VFA-GAN (Section 3.4, Eq. 6-8, Figure 4): docs/method.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from . import fa
from .models import Encoder, architecture, bounded_logvar, init_orthogonal_

RAND_SIDES = ("mu", "mu+sigma")  # z_r = mu(r) (the paper) or mu(r) + sigma(r) (the authors' code)
BETA_SCHEDULES = ("fixed", "uniform")
FAKE_SOURCES = ("reconstruction", "prior", "authors")


@dataclass(frozen=True)
class VFASettings:
    """The inner problem, random side, classes (0: none), class term, KL's beta. ValueError."""

    T: int = 1
    tau: float = 1.0
    r_init: str = "zeros"
    squash: str = "none"
    rand_side: str = "mu"
    num_classes: int = 0
    class_scale: float = 1.0
    class_weight: float = 1.0
    beta: float = 1.0
    beta_schedule: str = "uniform"

    def __post_init__(self):
        fa.check_choice("rand_side", self.rand_side, RAND_SIDES)
        fa.check_choice("beta_schedule", self.beta_schedule, BETA_SCHEDULES)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def heads(self) -> tuple:
        return (self.rand_side, "logits") if self.conditional else (self.rand_side,)


def vfa_heads(latent_dim: int, num_classes: int = 0) -> dict[str, int]:
    """``{"mu": Z, "logvar": Z}`` plus ``"logits": K`` for a conditional VFA."""
    return {"mu": int(latent_dim), "logvar": int(latent_dim),
            **({"logits": int(num_classes)} if num_classes else {})}


def make_vfa_encoder(dataset: str, latent_dim: int, num_classes: int = 0, *,
                     orthogonal: bool = True) -> Encoder:
    """Tables 7-9 with VFA heads; orthogonal init (Section 4) unless ``orthogonal=False``."""
    enc = Encoder(architecture(dataset), vfa_heads(latent_dim, num_classes))
    return init_orthogonal_(enc) if orthogonal else enc


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Eq. 5's KL(N(mu, exp(logvar)) || N(0, I)), logvar bounded: (B, Z), (B, Z) -> (B,)."""
    logvar = bounded_logvar(logvar)
    # KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)     (Kingma & Welling, App. B)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 5's z_x, eps ~ N(0, I) from ``generator``, logvar bounded: (B, Z) -> (B, Z)."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype,
                      device=generator.device if generator is not None else mu.device)
    # Eq. 5: z = mu + eps * sigma, sigma = exp(logvar / 2)
    return mu + eps.to(mu.device) * (0.5 * bounded_logvar(logvar)).exp()


def lsgan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 8, each term a batch mean: (B,), (B',) -> ()."""
    # L_D = ||1 - D(x)||^2 + ||-1 - D(G(r))||^2
    return (1.0 - d_real).pow(2).mean() + (-1.0 - d_fake).pow(2).mean()


def lsgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 7's adversarial term, a batch mean: (B,) -> ()."""
    # ||1 - D(G(r))||^2
    return (1.0 - d_fake).pow(2).mean()


def perceptual_moments_loss(mu_x: torch.Tensor, var_x: torch.Tensor, mu_g: torch.Tensor,
                            var_g: torch.Tensor) -> torch.Tensor:
    """Eq. 7's perceptual term, a batch mean: four (B, Z) -> ()."""
    # ||mu(x) - mu(G(r))||^2 + ||sigma^2(x) - sigma^2(G(r))||^2
    return ((mu_x - mu_g).pow(2).sum(1) + (var_x - var_g).pow(2).sum(1)).mean()


def _check_labels(lo: float, hi: float, num_classes: int) -> None:
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) for a conditional VFA, got "
                         f"{int(lo)}..{int(hi)} (unlabeled data: use conditional=False)")


def one_hot(labels: torch.Tensor, num_classes: int, scale: float = 1.0, *,
            validate: bool = True) -> torch.Tensor:
    """scale * onehot(labels): (B,) -> (B, K). ValueError if ``validate``: a label not in [0, K)."""
    labels = labels.long()
    if validate and labels.numel():
        _check_labels(labels.min().item(), labels.max().item(), num_classes)
    return scale * (labels[:, None] == torch.arange(num_classes, device=labels.device)).float()


def inner_target(z: torch.Tensor, settings: VFASettings, labels: Optional[torch.Tensor] = None,
                 scale: Optional[float] = None, *, validate: bool = True) -> torch.Tensor:
    """z (B, Z) [, scale * onehot(labels) if conditional]: (B, Z [+ K]). ValueError: no labels."""
    if not settings.conditional:
        return z
    if labels is None:
        raise ValueError("a conditional VFA needs labels for its target")
    scale = settings.class_scale if scale is None else scale
    return torch.cat([z, one_hot(labels, settings.num_classes, scale, validate=validate).to(z)], 1)


def _solve(encoder, target, shape, settings, *, create_graph, generator=None, start=None):
    """Eq. 1-2 on the random side r -> z_r (``settings.heads``): :func:`fa.solve`."""
    return fa.solve(encoder, target, shape, head=settings.heads, T=settings.T, tau=settings.tau,
                    r_init=settings.r_init, squash=settings.squash, generator=generator,
                    create_graph=create_graph, start=start)


def draw_betas(n: int, settings: VFASettings, generator: Optional[torch.Generator] = None,
               device=None) -> torch.Tensor:
    """Per-example KL weights (n,): ``beta`` (fixed) or U(0, beta) (Section 4)."""
    if settings.beta_schedule == "fixed":
        return torch.full((n,), float(settings.beta), device=device)
    u = torch.rand(n, generator=generator,
                   device=generator.device if generator is not None else device)
    return (settings.beta * u).to(device)


def vfa_loss(encoder: nn.Module, x: torch.Tensor, labels: Optional[torch.Tensor] = None, *,
             settings: VFASettings, generator: Optional[torch.Generator] = None,
             validate: bool = True, heads: bool = False):
    """Eq. 5 (Eq. 6 with the class term), the batch's mean: x (B, C, H, W), labels (B,) ->
    (loss, parts {"rec", "kl", "cls"} (B,) detached, r_hat (B, C, H, W)) [, E(x) if heads]."""
    out = encoder(x)
    z_x = reparameterise(out["mu"], out["logvar"], generator)
    res = _solve(encoder, inner_target(z_x, settings, labels, validate=validate), x.shape[1:],
                 settings, create_graph=True, generator=generator)
    # Eq. 5: ||x - r_hat||^2 + beta KL(q(z|x) || N(0, I)) [+ class_weight ||onehot(y) - c(x)||^2]
    rec = (x - res.image).pow(2).flatten(1).sum(1)
    kl = kl_normal(out["mu"], out["logvar"])
    per_example = rec + draw_betas(x.shape[0], settings, generator, device=x.device) * kl
    cls = torch.zeros_like(rec)
    if settings.conditional and settings.class_weight > 0:
        target_c = one_hot(labels, settings.num_classes, validate=False).to(x)
        cls = (target_c - out["logits"]).pow(2).sum(1)
        per_example = per_example + settings.class_weight * cls
    parts = {"rec": rec.detach(), "kl": kl.detach(), "cls": cls.detach()}
    return (per_example.mean(), parts, res.image) + ((out,) if heads else ())


def vfa_step(encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             labels: Optional[torch.Tensor] = None, *, settings: VFASettings,
             generator: Optional[torch.Generator] = None,
             weight_clamp: Optional[float] = 2 ** 0.5) -> dict[str, float]:
    """One VFA step (Eq. 5, Figure 3, Eq. 9's clamp) on x (B, C, H, W), labels (B,) (unused if
    unconditional): floats loss, mse, kl, cls. Raises ValueError; NonFiniteLossError."""
    return _vfa_update(encoder, optimizer, x, labels, settings, generator, weight_clamp)[0]


def _vfa_update(encoder, optimizer, x, labels, settings, generator, weight_clamp):
    """:func:`vfa_step`, also returning E(x) and r_hat from before the update, detached."""
    bounds = fa.check_batch(x, encoder, deferred=True)
    with_labels = settings.conditional and labels is not None and labels.numel() > 0
    optimizer.zero_grad(set_to_none=True)
    loss, parts, image, out = vfa_loss(encoder, x, labels, settings=settings,
                                       generator=generator, validate=False, heads=True)
    read = [loss, (image.detach() - x).pow(2).mean(), parts["kl"].mean(), parts["cls"].mean()]
    read = fa.read_once(read + (list(torch.aminmax(labels.long())) if with_labels else []),
                        bounds)
    if with_labels:
        _check_labels(read[4], read[5], settings.num_classes)
    fa.update(encoder, optimizer, loss, read[:4], {"rec": parts["rec"], "KL": parts["kl"],
              "class": parts["cls"], "loss": loss}, "the VFA loss", weight_clamp)
    return (dict(zip(("loss", "mse", "kl", "cls"), read[:4])),
            {k: v.detach() for k, v in out.items()}, image.detach())


def prior(n: int, latent_dim: int, generator: Optional[torch.Generator] = None,
          device=None) -> torch.Tensor:
    """z ~ N(0, I): (n, Z)."""
    return torch.randn(n, latent_dim, generator=generator,
                       device=generator.device if generator is not None else device).to(device)


def decode(encoder: nn.Module, z: torch.Tensor, shape, *, settings: VFASettings,
           labels: Optional[torch.Tensor] = None, scale: Optional[float] = None,
           generator: Optional[torch.Generator] = None, refiner: Optional[nn.Module] = None,
           start: Optional[fa.FrozenStart] = None) -> torch.Tensor:
    """VFA's decoder (Figure 3, right), no graph: z (B, Z) [, labels (B,)] -> (B, *shape) [, G]."""
    return decode_full(encoder, inner_target(z, settings, labels, scale), shape, settings,
                       refiner, start, generator)


def decode_full(encoder: nn.Module, target: torch.Tensor, shape, settings: VFASettings,
                refiner: Optional[nn.Module] = None, start: Optional[fa.FrozenStart] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """:func:`decode` of a whole inner target (B, Z [+ K]) (:func:`latent_of`)."""
    image = _solve(encoder, target, shape, settings, create_graph=False, generator=generator,
                   start=start).image
    if refiner is not None:
        with torch.no_grad():
            image = refiner(image)
    return image.detach()


def sample(encoder: nn.Module, n: int, shape, *, settings: VFASettings, latent_dim: int,
           labels: Optional[torch.Tensor] = None, scale: Optional[float] = None,
           generator: Optional[torch.Generator] = None,
           refiner: Optional[nn.Module] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n decoded z ~ N(0, I) [, random classes]: (images (n, C, H, W), z (n, Z), labels (n,))."""
    device = next(encoder.parameters()).device
    z = prior(n, latent_dim, generator).to(device)
    if settings.conditional and labels is None:
        labels = torch.randint(settings.num_classes, (n,), generator=generator,
                               device=generator.device if generator is not None else None)
    labels = labels.to(device) if labels is not None else torch.empty(0, dtype=torch.long)
    return (decode(encoder, z, shape, settings=settings, labels=labels, scale=scale,
                   generator=generator, refiner=refiner), z, labels)


def latent_of(encoder: nn.Module, x: torch.Tensor, settings: VFASettings) -> torch.Tensor:
    """mu(x), with c(x) appended when conditional: (B, C, H, W) -> (B, Z [+ K]), no graph."""
    with torch.no_grad():
        out = encoder(x)
    return torch.cat([out["mu"], out["logits"]], 1) if settings.conditional else out["mu"]


def reconstruct(encoder: nn.Module, x: torch.Tensor, *, settings: VFASettings,
                refiner: Optional[nn.Module] = None, batch_size: int = 500) -> torch.Tensor:
    """x (N, C, H, W) decoded from :func:`latent_of` alone, in batches, on x's device."""
    device = next(encoder.parameters()).device
    return torch.cat([decode_full(encoder, latent_of(encoder, c.to(device), settings),
                                  c.shape[1:], settings, refiner).to(x.device)
                      for c in x.split(batch_size)])


def interpolation_grid(encoder: nn.Module, corners: torch.Tensor, steps: int, *,
                       settings: VFASettings, refiner: Optional[nn.Module] = None) -> torch.Tensor:
    """Figures 8, 10, 12: corners (4, C, H, W: TL, TR, BL, BR) mixed bilinearly, decoded:
    (steps * steps, C, H, W), row-major. Raises ValueError: not 4 corners."""
    if corners.shape[0] != 4:
        raise ValueError(f"need 4 corner images, got {corners.shape[0]}")
    device = next(encoder.parameters()).device
    z = latent_of(encoder, corners.to(device), settings)
    t = torch.linspace(0, 1, steps, device=device)
    a, b = (u.reshape(-1, 1) for u in torch.meshgrid(t, t, indexing="ij"))  # a: down, b: right
    target = (1 - a) * (1 - b) * z[0] + (1 - a) * b * z[1] + a * (1 - b) * z[2] + a * b * z[3]
    return decode_full(encoder, target, corners.shape[1:], settings, refiner)


def vfagan_step(encoder: nn.Module, refiner: nn.Module, discriminator: nn.Module,
                opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, x: torch.Tensor,
                labels: Optional[torch.Tensor] = None, *, settings: VFASettings, latent_dim: int,
                perceptual_weight: float = 0.01, fake_source: str = "reconstruction",
                generator: Optional[torch.Generator] = None,
                opt_e: Optional[torch.optim.Optimizer] = None,
                weight_clamp: Optional[float] = 2 ** 0.5) -> dict[str, float]:
    """One VFA-GAN step (Eq. 6-8; ``opt_e``: E's :func:`vfa_step` first, Figure 4), x (B, C, H, W):
    floats loss_d, loss_g, adv_g, perc [, enc_*]. Raises ValueError; NonFiniteLossError."""
    fa.check_choice("fake_source", fake_source, FAKE_SOURCES)
    logs = {}
    fa.check_batch(x, refiner, deferred=opt_e is not None)  # the encoder's step reads the range
    if opt_e is not None:
        enc_logs, e_x, r_hat = _vfa_update(encoder, opt_e, x, labels, settings, generator,
                                           weight_clamp)
        logs = {f"enc_{k}": v for k, v in enc_logs.items()}
    else:
        with torch.no_grad():
            e_x = encoder(x)
        r_hat = decode(encoder, reparameterise(e_x["mu"], e_x["logvar"], generator),
                       x.shape[1:], settings=settings, labels=labels)
    r_prior = None  # r of z ~ N(0, I) and uniform classes
    if fake_source != "reconstruction":
        r_prior = sample(encoder, x.shape[0], x.shape[1:], settings=settings,
                         latent_dim=latent_dim, generator=generator)[0]
    # G's images with a graph to G; D's fakes without one
    fake_g = refiner(r_prior if fake_source == "prior" else r_hat)
    with torch.no_grad():
        fake_d = refiner(r_prior) if fake_source == "authors" else fake_g.detach()
    opt_d.zero_grad(set_to_none=True)
    # Eq. 8: L_D = ||1 - D(x)||^2 + ||-1 - D(G(r))||^2
    loss_d = lsgan_discriminator_loss(discriminator(x), discriminator(fake_d))
    fa.refuse_non_finite({"adversarial": loss_d, "adversarial (G's images)": fake_g,
                          "adversarial (D's fakes)": fake_d},
                         what="VFA-GAN's discriminator loss (Eq. 8) or its fakes")
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    adv = lsgan_generator_loss(discriminator(fake_g))
    perc = torch.zeros((), device=x.device)
    if perceptual_weight > 0:
        e_g = encoder(fake_g if fake_source != "prior" else refiner(r_hat))
        perc = perceptual_moments_loss(e_x["mu"], bounded_logvar(e_x["logvar"]).exp(),
                                       e_g["mu"], bounded_logvar(e_g["logvar"]).exp())
    # Eq. 7: L_G = ||1 - D(G(r))||^2 + lambda perceptual
    loss_g = adv + perceptual_weight * perc
    values = fa.read_once([loss_d, loss_g, adv, perc])  # G's one sync
    fa.update(refiner, opt_g, loss_g, values[2:], {"adversarial": adv, "perceptual": perc},
              "VFA-GAN's refiner loss (Eq. 7)", None, only=True)
    return {**logs, **dict(zip(("loss_d", "loss_g", "adv_g", "perc"), values))}
