"""VFA (Section 3.3, Eq. 5, Figure 3) and VFA-GAN (Section 3.4, Eq. 6-8, Figure 4).

VFA: an FA encoder whose latent is a Gaussian posterior, without a decoder.

* Heads ``mu``, ``logvar`` (and, for conditional generation, a linear class head ``logits``
  parallel to them) on the encoder of Tables 7-9.
* Data side: z_x = mu(x) + eps * sigma(x) (reparameterisation).
* Random-input side (``rand_side``): z_r = mu(r) (the paper: "we do not have a random
  normal vector for this variable") or mu(r) + sigma(r) (the authors' code).
* Conditional: the inner target appends ``class_scale * onehot(y)`` and the random side
  appends c(r), so the inner energy is 1/2 ||z_x - z_r||^2 + 1/2 ||s onehot(y) - c(r)||^2.
  A larger one-hot value at sampling emphasises the class (Figure 6b).
* Loss (Eq. 5 / Eq. 6): ||x - r_hat||^2 + beta KL(q(z|x) || N(0, I)) per example, with beta
  fixed or drawn from U(0, beta_max) per example (Section 4), plus, for the conditional
  model, ``class_weight * ||onehot(y) - c(x)||^2`` (our reading of "supervised training
  ... simultaneously"). Batch mean of per-example sums.
* Sampling: z ~ N(0, I), the inner optimisation from r_0 (:func:`fa_utils.fa.align`),
  image = squash(r_T).

With r_0 = 0 and T = 1 the sampler is r_1 = J(0)^T (z - z_r(0)): *linear* in z, a
probabilistic-PCA-like generator (docs/method.md section 9). That is why VFA samples are
blurry stroke-like blobs on MNIST and why the refiner G of VFA-GAN matters.

VFA-GAN adds a refiner G (Table 11, :class:`fa_utils.models.FAGenerator`) and a
discriminator D (Table 10) with least-squares losses (real +1, fake -1):

    L_G = ||1 - D(G(r_fake))||^2 + lambda (||mu(x) - mu(G(r_hat))||^2
                                           + ||sigma^2(x) - sigma^2(G(r_hat))||^2)    (Eq. 7)
    L_D = ||1 - D(x)||^2 + ||-1 - D(G(r_fake))||^2                                  (Eq. 8)

L_E (Eq. 6) involves neither G nor D, and L_G's gradient is applied to G only, so the
encoder's training does not depend on G and D: :func:`vfagan_step` takes an optional
encoder optimiser for joint training (Figure 4) and otherwise trains G and D against a
fixed encoder (our default "two-stage" schedule; identical encoder, G and D see its final
state rather than a moving one). ``fake_source`` decides which images G and D see
(``"reconstruction"``: Eq. 7-8 as written; ``"prior"``; ``"authors"``: G on
reconstructions, D's fakes from prior samples, as in the authors' code).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from . import fa
from .fa import FrozenStart
from .losses import (bounded_logvar, kl_normal, lsgan_discriminator_loss,
                     lsgan_generator_loss, perceptual_moments_loss, reparameterise)
from .models import Encoder, MeanPlusSigma, architecture, clamp_weights_, init_orthogonal_

RAND_SIDES = ("mu", "mu+sigma")
BETA_SCHEDULES = ("fixed", "uniform")
FAKE_SOURCES = ("reconstruction", "prior", "authors")


@dataclass(frozen=True)
class VFASettings:
    """The method's knobs (not the run's): inner problem, random side, loss weights.

    Attributes:
        T, tau, r_init, squash: the inner problem, as in :func:`fa_utils.fa.align`.
        rand_side: ``"mu"`` (paper) or ``"mu+sigma"`` (authors' code).
        num_classes: width of the class head ``logits``; 0 for an unconditional VFA.
        class_scale: the one-hot value of the inner target during training.
        class_weight: weight of the supervised ||onehot(y) - c(x)||^2 term.
        beta: KL weight (``"fixed"``) or the upper end of U(0, beta) (``"uniform"``).
        beta_schedule: ``"fixed"`` or ``"uniform"`` (Section 4: one draw per example).
    """

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
        if self.rand_side not in RAND_SIDES:
            raise ValueError(f"unknown rand_side {self.rand_side!r}; choose one of {list(RAND_SIDES)}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}; "
                             f"choose one of {list(BETA_SCHEDULES)}")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> "VFASettings":
        """From a :class:`fa_utils.config.VFAConfig`; ``num_classes`` 0 for unlabeled data
        (the class head is used only when ``cfg.conditional`` and the data has labels)."""
        return cls(T=cfg.T, tau=cfg.tau, r_init=cfg.r_init, squash=cfg.squash,
                   rand_side=cfg.rand_side, num_classes=num_classes if cfg.conditional else 0,
                   class_scale=cfg.class_scale, class_weight=cfg.class_weight, beta=cfg.beta,
                   beta_schedule=cfg.beta_schedule)


# --------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------


def vfa_heads(latent_dim: int, num_classes: int = 0) -> dict[str, int]:
    """``{"mu": Z, "logvar": Z}`` plus ``"logits": K`` for a conditional VFA."""
    heads = {"mu": int(latent_dim), "logvar": int(latent_dim)}
    if num_classes:
        heads["logits"] = int(num_classes)
    return heads


def make_vfa_encoder(dataset: str, latent_dim: int, num_classes: int = 0, *,
                     orthogonal: bool = True) -> Encoder:
    """The encoder of Tables 7-9 with VFA heads; orthogonal init (Section 4) by default.

    ``orthogonal=False`` keeps PyTorch's default init (much faster for the 4096 x 4096
    layers; for parameter counts and shape tests).
    """
    enc = Encoder(architecture(dataset), vfa_heads(latent_dim, num_classes))
    return init_orthogonal_(enc) if orthogonal else enc


# --------------------------------------------------------------------------------------
# The inner problem
# --------------------------------------------------------------------------------------


def random_side(encoder: nn.Module, settings: VFASettings) -> Callable[[torch.Tensor], torch.Tensor]:
    """r -> z_r, the random-input side of the inner energy.

    ``mu(r)`` or ``mu(r) + sigma(r)`` (sigma = exp(logvar / 2), the log-variance bounded
    by :func:`fa_utils.losses.bounded_logvar`), with c(r) appended for a conditional VFA.
    Shapes: (B, C, H, W) -> (B, Z [+ K]).
    """
    return fa.head_encoder(encoder, _read_out_heads(settings))


def one_hot(labels: torch.Tensor, num_classes: int, scale: float = 1.0, *,
            validate: bool = True) -> torch.Tensor:
    """``scale * onehot(labels)``: (B,) int -> (B, K) float.

    ``validate=False``: no check here (no device sync); a label outside [0, K) gives a row
    of zeros, and the caller checks :func:`label_bounds` with its own sync (the training
    step does, before its update).

    Raises:
        ValueError: a label outside [0, num_classes) (e.g. -1 of an unlabeled dataset).
    """
    labels = labels.long()
    if validate and labels.numel():
        check_label_range(labels.min().item(), labels.max().item(), num_classes)
    classes = torch.arange(num_classes, device=labels.device)
    return scale * (labels[:, None] == classes).float()


def label_bounds(labels: torch.Tensor) -> torch.Tensor:
    """(min, max) of the labels (B,) as a (2,) tensor on their device, without a sync."""
    return torch.stack(torch.aminmax(labels.long()))


def check_label_range(lo: float, hi: float, num_classes: int) -> None:
    """Refuse labels whose smallest and largest values leave [0, num_classes).

    Raises:
        ValueError: says what to do for unlabeled data.
    """
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) for a conditional VFA, got "
                         f"{int(lo)}..{int(hi)} (unlabeled data: use conditional=False)")


def inner_target(z: torch.Tensor, settings: VFASettings, labels: Optional[torch.Tensor] = None,
                 scale: Optional[float] = None, class_values: Optional[torch.Tensor] = None,
                 *, validate: bool = True) -> torch.Tensor:
    """The inner problem's target: z, with ``scale * onehot(labels)`` (or ``class_values``)
    appended for a conditional VFA (``validate``: as in :func:`one_hot`).
    (B, Z) -> (B, Z [+ K])."""
    if not settings.conditional:
        return z
    if class_values is None:
        if labels is None:
            raise ValueError("a conditional VFA needs labels (or class_values) for its target")
        class_values = one_hot(labels, settings.num_classes,
                               settings.class_scale if scale is None else scale,
                               validate=validate).to(z)
    return torch.cat([z, class_values.to(z)], 1)


def _decode_target(encoder, target, shape, settings, generator=None, start=None) -> torch.Tensor:
    """The image of a full inner target (B, Z [+ K]), without a graph (:func:`_align`);
    ``start``: a :func:`frozen_start` of this encoder and settings."""
    return _align(encoder, target, shape, settings, create_graph=False, generator=generator,
                  start=start).image


def _read_out_heads(settings: VFASettings) -> tuple:
    """The random side as a read-out of the heads (:data:`fa_utils.models.Head`):
    ``mu`` or mu + sigma, then ``logits`` for a conditional VFA."""
    side = "mu" if settings.rand_side == "mu" else MeanPlusSigma("mu", "logvar")
    return (side, "logits") if settings.conditional else (side,)


def _align(encoder, target, shape, settings, *, create_graph, generator=None, start=None):
    """The inner problem on :func:`random_side` (:func:`fa_utils.fa.solve`). Either side
    is a read-out of the heads, so the first step from r_0 = 0 is the shared one
    (:func:`fa_utils.fa.first_step`)."""
    return fa.solve(encoder, target, shape, head=_read_out_heads(settings), T=settings.T,
                    tau=settings.tau, r_init=settings.r_init, squash=settings.squash,
                    generator=generator, create_graph=create_graph, start=start)


def frozen_start(encoder: nn.Module, shape, settings: VFASettings) -> FrozenStart:
    """The random side (:func:`random_side`) and its Jacobian at r_0 = 0, kept for
    sampling from a trained encoder (:class:`fa_utils.fa.FrozenStart`: a snapshot
    of the weights as they are). ``shape``: (C, H, W).
    """
    return fa.frozen_start(encoder, shape, head=_read_out_heads(settings))


def draw_betas(n: int, settings: VFASettings, generator: Optional[torch.Generator] = None,
               device=None) -> torch.Tensor:
    """Per-example KL weights (B,): ``beta`` (fixed) or U(0, beta) (Section 4)."""
    if settings.beta_schedule == "fixed":
        return torch.full((n,), float(settings.beta), device=device)
    u = torch.rand(n, generator=generator,
                   device=generator.device if generator is not None else device)
    return (settings.beta * u).to(device)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def vfa_loss(encoder: nn.Module, x: torch.Tensor, labels: Optional[torch.Tensor] = None, *,
             settings: VFASettings, generator: Optional[torch.Generator] = None,
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Eq. 5 / Eq. 6: ||x - r_hat||^2 + beta KL (+ the class term), batch mean.

    Shapes: x (B, C, H, W), labels (B,) -> (scalar loss with a graph to the encoder,
    parts {"rec", "kl", "cls"} as (B,) tensors (detached), r_hat image (B, C, H, W)).
    """
    loss, parts, image, _ = _vfa_loss(encoder, x, labels, settings=settings,
                                      generator=generator)
    return loss, parts, image


