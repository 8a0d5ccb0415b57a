"""Fixtures shared by the test modules."""
import pytest

from fa_utils.metrics import one_thread


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks: one thread is faster, and immune to the stalls of a parallel region
    on a CPU shared with other jobs. Restored after the module."""
    with one_thread():
        yield
