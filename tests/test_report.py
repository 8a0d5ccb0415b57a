"""results/REPORT.md (fa_utils.claims): the report is assembled from the same Claim objects
that the notebooks check, so the two cannot disagree; the catalogue keeps a claim whose
notebook did not run; the runner's console (progress, no kernel warning, the summary)."""
import json
import re
from pathlib import Path

import nbformat
import pytest
import torch

from fa_utils import claims, experiments, fid, outputs, paper, runner
import notebook_code

GOOD_TOY = {"fa_mean_error": 0.015, "plain_mean_error": 0.47, "fa_recovered_fraction": 0.98,
            "plain_recovered_fraction": 0.19}
GOOD_BINS = {"fa": torch.tensor([0.01, 0.02, 0.015]), "plain": torch.tensor([0.2, 0.6, 0.5])}
figure2_claims = notebook_code.toy().figure2_claims  # notebook 01's claim builder
appendix = notebook_code.appendix()  # notebook 06's Appendix A code and claim builder
local_claims = notebook_code.local_fa().local_claims  # notebook 05's claim builder
fa_claims = notebook_code.fa_claims()  # notebook 02's
vfa_claims = notebook_code.vfa_claims()  # notebook 03's
comparison_claims = notebook_code.comparison().comparison_claims  # notebook 04's


def parse_rows(text: str) -> list[dict[str, str]]:
    """The report's claim rows read back from its markdown: id, section, claim, paper, ours,
    verdict (cells as written, pipes unescaped)."""
    out = []
    for line in (ln for ln in text.splitlines() if ln.startswith("| `")):
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        assert len(cells) == 6, line
        out.append(dict(zip(("id", "section", "claim", "paper", "ours", "verdict"),
                            [cells[0].strip("`"), *cells[1:]])))
    return out


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv(outputs.OUTPUT_ROOT_ENV, str(tmp_path))
    return tmp_path


def _comparison(asserted=("table2.vfagan_below_vfa", "tables3-5.vfa_half_vae")):
    fd = {m: [fid.FIDResult(value=v, feature="judge-128", n_real=100, n_fake=100,
                            comparable=False, note="", kid=v / 1e3, kid_std=1e-4)]
          for m, v in {"VAE": 10.0, "GAN": 50.0, "VFA": 40.0, "VFA-GAN": 20.0}.items()}
    rec = [("AE", 5.0, 0.0), ("VAE", 20.0, 0.0), ("GAN", 30.0, 0.0), ("r", 25.0, 0.0),
           ("G(r)", 90.0, 0.0)]
    return comparison_claims("mnist", judged=fd, reconstruction=rec,
                                        size_ratio={"mnist": 0.51, "cifar10": 0.52, "celeba": 0.51},
                                        time_ratio=1.1, asserted=asserted)


def _appendix(**over):
    ws = [0.5, 1.0, 1.6]
    rho = appendix.contraction(ws)
    err0 = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    err = torch.stack([err0, err0 * rho ** 3], 1)
    run = appendix.DiagonalRun(clamp=None, weights=torch.zeros(2, 1), loss=[], diverged_at=3)
    ok = appendix.DiagonalRun(clamp=appendix.SQRT2, weights=torch.zeros(2, 1), loss=[],
                              diverged_at=None)
    kw = dict(ws=ws, closed_gap=1e-15, err=err, rho=rho, steps=3,
              square={"WtW-I": 1e-6, "Wt-pinv": 1e-6},
              fewer={"WWt-I": 1e-6, "WtW-P": 1e-6, "Wt-pinv": 1e-6}, projector_gap=1e-6,
              tolerance=1e-3, no_clamp=run, clamped=ok, trained_w2_max=1.2,
              trained_inner_last=1e-6, init_inner=torch.tensor([1.0, 5.0]))
    kw.update(over)
    return appendix.appendix_claims(**kw)


def _memory(local_bytes=10, global_bytes=40):
    step_memory = notebook_code.local_fa().StepMemory  # notebook 05's memory measure

    def step(n):
        return step_memory(dataset="mnist", method="?", batch=8, saved_total_bytes=n,
                           saved_peak_bytes=n, n_saved=1, step_time_s=0.0)
    return [("mnist", step(global_bytes), step(local_bytes))]


