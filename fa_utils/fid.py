"""FID (Section 5, Eq. 10 of Farias & Maziero 2023; Heusel et al. 2017, "GANs trained by a
two time-scale update rule converge to a local Nash equilibrium"), and its labelled
offline fallback.

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))          (Eq. 10)

where (mu_r, S_r) and (mu_g, S_g) are the mean and covariance of features of real and
generated images. The paper's features are pytorch-fid's Inception-v3 pool3 activations
(2048-d, :data:`PAPER_FEATURE`), 10,000 real vs 10,000 generated images, three seeds
(:data:`fa_utils.paper.FID_IMAGES`, :data:`fa_utils.paper.FID_TRIALS`).

pytorch-fid does the work here: :class:`pytorch_fid.inception.InceptionV3` (block 3, the
final average pool) gives the features and
:func:`pytorch_fid.fid_score.calculate_frechet_distance` the distance. Inputs follow this
project's convention (:func:`fa_utils.data.check_images`): float (N, C, H, W) in [0, 1];
grayscale is repeated to 3 channels (the paper does not say; our choice). pytorch-fid's
InceptionV3 then resizes bilinearly to 299x299 (``align_corners=False``, no antialias)
and maps [0, 1] to [-1, 1] itself; nothing else is normalised. Unlike pytorch-fid's
command line, which reads 8-bit PNG files, float images are fed as they are (not
quantised to 1/255 steps).

Weights. pytorch-fid downloads ``pt_inception-2015-12-05-6726825d.pth`` (about 92 MB) from
GitHub into torch hub's cache (``<torch.hub.get_dir()>/checkpoints/``). A local file is
used instead, without network, when given as ``weights_path=`` or in the environment
variable ``FA_INCEPTION_WEIGHTS``, or when it is already in the hub cache. When none can
be loaded (offline), :class:`InceptionUnavailable` says so in one line;
:func:`fid_or_fallback` then reports a Frechet distance on the features of a small network
trained on the same data, labelled and ``comparable=False``, never placed beside the
paper's FID:

* labelled data (MNIST, CIFAR-10): a classifier's penultimate layer
  (:class:`FeatureClassifier`, feature ``"classifier-<D>"``);
* unlabeled data (CelebA, STL-10; labels -1): the bottleneck of a small convolutional
  autoencoder trained to reconstruct the same training images
  (:class:`FeatureAutoencoder`, feature ``"autoencoder-<D>"``). It needs no labels, and
  its features must describe an image well enough to rebuild it, so they respond to
  blur, noise and missing structure (tested: real < blurred < noise), as Inception's do.

Number of images. With N images the covariance has rank <= N - 1, so FID with fewer
images than feature dimensions (N < D; D = 2048 for Inception) is ill-conditioned and
biased. Default policy: refuse fewer than 2 images per set (ValueError); compute with
2 <= N < D but mark ``comparable=False`` with the note "N < D ... not comparable";
``min_images=`` raises the refusal threshold (an int, or ``"features"`` for N >= D).
``comparable`` is True only for the Inception feature with N >= 2048 in both sets (the
paper used 10,000 vs 10,000; FID decreases with N, so other N are flagged in the note).

Real statistics are cached as ``runs/fid_stats/<key>--<C>x<H>x<W>.npz``
(:func:`real_stats_key` names dataset, split, count, resolution and feature; the image
shape is appended, and stored in the file, so statistics of 64 px images are never
compared with 32 px fakes). Real and generated sets of different image shapes are refused
(ValueError naming both).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union
from unittest import mock

import numpy as np
import torch
from torch import nn

from . import outputs
from .data import check_images
from .paper import FID_IMAGES

__all__ = [
    "InceptionUnavailable",
    "PAPER_FEATURE",
    "INCEPTION_DIM",
    "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL",
    "WEIGHTS_ENV",
    "frechet_distance",
    "statistics",
    "to_inception_input",
    "inception_weights_path",
    "inception_features",
    "FeatureClassifier",
    "train_feature_classifier",
    "classifier_features",
    "FeatureAutoencoder",
    "train_feature_autoencoder",
    "FIDResult",
    "compute_fid",
    "fid_or_fallback",
    "real_stats_key",
]

#: Name of the paper's feature: pytorch-fid's Inception-v3 final average pool, 2048-d.
PAPER_FEATURE = "inception-v3-pool3-2048"
#: Its dimension D.
INCEPTION_DIM = 2048
#: The weights file pytorch-fid downloads (the TF FID Inception ported to PyTorch).
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
#: Where pytorch-fid downloads it from (same as ``pytorch_fid.inception.FID_WEIGHTS_URL``).
INCEPTION_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
                         f"fid_weights/{INCEPTION_WEIGHTS_FILE}")
#: Environment variable naming a local copy of the weights file.
WEIGHTS_ENV = "FA_INCEPTION_WEIGHTS"

ArrayLike = Union[np.ndarray, torch.Tensor]

# Loaded Inception models, keyed by (weights file or "download", device).
_MODELS: dict[tuple[str, str], nn.Module] = {}


class InceptionUnavailable(RuntimeError):
    """pytorch-fid's Inception-v3 weights could not be loaded (offline, or a bad file).

    The message is one line: why, the expected file name, where to put it (torch hub's
    ``checkpoints/`` folder, or ``FA_INCEPTION_WEIGHTS`` / ``weights_path=``) and the URL.
    """


# --------------------------------------------------------------------------------------
# Frechet distance and statistics
# --------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features, as pytorch-fid computes them.

    Args:
        features: (N, D) array or tensor, N >= 2, finite.

    Returns:
        ``mu`` (D,) and ``sigma`` (D, D), float64; ``sigma = np.cov(features,
        rowvar=False)`` (unbiased, N - 1 denominator), as pytorch-fid's
        ``calculate_activation_statistics``.

    Raises:
        ValueError: not 2-dimensional, fewer than 2 rows, or non-finite values.
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got shape {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"statistics need at least 2 feature vectors, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or infinite values")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike,
                     sigma2: ArrayLike) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the paper's Eq. 10):

        ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    A wrapper of :func:`pytorch_fid.fid_score.calculate_frechet_distance` (Dougal
    Sutherland's stable version, scipy ``sqrtm``; when the product is singular it adds
    1e-6 to the diagonals) that checks shapes with a ValueError instead of an assert and
    reports pytorch-fid's printed notices as a RuntimeWarning. If pytorch-fid refuses a
    large imaginary part of the matrix square root (nearly singular covariances, e.g.
    N < D), the distance is recomputed once with 1e-6 * I added to both covariances.

    Args:
        mu1, mu2: means, shape (D,). sigma1, sigma2: covariances, shape (D, D).

    Returns:
        The squared distance (float, >= 0 up to rounding; units: squared feature units).
        Symmetric in its two Gaussians.

    Raises:
        ValueError: shapes disagree or values are not finite.
    """
    from pytorch_fid.fid_score import calculate_frechet_distance

    def arr(a):
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
        return np.asarray(a, dtype=np.float64)

    mu1, mu2 = np.atleast_1d(arr(mu1)), np.atleast_1d(arr(mu2))
    sigma1, sigma2 = np.atleast_2d(arr(sigma1)), np.atleast_2d(arr(sigma2))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must both have shape (D,), got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must have shape ({d}, {d}), got {sigma1.shape} "
                         f"and {sigma2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")

    def call(s1, s2):
        buf = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            # pytorch-fid 0.3.0 passes sqrtm(disp=False), deprecated in SciPy 1.17
            warnings.filterwarnings("ignore", message=".*`disp` argument is deprecated.*",
                                    category=DeprecationWarning)
            value = calculate_frechet_distance(mu1, s1, mu2, s2)
        if buf.getvalue().strip():
            warnings.warn("pytorch-fid: " + _one_line(buf.getvalue()), RuntimeWarning,
                          stacklevel=3)
        return float(np.real(value))

    try:
        return call(sigma1, sigma2)
    except ValueError as err:
        if "Imaginary component" not in str(err):
            raise
        warnings.warn(f"pytorch-fid: {err} (covariances nearly singular); recomputed with "
                      f"1e-6 added to their diagonals", RuntimeWarning, stacklevel=2)
        offset = np.eye(d) * 1e-6
        return call(sigma1 + offset, sigma2 + offset)


