"""Run profiles and validated, frozen configurations: the one source of truth.

Three profiles:

``smoke``
    seconds per notebook on a CPU, tiny subsets; what CI and nbval run.
``quick``
    the main job's default: minutes on 2 CPU cores, the real 5,000-digit MNIST sample,
    results that show the paper's effects.
``paper``
    the paper's data, sizes and hyper-parameters (Section 4: Adam, lr 1e-5, batch 128,
    tau = 1, T = 1); needs a GPU and the full downloaded datasets, never the sample.

Each notebook section has its own frozen dataclass (:class:`ToyConfig` for Section 3.2,
:class:`FAConfig` for Section 3.1). :func:`make_config` builds one from a profile plus
overrides and validates names, types and choices *before any work is done*. Papermill's
``-p`` guesses types (``"001"`` becomes the int 1, ``"[1,2]"`` stays a string); a value of
the wrong type is refused with a message naming the parameter, rather than silently
coerced.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Mapping, Optional

PROFILES = ("smoke", "quick", "paper")
DEFAULT_PROFILE = "quick"
#: Environment variable that selects the profile when a notebook's ``profile`` parameter
#: is ``None`` (how CI runs the unedited notebooks at ``smoke`` under nbval).
PROFILE_ENV = "FA_PROFILE"

DATASET_NAMES = ("mnist", "cifar10", "celeba", "stl10")


#: Seed offset of each model within a run (:mod:`fa_utils.experiments`): model ``m`` of a run
#: with seed ``s`` builds its networks after ``torch.manual_seed(s + offset)`` and seeds its
#: method's generator with ``s + offset + 1``. The VFA encoder of notebook 04 is notebook
#: 03's (offset 0), so the two share one checkpoint.
SEED_STREAMS: Mapping[str, int] = MappingProxyType({
    "fa": 0, "vfa": 0, "local": 0, "vfagan": 100, "ae": 200, "vae": 200, "gan": 300,
    "judge": 400,  # the judge of the samples (fa_utils.experiments.train_judge)
    "samples": 1000,  # the generated images of the Frechet distances (notebook 04)
})


class ConfigError(ValueError):
    """A profile, parameter name, type or value that this project does not accept."""


# --------------------------------------------------------------------------------------
# Section dataclasses
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Shared pieces: every section is composed of these and its own fields
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """What every section has: the profile, the seed of its randomness and the device."""

    profile: str = DEFAULT_PROFILE
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        _validate(_section_of(self), self)


@dataclass(frozen=True)
class TrainingRun(RunSettings):
    """A section that trains image networks: data loading, checkpoints, network width."""

    num_workers: int = 0  # DataLoader workers
    ckpt_every: int = 200  # optimiser steps between checkpoints
    width_scale: float = 1.0  # 1: the paper's networks; < 1 narrower (smoke, quick: WIDTH_SCALE_DOC)


@dataclass(frozen=True)
class DataSettings:
    """Which images (:func:`fa_utils.data.load_dataset`)."""

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

    lr: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999


def data_settings(config, **overrides) -> DataSettings:
    """The :class:`DataSettings` part of any section's config (``overrides`` replace
    fields, e.g. ``dataset`` for one of local FA's datasets)."""
    values = {f.name: getattr(config, f.name) for f in fields(DataSettings)}
    values.update(overrides)
    return DataSettings(**values)


@dataclass(frozen=True)
class ToyConfig(InnerSettings, RunSettings):
    """Section 3.2 (Figure 2): invert y = sin(3 pi x) on x in [-domain, domain].

    The domain is not stated in the paper; [-1, 1] is our reading (docs/method.md section 2).
    """

    domain: float = 1.0
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
    """Section 3.1 (Algorithm 1): feature alignment on images.

    Optimiser: the paper's text says Adam lr 1e-5 (the ``paper`` profile uses it); the
    authors' code uses lr 1e-4 with betas (0.5, 0.999). The ``quick`` profile uses
    lr 5e-4 with those betas because 1e-5 gives only blobs in a CPU budget (docs/method.md section 9).
    """

    latent_dim: int = 128
    batch_size: int = 128
    epochs: int = 9
    lr: float = 5e-4
    squash: str = "none"
    weight_clamp: Optional[float] = math.sqrt(2.0)  # Eq. 9; None disables the clamp
    latent2_epochs: int = 6  # the 2-neuron latent space of Figure 6a
    sweep_T: tuple = (1, 2, 4, 8)
    sweep_tau: tuple = (0.25, 0.5, 1.0, 2.0)