def test_the_catalogue_lists_exactly_what_the_claim_builders_write():
    built = {"01_toy_sin": figure2_claims(GOOD_TOY, GOOD_BINS),
             "02_fa_mnist": fa_claims("mnist", 0.01, 0.067, 0.6, 10, asserted=True),
             "03_vfa": vfa_claims("mnist", 0.03, 0.067, [(0.0, 0.1, 0.1), (8.0, 2.0, 0.9)],
                                             asserted=True),
             "04_vfa_gan": _comparison(),
             "05_local_fa": local_claims("mnist", 0.02, 0.067, _memory(),
                                               assert_reconstruction=True),
             "06_appendix_convergence": _appendix()}
    for stem, items in built.items():
        assert [c.id for c in items] == [e.id for e in paper.CATALOGUE[stem]], stem
        # the same report group (04's time claim names its dataset's table)
        assert ([c.section.split(",")[0] for c in items]
                == [e.section.split(",")[0] for e in paper.CATALOGUE[stem]]), stem
    assert all(c.verdict == claims.HOLDS for stem in ("01_toy_sin", "02_fa_mnist", "03_vfa",
                                                      "05_local_fa", "06_appendix_convergence")
               for c in built[stem])
    ids = [e.id for es in paper.CATALOGUE.values() for e in es]
    assert len(ids) == len(set(ids))


def test_the_notebooks_call_the_builders_and_check_what_they_write():
    """01 and 06 write and check the same objects (no separate asserts of the claims)."""
    for stem, builder in (("01_toy_sin", "figure2_claims("),
                          ("06_appendix_convergence", "appendix_claims(")):
        nb = nbformat.read(outputs.repo_root() / "notebooks" / f"{stem}.ipynb", as_version=4)
        last = nb.cells[-1].source
        name = last.split(f" = {builder}")[0].split("\n")[-1]
        assert builder in last and f'claims.write_claims("{stem}", "-", {name},' in last
        assert f"claims.check({name})" in last
    for stem, builder in (("02_fa_mnist", "fa_claims("), ("03_vfa", "vfa_claims("),
                          ("05_local_fa", "local_claims(")):
        last = nbformat.read(outputs.repo_root() / "notebooks" / f"{stem}.ipynb", as_version=4).cells[-1].source
        assert f"found = {builder}" in last and f'claims.write_claims("{stem}", ' in last
        assert "claims.check(found)" in last and "assert fa_mse < " not in last


def test_claim_builders_follow_the_notebooks_thresholds():
    """02, 03, 05: the thresholds their asserts had, as verdicts; unlabeled data is not
    measured and never asserted; a failed asserted claim makes check raise."""
    fa = {c.id: c for c in fa_claims("celeba", 0.04, 0.067, None, 0, asserted=True)}
    assert fa["fig1.fa_reconstructs"].verdict == claims.FAILS  # 0.04 > 0.5 x 0.067
    sep = fa["fig6a.latent_groups_digits"]
    assert sep.verdict == claims.NOT_MEASURED and not sep.asserted and "unlabeled" in sep.why
    with pytest.raises(claims.ClaimFailed, match="fig1.fa_reconstructs"):
        claims.check(fa.values())
    low = fa_claims("mnist", 0.01, 0.067, 0.15, 10, asserted=True)[1]
    assert low.verdict == claims.FAILS  # 0.15 is not above twice chance (0.2)
    vfa_items = {c.id: c for c in vfa_claims("celeba", 0.03, 0.067, None, asserted=True)}
    assert vfa_items["fig8.onehot_emphasis"].verdict == claims.NOT_MEASURED
    flat = vfa_claims("mnist", 0.03, 0.067, [(0.0, 0.1, 0.5), (8.0, 2.0, 0.4)],
                                 asserted=True)[1]
    assert flat.verdict == claims.FAILS
    mem = {c.id: c for c in local_claims("mnist", 0.02, 0.067, _memory(50, 40),
                                               assert_reconstruction=False)}
    assert mem["3.5.local_less_memory"].verdict == claims.FAILS and mem["3.5.local_less_memory"].asserted
    assert mem["fig16.local_reconstructs"].verdict == claims.HOLDS
    assert not mem["fig16.local_reconstructs"].asserted


