"""fa_utils.metrics: the PCA reference levels."""
import pytest
import torch

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
