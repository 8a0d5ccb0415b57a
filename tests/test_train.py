"""Training loop: checkpoints (atomic, weights_only), bit-identical resume, NaN guard."""
import functools
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fa_utils import fa, models, train


def setup(seed=0):
    torch.manual_seed(seed)
    enc = models.Encoder(models.Architecture(1, 8, (4,), 16), {"z": 4})
    models.init_orthogonal_(enc)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    gen = train.seeded_generator(seed + 1)
    step = functools.partial(fa.fa_step, enc, opt, generator=gen, r_init="uniform")
    return enc, opt, gen, step


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (tests/conftest.py)

DATA = TensorDataset(torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(9)))
CONFIG = {"lr": 1e-3, "r_init": "uniform", "epochs": 3}


def run(path, stop_after=None, epochs=3):
    enc, opt, gen, step = setup()
    hist = train.fit(train.images_only(step), modules={"enc": enc}, optimizers={"opt": opt},
                     dataset=DATA, batch_size=8, epochs=epochs, seed=0, config=CONFIG,
                     generator=gen, checkpoint=path, ckpt_every=2, stop_after=stop_after,
                     progress=False,
                     eval_fn=lambda: {"w_norm": float(sum(p.detach().norm() for p in enc.parameters()))},
                     eval_every=5)
    return enc, hist


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    enc_a, hist_a = run(tmp_path / "a.pt")
    enc_b, _ = run(tmp_path / "b.pt", stop_after=7)  # interrupted mid-epoch (5 steps/epoch)
    assert train.load_checkpoint(tmp_path / "b.pt")["step"] == 7
    enc_b, hist_b = run(tmp_path / "b.pt")  # fresh objects, resumed from the file
    for (name, pa), (_, pb) in zip(enc_a.state_dict().items(), enc_b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert hist_a == hist_b  # train and eval; History.seconds is not compared
    assert len(hist_a.train["loss"]) == 15


def test_training_seconds_are_summed_over_a_resumed_run(tmp_path):
    """History.seconds (the per-step cost in Table 2's budget notes) survives a resume: it
    grows with the resumed steps instead of restarting at 0, and stays out of the history."""
    _, first = run(tmp_path / "s.pt", stop_after=7)
    saved = train.load_checkpoint(tmp_path / "s.pt")["train_seconds"]
    assert saved == pytest.approx(first.seconds) and saved > 0
    _, resumed = run(tmp_path / "s.pt")
    assert resumed.seconds > saved
    assert "seconds" not in train.load_checkpoint(tmp_path / "s.pt")["history"]


def test_checkpoint_loads_weights_only_and_carries_its_config(tmp_path):
    run(tmp_path / "c.pt", stop_after=4)
    raw = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=True)
    assert raw["config"] == CONFIG and raw["step"] == 4
    assert set(raw["modules"]["enc"]) == set(setup()[0].state_dict())


