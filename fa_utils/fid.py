"""Frechet distance (Eq. 10) and KID (Binkowski et al. 2018) through torchmetrics on pytorch-fid's
Inception-v3 pool3 (2048-d, the paper's) or, offline, the judge classifier's penultimate layer
(labelled data, "judge-128") or a :class:`FeatureAutoencoder`'s bottleneck (unlabeled,
"autoencoder-128"). Only Inception with N >= 2048 images in both sets is ``comparable``."""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from unittest import mock

import torch
from torch import nn
from torch.nn import functional as F

from .data import check_images
from .paper import FID_IMAGES

PAPER_FEATURE = "inception-v3-pool3-2048"
INCEPTION_DIM = 2048
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
                         f"fid_weights/{INCEPTION_WEIGHTS_FILE}")
WEIGHTS_ENV = "FA_INCEPTION_WEIGHTS"  # a local copy of the weights file
CONFIDENT = 0.9  # a sample is recognised when the judge's top softmax is at least this
#: The judge's recipe in its checkpoint identity (:func:`make_judge`, :func:`judge_step`).
JUDGE_RECIPE = "conv32-64-128/maxpool/feat128/dropout0.25/adam1e-3/shift2"


class InceptionUnavailable(RuntimeError):
    """pytorch-fid's Inception-v3 weights do not load; says why, the file, where and the URL."""


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float in [0, 1], C in {1, 3} -> (N, 3, H, W), grayscale repeated
    (pytorch-fid resizes to 299 and maps to [-1, 1]). Raises ValueError: bad images."""
    check_images(images, "images")
    c = images.shape[1]
    if c not in (1, 3):
        raise ValueError(f"images must have 1 (grayscale) or 3 (RGB) channels for Inception, "
                         f"got {c} (shape {tuple(images.shape)})")
    return images.repeat(1, 3, 1, 1) if c == 1 else images


def _unavailable(why: str) -> InceptionUnavailable:
    why = " ".join(why.split())
    why = why if len(why) <= 200 else why[:197] + "..."
    return InceptionUnavailable(
        f"Inception-v3 FID weights could not be loaded ({why}; offline?): "
        f"expected file {INCEPTION_WEIGHTS_FILE}; put it in {torch.hub.get_dir()}/checkpoints/ "
        f"or pass weights_path= / set {WEIGHTS_ENV}=<path>; it is downloaded from "
        f"{INCEPTION_WEIGHTS_URL}")


def inception_weights_path(weights_path: str | os.PathLike | None = None) -> Optional[Path]:
    """The local weights file: ``weights_path``, else ``$FA_INCEPTION_WEIGHTS``, else torch
    hub's cache; None if none (pytorch-fid would download it).
    Raises InceptionUnavailable: a given path is not a file."""
    for given, what in ((weights_path, "weights_path"), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise _unavailable(f"{what}={str(path)!r} is not a file")
            return path
    hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    return hub if hub.is_file() else None


def inception_feature(weights_path: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu") -> nn.Module:
    """pytorch-fid's InceptionV3 pool3 as a feature module: (N, C, H, W) -> (N, 2048), named
    :data:`PAPER_FEATURE`; a local weights file is loaded with ``torch.load`` instead of
    pytorch-fid's download. Raises InceptionUnavailable: the weights do not load."""
    import pytorch_fid.inception as pfi

    path = inception_weights_path(weights_path)
    block = [pfi.InceptionV3.BLOCK_INDEX_BY_DIM[INCEPTION_DIM]]
    load = pfi.load_state_dict_from_url if path is None else (
        lambda *args, **kwargs: torch.load(path, map_location="cpu", weights_only=True))
    try:
        with mock.patch.object(pfi, "load_state_dict_from_url", load):
            model = pfi.InceptionV3(block)
    except Exception as err:  # network, corrupt file, wrong keys: all mean "unavailable"
        where = f"file {path}" if path else "download"
        raise _unavailable(f"{where}: {type(err).__name__}: {err}") from err
    model = model.eval().to(device)  # eval: BatchNorm uses its running statistics
    return feature_of(lambda x: model(to_inception_input(x))[0].flatten(1), INCEPTION_DIM,
                      PAPER_FEATURE, owner=model)


