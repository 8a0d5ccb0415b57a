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
