"""Each notebook section's frozen, validated config at a profile: docs/choices.md section 15."""
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from types import MappingProxyType
from typing import Any, Mapping, Optional, Union, get_args, get_origin, get_type_hints

from .outputs import describe_destination

PROFILES = ("smoke", "quick", "paper")
PROFILE_ENV = "FA_PROFILE"  # selects the profile when a notebook's ``profile`` is None (CI)
DATASET_NAMES = ("mnist", "cifar10", "celeba", "stl10")

#: Seed offset of each model in a run (experiments.seeds); VFA (notebooks 03, 04): one checkpoint.
SEED_STREAMS: Mapping[str, int] = MappingProxyType({
    "fa": 0, "vfa": 0, "local": 0, "vfagan": 100, "ae": 200, "vae": 200, "gan": 300,
    "judge": 400,  # the judge of the samples (fa_utils.experiments.train_judge)
    "samples": 1000,  # the generated images of the Frechet distances (notebook 04)
})


class ConfigError(ValueError):
    """A profile, parameter name, type or value that this project does not accept."""


@dataclass(frozen=True)
class RunSettings:
    """What every section has; validated whenever built (also by ``dataclasses.replace``)."""

    profile: str = "quick"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        _validate(self)


@dataclass(frozen=True)
class TrainingRun(RunSettings):
    """A section that trains image networks."""

    num_workers: int = 0  # DataLoader workers
    ckpt_every: int = 200  # optimiser steps between checkpoints
    width_scale: float = 1.0  # widths x this; 1: the paper's (docs/choices.md sections 7, 15)
    latent_dim: int = 128  # Z (of the AE, VAE and GAN baselines too)
    batch_size: int = 128


@dataclass(frozen=True)
class DataSettings:
    """Which images (:func:`fa_utils.data.load_image_data`)."""

    dataset: str = "mnist"
    data_source: str = "auto"  # auto | sample | torchvision (see fa_utils.data)
    data_root: str = "data"
    download: bool = False
    n_train: Optional[int] = None  # None: the whole training split
    n_test: int = 500


@dataclass(frozen=True)
class InnerSettings:
    """The inner problem (Eq. 2): T steps of size tau from r_0 (:func:`fa_utils.fa.solve`)."""

    T: int = 1  # inner steps during training (one-shot, Section 4)
    tau: float = 1.0
    r_init: str = "zeros"  # r_0: zeros (authors' code), uniform or normal


@dataclass(frozen=True)
class AdamSettings:
    """Adam's learning rate and betas (the authors' code: betas (0.5, 0.999))."""

    lr: float = 1e-3  # local FA's at quick (docs/choices.md section 6)
    beta1: float = 0.5
    beta2: float = 0.999


def data_settings(config, **overrides) -> DataSettings:
    """The :class:`DataSettings` of any section's ``config``, ``overrides`` replacing some."""
    own = DataSettings(**{f.name: getattr(config, f.name) for f in fields(DataSettings)})
    return replace(own, **overrides)


@dataclass(frozen=True)
class ToyConfig(InnerSettings, RunSettings):
    """Section 3.2 (Figure 2): invert y = sin(3 pi x) on [-domain, domain]."""

    domain: float = 1.0  # not in the paper
    hidden: int = 1024  # two hidden layers of this width (paper: 1024)
    steps: int = 3000  # Adam steps for each of the two networks
    batch_size: int = 256
    lr: float = 1e-3
    alpha: float = 0.01  # Eq. 3 weight of the function output in the inner loss
    invert_steps: int = 1500  # gradient steps on the input for the plain network (Fig. 2a)
    invert_lr: float = 0.01
    grid: int = 1001  # evaluation points over the domain
    tolerance: float = 0.05  # |x_hat - x| below this counts as recovered


