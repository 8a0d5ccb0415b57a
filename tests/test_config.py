import dataclasses
import math

import pytest

from fa_utils import config
from fa_utils.config import ConfigError


@pytest.mark.parametrize("section", ["toy", "fa"])
@pytest.mark.parametrize("profile", config.PROFILES)
def test_every_profile_builds_and_round_trips(section, profile):
    cfg = config.make_config(section, profile)
    assert cfg.profile == profile
    again = config.SECTIONS[section](**config.to_dict(cfg))
    assert again == cfg


def test_profiles_differ_where_they_should():
    smoke, quick, paper = (config.make_config("fa", p) for p in config.PROFILES)
    assert smoke.n_train is not None and smoke.n_train < 1000  # seconds, not minutes
    assert quick.data_source == "auto"
    assert paper.data_source == "torchvision"  # never the embedded sample
    assert paper.lr == 1e-5 and paper.batch_size == 128  # Section 4
    assert config.make_config("toy", "paper").hidden == 1024  # Section 3.2
    assert quick.weight_clamp == pytest.approx(math.sqrt(2))  # Eq. 9


def test_unknown_profile_is_refused():
    with pytest.raises(ConfigError, match="unknown profile 'fast'.*smoke"):
        config.make_config("fa", "fast")


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "smoke")
    assert config.make_config("fa").profile == "smoke"
    monkeypatch.delenv(config.PROFILE_ENV)
    assert config.make_config("fa").profile == "quick"
    monkeypatch.setenv(config.PROFILE_ENV, "nope")
    with pytest.raises(ConfigError, match="nope"):
        config.make_config("fa")


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match=r"unknown fa parameter\(s\) \['epoch'\]"):
        config.make_config("fa", "smoke", epoch=3)


def test_papermill_type_mistakes_are_refused_with_a_hint():
    # papermill -p dataset 001 gives the int 1
    with pytest.raises(ConfigError, match="'dataset' must be str, got int 1.*-r NAME VALUE"):
        config.make_config("fa", "smoke", dataset=1)
    # papermill -p sweep_T "[1,2]" keeps a string
    with pytest.raises(ConfigError, match="'sweep_T' must be tuple, got str.*-y"):
        config.make_config("fa", "smoke", sweep_T="[1,2]")
    with pytest.raises(ConfigError, match="'epochs' must be int, got float"):
        config.make_config("fa", "smoke", epochs=2.5)
    with pytest.raises(ConfigError, match="'download' must be bool"):
        config.make_config("fa", "smoke", download=1)


def test_accepted_widenings_and_none_means_default():
    cfg = config.make_config("fa", "smoke", lr=1, sweep_T=[1, 3], epochs=None)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.sweep_T == (1, 3)
    assert cfg.epochs == config.make_config("fa", "smoke").epochs


@pytest.mark.parametrize("name,value", [("r_init", "gauss"), ("squash", "tanh"),
                                        ("dataset", "imagenet"), ("data_source", "web"),
                                        ("T", 0), ("lr", -1.0), ("device", "tpu")])
def test_bad_values_are_refused(name, value):
    with pytest.raises(ConfigError, match=name if name != "device" else "tpu"):
        config.make_config("fa", "smoke", **{name: value})


def test_counts_are_at_least_one_except_seed_workers_and_figure_6a():
    cfg = config.make_config("fa", "smoke", seed=0, num_workers=0, latent2_epochs=0)
    assert (cfg.seed, cfg.num_workers, cfg.latent2_epochs) == (0, 0, 0)
    with pytest.raises(ConfigError, match="n_test must be >= 1, got 0"):
        config.make_config("fa", "smoke", n_test=0)


def test_config_is_frozen_and_replace_validates():
    cfg = config.make_config("toy", "smoke")
    with pytest.raises(Exception):
        cfg.steps = 5  # type: ignore[misc]
    with pytest.raises(ConfigError, match="toy parameter steps must be >= 1"):
        dataclasses.replace(cfg, steps=0)


def test_to_dict_leaves_out_a_neutral_width_scale():
    """Checkpoints written before width_scale existed keep their digests."""
    assert "width_scale" not in config.to_dict(config.make_config("fa", "paper"))
    assert config.to_dict(config.make_config("fa", "quick"))["width_scale"] == 0.5


@pytest.mark.parametrize("profile", config.PROFILES)
def test_every_model_of_table_2_gets_the_same_budget(profile):
    """Notebook 04 trains the baselines for ``vfagan.epochs`` and takes VFA's encoder from
    the ``vfa`` section: the two must agree at every profile (equal optimiser steps)."""
    gcfg = config.make_config("vfagan", profile)
    vcfg = config.make_config("vfa", profile)  # notebook 03's encoder, reused by notebook 04
    assert (vcfg.epochs, vcfg.batch_size, vcfg.width_scale) == (
        gcfg.epochs, gcfg.batch_size, gcfg.width_scale)
    from fa_utils import experiments
    assert experiments.vfa_config_for(gcfg, 0).epochs == gcfg.epochs
    other = config.make_config("vfagan", profile, epochs=11, batch_size=48)
    other = experiments.vfa_config_for(other, 0)
    assert (other.epochs, other.batch_size) == (11, 48)


def test_check_type_of_an_optional_or_any_annotation():
    from typing import Any, Optional

    assert config.check_type("s", "n", None, Optional[int]) is None
    assert config.check_type("s", "n", "x", Any) == "x"
    with pytest.raises(ConfigError, match="s parameter 'n' must be int or None, got float 2.5"):
        config.check_type("s", "n", 2.5, Optional[int])