def _vfa_loss(encoder, x, labels, *, settings, generator, validate: bool = True):
    """:func:`vfa_loss` and E(x) (the dict of heads, with their graph); ``validate``: the
    labels' range (:func:`one_hot`)."""
    out = encoder(x)
    z_x = reparameterise(out["mu"], out["logvar"], generator)
    target = inner_target(z_x, settings, labels, validate=validate)
    res = _align(encoder, target, x.shape[1:], settings, create_graph=True, generator=generator)
    rec = (x - res.image).pow(2).flatten(1).sum(1)
    kl = kl_normal(out["mu"], out["logvar"])
    betas = draw_betas(x.shape[0], settings, generator, device=x.device)
    per_example = rec + betas * kl
    cls = torch.zeros_like(rec)
    if settings.conditional and settings.class_weight > 0:
        cls = (one_hot(labels, settings.num_classes, validate=False).to(x)
               - out["logits"]).pow(2).sum(1)
        per_example = per_example + settings.class_weight * cls
    parts = {"rec": rec.detach(), "kl": kl.detach(), "cls": cls.detach()}
    return per_example.mean(), parts, res.image, out


def vfa_step(encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             labels: Optional[torch.Tensor] = None, *, settings: VFASettings,
             generator: Optional[torch.Generator] = None,
             weight_clamp: Optional[float] = 2 ** 0.5) -> dict[str, float]:
    """One VFA training step: :func:`vfa_loss`, double backward, Adam, Eq. 9 clamp.

    Shapes: x (B, C, H, W) float in [0, 1] in the encoder's dtype, labels (B,).

    Returns floats ``loss``, ``mse`` (per pixel), ``kl`` and ``cls`` (batch means), read in
    one device sync before the update, with the batch's value range
    (:func:`fa_utils.train.check_batch`).

    Raises:
        ValueError: bad images (:func:`fa_utils.train.check_batch`).
        NonFiniteLossError: a term (rec, KL, class) is NaN or infinite for some example;
            the update is refused before ``backward()``: nothing is written to the weights.
            The log-variance is bounded (:func:`fa_utils.losses.bounded_logvar`), so KL
            overflows only through mu.
    """
    return _vfa_update(encoder, optimizer, x, labels, settings=settings, generator=generator,
                       weight_clamp=weight_clamp)[0]


