"""The FA step, the VFA sampler and DDP on CUDA give the CPU's fp32 results.

Skipped without a CUDA device (CI). On a GPU machine: ``pytest tests/test_cuda.py``
(``benchmarks/gpu_check.sh`` runs it). ``FA_CUDA_TESTS_ON=cpu`` runs the same tests with
the CPU standing in for the GPU (and gloo for nccl): a dry run of this file's code on a
machine without one; the comparisons are then trivially CPU against CPU.

Precision: TF32 is switched off (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32``; cuDNN's is on by default) so that both sides compute
in fp32; benchmarks/run.py section 7 measures what TF32 and bf16 change.

Tolerance: gradients and samples within 1e-4 of each tensor's largest entry (fp32 with
another order of summation in cuDNN's convolutions and cuBLAS's products: ~1e-6 per
operation, through a forward, a transposed-Jacobian step and a double backward);
parameters after k Adam steps within rtol 1e-4, atol 1e-5, with Adam's eps = 1e-3 (as in
tests/test_speed_equivalence.py: FA's null directions have round-off gradients that a
small eps would turn into lr-sized steps in any two implementations).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from fa_utils import fa, models, train, vfa

DRY_RUN = os.environ.get("FA_CUDA_TESTS_ON") == "cpu"
DEVICE = "cpu" if DRY_RUN else "cuda"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() and not DRY_RUN,
                       reason="no CUDA device: these tests run on a GPU machine "
                              "(benchmarks/gpu_check.sh)"),
]

ADAM = dict(lr=1e-3, betas=(0.5, 0.999), eps=1e-3)
REL = 1e-4  # of each tensor's largest entry
RTOL, ATOL = 1e-4, 1e-5
STEPS = 3
BATCH = 16


@pytest.fixture(autouse=True)
def fp32_on_cuda():
    """TF32 off on both sides (restored afterwards)."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def close_to_scale(got, want, rel=REL, msg=""):
    """|got - want| <= rel * max|want| entrywise (on the CPU)."""
    got, want = got.detach().cpu(), want.detach().cpu()
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=rel * scale + 1e-12, msg=msg)


def encoder(dataset="mnist", z=32):
    """Tables 7-9's encoder with PyTorch's default init (seed 0), on the CPU."""
    torch.manual_seed(0)
    return models.Encoder(models.architecture(dataset), {"z": z})


def batch(dataset="mnist", n=BATCH, seed=1):
    arch = models.architecture(dataset)
    return torch.rand(n, arch.channels, arch.size, arch.size,
                      generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "celeba"])
def test_fa_gradient_on_cuda_equals_cpu_fp32(dataset):
    """One batch: the outer loss gradient wrt every encoder parameter, and r."""
    x = batch(dataset)
    out = {}
    for dev in ("cpu", DEVICE):
        enc = encoder(dataset).to(dev)
        loss, image = fa.fa_loss(enc, x.to(dev))
        loss.backward()
        out[dev] = (float(loss.detach()), image.detach().cpu(),
                    [(n, p.grad.detach().cpu()) for n, p in enc.named_parameters()])
    (l_cpu, r_cpu, g_cpu), (l_dev, r_dev, g_dev) = out["cpu"], out[DEVICE]
    assert l_dev == pytest.approx(l_cpu, rel=1e-5)
    close_to_scale(r_dev, r_cpu, msg="r")
    overall = max(float(g.abs().max()) for _, g in g_cpu)
    for (name, a), (_, b) in zip(g_dev, g_cpu):
        # a null direction (a bias whose gradient is round-off): scale by the largest overall
        scale = float(b.abs().max())
        scale = overall if scale < 1e-4 * overall else scale
        torch.testing.assert_close(a, b, rtol=0, atol=REL * scale, msg=name)


def test_fa_steps_on_cuda_equal_cpu_fp32():
    """k fa_steps (fused Adam, Eq. 9 clamp) from the same init on the same batch."""
    x = batch()
    params = {}
    for dev in ("cpu", DEVICE):
        enc = encoder().to(dev)
        opt = train.make_adam(enc.parameters(), **ADAM)
        losses = [fa.fa_step(enc, opt, x.to(dev))["loss"] for _ in range(STEPS)]
        params[dev] = ([p.detach().cpu() for p in enc.parameters()], losses)
    (p_cpu, l_cpu), (p_dev, l_dev) = params["cpu"], params[DEVICE]
    assert l_dev == pytest.approx(l_cpu, rel=1e-4)
    for (name, _), a, b in zip(encoder().named_parameters(), p_dev, p_cpu):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.parametrize("num_classes", [0, 10])
