"""Writers of the four datasets' exact on-disk formats, for tests (no network, no real data).

Each writer puts small files under ``root`` where :func:`fa_utils.data.load_dataset` (and
torchvision) expect the real ones:

=========  =====================================================================
mnist      ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (IDX, big-endian)
cifar10    ``cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta``
           (Python-2 pickles, as the real release)
stl10      ``stl10_binary/{train,unlabeled,test}_X.bin`` (uint8, each 3x96x96 image
           column-major) and ``{train,test}_y.bin`` (labels 1..10)
celeba     ``celeba/img_align_celeba/NNNNNN.jpg`` (178 x 218 JPEGs) and the five annotation
           files torchvision's CelebA reads (``list_eval_partition.txt`` ...)
=========  =====================================================================

torchvision md5-checks the real CIFAR-10, STL-10 and CelebA files; these files cannot
match, so tests that load them replace only that comparison (:func:`exists_only`,
:data:`MD5_BYPASS_STARTUP`); parsing stays torchvision's.
"""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]

#: Source of an IPython startup file that makes torchvision's md5 comparison an existence
#: check in a notebook kernel (``torchvision.datasets.utils.check_md5``, which every
#: ``check_integrity`` of CIFAR-10, STL-10 and CelebA calls); see
#: ``tests/test_datasets_end_to_end.py``.
MD5_BYPASS_STARTUP = '''\
# written by tests/fabricate.py for the test session only: fabricated files cannot match
# the md5s of the real datasets; parsing stays torchvision's
import torchvision.datasets.utils as _tvu
_tvu.check_md5 = lambda fpath, md5, **kwargs: True
del _tvu
'''


def exists_only(fpath, md5=None):
    """Stand-in for torchvision's check_integrity: the file must exist, md5 not compared."""
    return os.path.isfile(fpath)


def _patterns(rng, n: int, channels: int, size: int, labels=None) -> np.ndarray:
    """(n, channels, size, size) uint8 images: a smooth random background plus a bright
    blob whose position depends on the label (or is random), so that the images have
    structure for PCA, FA and a classifier to find."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    out = np.empty((n, channels, size, size), dtype=np.uint8)
    for i in range(n):
        fx, fy = rng.uniform(0.5, 2.0, 2)
        phase = rng.uniform(0, 2 * np.pi, channels)
        if labels is not None:
            k = int(labels[i]) % 10
            cx, cy = 0.2 + 0.6 * (k % 5) / 4, 0.3 + 0.4 * (k // 5)
        else:
            cx, cy = rng.uniform(0.25, 0.75, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
        for c in range(channels):
            bg = 0.25 + 0.15 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase[c])
            img = np.clip(bg + 0.7 * blob + rng.normal(0, 0.03, (size, size)), 0, 1)
            out[i, c] = np.round(255 * img).astype(np.uint8)
    return out


def write_idx(path, array: np.ndarray, magic: int) -> None:
    """IDX format: big-endian int32 magic (0x0801 labels / 0x0803 images), big-endian
    int32 sizes, then uint8 data."""
    with open(path, "wb") as f:
        f.write(struct.pack(">i", magic))
        for dim in array.shape:
            f.write(struct.pack(">i", dim))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist(root, n_train=20, n_test=7, seed=0, patterns=False):
    """``root/MNIST/raw``: the four IDX files. Returns {"train"/"t10k": (x (N, 28, 28), y)}.
    ``patterns``: structured images (else uniform noise)."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        x = (_patterns(rng, n, 1, 28, y)[:, 0] if patterns
             else rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x, 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, 2049)
        out[prefix] = (x, y)
    return out


class Py2Str(bytes):
    """A Python-2 ``str``: pickled with the SHORT_BINSTRING/BINSTRING opcodes."""


class _Py2Pickler(pickle._Pickler):
    """Writes Py2Str like Python 2's cPickle did. The real CIFAR-10 pickles were written
    by Python 2, so their keys ('data', 'labels', 'label_names') are py2 strings, which
    torchvision's ``pickle.load(f, encoding="latin1")`` turns into ``str``. (A Python 3
    ``b"data"`` key would stay ``bytes`` and torchvision's ``entry["data"]`` would fail.)"""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2str(self, obj):
        raw = bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[Py2Str] = _save_py2str


def _py2_pickle(obj, path):
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar10(root, per_batch=4, n_test=6, seed=0, patterns=False):
    """cifar-10-batches-py: data (N, 3072) uint8, each row 1024 R, 1024 G, 1024 B in
    row-major 32x32 order; labels a list of ints; batches.meta with label_names.
    Returns {"train": (x (N, 3072), labels), "test": (x, labels)}."""
    rng = np.random.default_rng(seed)
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True)
    out = {"train": ([], []), "test": None}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        x = (_patterns(rng, n, 3, 32, y).reshape(n, 3072) if patterns
             else rng.integers(0, 256, size=(n, 3072), dtype=np.uint8))
        entry = {
            Py2Str(b"batch_label"): Py2Str(f"{name} of 5".encode()),
            Py2Str(b"labels"): y,
            Py2Str(b"data"): x,
            Py2Str(b"filenames"): [Py2Str(f"img_{i}.png".encode()) for i in range(n)],
        }
        _py2_pickle(entry, d / name)
        if name == "test_batch":
            out["test"] = (x, y)
        else:
            out["train"][0].append(x)
            out["train"][1].extend(y)
    meta = {
        Py2Str(b"num_cases_per_batch"): 10000,
        Py2Str(b"label_names"): [Py2Str(s.encode()) for s in CIFAR_NAMES],
        Py2Str(b"num_vis"): 3072,
    }
    _py2_pickle(meta, d / "batches.meta")
    out["train"] = (np.concatenate(out["train"][0]), out["train"][1])
    return out