#: What ``width_scale`` means (every section that trains networks has it).
WIDTH_SCALE_DOC = """\
``width_scale``: every network a section trains (encoders, decoders, discriminators, the
refiner G, the local-FA net) is built with its convolution filters and hidden Linear width
multiplied by this factor (:func:`fa_utils.models.scaled_architectures`; at least 4
filters and 16 hidden units). 1 (paper) is the paper's architecture (Tables 7-12). The
quick profile uses 0.5 (a quarter of the convolution cost, so that the main job fits 15
minutes on 2 CPU cores) and smoke 0.25 (seconds; docs/choices.md section 7): **not the
paper's architecture**. Every model of a comparison (Table 2, Figure 15) gets the same
factor. Table 12's generator (the STL-10 decoder) has fixed widths and is not narrowed.
Tables 3-6 always count and time the paper's sizes."""



def choices() -> dict[str, tuple]:
    """The allowed values of each choice parameter, read from the module that implements
    the choice (so that a value is allowed exactly where the code handles it)."""
    from . import baselines, data, fa, vfa

    return {"profile": PROFILES, "dataset": DATASET_NAMES, "data_source": data.SOURCES,
            "r_init": fa.R_INITS, "squash": fa.SQUASHES,
            "beta_schedule": vfa.BETA_SCHEDULES, "rand_side": vfa.RAND_SIDES,
            "fake_source": vfa.FAKE_SOURCES, "vae_decoder": baselines.DECODERS,
            "gan_discriminator": baselines.DISCRIMINATORS}


def _section_of(config) -> str:
    return next((k for k, v in SECTIONS.items() if type(config) is v), type(config).__name__)

# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_type(section: str, name: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` if it has the declared type, else raise :class:`ConfigError`.

    Accepted widenings: an int for a float field (never a bool); a list for a tuple field.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(section, name, value, inner[0])
    ok = False
    if annotation is bool:
        ok = isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif annotation is str:
        ok = isinstance(value, str)
    elif annotation is tuple:
        if isinstance(value, list):
            value = tuple(value)
        ok = isinstance(value, tuple)
    else:  # pragma: no cover - every field above uses one of these
        ok = isinstance(value, annotation)
    if not ok:
        hint = ""
        if annotation is str and isinstance(value, (int, float)):
            hint = (" (papermill's -p turns strings that look like numbers into numbers;"
                    " pass it with -r NAME VALUE to keep it a string)")
        elif annotation is tuple and isinstance(value, str):
            hint = " (papermill's -p keeps '[1,2]' a string; pass lists with -y NAME '[1, 2]')"
        raise ConfigError(
            f"{section} parameter {name!r} must be {_type_name(annotation)}, "
            f"got {type(value).__name__} {value!r}{hint}")
    return value


#: Integer parameters that must be >= 1 and numbers that must be > 0, in any section.
_AT_LEAST_ONE = frozenset({
    "T", "steps", "epochs", "batch_size", "hidden", "grid", "latent_dim", "n_test",
    "invert_steps", "ckpt_every", "emphasis_per_class", "judge_epochs", "gen_width",
    "gen_kernel", "fid_samples", "fid_real", "recon_images", "gan_recon_steps",
    "fid_autoencoder_steps", "time_repeats", "recon_T", "memory_batch", "memory_repeats",
    "one_weight_steps", "linear_in", "linear_out", "linear_batch", "linear_steps", "clamp_dim",
    "clamp_T", "clamp_steps"})
