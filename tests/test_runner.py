"""The headless runner: bad input fails before any work, failures name notebook and cell."""
import re

import pytest

from fa_utils import claims, outputs, runner
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


def test_values_are_python_literals_checked_against_the_type_of_the_default(tmp_path):
    """A parameter that feeds no config field: read as a literal (else the string), then
    checked against its default's type; a str parameter keeps the raw word."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    cell = nbformat.v4.new_code_cell('tag = "mnist"\ncount = 0\nrate = 0.1\nflag = True\n'
                                     "sweep = [1]\nanything = None")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    path = tmp_path / "90_types.ipynb"
    nbformat.write(nb, path)
    words = [("tag", "001"), ("count", "7"), ("rate", "1e-4"), ("flag", "False"),
             ("sweep", "[1, 2]"), ("anything", "3")]
    assert runner.prepare([path], words, "smoke")[0][1] == {
        "tag": "001", "count": 7, "rate": 1e-4, "flag": False, "sweep": [1, 2], "anything": 3}
    assert runner.prepare([path], [("rate", "1"), ("anything", "sigmoid"), ("sweep", "(3,)")],
                          "smoke")[0][1] == {"rate": 1, "anything": "sigmoid", "sweep": [3]}
    for name, raw, match in [("count", "x", "'count' must be int, got str 'x'"),
                             ("flag", "1", "'flag' must be bool, got int 1"),
                             ("rate", "[1]", "'rate' must be float, got list")]:
        with pytest.raises(runner.RunnerError, match=f"90_types.ipynb: notebook parameter {match}"):
            runner.prepare([path], [(name, raw)], "smoke")


def test_every_notebook_declares_its_parameters():
    notebooks = runner.all_notebooks()
    assert [p.parent for p in notebooks] == [repo_root() / "notebooks"] * len(notebooks)
    assert len(notebooks) >= 2
    for nb in notebooks:
        params = runner.notebook_parameters(nb)
        assert {"profile", "seed", "device"} <= set(params), nb.name


# test_interrupts.py: a failing notebook names itself, the cell and its executed notebook.


@pytest.fixture
def no_kernel(monkeypatch):
    """Fail the test if the runner would start a notebook."""
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was started for a parameter error")
    monkeypatch.setattr(runner, "execute", refuse)


@pytest.mark.parametrize("nb, args, match", [
    ("02", ["-p", "epochs", "-3"], r"02_fa_mnist.ipynb: fa parameter epochs must be >= 1, got -3"),
    ("02", ["-p", "epochs", "two"], r"fa parameter 'epochs' must be int, got str 'two'"),
    ("02", ["-p", "lr", "0"], r"lr must be > 0"),
    ("02", ["-p", "r_init", "ones"], r"r_init='ones' is not one of \['zeros', 'uniform', 'normal'\]"),
    ("02", ["-p", "data_source", "001"], r"data_source='001' is not one of"),  # stays a string
    ("02", ["-p", "interactive", "maybe"],
     r"notebook parameter 'interactive' must be bool or None, got str 'maybe'"),
    ("03", ["-p", "conditional", "perhaps"], r"'conditional' must be bool, got str 'perhaps'"),
    ("04", ["-p", "seeds", "[]"], r"seeds must be a non-empty tuple of ints"),
    ("04", ["-p", "perceptual_weight", "-1"], r"perceptual_weight must be >= 0"),
    ("05", ["-p", "datasets", "mnist"],
     r"'datasets' must be tuple, got str 'mnist' \(write a list as '\[1, 2\]'"),
    ("05", ["-p", "datasets", '["foo"]'], r"datasets must be a non-empty tuple of"),
    ("06", ["-p", "linear_steps", "0"], r"linear_steps must be >= 1"),
    ("07", ["-p", "device", "gpu"],
     r"07_explore.ipynb: toy parameter device must be one of auto, cpu, cuda, cuda:N, mps, got 'gpu'"),
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
    """A parameter whose default is None must feed a config field (of a section its setup
    cell builds) or be listed in runner.OTHER_PARAMETERS; otherwise its values go unchecked."""
    import typing

    from fa_utils.config import SECTIONS

    assert runner.config_sections(runner._find("04")) == ("vfagan",)
    for nb in runner.all_notebooks():
        declared = runner.notebook_parameters(nb)
        fields = {f for s in runner.config_sections(nb) for f in typing.get_type_hints(SECTIONS[s])}
        for name, default in declared.items():
            if name == "profile":
                continue
            assert name in fields or name in runner.OTHER_PARAMETERS or default is not None, \
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


def _git(repo, *args):
    import subprocess

    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": __import__("os").environ["PATH"],
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def clean_repo(tmp_path, monkeypatch):
    """A git work tree standing in for the repository (its notebooks/ links to the real
    ones), committed, as the output root: the runner would write its figures/ and results/."""
    import shutil

    if not shutil.which("git"):
        pytest.skip("git missing")
    repo = tmp_path / "repo"
    (repo / "fa_utils").mkdir(parents=True)
    (repo / "fa_utils" / "code.py").write_text("x = 1\n")
    (repo / "results").mkdir()
    (repo / "results" / "table.md").write_text("old\n")
    (repo / "notebooks").symlink_to(repo_root() / "notebooks")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")
    monkeypatch.setattr(outputs, "repo_root", lambda: repo)
    monkeypatch.delenv(outputs.OUTPUT_ROOT_ENV, raising=False)
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return repo


def test_the_report_names_its_commit(clean_repo, monkeypatch):
    monkeypatch.setattr(runner, "execute", lambda nb, *a, **k: nb)
    head = _git(clean_repo, "rev-parse", "--short", "HEAD").strip()
    assert runner.main(["run", "06", "--profile", "quick"]) == 0
    assert f"| commit `{head}` |" in (clean_repo / "results" / "REPORT.md").read_text()
    (clean_repo / "fa_utils" / "code.py").write_text("x = 2\n")  # the code differs from HEAD
    assert runner.main(["run", "06", "--profile", "quick"]) == 0
    assert f"| commit `{head}` with uncommitted changes |" in (
        clean_repo / "results" / "REPORT.md").read_text()


def test_the_main_job_writes_its_run_times(clean_repo, monkeypatch, capsys):
    monkeypatch.setattr(runner, "execute", lambda nb, params, out_dir, *a: out_dir / nb.name)
    path = clean_repo / "results" / "run_times.md"
    assert runner.main(["reproduce", "--profile", "quick"]) == 0
    text = path.read_text()
    assert "--profile quick`" in text and "| total | 0 |" in text
    notebooks = [ln for ln in text.splitlines() if ln.startswith("| 0")]
    assert len(notebooks) == len(runner.all_notebooks())
    assert "run times: " + str(path) in capsys.readouterr().out

