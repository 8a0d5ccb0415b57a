"""Where figures and tables go: the smoke profile never touches the committed folders."""
import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from fa_utils import outputs  # noqa: E402


def _save_both(profile):
    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    png = outputs.save_figure(fig, "t_fig", caption="c", profile=profile)
    md = outputs.write_table("t_table", "T", ["a"], [[1]], profile=profile)
    return png, md


def test_smoke_outputs_go_to_runs_unless_an_output_root_is_set(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "repo_root", lambda: tmp_path)
    monkeypatch.delenv(outputs.OUTPUT_ROOT_ENV, raising=False)
    png, md = _save_both("smoke")
    assert png.parent == tmp_path / "runs" / "smoke" / "figures"
    assert md.parent == tmp_path / "runs" / "smoke" / "results"
    assert (png.parent / outputs.MANIFEST).exists()
    png, md = _save_both("quick")  # the main job's profile writes the committed folders
    assert png.parent == tmp_path / "figures" and md.parent == tmp_path / "results"
    monkeypatch.setenv(outputs.OUTPUT_ROOT_ENV, str(tmp_path / "elsewhere"))
    png, md = _save_both("smoke")  # an explicit root wins
    assert png.parent == tmp_path / "elsewhere" / "figures"
    assert md.parent == tmp_path / "elsewhere" / "results"


class _FakeShell:
    kernel = object()


def test_an_interactive_kernel_writes_under_runs_unless_asked(tmp_path, monkeypatch):
    """In a Jupyter kernel without FA_UPDATE_COMMITTED the committed figures/ and results/
    are safe: outputs go to runs/<profile>/ and describe() says where and how to update."""
    import sys
    import types

    from fa_utils import config

    monkeypatch.setattr(outputs, "repo_root", lambda: tmp_path)
    monkeypatch.delenv(outputs.OUTPUT_ROOT_ENV, raising=False)
    monkeypatch.delenv(outputs.UPDATE_COMMITTED_ENV, raising=False)
    assert not outputs.in_jupyter_kernel()  # pytest is not a kernel
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: _FakeShell()
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert outputs.in_jupyter_kernel()
    text = config.describe(config.make_config("toy", "quick"))
    assert f"figures -> {tmp_path / 'runs' / 'quick' / 'figures'}" in text
    assert "python -m fa_utils run NN --profile quick" in text and "FA_UPDATE_COMMITTED=1" in text
    assert not (tmp_path / "runs").exists()  # describing creates nothing
    png, md = _save_both("quick")
    assert png.parent == tmp_path / "runs" / "quick" / "figures"
    assert md.parent == tmp_path / "runs" / "quick" / "results"
    assert not (tmp_path / "figures").exists() and not (tmp_path / "results").exists()
    monkeypatch.setenv(outputs.UPDATE_COMMITTED_ENV, "1")  # the runner's kernels
    png, md = _save_both("quick")
    assert png.parent == tmp_path / "figures" and md.parent == tmp_path / "results"
    assert "an interactive run" not in outputs.describe_destination("quick")
    png, _ = _save_both("smoke")  # smoke stays scratch even then
    assert png.parent == tmp_path / "runs" / "smoke" / "figures"
    monkeypatch.setenv(outputs.UPDATE_COMMITTED_ENV, "0")
    monkeypatch.setenv(outputs.OUTPUT_ROOT_ENV, str(tmp_path / "elsewhere"))
    png, _ = _save_both("quick")  # an explicit root wins (the tests, nbval)
    assert png.parent == tmp_path / "elsewhere" / "figures"