def test_truncated_checkpoint_gives_a_clear_error_and_is_not_overwritten(tmp_path):
    path = tmp_path / "t.pt"
    run(path, stop_after=4)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(train.CheckpointError, match="truncated or corrupt"):
        run(path)
    assert path.read_bytes() == blob[: len(blob) // 2]


def test_checkpoint_of_another_config_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    run(path, stop_after=2)
    enc, opt, gen, step = setup()
    with pytest.raises(train.CheckpointError, match="another run.*lr.*rm .*FA_OUTPUT_ROOT"):
        train.fit(train.images_only(step), modules={"enc": enc}, optimizers={"opt": opt},
                  dataset=DATA, batch_size=8, epochs=3, seed=0, config=dict(CONFIG, lr=1.0),
                  generator=gen, checkpoint=path, progress=False)


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    path = tmp_path / "k.pt"
    train.save_checkpoint(path, {"format": 1, "v": torch.ones(3)})
    before = path.read_bytes()

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(train.CheckpointError, match="disk full.*intact"):
        train.save_checkpoint(path, {"format": 1, "v": torch.zeros(3)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["k.pt"]  # no temporary file left

    def full_disk_in_torch(obj, fh):  # what torch.save raised on a full disk (measured)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    monkeypatch.setattr(torch, "save", full_disk_in_torch)
    with pytest.raises(train.CheckpointError, match="unexpected pos.*intact"):
        train.save_checkpoint(path, {"format": 1, "v": torch.zeros(3)})
    assert path.read_bytes() == before


def test_non_finite_loss_stops_with_the_step_and_a_hint(tmp_path):
    calls = {"n": 0}

    def step_fn(x, y):
        calls["n"] += 1
        return {"loss": math.nan if calls["n"] == 3 else 1.0}

    enc, opt, gen, _ = setup()
    with pytest.raises(train.NonFiniteLossError, match="became nan at step 3 .as the progress bar counts.*lr"):
        train.fit(step_fn, modules={"enc": enc}, optimizers={"opt": opt}, dataset=DATA,
                  batch_size=8, epochs=1, seed=0, config=CONFIG, generator=gen,
                  checkpoint=tmp_path / "n.pt", progress=False,
                  nan_hint="Lower the lr.")


def test_fa_step_clamps_weights():
    enc, opt, gen, step = setup()
    with torch.no_grad():
        enc.heads["z"].weight.fill_(5.0)
    step(DATA.tensors[0][:8])
    assert enc.heads["z"].weight.abs().max() <= math.sqrt(2) + 1e-6


def test_missing_checkpoint_and_batch_too_large(tmp_path):
    with pytest.raises(FileNotFoundError):
        train.load_checkpoint(tmp_path / "none.pt")
    enc, opt, gen, step = setup()
    with pytest.raises(ValueError, match="larger than the dataset"):
        train.fit(train.images_only(step), modules={"enc": enc}, optimizers={"opt": opt},
                  dataset=DATA, batch_size=100, epochs=1, seed=0, config={}, generator=gen,
                  progress=False)


# --------------------------------------------------------------------------------------
# What the step function receives: (x, y), the labels of exactly the images in x, or None
# --------------------------------------------------------------------------------------

IMAGES = DATA.tensors[0]
LABELS = torch.arange(40) % 7  # labels 0..6, with every image's row known


def record(dataset, path=None, stop_after=None):
    """fit over 2 epochs of ``dataset`` with a step that only records (x, y) per step."""
    seen = []
    lin = nn.Linear(1, 1)

    def step_fn(x, y):
        seen.append((x.clone(), None if y is None else y.clone()))
        return {"loss": 0.0}

    train.fit(step_fn, modules={"lin": lin}, optimizers={"sgd": torch.optim.SGD(lin.parameters())},
              dataset=dataset, batch_size=8, epochs=2, seed=3, config={},
              generator=torch.Generator(), checkpoint=path, stop_after=stop_after, progress=False)
    return seen


@pytest.mark.parametrize("kind", ["tensors", "items"])
def test_fit_hands_the_step_each_batch_with_its_labels(kind, tmp_path):
    dataset = (TensorDataset(IMAGES, LABELS) if kind == "tensors"
               else list(zip(IMAGES, LABELS.tolist())))  # (image, int) items: the DataLoader path
    seen = record(dataset)
    assert len(seen) == 10
    for step, (x, y) in enumerate(seen):
        rows = train._epoch_order(40, 3, step // 5)[(step % 5) * 8:(step % 5 + 1) * 8]
        assert x.shape == (8, 1, 8, 8) and torch.equal(x, IMAGES[rows])
        assert y.dtype == torch.int64 and torch.equal(y, LABELS[rows])
    # interrupted mid-epoch and resumed: the same batches, in the same order
    resumed = record(dataset, tmp_path / "r.pt", stop_after=7) + record(dataset, tmp_path / "r.pt")
    assert len(resumed) == 10
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(seen, resumed))


@pytest.mark.parametrize("dataset", [
    TensorDataset(IMAGES),
    TensorDataset(IMAGES, torch.full((40,), -1)),  # celeba and stl10 in fa_utils.data
    list(zip(IMAGES, [-1] * 40)),
    list(zip(IMAGES, [None] * 40)),
    list(IMAGES),  # bare images
], ids=["one tensor", "tensor of -1", "items labelled -1", "items labelled None", "bare images"])
def test_fit_hands_the_step_no_labels_for_unlabeled_data(dataset):
    seen = record(dataset)
    assert len(seen) == 10 and all(y is None for _, y in seen)
    assert torch.equal(seen[0][0], IMAGES[train._epoch_order(40, 3, 0)[:8]])


def test_fit_refuses_labels_that_are_not_class_indices():
    with pytest.raises(ValueError, match="labels must be integers.*float32.*y.long"):
        record(TensorDataset(IMAGES, LABELS.float()))
    with pytest.raises(ValueError, match=r"labels must have shape \(8,\)"):
        record(TensorDataset(IMAGES, LABELS[:, None]))


# --------------------------------------------------------------------------------------
# Wrapped modules (DDP, DataParallel, torch.compile): checkpoints load into the plain model
# --------------------------------------------------------------------------------------


@pytest.fixture
def one_rank_group(tmp_path):
    """A one-process gloo group (for a real DistributedDataParallel wrapper on the CPU)."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}",
                            rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("wrap", ["ddp", "dataparallel", "compile", "compile+ddp"])
def test_checkpoints_of_wrapped_models_load_strictly_into_the_plain_model(tmp_path, wrap, request):
    if "ddp" in wrap:
        request.getfixturevalue("one_rank_group")
    enc, opt, gen, _ = setup()
    wrapped = {"ddp": lambda m: nn.parallel.DistributedDataParallel(m),
               "dataparallel": nn.DataParallel,
               "compile": torch.compile,  # lazy: nothing is compiled without a forward
               "compile+ddp": lambda m: torch.compile(nn.parallel.DistributedDataParallel(m)),
               }[wrap](enc)
    prefix = {"ddp": "module.", "dataparallel": "module.", "compile": "_orig_mod.",
              "compile+ddp": "_orig_mod.module."}[wrap]
    assert all(k.startswith(prefix) for k in wrapped.state_dict())  # what used to be saved
    step = functools.partial(fa.fa_step, enc, opt, generator=gen, r_init="uniform")
    path = tmp_path / "w.pt"
    train.fit(train.images_only(step), modules={"enc": wrapped}, optimizers={"opt": opt},
              dataset=DATA, batch_size=8, epochs=1, seed=0, config=CONFIG, generator=gen,
              checkpoint=path, stop_after=2, progress=False)
    assert set(torch.load(path, weights_only=True)["modules"]["enc"]) == set(enc.state_dict())
    plain, *_ = setup(seed=5)
    plain.load_state_dict(train.load_checkpoint(path)["modules"]["enc"])  # strict
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), enc.state_dict().values()))

    # an older file with the wrapper's keys: load_checkpoint strips them, and fit resumes
    raw = torch.load(path, weights_only=True)
    raw["modules"]["enc"] = {prefix + k: v for k, v in raw["modules"]["enc"].items()}
    torch.save(raw, path)
    plain.load_state_dict(train.load_checkpoint(path)["modules"]["enc"])
    enc2, opt2, gen2, step2 = setup(seed=3)
    hist = train.fit(train.images_only(step2), modules={"enc": enc2}, optimizers={"opt": opt2},
                     dataset=DATA, batch_size=8, epochs=1, seed=0, config=CONFIG, generator=gen2,
                     checkpoint=path, progress=False)
    assert len(hist.train["loss"]) == 5 and train.load_checkpoint(path)["step"] == 5


def test_a_checkpoint_of_another_architecture_is_refused_with_the_fix(tmp_path):
    run(tmp_path / "a.pt", stop_after=2)
    torch.manual_seed(0)
    other = models.Encoder(models.Architecture(1, 8, (4,), 16), {"z": 6})
    opt = torch.optim.Adam(other.parameters())
    with pytest.raises(train.CheckpointError, match="module 'enc' does not fit this model.*rm "):
        train.fit(lambda x, y: {"loss": 0.0}, modules={"enc": other}, optimizers={"opt": opt},
                  dataset=DATA, batch_size=8, epochs=1, seed=0, config=CONFIG,
                  generator=train.seeded_generator(1), checkpoint=tmp_path / "a.pt", progress=False)


# --------------------------------------------------------------------------------------
# Images outside [0, 1], another dtype, a non-finite loss: refused before any update
# --------------------------------------------------------------------------------------

X = DATA.tensors[0][:8]
BAD_BATCHES = [
    (X * 255, r"values in \[.*, 2\d\d.*\]; this project's images are in \[0, 1\].*divide by 255"),
    (X * 2 - 1, r"values in \[-.*\].*\(x \+ 1\) / 2"),
    ((X * 255).to(torch.uint8), r"floating-point.*uint8.*x.float\(\) / 255"),
    (X.double(), r"float64 but the model's parameters are torch.float32"),
]


@pytest.mark.parametrize("bad, match", BAD_BATCHES)
def test_fa_step_and_fit_refuse_images_outside_the_unit_range(bad, match):
    enc, opt, gen, step = setup()
    before = [p.detach().clone() for p in enc.parameters()]
    with pytest.raises(ValueError, match=match):
        step(bad)
    with pytest.raises(ValueError, match="the first training batch.*" + match.split(".*")[0]):
        train.fit(lambda x, y: {"loss": 0.0}, modules={"enc": enc}, optimizers={"opt": opt},
                  dataset=TensorDataset(bad.repeat(2, 1, 1, 1)), batch_size=8, epochs=1, seed=0,
                  config={}, generator=gen, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, enc.parameters()))


def test_a_non_finite_fa_loss_is_refused_before_the_update_and_fit_names_the_step(tmp_path):
    enc, opt, gen, step = setup()
    with torch.no_grad():
        enc.heads["z"].weight.fill_(1e20)  # r = J^T (z_x - z_0) ~ 1e40: beyond float32
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(train.NonFiniteLossError, match="FA loss is not finite.*nothing was "
                       "written to the weights.*reconstruction error") as info:
        step(X)
    assert info.value.term == "rec"
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert all(p.grad is None for p in enc.parameters())
    with pytest.raises(train.NonFiniteLossError, match=r"stopped at step 1 of 5 \(as the progress "
                       r"bar counts\).*Lower the lr") as info:
        train.fit(train.images_only(step), modules={"enc": enc}, optimizers={"opt": opt},
                  dataset=DATA, batch_size=8, epochs=1, seed=0, config=CONFIG, generator=gen,
                  checkpoint=tmp_path / "n.pt", progress=False, nan_hint="Lower the lr.")
    assert info.value.step == 1 and info.value.term == "rec"
    assert not (tmp_path / "n.pt").exists()
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