_POSITIVE = frozenset({"lr", "tau", "invert_lr", "class_scale", "beta", "gan_lr",
                       "baseline_lr", "gan_recon_lr", "recon_tau", "linear_lr",
                       "linear_tolerance", "clamp_lr"})


def _validate(section: str, cfg) -> None:
    """Every value check of every section, once (types: :func:`_check_type`): choices,
    ranges, the device. Runs whenever a config is built, also by ``dataclasses.replace``.

    Raises:
        ConfigError: naming the section, the parameter, the value and what is allowed.
    """
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    for name, allowed in choices().items():  # None: an optional field left unset
        if values.get(name) is not None and values[name] not in allowed:
            raise ConfigError(
                f"{section} parameter {name}={values[name]!r} is not one of {list(allowed)}")
    for name, value in values.items():
        if name in _AT_LEAST_ONE and value < 1:
            raise ConfigError(f"{section} parameter {name} must be >= 1, got {value}")
        if name in _POSITIVE and not value > 0:
            raise ConfigError(f"{section} parameter {name} must be > 0, got {value}")
    if "width_scale" in values and not 0 < values["width_scale"] <= 1:
        raise ConfigError(f"{section} parameter width_scale must be in (0, 1], got "
                          f"{values['width_scale']} (1 is the paper's architecture)")
    if values.get("perceptual_weight", 0) < 0:
        raise ConfigError(f"{section} parameter perceptual_weight must be >= 0, "
                          f"got {values['perceptual_weight']}")
    device = values["device"]
    if not (device in ("auto", "cpu", "cuda", "mps") or device.startswith("cuda:")):
        raise ConfigError(f"device {device!r} is not one of 'auto', 'cpu', 'cuda', "
                          f"'cuda:N', 'mps'")


def resolve_profile(profile: Optional[str]) -> str:
    """The profile to use: ``profile`` if given, else ``$FA_PROFILE``, else ``quick``.

    Raises:
        ConfigError: the name is not one of :data:`PROFILES`.
    """
    if profile is None:
        profile = os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {list(PROFILES)}")
    return profile


def make_config(section: str, profile: Optional[str] = None, **overrides: Any):
    """Build the frozen config of ``section`` for ``profile`` with ``overrides`` applied.

    Args:
        section: ``"toy"`` or ``"fa"`` (keys of :data:`SECTIONS`).
        profile: ``smoke``, ``quick`` or ``paper``; ``None`` reads ``$FA_PROFILE`` and
            falls back to ``quick``.
        **overrides: field values; a value of ``None`` means "the profile's default"
            (so a notebook's parameters cell can hold ``None`` for "not set"), except for
            fields whose type admits None (``n_train``, ``weight_clamp``), where ``None``
            is only honoured if set explicitly with a non-notebook call.

    Returns:
        A :class:`ToyConfig` or :class:`FAConfig`.

    Raises:
        ConfigError: unknown section, profile or parameter name, a wrong type, or a value
            outside its choices. Raised before anything runs.
    """
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; choose one of {list(SECTIONS)}")
    cls = SECTIONS[section]
    profile = resolve_profile(profile)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"unknown {section} parameter(s) {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {"profile": profile}
    values.update(_PROFILE_VALUES[section].get(profile, {}))
    hints = typing.get_type_hints(cls)
    for name, value in overrides.items():
        if value is None:
            continue
        values[name] = value
    return cls(**{name: _check_type(section, name, value, hints[name])
                  for name, value in values.items()})


#: Fields added after checkpoints were first written, left out of :func:`to_dict` while they
#: hold this neutral value, so that a checkpoint written before them still matches its run.
_OMITTED_AT = {"width_scale": 1.0}


def to_dict(config) -> dict[str, Any]:
    """A plain dict of the config (tuples kept), for checkpoints and tables; fields of
    :data:`_OMITTED_AT` at their neutral value are left out (:func:`from_dict` restores
    them as the default)."""
    return {k: v for k, v in dataclasses.asdict(config).items()
            if not (k in _OMITTED_AT and v == _OMITTED_AT[k])}


