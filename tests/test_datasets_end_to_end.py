"""Notebooks 02-05 at the smoke profile on each of the four datasets, from fabricated files
in the exact on-disk formats (``tests/fabricate.py``: MNIST IDX files, CIFAR-10's Python-2
pickles, STL-10's column-major ``stl10_binary/``, CelebA's ``img_align_celeba/`` JPEGs with
``list_eval_partition.txt``), 300 training and 100 test images each, written by a fixture.

torchvision's md5 comparison is replaced inside this module's fixture only: for the
notebook kernels by an IPython startup file in a private ``IPYTHONDIR``, in-process by
``monkeypatch``. Parsing stays torchvision's.

What is checked, per dataset (the runs go in pairs, ``PAIRS``): the four notebooks complete offline (no Inception weights
here: Table 2 uses the labelled classifier features on MNIST and CIFAR-10, the label-free
autoencoder features on CelebA and STL-10); every figure and table the run writes carries
the dataset's name, except the parameter-count-only Tables 3-6 of datasets that had none;
no file of another dataset is changed; class checks are skipped with a reason on unlabeled
data; the run's checkpoints stay small. And ``--profile paper`` with the files present
loads them and trains a step without downloading.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torchvision.datasets.utils as tv_utils

from fa_utils import config, experiments, runner
from fa_utils.data import DATASETS

import fabricate

DATASET_NAMES = list(DATASETS)
#: The runs in pairs: the first dataset with the last, the second with the third. A pair shares
#: an output root (each run checked against the files the other wrote) and, as one test class,
#: a pytest-xdist worker (``make test``: --dist loadscope); without xdist all four share it.
PAIRS = [(DATASET_NAMES[0], DATASET_NAMES[3]), (DATASET_NAMES[1], DATASET_NAMES[2])]
#: The smoke checkpoints of one dataset's run of notebooks 02-05 must stay below this.
CHECKPOINT_BUDGET = 250 * 2 ** 20


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    """(data root with the four datasets, IPYTHONDIR whose startup file bypasses md5)."""
    root = fabricate.write_all(tmp_path_factory.mktemp("datasets"), n_train=300, n_test=100)
    ipython = tmp_path_factory.mktemp("ipython")
    startup = ipython / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00_fabricated_md5.py").write_text(fabricate.MD5_BYPASS_STARTUP)
    return root, ipython


@pytest.fixture(scope="module")
def shared_outputs(tmp_path_factory):
    """One output root for the runs of this process, so that each run can be checked
    against the files the others wrote."""
    return tmp_path_factory.mktemp("outputs")


def _snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every figure and table under ``folder``."""
    out = {}
    for sub in ("figures", "results"):
        for p in sorted((folder / sub).glob("*")):
            if p.is_file() and p.name != "MANIFEST.json":
                out[f"{sub}/{p.name}"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _cell_text(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    parts = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            parts.append("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_the_pairs_cover_every_dataset_once():
    assert sorted(d for pair in PAIRS for d in pair) == sorted(DATASET_NAMES)


def notebooks_02_to_05_at_smoke_on_fabricated_files(dataset, fabricated, shared_outputs,
                                                    tmp_path, monkeypatch):
    root, ipython = fabricated
    out = shared_outputs
    monkeypatch.setenv("IPYTHONDIR", str(ipython))
    monkeypatch.setenv("FA_OUTPUT_ROOT", str(out))
    monkeypatch.delenv("FA_INCEPTION_WEIGHTS", raising=False)
    before = _snapshot(out)
    ckpts_before = set((out / "runs" / "checkpoints").glob("*")) if (out / "runs" / "checkpoints").exists() else set()

    rc = runner.main(["run", "02", "03", "04", "05", "--profile", "smoke",
                      "-p", "dataset", dataset, "-p", "data_root", str(root)])
    assert rc == 0, f"a notebook failed on {dataset}; executed copies in {out / 'runs'}"

    after = _snapshot(out)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed, "the run wrote no figure or table"
    others = [d for d in DATASET_NAMES if d != dataset]
    for name in changed:
        base = Path(name).name
        if dataset in base:
            continue
        if base == "REPORT.md":  # the report gathers every dataset's claims files (fa_utils.claims)
            continue
        # Tables 3-6 of another dataset: written (parameter counts only) when absent
        assert name not in before and "_size_time" in base, (
            f"a run on {dataset} wrote {name}, which is not {dataset}'s")
    for name, digest in before.items():
        if any(d in Path(name).name for d in others):
            assert after[name] == digest, f"a run on {dataset} changed {name}"
    results = out / "results"
    for stem in ("02_fa_mnist", "03_vfa", "04_vfa_gan", "05_local_fa"):  # every notebook's claims
        assert (results / "claims" / f"{stem}_{dataset}.json").is_file(), stem
    assert dataset in (results / "REPORT.md").read_text()
    for stem in (f"fa_reconstruction_{dataset}", f"table02_frechet_{dataset}",
                 f"fig15_reconstruction_l2_{dataset}", f"local_fa_reconstruction_{dataset}",
                 f"local_vs_global_memory_{dataset}"):
        assert (results / f"{stem}.md").is_file(), stem
    figures = out / "figures"
    for stem in (f"fig06a_latent2d_{dataset}", f"fig07_reconstructions_{dataset}",
                 f"fig15_reconstruction_l2_{dataset}", f"fig16_local_fa_{dataset}"):
        assert list(figures.glob(f"{stem}.*")), stem

    # Table 2's fallback feature follows the labels; this run timed only its own dataset
    table2 = (results / f"table02_frechet_{dataset}.md").read_text()
    labelled = DATASETS[dataset].num_classes is not None
    assert ("judge-" in table2) == labelled and ("autoencoder-" in table2) != labelled, table2
    assert ("judge held-out accuracy" in table2) == labelled, table2
    assert "NOT comparable" in table2
    own = next(results.glob(f"table0[3-6]_{dataset}_size_time.md")).read_text()
    assert "not measured" not in own
    text02 = _cell_text(out / "runs" / "notebooks" / "smoke" / "02_fa_mnist.ipynb")
    if labelled:
        assert "nearest-class-mean accuracy" in text02
    else:
        assert "nearest-class-mean accuracy" not in text02
        assert f"class separation not measured: {dataset} is unlabeled" in text02

    new_ckpts = set((out / "runs" / "checkpoints").glob("*")) - ckpts_before
    size = sum(p.stat().st_size for p in new_ckpts)
    print(f"{dataset}: {len(new_ckpts)} checkpoints, {size / 2 ** 20:.1f} MB")
    assert new_ckpts and size < CHECKPOINT_BUDGET, (dataset, size)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("dataset", PAIRS[0])
class TestFirstPair:
    test_notebooks_02_to_05_at_smoke_on_fabricated_files = staticmethod(
        notebooks_02_to_05_at_smoke_on_fabricated_files)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("dataset", PAIRS[1])
class TestSecondPair:
    test_notebooks_02_to_05_at_smoke_on_fabricated_files = staticmethod(
        notebooks_02_to_05_at_smoke_on_fabricated_files)


def _no_download(*args, **kwargs):
    raise AssertionError(f"a download was attempted: {args}")


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_paper_profile_with_the_files_present_trains_without_downloading(
        dataset, fabricated, tmp_path, monkeypatch, one_torch_thread):
    """``--profile paper`` (download=True, source torchvision) on files already in place:
    torchvision's parsing, no download, and training starts (one step, tiny sizes)."""
    root, _ = fabricated
    monkeypatch.setattr(tv_utils, "check_md5", lambda fpath, md5, **kw: True)  # fabricated files
    for mod in ("torchvision.datasets.utils", "torchvision.datasets.cifar",
                "torchvision.datasets.stl10", "torchvision.datasets.celeba",
                "torchvision.datasets.mnist"):
        m = __import__(mod, fromlist=["_"])
        for fn in ("download_url", "download_and_extract_archive", "download_file_from_google_drive"):
            if hasattr(m, fn):
                monkeypatch.setattr(m, fn, _no_download)
    monkeypatch.setenv("FA_OUTPUT_ROOT", str(tmp_path))
    cfg = config.make_config("fa", "paper", dataset=dataset, data_root=str(root), n_train=8,
                             n_test=4, batch_size=4, epochs=1, device="cpu")
    assert cfg.download and cfg.data_source == "torchvision" and cfg.width_scale == 1
    data = experiments.load_image_data(cfg, verbose=False)
    assert data.source in ("torchvision", "manual")
    assert len(data.train) == 8 and data.test_x.shape[0] == 4
    assert data.image_shape == (DATASETS[dataset].channels, DATASETS[dataset].size,
                                DATASETS[dataset].size)
    encoder, history = experiments.train_fa_encoder(cfg, data, stop_after=1)
    assert len(history.train["loss"]) == 1 and torch.isfinite(torch.tensor(history.train["loss"][0][1]))