def _vfa_update(encoder, optimizer, x, labels, *, settings, generator, weight_clamp):
    """:func:`vfa_step`; also returns what the step computed before the update, detached:
    E(x) (the dict of heads) and the image r_hat (B, C, H, W) of z_x = mu + eps sigma."""
    from .train import check_batch, check_batch_range, refuse_non_finite

    bounds = check_batch(x, encoder, deferred=True)
    with_labels = settings.conditional and labels is not None and labels.numel() > 0
    optimizer.zero_grad(set_to_none=True)
    loss, parts, image, out = _vfa_loss(encoder, x, labels, settings=settings,
                                        generator=generator, validate=False)
    with torch.no_grad():
        mse = (image - x).pow(2).mean()
        read = [torch.stack([loss.detach(), mse, parts["kl"].mean(), parts["cls"].mean()])]
        if with_labels:
            read.append(label_bounds(labels).to(read[0]))
        if bounds is not None:
            read.append(bounds.to(read[0]))
        # the step's one sync: its values, the labels' and the images' ranges
        read = torch.cat(read).tolist()
    values = read[:4]
    if with_labels:
        check_label_range(read[4], read[5], settings.num_classes)
    check_batch_range(read[6 if with_labels else 4:])
    if not all(map(math.isfinite, values)) or isinstance(encoder, nn.parallel.DistributedDataParallel):
        refuse_non_finite({"rec": parts["rec"], "KL": parts["kl"], "class": parts["cls"],
                           "loss": loss}, what="the VFA loss",
                          collective=isinstance(encoder, nn.parallel.DistributedDataParallel))
    loss.backward()
    optimizer.step()
    if weight_clamp is not None:
        clamp_weights_(encoder, weight_clamp)
    return (dict(zip(("loss", "mse", "kl", "cls"), values)),
            {k: v.detach() for k, v in out.items()}, image.detach())