def from_dict(section: str, values: dict[str, Any]):
    """Rebuild a config from :func:`to_dict`'s output, validating it again.

    Raises:
        ConfigError: as :func:`make_config`.
    """
    values = dict(values)
    profile = values.pop("profile", None)
    cls = SECTIONS.get(section)
    if cls is None:
        raise ConfigError(f"unknown config section {section!r}; choose one of {list(SECTIONS)}")
    base = make_config(section, profile)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {section} parameter(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(base, **{n: _check_type(section, n, v, hints[n])
                                        for n, v in values.items()})


def describe(config) -> str:
    """A one-line-per-field listing of a config, marking values that differ from quick, and
    a last line saying where its figures and tables go
    (:func:`fa_utils.outputs.describe_destination`)."""
    reference = make_config(_section_of(config), "quick")
    lines = [f"{type(config).__name__} (profile {config.profile!r})"]
    for f in fields(config):
        value = getattr(config, f.name)
        mark = "" if value == getattr(reference, f.name) else "   (differs from quick)"
        lines.append(f"  {f.name:16s} = {value!r}{mark}")
    from .outputs import describe_destination

    lines.append(describe_destination(config.profile))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Sections 3.3-3.4 and 5: VFA, VFA-GAN and the baselines (notebooks 03 and 04)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VFAConfig(AdamSettings, InnerSettings, DataSettings, TrainingRun):
    """Section 3.3 (Eq. 5, Figure 3): VFA, and its conditional variant (Section 3.4,
    Figures 6b and 8).

    Choices (docs/method.md sections 3-4; see :mod:`fa_utils.vfa`):

    * ``beta_schedule="uniform"``: beta ~ U(0, ``beta``) per example. Section 4 states it
      for all models ("sample beta from a uniform distribution, with a different random
      value for each training example"); the paper never gives VFA's constant beta.
      ``"fixed"`` uses ``beta`` for every example (Eq. 5 read literally).
    * ``rand_side="mu"``: the random-input side of the inner loss is mu(r) (the paper's
      "no random normal vector"); ``"mu+sigma"`` is the authors' code, mu(r) + sigma(r).
    * ``conditional``: a linear class head ``logits`` parallel to mu and logvar (labeled
      datasets only); the inner target adds ``class_scale * onehot(y)`` and the outer loss
      adds ``class_weight * ||onehot(y) - c(x)||^2`` (the supervised part, our reading).
      Table 3's VFA size (14.0 M on MNIST) includes this 10-class head.
    * ``squash="none"``, Adam lr 2e-4, betas (0.5, 0.999) at quick (docs/choices.md
      section 5; keep lr <= 1e-4 with ``squash="sigmoid"``). Paper profile: lr 1e-5
      (Section 4). Images read off an unsquashed r are clamped to [0, 1] for errors,
      display and FID.
    """

    latent_dim: int = 128
    conditional: bool = True
    class_scale: float = 1.0  # one-hot value of the inner target in training
    class_weight: float = 1.0  # weight of the supervised ||onehot(y) - c(x)||^2 term
    beta: float = 1.0  # KL weight ("fixed") or upper end of U(0, beta) ("uniform")
    beta_schedule: str = "uniform"
    rand_side: str = "mu"
    batch_size: int = 128
    epochs: int = 6
    lr: float = 2e-4
    squash: str = "none"
    weight_clamp: Optional[float] = math.sqrt(2.0)
    emphasis_scales: tuple = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0)  # one-hot values of Figure 6b
    emphasis_per_class: int = 20  # prior draws per class when measuring the emphasis
    judge_epochs: int = 20  # the judge of the samples (fa_utils.experiments.train_judge)