@dataclass(frozen=True)
class FAConfig(AdamSettings, InnerSettings, DataSettings, TrainingRun):
    """Section 3.1 (Algorithm 1): feature alignment on images."""

    epochs: int = 9
    lr: float = 5e-4  # paper: 1e-5 (only blobs in a CPU budget); the authors' code: 1e-4
    squash: str = "none"
    weight_clamp: Optional[float] = math.sqrt(2.0)  # Eq. 9; None disables the clamp
    latent2_epochs: int = 6  # the 2-neuron latent space of Figure 6a
    sweep_T: tuple = (1, 2, 4, 8)
    sweep_tau: tuple = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class VFAConfig(AdamSettings, InnerSettings, DataSettings, TrainingRun):
    """Section 3.3 (Eq. 5, Figure 3): VFA, conditional (Section 3.4, Figures 6b and 8)."""

    conditional: bool = True  # a linear class head beside mu and logvar
    class_scale: float = 1.0  # one-hot value of the inner target in training
    class_weight: float = 1.0  # weight of the supervised ||onehot(y) - c(x)||^2 term
    beta: float = 1.0  # KL weight ("fixed") or upper end of U(0, beta) ("uniform")
    beta_schedule: str = "uniform"  # Section 4: beta ~ U(0, beta) per example
    rand_side: str = "mu"  # the random input's side: mu(r) (paper), mu+sigma (authors)
    epochs: int = 6
    lr: float = 2e-4  # with squash "none": docs/choices.md section 5
    squash: str = "none"
    weight_clamp: Optional[float] = math.sqrt(2.0)
    emphasis_scales: tuple = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0)  # one-hot values of Figure 6b
    emphasis_per_class: int = 20  # prior draws per class when measuring the emphasis
    judge_epochs: int = 20  # the judge of the samples (fa_utils.experiments.train_judge)


@dataclass(frozen=True)
class VFAGANConfig(DataSettings, TrainingRun):
    """Section 3.4 (Eq. 6-8) and Section 5 (Tables 2-6, Figure 15): VFA-GAN and baselines."""

    seeds: tuple = (0,)  # Table 2 trials (paper: three initialisations)
    gen_width: int = 128  # Table 11's filters
    gen_kernel: int = 3  # Section 4 (Table 11 says 7)
    perceptual_weight: float = 0.01  # lambda of Eq. 7 (Section 4)
    fake_source: str = "reconstruction"  # Eq. 7-8 as written; prior; authors
    vae_decoder: str = "auto"  # the decoder the paper's sizes imply; mirrored; table12
    gan_discriminator: str = "dcgan"  # the GAN baseline's D (VFA-GAN's is Table 10's)
    epochs: int = 6  # the budget of every model of Table 2; the vfa section's epochs too
    gan_lr: float = 2e-4  # G and D
    baseline_lr: float = 1e-3  # AE and VAE
    beta1: float = 0.5
    baseline_beta1: float = 0.9
    beta2: float = 0.999
    fid_samples: int = 2000  # generated images per model for the Frechet distance
    fid_real: int = 4500  # reference images (training split)
    recon_images: int = 100  # held-out images for Figure 15
    gan_recon_steps: int = 100  # Adam steps of argmin_z ||x - G(z)||^2
    gan_recon_lr: float = 0.05
    time_repeats: int = 20  # interleaved timing rounds (fastest kept)
    fid_autoencoder_steps: int = 400  # docs/choices.md section 4
    judge_epochs: int = 20  # the judge of the samples (fa_utils.experiments.train_judge)


@dataclass(frozen=True)
class LocalFAConfig(AdamSettings, InnerSettings, DataSettings, TrainingRun):
    """Section 3.5 (Algorithms 2-3, Figure 16): local FA and its memory against global FA."""

    datasets: tuple = ("mnist",)  # trained and shown (Figure 16)
    dataset: Optional[str] = None  # shorthand: datasets = (dataset,)
    epochs: int = 2
    recon_T: int = 1  # inner steps per layer in Algorithm 3
    recon_tau: float = 1.0
    clamp_weights: bool = True  # Eq. 9, |w| <= sqrt(2), after every layer update
    align_activation: bool = False  # True: align through the arcsinh, no sinh
    spectral_init: bool = True  # orthogonal init scaled to operator norm 1 per layer
    memory_datasets: Optional[tuple] = None  # None: the architectures of ``datasets``
    memory_batch: int = 128  # the paper's batch
    memory_repeats: int = 1  # timed steps per method and architecture (median)

    def __post_init__(self):
        if self.dataset is not None:
            object.__setattr__(self, "datasets", (self.dataset,))
        if self.memory_datasets is None:
            object.__setattr__(self, "memory_datasets", tuple(self.datasets))
        super().__post_init__()


