"""The trained models of notebooks 02-05, from a config, and the comparison's :data:`MODELS`."""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn

from . import baselines, config, fa, fid, local, metrics, vfa
from .data import ImageData, dataset_info, load_image_data  # noqa: F401 (the notebooks call it)
from .models import (Encoder, FAGenerator, architecture, init_he_, init_orthogonal_,
                     make_encoder, scaled_architectures, to_device)
from .outputs import checkpoint_path
from .train import History, fit, images_only, make_adam, resolve_device, seeded_generator


def recover(encoder: Encoder, x: torch.Tensor, *, T: int = 1, tau: float = 1.0,
            r_init: str = "zeros", squash: str = "none", seed: int = 0) -> torch.Tensor:
    """FA reconstruction of x (N, C, H, W) from its latent alone, in batches, on x's device."""
    device = next(encoder.parameters()).device
    g = seeded_generator(seed)
    return torch.cat([fa.reconstruct(encoder, c.to(device), T=T, tau=tau, r_init=r_init,
                                     squash=squash, generator=g).image.to(x.device)
                      for c in x.split(500)])


def encode_all(encoder: Encoder, x: torch.Tensor, head: str = "z",
               decoder: Optional[nn.Module] = None) -> torch.Tensor:
    """E(x)[head] (N, Z), or D(E(x)[head]), of x (N, C, H, W) in batches, no graph, on the CPU."""
    device = next(encoder.parameters()).device
    decoder = decoder or nn.Identity()
    with torch.no_grad():
        return torch.cat([decoder(encoder(c.to(device))[head]).cpu() for c in x.split(500)])


def fa_codec(encoder: Encoder, shape, *, head: str = "z", T: int = 1, tau: float = 1.0,
             r_init: str = "zeros", squash: str = "none", seed: int = 0):
    """(encode x (B, C, H, W) -> E(x)[head] (B, Z), decode z -> image) by fa.decode_latent."""
    frozen = r_init == "zeros" and fa.supports(encoder, head)
    start = fa.frozen_start(encoder, tuple(shape), head=head) if frozen else None
    device = next(encoder.parameters()).device

    def decode(z):
        g = torch.Generator(device=z.device).manual_seed(seed)
        return fa.decode_latent(encoder, z.to(device), shape, head=head, T=T, tau=tau,
                                r_init=r_init, squash=squash, generator=g, start=start).image
    return functools.partial(encode_all, encoder, head=head), decode


def vfa_codec(encoder: Encoder, settings: vfa.VFASettings, shape):
    """(encode x (B, C, H, W) -> [mu(x), c(x)], decode that -> image) by fa_utils.vfa."""
    shape, device = tuple(shape), next(encoder.parameters()).device
    frozen = settings.r_init == "zeros"
    start = fa.frozen_start(encoder, shape, head=settings.heads) if frozen else None
    return (lambda x: vfa.latent_of(encoder, x.to(device), settings),
            lambda t: vfa.decode_full(encoder, t.to(device), shape, settings, start=start))