@dataclass(frozen=True)
class VFAGANConfig(DataSettings, TrainingRun):
    """Section 3.4 (Eq. 6-8, Figure 4) and Section 5 (Tables 2-6, Figure 15): VFA-GAN and
    the AE / VAE / GAN baselines. The VFA part (encoder, Eq. 6) comes from the ``vfa``
    section with the same profile, seed and dataset, so notebook 04 reuses notebook 03's
    trained encoder when their settings agree.

    Choices (see :mod:`fa_utils.vfa` and :mod:`fa_utils.baselines`):

    * ``fake_source="reconstruction"``: G and D see G(r_hat) with r_hat the FA
      reconstruction of the real batch (Eq. 7-8 as written); ``"prior"``: G(r) with r
      decoded from z ~ N(0, I); ``"authors"``: G's adversarial term on reconstructions,
      D's fakes from the prior (the authors' code). The perceptual term always compares
      x with G(r_hat(x)).
    * ``gen_kernel=3``: Section 4 says every convolution has k = 3; Table 11 says 7. The
      paper's sizes (Tables 3-5) imply 3 for MNIST, CIFAR-10 and CelebA, Table 6 implies 7.
    * ``vae_decoder="auto"``: the decoder / generator the paper's sizes imply: the mirrored
      encoder (:class:`fa_utils.models.MirroredDecoder`) for MNIST, CIFAR-10 and CelebA,
      Table 12's generator for STL-10. ``"table12"`` or ``"mirrored"`` force one.
    * Budget (``epochs``), the same for every model of Table 2 and Figure 15: each network
      gets ``epochs`` x floor(N / ``batch_size``) optimiser steps over the same N training
      images, in the same per-epoch order (:func:`fa_utils.train.fit`): the VFA encoder
      (notebook 03's, its ``vfa`` section has the same epochs at every profile), VFA-GAN's
      G and D, the AE, the VAE, and the GAN's G and D (one D and one G step per batch).
      Equal steps rather than equal wall time: a step count does not depend on the machine
      or its load, and every model sees each image equally often. What a model costs per
      step is reported beside it (notebook 04, ``table02_budget_<dataset>``).
    * Optimisers: the paper's Adam lr 1e-5 at paper; at quick lr 2e-4, betas (0.5, 0.999)
      for the adversarial parts (the usual DCGAN/LSGAN setting: ``gan_lr``, ``beta1``) and
      lr ``baseline_lr`` with betas (``baseline_beta1``, ``beta2``) for the AE and VAE.
    * Initialisation: the AE, VAE and the GAN's generator are He-initialised
      (:mod:`fa_utils.baselines`); VFA's encoder and G orthogonally (Section 4).
    * ``gan_discriminator``: the GAN baseline's D, ``"dcgan"`` at smoke and quick (why:
      docs/baselines.md, "The GAN's discriminator at smoke and quick"), ``"table10"`` at
      paper. VFA-GAN always uses Table 10's.
    """

    seeds: tuple = (0,)  # Table 2 trials (paper: three initialisations)
    latent_dim: int = 128  # Z of the AE, VAE and GAN baselines
    batch_size: int = 128
    gen_width: int = 128  # Table 11's filters
    gen_kernel: int = 3
    perceptual_weight: float = 0.01  # lambda of Eq. 7 (Section 4)
    fake_source: str = "reconstruction"
    vae_decoder: str = "auto"
    gan_discriminator: str = "dcgan"
    epochs: int = 6  # the budget of every model (see above); the vfa section's epochs too
    gan_lr: float = 2e-4
    baseline_lr: float = 1e-3
    beta1: float = 0.5
    baseline_beta1: float = 0.9
    beta2: float = 0.999
    fid_samples: int = 2000  # generated images per model for the Frechet distance
    fid_real: int = 4500  # reference images (training split)
    recon_images: int = 100  # held-out images for Figure 15
    gan_recon_steps: int = 100  # Adam steps of argmin_z ||x - G(z)||^2
    gan_recon_lr: float = 0.05
    time_repeats: int = 20  # interleaved timing rounds (fastest kept)
    fid_autoencoder_steps: int = 400  # min. steps of the label-free FID feature (offline, unlabeled data)
    judge_epochs: int = 20  # the judge of the samples (fa_utils.experiments.train_judge)

    def __post_init__(self):
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                     for s in self.seeds):
            raise ConfigError(f"vfagan parameter seeds must be a non-empty tuple of ints, "
                              f"got {self.seeds!r}")
        super().__post_init__()