def test_report_rows_are_the_json_data_and_every_asserted_claim_holds(root):
    toy_claims = figure2_claims(GOOD_TOY, GOOD_BINS)
    comp = _comparison()
    claims.write_claims("01_toy_sin", "-", toy_claims, profile="quick")
    claims.write_claims("04_vfa_gan", "mnist", comp, profile="quick")
    for items in (toy_claims, comp):
        claims.check(items)  # what the notebooks assert passes
    path, line = claims.write_report("quick")
    assert path == root / "results" / "REPORT.md"
    text = path.read_text()
    assert "Profile **quick**" in text and f"**{line}.**" in text
    rows = {r["id"]: r for r in parse_rows(text)}
    written = [c for p in sorted((root / "results" / "claims").glob("*.json"))
               for c in json.loads(p.read_text())["claims"]]
    for c in written:
        row = rows[c["id"]]
        assert row["verdict"].startswith(c["verdict"] + (" (asserted)" if c["asserted"] else ""))
        assert row["claim"] == c["text"] and row["paper"] == c["paper"]
        assert row["ours"].split("; ")[0].startswith(c["ours"].split(";")[0])
        if c["asserted"]:
            assert row["verdict"].startswith("holds (asserted)")
    # the other notebooks' claims are rows too, not measured, naming the notebook
    for stem in ("02_fa_mnist", "03_vfa", "05_local_fa", "06_appendix_convergence"):
        for e in paper.CATALOGUE[stem]:
            assert rows[e.id]["verdict"].startswith(f"not measured: notebook {stem[:2]} did not run")
    assert len(rows) == sum(len(v) for v in paper.CATALOGUE.values())
    n_hold = sum(c["verdict"] == claims.HOLDS for c in written)
    assert line.startswith(f"{n_hold} of {len(rows)} claims hold at quick")
    assert "notebooks 02, 03, 05, 06 wrote no claims" in line
    assert "; 2 do not hold;" in line  # comparison: GAN and G(r) do not hold here
    # each row names its evidence
    assert "figures/fig02b_toy_with_fa.png" in text


def test_an_asserted_claim_that_fails_stops_the_notebook_and_the_report_says_so(root):
    bad = figure2_claims({**GOOD_TOY, "plain_recovered_fraction": 0.7}, GOOD_BINS)
    claims.write_claims("01_toy_sin", "-", bad, profile="quick")  # written before the check
    with pytest.raises(claims.ClaimFailed, match="fig2.plain_partial"):
        claims.check(bad)
    rows = {r["id"]: r for r in parse_rows(claims.write_report("quick")[0].read_text())}
    assert rows["fig2.plain_partial"]["verdict"].startswith("does not hold (asserted): ")
    assert rows["fig2.fa_whole_domain"]["verdict"] == "holds (asserted)"
    with pytest.raises(claims.ClaimFailed, match="eq9.clamp_prevents_divergence"):
        claims.check(_appendix(clamped=appendix.DiagonalRun(None, torch.zeros(1, 1), [], 2)))