# --------------------------------------------------------------------------------------
# Sampling, reconstruction, interpolation, conditional emphasis
# --------------------------------------------------------------------------------------


def prior(n: int, latent_dim: int, generator: Optional[torch.Generator] = None,
          device=None) -> torch.Tensor:
    """z ~ N(0, I): (n, Z)."""
    z = torch.randn(n, latent_dim, generator=generator,
                    device=generator.device if generator is not None else device)
    return z.to(device) if device is not None else z


def decode(encoder: nn.Module, z: torch.Tensor, shape, *, settings: VFASettings,
           labels: Optional[torch.Tensor] = None, scale: Optional[float] = None,
           class_values: Optional[torch.Tensor] = None,
           generator: Optional[torch.Generator] = None,
           refiner: Optional[nn.Module] = None,
           start: Optional[FrozenStart] = None) -> torch.Tensor:
    """The image of latent z by the inner optimisation (Figure 3, right), detached.

    The inner problem on :func:`random_side` from r_0 = 0 (:func:`_align`); with T = 1 a
    sample costs E(0) and one transposed-Jacobian product, or only the product with
    ``start`` (:func:`frozen_start`, built once after training). A conditional VFA takes
    ``labels`` (one-hot times ``scale``, default the training ``class_scale``) or raw
    ``class_values`` (B, K). ``refiner``: VFA-GAN's G, applied to the image.

    Shapes: z (B, Z), shape (C, H, W) -> (B, C, H, W). Each row depends only on its own
    z (and label), never on the rest of the batch, in eval mode.
    """
    target = inner_target(z, settings, labels, scale, class_values)
    image = _decode_target(encoder, target, shape, settings, generator, start)
    if refiner is not None:
        with torch.no_grad():
            image = refiner(image)
    return image.detach()