def class_separation(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Nearest-class-mean accuracy of z (N, Z) on its own points. ValueError: < 2 classes."""
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("class_separation needs class labels, not -1 (unlabeled data)")
    classes = labels.unique()
    if len(classes) < 2:
        raise ValueError(f"class_separation needs at least 2 classes, got {len(classes)}")
    means = torch.stack([z[labels == c].mean(0) for c in classes])
    pred = classes[torch.cdist(z.float(), means.float()).argmin(1)]
    return float((pred == labels).float().mean())


CLASS_ROW_ACCURACY = 0.8  # Figure 8's class rows: the smallest s with this judge accuracy
#: Settings that never change what a network learns: not in a checkpoint's identity.
NOT_LEARNT = frozenset({
    "profile", "device", "epochs", "num_workers", "ckpt_every", "n_test",
    "latent2_epochs", "sweep_T", "sweep_tau",  # fa: the Figure 6a run and the sweep
    "emphasis_per_class", "emphasis_scales", "judge_epochs",  # vfa: Figure 6b, the judge
    "datasets", "memory_datasets", "memory_batch", "memory_repeats", "recon_T", "recon_tau",
})
_DATA_KEYS = ("dataset", "data_source", "data_root", "n_train", "batch_size")
_AE_KEYS = _DATA_KEYS + ("latent_dim", "vae_decoder", "baseline_lr", "baseline_beta1", "beta2")
_GAN_SECTION_KEYS = {
    "vfagan": _DATA_KEYS + ("gen_width", "gen_kernel", "perceptual_weight", "fake_source",
                            "gan_lr", "beta1", "beta2"),
    "ae": _AE_KEYS, "vae": _AE_KEYS,
    "gan": _DATA_KEYS + ("latent_dim", "vae_decoder", "gan_discriminator", "gan_lr", "beta1",
                         "beta2"),
}


def identity(cfg, model: str, **extra) -> dict[str, Any]:
    """What ``model`` learns from (its section's fields but :data:`NOT_LEARNT`) and ``extra``."""
    values = config.to_dict(cfg)
    if model in _GAN_SECTION_KEYS:
        values = {k: values[k] for k in _GAN_SECTION_KEYS[model]}
        values.update(data_seed=cfg.seed, init="he+bn")  # the baselines' (and D's) init
        if cfg.width_scale != 1:  # absent at 1: older checkpoints keep their names
            values["width_scale"] = cfg.width_scale
    else:
        values = {k: v for k, v in values.items() if k not in NOT_LEARNT}
    return {**values, "method": model, **extra}


def checkpoint_for(run_identity: Mapping[str, Any], profile: str) -> Path:
    """``runs/checkpoints/<method>-<dataset>-<digest>-<profile>.pt``; digest: SHA-1 of the JSON."""
    text = json.dumps(dict(run_identity), sort_keys=True, default=str)
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return checkpoint_path(f"{run_identity['method']}-{run_identity['dataset']}-{digest}", profile)


class _Run:
    """One model's training: seeds its networks when made (config.SEED_STREAMS), then fits."""

    def __init__(self, cfg, seed: int, run_identity: dict, *,
                 device: Optional[torch.device] = None, checkpoint: Optional[Path] = None):
        seed_of_model = seed + config.SEED_STREAMS[run_identity["method"]]
        torch.manual_seed(seed_of_model)  # its networks; its method's generator: the next seed
        self.cfg, self.seed, self.identity = cfg, seed, run_identity
        self.device = device or resolve_device(cfg.device)
        self.generator = seeded_generator(seed_of_model + 1)
        self.checkpoint = checkpoint or checkpoint_for(run_identity, cfg.profile)

    def fit(self, data: ImageData, step: Callable, modules: dict, optimizers: dict,
            reconstruct: Optional[Callable] = None, *, epochs: Optional[int] = None,
            evals_per_epoch: int = 1, **fit_kwargs) -> History:
        """:func:`fa_utils.train.fit`, logging the held-out ``test_mse`` of ``reconstruct``."""
        cfg, test_x = self.cfg, data.test_x
        eval_fn = reconstruct and (
            lambda: {"test_mse": metrics.mse_per_pixel(test_x, reconstruct(test_x))})
        return fit(step, modules=modules, optimizers=optimizers, dataset=data.train,
                   batch_size=cfg.batch_size, epochs=epochs or cfg.epochs, seed=self.seed,
                   config=self.identity, generator=self.generator, device=self.device,
                   checkpoint=self.checkpoint, ckpt_every=cfg.ckpt_every,
                   num_workers=cfg.num_workers, eval_fn=eval_fn,
                   eval_every=max(1, len(data.train) // cfg.batch_size // evals_per_epoch),
                   **fit_kwargs)


def train_fa_encoder(cfg: config.FAConfig, data: ImageData, *, latent_dim: Optional[int] = None,
                     distributed: Any = None, make_step: Optional[Callable] = None,
                     channels_last: bool = False, checkpoint: Optional[Path] = None,
                     **kwargs) -> tuple[Encoder, History]:
    """Algorithm 1: train (or resume) an FA encoder (head ``z``): (it in eval mode, its history)."""
    latent_dim = latent_dim or cfg.latent_dim
    inner = dict(T=cfg.T, tau=cfg.tau, r_init=cfg.r_init, squash=cfg.squash)
    dist = distributed if distributed is not None and distributed.distributed else None
    run = _Run(cfg, cfg.seed, identity(cfg, "fa", latent_dim=latent_dim), checkpoint=checkpoint,
               device=None if distributed is None else distributed.device)
    with scaled_architectures(cfg.width_scale):  # 1 (the paper's) except at smoke
        encoder = make_encoder(cfg.dataset, {"z": latent_dim}).to(run.device)
    if channels_last:  # docs/choices.md section 10
        encoder = encoder.to(memory_format=torch.channels_last)
    opt = make_adam(encoder.parameters(), cfg.lr, (cfg.beta1, cfg.beta2))
    settings = dict(generator=run.generator, weight_clamp=cfg.weight_clamp, head="z", **inner)
    step = (make_step(encoder, opt, **settings) if make_step else
            functools.partial(fa.fa_step, encoder, opt, **settings))
    history = run.fit(data, images_only(step), {"encoder": encoder}, {"adam": opt},
                      lambda x: recover(encoder, x, seed=cfg.seed, **inner), distributed=dist,
                      desc=f"FA {cfg.dataset} Z={latent_dim}"
                      + (f" x{distributed.world_size}" if dist is not None else ""),
                      nan_hint=f"Lower lr (now {cfg.lr}) or keep weight_clamp (now "
                               f"{cfg.weight_clamp}).", **kwargs)
    return encoder.eval(), history


def vfa_config_for(gcfg: config.VFAGANConfig, seed: int) -> config.VFAConfig:
    """Notebook 04's ``vfa`` config of trial ``seed``: ``gcfg``'s data, budget, device, width."""
    base = config.make_config("vfa", gcfg.profile, seed=seed, device=gcfg.device)
    return replace(base, **vars(config.data_settings(gcfg)), epochs=gcfg.epochs,
                   batch_size=gcfg.batch_size, width_scale=gcfg.width_scale)


def vfa_settings(cfg: config.VFAConfig) -> vfa.VFASettings:
    """The method's settings of a VFA config (class head only for labeled datasets)."""
    num_classes = (dataset_info(cfg.dataset).num_classes or 0) if cfg.conditional else 0
    return vfa.VFASettings(**{f.name: getattr(cfg, f.name) for f in fields(vfa.VFASettings)
                              if f.name != "num_classes"}, num_classes=num_classes)


def train_vfa(cfg: config.VFAConfig, data: ImageData, *, progress: bool = True
              ) -> tuple[Encoder, History]:
    """Eq. 5-6: train (or resume) a VFA encoder: (it in eval mode, its history)."""
    settings = vfa_settings(cfg)
    run = _Run(cfg, cfg.seed, identity(cfg, "vfa"))
    # a checkpoint overwrites the weights: skip the (slow, 4096-wide) orthogonal QR then
    with scaled_architectures(cfg.width_scale):
        encoder = vfa.make_vfa_encoder(cfg.dataset, cfg.latent_dim, settings.num_classes,
                                       orthogonal=not run.checkpoint.exists())
    encoder = to_device(encoder, run.device)  # channels_last on a CPU (docs/choices.md sec. 14)
    opt = make_adam(encoder.parameters(), cfg.lr, (cfg.beta1, cfg.beta2))
    step = functools.partial(vfa.vfa_step, encoder, opt, settings=settings,
                             generator=run.generator, weight_clamp=cfg.weight_clamp)
    history = run.fit(data, step, {"encoder": encoder}, {"adam": opt},
                      lambda x: vfa.reconstruct(encoder, x, settings=settings).cpu().clamp(0, 1),
                      desc=f"VFA {cfg.dataset}", progress=progress,
                      nan_hint=f"Lower lr (now {cfg.lr}); docs/method.md section 9: keep lr <= "
                               f"1e-4 with the sigmoid.")
    return encoder.eval(), history


def judge_identity(cfg) -> dict[str, Any]:
    """What the judge of ``cfg``'s data learns from (the same for notebooks 03 and 04)."""
    values = {k: getattr(cfg, k) for k in _DATA_KEYS}
    return dict(values, data_seed=cfg.seed, method="judge", recipe=fid.JUDGE_RECIPE)


def train_judge(cfg, data: ImageData, *, progress: bool = True) -> tuple[nn.Sequential, float]:
    """Train (or resume) the judge: (it in eval mode, held-out accuracy). ValueError: no labels."""
    fid.check_labels(data.test_y, len(data.test_y))
    run = _Run(cfg, cfg.seed, judge_identity(cfg))
    judge = fid.make_judge(architecture(cfg.dataset).channels,
                           dataset_info(cfg.dataset).num_classes or 0).to(run.device)
    opt = make_adam(judge.parameters(), 1e-3, (0.9, 0.999))
    run.fit(data, functools.partial(fid.judge_step, judge, opt, generator=run.generator),
            {"judge": judge}, {"adam": opt}, epochs=cfg.judge_epochs, desc=f"judge {cfg.dataset}",
            progress=progress)
    return judge.eval(), fid.accuracy(judge, data.test_x, data.test_y)


def class_accuracy(judge: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per class k in ``labels``: the share of the images asked for k the judge assigns to k."""
    pred = fid.recognise(judge, images)[1].to(labels.device)
    return [float((pred[labels == c] == c).float().mean()) for c in labels.unique().tolist()]


def class_emphasis_stats(encoder: Encoder, settings: vfa.VFASettings, latent_dim: int, shape,
                         scales, judge: nn.Module, *, per_class: int = 20, seed: int = 0,
                         refiner: Optional[nn.Module] = None) -> list[tuple[float, float, float]]:
    """Figure 6b quantified: (s, mean c(r)_k, judge accuracy) per one-hot value s in ``scales``."""
    device = next(encoder.parameters()).device
    k = settings.num_classes
    z = vfa.prior(per_class * k, latent_dim, seeded_generator(seed)).to(device)
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


def choose_class_scale(rows, judge_note: str) -> tuple[float, str]:
    """(s, why): the least s reaching CLASS_ROW_ACCURACY, else the best. ValueError: no rows."""
    if not rows:
        raise ValueError("no class-emphasis rows to choose a one-hot value from")
    target = CLASS_ROW_ACCURACY
    if good := [r[0] for r in rows if r[2] >= target]:
        return min(good), (f"the smallest measured value at which the judge ({judge_note}) "
                           f"recognises the class in >= {100 * target:.0f} % of the samples")
    scale, _, acc = max(rows, key=lambda r: r[2])
    return scale, (f"the measured value at which the judge ({judge_note}) recognises the class "
                   f"most often ({100 * acc:.0f} % of the samples; no value reaches "
                   f"{100 * target:.0f} %)")


@dataclass
class Trial:
    """The models of one Table 2 trial: ``nets`` and ``histories`` by :data:`MODELS` name."""

    seed: int
    vcfg: config.VFAConfig
    settings: vfa.VFASettings
    nets: dict[str, tuple] = field(default_factory=dict)
    histories: dict[str, History] = field(default_factory=dict)

    @property
    def encoder(self) -> Encoder:  # VFA's, also VFA-GAN's
        return self.nets["VFA"][0]

    @property
    def refiner(self) -> nn.Module:  # VFA-GAN's G
        return self.nets["VFA-GAN"][0]


def _train_vfagan(gcfg: config.VFAGANConfig, data: ImageData, trial: Trial, progress: bool):
    """Eq. 7-8: G (Table 11, orthogonal init) and D (Table 10) on VFA's fixed encoder."""
    vcfg, settings, encoder = trial.vcfg, trial.settings, trial.encoder.eval()
    run = _Run(gcfg, trial.seed, identity(gcfg, "vfagan", seed=trial.seed,
                                          encoder=identity(vcfg, "vfa")))
    width = max(8, round(gcfg.gen_width * gcfg.width_scale))
    refiner = to_device(init_orthogonal_(FAGenerator(
        architecture(gcfg.dataset).channels, width=width, kernel=gcfg.gen_kernel)), run.device)
    disc = to_device(baselines.make_discriminator(gcfg.dataset), run.device)
    opt_g, opt_d = (make_adam(n.parameters(), gcfg.gan_lr, (gcfg.beta1, gcfg.beta2))
                    for n in (refiner, disc))
    step = functools.partial(vfa.vfagan_step, encoder, refiner, disc, opt_g, opt_d,
                             settings=settings, latent_dim=vcfg.latent_dim,
                             generator=run.generator, perceptual_weight=gcfg.perceptual_weight,
                             fake_source=gcfg.fake_source)
    history = run.fit(data, step, {"refiner": refiner, "discriminator": disc},
                      {"g": opt_g, "d": opt_d}, desc=f"VFA-GAN {gcfg.dataset}", progress=progress)
    return refiner.eval(), disc.eval(), history


def _train_autoencoder(gcfg: config.VFAGANConfig, data: ImageData, trial: Trial,
                       progress: bool, *, kind: str):
    """The AE or the VAE (``kind``; KL weights by the trial's beta schedule)."""
    settings = trial.settings if kind == "vae" else vfa.VFASettings()
    run = _Run(gcfg, trial.seed, identity(gcfg, kind, seed=trial.seed, beta=settings.beta,
                                          beta_schedule=settings.beta_schedule))
    heads = {"z": gcfg.latent_dim} if kind == "ae" else vfa.vfa_heads(gcfg.latent_dim)
    encoder = init_he_(Encoder(architecture(gcfg.dataset), heads)).to(run.device)
    decoder = baselines.make_decoder(gcfg.dataset, gcfg.latent_dim, gcfg.vae_decoder).to(run.device)
    opt = make_adam(list(encoder.parameters()) + list(decoder.parameters()),
                    gcfg.baseline_lr, (gcfg.baseline_beta1, gcfg.beta2))

    def step(x, y):
        if kind == "ae":
            return baselines.ae_step(encoder, decoder, opt, x)
        betas = vfa.draw_betas(x.shape[0], settings, run.generator, device=x.device)
        return baselines.vae_step(encoder, decoder, opt, x, betas=betas, generator=run.generator)

    history = run.fit(data, step, {"encoder": encoder, "decoder": decoder}, {"adam": opt},
                      lambda x: encode_all(encoder, x, "z" if kind == "ae" else "mu", decoder),
                      desc=f"{kind.upper()} {gcfg.dataset}", progress=progress)
    return encoder.eval(), decoder.eval(), history


def _train_gan(gcfg: config.VFAGANConfig, data: ImageData, trial: Trial, progress: bool):
    """The least squares GAN: G with BatchNorm, D ``gcfg.gan_discriminator``."""
    run = _Run(gcfg, trial.seed, identity(gcfg, "gan", seed=trial.seed))
    g_net = baselines.make_decoder(gcfg.dataset, gcfg.latent_dim, gcfg.vae_decoder,
                                   batchnorm=True).to(run.device)
    disc = baselines.make_discriminator(gcfg.dataset, gcfg.gan_discriminator).to(run.device)
    opt_g, opt_d = (make_adam(n.parameters(), gcfg.gan_lr, (gcfg.beta1, gcfg.beta2))
                    for n in (g_net, disc))
    step = functools.partial(baselines.gan_step, g_net, disc, opt_g, opt_d,
                             latent_dim=gcfg.latent_dim, generator=run.generator)
    history = run.fit(data, images_only(step), {"generator": g_net, "discriminator": disc},
                      {"g": opt_g, "d": opt_d}, desc=f"GAN {gcfg.dataset}", progress=progress)
    return g_net.eval(), disc.eval(), history


def _decode_prior(net: nn.Module, n: int, g: torch.Generator) -> torch.Tensor:
    """net(z) for z ~ N(0, I) (n, Z): samples of the VAE's decoder, the GAN's generator."""
    z_dim = next(m for m in net.modules() if isinstance(m, nn.Linear)).in_features
    z = vfa.prior(n, z_dim, g).to(next(net.parameters()).device)
    with torch.no_grad():
        return net(z)


def _vfa_sample(trial: Trial, n: int, g: torch.Generator, refined: bool = False):
    """r (random classes, the training one-hot value), G(r) if ``refined``."""
    arch = trial.encoder.arch
    return vfa.sample(trial.encoder, n, (arch.channels, arch.size, arch.size),
                      settings=trial.settings, latent_dim=trial.vcfg.latent_dim, generator=g,
                      refiner=trial.refiner if refined else None)[0]


@dataclass(frozen=True)
class Model:
    """A model of the comparison (Table 2, Figures 7 and 15, the budget table)."""

    name: str
    recon: str  # its name in Figures 7 and 15
    networks: str  # what its optimiser trains ({logits}, {disc}: filled in by notebook 04)
    adam: Callable  # (gcfg, vcfg) -> (lr, beta1) of its Adam; beta2 is gcfg.beta2
    train: Callable  # (gcfg, data, trial, progress) -> (*networks, history)
    reconstruct: Callable  # (trial, x, gcfg) -> images (the GAN: gan_reconstruct's tuple)
    sample: Optional[Callable] = None  # (trial, n, generator) -> n prior samples


#: The models of the comparison in the order of Figures 7 and 15 (VFA before VFA-GAN).
MODELS = (
    Model("AE", "AE", "encoder + decoder", lambda g, v: (g.baseline_lr, g.baseline_beta1),
          functools.partial(_train_autoencoder, kind="ae"),
          lambda t, x, g: encode_all(t.nets["AE"][0], x, "z", t.nets["AE"][1])),
    Model("VAE", "VAE", "encoder + decoder", lambda g, v: (g.baseline_lr, g.baseline_beta1),
          functools.partial(_train_autoencoder, kind="vae"),
          lambda t, x, g: encode_all(t.nets["VAE"][0], x, "mu", t.nets["VAE"][1]),
          lambda t, n, gen: _decode_prior(t.nets["VAE"][1], n, gen)),
    Model("GAN", "GAN", "G + D ({disc}; one D step, one G step per batch)",
          lambda g, v: (g.gan_lr, g.beta1), _train_gan,
          # argmin_z ||x - G(z)||^2 by Adam on each image's z (Section 4)
          lambda t, x, g: baselines.gan_reconstruct(
              t.nets["GAN"][0], x, latent_dim=g.latent_dim, steps=g.gan_recon_steps,
              lr=g.gan_recon_lr, seed=t.seed),
          lambda t, n, gen: _decode_prior(t.nets["GAN"][0], n, gen)),
    Model("VFA", "r", "encoder (heads mu, logvar{logits})", lambda g, v: (v.lr, v.beta1),
          lambda g, d, t, p: train_vfa(t.vcfg, d, progress=p),
          lambda t, x, g: vfa.reconstruct(t.encoder, x, settings=t.settings).cpu(), _vfa_sample),
    Model("VFA-GAN", "G(r)", "G (Table 11), D (Table 10); encoder = VFA's",
          lambda g, v: (g.gan_lr, g.beta1), _train_vfagan,
          lambda t, x, g: vfa.reconstruct(t.encoder, x, settings=t.settings,
                                          refiner=t.refiner).cpu(),
          lambda t, n, gen: _vfa_sample(t, n, gen, refined=True)),
)
GENERATIVE_MODELS = tuple(m.name for m in MODELS if m.sample)  # Table 2, Tables 3-6


def fa_config_for(cfg: config.LocalFAConfig, dataset: str) -> config.FAConfig:
    """Notebook 02's ``fa`` config (its data split) with ``cfg``'s profile, seed, device, data."""
    base = config.make_config("fa", cfg.profile, seed=cfg.seed, device=cfg.device)
    return replace(base, **vars(config.data_settings(cfg, dataset=dataset)))


def train_local(cfg: config.LocalFAConfig, data: ImageData, dataset: str, *,
                progress: bool = True) -> tuple[local.LocalFANet, History]:
    """Algorithm 2: train (or resume) a local-FA network: (it in eval mode, its history)."""
    run = _Run(cfg, cfg.seed, identity(cfg, "local", dataset=dataset, bias=cfg.align_activation,
                                       network=local.LOCAL_NET_FORMAT))
    with scaled_architectures(cfg.width_scale):
        arch = architecture(dataset)
    net = local.make_local_net(arch, cfg.latent_dim, spectral_init=cfg.spectral_init,
                               seed=cfg.seed + config.SEED_STREAMS["local"],
                               bias=cfg.align_activation).to(run.device)
    opts = local.make_optimizers(net, cfg.lr, (cfg.beta1, cfg.beta2))
    step = functools.partial(
        local.local_step, net, opts, clamp=local.SQRT2 if cfg.clamp_weights else None,
        T=cfg.T, tau=cfg.tau, r_init=cfg.r_init, align_activation=cfg.align_activation,
        generator=run.generator if cfg.r_init != "zeros" else None)
    rec = functools.partial(local.local_recover, net, seed=cfg.seed, **local.recon_kwargs(cfg))
    history = run.fit(data, images_only(step), {"net": net},
                      {f"adam{i}": o for i, o in enumerate(opts)}, rec, evals_per_epoch=2,
                      desc=f"local FA {dataset}", progress=progress)
    return net.eval(), history