# --------------------------------------------------------------------------------------
# Inception-v3 features (pytorch-fid)
# --------------------------------------------------------------------------------------


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """Images as pytorch-fid's InceptionV3 takes them: (N, 3, H, W) float in [0, 1].

    Grayscale (C = 1) is repeated to 3 identical channels; C = 3 is returned as is.
    Resizing to 299x299 and scaling to [-1, 1] are done by pytorch-fid's InceptionV3.

    Args:
        images: (N, C, H, W) float tensor in [0, 1], C in {1, 3}.

    Raises:
        ValueError: not a float 4-d tensor in [0, 1] (:func:`fa_utils.data.check_images`),
            or C not 1 or 3.
    """
    check_images(images, "images")
    c = images.shape[1]
    if c == 3:
        return images
    if c == 1:
        return images.repeat(1, 3, 1, 1)
    raise ValueError(f"images must have 1 (grayscale) or 3 (RGB) channels for Inception, "
                     f"got {c} (shape {tuple(images.shape)})")


def _hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def _unavailable(why: str) -> InceptionUnavailable:
    return InceptionUnavailable(
        f"Inception-v3 FID weights could not be loaded ({_one_line(why)}; offline?): "
        f"expected file {INCEPTION_WEIGHTS_FILE}; put it in {_hub_weights_path().parent}/ "
        f"or pass weights_path= / set {WEIGHTS_ENV}=<path>; it is downloaded from "
        f"{INCEPTION_WEIGHTS_URL}")