def make_judge(in_channels: int = 1, num_classes: int = 10, width: int = 32,
               feature_dim: int = 128) -> nn.Sequential:
    """The judge classifier ``Sequential(features, head)``: (N, C, H, W), H, W >= 12 ->
    logits (N, classes). features: three conv3x3 (w, 2w, 4w; ReLU; max-pool), linear to
    (N, D), the Frechet feature (before a ReLU); head: ReLU, dropout 0.25, linear."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(3),
        nn.Flatten(), nn.Linear(36 * width, feature_dim))
    return nn.Sequential(features, nn.Sequential(nn.ReLU(), nn.Dropout(0.25),
                                                 nn.Linear(feature_dim, num_classes)))


def judge_feature(judge: nn.Sequential) -> nn.Module:
    """The judge's penultimate layer as a feature module (N, C, H, W) -> (N, D), "judge-<D>"."""
    d = judge[0][-1].out_features
    return feature_of(judge[0], d, f"judge-{d}", owner=judge)


def check_labels(labels: torch.Tensor, n: int) -> int:
    """The number of classes K >= 2 of ``labels`` ((n,) integers 0..K-1).
    Raises ValueError: wrong shape or dtype, fewer than 2 classes, or labels -1 (unlabeled)."""
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"labels must be integers of shape ({n},), got "
                         f"{labels.dtype} of shape {tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("the classifier fallback for FID needs class labels, but these are -1 "
                         "(unlabeled data such as CelebA or STL-10): use the label-free "
                         "train_feature_autoencoder, or Inception's weights (FA_INCEPTION_WEIGHTS)")
    k = int(labels.max()) + 1 if labels.numel() else 0
    if k < 2:
        raise ValueError(f"need at least 2 classes to train the judge, got {k}")
    return k


