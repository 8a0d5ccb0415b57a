"""The headless runner: bad input fails before any work, failures name notebook and cell."""
import re

import pytest

from fa_utils import runner
from fa_utils.outputs import repo_root


def test_unknown_profile_fails_before_running(capsys):
    assert runner.main(["reproduce", "--profile", "fast"]) == runner.EXIT_USAGE
    assert "unknown profile 'fast'" in capsys.readouterr().err


def test_unknown_parameter_is_named(capsys):
    assert runner.main(["run", "01", "--profile", "smoke", "-p", "epoch", "3"]) == runner.EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown parameter 'epoch'" in err and "01_toy_sin.ipynb" in err


def test_missing_notebook(capsys, tmp_path):
    assert runner.main(["run", str(tmp_path / "99_none.ipynb")]) == runner.EXIT_USAGE
    assert "no notebook" in capsys.readouterr().err


def test_values_take_the_type_of_the_default():
    assert runner.coerce("dataset", "001", "mnist") == "001"  # papermill -p would give 1
    assert runner.coerce("seed", "7", 0) == 7
    assert runner.coerce("lr", "1e-4", 0.1) == 1e-4
    assert runner.coerce("download", "false", True) is False
    assert runner.coerce("sweep", "[1, 2]", [1]) == [1, 2]
    assert runner.coerce("epochs", "3", None) == 3
    assert runner.coerce("squash", "sigmoid", None) == "sigmoid"
    with pytest.raises(runner.RunnerError, match="'seed': 'x' is not an int.*-p seed 0"):
        runner.coerce("seed", "x", 0)


def test_every_notebook_declares_its_parameters():
    notebooks = runner.all_notebooks()
    assert [p.parent for p in notebooks] == [repo_root() / "notebooks"] * len(notebooks)
    assert len(notebooks) >= 2
    for nb in notebooks:
        params = runner.notebook_parameters(nb)
        assert {"profile", "seed", "device"} <= set(params), nb.name


# test_interrupts.py: a failing notebook names itself and the cell, and its executed copy
# (NN.failed.ipynb) never replaces a successful one.


@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if the runner would start a notebook."""
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was started for a parameter error")
    monkeypatch.setattr(runner, "execute", refuse)


@pytest.mark.parametrize("nb, args, match", [
    ("02", ["-p", "epochs", "-3"], r"02_fa_mnist.ipynb: -p epochs -3: fa parameter epochs must be >= 1.*e.g. -p epochs 1"),
    ("02", ["-p", "epochs", "two"], r"'epochs': 'two' is not an int; e.g. -p epochs 1"),
    ("02", ["-p", "lr", "0"], r"lr must be > 0"),
    ("02", ["-p", "r_init", "ones"], r"r_init='ones' is not one of \['zeros', 'uniform', 'normal'\]"),
    ("02", ["-p", "data_source", "001"], r"data_source='001' is not one of"),  # stays a string
    ("02", ["-p", "interactive", "maybe"], r"'interactive': 'maybe' is not a bool"),
    ("03", ["-p", "conditional", "perhaps"], r"'conditional': 'perhaps' is not a bool"),
    ("04", ["-p", "seeds", "[]"], r"seeds must be a non-empty tuple of ints"),
    ("04", ["-p", "perceptual_weight", "-1"], r"perceptual_weight must be >= 0"),
    ("05", ["-p", "datasets", "mnist"], r"'datasets': 'mnist' is not a list; e.g. -p datasets '\[\"mnist\"\]'"),
    ("05", ["-p", "datasets", '["foo"]'], r"datasets must be a non-empty tuple of"),
    ("06", ["-p", "linear_steps", "0"], r"linear_steps must be >= 1"),
    ("07", ["-p", "device", "gpu"], r"07_explore.ipynb: -p device gpu: device 'gpu' is not one of"),
    ("01", ["-p", "profile", "quick"], r"--profile quick, not with -p profile"),
])
def test_every_bad_value_is_refused_before_a_kernel_starts(no_kernel, capsys, nb, args, match):
    assert runner.main(["run", nb, "--profile", "smoke", *args]) == runner.EXIT_USAGE
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert err.count("\n") == 1  # one message


def test_values_are_read_as_the_config_field_they_feed(no_kernel):
    plans = runner.prepare([runner._find("02")], [("epochs", "3"), ("lr", "1e-4"),
                                                  ("data_source", "sample"), ("interactive", "False")],
                           "smoke")
    assert plans[0][1] == {"epochs": 3, "lr": 1e-4, "data_source": "sample", "interactive": False,
                           "profile": "smoke"}
    plans = runner.prepare([runner._find("05")], [("datasets", '["mnist"]')], "smoke")
    assert plans[0][1]["datasets"] == ["mnist"]


def test_every_parameter_of_every_notebook_has_a_checked_type():
    """A parameter whose default is None must feed a config field (read from the setup
    cell) or be listed in runner.OTHER_PARAMETERS; otherwise its values go unchecked."""
    for nb in runner.all_notebooks():
        declared = runner.notebook_parameters(nb)
        feeds = runner._config_feeds(nb, declared)
        for name, default in declared.items():
            if name == "profile":
                continue
            assert name in feeds or name in runner.OTHER_PARAMETERS or default is not None, \
                f"{nb.name}: parameter {name!r} is not checked before a kernel starts"


def test_a_missing_dataset_fails_in_setup_with_instructions(tmp_path, capsys):
    # cifar10 is not on disk and download is off: one clear error, non-zero exit
    code = runner.main(["run", "02", "--profile", "smoke", "-p", "dataset", "cifar10",
                        "-p", "data_source", "torchvision", "-p", "epochs", "1",
                        "--out", str(tmp_path)])
    assert code == runner.EXIT_FAILED
    err = capsys.readouterr().err
    assert "02_fa_mnist.ipynb" in err and "DatasetUnavailable" in err
    assert "cifar-10-batches-py" in err
