"""Wiring: every trained model of the notebooks, built from a validated config.

This is the one place where a config becomes networks, optimisers, a step function and a
checkpoint, handed to the method-agnostic :func:`fa_utils.train.fit` by :func:`_fit`:

=========================  =============================================  ===========
builder                    what it trains                                 notebooks
=========================  =============================================  ===========
:func:`train_fa_encoder`   an FA encoder (Algorithm 1), also data-        02, 05, 07
                           parallel (:func:`fa_utils.distributed.train_fa`)
:func:`train_vfa`          a VFA encoder (Eq. 5-6)                        03, 04, 07
:func:`train_vfagan`       VFA-GAN's G and D on a trained encoder         04
:func:`train_autoencoder`  the AE and VAE baselines                       04
:func:`train_gan`          the GAN baseline                               04
:func:`train_trial`        all of the above for one Table 2 seed          04
:func:`train_local`        a local-FA network (Algorithm 2)               05, 07
=========================  =============================================  ===========

One checkpoint-identity policy (:func:`identity`, :func:`checkpoint_for`): a checkpoint
is ``runs/checkpoints/<model>-<dataset>-<digest>-<profile>.pt``, the digest covering every
setting that changes what the model learns and none that only says where, how long or what
is evaluated (:data:`NOT_LEARNT`). A changed setting trains a new file; going back resumes
the old one; more epochs resume the same file. :func:`fit` still compares the stored
settings and refuses a file that disagrees.

One table of seed streams (:data:`fa_utils.config.SEED_STREAMS`): model ``m`` of a run with seed ``s``
draws its initial weights after ``torch.manual_seed(s + offset)`` and its method's
randomness (r_0, eps, KL weights, z) from a generator seeded with ``s + offset + 1``.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn

from . import baselines, config, fa, fid, generative, local, metrics, vfa
from .config import SEED_STREAMS
from .experiments import ImageData, load_image_data, recover
from .models import Encoder, architecture, make_encoder, scaled_architectures, to_device
from .outputs import checkpoint_path
from .train import History, fit, images_only, make_adam, resolve_device, seeded_generator

#: Settings that never change what a network learns: where and how long it runs, and what
#: is evaluated after training. They are left out of a checkpoint's identity.
NOT_LEARNT = frozenset({
    "profile", "device", "epochs", "num_workers", "ckpt_every", "n_test",
    "latent2_epochs", "sweep_T", "sweep_tau",  # fa: the Figure 6a run and the sweep
    "emphasis_per_class", "emphasis_scales", "judge_epochs",  # vfa: Figure 6b, the judge
    "datasets", "memory_datasets", "memory_batch", "memory_repeats", "recon_T", "recon_tau",
})

#: The ``vfagan`` section's fields that each of its models learns from (the section holds
#: VFA-GAN's and the three baselines' settings side by side).
_DATA_KEYS = ("dataset", "data_source", "data_root", "n_train", "batch_size")
_AUTOENCODER_KEYS = _DATA_KEYS + ("latent_dim", "vae_decoder", "baseline_lr", "baseline_beta1",
                                  "beta2")
_GAN_SECTION_KEYS: Mapping[str, tuple] = MappingProxyType({
    "vfagan": _DATA_KEYS + ("gen_width", "gen_kernel", "perceptual_weight", "fake_source",
                            "gan_lr", "beta1", "beta2"),
    "ae": _AUTOENCODER_KEYS, "vae": _AUTOENCODER_KEYS,
    "gan": _DATA_KEYS + ("latent_dim", "vae_decoder", "gan_discriminator", "gan_lr", "beta1",
                         "beta2"),
})
#: What decides a baseline's starting weights (part of its identity, so that a checkpoint
#: trained from another initialisation is never resumed).
BASELINE_INIT = "he+bn"


def seeds(model: str, seed: int) -> tuple[int, int]:
    """(the ``torch.manual_seed`` before ``model``'s networks are built, the seed of its
    method's generator) for a run with ``seed`` (:data:`fa_utils.config.SEED_STREAMS`)."""
    offset = SEED_STREAMS[model]
    return seed + offset, seed + offset + 1


def identity(cfg, model: str, **extra) -> dict[str, Any]:
    """The settings that change what ``model`` learns: what its checkpoint must agree on.

    A section of its own (``fa``, ``vfa``, ``local``): every field but :data:`NOT_LEARNT`.
    The ``vfagan`` section: the model's fields (:data:`_GAN_SECTION_KEYS`), its data seed
    (``data_seed``: it shuffles the MNIST sample) and the initialisation. Then ``model``
    and ``extra`` (e.g. the trial seed, the latent size, the encoder's identity)."""
    values = config.to_dict(cfg)
    if model in _GAN_SECTION_KEYS:
        values = {k: values[k] for k in _GAN_SECTION_KEYS[model]}
        values["data_seed"] = cfg.seed
        values["init"] = BASELINE_INIT  # the discriminator's too (VFA-GAN)
        if cfg.width_scale != 1:  # (absent at 1, so that older checkpoints keep their names)
            values["width_scale"] = cfg.width_scale
    else:
        values = {k: v for k, v in values.items() if k not in NOT_LEARNT}
    values["method"] = model
    values.update(extra)
    return values


def checkpoint_for(stem: str, run_identity: Mapping[str, Any], profile: str) -> Path:
    """``runs/checkpoints/<stem>-<digest>-<profile>.pt``, the digest the first 8 hex digits
    of the SHA-1 of ``run_identity`` as sorted JSON (:func:`identity`)."""
    text = json.dumps(dict(run_identity), sort_keys=True, default=str)
    return checkpoint_path(f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:8]}", profile)


