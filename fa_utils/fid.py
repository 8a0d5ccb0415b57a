"""Frechet distance (Eq. 10) and KID (torchmetrics) on pytorch-fid's Inception-v3 pool3 (the
paper's) or, offline, another network's features, such as the judge classifier's."""
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from unittest import mock

import torch
from torch import nn
from torch.nn import functional as F

from .fa import check_batch
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

    def __init__(self, why: str) -> None:
        why = " ".join(why.split())[:200]
        super().__init__(f"Inception-v3 FID weights could not be loaded ({why}; offline?): "
                         f"expected file {INCEPTION_WEIGHTS_FILE}; put it in "
                         f"{torch.hub.get_dir()}/checkpoints/ or pass weights_path= / set "
                         f"{WEIGHTS_ENV}=<path>; it is downloaded from {INCEPTION_WEIGHTS_URL}")


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1], C in {1, 3} -> (N, 3, H, W), grayscale repeated. ValueError."""
    check_batch(images, name="images")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 (grayscale) or 3 (RGB) channels for Inception, "
                         f"got shape {tuple(images.shape)}")
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def inception_weights_path(weights_path: str | os.PathLike | None = None) -> Optional[Path]:
    """``weights_path``, else ``$FA_INCEPTION_WEIGHTS``, else torch hub's cached file, else None.
    Raises InceptionUnavailable: a given path is not a file."""
    for given, what in ((weights_path, "weights_path"), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if given:
            if not (path := Path(given).expanduser()).is_file():
                raise InceptionUnavailable(f"{what}={str(path)!r} is not a file")
            return path
    hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    return hub if hub.is_file() else None


def inception_feature(weights_path: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu") -> nn.Module:
    """pytorch-fid's InceptionV3 pool3, (N, C, H, W) -> (N, 2048), from the local weights file
    if any, else pytorch-fid's download. Raises InceptionUnavailable: the weights do not load."""
    import pytorch_fid.inception as pfi

    path = inception_weights_path(weights_path)
    load = pfi.load_state_dict_from_url if path is None else (
        lambda *args, **kwargs: torch.load(path, map_location="cpu", weights_only=True))
    try:
        with mock.patch.object(pfi, "load_state_dict_from_url", load):
            model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[INCEPTION_DIM]])
    except Exception as err:  # network, corrupt file, wrong keys: all mean "unavailable"
        where = f"file {path}" if path else "download"
        raise InceptionUnavailable(f"{where}: {type(err).__name__}: {err}") from err
    model = model.eval().to(device)  # eval: BatchNorm uses its running statistics
    return feature_of(lambda x: model(to_inception_input(x))[0].flatten(1), INCEPTION_DIM,
                      PAPER_FEATURE, owner=model)


def make_judge(in_channels: int = 1, num_classes: int = 10, width: int = 32,
               feature_dim: int = 128) -> nn.Sequential:
    """The judge ``Sequential(features, head)``: (N, C, H >= 12, W) -> logits (N, classes)."""
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
    """The K >= 2 classes of ``labels`` (n,) in 0..K-1. Raises ValueError otherwise, or on -1."""
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"labels must be integers of shape ({n},), got "
                         f"{labels.dtype} of shape {tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("the judge needs class labels, but these are -1 (unlabeled data): use "
                         "notebook 04's train_feature_autoencoder, or Inception's weights")
    if (k := int(labels.max()) + 1 if labels.numel() else 0) < 2:
        raise ValueError(f"need at least 2 classes to train the judge, got {k}")
    return k


def shift_images(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """x (N, C, H, W), each image shifted by its own random (dy, dx) <= max_shift, zero-filled."""
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
    """The judge's top softmax probability and class, (N,) each, of images (N, C, H, W)."""
    dev = next(judge.parameters()).device
    judge.eval()
    with torch.no_grad():
        p = torch.cat([torch.softmax(judge(c.clamp(0, 1).to(dev)), 1).cpu()
                       for c in images.split(500)])
    return p.max(1)


def accuracy(judge: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` (N, C, H, W) whose top class is ``labels`` (N,)."""
    return float((recognise(judge, images)[1] == labels.cpu()).float().mean())


class _Feature(nn.Module):
    """``fn`` (N, C, H, W) -> (N, D) in float64, as torchmetrics takes it, on ``owner``'s device."""

    def __init__(self, fn: Callable, num_features: int, name: str, *, owner: nn.Module) -> None:
        super().__init__()
        self.fn, self.num_features, self.feature_name = fn, num_features, name
        self.owner = owner.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x.to(next(self.owner.parameters()).device)).double()


feature_of = _Feature  # a feature module for :func:`distances`


@dataclass
class FIDResult:
    """Frechet distance ``value`` and KID of one set; ``note``: why it is not ``comparable``."""

    value: float
    n_real: int
    n_fake: int
    feature: str
    comparable: bool
    note: str = ""
    kid: float = float("nan")
    kid_std: float = float("nan")


def _comparability(feature: str, n_real: int, n_fake: int, dim: int) -> tuple[bool, str]:
    n, notes = min(n_real, n_fake), []
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
    """Eq. 10 and KID (100 subsets from ``seed``) of each of ``fakes`` against ``real``, all
    (N >= 2, C, H, W) in [0, 1], on ``feature``. Raises ValueError: bad images or shapes."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    for name, x in [("real", real)] + [(f"fakes[{i}]", f) for i, f in enumerate(fakes)]:
        check_batch(x, name=name)
        if x.shape[0] < 2:
            raise ValueError(f"{name} has {x.shape[0]} image(s); the distances need at least 2")
        if x.shape[1:] != real.shape[1:]:
            raise ValueError(f"real and generated images differ in shape: real {tuple(real.shape)}"
                             f", {name} {tuple(x.shape)}; resize them (F.interpolate)")
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
    """:func:`inception_feature`, else ``fallback()``, printing why and: NOT comparable."""
    try:
        return inception_feature(device=device)
    except InceptionUnavailable as err:
        net = fallback()
        print(f"FID: {err} -> reporting distances on {net.feature_name} features instead, "
              f"NOT comparable to the paper's FID", flush=True)
        return net
