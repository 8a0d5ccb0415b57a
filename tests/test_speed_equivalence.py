"""The optimised FA step gives the results of a straightforward one.

``fa.fa_step`` takes the first inner step from r_0 = 0 with ``fa.shared_start_step``
(E(0) on a batch of one, the transposed Jacobian applied layer by layer), clamps with a
precomputed list and syncs once; ``train.make_adam`` picks the fused Adam. The reference
below is Algorithm 1 written plainly in fp32: E(x), r_0 = 0, autograd.grad with
create_graph, loss, backward, Adam, clamp.

Tolerance: parameters after k steps within rtol 1e-5, atol 1e-6; gradients within 1e-5 of
each tensor's largest entry; VFA samples within rtol 1e-5, atol 1e-6 of one plain inner
step. Precision: the fp32 step's gradient within 1e-5 (relative L2) of the same step in
float64; bf16 autocast drifts far more (~5e-2 measured, benchmarks/run.py section 7) and
is not used by default. Adam's eps is 1e-3 in the parameter comparison: FA has exact
null directions (a bias that shifts E(x) and E(r) alike) whose gradient is round-off,
~1e-8, and differs between any two orders of summation; with eps = 1e-8 Adam turns it into
lr-sized steps of those coordinates. The same optimiser runs on both sides.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fa_utils import fa, models, train, vfa

ADAM = dict(lr=1e-3, betas=(0.5, 0.999), eps=1e-3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
RTOL, ATOL = 1e-5, 1e-6


def small_encoder(seed=0, arch=models.Architecture(1, 12, (4, 8), 32), z=8):
    torch.manual_seed(seed)
    return models.init_orthogonal_(models.Encoder(arch, {"z": z}))


def reference_step(enc, opt, x, *, T=1, tau=1.0, squash="none", bound=math.sqrt(2)):
    """Algorithm 1, plainly: no shortcut, batch-B E(r_0), module walk for the clamp."""
    opt.zero_grad()
    z_x = enc(x)["z"]
    r = torch.zeros_like(x).requires_grad_(True)
    for _ in range(T):
        energy = 0.5 * (z_x - enc(r)["z"]).pow(2).sum()
        (g,) = torch.autograd.grad(energy, r, create_graph=True)
        r = r - tau * g
    image = torch.sigmoid(r) if squash == "sigmoid" else r
    loss = (x - image).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.clamp_(-bound, bound)
    return loss.item()


@pytest.mark.parametrize("T,squash,fused", [(1, "none", False), (1, "none", True),
                                            (2, "sigmoid", False)])
def test_parameters_after_k_steps_equal_the_reference(T, squash, fused):
    x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    ref, fast = small_encoder(), small_encoder()
    ref_opt = torch.optim.Adam(ref.parameters(), **ADAM)
    fast_opt = train.make_adam(fast.parameters(), fused=fused, **ADAM)
    assert fast_opt.defaults.get("fused") is (True if fused else None)
    assert fa.supports_shared_start(fast)
    for _ in range(4):
        want = reference_step(ref, ref_opt, x, T=T, squash=squash)
        got = fa.fa_step(fast, fast_opt, x, T=T, squash=squash)
        assert got["loss"] == pytest.approx(want, rel=1e-5)
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=RTOL, atol=ATOL, msg=name)
    assert max(float((p - q).detach().abs().max()) for p, q in
               zip(ref.parameters(), small_encoder().parameters())) > 1e-3  # it moved


@pytest.mark.parametrize("T", [1, 3])
def test_gradients_equal_the_textbook_path_on_the_mnist_encoder(T):
    torch.manual_seed(0)
    enc = models.Encoder(models.architecture("mnist"), {"z": 32})  # Table 7, default init
    x = torch.rand(8, 1, 28, 28)
    grads = {}
    for shared in (False, True):
        enc.zero_grad(set_to_none=True)
        loss, _ = fa.fa_loss(enc, x, T=T, tau=0.5, shared_start=shared)
        loss.backward()
        grads[shared] = [p.grad.clone() for p in enc.parameters()]
    overall = max(float(b.abs().max()) for b in grads[False])
    for (name, _), a, b in zip(enc.named_parameters(), grads[True], grads[False]):
        # 1e-5 of the tensor's largest entry; for a null direction (the head's bias, whose
        # gradient is round-off) 1e-5 of the largest gradient overall
        largest = float(b.abs().max())
        scale = overall if largest < 1e-4 * overall else largest
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * scale, msg=name)


def test_reconstruction_and_decoding_equal_align():
    enc = small_encoder(z=6)
    x = torch.rand(5, 1, 12, 12)
    for T in (1, 3):
        a = fa.reconstruct(enc, x, T=T, tau=0.7, squash="sigmoid", shared_start=True).image
        b = fa.reconstruct(enc, x, T=T, tau=0.7, squash="sigmoid", shared_start=False).image
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        z = torch.randn(4, 6)
        a = fa.decode_latent(enc, z, (1, 12, 12), T=T, shared_start=True)
        b = fa.decode_latent(enc, z, (1, 12, 12), T=T, shared_start=False)
        torch.testing.assert_close(a.r, b.r, rtol=1e-5, atol=1e-6)
        assert not a.r.requires_grad


def test_shared_start_is_used_only_where_it_is_exact():
    enc = small_encoder()
    assert fa.supports_shared_start(enc) and not fa.supports_shared_start(enc, "mu")

    class Sub(models.Encoder):
        def forward(self, x):
            return {"z": super().forward(x)["z"] * 2}

    sub = Sub(models.Architecture(1, 12, (4, 8), 32), {"z": 8})
    assert not fa.supports_shared_start(sub)
    handle = enc.trunk[0].register_forward_hook(lambda m, i, o: o)
    assert not fa.supports_shared_start(enc)
    handle.remove()
    enc.trunk[1] = nn.Tanh()  # smooth activation: its derivative depends on the weights
    assert not fa.supports_shared_start(enc)
    x = torch.rand(3, 1, 12, 12)
    with pytest.raises(ValueError, match="shared_start=True needs"):
        fa.reconstruct(enc, x, shared_start=True)
    with pytest.raises(ValueError, match="shared_start=True needs"):
        fa.reconstruct(small_encoder(), x, r_init="uniform", shared_start=True)
    fa.reconstruct(enc, x)  # falls back to align silently


def test_step_values_sync_once_or_not_at_all():
    enc = small_encoder()
    opt = torch.optim.Adam(enc.parameters(), **ADAM)
    x = torch.rand(4, 1, 12, 12)
    lazy = fa.fa_step(enc, opt, x, sync=False)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in lazy.values())
    with torch.no_grad():
        image = fa.reconstruct(enc, x).image
    eager = fa.fa_step(enc, opt, x)
    assert all(isinstance(v, float) for v in eager.values())
    assert eager["mse"] == pytest.approx(eager["loss"] / x[0].numel(), rel=1e-6)
    assert eager["mse"] == pytest.approx(float((image - x).pow(2).mean()), rel=1e-5)


def test_channels_last_encoder_gives_the_same_step():
    x = torch.rand(8, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    arch = models.Architecture(3, 12, (4, 8), 32)
    a, b = small_encoder(arch=arch), small_encoder(arch=arch).to(memory_format=torch.channels_last)
    for enc, xx in ((a, x), (b, x.contiguous(memory_format=torch.channels_last))):
        loss, _ = fa.fa_loss(enc, xx)
        loss.backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-5 * scale + 1e-12, msg=name)


@pytest.mark.parametrize("num_classes,rand_side", [(0, "mu"), (3, "mu"), (0, "mu+sigma")])
def test_vfa_sampler_equals_one_plain_inner_step(num_classes, rand_side):
    """vfa.sample (shared-start step for the unconditional mu side, align otherwise) against
    Eq. 2 written plainly: a batch of zeros, autograd.grad of the inner energy, one step."""
    settings = vfa.VFASettings(num_classes=num_classes, rand_side=rand_side, tau=0.7,
                               class_scale=2.0)
    torch.manual_seed(0)
    arch = models.Architecture(1, 12, (4, 8), 32)
    enc = models.init_orthogonal_(models.Encoder(arch, vfa.vfa_heads(6, num_classes))).eval()
    images, z, labels = vfa.sample(enc, 5, (1, 12, 12), settings=settings, latent_dim=6,
                                   generator=torch.Generator().manual_seed(3))
    r = torch.zeros(5, 1, 12, 12, requires_grad=True)
    out = enc(r)
    side = out["mu"] + ((0.5 * out["logvar"]).exp() if rand_side == "mu+sigma" else 0)
    target = z
    if num_classes:
        side = torch.cat([side, out["logits"]], 1)
        target = torch.cat([z, 2.0 * nn.functional.one_hot(labels, num_classes).float()], 1)
    (g,) = torch.autograd.grad(0.5 * (target - side).pow(2).sum(), r)
    torch.testing.assert_close(images, (r - 0.7 * g).detach(), rtol=1e-5, atol=1e-6)


def test_fp32_gradient_matches_float64_and_bf16_is_not_kept():
    """The benchmark's precision check (section 7) on the MNIST encoder: fp32 is the fp64
    step within 1e-5; bf16 autocast moves the gradient by more than the tolerance that
    would let it replace fp32 (so fp32 stays the default)."""
    import copy

    from benchmarks.run import DRIFT_TOLERANCE, fa_gradient, relative_drift
    torch.manual_seed(0)
    enc = models.Encoder(models.architecture("mnist"), {"z": 32})
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    g64, r64, _ = fa_gradient(copy.deepcopy(enc).double(), x.double())
    g32, r32, _ = fa_gradient(enc, x)
    assert relative_drift(g32, g64) < 1e-5 and relative_drift(r32, r64) < 1e-5
    g16, r16, _ = fa_gradient(enc, x, torch.bfloat16)
    assert all(torch.isfinite(g).all() for g in g16)
    assert max(relative_drift(g16, g64), relative_drift(r16, r64)) > DRIFT_TOLERANCE


# E(0) kept between sampling calls (fa._cached_start_step): same result, invalidated when
# the encoder changes, never used in training
# --------------------------------------------------------------------------------------


def uncached_sample(enc, target, shape, settings):
    """The shared-start step recomputing E(0): what the cache must reproduce bit for bit."""
    head = ("mu", "logits") if settings.conditional else "mu"
    r0 = torch.zeros((1, *shape))
    return fa.shared_start_step(enc, target, r0, head=head, tau=settings.tau,
                                create_graph=False)


def plain_step(enc, target, shape, settings):
    """Eq. 2 written plainly (a batch of zeros, autograd.grad), the textbook reference."""
    r = torch.zeros((target.shape[0], *shape), requires_grad=True)
    out = enc(r)
    side = torch.cat([out["mu"], out["logits"]], 1) if settings.conditional else out["mu"]
    (g,) = torch.autograd.grad(0.5 * (target - side).pow(2).sum(), r)
    return (r - settings.tau * g).detach()


def relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dataset", ["mnist", "celeba"])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_cached_sampling_equals_the_uncached_step(dataset, num_classes):
    """Tables 7 and 9's encoders, unconditional and conditional VFA (heads mu, logits):
    later calls reuse E(0) and give the uncached step's result exactly (tolerance 0, hence
    within 1e-6 relative), for new latents and any batch size; the textbook step within
    fp32 rounding (the tolerance of test_vfa_sampler_equals_one_plain_inner_step)."""
    torch.manual_seed(0)
    enc = vfa.make_vfa_encoder(dataset, 16, num_classes, orthogonal=False).eval()
    arch = enc.arch
    shape = (arch.channels, arch.size, arch.size)
    settings = vfa.VFASettings(num_classes=num_classes, tau=0.7, class_scale=2.0)
    fa.clear_start_cache()
    gen = torch.Generator().manual_seed(1)
    for call, n in enumerate((3, 1, 4)):
        z = vfa.prior(n, 16, gen)
        labels = torch.arange(n) % num_classes if num_classes else None
        got = vfa.decode(enc, z, shape, settings=settings, labels=labels)
        target = vfa.inner_target(z, settings, labels)
        want = uncached_sample(enc, target, shape, settings)
        assert torch.equal(got, want) and relative(got, want) <= 1e-6
        torch.testing.assert_close(got, plain_step(enc, target, shape, settings),
                                   rtol=1e-5, atol=1e-6)
        assert fa.start_cache_info()["misses"] == 1 and fa.start_cache_info()["hits"] == call
    # vfa.sample and vfa.reconstruct (decode_full) take the same cached path
    images, z, labels = vfa.sample(enc, 2, shape, settings=settings, latent_dim=16,
                                   generator=gen)
    target = vfa.inner_target(z, settings, labels if num_classes else None)
    assert torch.equal(images, uncached_sample(enc, target, shape, settings))
    assert fa.start_cache_info()["misses"] == 1


def test_the_start_cache_is_invalidated_when_the_encoder_changes():
    """After an optimiser step (for-loop and fused Adam), the Eq. 9 clamp, load_state_dict,
    a replaced parameter, a train/eval switch or a dtype change, the next sample equals a
    fresh computation (and not the stale one)."""
    settings = vfa.VFASettings(num_classes=3, class_scale=2.0)
    torch.manual_seed(0)
    arch = models.Architecture(1, 12, (4, 8), 32)
    enc = models.init_orthogonal_(models.Encoder(arch, vfa.vfa_heads(6, 3))).eval()
    shape = (1, 12, 12)
    z, labels = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    target = vfa.inner_target(z, settings, labels)
    fa.clear_start_cache()

    def check_fresh(stale):
        misses = fa.start_cache_info()["misses"]
        got = vfa.decode(enc, z, shape, settings=settings, labels=labels)
        want = uncached_sample(enc, target, shape, settings)
        assert torch.equal(got, want)
        assert fa.start_cache_info()["misses"] == misses + 1  # recomputed, not reused
        if stale is not None:
            assert not torch.equal(got, stale)
        assert torch.equal(vfa.decode(enc, z, shape, settings=settings, labels=labels), got)
        return got

    first = check_fresh(None)
    saved = {k: v.clone() for k, v in enc.state_dict().items()}
    x = torch.rand(8, 1, 12, 12)
    for fused in (False, True):
        opt = train.make_adam(enc.parameters(), fused=fused, lr=1e-2)
        vfa.vfa_step(enc, opt, x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), settings=settings,
                     weight_clamp=None)
        enc.eval()
        before = check_fresh(None)
        assert not torch.equal(before, first)
    with torch.no_grad():  # a bias only: the step changes through E(0), not J
        enc.heads["mu"].bias.add_(0.5)
    stepped = check_fresh(before)
    models.clamp_weights_(enc, 0.05)  # Eq. 9's clamp, in place
    clamped = check_fresh(stepped)
    enc.load_state_dict(saved)  # copies in place: the original weights again
    assert torch.equal(check_fresh(clamped), first)
    enc.heads["logits"].weight = nn.Parameter(enc.heads["logits"].weight.detach() * 2)
    replaced = check_fresh(first)
    enc.train()
    check_fresh(None)
    enc.eval()
    check_fresh(None)
    enc.double()
    got = vfa.decode(enc, z.double(), shape, settings=settings, labels=labels)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.float(), replaced, rtol=1e-5, atol=1e-6)


def test_training_never_uses_the_start_cache(monkeypatch):
    """create_graph=True (the FA step, fa.reconstruct with a graph, the VFA step) goes
    through shared_start_step / align, never through the cache; the dropped encoder's
    entry goes with it."""
    import gc

    calls = []
    real = fa._cached_start_step
    monkeypatch.setattr(fa, "_cached_start_step",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    fa.clear_start_cache()
    enc = small_encoder()
    opt = torch.optim.Adam(enc.parameters(), **ADAM)
    x = torch.rand(4, 1, 12, 12)
    fa.fa_step(enc, opt, x)
    loss = fa.reconstruct(enc, x, create_graph=True).image.pow(2).sum()
    loss.backward()
    venc = models.Encoder(models.Architecture(1, 12, (4, 8), 32), vfa.vfa_heads(6, 3))
    vopt = torch.optim.Adam(venc.parameters(), **ADAM)
    vfa.vfa_step(venc, vopt, x, torch.tensor([0, 1, 2, 0]),
                 settings=vfa.VFASettings(num_classes=3))
    assert calls == [] and fa.start_cache_info() == {"hits": 0, "misses": 0, "encoders": 0}
    with torch.no_grad():
        fa.reconstruct(enc, x)  # evaluation: it is used
    assert calls == [1] and fa.start_cache_info()["encoders"] == 1
    del enc
    gc.collect()
    assert fa.start_cache_info()["encoders"] == 0
