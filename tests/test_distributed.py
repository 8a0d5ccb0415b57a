"""Data-parallel FA (fa_utils.distributed): two gloo processes on this CPU give the
parameters of one process on the same global batch.

The two-process part starts this file as a script twice with torchrun's environment
(``benchmarks.launch.launch_local``: loopback only, a free port, OMP_NUM_THREADS=1, a
timeout, and every rank's stderr in the failure message).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from benchmarks.launch import launch_local
from fa_utils import distributed as D
from fa_utils import fa, models, train

GLOBAL_BATCH = 8
N_DATA = 32
EPOCHS = 2
STOP_AT = 5  # steps of the interrupted run (4 steps per epoch: mid-epoch 2)
UNIFORM_STEPS = 3
TIMEOUT_S = 150
ATOL, RTOL = 1e-6, 1e-5
# Adam's eps: FA has exact null directions (e.g. the bias of a unit on the same side of its
# kink for x and for r_0 = 0: it shifts E(x) and E(r) alike), whose gradient is round-off
# (~1e-8 here) that differs with the order of the sums (the all-reduce). With eps = 1e-8
# Adam turns that into lr-sized steps of those coordinates, in any two implementations;
# eps = 1e-3 keeps them ~1e-8 per step, far below the tolerance, while the real gradients
# (up to 1e-1) are still normalised. Same optimiser on both sides.
ADAM = dict(lr=1e-3, betas=(0.5, 0.999), eps=1e-3)


def make_data():
    return TensorDataset(torch.rand(N_DATA, 1, 8, 8, generator=torch.Generator().manual_seed(9)))


def make_model():
    torch.manual_seed(0)
    enc = models.Encoder(models.Architecture(1, 8, (4,), 16), {"z": 4})
    models.init_orthogonal_(enc)
    return enc


CONFIG = {"lr": 1e-3, "case": "ddp-test"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def run_fit(checkpoint, info=None, stop_after=None):
    """fit() of FA with r_0 = 0 (the shared-start path), one process or a DDP rank."""
    module = make_model()
    encoder = module if info is None else D.wrap_ddp(module, info)
    opt = torch.optim.Adam(module.parameters(), **ADAM)
    gen = train.seeded_generator(1)
    if info is None:
        step = functools.partial(fa.fa_step, encoder, opt, generator=gen)
    else:
        step = functools.partial(D.fa_step_distributed, encoder, opt, info=info,
                                 global_batch=GLOBAL_BATCH, generator=gen)
    hist = train.fit(train.images_only(step), modules={"enc": module}, optimizers={"opt": opt},
                     dataset=make_data(), batch_size=GLOBAL_BATCH, epochs=EPOCHS, seed=0,
                     config=CONFIG,
                     generator=gen, checkpoint=checkpoint, ckpt_every=3, progress=False,
                     stop_after=stop_after, distributed=info)
    return module, hist


def run_uniform(info=None):
    """Three steps with random r_0 (uniform) and T = 2: the textbook inner problem."""
    module = make_model()
    encoder = module if info is None else D.wrap_ddp(module, info)
    opt = torch.optim.Adam(module.parameters(), **ADAM)
    gen = train.seeded_generator(5)
    x = make_data().tensors[0][:GLOBAL_BATCH]
    for _ in range(UNIFORM_STEPS):
        if info is None:
            fa.fa_step(encoder, opt, x, generator=gen, r_init="uniform", T=2)
        else:
            local = GLOBAL_BATCH // info.world_size
            D.fa_step_distributed(encoder, opt, x[info.rank * local:(info.rank + 1) * local],
                                  info=info, generator=gen, r_init="uniform", T=2)
    return module


def worker(out: Path) -> None:
    """One rank: DDP fit (uninterrupted, and interrupted + resumed), then random-r_0 steps."""
    info = D.init_from_env("cpu")
    saves = []
    original = train.save_checkpoint

    def counting_save(path, payload):
        saves.append(str(path))
        return original(path, payload)

    train.save_checkpoint = counting_save
    try:
        t0 = time.perf_counter()
        _, hist = run_fit(out / "a.pt", info)
        run_fit(out / "b.pt", info, stop_after=STOP_AT)
        _, hist_b = run_fit(out / "b.pt", info)  # resumed by fresh objects on every rank
        module = run_uniform(info)
        torch.save({k: v for k, v in module.state_dict().items()},
                   out / f"uniform-rank{info.rank}.pt")
        (out / f"rank{info.rank}.json").write_text(json.dumps({
            "saves": saves, "history": {"train": hist.train, "eval": hist.eval},
            "history_resumed": {"train": hist_b.train, "eval": hist_b.eval},
            "seconds": time.perf_counter() - t0, "world": info.world_size,
            "backend": info.backend}))
    finally:
        D.cleanup()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    t0 = time.perf_counter()
    launch_local([os.path.abspath(__file__), "--worker", str(out)], 2, timeout_s=TIMEOUT_S,
                 env={"PYTHONPATH": os.pathsep.join(sys.path)})
    seconds = time.perf_counter() - t0
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, ranks, seconds


def test_two_processes_match_one_process_on_the_global_batch(two_ranks, tmp_path):
    out, ranks, seconds = two_ranks
    assert ranks[0]["world"] == 2 and ranks[0]["backend"] == "gloo"
    ref, ref_hist = run_fit(tmp_path / "ref.pt")
    ddp = train.load_checkpoint(out / "a.pt")["modules"]["enc"]
    assert ddp.keys() == ref.state_dict().keys()  # the unwrapped module's names
    moved = 0.0
    for name, p in ref.state_dict().items():
        torch.testing.assert_close(ddp[name], p, atol=ATOL, rtol=RTOL, msg=name)
        moved = max(moved, float((p - make_model().state_dict()[name]).abs().max()))
    assert moved > 1e-3  # the steps did change the weights
    # the logged values are the mean over the ranks = the single-process batch values
    for rank in ranks:
        got = [v for _, v in rank["history"]["train"]["loss"]]
        want = [v for _, v in ref_hist.train["loss"]]
        assert len(got) == len(want) == EPOCHS * N_DATA // GLOBAL_BATCH
        assert got == pytest.approx(want, rel=1e-5)
    print(f"2 gloo ranks: {seconds:.1f} s wall (launch included)")


def test_random_start_and_two_inner_steps_match_one_process(two_ranks):
    out, _, _ = two_ranks
    ref = run_uniform().state_dict()
    for rank in range(2):
        got = torch.load(out / f"uniform-rank{rank}.pt", weights_only=True)
        for name, p in ref.items():
            torch.testing.assert_close(got[name], p, atol=ATOL, rtol=RTOL, msg=name)


def test_checkpoints_are_written_by_rank_0_only_and_resume_is_exact(two_ranks):
    out, ranks, _ = two_ranks
    assert ranks[0]["saves"] and not ranks[1]["saves"]
    a = train.load_checkpoint(out / "a.pt")
    b = train.load_checkpoint(out / "b.pt")
    assert a["step"] == b["step"] == EPOCHS * N_DATA // GLOBAL_BATCH
    for name, p in a["modules"]["enc"].items():
        assert torch.equal(p, b["modules"]["enc"][name]), name
    assert ranks[0]["history"] == ranks[0]["history_resumed"] == ranks[1]["history"]


def test_shards_of_a_global_batch_are_the_single_process_batch():
    order = train._epoch_order(37, 3, 1)
    shards = [train.shard_order(order, 12, r, 3) for r in range(3)]
    n_batches = 37 // 12
    for k in range(n_batches):
        joined = torch.cat([s[k * 4:(k + 1) * 4] for s in shards])
        assert torch.equal(joined, order[k * 12:(k + 1) * 12])
    with pytest.raises(ValueError, match="divisible"):
        train.shard_order(order, 10, 0, 3)


def test_one_process_without_torchrun_and_clear_errors(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    info = D.init_from_env("cpu")
    assert (info.rank, info.world_size, info.distributed) == (0, 1, False)
    enc = make_model()
    assert D.wrap_ddp(enc, info) is enc
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match="MASTER_ADDR.*torchrun"):
        D.init_from_env("cpu")
    with pytest.raises(RuntimeError, match=r"exit codes \[3, 3\]"):
        launch_local(["-c", "import sys; sys.exit(3)"], 2, timeout_s=60)
    with pytest.raises(RuntimeError, match="timed out"):
        launch_local(["-c", "import time; time.sleep(30)"], 2, timeout_s=1)


if __name__ == "__main__" and "--worker" in sys.argv:
    worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
    D.exit_process(0)  # skip gloo's teardown, which sometimes aborts a finished rank
