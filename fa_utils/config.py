"""Run profiles and validated, frozen configurations: the one source of truth.

Three profiles (``../shared/DESIGN.md``):

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
from typing import Any, Optional

PROFILES = ("smoke", "quick", "paper")
DEFAULT_PROFILE = "quick"
#: Environment variable that selects the profile when a notebook's ``profile`` parameter
#: is ``None`` (how CI runs the unedited notebooks at ``smoke`` under nbval).
PROFILE_ENV = "FA_PROFILE"

DATASET_NAMES = ("mnist", "cifar10", "celeba", "stl10")


class ConfigError(ValueError):
    """A profile, parameter name, type or value that this project does not accept."""


# --------------------------------------------------------------------------------------
# Section dataclasses
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyConfig:
    """Section 3.2 (Figure 2): invert y = sin(3 pi x) on x in [-domain, domain].

    The domain is not stated in the paper; [-1, 1] is our reading (METHOD.md section 2).
    """

    profile: str = DEFAULT_PROFILE
    seed: int = 0
    device: str = "auto"
    domain: float = 1.0
    hidden: int = 1024  # two hidden layers of this width (paper: 1024)
    steps: int = 3000  # Adam steps for each of the two networks
    batch_size: int = 256
    lr: float = 1e-3
    alpha: float = 0.01  # Eq. 3 weight of the function output in the inner loss
    T: int = 1  # inner steps during training (one-shot, Section 4)
    tau: float = 1.0
    r_init: str = "zeros"
    invert_steps: int = 1500  # gradient steps on the input for the plain network (Fig. 2a)
    invert_lr: float = 0.01
    grid: int = 1001  # evaluation points over the domain
    tolerance: float = 0.05  # |x_hat - x| below this counts as recovered


@dataclass(frozen=True)
class FAConfig:
    """Section 3.1 (Algorithm 1): feature alignment on images.

    Optimiser: the paper's text says Adam lr 1e-5 (the ``paper`` profile uses it); the
    authors' code uses lr 1e-4 with betas (0.5, 0.999). The ``quick`` profile uses
    lr 5e-4 with those betas because 1e-5 gives only blobs in a CPU budget (METHOD.md 9).
    """

    profile: str = DEFAULT_PROFILE
    seed: int = 0
    device: str = "auto"
    dataset: str = "mnist"
    data_source: str = "auto"  # auto | sample | torchvision (see fa_utils.data)
    data_root: str = "data"
    download: bool = False
    n_train: Optional[int] = None  # None: the whole training split
    n_test: int = 500
    latent_dim: int = 128
    batch_size: int = 128
    epochs: int = 9
    lr: float = 5e-4
    beta1: float = 0.5
    beta2: float = 0.999
    T: int = 1
    tau: float = 1.0
    r_init: str = "zeros"
    squash: str = "none"
    weight_clamp: Optional[float] = math.sqrt(2.0)  # Eq. 9; None disables the clamp
    latent2_epochs: int = 6  # the 2-neuron latent space of Figure 6a
    sweep_T: tuple = (1, 2, 4, 8)
    sweep_tau: tuple = (0.25, 0.5, 1.0, 2.0)
    num_workers: int = 0
    ckpt_every: int = 200  # optimiser steps between checkpoints


SECTIONS: dict[str, type] = {"toy": ToyConfig, "fa": FAConfig}

CHOICES: dict[str, tuple] = {
    "profile": PROFILES,
    "r_init": ("zeros", "uniform", "normal"),
    "squash": ("none", "sigmoid"),
    "dataset": DATASET_NAMES,
    "data_source": ("auto", "sample", "torchvision"),
}

# Profile overrides per section; anything not listed takes the dataclass default.
_PROFILE_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "toy": {
        "smoke": dict(hidden=128, steps=300, invert_steps=300, grid=201),
        "quick": dict(hidden=1024, steps=1000, invert_steps=500, grid=501),
        "paper": dict(hidden=1024, steps=3000, invert_steps=1500, grid=1001),
    },
    "fa": {
        "smoke": dict(n_train=256, n_test=64, epochs=1, latent2_epochs=1, batch_size=64,
                      sweep_T=(1, 2), sweep_tau=(0.5, 1.0), ckpt_every=50),
        "quick": dict(epochs=9, latent2_epochs=6),
        "paper": dict(data_source="torchvision", download=True, n_test=10000, epochs=50,
                      latent2_epochs=20, lr=1e-5, beta1=0.9, beta2=0.999,
                      num_workers=4, ckpt_every=1000),
    },
}


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


def _validate_values(section: str, values: dict[str, Any]) -> None:
    for name, allowed in CHOICES.items():
        if name in values and values[name] not in allowed:
            raise ConfigError(
                f"{section} parameter {name}={values[name]!r} is not one of {list(allowed)}")
    for name, value in values.items():
        if name in ("T", "steps", "epochs", "batch_size", "hidden", "grid", "latent_dim",
                    "n_test", "invert_steps", "ckpt_every") and value is not None and value < 1:
            raise ConfigError(f"{section} parameter {name} must be >= 1, got {value}")
        if name in ("lr", "tau", "invert_lr") and value is not None and not value > 0:
            raise ConfigError(f"{section} parameter {name} must be > 0, got {value}")
    device = values.get("device")
    if device is not None and not (device in ("auto", "cpu", "cuda", "mps")
                                   or device.startswith("cuda:")):
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
    values.update(_PROFILE_VALUES[section][profile])
    hints = typing.get_type_hints(cls)
    for name, value in overrides.items():
        if value is None:
            continue
        values[name] = value
    checked = {name: _check_type(section, name, value, hints[name])
               for name, value in values.items()}
    _validate_values(section, checked)
    return cls(**checked)


def to_dict(config) -> dict[str, Any]:
    """A plain dict of the config (tuples kept), for checkpoints and tables."""
    return dataclasses.asdict(config)


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
    checked = {n: _check_type(section, n, v, hints[n]) for n, v in values.items()}
    _validate_values(section, checked)
    return dataclasses.replace(base, **checked)


def describe(config) -> str:
    """A one-line-per-field listing of a config, marking values that differ from quick."""
    section = next(k for k, v in SECTIONS.items() if isinstance(config, v))
    reference = make_config(section, "quick")
    lines = [f"{type(config).__name__} (profile {config.profile!r})"]
    for f in fields(config):
        value = getattr(config, f.name)
        mark = "" if value == getattr(reference, f.name) else "   (differs from quick)"
        lines.append(f"  {f.name:16s} = {value!r}{mark}")
    return "\n".join(lines)
