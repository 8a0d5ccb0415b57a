"""Training loop: checkpoints (atomic, weights_only), bit-identical resume, NaN guard."""
import functools
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from fa_utils import models, train


def setup(seed=0):
    torch.manual_seed(seed)
    enc = models.Encoder(models.Architecture(1, 8, (4,), 16), {"z": 4})
    models.init_orthogonal_(enc)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    gen = train.seeded_generator(seed + 1)
    step = functools.partial(train.fa_step, enc, opt, generator=gen, r_init="uniform")
    return enc, opt, gen, step


DATA = TensorDataset(torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(9)))
CONFIG = {"lr": 1e-3, "r_init": "uniform", "epochs": 3}


def run(path, stop_after=None, epochs=3):
    enc, opt, gen, step = setup()
    hist = train.fit(step, modules={"enc": enc}, optimizers={"opt": opt}, dataset=DATA,
                     batch_size=8, epochs=epochs, seed=0, config=CONFIG, generator=gen,
                     checkpoint=path, ckpt_every=2, stop_after=stop_after, progress=False,
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
    assert hist_a.to_dict() == hist_b.to_dict()
    assert len(hist_a.train["loss"]) == 15


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
        train.fit(step, modules={"enc": enc}, optimizers={"opt": opt}, dataset=DATA,
                  batch_size=8, epochs=3, seed=0, config=dict(CONFIG, lr=1.0), generator=gen,
                  checkpoint=path, progress=False)


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    path = tmp_path / "k.pt"
    train.save_checkpoint(path, {"format": 1, "v": torch.ones(3)})
    before = path.read_bytes()

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(train.CheckpointError, match="disk full.*MiB free.*intact"):
        train.save_checkpoint(path, {"format": 1, "v": torch.zeros(3)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["k.pt"]  # no temporary file left

    def full_disk_in_torch(obj, fh):  # what torch.save raised on a full disk (measured)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    monkeypatch.setattr(torch, "save", full_disk_in_torch)
    with pytest.raises(train.CheckpointError, match="unexpected pos.*free some space"):
        train.save_checkpoint(path, {"format": 1, "v": torch.zeros(3)})
    assert path.read_bytes() == before


def test_non_finite_loss_stops_with_the_step_and_a_hint(tmp_path):
    calls = {"n": 0}

    def step_fn(x):
        calls["n"] += 1
        return {"loss": math.nan if calls["n"] == 3 else 1.0}

    enc, opt, gen, _ = setup()
    with pytest.raises(train.NonFiniteLossError, match="became nan at step 2.*lr"):
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
        train.fit(step, modules={"enc": enc}, optimizers={"opt": opt}, dataset=DATA,
                  batch_size=100, epochs=1, seed=0, config={}, generator=gen, progress=False)