@dataclass(frozen=True)
class AppendixConfig(RunSettings):
    """Appendix A (7.1-7.2): one-weight recursion (Eq. 13 vs 18), linear FA, the Eq. 9 clamp."""

    one_weight_ws: tuple = (0.3, 0.7, 1.0, 1.3, 1.4, 1.45, 1.6)
    one_weight_x: float = 1.0  # the input recovered: target a = w x, limit a / w = x
    one_weight_r0: float = -0.5
    one_weight_steps: int = 40
    linear_in: int = 32  # the square layer is linear_in x linear_in
    linear_out: int = 12  # < linear_in: the layer with fewer outputs
    linear_batch: int = 256
    linear_steps: int = 800
    linear_lr: float = 1e-2  # Adam, decayed linearly to 0
    linear_tolerance: float = 0.01  # bound on the final RMS distances
    clamp_w0: float = 1.6
    clamp_dim: int = 8  # diagonal layer of this size, weights from clamp_w0 down to 0.4
    clamp_T: int = 4  # inner steps in training and in the inference check
    clamp_lr: float = 0.01
    clamp_steps: int = 200


SECTIONS: Mapping[str, type] = MappingProxyType({
    "toy": ToyConfig, "fa": FAConfig, "vfa": VFAConfig, "vfagan": VFAGANConfig,
    "local": LocalFAConfig, "appendix": AppendixConfig})
_SECTION_OF = {cls: name for name, cls in SECTIONS.items()}

#: {section: {profile: values that differ from the defaults}}; "training": every TrainingRun's.
_PROFILE_VALUES: Mapping[str, Mapping[str, dict]] = MappingProxyType({
    "training": {"smoke": dict(n_test=64, epochs=1, ckpt_every=50, width_scale=0.25),
                 "quick": dict(width_scale=0.5),
                 "paper": dict(data_source="torchvision", download=True, n_test=10000, epochs=50,
                               lr=1e-5, beta1=0.9, num_workers=4, ckpt_every=1000)},
    "toy": {"smoke": dict(hidden=128, steps=300, invert_steps=300, grid=201),
            "quick": dict(hidden=256, steps=1000, invert_steps=500, grid=501)},
    "fa": {"smoke": dict(n_train=256, latent2_epochs=1, batch_size=64, sweep_T=(1, 2),
                         sweep_tau=(0.5, 1.0)),
           "paper": dict(latent2_epochs=20)},
    "vfa": {"smoke": dict(n_train=64, batch_size=32, emphasis_per_class=4,
                          emphasis_scales=(1.0, 4.0), judge_epochs=1),
            "quick": dict(batch_size=64, epochs=12)},
    "vfagan": {"smoke": dict(n_train=64, batch_size=32, fid_samples=64, fid_real=64,
                             recon_images=16, gan_recon_steps=10, time_repeats=3,
                             fid_autoencoder_steps=10, judge_epochs=1),
               "quick": dict(batch_size=64, epochs=12),
               "paper": dict(seeds=(0, 1, 2), gan_lr=1e-5, baseline_lr=1e-5, fid_samples=10000,
                             gan_discriminator="table10", fid_real=10000, recon_images=1000,
                             gan_recon_steps=500)},
    "local": {"smoke": dict(n_train=256, batch_size=64, memory_batch=8),
              "paper": dict(datasets=DATASET_NAMES, memory_repeats=5)},
    "appendix": {"smoke": dict(linear_steps=300, clamp_steps=100),
                 "paper": dict(linear_in=64, linear_out=24, linear_steps=2000)},
})


