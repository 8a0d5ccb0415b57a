"""The judge of the samples: Frechet distance (Section 5, Eq. 10 of Farias & Maziero
2023; Heusel et al. 2017) and kernel inception distance (KID; Binkowski et al. 2018) on a
feature network, and the offline classifier whose features stand in for Inception's.

    FD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))          (Eq. 10)

with (mu, S) the mean and covariance of the features of real (r) and generated (g) images.
KID is the unbiased squared MMD with the polynomial kernel k(a, b) = (a.b / D + 1)^3,
averaged over random subsets, with its standard deviation over them; unlike FD it has no
bias that depends on the number of images. torchmetrics computes both
(:class:`torchmetrics.image.fid.FrechetInceptionDistance`,
:class:`torchmetrics.image.kid.KernelInceptionDistance`) on any feature module
(:func:`distances`).

Features, in order of preference (:func:`frechet_feature`):

* the paper's: pytorch-fid's Inception-v3 pool3 (2048-d, :data:`PAPER_FEATURE`;
  :func:`inception_feature`): grayscale repeated to 3 channels (our choice), resized to
  299x299 and mapped to [-1, 1] by pytorch-fid; float images fed as they are;
* offline, labelled data (MNIST, CIFAR-10): the penultimate layer (128-d, before its ReLU)
  of the judge, a small CNN classifier trained on the training split only
  (:func:`make_judge`, :func:`judge_step`; trained and cached by
  :func:`fa_utils.experiments.train_judge`); feature ``"judge-128"``;
* offline, unlabeled data (CelebA, STL-10): the bottleneck of a small convolutional
  autoencoder trained on the same training images (:class:`FeatureAutoencoder`, feature
  ``"autoencoder-128"``).

Weights. pytorch-fid downloads ``pt_inception-2015-12-05-6726825d.pth`` (about 92 MB) into
torch hub's cache; a local file is used instead when given as ``weights_path=``, in
``$FA_INCEPTION_WEIGHTS``, or already in the hub cache. When none loads (offline),
:class:`InceptionUnavailable` says so in one line. Only the Inception feature with
N >= 2048 images in both sets is ``comparable`` to the paper's FID.
"""
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

__all__ = [
    "InceptionUnavailable", "PAPER_FEATURE", "INCEPTION_DIM", "INCEPTION_WEIGHTS_FILE",
    "INCEPTION_WEIGHTS_URL", "WEIGHTS_ENV", "CONFIDENT", "to_inception_input",
    "inception_weights_path", "inception_feature", "make_judge", "check_labels",
    "judge_feature", "shift_images", "judge_step", "recognise", "accuracy", "FeatureAutoencoder",
    "train_feature_autoencoder", "feature_of", "FIDResult", "distances", "frechet_feature",
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
#: A sample is recognised when the judge's top softmax probability is at least this.
CONFIDENT = 0.9
#: What the judge's checkpoint identity records of its recipe (:func:`make_judge`,
#: :func:`judge_step`): widths, feature size, Adam's lr, the largest random shift.
JUDGE_RECIPE = "conv32-64-128/maxpool/feat128/dropout0.25/adam1e-3/shift2"


class InceptionUnavailable(RuntimeError):
    """pytorch-fid's Inception-v3 weights could not be loaded (offline, or a bad file).

    The message is one line: why, the expected file name, where to put it (torch hub's
    ``checkpoints/`` folder, or ``FA_INCEPTION_WEIGHTS`` / ``weights_path=``) and the URL.
    """


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def inception_feature(weights_path: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu") -> nn.Module:
    """pytorch-fid's ``InceptionV3`` pool3 as a feature module for :func:`distances`:
    (N, C, H, W) float in [0, 1], C in {1, 3} -> (N, 2048); eval mode, on ``device``,
    ``num_features`` 2048, ``feature_name`` :data:`PAPER_FEATURE`.

    With a local file (:func:`inception_weights_path`), pytorch-fid's
    ``load_state_dict_from_url`` is replaced by ``torch.load`` of that file while the
    network is built; otherwise pytorch-fid downloads into torch hub's cache.

    Raises:
        InceptionUnavailable: the weights cannot be loaded (network, corrupt file, keys).
    """
    import pytorch_fid.inception as pfi

    path = inception_weights_path(weights_path)
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
    return feature_of(lambda x: model(to_inception_input(x))[0].flatten(1), INCEPTION_DIM,
                      PAPER_FEATURE, owner=model)


# --------------------------------------------------------------------------------------
# The judge: a classifier trained on the training split (labelled offline feature)
# --------------------------------------------------------------------------------------


def make_judge(in_channels: int = 1, num_classes: int = 10, width: int = 32,
               feature_dim: int = 128) -> nn.Sequential:
    """The judge: ``nn.Sequential(features, head)``.

    features: three conv3x3 (C -> w -> 2w -> 4w, ReLU), max-pooling 2 after the first two
    and adaptive max-pooling to 3x3 after the third, flatten, linear(36w -> D): (N, C, H, W)
    in [0, 1] -> (N, D), the Frechet feature (before a ReLU, so that no dimension is
    constantly 0; :func:`judge_feature`).
    head: ReLU, dropout 0.25, linear(D -> classes): ``judge(x)`` gives logits
    (N, classes). Any H, W >= 12 (MNIST 28, CIFAR-10 32).
    """
    features = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(3),
        nn.Flatten(), nn.Linear(36 * width, feature_dim))
    return nn.Sequential(features, nn.Sequential(nn.ReLU(), nn.Dropout(0.25),
                                                 nn.Linear(feature_dim, num_classes)))


def judge_feature(judge: nn.Sequential) -> nn.Module:
    """The judge's penultimate layer as a feature module for :func:`distances`:
    (N, C, H, W) -> (N, D), named ``"judge-<D>"``."""
    d = judge[0][-1].out_features
    return feature_of(judge[0], d, f"judge-{d}", owner=judge)


def check_labels(labels: torch.Tensor, n: int) -> int:
    """The number of classes of ``labels`` ((n,) integers 0..K-1), K >= 2.

    Raises:
        ValueError: wrong shape or dtype, fewer than 2 classes, or unlabeled data (labels
            -1: CelebA, STL-10), for which a classifier cannot be trained.
    """
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"labels must be integers of shape ({n},), got "
                         f"{labels.dtype} of shape {tuple(labels.shape)}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("the classifier fallback for FID needs class labels, but these "
                         "labels are -1 (unlabeled data such as CelebA or STL-10): use the "
                         "label-free train_feature_autoencoder, or provide the Inception "
                         "weights (see fa_utils.fid.InceptionUnavailable)")
    k = int(labels.max()) + 1 if labels.numel() else 0
    if k < 2:
        raise ValueError(f"need at least 2 classes to train the judge, got {k}")
    return k


