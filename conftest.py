"""Test-wide settings, applied before any notebook kernel starts (nbval inherits them):
notebooks run at the ``smoke`` profile and write into a temporary folder, so a test run
never overwrites the main job's figures, results or checkpoints; the explorers draw
static figures (no widget front end under nbval).

The temporary output folder (created here only when ``FA_OUTPUT_ROOT`` is not set) is
removed at the end of the session when every test passed, and kept, with its path printed
in the summary, when one failed (its checkpoints and executed notebooks are the evidence).
"""
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("FA_PROFILE", "smoke")
#: The output root this session created (None when FA_OUTPUT_ROOT was given): only it is removed.
OWNED_OUTPUT_ROOT = None if os.environ.get("FA_OUTPUT_ROOT") else tempfile.mkdtemp(
    prefix="fa_test_outputs_")
if OWNED_OUTPUT_ROOT:
    os.environ["FA_OUTPUT_ROOT"] = OWNED_OUTPUT_ROOT
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("FA_HEADLESS", "1")  # explorers draw one static figure (fa_utils.explorers)
# One intra-op thread per process (this one, each pytest-xdist worker, each notebook kernel):
# the networks under test are tiny, and two workers on two cores must not fight over threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")



def pytest_sessionfinish(session, exitstatus):
    """Remove the temporary output root this conftest created, unless a test failed."""
    root = OWNED_OUTPUT_ROOT
    if not root or not os.path.isdir(root):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not session.testsfailed and exitstatus in (pytest.ExitCode.OK,
                                                  pytest.ExitCode.NO_TESTS_COLLECTED):
        shutil.rmtree(root, ignore_errors=True)
    elif reporter is not None:
        reporter.write_line(f"test outputs kept for inspection (a test failed): {root}  "
                            f"(remove with: rm -rf {root})")
