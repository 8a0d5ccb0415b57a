"""Benchmarks of the FA step (``python -m benchmarks.run``); not part of the package."""