def shift_images(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of x (N, C, H, W) moved by its own random shift in [-max_shift, max_shift]
    pixels along each axis, zero-filled: (N, C, H, W)."""
    n, _, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).tolist()
    return torch.stack([p[:, i:i + h, j:j + w] for p, i, j in zip(pad, dy, dx)])


def judge_step(judge: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One step of cross-entropy on x (B, C, H, W) shifted by up to 2 pixels, y (B,): {"loss"}."""
    loss = F.cross_entropy(judge(shift_images(x, 2, generator)), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach()}


def recognise(judge: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's (eval mode) top softmax probability and class of each image (N, C, H, W),
    clamped to [0, 1]: ((N,), (N,)) on the CPU."""
    dev = next(judge.parameters()).device
    judge.eval()
    with torch.no_grad():
        p = torch.cat([torch.softmax(judge(c.clamp(0, 1).to(dev)), 1).cpu()
                       for c in images.split(500)])
    return p.max(1)


def accuracy(judge: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` (N, C, H, W) whose top class is ``labels`` (N,)."""
    return float((recognise(judge, images)[1] == labels.cpu()).float().mean())


class FeatureAutoencoder(nn.Module):
    """Convolutional autoencoder (C, H = W = ``image_size``, 4k >= 8) whose bottleneck (N, D)
    (:meth:`features`) is the label-free FID feature; ``forward`` reconstructs (N, C, H, W)."""

    def __init__(self, in_channels: int = 3, image_size: int = 64, feature_dim: int = 128,
                 width: int = 16) -> None:
        super().__init__()
        if image_size < 8 or image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, >= 8, got {image_size}")
        self.in_channels, self.image_size, self.feature_dim = in_channels, image_size, feature_dim
        self.feature_name = f"autoencoder-{feature_dim}"
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2 * width * 16, feature_dim))
        self.decoder = nn.Sequential(
            nn.Linear(feature_dim, 2 * width * (image_size // 4) ** 2), nn.ReLU(),
            nn.Unflatten(1, (2 * width, image_size // 4, image_size // 4)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, in_channels, 4, 2, 1))
        self.train_mse = float("nan")  # per-pixel MSE of the last training epoch

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.features(x)))


def train_feature_autoencoder(images: torch.Tensor, *, epochs: int = 4, min_steps: int = 400,
                              batch_size: int = 64, seed: int = 0,
                              device: str | torch.device = "cpu") -> FeatureAutoencoder:
    """A :class:`FeatureAutoencoder` trained (Adam 3e-3, per-pixel MSE) on ``images``
    (N >= 2, C, H = W = 4k) for ``epochs``, or at least ``min_steps`` steps (docs/choices.md
    section 4); seeded, the global RNG left as it was. Returns it in eval mode.
    Raises ValueError: bad images, N < 2 or H != W."""
    check_images(images, "images")
    n, c, h, w = images.shape
    if n < 2:
        raise ValueError(f"need at least 2 images to train the feature autoencoder, got {n}")
    if h != w:
        raise ValueError(f"the feature autoencoder takes square images, got {h}x{w}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureAutoencoder(c, h).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(max(epochs, math.ceil(min_steps / math.ceil(n / batch_size)))):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            xb = images[idx].to(device)
            loss = F.mse_loss(model(xb), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.train_mse = total / n
    return model.eval()


class _Feature(nn.Module):
    """A feature function as the module torchmetrics takes."""

    def __init__(self, fn: Callable, num_features: int, name: str, owner: nn.Module) -> None:
        super().__init__()
        self.fn, self.num_features, self.feature_name, self.owner = fn, num_features, name, owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x.to(next(self.owner.parameters()).device)).double()


def feature_of(fn: Callable, num_features: int, name: str, *, owner: nn.Module) -> nn.Module:
    """``fn`` ((N, C, H, W) -> (N, num_features)) as a feature module for :func:`distances`,
    ``owner`` (its network) in eval mode, inputs moved to its device."""
    return _Feature(fn, num_features, name, owner.eval())


@dataclass
class FIDResult:
    """Frechet distance ``value`` and KID (unbiased, with its std over subsets) of one set
    of generated images against the real ones; ``comparable`` to the paper only for its
    feature with N >= 2048 in both sets, ``note`` says why not."""

    value: float
    n_real: int
    n_fake: int
    feature: str
    comparable: bool
    note: str = ""
    kid: float = float("nan")
    kid_std: float = float("nan")


def _comparability(feature: str, n_real: int, n_fake: int, dim: int) -> tuple[bool, str]:
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


def distances(real: torch.Tensor, fakes: list[torch.Tensor], feature: nn.Module, *,
              subset_size: int = 1000, seed: int = 0) -> list[FIDResult]:
    """One :class:`FIDResult` per set of ``fakes`` against ``real`` (all (N, C, H, W) in
    [0, 1], N >= 2), on ``feature`` (:func:`feature_of`). KID: 100 subsets drawn from
    ``seed`` of ``subset_size`` images (at most the smallest N).
    Raises ValueError: bad images, a set of another shape, or a single image."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    for name, x in [("real", real)] + [(f"fakes[{i}]", f) for i, f in enumerate(fakes)]:
        check_images(x, name)
        if x.shape[0] < 2:
            raise ValueError(f"{name} has {x.shape[0]} image(s); the distances need at least 2")
        if x.shape[1:] != real.shape[1:]:
            size = tuple(real.shape[2:])
            raise ValueError(f"real and generated images differ in shape: real "
                             f"{tuple(real.shape)}, {name} {tuple(x.shape)} (N, C, H, W); "
                             f"generate at {size}, or resize with torch.nn.functional."
                             f"interpolate(x, size={size}, mode='bilinear', antialias=True)")
    size = min(subset_size, real.shape[0], *(f.shape[0] for f in fakes))
    fd = FrechetInceptionDistance(feature, reset_real_features=False, normalize=True)
    with warnings.catch_warnings():  # "will save all extracted features": what KID needs
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kid = KernelInceptionDistance(feature, subsets=100, subset_size=size,
                                      reset_real_features=False, normalize=True)
    out = []
    with torch.no_grad():
        for part in real.split(500):
            fd.update(part, real=True)
            kid.update(part, real=True)
        for fake in fakes:
            fd.reset()
            kid.reset()
            for part in fake.split(500):
                fd.update(part, real=False)
                kid.update(part, real=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                kid_mean, kid_std = (float(v) for v in kid.compute())
            n = real.shape[0], fake.shape[0]
            comparable, note = _comparability(feature.feature_name, *n, feature.num_features)
            out.append(FIDResult(float(fd.compute()), *n, feature.feature_name, comparable,
                                 note, kid_mean, kid_std))
    return out


def frechet_feature(fallback: Callable[[], nn.Module], *,
                    device: str | torch.device = "cpu") -> nn.Module:
    """:func:`inception_feature` if its weights load, else ``fallback()`` after printing one
    line saying why and that the distances are NOT comparable to the paper's FID."""
    try:
        return inception_feature(device=device)
    except InceptionUnavailable as err:
        net = fallback()
        print(f"FID: {err} -> reporting distances on {net.feature_name} features instead, "
              f"NOT comparable to the paper's FID", flush=True)
        return net
