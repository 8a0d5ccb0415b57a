"""Test-wide settings, applied before any notebook kernel starts (nbval inherits them):
notebooks run at the ``smoke`` profile and write into a temporary folder, so a test run
never overwrites the main job's figures, results or checkpoints; the explorers draw
static figures (no widget front end under nbval)."""
import os
import tempfile

os.environ.setdefault("FA_PROFILE", "smoke")
os.environ.setdefault("FA_OUTPUT_ROOT", tempfile.mkdtemp(prefix="fa_test_outputs_"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("FA_HEADLESS", "1")  # explorers draw one static figure (fa_utils.explorers)
