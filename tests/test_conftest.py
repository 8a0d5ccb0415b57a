"""The test suite's temporary output root (conftest.py): removed after a passing session,
kept and printed after a failing one. One `make test` used to leave 1.7 GB behind."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fa_utils.outputs import repo_root

TEST = '''
import os
from pathlib import Path

def test_writes_into_the_output_root():
    root = Path(os.environ["FA_OUTPUT_ROOT"])
    (root / "runs" / "checkpoints").mkdir(parents=True)
    (root / "runs" / "checkpoints" / "big.pt").write_bytes(b"x" * 1000)
    assert {fail}
'''


def run_session(tmp_path: Path, fail: bool) -> tuple[subprocess.CompletedProcess, list[Path]]:
    """A pytest session with this repository's conftest.py, in its own TMPDIR."""
    session = tmp_path / ("failing" if fail else "passing")
    (session / "tmp").mkdir(parents=True)
    shutil.copy(repo_root() / "conftest.py", session / "conftest.py")
    (session / "test_one.py").write_text(TEST.format(fail="False" if fail else "True"))
    env = {k: v for k, v in os.environ.items() if k not in ("FA_OUTPUT_ROOT", "PYTEST_ADDOPTS")}
    env["TMPDIR"] = str(session / "tmp")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:nbval", "test_one.py"], cwd=session, env=env,
                          capture_output=True, text=True, timeout=300)
    return done, sorted((session / "tmp").glob("fa_test_outputs_*"))


@pytest.mark.parametrize("fail", [False, True])
def test_the_temporary_output_root_is_removed_unless_a_test_fails(tmp_path, fail):
    done, left = run_session(tmp_path, fail)
    assert done.returncode == (1 if fail else 0), done.stdout + done.stderr
    if not fail:
        assert left == []
        assert "test outputs kept" not in done.stdout
    else:
        assert len(left) == 1 and (left[0] / "runs" / "checkpoints" / "big.pt").is_file()
        assert f"test outputs kept for inspection (a test failed): {left[0]}" in done.stdout


def test_a_given_output_root_is_never_removed(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    session = tmp_path / "s"
    session.mkdir()
    shutil.copy(repo_root() / "conftest.py", session / "conftest.py")
    (session / "test_one.py").write_text("def test_ok():\n    pass\n")
    env = dict(os.environ, FA_OUTPUT_ROOT=str(mine))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:nbval", "test_one.py"], cwd=session, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert mine.is_dir()
