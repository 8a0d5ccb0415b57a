"""What notebooks 03 (VFA) and 04 (VFA-GAN and the baselines) call after training:
samples, Frechet distances, reconstruction errors, sizes and timings, and the claims of
Sections 3.3-3.4 and 5. The models themselves are built and trained by
:mod:`fa_utils.wiring`; :class:`Trial` holds one seed's models.
"""
from __future__ import annotations

import math
import statistics as stats
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from . import baselines, claims, config, fid, metrics, vfa
from .config import SEED_STREAMS
from . import data as data_mod
from .experiments import ImageData, scaled_architectures
from .models import (Encoder, FAGenerator, architecture, count_parameters, init_orthogonal_)
from .metrics import fastest_times
from .paper import IMPLIED_ARCHITECTURES, SAMPLING_DEVICE, SIZES_AND_TIMES, TABLE2_FID
from .train import History, resolve_device, seeded_generator

# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def num_classes(dataset: str) -> int:
    """Classes of a labeled dataset (MNIST, CIFAR-10: 10), 0 for unlabeled ones."""
    return data_mod.dataset_info(dataset).num_classes or 0


def vfa_settings(cfg: config.VFAConfig) -> vfa.VFASettings:
    """The method's settings of a VFA config (class head only for labeled datasets)."""
    return vfa.VFASettings.from_config(cfg, num_classes(cfg.dataset))


# --------------------------------------------------------------------------------------
# VFA (notebook 03) and its encoder in notebook 04
# --------------------------------------------------------------------------------------


def vfa_claims(dataset: str, rec_mse: float, mean_mse: float,
               emphasis: Optional[list[tuple[float, float, float]]], *, asserted: bool
               ) -> list[claims.Claim]:
    """Notebook 03's claims (Section 3.3 / Figure 3, Section 3.4 / Figure 8) as
    :class:`fa_utils.claims.Claim` objects, ids as in :data:`fa_utils.paper.CATALOGUE`.

    Args:
        dataset: the run's dataset.
        rec_mse: held-out MSE per pixel of VFA's reconstruction (r from mu(x)).
        mean_mse: the mean training image's held-out MSE per pixel.
        emphasis: :func:`class_emphasis_stats` rows (one-hot value, class score, accuracy),
            or ``None`` for an unconditional run (unlabeled data): "not measured".
        asserted: the notebook asserts them (quick and paper).
    """
    rec_ok = rec_mse < mean_mse
    out = [claims.Claim(
        "fig3.vfa_reconstructs", "3.3, Figure 3", "VFA reconstructs held-out images from the "
        "latent (our reading: better than the mean training image)", "Figure 3 (diagram)",
        f"MSE per pixel {rec_mse:.4f} vs mean image {mean_mse:.4f}", claims.verdict(rec_ok),
        "" if rec_ok else "VFA's reconstruction is not below the mean image at this budget",
        (f"figures/fig_vfa_training_{dataset}.png",), asserted)]
    if emphasis is None:
        out.append(claims.Claim(
            "fig8.onehot_emphasis", "3.4, Figure 8", "A larger one-hot value makes the "
            "conditional samples show the wanted class", "Figure 8 / 6b (images)", "-",
            claims.NOT_MEASURED, f"{dataset} has no classes: VFA runs unconditional",
            (), False))
        return out
    first, last = emphasis[0], emphasis[-1]
    ok = last[2] > first[2]
    out.append(claims.Claim(
        "fig8.onehot_emphasis", "3.4, Figure 8", "A larger one-hot value makes the conditional "
        "samples show the wanted class (an independent classifier's accuracy rises from the "
        "smallest to the largest value)", "Figure 6b (images, no number)",
        f"accuracy {first[2]:.0%} at one-hot {first[0]:g}, {last[2]:.0%} at {last[0]:g}",
        claims.verdict(ok), "" if ok else "the accuracy does not rise with the one-hot value",
        (f"results/vfa_class_emphasis_{dataset}.md", f"figures/fig06b_class_emphasis_{dataset}.png",
         f"figures/fig08_vfa_samples_interpolation_{dataset}.png"), asserted))
    return out


def class_emphasis_stats(encoder: Encoder, settings: vfa.VFASettings, latent_dim: int, shape,
                         scales, judge: nn.Module, *, per_class: int = 20,
                         seed: int = 0, refiner: Optional[nn.Module] = None
                         ) -> list[tuple[float, float, float]]:
    """How the one-hot value s changes conditional samples (Figure 6b, quantified).

    For every s: ``per_class`` prior draws z for each class k, decoded with s * onehot(k)
    (and refined by ``refiner``, VFA-GAN's G, when given). Returns rows (s, mean class-head
    score c(r)_k of the wanted class on r, accuracy of the judge
    (:func:`fa_utils.wiring.train_judge`) at recognising k in the images shown: r, or G(r)
    with a refiner).
    """
    device = next(encoder.parameters()).device
    g = seeded_generator(seed)
    k = settings.num_classes
    z = vfa.prior(per_class * k, latent_dim, g).to(device)
    labels = torch.arange(k, device=device).repeat_interleave(per_class)
    rows = []
    for s in scales:
        r = vfa.decode(encoder, z, shape, settings=settings, labels=labels, scale=float(s))
        with torch.no_grad():
            score = encoder(r)["logits"].gather(1, labels[:, None]).mean().item()
            shown = r if refiner is None else refiner(r)
        accuracy = class_accuracy(judge, shown, labels)
        rows.append((float(s), score, float(sum(accuracy) / len(accuracy))))
    return rows


