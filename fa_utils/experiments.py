"""What notebook 02 calls around its FA encoder: the images of a validated config,
reconstructions from the latent alone, latents, the inner-problem sweep and the claims of
Section 3.1. The encoder is trained by :func:`fa_utils.wiring.train_fa_encoder`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from . import data as data_mod
from . import fa
from .config import FAConfig
from .metrics import mse_per_pixel
from .models import Encoder, make_encoder, scaled_architecture, scaled_architectures  # noqa: F401
from .outputs import repo_root
from .train import seeded_generator

#: Datasets at most this large are held in memory as one tensor (the sample, subsets).
IN_MEMORY_LIMIT = 70_000

@dataclass
class ImageData:
    """A training set and a held-out test batch.

    ``train``: a Dataset of (image, label); ``test_x`` (N, C, H, W) in [0, 1];
    ``test_y`` (N,) int64 (-1 where unlabeled); ``source``: where the images came from.
    """

    train: Dataset
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.test_x.shape[1:])  # type: ignore[return-value]


def data_root(value: str) -> Path:
    """A config's ``data_root``: absolute as given, else relative to the repository."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else repo_root() / path


def load_image_data(cfg: FAConfig, verbose: bool = True) -> ImageData:
    """Load ``cfg.dataset``'s train split (``cfg.n_train`` images) and ``cfg.n_test`` test
    images, as :func:`fa_utils.data.load_dataset` decides (sample or torchvision files).

    Raises:
        fa_utils.data.DatasetUnavailable: files missing and no download (message says how).
    """
    kw = dict(root=data_root(cfg.data_root), source=cfg.data_source, download=cfg.download,
              seed=cfg.seed)
    train = data_mod.load_dataset(cfg.dataset, "train", n=cfg.n_train, verbose=verbose, **kw)
    test = data_mod.load_dataset(cfg.dataset, "test", verbose=False, **kw)
    source = getattr(test, "source", "?")
    if cfg.n_test < len(test):
        order = torch.randperm(len(test), generator=seeded_generator(cfg.seed))
        test = Subset(test, order[: cfg.n_test].tolist())
    test_x, test_y = data_mod.as_tensors(test)
    if len(train) <= IN_MEMORY_LIMIT and getattr(train, "source", "") == "sample":
        train = TensorDataset(*data_mod.as_tensors(train))
    return ImageData(train=train, test_x=test_x, test_y=test_y, source=source)


def recover(encoder: Encoder, x: torch.Tensor, *, T: int = 1, tau: float = 1.0,
            r_init: str = "zeros", squash: str = "none", seed: int = 0,
            batch_size: int = 500) -> torch.Tensor:
    """FA reconstruction of x from its latent alone, in batches, without a graph.

    Shapes: (N, C, H, W) -> (N, C, H, W) on x's device.
    """
    device = next(encoder.parameters()).device
    g = seeded_generator(seed)
    out = []
    for chunk in x.split(batch_size):
        res = fa.reconstruct(encoder, chunk.to(device), T=T, tau=tau, r_init=r_init,
                             squash=squash, generator=g)
        out.append(res.image.to(x.device))
    return torch.cat(out)


def encode_all(encoder: Encoder, x: torch.Tensor, head: str = "z",
               batch_size: int = 500) -> torch.Tensor:
    """E(x)[head] for every image, in batches, no graph. (N, C, H, W) -> (N, Z) on the CPU."""
    device = next(encoder.parameters()).device
    with torch.no_grad():
        return torch.cat([encoder(c.to(device))[head].cpu() for c in x.split(batch_size)])


def sweep_inner(encoder: Encoder, x: torch.Tensor, Ts, taus, *, r_init: str = "zeros",
                squash: str = "none", seed: int = 0) -> list[tuple[int, float, float]]:
    """Held-out per-pixel MSE of FA recovery for every (T, tau) pair: [(T, tau, mse)]."""
    rows = []
    for T in Ts:
        for tau in taus:
            x_hat = recover(encoder, x, T=T, tau=tau, r_init=r_init, squash=squash, seed=seed)
            rows.append((int(T), float(tau), mse_per_pixel(x, x_hat)))
    return rows


