"""Fixtures shared by the test modules."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks: one thread is faster, and immune to the stalls of a parallel region
    on a CPU shared with other jobs. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