#: Figure 8's rows are drawn at the smallest measured one-hot value whose samples the
#: judge assigns to the wanted class at least this often.
CLASS_ROW_ACCURACY = 0.8


def choose_class_scale(rows, target: float = CLASS_ROW_ACCURACY) -> float:
    """The one-hot value at which to draw class rows: the smallest s of
    :func:`class_emphasis_stats` rows whose judge accuracy is >= ``target``, else the
    s with the highest accuracy.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("no class-emphasis rows to choose a one-hot value from")
    good = [r[0] for r in rows if r[2] >= target]
    return min(good) if good else max(rows, key=lambda r: r[2])[0]


def class_accuracy(judge: nn.Module, images: torch.Tensor, labels: torch.Tensor
                   ) -> list[float]:
    """Per class k (0..K-1 present in ``labels``, in order): the share of the images asked
    for class k that the judge assigns to k. images (N, C, H, W), clamped to [0, 1];
    labels (N,)."""
    pred = fid.recognise(judge, images)[1]
    labels = labels.cpu()
    return [float((pred[labels == c] == c).float().mean()) for c in labels.unique().tolist()]


def describe_emphasis(rows) -> str:
    """One computed sentence on :func:`class_emphasis_stats` rows."""
    lo, hi = rows[0], rows[-1]
    trend = "rises" if hi[2] > lo[2] else "does not rise"
    return (f"Judge accuracy on the wanted class {trend} from {lo[2]:.2f} at one-hot value "
            f"{lo[0]:g} to {hi[2]:.2f} at {hi[0]:g}; the class head's score c(r)_k goes from "
            f"{lo[1]:.2f} to {hi[1]:.2f}.")


def latent_pca(encoder: Encoder, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """mu(x) projected on its two principal axes: ((N, 2), fraction of variance they hold)."""
    device = next(encoder.parameters()).device
    with torch.no_grad():
        mu = torch.cat([encoder(c.to(device))["mu"].cpu() for c in x.split(500)])
    centred = mu - mu.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:2].T, float((s[:2] ** 2).sum() / (s ** 2).sum())


# --------------------------------------------------------------------------------------
# VFA-GAN and the baselines (notebook 04)
# --------------------------------------------------------------------------------------


def make_refiner(gcfg: config.VFAGANConfig) -> FAGenerator:
    """Table 11's generator G with ``gen_width`` filters (times ``width_scale``, at least 8)
    and ``gen_kernel`` kernels, orthogonal initialisation (Section 4: "the encoder and
    generator networks")."""
    width = max(8, round(gcfg.gen_width * gcfg.width_scale))
    return init_orthogonal_(FAGenerator(architecture(gcfg.dataset).channels,
                                        width=width, kernel=gcfg.gen_kernel))


def autoencode(encoder: Encoder, decoder: nn.Module, x: torch.Tensor, head: str = "z",
               batch_size: int = 500) -> torch.Tensor:
    """D(E(x)[head]) in batches without a graph (the VAE uses its mean, head ``mu``)."""
    device = next(encoder.parameters()).device
    with torch.no_grad():
        return torch.cat([decoder(encoder(c.to(device))[head]).cpu() for c in x.split(batch_size)])


@dataclass
class Trial:
    """Every model of one Table 2 trial (one seed)."""

    seed: int
    vcfg: config.VFAConfig
    settings: vfa.VFASettings
    encoder: Encoder  # VFA (and VFA-GAN's encoder)
    refiner: nn.Module  # VFA-GAN's G
    ae: tuple[Encoder, nn.Module]
    vae: tuple[Encoder, nn.Module]
    gan: nn.Module
    histories: dict[str, History] = field(default_factory=dict)


GENERATIVE_MODELS = ("VAE", "GAN", "VFA", "VFA-GAN")


def generate(trial: Trial, model: str, n: int, *, seed: int = 0,
             batch_size: int = 500) -> torch.Tensor:
    """n prior samples of ``model`` (one of :data:`GENERATIVE_MODELS`) in [0, 1], on the CPU.

    VAE / GAN: decoder(z), z ~ N(0, I). VFA: :func:`fa_utils.vfa.sample` (random classes
    for a conditional VFA, one-hot value as in training); VFA-GAN: the same r refined by G.
    Images are clamped to [0, 1] (a no-op with sigmoid outputs).
    """
    g = seeded_generator(seed)
    arch = trial.encoder.arch
    shape = (arch.channels, arch.size, arch.size)
    out = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        if model in ("VAE", "GAN"):
            net = trial.vae[1] if model == "VAE" else trial.gan
            device = next(net.parameters()).device
            z = vfa.prior(m, _latent_in(net), g).to(device)
            with torch.no_grad():
                images = net(z)
        elif model in ("VFA", "VFA-GAN"):
            images, _, _ = vfa.sample(trial.encoder, m, shape, settings=trial.settings,
                                      latent_dim=trial.vcfg.latent_dim, generator=g,
                                      refiner=trial.refiner if model == "VFA-GAN" else None)
        else:
            raise ValueError(f"unknown model {model!r}; choose one of {list(GENERATIVE_MODELS)}")
        out.append(images.detach().float().cpu().clamp(0, 1))
    return torch.cat(out)


def _latent_in(net: nn.Module) -> int:
    first = next(m for m in net.modules() if isinstance(m, nn.Linear))
    return first.in_features


#: The reference row of the samples table and Table 2.
REFERENCE = "held-out real images (reference)"


def sample_quality(images: torch.Tensor, judge: Optional[nn.Module] = None,
                   num_classes: int = 0) -> dict[str, Any]:
    """Diversity and recognisability of a set of samples (what tells a working generator
    from a collapsed or untrained one).

    Returns ``pixel_std``: the per-pixel standard deviation over the set, averaged over
    pixels (0 for identical samples); and, with a ``judge``: ``recognised`` (share of the
    samples whose top softmax is >= :data:`fa_utils.fid.CONFIDENT`), ``histogram`` (per
    class 0..num_classes-1, the share of all samples recognised as it) and ``classes``
    (how many classes hold >= 1 % of the samples). images (N, C, H, W).
    """
    images = images.clamp(0, 1)
    out: dict[str, Any] = {"pixel_std": float(images.float().std(0).mean())}
    if judge is not None:
        top, cls = fid.recognise(judge, images)
        sure = top >= fid.CONFIDENT
        hist = torch.bincount(cls[sure], minlength=num_classes).float() / len(images)
        out.update(recognised=float(sure.float().mean()), histogram=hist.tolist(),
                   classes=int((hist >= 0.01).sum()))
    return out


def quality_rows(quality: dict[str, dict], judged: dict[str, list[fid.FIDResult]]
                 ) -> list[tuple]:
    """Rows of the samples table: model | per-pixel std | share recognised | classes
    covered | recognised per class (% of the samples) | Frechet distance | KID +- sd
    (first trial); ``quality`` from :func:`sample_quality`, ``judged`` from
    :func:`judge_samples`."""
    rows = []
    for m, q in quality.items():
        r = judged[m][0]
        rec = ([f"{q['recognised']:.3f}", q["classes"],
                " ".join(f"{c}:{100 * v:.0f}" for c, v in enumerate(q["histogram"]))]
               if "recognised" in q else [])
        rows.append((m, round(q["pixel_std"], 4), *rec, f"{r.value:.1f}",
                     f"{r.kid:.4g} +- {r.kid_std:.2g}"))
    return rows


def quality_columns(judge: bool) -> list[str]:
    """Column names of :func:`quality_rows`."""
    return (["model", "per-pixel std over the samples"]
            + (["share recognised with confidence >= 0.9", "classes covered (>= 1 % of samples)",
                "recognised per class (% of samples, class:share)"] if judge else [])
            + ["Frechet distance vs held-out", "KID vs held-out (+- sd over subsets)"])


def budget_rows(trial: Trial, gcfg: config.VFAGANConfig, n_train: int) -> list[tuple]:
    """Each model's training budget as run, read off its history (so resumed runs count
    too): model | networks trained | optimiser | optimiser steps | images seen per network |
    epochs | seconds per step on this machine (``History.seconds`` / steps; "-" when the
    checkpoint predates the timing).

    VFA-GAN's encoder is VFA's (two-stage schedule); its G and D get their own steps.
    """
    def steps(name: str) -> int:
        series = next(iter(trial.histories[name].train.values()), [])
        return int(series[-1][0]) if series else 0

    def per_step(name: str, n: int) -> str:
        s = trial.histories[name].seconds
        return f"{s / n:.3f}" if n and s > 0 else "-"

    b = gcfg.batch_size
    adam = lambda lr, b1: f"Adam lr {lr:g}, betas ({b1:g}, {gcfg.beta2:g})"  # noqa: E731
    vfa_opt = adam(trial.vcfg.lr, trial.vcfg.beta1)
    rows = [("VFA", "encoder (heads mu, logvar" + (", logits)" if trial.settings.conditional
                                                    else ")"), vfa_opt),
            ("VFA-GAN", "G (Table 11), D (Table 10); encoder = VFA's",
             adam(gcfg.gan_lr, gcfg.beta1)),
            ("AE", "encoder + decoder", adam(gcfg.baseline_lr, gcfg.baseline_beta1)),
            ("VAE", "encoder + decoder", adam(gcfg.baseline_lr, gcfg.baseline_beta1)),
            ("GAN", f"G + D ({gcfg.gan_discriminator}; one D step, one G step per batch)",
             adam(gcfg.gan_lr, gcfg.beta1))]
    out = []
    for m, nets, opt in rows:
        n = steps(m)
        out.append((m, nets, opt, n, n * b, f"{n * b / max(n_train, 1):.1f}", per_step(m, n)))
    return out


BUDGET_COLUMNS = ["model", "networks trained", "optimiser", "optimiser steps",
                  "images seen (per network)", "epochs", "seconds per step"]


# --------------------------------------------------------------------------------------
# Table 2: Frechet distances (the paper's: fa_utils.paper.TABLE2_FID)
# --------------------------------------------------------------------------------------


def prior_samples(trials: list[Trial], n: int) -> dict[str, list[torch.Tensor]]:
    """``n`` prior samples of every model of :data:`GENERATIVE_MODELS` per trial (seed
    stream ``"samples"``): {model: [(n, C, H, W) per trial]}."""
    return {m: [generate(t, m, n, seed=SEED_STREAMS["samples"] + t.seed) for t in trials]
            for m in GENERATIVE_MODELS}


def judge_samples(sets: dict[str, list[torch.Tensor]], data: ImageData,
                  gcfg: config.VFAGANConfig, judge: Optional[nn.Module] = None
                  ) -> dict[str, list[fid.FIDResult]]:
    """Frechet distance and KID (:func:`fa_utils.fid.distances`) of every set against the
    held-out real images, plus :data:`REFERENCE`: ``gcfg.fid_samples`` training images
    against the same held-out images (the floor at this sample size).

    The feature is Inception when its weights load (:func:`fa_utils.fid.frechet_feature`);
    else the judge's penultimate layer (labelled data, ``judge`` given), else the
    bottleneck of a :class:`fa_utils.fid.FeatureAutoencoder` trained on ``gcfg.fid_real``
    training images (seed ``gcfg.seed``, at least ``gcfg.fid_autoencoder_steps`` steps).

    Returns:
        {model: [FIDResult per set], REFERENCE: [FIDResult]}.
    """
    from .experiments import train_images

    def fallback():
        if judge is not None:
            return fid.judge_feature(judge)
        ae = fid.train_feature_autoencoder(train_images(data, limit=gcfg.fid_real),
                                           seed=gcfg.seed, min_steps=gcfg.fid_autoencoder_steps,
                                           device=resolve_device(gcfg.device))
        return fid.feature_of(ae.features, ae.feature_dim, ae.feature_name, owner=ae)

    feature = fid.frechet_feature(fallback, device=resolve_device(gcfg.device))
    groups = {**sets, REFERENCE: [train_images(data, limit=gcfg.fid_samples)]}
    results = iter(fid.distances(data.test_x.clamp(0, 1), [x for xs in groups.values() for x in xs],
                                 feature, seed=gcfg.seed))
    return {m: [next(results) for _ in xs] for m, xs in groups.items()}


def _mean_std(values: list[float], scale: float = 1.0) -> str:
    if len(values) == 1:
        return f"{scale * values[0]:.2f} (1 seed)"
    return (f"{scale * stats.mean(values):.2f} +- {scale * stats.stdev(values):.2f} "
            f"({len(values)} seeds)")


def kid_noise(results: list[fid.FIDResult]) -> float:
    """The noise of a model's mean KID: the larger of its mean standard deviation over
    KID's random subsets and, with several seeds, the standard deviation over seeds."""
    spread = stats.stdev(r.kid for r in results) if len(results) > 1 else 0.0
    return max(stats.mean(r.kid_std for r in results), spread)


def frechet_rows(judged: dict[str, list[fid.FIDResult]], dataset: str) -> list[tuple]:
    """Table 2 rows: model | ours, paper-comparable FID | ours, not comparable | KID
    (+- :func:`kid_noise`) | feature | paper FID. A value goes in the comparable column
    only when every trial's :class:`fa_utils.fid.FIDResult` is ``comparable``."""
    rows = []
    paper = TABLE2_FID.get(dataset, {})
    for m, res in judged.items():
        comparable = all(r.comparable for r in res)
        text = _mean_std([r.value for r in res])
        kid = f"{stats.mean(r.kid for r in res):.4g} +- {kid_noise(res):.2g}"
        p = paper.get(m)
        rows.append((m, text if comparable else "-", "-" if comparable else text, kid,
                     f"{res[0].feature}, {res[0].n_real} held-out real vs {res[0].n_fake} "
                     + ("training images" if m == REFERENCE else "generated"),
                     f"{p[0]:.2f} +- {p[1]:.2f}" if p else "-"))
    return rows


#: A KID difference decides "A below B" only beyond this many combined noises
#: (:func:`kid_noise`, added in quadrature); inside it the claim is not resolved.
KID_MARGIN = 2.0


def kid_order(judged: dict[str, list[fid.FIDResult]], a: str, b: str) -> Optional[bool]:
    """Is ``a``'s mean KID below ``b``'s by more than :data:`KID_MARGIN` combined noises
    (True), above by as much (False), or inside the noise (None)?"""
    kid = {m: stats.mean(r.kid for r in judged[m]) for m in (a, b)}
    margin = KID_MARGIN * math.hypot(kid_noise(judged[a]), kid_noise(judged[b]))
    diff = kid[b] - kid[a]
    return True if diff > margin else (False if diff < -margin else None)


def describe_frechet(judged: dict[str, list[fid.FIDResult]]) -> str:
    """Computed sentences on the paper's Table 2 claims at this run's scale."""
    kid = {m: stats.mean(r.kid for r in res) for m, res in judged.items()}
    order = ", ".join(f"{m} {kid[m]:.4g}" for m in sorted(kid, key=kid.get))
    words = {True: "holds", False: "does NOT hold", None: "is not resolved (inside the noise)"}
    return (f"KID ({judged['VFA'][0].feature}), lowest first: {order}. The paper's claim "
            f"'VFA-GAN below VFA' {words[kid_order(judged, 'VFA-GAN', 'VFA')]} here.")


# --------------------------------------------------------------------------------------
# Figure 15: reconstruction error
# --------------------------------------------------------------------------------------


def reconstructions(trial: Trial, x: torch.Tensor, gcfg: config.VFAGANConfig
                    ) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Reconstructions of x by AE, VAE (its mean), GAN (argmin_z ||x - G(z)||^2), r (VFA's
    FA recovery from the latent alone) and G(r). Returns ({name: images}, the GAN search's
    curve of the mean squared error per image)."""
    out = {"AE": autoencode(*trial.ae, x), "VAE": autoencode(*trial.vae, x, head="mu")}
    gan_x, _, curve = baselines.gan_reconstruct(trial.gan, x, latent_dim=gcfg.latent_dim,
                                                steps=gcfg.gan_recon_steps, lr=gcfg.gan_recon_lr,
                                                seed=trial.seed)
    out["GAN"] = gan_x.cpu()
    out["r"] = vfa.reconstruct(trial.encoder, x, settings=trial.settings).cpu()
    out["G(r)"] = vfa.reconstruct(trial.encoder, x, settings=trial.settings,
                                  refiner=trial.refiner).cpu()
    return out, curve


def reconstruction_rows(x: torch.Tensor, recs: dict[str, torch.Tensor]) -> list[tuple]:
    """Rows: model | mean ||x - x_hat||^2 per image | per-pixel MSE."""
    return [(name, float((x - r.clamp(0, 1)).pow(2).flatten(1).sum(1).mean()),
             metrics.mse_per_pixel(x, r.clamp(0, 1))) for name, r in recs.items()]


def describe_reconstruction(rows, mean_image: Optional[float] = None) -> str:
    """Computed sentences comparing :func:`reconstruction_rows` with Figure 15's reading
    (Section 5: AE lowest; r comparable to the VAE; G(r) comparable to the GAN).
    ``mean_image``: the error per image of predicting the mean training image; models not
    below it have not learnt to reconstruct at this scale, and the sentence says which."""
    err = {r[0]: r[1] for r in rows}
    order = ", ".join(f"{m} {err[m]:.1f}" for m in sorted(err, key=err.get))
    lowest = min(err, key=err.get)
    text = (f"Mean squared error per image, lowest first: {order}. The paper's 'AE lowest' "
            f"{'holds' if lowest == 'AE' else 'does NOT hold'} here; r / VAE = "
            f"{err['r'] / err['VAE']:.2f}, G(r) / GAN = {err['G(r)'] / err['GAN']:.2f}.")
    if mean_image is not None:
        poor = [m for m in err if err[m] >= 0.9 * mean_image]
        text += (f" The mean training image scores {mean_image:.1f}; "
                 + (f"not clearly below it (within 10 %, or above): {', '.join(poor)}, i.e. not "
                    f"trained far enough at this profile to compare." if poor else
                    "every model is clearly below it."))
    return text


# --------------------------------------------------------------------------------------
# Tables 3-6: sizes and sampling times (the paper's: fa_utils.paper.SIZES_AND_TIMES)
# --------------------------------------------------------------------------------------


def paper_models(dataset: str, device: str = "meta") -> dict[str, list[nn.Module]]:
    """The networks of each sampling model as the paper's sizes imply
    (:data:`fa_utils.paper.IMPLIED_ARCHITECTURES`; what Tables 3-6 count: the VAE counts
    encoder + decoder, the GAN its generator, VFA-GAN the encoder + G; no discriminator),
    always at the paper's widths (also inside a
    :func:`fa_utils.models.scaled_architectures` block). ``device="meta"`` builds them
    without memory (for counts)."""
    a = IMPLIED_ARCHITECTURES[dataset]
    arch = architecture(dataset)
    with torch.device(device), scaled_architectures(1.0):
        vfa_enc = vfa.make_vfa_encoder(dataset, a.latent_dim, a.num_classes, orthogonal=False)
        vae_enc = vfa.make_vfa_encoder(dataset, a.latent_dim, 0, orthogonal=False)
        dec = baselines.make_decoder(dataset, a.latent_dim, a.decoder)
        gen = baselines.make_generator(dataset, a.latent_dim, a.decoder)
        refiner = FAGenerator(arch.channels, 128, a.gen_kernel)
    return {"VAE": [vae_enc, dec], "GAN": [gen], "VFA": [vfa_enc], "VFA-GAN": [vfa_enc, refiner]}


def parameter_counts(dataset: str) -> dict[str, int]:
    """Trainable parameters of each model of :func:`paper_models`."""
    return {m: sum(count_parameters(n) for n in nets) for m, nets in paper_models(dataset).items()}


def sampling_calls(dataset: str, *, batch: int = 1, device: str | torch.device = "auto",
                   frozen: bool = True) -> dict[str, Any]:
    """Zero-argument calls that draw ``batch`` samples with each model of
    :func:`paper_models` (fresh weights, eval mode: the time does not depend on them):
    ``"VAE"`` / ``"GAN"`` decoder(z) under no_grad; ``"VFA"`` one inner step from r_0 = 0
    (:func:`fa_utils.vfa.decode`: the transposed Jacobian, Eq. 2 / Figure 3, the conditional
    model with label 0; E(0) and its Jacobian are built once, as a trained model's decoder
    is, :func:`fa_utils.vfa.frozen_start`; ``frozen=False``: E(0) recomputed by every call);
    ``"VFA-GAN"`` the same plus the refiner G. Every call returns the images,
    (batch, C, H, W), on ``device``; z (batch, Z) is drawn once."""
    a = IMPLIED_ARCHITECTURES[dataset]
    arch = architecture(dataset)
    device = str(resolve_device(str(device)))
    nets = paper_models(dataset, device=device)
    for group in nets.values():
        for n in group:
            n.eval()
    settings = vfa.VFASettings(num_classes=a.num_classes)
    shape = (arch.channels, arch.size, arch.size)
    z = torch.randn(batch, a.latent_dim, device=device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    enc, refiner = nets["VFA-GAN"]

    start = vfa.frozen_start(enc, shape, settings) if frozen else None

    def vfa_draw(ref=None):
        return vfa.decode(enc, z, shape, settings=settings,
                          labels=labels if settings.conditional else None, refiner=ref,
                          start=start)

    def decode_only(net):
        with torch.no_grad():
            return net(z)

    return {"VAE": lambda: decode_only(nets["VAE"][1]), "GAN": lambda: decode_only(nets["GAN"][0]),
            "VFA": vfa_draw, "VFA-GAN": lambda: vfa_draw(refiner)}


def sampling_times(dataset: str, *, repeats: int = 10, batch: int = 1,
                   device: str = "auto") -> dict[str, float]:
    """Seconds to draw ``batch`` samples (paper: "a single sample") with each model
    of :func:`paper_models`, measured in one run (the calls of :func:`sampling_calls`).
    Returns seconds per *sample*: the fastest of ``repeats`` interleaved rounds after two
    warm-up rounds (:func:`fa_utils.metrics.fastest_times`, CUDA synchronised if present)."""
    calls = sampling_calls(dataset, batch=batch, device=device)
    return {m: t / batch for m, t in fastest_times(calls, repeats=repeats).items()}


def size_time_name(dataset: str) -> str:
    """The results table of ``dataset``'s Table 3-6, e.g. ``"table03_mnist_size_time"``."""
    return f"table{SIZES_AND_TIMES[dataset][0]:02d}_{dataset}_size_time"