def _adam(params, lr: float, beta1: float, beta2: float, **kwargs):
    return make_adam(list(params), lr, (beta1, beta2), **kwargs)  # fused where available


def _fit(cfg, data: ImageData, step: Callable, *, stem: str, run_identity: dict,
         modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
         generator: torch.Generator, seed: int, device: torch.device,
         epochs: Optional[int] = None, eval_fn: Optional[Callable] = None,
         evals_per_epoch: int = 1, checkpoint: Optional[Path] = None, **fit_kwargs) -> History:
    """:func:`fa_utils.train.fit` with the run settings of ``cfg`` (batch size, epochs,
    checkpoint cadence, workers) and the checkpoint :func:`checkpoint_for` gives; the
    modules are left in eval mode. ``seed`` orders the data (the run's seed, shared by
    every model of a run, so that they see the same batches)."""
    history = fit(step, modules=modules, optimizers=optimizers, dataset=data.train,
                  batch_size=cfg.batch_size, epochs=epochs or cfg.epochs, seed=seed,
                  config=run_identity, generator=generator, device=device,
                  checkpoint=checkpoint or checkpoint_for(stem, run_identity, cfg.profile),
                  ckpt_every=cfg.ckpt_every, eval_fn=eval_fn,
                  eval_every=max(1, len(data.train) // cfg.batch_size // evals_per_epoch),
                  num_workers=cfg.num_workers, **fit_kwargs)
    for m in modules.values():
        m.eval()
    return history


# --------------------------------------------------------------------------------------
# FA (notebook 02) and its data-parallel form
# --------------------------------------------------------------------------------------


def _fa_step(encoder: nn.Module, optimizer: torch.optim.Optimizer, **settings) -> Callable:
    """``x -> fa.fa_step(encoder, optimizer, x, **settings)``: one process's FA step."""
    return functools.partial(fa.fa_step, encoder, optimizer, **settings)


def fa_identity(cfg: config.FAConfig, latent_dim: Optional[int] = None) -> dict[str, Any]:
    """:func:`identity` of the FA encoder of ``cfg`` with ``latent_dim`` (default
    ``cfg.latent_dim``)."""
    return identity(cfg, "fa", latent_dim=latent_dim or cfg.latent_dim)


def train_fa_encoder(cfg: config.FAConfig, data: ImageData, *, latent_dim: Optional[int] = None,
                     epochs: Optional[int] = None, name: str = "fa", progress: bool = True,
                     stop_after: Optional[int] = None, distributed: Any = None,
                     make_step: Optional[Callable] = None, fused_adam: Optional[bool] = None,
                     channels_last: bool = False,
                     checkpoint: Optional[Path] = None) -> tuple[Encoder, History]:
    """Train (or resume) an FA encoder with Algorithm 1 on ``data.train``.

    The encoder is Tables 7-9's for ``cfg.dataset`` (narrowed by ``cfg.width_scale`` < 1 at
    smoke) with one head ``z`` of ``latent_dim`` (default ``cfg.latent_dim``);
    Adam(lr, (beta1, beta2)); Eq. 9 clamp after every step. Held-out per-pixel MSE on
    ``data.test_x`` is logged once per epoch as ``test_mse``.

    Args:
        name: the checkpoint's model name (``fa``).
        distributed: a :class:`fa_utils.distributed.DistInfo` inside an initialised
            process group (its device is used; ``cfg.batch_size`` is the global batch,
            :func:`fa_utils.train.fit`), with ``make_step`` giving the data-parallel step
            (:func:`fa_utils.distributed.train_fa` passes both): the result is the
            one-process run's within fp32 rounding, in the same checkpoint.
        make_step: ``(encoder, optimizer, generator, **settings) -> step(x)`` where the
            settings are ``weight_clamp``, ``head``, ``T``, ``tau``, ``r_init``,
            ``squash``; default :func:`fa_utils.fa.fa_step` bound to them.
        fused_adam: ``None``: fused Adam where supported (:func:`fa_utils.train.make_adam`).
        channels_last: the encoder in channels_last memory format (docs/choices.md
            section 10).
        checkpoint: another file than :func:`checkpoint_for`'s.

    Returns:
        (encoder in eval mode, :class:`fa_utils.train.History`); with ``distributed`` the
        plain module inside the DDP wrapper.
    """
    latent_dim = latent_dim or cfg.latent_dim
    init_seed, method_seed = seeds("fa", cfg.seed)
    device = resolve_device(cfg.device) if distributed is None else distributed.device
    torch.manual_seed(init_seed)
    with scaled_architectures(cfg.width_scale):  # 1 (the paper's) except at smoke
        encoder = make_encoder(cfg.dataset, {"z": latent_dim}).to(device)
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    optimizer = _adam(encoder.parameters(), cfg.lr, cfg.beta1, cfg.beta2, fused=fused_adam)
    generator = seeded_generator(method_seed)
    settings = dict(weight_clamp=cfg.weight_clamp, head="z", T=cfg.T, tau=cfg.tau,
                    r_init=cfg.r_init, squash=cfg.squash)
    step = (make_step or _fa_step)(encoder, optimizer, generator=generator, **settings)

    def eval_fn() -> dict[str, float]:
        x_hat = recover(encoder, data.test_x, T=cfg.T, tau=cfg.tau, r_init=cfg.r_init,
                        squash=cfg.squash, seed=cfg.seed)
        return {"test_mse": metrics.mse_per_pixel(data.test_x, x_hat)}

    dist = distributed if distributed is not None and distributed.distributed else None
    history = _fit(cfg, data, images_only(step), stem=f"{name}-{cfg.dataset}",
                   run_identity=fa_identity(cfg, latent_dim), modules={"encoder": encoder},
                   optimizers={"adam": optimizer}, generator=generator, seed=cfg.seed,
                   device=device, epochs=epochs, eval_fn=eval_fn, checkpoint=checkpoint,
                   stop_after=stop_after, progress=progress, distributed=dist,
                   desc=f"FA {cfg.dataset} Z={latent_dim}"
                   + (f" x{distributed.world_size}" if dist is not None else ""),
                   nan_hint=f"Lower lr (now {cfg.lr}) or keep weight_clamp (now {cfg.weight_clamp}).")
    return encoder, history


def fa_checkpoint(cfg: config.FAConfig, latent_dim: Optional[int] = None,
                  name: str = "fa") -> Path:
    """Where :func:`train_fa_encoder` keeps the encoder of ``cfg`` (it may not exist)."""
    return checkpoint_for(f"{name}-{cfg.dataset}", fa_identity(cfg, latent_dim), cfg.profile)


# --------------------------------------------------------------------------------------
# VFA (notebook 03), VFA-GAN and the baselines (notebook 04)
# --------------------------------------------------------------------------------------


def _with_data(section: str, cfg, *, seed: int, **data_overrides):
    """``section``'s config at ``cfg``'s profile and device, with ``seed`` and ``cfg``'s
    data settings (:func:`fa_utils.config.data_settings`, ``data_overrides`` replacing
    some)."""
    base = config.make_config(section, cfg.profile, seed=seed, device=cfg.device)
    return replace(base, **vars(config.data_settings(cfg, **data_overrides)))


def vfa_config_for(gcfg: config.VFAGANConfig, seed: int) -> config.VFAConfig:
    """The ``vfa`` config whose encoder notebook 04 uses for trial ``seed``: the data
    settings (:class:`fa_utils.config.DataSettings`), budget (``epochs``, ``batch_size``:
    equal optimiser steps for every model of Table 2), device and width of ``gcfg``,
    everything else the ``vfa`` profile's (so it matches notebook 03's defaults and reuses
    its checkpoint)."""
    return replace(_with_data("vfa", gcfg, seed=seed), epochs=gcfg.epochs,
                   batch_size=gcfg.batch_size, width_scale=gcfg.width_scale)


def train_vfa(cfg: config.VFAConfig, data: ImageData, *, progress: bool = True,
              stop_after: Optional[int] = None) -> tuple[Encoder, History]:
    """Train (or resume) a VFA encoder (Eq. 5; Eq. 6 with the uniform beta schedule).

    Heads ``mu``, ``logvar`` (Z = ``cfg.latent_dim``) and, for a conditional VFA on a
    labeled dataset, ``logits``; Adam(lr, (beta1, beta2)); Eq. 9 clamp after every step.
    Logs ``test_mse`` (per pixel, reconstruction from the latent alone, clamped to [0, 1])
    once per epoch.

    Returns:
        (encoder in eval mode, history).
    """
    settings = generative.vfa_settings(cfg)
    init_seed, method_seed = seeds("vfa", cfg.seed)
    device = resolve_device(cfg.device)
    torch.manual_seed(init_seed)
    run_identity = identity(cfg, "vfa")
    ckpt = checkpoint_for(f"vfa-{cfg.dataset}", run_identity, cfg.profile)
    # a checkpoint overwrites the weights: skip the (slow, 4096-wide) orthogonal QR then
    with scaled_architectures(cfg.width_scale):  # 1 (the paper's) except at smoke
        encoder = vfa.make_vfa_encoder(cfg.dataset, cfg.latent_dim, settings.num_classes,
                                       orthogonal=not ckpt.exists())
    encoder = to_device(encoder, device)  # channels_last on a CPU (docs/choices.md section 14)
    opt = _adam(encoder.parameters(), cfg.lr, cfg.beta1, cfg.beta2)
    gen = seeded_generator(method_seed)

    def step(x, y):
        return vfa.vfa_step(encoder, opt, x, y if settings.conditional else None,
                            settings=settings, generator=gen, weight_clamp=cfg.weight_clamp)

    def eval_fn():  # the image read off r: clamped to [0, 1]
        return {"test_mse": metrics.mse_per_pixel(data.test_x, vfa.reconstruct(
            encoder, data.test_x.to(device), settings=settings).cpu().clamp(0, 1))}

    history = _fit(cfg, data, step, stem=f"vfa-{cfg.dataset}", run_identity=run_identity,
                   modules={"encoder": encoder}, optimizers={"adam": opt}, generator=gen,
                   seed=cfg.seed, device=device, eval_fn=eval_fn, checkpoint=ckpt,
                   stop_after=stop_after, desc=f"VFA {cfg.dataset}", progress=progress,
                   nan_hint=f"Lower lr (now {cfg.lr}); docs/method.md section 9: keep lr <= 1e-4 "
                            f"with the sigmoid.")
    return encoder, history


def train_vfagan(gcfg: config.VFAGANConfig, vcfg: config.VFAConfig, data: ImageData,
                 encoder: Encoder, *, seed: int, progress: bool = True
                 ) -> tuple[nn.Module, nn.Module, History]:
    """Train (or resume) G (Table 11) and D (Table 10) on top of a trained VFA encoder for
    the budget ``gcfg.epochs`` (Eq. 7-8; the encoder is fixed: two-stage schedule, see
    :mod:`fa_utils.vfa`).

    Returns:
        (G in eval mode, D, history).
    """
    settings = generative.vfa_settings(vcfg)
    init_seed, method_seed = seeds("vfagan", seed)
    device = resolve_device(gcfg.device)
    torch.manual_seed(init_seed)
    # channels_last on a CPU: G is most of a VFA-GAN step (docs/choices.md section 14)
    refiner = to_device(generative.make_refiner(gcfg), device)
    disc = to_device(baselines.make_discriminator(gcfg.dataset), device)
    opt_g = _adam(refiner.parameters(), gcfg.gan_lr, gcfg.beta1, gcfg.beta2)
    opt_d = _adam(disc.parameters(), gcfg.gan_lr, gcfg.beta1, gcfg.beta2)
    gen = seeded_generator(method_seed)
    encoder.eval()

    def step(x, y):
        return vfa.vfagan_step(encoder, refiner, disc, opt_g, opt_d, x,
                               y if settings.conditional else None, settings=settings,
                               latent_dim=vcfg.latent_dim,
                               perceptual_weight=gcfg.perceptual_weight,
                               fake_source=gcfg.fake_source, generator=gen)

    history = _fit(gcfg, data, step, stem=f"vfagan-{gcfg.dataset}",
                   run_identity=identity(gcfg, "vfagan", seed=seed,
                                         encoder=identity(vcfg, "vfa")),
                   modules={"refiner": refiner, "discriminator": disc},
                   optimizers={"g": opt_g, "d": opt_d}, generator=gen, seed=seed,
                   device=device, desc=f"VFA-GAN {gcfg.dataset}", progress=progress)
    return refiner, disc, history


def train_autoencoder(gcfg: config.VFAGANConfig, data: ImageData, *, kind: str, seed: int,
                      settings: Optional[vfa.VFASettings] = None, progress: bool = True
                      ) -> tuple[Encoder, nn.Module, History]:
    """Train (or resume) the AE (``kind="ae"``) or VAE (``"vae"``) baseline for the budget
    ``gcfg.epochs`` (see :class:`fa_utils.config.VFAGANConfig`): encoder of Tables 7-9 and
    decoder :func:`fa_utils.baselines.make_decoder`, both He-initialised
    (:mod:`fa_utils.baselines`), Adam(``baseline_lr``, (``baseline_beta1``, ``beta2``)).
    The VAE's KL weights follow ``settings`` (the VFA's beta schedule: the two differ
    only in the decoder). Logs held-out ``test_mse`` once per epoch.

    Returns:
        (encoder, decoder, history), both networks in eval mode.

    Raises:
        ValueError: ``kind`` is not "ae" or "vae".
    """
    if kind not in ("ae", "vae"):
        raise ValueError(f"kind must be 'ae' or 'vae', got {kind!r}")
    settings = settings or vfa.VFASettings()
    init_seed, method_seed = seeds(kind, seed)
    device = resolve_device(gcfg.device)
    torch.manual_seed(init_seed)
    heads = {"z": gcfg.latent_dim} if kind == "ae" else vfa.vfa_heads(gcfg.latent_dim)
    encoder = baselines.make_encoder(gcfg.dataset, heads).to(device)
    decoder = baselines.make_decoder(gcfg.dataset, gcfg.latent_dim, gcfg.vae_decoder).to(device)
    opt = _adam(list(encoder.parameters()) + list(decoder.parameters()), gcfg.baseline_lr,
                gcfg.baseline_beta1, gcfg.beta2)
    gen = seeded_generator(method_seed)
    head = "z" if kind == "ae" else "mu"

    def step(x, y):
        if kind == "ae":
            return baselines.ae_step(encoder, decoder, opt, x)
        betas = vfa.draw_betas(x.shape[0], settings, gen, device=x.device)
        return baselines.vae_step(encoder, decoder, opt, x, betas=betas, generator=gen)

    def eval_fn():
        return {"test_mse": metrics.mse_per_pixel(
            data.test_x, generative.autoencode(encoder, decoder, data.test_x, head))}

    history = _fit(gcfg, data, step, stem=f"{kind}-{gcfg.dataset}",
                   run_identity=identity(gcfg, kind, seed=seed, beta=settings.beta,
                                         beta_schedule=settings.beta_schedule),
                   modules={"encoder": encoder, "decoder": decoder}, optimizers={"adam": opt},
                   generator=gen, seed=seed, device=device, eval_fn=eval_fn,
                   desc=f"{kind.upper()} {gcfg.dataset}", progress=progress)
    return encoder, decoder, history


def train_gan(gcfg: config.VFAGANConfig, data: ImageData, *, seed: int, progress: bool = True
              ) -> tuple[nn.Module, nn.Module, History]:
    """Train (or resume) the least-squares GAN baseline for the budget ``gcfg.epochs``:
    generator :func:`fa_utils.baselines.make_generator` (He-initialised, BatchNorm),
    discriminator ``gcfg.gan_discriminator`` (:func:`fa_utils.baselines.make_discriminator`),
    Adam(``gan_lr``, (``beta1``, ``beta2``)); one step updates D then G
    (:func:`fa_utils.baselines.gan_step`).

    Returns:
        (generator in eval mode, discriminator, history).
    """
    init_seed, method_seed = seeds("gan", seed)
    device = resolve_device(gcfg.device)
    torch.manual_seed(init_seed)
    g_net = baselines.make_generator(gcfg.dataset, gcfg.latent_dim, gcfg.vae_decoder).to(device)
    disc = baselines.make_discriminator(gcfg.dataset, gcfg.gan_discriminator).to(device)
    opt_g = _adam(g_net.parameters(), gcfg.gan_lr, gcfg.beta1, gcfg.beta2)
    opt_d = _adam(disc.parameters(), gcfg.gan_lr, gcfg.beta1, gcfg.beta2)
    gen = seeded_generator(method_seed)
    step = images_only(functools.partial(baselines.gan_step, g_net, disc, opt_g, opt_d,
                                         latent_dim=gcfg.latent_dim, generator=gen))
    history = _fit(gcfg, data, step, stem=f"gan-{gcfg.dataset}",
                   run_identity=identity(gcfg, "gan", seed=seed),
                   modules={"generator": g_net, "discriminator": disc},
                   optimizers={"g": opt_g, "d": opt_d}, generator=gen, seed=seed,
                   device=device, desc=f"GAN {gcfg.dataset}", progress=progress)
    return g_net, disc, history


def train_trial(gcfg: config.VFAGANConfig, data: ImageData, seed: int, *,
                progress: bool = True) -> generative.Trial:
    """Train (or resume) VFA, VFA-GAN, AE, VAE and GAN with one seed (networks narrowed by
    ``gcfg.width_scale`` < 1 at smoke)."""
    vcfg = vfa_config_for(gcfg, seed)
    with scaled_architectures(gcfg.width_scale):
        encoder, h_vfa = train_vfa(vcfg, data, progress=progress)
        settings = generative.vfa_settings(vcfg)
        refiner, _, h_vg = train_vfagan(gcfg, vcfg, data, encoder, seed=seed, progress=progress)
        ae_e, ae_d, h_ae = train_autoencoder(gcfg, data, kind="ae", seed=seed, progress=progress)
        vae_e, vae_d, h_vae = train_autoencoder(gcfg, data, kind="vae", seed=seed,
                                                settings=settings, progress=progress)
        gan, _, h_gan = train_gan(gcfg, data, seed=seed, progress=progress)
    return generative.Trial(seed, vcfg, settings, encoder, refiner, (ae_e, ae_d),
                            (vae_e, vae_d), gan,
                            {"VFA": h_vfa, "VFA-GAN": h_vg, "AE": h_ae, "VAE": h_vae,
                             "GAN": h_gan})


def judge_identity(cfg) -> dict[str, Any]:
    """What the judge of ``cfg``'s data learns from: the data settings, the data seed, the
    batch size and :data:`fa_utils.fid.JUDGE_RECIPE` (the ``vfa`` and ``vfagan`` sections
    agree on them, so notebooks 03 and 04 share one judge)."""
    values = {k: getattr(cfg, k) for k in _DATA_KEYS}
    return dict(values, data_seed=cfg.seed, method="judge", recipe=fid.JUDGE_RECIPE)


def train_judge(cfg, data: ImageData, *, progress: bool = True) -> tuple[nn.Sequential, float]:
    """Train (or resume) the judge of the samples (:func:`fa_utils.fid.make_judge`) on
    ``data.train`` only, for ``cfg.judge_epochs`` epochs of :func:`fa_utils.fid.judge_step`
    (Adam lr 1e-3, random shifts up to 2 pixels), cached as
    ``runs/checkpoints/judge-<dataset>-<digest>-<profile>.pt`` (:func:`judge_identity`).

    Returns:
        (the judge in eval mode, its accuracy on ``data.test_x`` / ``data.test_y``).

    Raises:
        ValueError: unlabeled data (CelebA, STL-10), with
            :func:`fa_utils.fid.check_labels`' message.
    """
    fid.check_labels(data.test_y, len(data.test_y))
    init_seed, method_seed = seeds("judge", cfg.seed)
    device = resolve_device(cfg.device)
    torch.manual_seed(init_seed)
    arch = architecture(cfg.dataset)
    judge = fid.make_judge(arch.channels, generative.num_classes(cfg.dataset)).to(device)
    opt = _adam(judge.parameters(), 1e-3, 0.9, 0.999)
    gen = seeded_generator(method_seed)
    judge.train()

    def step(x, y):
        return fid.judge_step(judge, opt, x, y, generator=gen)

    _fit(cfg, data, step, stem=f"judge-{cfg.dataset}", run_identity=judge_identity(cfg),
         modules={"judge": judge}, optimizers={"adam": opt}, generator=gen, seed=cfg.seed,
         device=device, epochs=cfg.judge_epochs, desc=f"judge {cfg.dataset}", progress=progress)
    return judge, fid.accuracy(judge, data.test_x, data.test_y)


# --------------------------------------------------------------------------------------
# Local FA (notebook 05)
# --------------------------------------------------------------------------------------


def local_data(cfg: config.LocalFAConfig, dataset: str, verbose: bool = True) -> ImageData:
    """``dataset``'s images with ``cfg``'s data settings: the same sample split and seed as
    notebook 02, so the held-out images are the same."""
    return load_image_data(_with_data("fa", cfg, seed=cfg.seed, dataset=dataset), verbose=verbose)


def train_local(cfg: config.LocalFAConfig, data: ImageData, dataset: str, *,
                progress: bool = True, stop_after: Optional[int] = None
                ) -> tuple[local.LocalFANet, History]:
    """Train (or resume) a local-FA network with Algorithm 2 on ``data.train``; held-out
    MSE of Algorithm 3 is logged twice per epoch as ``test_mse``.

    Returns:
        (network in eval mode, :class:`fa_utils.train.History`).
    """
    init_seed, method_seed = seeds("local", cfg.seed)
    device = resolve_device(cfg.device)
    torch.manual_seed(init_seed)
    with scaled_architectures(cfg.width_scale):  # 1 (the paper's) except at smoke
        arch = architecture(dataset)
    net = local.make_local_net(arch, cfg.latent_dim, spectral_init=cfg.spectral_init,
                               seed=init_seed, bias=cfg.align_activation).to(device)
    opts = local.make_optimizers(net, cfg.lr, (cfg.beta1, cfg.beta2))
    generator = seeded_generator(method_seed)
    step = images_only(functools.partial(
        local.local_step, net, opts, clamp=local.SQRT2 if cfg.clamp_weights else None, T=cfg.T,
        tau=cfg.tau, r_init=cfg.r_init, align_activation=cfg.align_activation,
        generator=generator if cfg.r_init != "zeros" else None))

    def eval_fn() -> dict[str, float]:
        x = data.test_x
        return {"test_mse": metrics.mse_per_pixel(x, local.local_recover(
            net, x, seed=cfg.seed, **local.recon_kwargs(cfg)))}

    run_identity = identity(cfg, "local", dataset=dataset, bias=cfg.align_activation,
                            network=local.LOCAL_NET_FORMAT)
    history = _fit(cfg, data, step, stem=f"local-{dataset}", run_identity=run_identity,
                   modules={"net": net}, optimizers={f"adam{i}": o for i, o in enumerate(opts)},
                   generator=generator, seed=cfg.seed, device=device, eval_fn=eval_fn,
                   evals_per_epoch=2, stop_after=stop_after, desc=f"local FA {dataset}",
                   progress=progress)
    return net, history


def global_fa_mse(cfg: config.LocalFAConfig, dataset: str, x: torch.Tensor) -> Optional[float]:
    """Held-out MSE of notebook 02's global FA encoder (its default settings at ``cfg``'s
    profile, seed and data, Z = ``cfg.latent_dim``) if its checkpoint exists, else None.
    Nothing is trained here."""
    from .train import load_checkpoint

    fcfg = _with_data("fa", cfg, seed=cfg.seed, dataset=dataset)
    path = fa_checkpoint(fcfg, cfg.latent_dim)
    if not path.exists():
        return None
    ckpt = load_checkpoint(path)
    with scaled_architectures(fcfg.width_scale):  # as trained
        enc = Encoder(architecture(dataset), {"z": cfg.latent_dim})  # weights: the file's
    enc.load_state_dict(ckpt["modules"]["encoder"])
    enc.eval()
    x_hat = recover(enc, x, T=fcfg.T, tau=fcfg.tau, r_init=fcfg.r_init, squash=fcfg.squash,
                    seed=fcfg.seed)
    return metrics.mse_per_pixel(x, x_hat)


__all__ = ["SEED_STREAMS", "NOT_LEARNT", "seeds", "identity", "checkpoint_for",
           "train_fa_encoder", "fa_checkpoint", "vfa_config_for", "train_vfa", "train_vfagan",
           "train_autoencoder", "train_gan", "train_trial", "judge_identity", "train_judge", "local_data", "train_local",
           "global_fa_mse"]