def test_claims_of_another_profile_are_not_used_and_a_failed_run_keeps_the_last_success(root):
    folder = claims.claims_dir("quick")
    claims.write_claims("01_toy_sin", "-", figure2_claims(GOOD_TOY, GOOD_BINS), profile="paper")
    rows = claims.collect(folder, "quick")
    toy_rows = [r for r in rows if r.notebook == "01_toy_sin"]
    assert len(toy_rows) == 4 and all(r.claim.verdict == claims.NOT_MEASURED and not r.written
                                      for r in toy_rows)
    assert "its claims are from profile paper" in toy_rows[0].claim.why
    claims.write_claims("01_toy_sin", "-", figure2_claims(GOOD_TOY, GOOD_BINS), profile="quick")
    failed = {"01_toy_sin": claims.NotebookRun("failed", "executed copy: x.failed.ipynb")}
    toy_rows = [r for r in claims.collect(folder, "quick", failed) if r.notebook == "01_toy_sin"]
    assert all(r.claim.verdict == claims.HOLDS for r in toy_rows)  # the last success's claims
    no_file = [r for r in claims.collect(folder, "quick", {"05_local_fa": failed["01_toy_sin"]})
               if r.notebook == "05_local_fa"]
    assert all(r.claim.verdict == claims.NOT_MEASURED for r in no_file)
    assert "notebook 05 failed before writing its claims (executed copy: x.failed.ipynb)" == no_file[0].claim.why
    ran = {"02_fa_mnist": claims.NotebookRun("ok")}
    r02 = [r for r in claims.collect(folder, "quick", ran) if r.notebook == "02_fa_mnist"]
    assert "ran but wrote no claims file" in r02[0].claim.why
    (folder / "broken.json").write_text("{}")
    with pytest.raises(ValueError, match="broken.json: not a claims file"):
        claims.collect(folder, "quick")


def test_the_runner_console_shows_progress_no_kernel_warning_and_the_report(
        tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(outputs.OUTPUT_ROOT_ENV, str(tmp_path / "out"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("profile = None")
    params.metadata["tags"] = ["parameters"]
    write = ('import os, time\nfrom fa_utils import claims\n'
             'assert os.environ["FA_UPDATE_COMMITTED"] == "1"\ntime.sleep(2.3)\n'
             'claims.write_claims("93_console", "-", [claims.Claim("t.one", "5", "a claim", "p", "o", '
             '"holds", asserted=True)], profile=profile)')
    nb.cells = [params, nbformat.v4.new_markdown_cell("## The slow part\nmore"),
                nbformat.v4.new_code_cell(write), nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "93_console.ipynb"
    nbformat.write(nb, path)
    assert runner.main(["run", str(path), "--profile", "quick"]) == 0
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err
    assert "93_console: 100%|██████████| 5/5" in err  # papermill's bar: every cell counts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["93_console.ipynb", "out"]  # no sockets
    rep = tmp_path / "out" / "results" / "REPORT.md"
    assert f"report: {rep}" in out and "claims: 1 of " in out and "93_console.ipynb" in out
    assert "| `t.one` |" in rep.read_text()


@pytest.mark.parametrize("failure", ["failed", "timed out", "interrupted"])
def test_a_failed_run_keeps_the_report_rows_and_the_run_times(root, monkeypatch, failure):
    claims.write_claims("01_toy_sin", "-", figure2_claims(GOOD_TOY, GOOD_BINS), profile="quick")
    claims.write_report("quick")
    before = parse_rows((root / "results" / "REPORT.md").read_text())
    times = root / "results" / f"{claims.RUN_TIMES_NAME}.md"

    state = "interrupted" if failure == "interrupted" else "failed"

    def execute(nb, params, out_dir, timeout=None):
        error = {"failed": "ValueError: boom", "timed out": "CellTimeoutError: 3 s"}.get(failure, "")
        raise runner.NotebookStopped(f"notebook {nb.name} {state} in cell 3: {error}", state)
    monkeypatch.setattr(runner, "execute", execute)
    assert runner.main(["reproduce", "--profile", "quick"]) != 0
    text = (root / "results" / "REPORT.md").read_text()
    assert [r for r in parse_rows(text) if r["id"].startswith("fig2.")] == [
        r for r in before if r["id"].startswith("fig2.")] and len(before) == len(parse_rows(text))
    assert not times.exists()
    assert "notebook 02 did not run (" in text  # the notebooks after it
    assert f"Notebook 01 {state} in the latest run" in text
    assert str(root / "runs" / "notebooks" / "quick" / "01_toy_sin.ipynb") in text
    monkeypatch.setattr(runner, "execute", lambda nb, params, out_dir, *a: out_dir / nb.name)
    assert runner.main(["reproduce", "--profile", "quick"]) == 0  # only a successful main job
    assert "| 01_toy_sin.ipynb | 0 |" in times.read_text()
