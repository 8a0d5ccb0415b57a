"""Notebook outputs stay out of git: nbstripout as a git filter (``make setup`` installs it,
``.gitattributes`` names it)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fa_utils.outputs import repo_root

ROOT = repo_root()


def test_nbstripout_is_pinned_and_gitattributes_names_the_filter():
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    assert any(re.fullmatch(r"nbstripout==[\d.]+", line.strip()) for line in reqs)
    attrs = (ROOT / ".gitattributes").read_text().splitlines()
    assert "*.ipynb filter=nbstripout" in attrs and "*.ipynb diff=ipynb" in attrs


def _nbstripout_venv() -> Path:
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "nbstripout").exists():
        pytest.skip(f"nbstripout is not installed in {venv} (make setup installs it)")
    if not shutil.which("git") or not shutil.which("make"):
        pytest.skip("git or make missing")
    return venv


def _make_filter(folder: Path, venv: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(["make", "--no-print-directory", "git-filter", f"VENV={venv}"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def _git(folder: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(["git", *args], cwd=folder, env=env, capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_make_installs_the_filter_and_git_stores_no_outputs(tmp_path):
    """``make git-filter`` (run by ``make setup``) in a fresh git repository: the filter is
    configured, running it twice changes nothing, and a notebook with outputs is staged
    without them (cell ids kept)."""
    venv = _nbstripout_venv()
    repo = tmp_path / "clone"
    repo.mkdir()
    for name in ("Makefile", ".gitattributes"):
        shutil.copy2(ROOT / name, repo / name)
    _git(repo, "init", "-q")
    first = _make_filter(repo, venv)
    assert first.returncode == 0, first.stdout + first.stderr
    config = _git(repo, "config", "--local", "--list")
    attrs = (repo / ".gitattributes").read_text()
    again = _make_filter(repo, venv)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _git(repo, "config", "--local", "--list") == config  # idempotent
    assert (repo / ".gitattributes").read_text() == attrs == (ROOT / ".gitattributes").read_text()
    clean = _git(repo, "config", "filter.nbstripout.clean").strip()
    assert "-m nbstripout --keep-id" in clean and str(venv) in clean
    assert _git(repo, "config", "filter.nbstripout.required").strip() == "true"
    # a notebook as Lab saves it after running: outputs and execution counts
    nb = json.loads((ROOT / "notebooks" / "06_appendix_convergence.ipynb").read_text())
    ids = [c.get("id") for c in nb["cells"]]
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["execution_count"] = 3
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["ran\n"]}]
    (repo / "nb.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    _git(repo, "add", "nb.ipynb")
    staged = json.loads(_git(repo, "show", ":nb.ipynb"))
    cells = [c for c in staged["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells)
    assert [c.get("id") for c in staged["cells"]] == ids
    assert "ran" in (repo / "nb.ipynb").read_text()  # the file on disk keeps its outputs


def test_make_setup_filter_step_outside_git_does_nothing(tmp_path):
    """From a tarball (no .git): a message, exit status 0, nothing written."""
    venv = _nbstripout_venv()
    shutil.copy2(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy2(ROOT / ".gitattributes", tmp_path / ".gitattributes")
    res = _make_filter(tmp_path, venv)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "not the top of a git work tree" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gitattributes", "Makefile"]


def test_committed_notebooks_are_fixed_points_of_the_filter():
    """The filter changes nothing in the committed notebooks (so installing it shows no
    spurious modification). One process for all: ``--verify`` exits non-zero if it would
    strip anything."""
    venv = _nbstripout_venv()
    paths = sorted(str(p) for p in (ROOT / "notebooks").glob("*.ipynb"))
    res = subprocess.run([str(venv / "bin" / "nbstripout"), "--verify", "--keep-id", *paths],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"notebooks that are not stripped: {res.stdout}{res.stderr}"