def sample(encoder: nn.Module, n: int, shape, *, settings: VFASettings, latent_dim: int,
           labels: Optional[torch.Tensor] = None, scale: Optional[float] = None,
           generator: Optional[torch.Generator] = None,
           refiner: Optional[nn.Module] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw n samples: z ~ N(0, I) (and, for a conditional VFA without ``labels``, classes
    uniformly at random), then :func:`decode`.

    Returns (images (n, C, H, W), z (n, Z), labels (n,) or an empty tensor).
    """
    device = next(encoder.parameters()).device
    z = prior(n, latent_dim, generator).to(device)
    if settings.conditional and labels is None:
        labels = torch.randint(settings.num_classes, (n,), generator=generator,
                               device=generator.device if generator is not None else None)
    labels = labels.to(device) if labels is not None else torch.empty(0, dtype=torch.long)
    images = decode(encoder, z, shape, settings=settings,
                    labels=labels if settings.conditional else None, scale=scale,
                    generator=generator, refiner=refiner)
    return images, z, labels


def latent_of(encoder: nn.Module, x: torch.Tensor, settings: VFASettings) -> torch.Tensor:
    """The latent that :func:`reconstruct` decodes: mu(x), with c(x) appended for a
    conditional VFA (the class part comes from the image, not from its label).
    (B, C, H, W) -> (B, Z [+ K]), no graph."""
    with torch.no_grad():
        out = encoder(x)
    z = out["mu"]
    if settings.conditional:
        z = torch.cat([z, out["logits"]], 1)
    return z


def decode_full(encoder: nn.Module, target: torch.Tensor, shape, settings: VFASettings,
                refiner: Optional[nn.Module] = None,
                start: Optional[FrozenStart] = None) -> torch.Tensor:
    """The image of a full inner target (the latent of :func:`latent_of`: mu, with the
    class values appended for a conditional VFA), detached; ``refiner`` applied after.
    ``start``: as in :func:`decode`.
    Shapes: target (B, Z [+ K]), shape (C, H, W) -> (B, C, H, W)."""
    image = _decode_target(encoder, target, shape, settings, start=start)
    if refiner is not None:
        with torch.no_grad():
            image = refiner(image)
    return image.detach()


def reconstruct(encoder: nn.Module, x: torch.Tensor, *, settings: VFASettings,
                refiner: Optional[nn.Module] = None, batch_size: int = 500) -> torch.Tensor:
    """r (or G(r) with ``refiner``) recovered from the latent of x alone (:func:`latent_of`),
    in batches, as computed (not clamped: with ``squash="none"`` clamp to [0, 1] to read an
    image). (N, C, H, W) -> (N, C, H, W) on x's device."""
    device = next(encoder.parameters()).device
    out = []
    for chunk in x.split(batch_size):
        target = latent_of(encoder, chunk.to(device), settings)
        out.append(decode_full(encoder, target, chunk.shape[1:], settings, refiner).to(x.device))
    return torch.cat(out)


def interpolation_grid(encoder: nn.Module, corners: torch.Tensor, steps: int, *,
                       settings: VFASettings, refiner: Optional[nn.Module] = None) -> torch.Tensor:
    """Bilinear interpolation among four encoded images (Figures 8, 10, 12 right).

    ``corners`` (4, C, H, W): top-left, top-right, bottom-left, bottom-right. Their latents
    (:func:`latent_of`) are mixed bilinearly on a ``steps`` x ``steps`` grid and decoded.
    Returns (steps * steps, C, H, W), row-major.
    """
    if corners.shape[0] != 4:
        raise ValueError(f"need 4 corner images, got {corners.shape[0]}")
    device = next(encoder.parameters()).device
    z = latent_of(encoder, corners.to(device), settings)
    t = torch.linspace(0, 1, steps, device=device)
    a, b = torch.meshgrid(t, t, indexing="ij")  # a: down, b: right
    a, b = a.reshape(-1, 1), b.reshape(-1, 1)
    target = ((1 - a) * (1 - b) * z[0] + (1 - a) * b * z[1] + a * (1 - b) * z[2] + a * b * z[3])
    return decode_full(encoder, target, corners.shape[1:], settings, refiner)


def class_emphasis(encoder: nn.Module, z: torch.Tensor, shape, scales, *,
                   settings: VFASettings, refiner: Optional[nn.Module] = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Figure 6b: one fixed latent z decoded for every class at every one-hot value.

    Args:
        z: (Z,) or (1, Z) the fixed latent.
        scales: one-hot values s (0 removes the class term's pull towards any class).

    Returns:
        images (len(scales) * K, C, H, W), row s, column class k; and the class head's
        score of the wanted class c(r)_k, (len(scales), K) (on r, before any refiner).
    """
    if not settings.conditional:
        raise ValueError("class emphasis needs a conditional VFA (num_classes > 0)")
    k = settings.num_classes
    z = z.reshape(1, -1)
    images, scores = [], []
    classes = torch.arange(k, device=z.device)
    for s in scales:
        r = decode(encoder, z.expand(k, -1), shape, settings=settings, labels=classes,
                   scale=float(s))
        with torch.no_grad():
            logits = encoder(r)["logits"]
        scores.append(logits[classes, classes].cpu())
        if refiner is not None:
            with torch.no_grad():
                r = refiner(r)
        images.append(r.cpu())
    return torch.cat(images), torch.stack(scores)


# --------------------------------------------------------------------------------------
# VFA-GAN
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Parameters of ``module`` without gradients inside the block (restored afterwards).
    Gradients still flow *through* it to its inputs; its train/eval mode is unchanged (D's
    BatchNorm uses batch statistics in G's step as in D's own)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def vfagan_fakes(encoder: nn.Module, x: torch.Tensor, labels: Optional[torch.Tensor], *,
                 settings: VFASettings, latent_dim: int, source: str,
                 generator: Optional[torch.Generator] = None,
                 encoded: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """The FA images r that G refines into fakes, without a graph: ``"reconstruction"``:
    r_hat of the real batch (z_x = mu + eps sigma, its labels; ``encoded``: E(x) when
    already computed, else it is); ``"prior"``: r of z ~ N(0, I) and random classes.
    (B, C, H, W) -> (B, C, H, W)."""
    n = x.shape[0]
    if source == "reconstruction":
        with torch.no_grad():
            out = encoder(x) if encoded is None else encoded
            z = reparameterise(out["mu"], out["logvar"], generator)
        return decode(encoder, z, x.shape[1:], settings=settings, labels=labels)
    if source == "prior":
        z = prior(n, latent_dim, generator).to(x.device)
        rand_labels = None
        if settings.conditional:
            rand_labels = torch.randint(settings.num_classes, (n,), generator=generator,
                                        device=generator.device if generator is not None else None
                                        ).to(x.device)
        return decode(encoder, z, x.shape[1:], settings=settings, labels=rand_labels)
    raise ValueError(f"unknown fake source {source!r}; choose 'reconstruction' or 'prior'")


def vfagan_step(encoder: nn.Module, refiner: nn.Module, discriminator: nn.Module,
                opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, x: torch.Tensor,
                labels: Optional[torch.Tensor] = None, *, settings: VFASettings,
                latent_dim: int, perceptual_weight: float = 0.01,
                fake_source: str = "reconstruction",
                generator: Optional[torch.Generator] = None,
                opt_e: Optional[torch.optim.Optimizer] = None,
                weight_clamp: Optional[float] = 2 ** 0.5) -> dict[str, float]:
    """One VFA-GAN step (Eq. 6-8): [encoder step,] discriminator step, refiner step.

    Args:
        encoder, refiner (G, Table 11), discriminator (D, Table 10).
        opt_e: when given, also one :func:`vfa_step` of the encoder first (joint training,
            Figure 4); G and D then take that step's r_hat and E(x), computed before its
            update (as the authors' code does), instead of encoding and decoding x again.
            Otherwise the encoder stays fixed (two-stage schedule) and E(x) is computed
            once for both r_hat and the perceptual term.
        fake_source: ``"reconstruction"`` (Eq. 7-8), ``"prior"`` or ``"authors"`` (G's
            adversarial term on reconstructions, D's fakes from the prior).
        perceptual_weight: lambda of Eq. 7 (0: the term is not computed).

    Returns floats: ``loss_d``, ``loss_g``, ``adv_g``, ``perc`` (and the encoder's values,
    prefixed ``enc_``, when ``opt_e`` is given). Batch means of per-example terms. Device
    syncs: one per network's update (and one for the images' check without ``opt_e``).

    Raises:
        ValueError: bad images x (B, C, H, W) (:func:`fa_utils.train.check_batch`) or an
            unknown ``fake_source``.
        NonFiniteLossError: D's loss or the fakes (term "adversarial") are not finite:
            refused before D's update; G's adversarial or perceptual term is not finite:
            G's update is refused (D's update of this step was applied). Nothing
            non-finite is written to any weights.
    """
    from .train import check_batch, refuse_non_finite

    if fake_source not in FAKE_SOURCES:
        raise ValueError(f"unknown fake_source {fake_source!r}; choose one of {list(FAKE_SOURCES)}")
    logs: dict[str, float] = {}
    r_hat = None
    if opt_e is not None:  # the encoder step reads the batch's range in its one sync
        check_batch(x, refiner, deferred=True)
        enc_logs, encoded, r_hat = _vfa_update(encoder, opt_e, x, labels, settings=settings,
                                               generator=generator, weight_clamp=weight_clamp)
        logs.update({f"enc_{k}": v for k, v in enc_logs.items()})
    else:
        check_batch(x, refiner)
        with torch.no_grad():
            encoded = encoder(x)
    kw = dict(settings=settings, latent_dim=latent_dim, generator=generator)
    with frozen(encoder):
        if r_hat is None:
            r_hat = vfagan_fakes(encoder, x, labels, source="reconstruction", encoded=encoded,
                                 **kw)
        r_prior = (vfagan_fakes(encoder, x, labels, source="prior", **kw)
                   if fake_source in ("prior", "authors") else None)
        r_g = r_prior if fake_source == "prior" else r_hat
        r_d = r_hat if fake_source == "reconstruction" else r_prior

        fake_g = refiner(r_g)
        if r_d is r_g:
            fake_d = fake_g.detach()
        else:
            with torch.no_grad():  # D's fakes need no graph to G
                fake_d = refiner(r_d)

        # discriminator (Eq. 8)
        opt_d.zero_grad(set_to_none=True)
        loss_d = lsgan_discriminator_loss(discriminator(x), discriminator(fake_d))
        refuse_non_finite({"adversarial": loss_d, "adversarial (G's images)": fake_g,
                           "adversarial (D's fakes)": fake_d},
                          what="VFA-GAN's discriminator loss (Eq. 8) or its fakes")
        loss_d.backward()
        opt_d.step()

        # refiner (Eq. 7); D's and the encoder's parameters get no gradient
        opt_g.zero_grad(set_to_none=True)
        with frozen(discriminator):
            adv = lsgan_generator_loss(discriminator(fake_g))
        perc = torch.zeros((), device=x.device)
        if perceptual_weight > 0:
            refined = fake_g if r_g is r_hat else refiner(r_hat)
            out_g = encoder(refined)
            perc = perceptual_moments_loss(encoded["mu"], bounded_logvar(encoded["logvar"]).exp(),
                                           out_g["mu"], bounded_logvar(out_g["logvar"]).exp())
        loss_g = adv + perceptual_weight * perc
        values = torch.stack([loss_d.detach(), loss_g.detach(), adv.detach(),
                              perc.detach()]).tolist()  # G's one sync
        if not all(map(math.isfinite, values[2:])):
            refuse_non_finite({"adversarial": adv, "perceptual": perc},
                              what="VFA-GAN's refiner loss (Eq. 7)")
        loss_g.backward()
        opt_g.step()
    logs.update(dict(zip(("loss_d", "loss_g", "adv_g", "perc"), values)))
    return logs
