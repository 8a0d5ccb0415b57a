"""Figures: image grids, loss curves, 2-D latents, each drawn on the Axes given (returned)."""
from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torchvision.utils import make_grid


def show_images(ax, images: torch.Tensor, nrow: int = 8, title: Optional[str] = None):
    """(B, C, H, W) images in [0, 1] as a grid, ``nrow`` a row; ``ax``. ValueError: not 4-D."""
    if images.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def label_rows(ax, labels: Sequence[str], image_height: int, padding: int = 2):
    """One label beside each row of a :func:`show_images` grid on ``ax``; returns ``ax``."""
    step = image_height + padding
    ax.set_yticks([padding + step * i + image_height / 2 for i in range(len(labels))], labels,
                  fontsize=8)
    ax.tick_params(axis="y", length=0)
    return ax


def compare_rows(rows: Mapping[str, torch.Tensor], ncols: int = 10, title: Optional[str] = None):
    """A row of ``ncols`` images (B, C, H, W) per entry, labelled by its key; the figure."""
    size = (ncols * 0.9, len(rows) * 0.9 + 0.4)
    fig, axes = plt.subplots(len(rows), 1, figsize=size, squeeze=False)
    for ax, (label, imgs) in zip(axes[:, 0], rows.items()):
        show_images(ax, imgs[:ncols], nrow=ncols)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(ax, curves: Mapping[str, Sequence[Sequence[float]]], *, ylabel: str = "",
                logy: bool = True, smooth: int = 1,
                references: Optional[Mapping[str, float]] = None):
    """(step, value) curves (running mean of ``smooth``), dashed ``references``; ``ax``."""
    for label, pts in ((k, np.asarray(v, dtype=float)) for k, v in curves.items() if len(v)):
        x, y = pts[:, 0], pts[:, 1]
        if smooth > 1 and len(y) >= smooth:
            x, y = x[smooth - 1:], np.convolve(y, np.ones(smooth) / smooth, mode="valid")
        ax.plot(x, y, label=label, marker="o" if len(x) < 30 else None, ms=3)
    for label, value in (references or {}).items():
        ax.axhline(value, ls="--", lw=1, color="gray")
        ax.annotate(label, (ax.get_xlim()[0], value), fontsize=8, va="bottom", color="gray")
    ax.set(xlabel="optimiser step", ylabel=ylabel, yscale="log" if logy else "linear")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def scatter_latents(ax, z: torch.Tensor, labels: Optional[torch.Tensor] = None,
                    title: Optional[str] = None, class_names: Optional[Sequence[str]] = None):
    """(N, 2) latents ``z`` by class ``labels`` (N,) (Figure 6a); unlabeled: one colour; ``ax``."""
    z = z.detach().cpu().numpy()
    if labels is None or not bool((torch.as_tensor(labels) >= 0).any()):
        ax.scatter(z[:, 0], z[:, 1], s=6, alpha=0.8, color="tab:blue", label="unlabeled images")
        ax.legend(fontsize=8)
    else:
        labels = torch.as_tensor(labels).detach().cpu().numpy()
        k = max(int(labels.max()) + 1, len(class_names or ()))
        names = list(class_names) if class_names else [f"class {c}" for c in range(k)]
        sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10" if k <= 10 else "tab20", s=6,
                        alpha=0.8, vmin=-0.5, vmax=k - 0.5)
        cb = ax.figure.colorbar(sc, ax=ax, ticks=range(k), label="class")
        cb.ax.set_yticklabels(names[:k], fontsize=8)
    ax.set(xlabel="latent neuron 1", ylabel="latent neuron 2")
    if title:
        ax.set_title(title, fontsize=10)
    return ax