def stl_image(i: int) -> np.ndarray:
    """A 3x96x96 (C, H, W) uint8 image with an asymmetric pattern: channel 0 bright in the
    block rows 0..47, cols 0..23 (tall, so a transposition shows), channel 1 constant 128,
    channel 2 constant 20 * (i + 1) (identifies the image)."""
    img = np.zeros((3, 96, 96), dtype=np.uint8)
    img[0, :48, :24] = 255
    img[1] = 128
    img[2] = 20 * (i + 1)
    return img


def write_stl10_file(path, images):
    """STL-10's binary stores each 3x96x96 image column-major (Fortran order per channel):
    for each channel, the 96 pixels of column 0 top to bottom, then column 1, ..."""
    with open(path, "wb") as f:
        for img in images:
            f.write(np.ascontiguousarray(img.transpose(0, 2, 1)).tobytes())


def write_stl10(root, n_unlabeled=3, n_train=2, n_test=2, seed=0, patterns=False):
    """``root/stl10_binary``: unlabeled_X.bin, train_X/y.bin, test_X/y.bin (labels 1..10
    on disk). Without ``patterns`` image i is :func:`stl_image` (i) (unlabeled 0.., train
    next, test last) and the labels are fixed for the tests of fa_utils.data."""
    d = Path(root) / "stl10_binary"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    if patterns:
        def images(n):
            return list(_patterns(rng, n, 3, 96))
        train_y = rng.integers(1, 11, size=n_train, dtype=np.uint8)
        test_y = rng.integers(1, 11, size=n_test, dtype=np.uint8)
    else:
        counter = iter(range(10 ** 6))

        def images(n):
            return [stl_image(next(counter)) for _ in range(n)]
        train_y = np.array([1, 2] * n_train, dtype=np.uint8)[:n_train]
        test_y = np.array([10, 3] * n_test, dtype=np.uint8)[:n_test]
    write_stl10_file(d / "unlabeled_X.bin", images(n_unlabeled))
    write_stl10_file(d / "train_X.bin", images(n_train))
    train_y.tofile(d / "train_y.bin")
    write_stl10_file(d / "test_X.bin", images(n_test))
    test_y.tofile(d / "test_y.bin")
    return d


CELEBA_COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220),
                  (220, 30, 220)]
CELEBA_PARTITION = [0, 0, 0, 1, 2, 2]  # 0 train, 1 valid, 2 test


def write_celeba(root, partition=None, seed=0):
    """torchvision's layout: img_align_celeba/*.jpg (178 wide x 218 tall, like the real aligned
    images), list_eval_partition.txt and the other annotation files.

    Without ``partition``: the six images of :data:`CELEBA_COLOURS` / :data:`CELEBA_PARTITION`,
    each a solid colour inside the central 140x140 square and the inverted colour outside
    it, so the centre crop shows. With ``partition`` (a list of 0/1/2 per image): that many
    structured random images. Returns the ``celeba`` folder."""
    d = Path(root) / "celeba"
    (d / "img_align_celeba").mkdir(parents=True)
    left, top = (178 - 140) // 2, (218 - 140) // 2
    lines = []
    if partition is None:
        arrays = []
        for colour in CELEBA_COLOURS:
            arr = np.empty((218, 178, 3), dtype=np.uint8)
            arr[:] = [255 - c for c in colour]
            arr[top: top + 140, left: left + 140] = colour
            arrays.append(arr)
        partition = CELEBA_PARTITION
    else:
        rng = np.random.default_rng(seed)
        arrays = []
        for face in _patterns(rng, len(partition), 3, 140):
            arr = np.full((218, 178, 3), 90, dtype=np.uint8)
            arr[top: top + 140, left: left + 140] = face.transpose(1, 2, 0)
            arrays.append(arr)
    for i, (arr, part) in enumerate(zip(arrays, partition), 1):
        fname = f"{i:06d}.jpg"
        Image.fromarray(arr).save(d / "img_align_celeba" / fname, quality=95, subsampling=0)
        lines.append(f"{fname} {part}\n")
    (d / "list_eval_partition.txt").write_text("".join(lines))
    write_celeba_annotations(d, len(lines))
    return d


def write_celeba_annotations(d, n):
    """The four other annotation files torchvision's CelebA reads, in their formats."""
    d = Path(d)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    (d / "identity_CelebA.txt").write_text("".join(f"{f} {100 + k}\n" for k, f in enumerate(names)))
    (d / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{f}    95  71 226 313\n" for f in names)
    )
    lm = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
          "rightmouth_x rightmouth_y")
    (d / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\n{lm}\n" + "".join(f"{f} 69 109 106 113 77 142 73 152 108 154\n" for f in names)
    )
    attrs = " ".join(f"attr_{k}" for k in range(40))
    row = " ".join(["-1", "1"] * 20)
    (d / "list_attr_celeba.txt").write_text(f"{n}\n{attrs} \n" + "".join(f"{f} {row}\n" for f in names))


def write_all(root, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """All four datasets under ``root`` with ``n_train`` training and ``n_test`` test images
    each (CIFAR-10: n_train // 5 per batch; STL-10: n_train unlabeled, n_test labelled
    train and test; CelebA: 10 validation images besides), structured images. Returns root."""
    root = Path(root)
    write_mnist(root, n_train, n_test, seed, patterns=True)
    write_cifar10(root, n_train // 5, n_test, seed, patterns=True)
    write_stl10(root, n_train, n_test, n_test, seed, patterns=True)
    write_celeba(root, [0] * n_train + [1] * 10 + [2] * n_test, seed)
    return root
