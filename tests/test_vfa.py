"""VFA and VFA-GAN (Sections 3.3-3.4): KL, LSGAN and perceptual losses, sampling, the
conditional class head, one training step of every network on every dataset's shapes."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from fa_utils import baselines, data, models, paper, vfa
from notebook_code import cell_namespace

DATASETS = list(models.ARCHITECTURES)
TINY = models.Architecture(1, 8, (4,), 16)  # 1x8x8 images, one conv pair, Linear(16)


def tiny_encoder(num_classes=0, latent=4, seed=0):
    torch.manual_seed(seed)
    return models.Encoder(TINY, vfa.vfa_heads(latent, num_classes))


# --------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    ours = vfa.kl_normal(mu, logvar)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    assert ours.shape == (5,)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(vfa.kl_normal(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_lsgan_losses_on_known_inputs():
    one, minus = torch.ones(4), -torch.ones(4)
    assert vfa.lsgan_discriminator_loss(one, minus).item() == 0.0  # perfect D
    assert vfa.lsgan_discriminator_loss(torch.zeros(4), torch.zeros(3)).item() == 2.0
    # real scored -1 (error 2^2 = 4) and fake scored +1 (error 4): 8
    assert vfa.lsgan_discriminator_loss(minus, one).item() == 8.0
    assert vfa.lsgan_generator_loss(one).item() == 0.0
    assert vfa.lsgan_generator_loss(torch.tensor([1.0, -1.0])).item() == 2.0  # (0 + 4) / 2
    # batch mean, not sum: doubling the batch leaves the value unchanged
    d = torch.tensor([0.5, -0.3])
    assert vfa.lsgan_generator_loss(d.repeat(2)) == pytest.approx(vfa.lsgan_generator_loss(d).item())


def test_perceptual_term_is_a_per_example_sum_averaged_over_the_batch():
    mu_x, var_x = torch.zeros(2, 3), torch.ones(2, 3)
    mu_g = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    var_g = torch.tensor([[1.0, 1, 1], [3.0, 1, 1]])
    # example 0: 1 (mean); example 1: 4 (variance) -> mean 2.5
    assert vfa.perceptual_moments_loss(mu_x, var_x, mu_g, var_g).item() == 2.5


# --------------------------------------------------------------------------------------
# the method's pieces
# --------------------------------------------------------------------------------------


def test_random_side_options():
    enc = tiny_encoder(num_classes=3)
    r = torch.rand(2, 1, 8, 8)
    out = enc(r)
    from fa_utils import fa
    # the random side r -> z_r: (B, C, H, W) -> (B, Z + K), sigma = exp(logvar / 2)
    z_mu = fa.head_encoder(enc, vfa.VFASettings(num_classes=3).heads)(r)
    z_ms = fa.head_encoder(enc, vfa.VFASettings(num_classes=3, rand_side="mu+sigma").heads)(r)
    assert torch.allclose(z_mu, torch.cat([out["mu"], out["logits"]], 1))
    assert torch.allclose(z_ms[:, :4], out["mu"] + (0.5 * out["logvar"]).exp())
    with pytest.raises(ValueError, match="rand_side"):
        vfa.VFASettings(rand_side="sigma")


def test_beta_schedules():
    g = torch.Generator().manual_seed(0)
    b = vfa.draw_betas(1000, vfa.VFASettings(beta=0.5, beta_schedule="uniform"), g)
    assert b.shape == (1000,) and b.min() >= 0 and b.max() <= 0.5 and b.std() > 0.1
    assert torch.all(vfa.draw_betas(3, vfa.VFASettings(beta=0.3, beta_schedule="fixed")) == 0.3)


def test_unlabeled_data_refused_by_a_conditional_vfa():
    with pytest.raises(ValueError, match="conditional=False"):
        vfa.one_hot(torch.tensor([-1, 2]), 10)


# --------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("conditional", [False, True])
def test_eval_mode_sample_does_not_depend_on_the_rest_of_its_batch(conditional):
    enc = tiny_encoder(num_classes=3 if conditional else 0)
    refiner = models.FAGenerator(1, width=8, kernel=3)
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for bn in (m for m in refiner.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    enc.eval(), refiner.eval()
    s = vfa.VFASettings(num_classes=3 if conditional else 0)
    z = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2]) if conditional else None
    for ref in (None, refiner):
        full = vfa.decode(enc, z, (1, 8, 8), settings=s, labels=labels, refiner=ref)
        part = vfa.decode(enc, z[:2], (1, 8, 8), settings=s,
                          labels=None if labels is None else labels[:2], refiner=ref)
        other = vfa.decode(enc, torch.cat([z[:2], 5 * torch.randn(4, 4)]), (1, 8, 8), settings=s,
                           labels=labels, refiner=ref)
        assert full.shape == (6, 1, 8, 8)
        assert torch.allclose(full[:2], part, atol=1e-6)
        assert torch.allclose(other[:2], part, atol=1e-6)
    # and the unconditional path is fa.decode_latent with head "mu"
    if not conditional:
        from fa_utils import fa
        ref = fa.decode_latent(enc, z, (1, 8, 8), head="mu", squash=s.squash).image
        assert torch.allclose(vfa.decode(enc, z, (1, 8, 8), settings=s), ref)


def test_larger_one_hot_value_raises_the_class_score():
    enc = tiny_encoder(num_classes=5, seed=1)
    enc.eval()
    s = vfa.VFASettings(num_classes=5, squash="none")
    z = torch.randn(1, 4).expand(5, -1)
    classes = torch.arange(5)
    scores = []
    for scale in (1.0, 4.0):
        r = vfa.decode(enc, z, (1, 8, 8), settings=s, labels=classes, scale=scale)
        with torch.no_grad():
            scores.append(enc(r)["logits"][classes, classes])
    assert torch.all(scores[1] > scores[0]), scores
    class_emphasis = cell_namespace("03_vfa", "vfa-class-emphasis").class_emphasis
    images, table = class_emphasis(enc, z[0], (1, 8, 8), [1.0, 4.0], settings=s)
    assert images.shape == (10, 1, 8, 8) and torch.allclose(table, torch.stack(scores), atol=1e-5)


def test_interpolation_grid_corners_are_the_reconstructions():
    enc = tiny_encoder(num_classes=3)
    s = vfa.VFASettings(num_classes=3)
    corners = torch.rand(4, 1, 8, 8)
    grid = vfa.interpolation_grid(enc, corners, 3, settings=s)
    rec = vfa.reconstruct(enc, corners, settings=s)
    assert grid.shape == (9, 1, 8, 8)
    assert torch.allclose(grid[[0, 2, 6, 8]], rec, atol=1e-6)


# --------------------------------------------------------------------------------------
# one step of every network on every dataset's shapes
# --------------------------------------------------------------------------------------


def _grads_reach(module):
    missing = [n for n, p in module.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all()
                                       or (p.dim() > 1 and p.grad.abs().sum() == 0))]
    assert not missing, f"{type(module).__name__}: no gradient for {missing}"


@pytest.mark.parametrize("dataset", DATASETS)
def test_vfa_and_vfagan_forward_backward_on_every_dataset(dataset):
    torch.manual_seed(0)
    arch = models.architecture(dataset)
    x = torch.rand(2, arch.channels, arch.size, arch.size)
    y = torch.tensor([1, 3])
    k = data.dataset_info(dataset).num_classes or 0
    s = vfa.VFASettings(num_classes=k)
    enc = vfa.make_vfa_encoder(dataset, 8, k, orthogonal=False)
    loss, parts, image = vfa.vfa_loss(enc, x, y if k else None, settings=s)
    assert image.shape == x.shape and torch.isfinite(loss)
    loss.backward()
    _grads_reach(enc)

    refiner = models.FAGenerator(arch.channels, width=8, kernel=3)
    disc = models.Discriminator(arch)
    before = [p.detach().clone() for p in enc.parameters()]
    opt_g = torch.optim.SGD(refiner.parameters(), lr=1e-3)
    opt_d = torch.optim.SGD(disc.parameters(), lr=1e-3)
    g_before = [p.detach().clone() for p in refiner.parameters()]
    logs = vfa.vfagan_step(enc, refiner, disc, opt_g, opt_d, x, y if k else None, settings=s,
                           latent_dim=8, fake_source="authors")
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    _grads_reach(refiner)
    _grads_reach(disc)
    # the encoder is fixed in the two-stage schedule; G and D moved
    assert all(torch.equal(a, b) for a, b in zip(before, enc.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, refiner.parameters()))


def test_joint_vfagan_step_also_trains_the_encoder():
    enc = tiny_encoder(num_classes=3)
    refiner, disc = models.FAGenerator(1, 8, 3), models.Discriminator(TINY)
    opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in (enc, refiner, disc)]
    before = [p.detach().clone() for p in enc.parameters()]
    logs = vfa.vfagan_step(enc, refiner, disc, opts[1], opts[2], torch.rand(4, 1, 8, 8),
                           torch.tensor([0, 1, 2, 0]), settings=vfa.VFASettings(num_classes=3),
                           latent_dim=4, opt_e=opts[0], fake_source="prior")
    assert "enc_loss" in logs
    assert any(not torch.equal(a, b) for a, b in zip(before, enc.parameters()))


def test_vfa_training_lowers_its_loss():
    torch.manual_seed(0)
    enc = tiny_encoder(num_classes=0, latent=6)
    s = vfa.VFASettings(squash="sigmoid")
    x = torch.rand(32, 1, 8, 8) * 0.2 + (torch.arange(8) > 3).float().view(1, 1, 1, 8) * 0.7
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = vfa.vfa_step(enc, opt, x, settings=s, generator=g)["mse"]
    for _ in range(60):
        last = vfa.vfa_step(enc, opt, x, settings=s, generator=g)["mse"]
    assert last < 0.5 * first, (first, last)


def test_paper_sizes_are_matched_within_half_a_percent():
    for dataset, (_, unit, _, reported) in paper.SIZES_AND_TIMES.items():
        counts = baselines.parameter_counts(dataset)
        for model, (size, _) in reported.items():
            assert abs(counts[model] / (size * unit) - 1) < 0.005, (dataset, model, counts[model])
        # the paper's claim: VFA has about half the parameters of the VAE (0.51-0.87 across
        # datasets in the paper itself; STL-10's Table 12 decoder is small)
        assert counts["VFA"] < counts["VAE"]
    assert baselines.parameter_counts("mnist")["VFA"] == 14_003_946


# --------------------------------------------------------------------------------------
# The log-variance bound, bad images and the non-finite refusal
# --------------------------------------------------------------------------------------


def test_bounded_logvar_changes_nothing_inside_the_bounds_and_keeps_a_gradient_outside():
    lv = torch.tensor([-5.0, 0.0, 19.0, 100.0, -100.0], requires_grad=True)
    b = models.bounded_logvar(lv)
    assert torch.equal(b[:3], lv[:3].detach())  # bit-identical inside
    assert b[3].item() == models.LOGVAR_MAX and b[4].item() == models.LOGVAR_MIN
    b.sum().backward()
    assert torch.equal(lv.grad, torch.ones(5))  # straight through: no unit is stuck at a bound
    kl = vfa.kl_normal(torch.zeros(1, 2), torch.tensor([[100.0, 1e4]]))
    assert torch.isfinite(kl).all()


def test_a_logvar_of_100_gives_a_finite_vfa_step_that_pulls_it_back():
    """Before the bound: kl_normal was inf, vfa_step returned loss inf and left non-finite
    weights."""
    enc = tiny_encoder(num_classes=0, latent=4)
    with torch.no_grad():
        enc.heads["logvar"].weight.zero_()
        enc.heads["logvar"].bias.fill_(100.0)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    logs = vfa.vfa_step(enc, opt, torch.rand(4, 1, 8, 8), settings=vfa.VFASettings(beta=1.0, beta_schedule="fixed"),
                        generator=torch.Generator().manual_seed(0))
    assert all(map(math.isfinite, logs.values())), logs
    assert all(torch.isfinite(p).all() for p in enc.parameters())
    assert (enc.heads["logvar"].bias < 100.0).all()  # the KL gradient reaches the head


def test_an_overflowing_vfa_term_is_refused_named_and_leaves_the_weights(tmp_path):
    from fa_utils import train
    enc = tiny_encoder(num_classes=0, latent=4)
    with torch.no_grad():
        enc.heads["mu"].bias.fill_(1e20)  # mu^2 = 1e40 overflows float32 in the KL term
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    s = vfa.VFASettings()
    x = torch.rand(8, 1, 8, 8)
    with pytest.raises(train.NonFiniteLossError, match=r"VFA loss is not finite \(.*KL infinite "
                       r"for 8 of 8 examples.*nothing was written.*log-variance is bounded") as info:
        vfa.vfa_step(enc, opt, x, settings=s)
    assert "KL" in str(info.value) and info.value.term in ("rec", "KL")
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())

    def step(x, y):
        return vfa.vfa_step(enc, opt, x, settings=s)

    with pytest.raises(train.NonFiniteLossError, match=r"stopped at step 1 of 2 \(as the progress "
                       r"bar counts\).*KL.*log-variance.*Lower lr"):
        train.fit(step, modules={"encoder": enc}, optimizers={"adam": opt},
                  dataset=torch.utils.data.TensorDataset(x.repeat(2, 1, 1, 1)), batch_size=8,
                  epochs=1, seed=0, config={}, generator=torch.Generator(), progress=False,
                  checkpoint=tmp_path / "v.pt", nan_hint="Lower lr.")
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert not (tmp_path / "v.pt").exists()


@pytest.mark.parametrize("scale, shift, match", [(255.0, 0.0, "divide by 255"),
                                                 (2.0, -1.0, r"\(x \+ 1\) / 2")])
def test_vfa_and_vfagan_steps_refuse_images_outside_the_unit_range(scale, shift, match):
    enc = tiny_encoder(num_classes=0, latent=4)
    refiner, disc = models.FAGenerator(1, 8, 3), models.Discriminator(TINY)
    opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in (enc, refiner, disc)]
    x = torch.rand(4, 1, 8, 8) * scale + shift
    before = [p.detach().clone() for p in enc.parameters()]
    with pytest.raises(ValueError, match="the training batch has values.*" + match):
        vfa.vfa_step(enc, opts[0], x, settings=vfa.VFASettings())
    with pytest.raises(ValueError, match="the training batch has values.*" + match):
        vfa.vfagan_step(enc, refiner, disc, opts[1], opts[2], x, settings=vfa.VFASettings(),
                        latent_dim=4)
    assert all(torch.equal(a, b) for a, b in zip(before, enc.parameters()))


@pytest.mark.parametrize("joint", [False, True])
def test_vfagan_step_encodes_the_real_batch_once(joint):
    """G and D reuse what was computed: in joint training the encoder step's E(x) and r_hat
    (before its update, as the authors' code does), in the two-stage schedule one E(x) for
    both r_hat and the perceptual term. Counted: encoder forwards on the real images."""
    enc = tiny_encoder(num_classes=3)
    refiner, disc = models.FAGenerator(1, 8, 3), models.Discriminator(TINY)
    opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in (enc, refiner, disc)]
    x = torch.rand(4, 1, 8, 8)
    seen = []
    enc.trunk[0].register_forward_pre_hook(lambda m, args: seen.append(torch.equal(args[0], x)))
    vfa.vfagan_step(enc, refiner, disc, opts[1], opts[2], x, torch.tensor([0, 1, 2, 0]),
                    settings=vfa.VFASettings(num_classes=3), latent_dim=4,
                    opt_e=opts[0] if joint else None, perceptual_weight=0.5)
    assert sum(seen) == 1, seen


def test_channels_last_networks_give_the_contiguous_vfagan_step():
    """models.to_device builds channels_last networks on a CPU (docs/choices.md section 14);
    one VFA-GAN step (joint) gives the contiguous networks' losses within fp32 rounding."""
    import copy
    enc = tiny_encoder(num_classes=3)
    refiner, disc = models.FAGenerator(1, 8, 3), models.Discriminator(TINY)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    logs = []
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.preserve_format
        nets = [copy.deepcopy(m).to(memory_format=fmt) for m in (enc, refiner, disc)]
        conv = nets[1].net[3].weight  # (8, 8, 3, 3): the two formats differ
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in nets]
        logs.append(vfa.vfagan_step(nets[0], nets[1], nets[2], opts[1], opts[2], x, y,
                                    settings=vfa.VFASettings(num_classes=3), latent_dim=4,
                                    opt_e=opts[0], generator=torch.Generator().manual_seed(0)))
    assert models.to_device(models.FAGenerator(1, 8, 3), "cpu").net[3].weight.is_contiguous(
        memory_format=torch.channels_last)
    assert logs[0].keys() == logs[1].keys()
    for k in logs[0]:
        assert logs[1][k] == pytest.approx(logs[0][k], rel=1e-4, abs=1e-6), k