def check_type(section: str, name: str, value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` (int widens to float, list to tuple); ConfigError if not."""
    optional = get_origin(annotation) is Union  # Optional[X]
    if annotation is Any or optional and value is None:
        return value
    annotation = get_args(annotation)[0] if optional else annotation
    if annotation is float and type(value) is int:
        value = float(value)
    elif annotation is tuple and isinstance(value, list):
        value = tuple(value)
    if isinstance(value, annotation) and (annotation is bool or not isinstance(value, bool)):
        return value
    hint = ""
    if annotation is str and isinstance(value, (int, float)):
        hint = " (papermill's -p makes numbers of such strings; pass it with -r NAME VALUE)"
    elif annotation is tuple and isinstance(value, str):
        hint = " (write a list as '[1, 2]'; papermill's -p keeps it a string: use -y)"
    raise ConfigError(f"{section} parameter {name!r} must be {annotation.__name__}"
                      f"{' or None' * optional}, got {type(value).__name__} {value!r}{hint}")


#: Numbers that must be > 0; every int field must be >= 1 except those of _MAY_BE_ZERO.
_POSITIVE = frozenset({"lr", "tau", "invert_lr", "class_scale", "beta", "gan_lr", "baseline_lr",
                       "gan_recon_lr", "recon_tau", "linear_lr", "linear_tolerance", "clamp_lr"})
_MAY_BE_ZERO = frozenset({"seed", "num_workers", "latent2_epochs"})


def _validate(cfg) -> None:
    """Every value check of every section, once; ConfigError names the parameter and value."""
    from . import baselines, data, fa, vfa  # the modules that implement each choice

    section, v = _SECTION_OF[type(cfg)], vars(cfg)
    choices = {"profile": PROFILES, "dataset": DATASET_NAMES, "data_source": data.SOURCES,
               "r_init": fa.R_INITS, "squash": fa.SQUASHES, "beta_schedule": vfa.BETA_SCHEDULES,
               "rand_side": vfa.RAND_SIDES, "fake_source": vfa.FAKE_SOURCES,
               "vae_decoder": baselines.DECODERS, "gan_discriminator": baselines.DISCRIMINATORS}
    for name, allowed in choices.items():  # None: an optional field left unset
        if v.get(name) is not None and v[name] not in allowed:
            raise ConfigError(f"{section} parameter {name}={v[name]!r} is not one of "
                              f"{list(allowed)}")
    rules = [(f.name, v[f.name] >= 1, ">= 1") for f in fields(cfg)
             if f.type is int and f.name not in _MAY_BE_ZERO]
    rules.append(("device", cfg.device in ("auto", "cpu", "cuda", "mps")
                  or cfg.device.startswith("cuda:"), "one of auto, cpu, cuda, cuda:N, mps"))
    rules += [(n, v[n] > 0, "> 0") for n in _POSITIVE if n in v]
    rules += [(n, bool(v[n]) and set(v[n]) <= set(DATASET_NAMES),
               f"a non-empty tuple of {list(DATASET_NAMES)}")
              for n in ("datasets", "memory_datasets") if n in v]
    if "seeds" in v:
        rules.append(("seeds", bool(cfg.seeds) and all(type(s) is int for s in cfg.seeds),
                      "a non-empty tuple of ints"))
    if "width_scale" in v:
        rules.append(("width_scale", 0 < cfg.width_scale <= 1, "in (0, 1] (1: the paper's)"))
    if "perceptual_weight" in v:
        rules.append(("perceptual_weight", cfg.perceptual_weight >= 0, ">= 0"))
    if "linear_in" in v:
        rules.append(("linear_out", cfg.linear_out < cfg.linear_in, "< linear_in"))
        rules.append(("one_weight_ws", len(cfg.one_weight_ws) > 0, "non-empty"))
    for name, ok, what in rules:
        if not ok:
            raise ConfigError(f"{section} parameter {name} must be {what}, got {v[name]!r}")


def resolve_profile(profile: Optional[str]) -> str:
    """``profile``, else ``$FA_PROFILE``, else ``quick``; ConfigError for an unknown name."""
    if profile is None:
        profile = os.environ.get(PROFILE_ENV) or "quick"
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {list(PROFILES)}")
    return profile


def make_config(section: str, profile: Optional[str] = None, **overrides: Any):
    """``section``'s frozen config at ``profile`` with ``overrides``; ConfigError: any bad input."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; choose one of {list(SECTIONS)}")
    profile, hints = resolve_profile(profile), get_type_hints(SECTIONS[section])
    if unknown := sorted(set(overrides) - set(hints)):
        raise ConfigError(f"unknown {section} parameter(s) {unknown}; known: {sorted(hints)}")
    training = issubclass(SECTIONS[section], TrainingRun)
    shared = _PROFILE_VALUES["training"][profile] if training else {}
    values = {"profile": profile, **{k: v for k, v in shared.items() if k in hints},
              **_PROFILE_VALUES[section].get(profile, {})}
    values.update((name, value) for name, value in overrides.items() if value is not None)
    return SECTIONS[section](**{name: check_type(section, name, value, hints[name])
                                for name, value in values.items()})


def to_dict(config) -> dict[str, Any]:
    """A plain dict of the config for checkpoint identities (width_scale 1 left out: old names)."""
    return {k: v for k, v in asdict(config).items() if not (k == "width_scale" and v == 1.0)}


def describe(config) -> str:
    """One line per field, marking values that differ from quick, then where outputs go."""
    quick = vars(make_config(_SECTION_OF[type(config)], "quick"))
    lines = [f"  {name:16s} = {value!r}" + "   (differs from quick)" * (value != quick[name])
             for name, value in vars(config).items()]
    return "\n".join([f"{type(config).__name__} (profile {config.profile!r})", *lines,
                      describe_destination(config.profile)])