def size_time_rows(dataset: str, counts: dict[str, int],
                   times: Optional[dict[str, float]] = None) -> list[tuple]:
    """Rows of one of Tables 3-6 (:data:`fa_utils.paper.SIZES_AND_TIMES`): model | params
    ours | paper (unit) | ours/paper | within 0.5% | ms per sample ours (this machine) |
    paper ms per sample (on :data:`fa_utils.paper.SAMPLING_DEVICE`). ``times=None`` (not
    measured in this run): our time columns are ``-``."""
    _, size_unit, time_unit, paper = SIZES_AND_TIMES[dataset]
    ms = (lambda m: round(times[m] * 1e3, 3)) if times is not None else (lambda m: None)  # noqa: E731
    rows = []
    for m in GENERATIVE_MODELS:
        p_size, p_time = paper[m]
        ratio = counts[m] / (p_size * size_unit)
        rows.append((m, f"{counts[m]:,}", f"{p_size:g} x 1e{int(round(math.log10(size_unit)))}",
                     round(ratio, 4), "yes" if abs(ratio - 1) <= 0.005 else "NO",
                     ms(m), round(p_time * time_unit * 1e3, 3)))
    vfa_vae = counts["VFA"] / counts["VAE"]
    p_vfa_vae = paper["VFA"][0] / paper["VAE"][0]
    rows.append(("ratio VFA / VAE", f"{vfa_vae:.3f}", f"{p_vfa_vae:.3f}", "-", "-",
                 round(times["VFA"] / times["VAE"], 3) if times is not None else None,
                 round(paper["VFA"][1] / paper["VAE"][1], 3)))
    return rows