def shift_images(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of x (N, C, H, W) moved by its own random whole-pixel shift in
    [-max_shift, max_shift] along each axis, zero-filled: (N, C, H, W)."""
    n, c, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n, 1), generator=generator).to(x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    return pad[torch.arange(n, device=x.device)[:, None, None, None],
               torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def judge_step(judge: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor, *, generator: torch.Generator, max_shift: int = 2
               ) -> dict[str, torch.Tensor]:
    """One Adam step of cross-entropy on randomly shifted images (:func:`shift_images`).
    x (B, C, H, W) in [0, 1], y (B,) class labels. Returns ``{"loss": 0-d tensor}``."""
    loss = F.cross_entropy(judge(shift_images(x, max_shift, generator)), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach()}


def recognise(judge: nn.Module, images: torch.Tensor, batch_size: int = 500
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's top softmax probability and class of each image, on the CPU:
    ((N,), (N,)). images (N, C, H, W), clamped to [0, 1]; the judge in eval mode."""
    dev = next(judge.parameters()).device
    judge.eval()
    with torch.no_grad():
        p = torch.cat([torch.softmax(judge(c.clamp(0, 1).to(dev)), 1).cpu()
                       for c in images.split(batch_size)])
    return p.max(1)


def accuracy(judge: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` (N, C, H, W) whose top class is ``labels`` (N,)."""
    return float((recognise(judge, images)[1] == labels.cpu()).float().mean())


# --------------------------------------------------------------------------------------
# The label-free offline feature (unlabeled data)
# --------------------------------------------------------------------------------------


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
    from tqdm.auto import tqdm
    epoch_iter = tqdm(range(max(epochs, math.ceil(min_steps / per_epoch))),
                      desc="feature autoencoder", unit="epoch", disable=not progress)
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


# --------------------------------------------------------------------------------------
# Frechet distance and KID on a feature module (torchmetrics)
# --------------------------------------------------------------------------------------


class _Feature(nn.Module):
    """A feature function as the module torchmetrics takes (``num_features`` set)."""

    def __init__(self, fn: Callable, num_features: int, name: str, owner: nn.Module) -> None:
        super().__init__()
        self.fn, self.num_features, self.feature_name, self.owner = fn, num_features, name, owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x.to(next(self.owner.parameters()).device)).double()


def feature_of(fn: Callable, num_features: int, name: str, *, owner: nn.Module) -> nn.Module:
    """``fn`` ((N, C, H, W) -> (N, num_features)) as a feature module for :func:`distances`,
    called in eval mode of ``owner`` (the network it belongs to; inputs go to its device).
    E.g. ``feature_of(ae.features, 128, "autoencoder-128", owner=ae)``."""
    return _Feature(fn, num_features, name, owner.eval())


@dataclass
class FIDResult:
    """One set of generated images judged against the real ones.

    Attributes:
        value: the Frechet distance (Eq. 10) on ``feature``.
        kid, kid_std: KID (unbiased) and its standard deviation over the subsets.
        n_real, n_fake: images in each set. feature: the feature's name.
        comparable: True only for the paper's feature with N >= 2048 in both sets.
        note: why it is or is not comparable (empty when nothing to say).
    """

    value: float
    n_real: int
    n_fake: int
    feature: str
    comparable: bool
    note: str = ""
    kid: float = float("nan")
    kid_std: float = float("nan")

    def __str__(self) -> str:
        tag = "comparable" if self.comparable else "NOT comparable to the paper"
        return (f"FD {self.value:.2f}, KID {self.kid:.4f} +- {self.kid_std:.4f} ({self.feature}, "
                f"{self.n_real} real vs {self.n_fake} generated, {tag})")


def _comparability(feature: str, n_real: int, n_fake: int, dim: int) -> tuple[bool, str]:
    """(comparable, note): only Inception with N >= D in both sets is comparable."""
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
              subsets: int = 100, subset_size: int = 1000, batch_size: int = 500,
              seed: int = 0) -> list[FIDResult]:
    """Frechet distance and KID of every set in ``fakes`` against ``real``, on ``feature``
    (torchmetrics; the real features are extracted once).

    Args:
        real: (N_r, C, H, W) float in [0, 1]; fakes: sets of the same (C, H, W).
        feature: a module (N, C, H, W) -> (N, D) with ``num_features`` and
            ``feature_name`` (:func:`inception_feature`, :func:`judge_feature`,
            :func:`feature_of`).
        subsets, subset_size: KID's random subsets (subset_size is capped at the smaller
            set); ``seed`` seeds their draw.

    Returns:
        One :class:`FIDResult` per fake set, in order.

    Raises:
        ValueError: bad images, sets of different image shapes (both named), or fewer than
            2 images in a set.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    for name, x in [("real", real)] + [(f"fakes[{i}]", f) for i, f in enumerate(fakes)]:
        check_images(x, name)
        if x.shape[0] < 2:
            raise ValueError(f"{name} has {x.shape[0]} image(s); the distances need at least 2")
        if x.shape[1:] != real.shape[1:]:
            raise ValueError(f"real and generated images differ in shape: real "
                             f"{tuple(real.shape)}, {name} {tuple(x.shape)} (N, C, H, W); "
                             f"generate at {tuple(real.shape[2:])}, or resize with "
                             f"torch.nn.functional.interpolate(x, size={tuple(real.shape[2:])}, "
                             f"mode='bilinear', antialias=True)")
    size = min(subset_size, real.shape[0], *(f.shape[0] for f in fakes))
    fd = FrechetInceptionDistance(feature, reset_real_features=False, normalize=True)
    with warnings.catch_warnings():  # "will save all extracted features": what KID needs
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kid = KernelInceptionDistance(feature, subsets=subsets, subset_size=size,
                                      reset_real_features=False, normalize=True)
    with torch.no_grad():
        for part in real.split(batch_size):
            fd.update(part, real=True)
            kid.update(part, real=True)
        out = []
        for fake in fakes:
            fd.reset()
            kid.reset()
            for part in fake.split(batch_size):
                fd.update(part, real=False)
                kid.update(part, real=False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                kid_mean, kid_std = (float(v) for v in kid.compute())
            comparable, note = _comparability(feature.feature_name, real.shape[0],
                                              fake.shape[0], feature.num_features)
            out.append(FIDResult(float(fd.compute()), real.shape[0], fake.shape[0],
                                 feature.feature_name, comparable, note, kid_mean, kid_std))
    return out


def frechet_feature(fallback: Callable[[], nn.Module], *,
                    weights_path: str | os.PathLike | None = None,
                    device: str | torch.device = "cpu") -> nn.Module:
    """Inception (:func:`inception_feature`) if its weights load; else ``fallback()`` (the
    judge's features, or :func:`feature_of` a :class:`FeatureAutoencoder`), after printing
    one line that says why and that the distances are NOT comparable to the paper's FID."""
    try:
        return inception_feature(weights_path, device)
    except InceptionUnavailable as err:
        net = fallback()
        print(f"FID: {err} -> reporting distances on {net.feature_name} features instead, "
              f"NOT comparable to the paper's FID", flush=True)
        return net