class _SyncCounter:
    """Counts the host reads of tensor values (each a device sync on a GPU): tolist, item,
    bool, float, int, by the calling function's name."""

    NAMES = ("tolist", "item", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def wrapped(t, *a, _original=original, _name=name, **k):
                self.calls.append(_name)
                return _original(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, wrapped)


def test_a_training_step_reads_the_device_once_per_update(monkeypatch):
    """FA and VFA steps: one host read (values, the images' and the labels' ranges
    together); the joint VFA-GAN step: one per network updated (encoder, D, G)."""
    from fa_utils import fa, train
    enc = tiny_encoder(num_classes=3)
    fa_enc = models.Encoder(TINY, {"z": 4})
    refiner, disc = models.FAGenerator(1, 8, 3), models.Discriminator(TINY)
    opts = [train.make_adam(m.parameters(), lr=1e-3) for m in (enc, fa_enc, refiner, disc)]
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    settings = vfa.VFASettings(num_classes=3)
    counter = _SyncCounter(monkeypatch)
    fa.fa_step(fa_enc, opts[1], x)
    assert counter.calls == ["tolist"]
    counter.calls.clear()
    vfa.vfa_step(enc, opts[0], x, y, settings=settings)
    assert counter.calls == ["tolist"]
    counter.calls.clear()
    vfa.vfagan_step(enc, refiner, disc, opts[2], opts[3], x, y, settings=settings,
                    latent_dim=4, opt_e=opts[0])
    assert counter.calls == ["tolist"] * 3


@pytest.mark.parametrize("bad", [[0, 1, 3, 0], [0, -1, 2, 0]])
def test_vfa_step_refuses_labels_out_of_range_before_the_update(bad):
    enc = tiny_encoder(num_classes=3)
    opt = torch.optim.Adam(enc.parameters(), 1e-3)
    before = [p.detach().clone() for p in enc.parameters()]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        vfa.vfa_step(enc, opt, torch.rand(4, 1, 8, 8), torch.tensor(bad),
                     settings=vfa.VFASettings(num_classes=3))
    assert all(torch.equal(a, b) for a, b in zip(before, enc.parameters()))