# --------------------------------------------------------------------------------------
# Section 3.5 and Appendix A: local FA and the convergence analysis (notebooks 05 and 06)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFAConfig(AdamSettings, InnerSettings, DataSettings, TrainingRun):
    """Section 3.5 (Algorithms 2-3, Figure 16): local feature alignment, and the memory it
    saves against global FA (see :mod:`fa_utils.local`).

    Choices: arcsinh after every layer but ``Linear(Z)``; the inner problem is posed on each
    layer's linear operator and reconstruction applies sinh after each arcsinh
    (``align_activation=False``, Algorithm 3 read literally; ``True`` aligns through the
    arcsinh and applies no sinh); r_0 = 0 and one step (authors' code); the Eq. 9 clamp on
    (``clamp_weights``); orthogonal init rescaled to operator norm 1 per layer
    (``spectral_init``, see :func:`fa_utils.local.make_local_net`); Adam lr 1e-3, betas
    (0.5, 0.999) at quick (docs/choices.md section 6), the paper's lr 1e-5 at paper.
    ``datasets`` are trained and shown (Figure 16); ``dataset``, when set, is a shorthand
    for ``datasets=(dataset,)`` (so ``-p dataset celeba`` works for notebooks 02-05 alike).
    ``memory_datasets`` are measured on random inputs at ``memory_batch`` (the paper's batch
    is 128); ``None`` (the default) measures the architectures of ``datasets``, so a run
    writes only its own datasets' tables.
    """

    datasets: tuple = ("mnist",)
    dataset: Optional[str] = None  # shorthand: datasets = (dataset,)
    latent_dim: int = 128
    batch_size: int = 128
    epochs: int = 2
    lr: float = 1e-3
    recon_T: int = 1  # inner steps per layer in Algorithm 3
    recon_tau: float = 1.0
    clamp_weights: bool = True  # Eq. 9, |w| <= sqrt(2), after every layer update
    align_activation: bool = False
    spectral_init: bool = True  # orthogonal init scaled to operator norm 1 per layer
    memory_datasets: Optional[tuple] = None  # None: the architectures of ``datasets``
    memory_batch: int = 128
    memory_repeats: int = 1  # timed steps per method and architecture (median)

    def __post_init__(self):
        if self.dataset is not None:
            object.__setattr__(self, "datasets", (self.dataset,))
        if self.memory_datasets is None:
            object.__setattr__(self, "memory_datasets", tuple(self.datasets))
        for name in ("datasets", "memory_datasets"):
            value = getattr(self, name)
            bad = [d for d in value if d not in DATASET_NAMES]
            if not value or bad:
                raise ConfigError(f"local parameter {name} must be a non-empty tuple of "
                                  f"{list(DATASET_NAMES)}, got {value!r}")
        super().__post_init__()  # width_scale: the trained net only; memory: the paper's sizes


@dataclass(frozen=True)
class AppendixConfig(RunSettings):
    """Appendix A (Sections 7.1-7.2; see :mod:`fa_utils.appendix`): the one-weight
    recursion (Eq. 13) against its closed form (Eq. 18), FA on a linear layer driving W^T
    towards the pseudo-inverse, and what the sqrt(2) clamp (Eq. 9) changes.

    ``one_weight_x``: the input recovered, so the target is a = w x and the limit a / w = x.
    ``linear_in`` x ``linear_in`` is the square layer, ``linear_out`` < ``linear_in`` the
    layer with fewer outputs; ``linear_tolerance`` bounds the final RMS distances.
    """

    one_weight_ws: tuple = (0.3, 0.7, 1.0, 1.3, 1.4, 1.45, 1.6)
    one_weight_x: float = 1.0
    one_weight_r0: float = -0.5
    one_weight_steps: int = 40
    linear_in: int = 32
    linear_out: int = 12
    linear_batch: int = 256
    linear_steps: int = 800
    linear_lr: float = 1e-2  # Adam, decayed linearly to 0
    linear_tolerance: float = 0.01
    clamp_w0: float = 1.6
    clamp_dim: int = 8  # diagonal layer of this size, weights from clamp_w0 down to 0.4
    clamp_T: int = 4  # inner steps in training and in the inference check
    clamp_lr: float = 0.01
    clamp_steps: int = 200

    def __post_init__(self):
        super().__post_init__()
        if self.linear_out >= self.linear_in:
            raise ConfigError(f"appendix parameter linear_out ({self.linear_out}) must be "
                              f"smaller than linear_in ({self.linear_in})")
        if not self.one_weight_ws:
            raise ConfigError("appendix parameter one_weight_ws must not be empty")