SIZE_TIME_COLUMNS = ["model", "params (ours, as the sizes imply)", "paper size", "ours / paper",
                     "within 0.5 %", "ms per sample (ours, batch 1, device in the notes)",
                     f"paper ms per sample ({SAMPLING_DEVICE})"]


# --------------------------------------------------------------------------------------
# The paper's comparative claims (Section 5), as data (notebook 04)
# --------------------------------------------------------------------------------------

#: "Comparable" reconstruction errors (Figure 15's text): within this factor of each other.
COMPARABLE_FACTOR = 2.0
#: "Approximately the same" sampling time (Tables 3-6): a VFA / VAE ratio within this factor.
SAME_TIME_FACTOR = 1.5


def comparison_claims(dataset: str, *, judged: dict[str, list[fid.FIDResult]],
                      reconstruction: list[tuple], size_ratio: dict[str, float],
                      time_ratio: float, asserted: tuple[str, ...] = ()) -> list[claims.Claim]:
    """The paper's comparative claims of Section 5 (Table 2, Figure 15, Tables 3-6) with
    our numbers and verdicts.

    Args:
        dataset: the run's dataset (the paper's numbers are that dataset's).
        judged: :func:`judge_samples`' results (model -> per-trial results); Table 2's
            orderings are decided on KID by :func:`kid_order` (not resolved inside the
            noise).
        reconstruction: :func:`reconstruction_rows` (model, error per image, MSE per pixel).
        size_ratio: dataset -> VFA / VAE parameters (:func:`parameter_counts`).
        time_ratio: VFA / VAE sampling time per image on ``dataset``, measured here.
        asserted: claim ids the notebook asserts at this profile.

    Returns:
        :class:`fa_utils.claims.Claim` list, in the paper's order.
    """
    paper_fd = TABLE2_FID.get(dataset, {})
    fd = {m: stats.mean(r.value for r in res) for m, res in judged.items()}
    kid = {m: stats.mean(r.kid for r in res) for m, res in judged.items()}
    feature = judged["VFA"][0].feature
    comparable = all(r.comparable for res in judged.values() for r in res)
    fd_note = "" if comparable else (f"; {feature} features, not the paper's Inception FID: "
                                     f"the ordering is comparable, the values are not")
    out = []

    def add(cid, section, text, paper, ours, ok, why_not, evidence):
        out.append(claims.Claim(cid, section, text, paper, ours, claims.verdict(ok),
                           "" if ok else why_not, tuple(evidence), cid in asserted))

    t2 = [f"results/table02_frechet_{dataset}.md", f"results/samples_quality_{dataset}.md",
          f"figures/fig_samples_all_models_{dataset}.png"]
    rule = (f" (decided on KID: a difference beyond {KID_MARGIN:g} x the combined noise, "
            f"the standard deviations over KID's subsets and seeds in quadrature)")
    for a, cid, text, why in (
            ("VAE", "table2.vae_below_vfa", "VAE samples score a lower FID than VFA's",
             "VFA's linear one-step sampler scores below the VAE"),
            ("GAN", "table2.gan_below_vfa", "GAN samples score a lower FID than VFA's",
             "VFA's linear one-step sampler scores below the GAN"),
            ("VFA-GAN", "table2.vfagan_below_vfa", "\"the generator improves the quality of "
             "the samples by lowering the FID score\": VFA-GAN below VFA",
             "the refiner did not lower the distance")):
        paper = (f"{a} {paper_fd[a][0]:.2f} vs VFA {paper_fd['VFA'][0]:.2f}"
                 if a in paper_fd and "VFA" in paper_fd else "-")
        ours = (f"KID {a} {kid[a]:.4g} vs VFA {kid['VFA']:.4g}; Frechet "
                f"distance {a} {fd[a]:.4g} vs VFA {fd['VFA']:.4g}{fd_note}")
        ok = kid_order(judged, a, "VFA")
        verdict = claims.NOT_RESOLVED if ok is None else claims.verdict(ok)
        reason = ("the KID difference is inside the noise" if ok is None else
                  "" if ok else f"at this budget {why}")
        out.append(claims.Claim(cid, "5, Table 2", text + rule, paper, ours, verdict, reason,
                                tuple(t2), cid in asserted))

    err = {r[0]: r[1] for r in reconstruction}
    f15 = [f"results/fig15_reconstruction_l2_{dataset}.md",
           f"figures/fig15_reconstruction_l2_{dataset}.png",
           f"figures/fig07_reconstructions_{dataset}.png"]
    order = ", ".join(f"{m} {err[m]:.1f}" for m in sorted(err, key=err.get))
    lowest = min(err, key=err.get)
    amortised = [m for m in err if m != "GAN"]  # one forward pass per image
    lowest_amortised = min(amortised, key=err.get)
    search = ("the GAN's row is a per-image search (argmin_z ||x - G(z)||^2 by Adam on each "
              "image's own z), which fits every held-out image separately")
    add("fig15.ae_lowest", "5, Figure 15", "\"autoencoders have the lowest loss\" (reconstruction "
        "L2 of held-out images)", "Figure 15 (bars, no numbers)", f"error per image: {order}",
        lowest == "AE",
        f"{lowest} is lower than the AE; {search}" + (
            "; among the models that reconstruct in one pass the AE is the lowest"
            if lowest_amortised == "AE" and lowest == "GAN" else ""), f15)
    why_ratio = {"fig15.r_comparable_vae": "",
                 "fig15.gr_comparable_gan": (
                     f"; {search}, while G(r) is one pass of VFA-GAN's generator from VFA's r, "
                     f"which it sharpens into a plausible digit that need not be the same one "
                     f"(Figure 7)" + ("; G(r) is even above r" if err["G(r)"] > err["r"] else ""))}
    for a, b, cid, words in (("r", "VAE", "fig15.r_comparable_vae",
                              "\"the reconstructions from feature alignment should be compared to VAEs\""),
                             ("G(r)", "GAN", "fig15.gr_comparable_gan",
                              "\"the generator should be compared to GAN\"")):
        ratio = err[a] / err[b]
        add(cid, "5, Figure 15", f"{words}: {a}'s error is comparable to the {b}'s (our reading: "
            f"within a factor {COMPARABLE_FACTOR:g})", "Figure 15 (bars, no numbers)",
            f"{a} / {b} = {ratio:.2f}", 1 / COMPARABLE_FACTOR <= ratio <= COMPARABLE_FACTOR,
            f"{a} and the {b} differ by more than a factor {COMPARABLE_FACTOR:g}{why_ratio[cid]}",
            f15)

    paper_sizes = {ds: SIZES_AND_TIMES[ds][3]["VFA"][0] / SIZES_AND_TIMES[ds][3]["VAE"][0]
                   for ds in ("mnist", "cifar10", "celeba")}
    ours_sizes = {ds: size_ratio[ds] for ds in paper_sizes}
    add("tables3-5.vfa_half_vae", "5, Tables 3-5", "VFA has \"only half the number of "
        "parameters\" of the VAE (MNIST, CIFAR-10, CelebA)",
        "VFA / VAE " + ", ".join(f"{ds} {v:.2f}" for ds, v in paper_sizes.items()),
        "VFA / VAE " + ", ".join(f"{ds} {v:.2f}" for ds, v in ours_sizes.items()),
        all(0.45 < v < 0.55 for v in ours_sizes.values()),
        "the architectures read from the paper's sizes do not give half",
        [f"results/table0{SIZES_AND_TIMES[ds][0]}_{ds}_size_time.md" for ds in paper_sizes])
    p_vfa, p_vae = SIZES_AND_TIMES[dataset][3]["VFA"][1], SIZES_AND_TIMES[dataset][3]["VAE"][1]
    measured = time_ratio == time_ratio  # not NaN
    add("tables3-6.vfa_same_time", f"5, Table {SIZES_AND_TIMES[dataset][0]}", "\"VFA takes "
        "approximately the same amount of time as VAE\" to draw one sample (our reading: a "
        f"ratio within a factor {SAME_TIME_FACTOR:g})", f"VFA / VAE {p_vfa / p_vae:.2f} ({SAMPLING_DEVICE})",
        f"VFA / VAE {time_ratio:.2f} (this machine, batch 1)" if measured else "-",
        (1 / SAME_TIME_FACTOR <= time_ratio <= SAME_TIME_FACTOR) if measured else None,
        "VFA's time differs from the VAE's by more than the factor" if measured else
        "sampling time not measured for this dataset at this profile",
        [f"results/table0{SIZES_AND_TIMES[dataset][0]}_{dataset}_size_time.md"])
    return out
