"""The headless runner: bad input fails before any work, failures name notebook and cell."""
import nbformat
import pytest

from fa_utils import runner
from fa_utils.outputs import repo_root


def write_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, src in enumerate(cells):
        c = nbformat.v4.new_code_cell(src)
        if i == 0:
            c.metadata["tags"] = ["parameters"]
        nb.cells.append(c)
    nbformat.write(nb, path)
    return path


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


def test_a_failing_notebook_names_itself_and_the_cell(tmp_path, capsys):
    nb = write_notebook(tmp_path / "07_boom.ipynb",
                        ["x = 1", "y = x + 1", "raise ValueError(f'boom {y}')", "z = 3"])
    out = tmp_path / "out"
    assert runner.main(["run", str(nb), "-p", "x", "2", "--out", str(out)]) == runner.EXIT_FAILED
    err = capsys.readouterr().err
    assert "07_boom.ipynb" in err and "cell 3" in err and "ValueError: boom 3" in err  # x=2 was injected
    assert (out / "07_boom.ipynb").exists()  # the executed copy, with the traceback


def test_a_missing_dataset_fails_in_setup_with_instructions(tmp_path, capsys):
    # cifar10 is not on disk and download is off: one clear error, non-zero exit
    code = runner.main(["run", "02", "--profile", "smoke", "-p", "dataset", "cifar10",
                        "-p", "data_source", "torchvision", "-p", "epochs", "1",
                        "--out", str(tmp_path)])
    assert code == runner.EXIT_FAILED
    err = capsys.readouterr().err
    assert "02_fa_mnist.ipynb" in err and "DatasetUnavailable" in err
    assert "cifar-10-batches-py" in err