#: Each section's config class, by the name :func:`make_config` takes.
SECTIONS: Mapping[str, type] = MappingProxyType({
    "toy": ToyConfig, "fa": FAConfig, "vfa": VFAConfig, "vfagan": VFAGANConfig,
    "local": LocalFAConfig, "appendix": AppendixConfig})

#: {section: {profile: overrides}}: the values that differ from the dataclass defaults,
#: each once (a profile not listed takes the defaults). Section 4's optimiser and the full
#: datasets at paper; seconds at smoke; narrower networks and the equal batch of Table 2's
#: comparison at quick (WIDTH_SCALE_DOC).
_PROFILE_VALUES: Mapping[str, Mapping[str, dict]] = MappingProxyType({
    "toy": {
        "smoke": dict(hidden=128, steps=300, invert_steps=300, grid=201),
        "quick": dict(hidden=256, steps=1000, invert_steps=500, grid=501),
    },
    "fa": {
        "smoke": dict(n_train=256, n_test=64, epochs=1, latent2_epochs=1, batch_size=64,
                      sweep_T=(1, 2), sweep_tau=(0.5, 1.0), ckpt_every=50, width_scale=0.25),
        "quick": dict(width_scale=0.5),
        "paper": dict(data_source="torchvision", download=True, n_test=10000, epochs=50,
                      latent2_epochs=20, lr=1e-5, beta1=0.9, beta2=0.999,
                      num_workers=4, ckpt_every=1000),
    },
    "vfa": {
        "smoke": dict(n_train=64, n_test=64, epochs=1, batch_size=32, emphasis_per_class=4,
                      emphasis_scales=(1.0, 4.0), ckpt_every=50, width_scale=0.25,
                      judge_epochs=1),
        "quick": dict(batch_size=64, width_scale=0.5, epochs=12),
        "paper": dict(data_source="torchvision", download=True, n_test=10000, epochs=50,
                      lr=1e-5, beta1=0.9, beta2=0.999, num_workers=4, ckpt_every=1000),
    },
    "vfagan": {
        "smoke": dict(n_train=64, n_test=64, batch_size=32, epochs=1, fid_samples=64,
                      fid_real=64, recon_images=16, gan_recon_steps=10, time_repeats=3,
                      ckpt_every=50, width_scale=0.25, fid_autoencoder_steps=10,
                      judge_epochs=1),
        "quick": dict(batch_size=64, width_scale=0.5, epochs=12),
        "paper": dict(data_source="torchvision", download=True, n_test=10000, seeds=(0, 1, 2),
                      epochs=50, gan_lr=1e-5, baseline_lr=1e-5, beta1=0.9, fid_samples=10000,
                      gan_discriminator="table10", fid_real=10000, recon_images=1000,
                      gan_recon_steps=500, num_workers=4, ckpt_every=1000),
    },
    "local": {
        "smoke": dict(n_train=256, n_test=64, epochs=1, batch_size=64, memory_batch=8,
                      ckpt_every=50, width_scale=0.25),
        "quick": dict(width_scale=0.5),
        "paper": dict(datasets=DATASET_NAMES, data_source="torchvision", download=True,
                      n_test=10000, epochs=50, lr=1e-5, beta1=0.9, beta2=0.999,
                      memory_repeats=5, num_workers=4, ckpt_every=1000),
    },
    "appendix": {
        "smoke": dict(linear_steps=300, clamp_steps=100),
        "paper": dict(linear_in=64, linear_out=24, linear_steps=2000),
    },
})