def train_images(data: ImageData, limit: int = 5000) -> torch.Tensor:
    """Up to ``limit`` training images as one (N, C, H, W) tensor (for reference baselines)."""
    if isinstance(data.train, TensorDataset):
        return data.train.tensors[0][:limit]
    return data_mod.as_tensors(data.train, limit=min(limit, len(data.train)))[0]


def class_separation(z: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of the nearest class mean in latent space (fitted and scored on the same
    points): how well a latent separates the classes. (N, Z), (N,) -> float in [0, 1].

    Raises:
        ValueError: unlabeled data (a label -1: CelebA, STL-10) or fewer than 2 classes,
            where the accuracy would be a meaningless 1.0.
    """
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("class_separation needs class labels; these are -1 (unlabeled data "
                         "such as CelebA or STL-10): skip the check there")
    classes = labels.unique()
    if len(classes) < 2:
        raise ValueError(f"class_separation needs at least 2 classes, got {len(classes)}")
    means = torch.stack([z[labels == c].mean(0) for c in classes])
    pred = classes[torch.cdist(z.float(), means.float()).argmin(1)]
    return float((pred == labels).float().mean())


def describe_sweep(rows, trained: tuple[int, float]) -> str:
    """One computed sentence on a :func:`sweep_inner` result (no hand-written verdicts)."""
    best = min(rows, key=lambda r: r[2] if r[2] == r[2] else float("inf"))
    at = {(r[0], r[1]): r[2] for r in rows}
    base = at.get(trained)
    finite = [r for r in rows if r[2] == r[2] and r[2] < 1e3]
    text = (f"Best: T={best[0]}, tau={best[1]} with MSE {best[2]:.4f}; the training setting "
            f"T={trained[0]}, tau={trained[1]} gives {base:.4f}. " if base is not None else "")
    text += f"{len(rows) - len(finite)} of {len(rows)} settings diverged (MSE > 1e3 or nan)."
    return text


def fa_claims(dataset: str, fa_mse: float, mean_image: float, separation: Optional[float],
              n_classes: int, *, asserted: bool) -> list:
    """Notebook 02's claims (Section 3.1 / Figure 1, Section 5 / Figure 6a) as
    :class:`fa_utils.claims.Claim` objects, ids as in :data:`fa_utils.paper.CATALOGUE`.

    Args:
        dataset: the run's dataset (evidence names carry it).
        fa_mse: held-out MSE per pixel of FA's recovery from E(x) alone.
        mean_image: the mean training image's held-out MSE per pixel.
        separation: nearest-class-mean accuracy of the 2-neuron latent, or ``None`` on
            unlabeled data (the claim is then "not measured").
        n_classes: number of classes (chance = 1 / n_classes).
        asserted: the notebook asserts both (quick and paper; not smoke).

    Thresholds (the notebook's): FA below half the mean-image error; separation above
    twice chance.
    """
    from . import claims

    chance = 1 / max(n_classes, 1)
    rec_ok = fa_mse < 0.5 * mean_image
    out = [claims.Claim(
        "fig1.fa_reconstructs", "3.1, Figure 1",
        "FA recovers held-out images from the encoder's output alone, without a decoder (our "
        "reading: below half the mean image's error)", "Figure 1 (images, no number)",
        f"MSE per pixel {fa_mse:.4f} vs mean image {mean_image:.4f}", claims.verdict(rec_ok),
        "" if rec_ok else "FA's recovery is not below half the mean image's error at this budget",
        (f"results/fa_reconstruction_{dataset}.md", f"figures/fig01_fa_reconstruction_{dataset}.png"),
        asserted)]
    sep_ok = None if separation is None else separation > 2 * chance
    out.append(claims.Claim(
        "fig6a.latent_groups_digits", "5, Figure 6a",
        "A 2-neuron FA latent groups the images by class (our reading: assigning each image "
        "to the nearest class mean in the 2-D latent is right more than twice as often as chance)", "Figure 6a (scatter, no number)",
        "-" if separation is None else f"accuracy {separation:.2f} (chance {chance:.2f})",
        claims.verdict(sep_ok),
        f"{dataset} is unlabeled: there are no classes to group" if sep_ok is None else
        ("" if sep_ok else "the 2-D latent does not separate the classes at this budget"),
        (f"figures/fig06a_latent2d_{dataset}.png",), asserted and sep_ok is not None))
    return out
