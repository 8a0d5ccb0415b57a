"""fa_utils.metrics: the PCA reference levels, the timers, the saved-tensor meter, the CUDA
peak and thread pinning (and benchmarks.measure.paired_ratio)."""
import pytest
import torch

from benchmarks.measure import paired_ratio
from fa_utils import metrics


@pytest.mark.parametrize("n, d, k", [(40, 300, 10), (300, 40, 10), (20, 300, 30)])
def test_pca_basis_from_the_gram_matrix_spans_the_svd_subspace(n, d, k):
    """metrics.top_right_singular_vectors (eigh of the smaller Gram matrix) gives the same
    projection as torch.linalg.svd; with rank < k (n=20 < k=30) only the rank's directions."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, d, dtype=torch.float64)
    basis = metrics.top_right_singular_vectors(a, k)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)
    ref = vh[:k]
    assert basis.shape == ref.shape
    assert torch.allclose(basis.T @ basis, ref.T @ ref, atol=1e-8)  # same projector
    assert torch.allclose(basis @ basis.T, torch.eye(len(basis), dtype=torch.float64), atol=1e-8)



def test_the_meter_counts_what_autograd_saves_and_releases_it():
    x = torch.randn(1000, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(1000))
    with metrics.SavedTensorMeter(exclude=[w]) as meter:
        y = torch.exp(x)  # saves its result: 4000 bytes
        z = (y * w).sum()  # saves y (same storage, counted once live) and w (excluded)
        assert meter.live_bytes == 4000
        z.backward()
        assert meter.live_bytes == 0  # freed with the graph
    assert meter.peak_bytes == 4000
    assert meter.total_bytes == 3 * 4000 and meter.count == 3  # exp out, y, w
    assert meter.distinct_bytes == 4000  # one storage, parameters excluded


def test_distinct_bytes_sum_storages_never_alive_together_and_peak_does_not():
    x = torch.randn(1000, requires_grad=True)
    with metrics.SavedTensorMeter() as meter:
        for _ in range(3):  # three graphs, each freed before the next is built
            y = torch.exp(x * 1.0)  # x * 1.0 saves nothing; exp saves its result
            y.sum().backward()
            del y
        kept = [torch.exp(x * 1.0) for _ in range(2)]  # two graphs alive together
    assert meter.peak_bytes == 2 * 4000
    assert meter.count == 5 and meter.total_bytes == 5 * 4000
    # distinct storages: freed ones may be reused at the same address (counted once)
    assert 2 * 4000 <= meter.distinct_bytes <= 5 * 4000
    del kept


def test_interleaved_times_rotate_the_order_and_keep_rounds_aligned():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = metrics.interleaved_times(fns, 3, warmup=1)
    assert calls[:3] == list("abc")  # the warm-up round
    assert calls[3:] == list("abc") + list("bca") + list("cab")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)


def test_warmup_rounds_are_called_but_not_timed_and_paired():
    n = [0]

    def fn():
        n[0] += 1

    times = metrics.interleaved_times({"f": fn, "g": fn}, 4, warmup=2)
    assert {k: len(v) for k, v in times.items()} == {"f": 4, "g": 4} and n[0] == 2 * 6
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0


def test_stopwatch_times_the_block_even_when_it_raises():
    with metrics.Stopwatch("cpu") as sw:
        sum(range(1000))
    assert sw.seconds is not None and sw.seconds >= 0
    with pytest.raises(ZeroDivisionError):
        with metrics.Stopwatch() as sw2:
            1 / 0
    assert sw2.seconds is not None


def test_cuda_peak_is_none_off_cuda():
    with metrics.CudaPeak("cpu") as peak:
        torch.zeros(10)
    assert peak.peak_bytes is None and peak.step_bytes is None


@pytest.fixture
def two_threads():
    """Two intra-op threads during the test (the suite runs on one: conftest.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def test_one_thread_restores_the_count_as_a_block_and_as_a_decorator(two_threads):
    before = torch.get_num_threads()
    assert before == 2

    @metrics.one_thread()
    def inside():
        return torch.get_num_threads()

    assert inside() == 1 and torch.get_num_threads() == before
    assert inside() == 1 and torch.get_num_threads() == before  # reusable
    with pytest.raises(RuntimeError):
        with metrics.one_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError
    assert torch.get_num_threads() == before