def inception_weights_path(weights_path: str | os.PathLike | None = None) -> Optional[Path]:
    """The local weights file to use, or None (pytorch-fid would then download it).

    Order: ``weights_path``, then ``$FA_INCEPTION_WEIGHTS``, then torch hub's cache
    ``<torch.hub.get_dir()>/checkpoints/pt_inception-2015-12-05-6726825d.pth``.

    Raises:
        InceptionUnavailable: ``weights_path`` or ``$FA_INCEPTION_WEIGHTS`` is given but is
            not a file.
    """
    for given, what in ((weights_path, "weights_path"), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise _unavailable(f"{what}={str(path)!r} is not a file")
            return path
    hub = _hub_weights_path()
    return hub if hub.is_file() else None


def _load_inception(weights_path: str | os.PathLike | None, device: torch.device) -> nn.Module:
    """pytorch-fid's ``InceptionV3([3])`` (pool3) in eval mode on ``device``, memoised.

    With a local file, pytorch-fid's ``load_state_dict_from_url`` is replaced, for the
    duration of the construction only, by ``torch.load`` of that file; otherwise
    pytorch-fid downloads into torch hub's cache. Any failure -> InceptionUnavailable.
    """
    import pytorch_fid.inception as pfi

    path = inception_weights_path(weights_path)
    key = (str(path) if path else "download", str(device))
    if key in _MODELS:
        return _MODELS[key]
    block = [pfi.InceptionV3.BLOCK_INDEX_BY_DIM[INCEPTION_DIM]]
    try:
        if path is not None:
            def local(url, *args, **kwargs):
                return torch.load(path, map_location="cpu", weights_only=True)

            with mock.patch.object(pfi, "load_state_dict_from_url", local):
                model = pfi.InceptionV3(block)
        else:
            model = pfi.InceptionV3(block)
    except Exception as err:  # network, corrupt file, wrong keys: all mean "unavailable"
        where = f"file {path}" if path else "download"
        raise _unavailable(f"{where}: {type(err).__name__}: {err}") from err
    model = model.eval().to(device)  # eval: BatchNorm must use its running statistics
    _MODELS[key] = model
    return model


def inception_features(images: torch.Tensor, *, batch_size: int = 100,
                       device: str | torch.device = "cpu",
                       weights_path: str | os.PathLike | None = None,
                       progress: bool = False) -> np.ndarray:
    """pytorch-fid Inception-v3 pool3 features (the paper's FID features).

    Args:
        images: (N, C, H, W) float in [0, 1], C in {1, 3} (grayscale repeated to 3).
        batch_size: images per forward pass.
        device: where Inception runs (on 2 CPU cores about 10-20 images/s).
        weights_path: local weights file (see :func:`inception_weights_path`).
        progress: show a tqdm bar.

    Returns:
        (N, 2048) float64 array (non-negative: averages of ReLU outputs).

    Raises:
        ValueError: bad images (see :func:`to_inception_input`) or batch_size < 1.
        InceptionUnavailable: the weights cannot be loaded.
    """
    x = to_inception_input(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device)
    model = _load_inception(weights_path, dev)
    starts = range(0, x.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="Inception features", unit="batch")
    out = np.empty((x.shape[0], INCEPTION_DIM), dtype=np.float64)
    with torch.inference_mode():
        for s in starts:
            pred = model(x[s:s + batch_size].to(dev, torch.float32))[0]
            out[s:s + pred.shape[0]] = pred.reshape(pred.shape[0], -1).double().cpu().numpy()
    return out


# --------------------------------------------------------------------------------------
# Classifier features (the labelled offline fallback)
# --------------------------------------------------------------------------------------


class FeatureClassifier(nn.Module):
    """A small CNN classifier whose penultimate layer gives the fallback FID features.

    conv3x3(C->w) ReLU maxpool2, conv3x3(w->2w) ReLU maxpool2, adaptive avg pool to 4x4,
    linear(32w -> D) [= features], ReLU, linear(D -> classes). Any H, W >= 4 work (MNIST
    28, CIFAR-10 32, 64).

    Args:
        in_channels: C of the images (1 or 3; not repeated).
        num_classes: number of labels.
        feature_dim: D, the width of :meth:`features`.
        width: w, channels of the first conv.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 128,
                 width: int = 16) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.feature_dim = in_channels, num_classes, feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.fc1 = nn.Linear(2 * width * 16, feature_dim)
        self.fc2 = nn.Linear(feature_dim, num_classes)
        #: Name of the feature in FID results: ``"classifier-<D>"``.
        self.feature_name = f"classifier-{feature_dim}"
        #: Training accuracy of the last epoch (set by :func:`train_feature_classifier`).
        self.train_accuracy: float = float("nan")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> (N, D): the penultimate layer before its ReLU (so that
        dead ReLU units do not give zero-variance feature dimensions)."""
        return self.fc1(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, classes)."""
        return self.fc2(torch.relu(self.features(x)))


def train_feature_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 2,
                             batch_size: int = 128, seed: int = 0,
                             device: str | torch.device = "cpu",
                             lr: float = 3e-3, progress: bool = False) -> FeatureClassifier:
    """Train a :class:`FeatureClassifier` (Adam with ``lr``, cross-entropy) on labelled images.

    Deterministic for a seed (initialisation under a forked global RNG, shuffling by a
    seeded generator); the global RNG state is left unchanged.

    Args:
        images: (N, C, H, W) float in [0, 1] (the real training data of the dataset).
        labels: (N,) integer class labels in 0..K-1 (MNIST, CIFAR-10).

    Returns:
        The classifier in eval mode, on ``device``, ``train_accuracy`` set.

    Raises:
        ValueError: bad images, labels of the wrong shape, fewer than 2 classes, or
            unlabeled data (labels -1: CelebA, STL-10), for which the fallback is undefined.
    """
    check_images(images, "images")
    labels = torch.as_tensor(labels)
    if labels.shape != (images.shape[0],) or labels.is_floating_point():
        raise ValueError(f"labels must be integers of shape ({images.shape[0]},), got "
                         f"{labels.dtype} of shape {tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("the classifier fallback for FID needs class labels, but these "
                         "labels are -1 (unlabeled data such as CelebA or STL-10): use the "
                         "label-free train_feature_autoencoder, or provide the Inception "
                         "weights (see fa_utils.fid.InceptionUnavailable)")
    num_classes = int(labels.max()) + 1 if labels.numel() else 0
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes to train the feature classifier, got {num_classes}")
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureClassifier(images.shape[1], num_classes).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    epoch_iter = _epochs(epochs, "feature classifier", progress)
    model.train()
    for _ in epoch_iter:
        correct = 0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            xb, yb = images[idx].to(dev), labels[idx].to(dev)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == yb).sum())
        model.train_accuracy = correct / max(n, 1)
    return model.eval()


def _epochs(n: int, desc: str, progress: bool):
    """``range(n)``, under a tqdm progress bar when ``progress``."""
    if not progress:
        return range(n)
    from tqdm.auto import tqdm
    return tqdm(range(n), desc=desc, unit="epoch")


class FeatureAutoencoder(nn.Module):
    """A small convolutional autoencoder whose bottleneck gives the label-free fallback
    FID features (unlabeled data: CelebA, STL-10).

    Encoder (:meth:`features`): conv3x3(C->w, stride 2) ReLU, conv3x3(w->2w, stride 2)
    ReLU, adaptive avg pool to 4x4, linear(32w -> D) [= features, no activation].
    Decoder: linear(D -> 2w x (H/4) x (W/4)) ReLU, two stride-2 transposed 4x4 convs (ReLU
    between), resized to (H, W) bilinearly when H or W is not a multiple of 4, sigmoid.
    ``image_size`` (H = W) is fixed at construction.

    Args:
        in_channels: C (1 or 3); image_size: H = W (>= 8); feature_dim: D; width: w.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 64, feature_dim: int = 128,
                 width: int = 16) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        self.in_channels, self.image_size, self.feature_dim = in_channels, image_size, feature_dim
        self.feature_name = f"autoencoder-{feature_dim}"
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2 * width * 16, feature_dim))
        self._grid = (2 * width, image_size // 4)
        self.decoder = nn.Sequential(
            nn.Linear(feature_dim, 2 * width * (image_size // 4) ** 2), nn.ReLU(),
            nn.Unflatten(1, (2 * width, image_size // 4, image_size // 4)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, in_channels, 4, 2, 1))
        #: Per-pixel MSE of the last training epoch (set by :func:`train_feature_autoencoder`).
        self.train_mse: float = float("nan")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> (N, D): the bottleneck."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the reconstruction (N, C, H, W) in [0, 1]."""
        out = self.decoder(self.features(x))
        if out.shape[-1] != self.image_size:
            out = nn.functional.interpolate(out, size=(self.image_size, self.image_size),
                                            mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


def train_feature_autoencoder(images: torch.Tensor, *, epochs: int = 4, min_steps: int = 400,
                              batch_size: int = 64, seed: int = 0,
                              device: str | torch.device = "cpu", lr: float = 3e-3,
                              progress: bool = False) -> FeatureAutoencoder:
    """Train a :class:`FeatureAutoencoder` (Adam with ``lr``, per-pixel MSE, batch mean) to
    reconstruct ``images``: the label-free fallback feature for FID.

    It runs ``epochs`` passes, or more so that it takes at least ``min_steps`` optimiser
    steps (on small sets; why 400: docs/choices.md section 4).

    Deterministic for a seed; the global RNG state is left unchanged (as
    :func:`train_feature_classifier`).

    Args:
        images: (N, C, H, W) float in [0, 1] with H = W >= 8 (the real training data).

    Returns:
        The autoencoder in eval mode, on ``device``, ``train_mse`` set.

    Raises:
        ValueError: bad images (:func:`fa_utils.data.check_images`), fewer than 2 images,
            or H != W.
    """
    check_images(images, "images")
    n, c, h, w = images.shape
    if n < 2:
        raise ValueError(f"need at least 2 images to train the feature autoencoder, got {n}")
    if h != w:
        raise ValueError(f"the feature autoencoder takes square images, got {h}x{w}")
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureAutoencoder(c, h).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    per_epoch = math.ceil(n / batch_size)
    epoch_iter = _epochs(max(epochs, math.ceil(min_steps / per_epoch)), "feature autoencoder",
                         progress)
    model.train()
    for _ in epoch_iter:
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            xb = images[idx].to(dev)
            loss = nn.functional.mse_loss(model(xb), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.train_mse = total / n
    return model.eval()


def classifier_features(model: nn.Module, images: torch.Tensor,
                        batch_size: int = 500) -> np.ndarray:
    """``model.features`` of ``images`` in eval mode, batched: a :class:`FeatureClassifier`
    or a :class:`FeatureAutoencoder` (any module with ``features``, ``feature_dim`` and
    ``in_channels``).

    Args:
        images: (N, C, H, W) float in [0, 1], C = ``model.in_channels``.

    Returns:
        (N, D) float64 array.

    Raises:
        ValueError: bad images or a channel count other than the model's.
    """
    check_images(images, "images")
    if images.shape[1] != model.in_channels:
        raise ValueError(f"the feature network takes {model.in_channels}-channel images, got "
                         f"{images.shape[1]} (shape {tuple(images.shape)})")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [model.features(images[s:s + batch_size].to(dev)).double().cpu()
                     for s in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    if not parts:
        return np.empty((0, model.feature_dim))
    return torch.cat(parts).numpy()


def _classifier_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------


@dataclass
class FIDResult:
    """One FID value and what it may be compared with.

    Attributes:
        value: the Frechet distance (Eq. 10) on ``feature``.
        n_real, n_fake: images in each set.
        feature: :data:`PAPER_FEATURE`, ``"classifier-<D>"`` or ``"autoencoder-<D>"``.
        comparable: True only for the paper's feature with N >= 2048 in both sets.
        note: why it is or is not comparable (empty when nothing to say).
        image_shape: (C, H, W) of both sets (the resolution compared).
    """

    value: float
    n_real: int
    n_fake: int
    feature: str
    comparable: bool
    note: str = ""
    image_shape: tuple = ()

    def __str__(self) -> str:
        tag = "comparable" if self.comparable else "NOT comparable to the paper"
        note = f"; {self.note}" if self.note else ""
        at = f" at {_shape_tag(self.image_shape)}" if self.image_shape else ""
        return (f"FID {self.value:.2f} ({self.feature}, {self.n_real} real vs "
                f"{self.n_fake} generated{at}, {tag}{note})")


def _shape_tag(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def _comparability(feature: str, n_real: int, n_fake: int, dim: int) -> tuple[bool, str]:
    """(comparable, note) under the module's policy (see the module docstring)."""
    n = min(n_real, n_fake)
    notes = []
    if feature != PAPER_FEATURE:
        notes.append(f"{feature} features, not Inception: never comparable to the paper's FID")
    if n < dim:
        notes.append(f"N < D ({n} < {dim}): singular covariance, not comparable")
    comparable = feature == PAPER_FEATURE and n >= dim
    if comparable and (n_real, n_fake) != (FID_IMAGES, FID_IMAGES):
        notes.append(f"the paper used {FID_IMAGES} vs {FID_IMAGES} images; FID depends on N")
    return comparable, "; ".join(notes)


def real_stats_key(dataset: str, split: str, count: int, resolution: int, feature: str) -> str:
    """Cache key of a real set's statistics, e.g.
    ``real_stats_key("mnist", "test", 10000, 28, "inception")`` ->
    ``"mnist-test-10000-28px-inception-v3-pool3-2048"`` (``"inception"`` stands for
    :data:`PAPER_FEATURE`).

    Raises:
        ValueError: empty names, names with separators or whitespace, or non-positive
            count / resolution.
    """
    feature = PAPER_FEATURE if feature == "inception" else feature
    for what, s in (("dataset", dataset), ("split", split), ("feature", feature)):
        if not isinstance(s, str) or not s or any(c in s for c in "/\\ \t\n"):
            raise ValueError(f"{what} must be a non-empty name without separators or "
                             f"whitespace, got {s!r}")
    for what, v in (("count", count), ("resolution", resolution)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{what} must be a positive integer, got {v!r}")
    return f"{dataset}-{split}-{int(count)}-{int(resolution)}px-{feature}".lower()


def _stats_path(key: str) -> Path:
    if not key or any(c in key for c in "/\\"):
        raise ValueError(f"real_cache_key must be a non-empty name without '/', got {key!r}")
    folder = outputs.runs_dir() / "fid_stats"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.npz"


def _load_stats(path: Path, feature_id: str, shape: tuple):
    try:
        with np.load(path) as f:
            if str(f["feature"]) != feature_id:
                return None
            stored = tuple(int(d) for d in f["shape"]) if "shape" in f.files else None
            if stored != tuple(shape):  # a file without its shape is not trusted
                return None
            return f["mu"].copy(), f["sigma"].copy(), int(f["n"])
    except Exception as err:  # corrupt or old file: recompute
        warnings.warn(f"ignoring unreadable FID statistics {path}: {err}", RuntimeWarning)
        return None


def _save_stats(path: Path, mu, sigma, n: int, feature_id: str, shape: tuple) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma, n=np.int64(n), feature=np.str_(feature_id),
                 shape=np.asarray(shape, dtype=np.int64))
    os.replace(tmp, path)


def _count(x, name: str) -> int:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a (N, C, H, W) float tensor, got {type(x).__name__}")
    check_images(x, name)
    return x.shape[0]


def compute_fid(real: Optional[torch.Tensor], fake: torch.Tensor, *,
                real_cache_key: str | None = None, feature: str = "inception",
                weights_path: str | os.PathLike | None = None,
                classifier: FeatureClassifier | None = None,
                autoencoder: FeatureAutoencoder | None = None,
                device: str | torch.device = "cpu",
                min_images: int | str | None = None, batch_size: int = 100) -> FIDResult:
    """FID (Eq. 10) between real and generated images.

    Args:
        real, fake: (N, C, H, W) float in [0, 1]. ``real`` may be None when its statistics
            are cached under ``real_cache_key``.
        real_cache_key: cache the real statistics as
            ``runs/fid_stats/<key>--<C>x<H>x<W>.npz`` (see :func:`real_stats_key`; the
            image shape is appended and stored, so a cache is only used for images of its
            shape); a later call with the same key and shape does not extract the real
            features again. With ``feature="classifier"`` the key is suffixed with the
            classifier's name and a hash of its weights (statistics are only valid for
            those weights); the same with ``feature="autoencoder"``. A cached count
            different from ``len(real)`` is an error.
        feature: ``"inception"`` (the paper's, :data:`PAPER_FEATURE`), ``"classifier"`` or
            ``"autoencoder"`` (the labelled and label-free fallbacks, never comparable).
        weights_path: Inception weights file (see :func:`inception_weights_path`).
        classifier: the :class:`FeatureClassifier` for ``feature="classifier"``.
        autoencoder: the :class:`FeatureAutoencoder` for ``feature="autoencoder"``.
        min_images: refuse when either set has fewer images: an int, ``"features"`` (the
            feature dimension D), or None (= 2). Between that and D the FID is computed
            and marked ``comparable=False``.

    Returns:
        :class:`FIDResult`.

    Raises:
        ValueError: bad images, real and generated images of different shapes (both
            named), too few images, unknown feature, missing classifier or autoencoder, a cache whose
            count disagrees, or ``real=None`` without cached statistics of the fakes'
            shape (cached shapes under the key are named).
        InceptionUnavailable: Inception weights cannot be loaded.
    """
    if feature == "inception":
        dim_hint = INCEPTION_DIM
        feature_name = PAPER_FEATURE
        cache_id = PAPER_FEATURE

        def extract(x):
            return inception_features(x, batch_size=batch_size, device=device,
                                      weights_path=weights_path)
    elif feature in ("classifier", "autoencoder"):
        net = classifier if feature == "classifier" else autoencoder
        if net is None:
            maker = "train_feature_" + feature
            raise ValueError(f"feature={feature!r} needs {feature}= (see {maker})")
        dim_hint = net.feature_dim
        feature_name = f"{feature}-{net.feature_dim}"
        cache_id = f"{feature_name}-{_classifier_fingerprint(net)}"

        def extract(x):
            return classifier_features(net, x)
    else:
        raise ValueError(f"feature must be 'inception', 'classifier' or 'autoencoder', "
                         f"got {feature!r}")

    if min_images is None:
        floor = 2
    elif min_images == "features":
        floor = dim_hint
    elif isinstance(min_images, int) and not isinstance(min_images, bool):
        floor = max(2, min_images)
    else:
        raise ValueError(f"min_images must be an int, 'features' or None, got {min_images!r}")

    n_fake = _count(fake, "fake")
    n_real = None if real is None else _count(real, "real")
    shape = tuple(int(d) for d in fake.shape[1:])
    if real is not None and tuple(real.shape[1:]) != shape:
        raise ValueError(
            f"real and generated images differ in shape: real {tuple(real.shape)}, generated "
            f"{tuple(fake.shape)} (N, C, H, W); FID compares sets of the same image size: "
            f"generate at {_shape_tag(real.shape[2:])}, or resize one set with "
            f"torch.nn.functional.interpolate(x, size={tuple(real.shape[2:])}, "
            f"mode='bilinear', antialias=True)")
    cache_path = None
    if real_cache_key is not None:
        suffix = "" if feature == "inception" else f"--{cache_id}"
        cache_path = _stats_path(f"{real_cache_key}--{_shape_tag(shape)}{suffix}")
    cached = (_load_stats(cache_path, cache_id, shape)
              if cache_path and cache_path.exists() else None)
    if cached is not None and n_real is not None and cached[2] != n_real:
        raise ValueError(f"cached real statistics {cache_path} are of {cached[2]} images but "
                         f"real has {n_real}: use a key naming the count (real_stats_key)")
    if cached is None and real is None:
        others = ""
        if cache_path is not None:
            found = sorted(p.name for p in cache_path.parent.glob(
                               f"{glob.escape(real_cache_key)}--*.npz")
                           if p != cache_path)
            if found:
                others = (f"; under this key there are statistics of other image shapes "
                          f"only ({', '.join(found)}), and the generated images are "
                          f"{_shape_tag(shape)}")
        raise ValueError("real is None and no cached statistics exist"
                         + (f" at {cache_path}" if cache_path else " (no real_cache_key)")
                         + others + ": pass the real images")
    if cached is not None:
        n_real = cached[2]
    n = min(n_real, n_fake)
    if n < floor:
        raise ValueError(f"FID needs at least {floor} images per set (feature dimension "
                         f"D = {dim_hint}); got n_real={n_real}, n_fake={n_fake}")

    if cached is not None:
        mu_r, sigma_r, _ = cached
    else:
        mu_r, sigma_r = statistics(extract(real))
        if cache_path is not None:
            _save_stats(cache_path, mu_r, sigma_r, n_real, cache_id, shape)
    mu_f, sigma_f = statistics(extract(fake))
    value = frechet_distance(mu_r, sigma_r, mu_f, sigma_f)
    comparable, note = _comparability(feature_name, n_real, n_fake, mu_f.shape[0])
    return FIDResult(value, n_real, n_fake, feature_name, comparable, note, image_shape=shape)


def fid_or_fallback(real: Optional[torch.Tensor], fake: torch.Tensor, *,
                    real_cache_key: str | None = None,
                    classifier_factory: Callable[[], FeatureClassifier] | None = None,
                    autoencoder_factory: Callable[[], FeatureAutoencoder] | None = None,
                    weights_path: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu",
                    min_images: int | str | None = None, batch_size: int = 100) -> FIDResult:
    """The paper's FID if Inception loads, else a labelled fallback distance.

    Tries :func:`compute_fid` with Inception. On :class:`InceptionUnavailable` it prints
    one line saying so (and how to provide the weights) and falls back to, in this order:

    * ``classifier_factory()`` (labelled data, e.g. ``lambda: train_feature_classifier(x,
      y)``): ``compute_fid(feature="classifier")``, feature ``"classifier-<D>"``;
    * ``autoencoder_factory()`` (any data, no labels needed, e.g. ``lambda:
      train_feature_autoencoder(x)``): ``compute_fid(feature="autoencoder")``, feature
      ``"autoencoder-<D>"``.

    A factory is only called then. The result is ``comparable=False`` and its note starts
    with "Inception weights unavailable".

    Raises:
        InceptionUnavailable: Inception unavailable and no factory.
        ValueError: as :func:`compute_fid`.
    """
    try:
        return compute_fid(real, fake, real_cache_key=real_cache_key, feature="inception",
                           weights_path=weights_path, device=device, min_images=min_images,
                           batch_size=batch_size)
    except InceptionUnavailable as err:
        if classifier_factory is None and autoencoder_factory is None:
            raise
        kind = "classifier" if classifier_factory is not None else "autoencoder (label-free)"
        print(f"FID: {err} -> reporting a Frechet distance on {kind} features instead, "
              f"NOT comparable to the paper's FID", flush=True)
    if classifier_factory is not None:
        result = compute_fid(real, fake, real_cache_key=real_cache_key, feature="classifier",
                             classifier=classifier_factory(), device=device,
                             min_images=min_images)
    else:
        result = compute_fid(real, fake, real_cache_key=real_cache_key, feature="autoencoder",
                             autoencoder=autoencoder_factory(), device=device,
                             min_images=min_images)
    result.note = "Inception weights unavailable; " + result.note
    return result