def test_vfa_sampling_on_cuda_equals_cpu(num_classes):
    """vfa.decode (the sampler: shared-start step, or align for the conditional model) and
    VFA-GAN's refiner on the same z."""
    settings = vfa.VFASettings(num_classes=num_classes)
    torch.manual_seed(0)
    enc = vfa.make_vfa_encoder("mnist", 32, num_classes, orthogonal=False).eval()
    refiner = models.FAGenerator(1, 16, 3).eval()
    z = torch.randn(BATCH, 32, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(BATCH) % 10 if num_classes else None
    images = {}
    for dev in ("cpu", DEVICE):
        kw = dict(settings=settings, labels=None if labels is None else labels.to(dev))
        e, g = enc.to(dev), refiner.to(dev)
        images[dev] = (vfa.decode(e, z.to(dev), (1, 28, 28), **kw).cpu(),
                       vfa.decode(e, z.to(dev), (1, 28, 28), refiner=g, **kw).cpu())
    for what, a, b in zip(("VFA", "VFA-GAN"), images[DEVICE], images["cpu"]):
        close_to_scale(a, b, msg=what)


def test_paper_sampling_calls_run_on_cuda():
    """The calls the benchmark times (baselines.sampling_calls) on the device, batch 2."""
    from fa_utils import baselines
    for dataset in ("mnist", "stl10"):
        calls = baselines.sampling_calls(dataset, batch=2, device=DEVICE)
        shapes = {m: tuple(fn().shape) for m, fn in calls.items()}
        arch = models.architecture(dataset)
        assert set(shapes.values()) == {(2, arch.channels, arch.size, arch.size)}, shapes


# --------------------------------------------------------------------------------------
# DDP with nccl: one rank per GPU (2 if there are 2, else 1 rank, still through DDP)
# --------------------------------------------------------------------------------------

DDP_BATCH = 8


def ddp_worker(out: Path) -> None:
    """One rank: STEPS fa_steps through a DDP wrapper on this rank's rows of one batch."""
    from torch import nn

    from fa_utils import distributed as D
    info = D.init_from_env(DEVICE)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        module = encoder(z=8).to(info.device)
        kw = {"device_ids": [info.device.index]} if info.device.type == "cuda" else {}
        ddp = nn.parallel.DistributedDataParallel(module, **kw)  # even with one rank
        opt = train.make_adam(module.parameters(), **ADAM)
        x = batch(n=DDP_BATCH)
        local = DDP_BATCH // info.world_size
        rows = x[info.rank * local:(info.rank + 1) * local].to(info.device)
        losses = [D.fa_step_distributed(ddp, opt, rows, info=info, global_batch=DDP_BATCH)["loss"]
                  for _ in range(STEPS)]
        torch.save({k: v.cpu() for k, v in module.state_dict().items()},
                   out / f"rank{info.rank}.pt")
        (out / f"rank{info.rank}.json").write_text(json.dumps(
            {"backend": info.backend, "world": info.world_size, "losses": losses}))
    finally:
        D.cleanup()


def test_ddp_on_cuda_equals_one_process(tmp_path):
    from benchmarks.launch import launch_local
    nprocs = min(2, torch.cuda.device_count()) if not DRY_RUN else 2
    t0 = time.perf_counter()
    env = {"PYTHONPATH": os.pathsep.join(sys.path)}
    if DRY_RUN:
        env["FA_CUDA_TESTS_ON"] = "cpu"
    launch_local([os.path.abspath(__file__), "--worker", str(tmp_path)], nprocs,
                 timeout_s=240, env=env)
    meta = json.loads((tmp_path / "rank0.json").read_text())
    assert meta["world"] == nprocs
    assert meta["backend"] == ("gloo" if DRY_RUN else "nccl")
    ref = encoder(z=8).to(DEVICE)
    opt = train.make_adam(ref.parameters(), **ADAM)
    x = batch(n=DDP_BATCH).to(DEVICE)
    for _ in range(STEPS):
        fa.fa_step(ref, opt, x)
    for rank in range(nprocs):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, p in ref.state_dict().items():
            torch.testing.assert_close(got[name], p.cpu(), rtol=RTOL, atol=ATOL, msg=name)
    print(f"{nprocs} {meta['backend']} rank(s): {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__" and "--worker" in sys.argv:
    ddp_worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
