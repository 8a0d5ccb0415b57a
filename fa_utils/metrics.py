"""Metrics: reconstruction error and reference baselines.

(FID is :mod:`fa_utils.fid`; timers and memory meters are :mod:`fa_utils.measure`;
parameter counts :func:`fa_utils.models.count_parameters`.)
"""
from __future__ import annotations

import torch


def mse_per_pixel(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error over every pixel and channel of the batch (the paper's L2 per pixel).

    Shapes: (B, C, H, W) and (B, C, H, W) -> float.
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    return float((x.float() - x_hat.float()).pow(2).mean())


def mean_image_mse(train_x: torch.Tensor, test_x: torch.Tensor) -> float:
    """Per-pixel MSE of predicting every test image by the mean training image: the error of
    a "decoder" that ignores its input (a floor any reconstruction must beat)."""
    mean = train_x.float().mean(0, keepdim=True)
    return mse_per_pixel(test_x, mean.expand_as(test_x))


def top_right_singular_vectors(a: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` leading right singular vectors of ``a`` (N, D), as rows (k', D), from the
    eigendecomposition of the smaller Gram matrix (a a^T, N x N, when N < D; else a^T a):
    the same subspace as ``torch.linalg.svd`` (tested), and faster (docs/choices.md
    section 2). Directions whose singular value
    is below 1e-9 of the largest are dropped (k' < k only when a has rank < k: they would
    add nothing to a projection)."""
    n, d = a.shape
    if n < d:
        vals, vecs = torch.linalg.eigh(a @ a.T)  # ascending
        vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
        keep = vals > 1e-18 * vals[0].clamp_min(0)
        basis = (vecs[:, keep].T @ a) / vals[keep].sqrt()[:, None]
    else:
        vals, vecs = torch.linalg.eigh(a.T @ a)
        vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
        keep = vals > 1e-18 * vals[0].clamp_min(0)
        basis = vecs[:, keep].T
    return basis


def pca_mse(train_x: torch.Tensor, test_x: torch.Tensor, k: int, center: bool = True) -> float:
    """Per-pixel MSE of the best rank-k linear reconstruction fitted on ``train_x``.

    ``center=True``: PCA with k components (an affine k-dim subspace through the mean).
    ``center=False``: the best k-dim *linear* subspace through the origin. One-step FA from
    r_0 = 0 returns r_1 = J_E(0)^T (z - E(0)), which always lies in the k-dim span of
    J_E(0)^T's columns (k = Z), so this is a lower bound on its error (up to the
    train/test difference of the fitted subspace).

    Shapes: (N, C, H, W), (M, C, H, W) -> float.
    """
    a = train_x.flatten(1).double()
    mean = a.mean(0, keepdim=True) if center else torch.zeros_like(a[:1])
    basis = top_right_singular_vectors(a - mean, k)  # (k', D), k' <= k
    b = test_x.flatten(1).double() - mean
    rec = (b @ basis.T) @ basis + mean
    return mse_per_pixel(test_x.flatten(1).double(), rec)
