"""Local feature alignment (Section 3.5, Algorithms 2-3) and the memory measurement."""
import math

import pytest
import torch

from fa_utils import config, local, metrics
from fa_utils.config import ConfigError
from fa_utils.models import Architecture
from notebook_code import local_fa

TINY = Architecture(1, 8, (4,), 32)  # conv(4) s1, conv(4) s2, Linear(32), Linear(Z)


@pytest.fixture(autouse=True)
def single_thread():
    # tiny tensors: a second intra-op thread only adds synchronisation (and on a busy CPU a lot)
    with metrics.one_thread():
        yield


def structured_images(n, generator):
    """Images on a 5-dimensional family: mixtures of fixed random prototypes, in [0, 1]."""
    protos = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(123))
    c = torch.rand(n, 5, generator=generator)
    return (torch.einsum("nk,kchw->nchw", c, protos) / 2.5).clamp(0, 1)


def test_network_follows_the_table_shapes_with_arcsinh():
    net = local.make_local_net("mnist", 128)
    ops = [b.op for b in net.blocks]
    assert [b.activation for b in net.blocks] == [True] * 5 + [False]  # none after Linear(Z)
    assert [o.out_channels for o in ops[:4]] == [32, 32, 64, 64]
    assert [o.stride for o in ops[:4]] == [(1, 1), (2, 2), (1, 1), (2, 2)]
    assert ops[4][1].in_features == 64 * 7 * 7 and ops[4][1].out_features == 4096
    assert ops[5].out_features == 128
    x = torch.rand(2, 1, 28, 28)
    feats = net.features(x)
    assert [tuple(f.shape[1:]) for f in feats[:-1]] == [tuple(s) for s in net.input_shapes]
    assert feats[-1].shape == (2, 128)
    torch.testing.assert_close(feats[2], torch.asinh(ops[1](feats[1])))


def test_spectral_init_puts_every_layer_at_operator_norm_one():
    torch.manual_seed(0)  # the power iteration starts from a random vector
    net = local.make_local_net(TINY, 6)
    for block, shape in zip(net.blocks, net.input_shapes):
        assert local.operator_norm(block.op, shape, iters=300) == pytest.approx(1.0, abs=0.02)
    # why it is needed: an orthogonal 3x3 kernel from 1 channel to 16 (K^T K = I_9) gives
    # W^T W = 9 I away from the border (each pixel sits in 9 patches): norm 3, not 1
    conv = torch.nn.Conv2d(1, 16, 3, 1, 1)
    torch.nn.init.orthogonal_(conv.weight)
    assert 2.8 < local.operator_norm(conv, (1, 16, 16), iters=300) <= 3.0 + 1e-4


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_a_local_step_changes_only_its_own_layer(layer):
    torch.manual_seed(0)
    net = local.make_local_net(TINY, 6)
    opts = local.make_optimizers(net, 1e-2)
    x_l = net.features(torch.rand(16, 1, 8, 8))[layer]
    before = [[p.detach().clone() for p in b.parameters()] for b in net.blocks]
    with torch.no_grad():
        expected = net.blocks[layer](x_l)
    x_next, c = local.local_layer_step(net.blocks[layer], opts[layer], x_l)
    for i, block in enumerate(net.blocks):
        same = [torch.equal(p, q) for p, q in zip(block.parameters(), before[i])]
        if i == layer:
            assert not all(same), "the layer's own weights did not move"
        else:
            assert all(same), f"layer {i} changed during layer {layer}'s step"
            assert all(p.grad is None for p in block.parameters())
    assert not x_next.requires_grad and math.isfinite(c)
    # x_{l+1} is the layer's output *before* its update (Algorithm 2, line 14)
    torch.testing.assert_close(x_next, expected, rtol=0, atol=0)


def test_the_layer_loss_reaches_no_other_layer_and_not_the_input():
    net = local.make_local_net(TINY, 6)
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    loss, _, _ = local.local_layer_loss(net.blocks[0], x)
    loss.backward()
    assert x.grad is None  # the input is detached from the layers below
    assert net.blocks[0].op.weight.grad.abs().sum() > 0
    assert all(p.grad is None for b in net.blocks[1:] for p in b.parameters())


def test_one_step_from_zero_is_the_tied_linear_autoencoder():
    # default (align_activation=False), r_0 = 0, T = 1: r_hat = W^T W x, the bias cancels
    torch.manual_seed(1)
    block = local.LocalBlock(torch.nn.Linear(5, 3), True)
    x = torch.randn(7, 5)
    _, _, r = local.local_layer_loss(block, x)
    W = block.op.weight.detach()
    torch.testing.assert_close(r, x @ W.T @ W, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op, shape", [
    (torch.nn.Conv2d(3, 5, 3, 1, 1), (3, 7, 7)),
    (torch.nn.Conv2d(3, 5, 3, 2, 1), (3, 7, 7)),  # odd size: needs output padding 0
    (torch.nn.Conv2d(3, 5, 3, 2, 1), (3, 8, 8)),  # even size: output padding 1
    (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)), (3, 2, 2)),
    (torch.nn.Linear(6, 4), (6,)),
])
def test_the_shared_first_step_equals_b_starts_and_has_the_same_gradients(op, shape):
    torch.manual_seed(0)
    block = local.LocalBlock(op, True)
    x = torch.randn(4, *shape)
    grads = []
    for shared in (True, False):
        block.zero_grad(set_to_none=True)
        loss, _, r = local.local_layer_loss(block, x, tau=0.7, shared_start=shared)
        loss.backward()
        grads.append([p.grad.clone() for p in block.parameters()])
        rs = r if shared else rs
        torch.testing.assert_close(r, rs, rtol=1e-5, atol=1e-6)
    names = [n for n, _ in block.named_parameters()]
    for name, g_fast, g_align in zip(names, *grads):
        if name.endswith("bias"):  # cancels out of the inner step: zero up to rounding
            assert g_fast.abs().max() < 1e-5 and g_align.abs().max() < 1e-5, (g_fast, g_align)
        else:
            torch.testing.assert_close(g_fast, g_align, rtol=1e-4, atol=1e-6)
    two = [local.local_layer_loss(block, x, T=2, shared_start=shared)[2] for shared in (True, False)]
    torch.testing.assert_close(*two, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shared_start=True"):
        local.local_layer_loss(block, x, r_init="uniform", shared_start=True)


def test_sinh_after_asinh_is_the_identity():
    h = torch.linspace(-30, 30, 6001, dtype=torch.float64)
    torch.testing.assert_close(torch.sinh(torch.asinh(h)), h, rtol=1e-12, atol=1e-12)
    h32 = h.float()
    torch.testing.assert_close(torch.sinh(torch.asinh(h32)), h32, rtol=1e-5, atol=1e-5)
    # so one layer of Algorithm 3 inverts an asinh layer with an orthogonal square weight
    block = local.LocalBlock(torch.nn.Linear(6, 6), True)
    torch.nn.init.orthogonal_(block.op.weight)
    x = torch.randn(5, 6)
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(local.invert_block(block, out, (6,)), x, rtol=1e-4, atol=1e-5)
    # aligning through the arcsinh instead (the other reading) is not exact in one step
    other = local.invert_block(block, out, (6,), align_activation=True)
    assert (other - x).abs().max() > 1e-3


def test_algorithm3_from_a_trained_tiny_net_beats_the_mean_image():
    g = torch.Generator().manual_seed(0)
    train, test = structured_images(2048, g), structured_images(256, g)
    torch.manual_seed(0)
    net = local.make_local_net(TINY, 16, bias=False)  # the training default (align op_l)
    opts = local.make_optimizers(net, 3e-3)
    before = metrics.mse_per_pixel(test, local.local_recover(net, test))
    for _ in range(300):
        stats = local.local_step(net, opts, train[torch.randint(0, 2048, (64,), generator=g)])
    assert all(math.isfinite(v) for v in stats.values())
    after = metrics.mse_per_pixel(test, local.local_recover(net, test))
    mean = metrics.mean_image_mse(train, test)
    assert after < 0.5 * mean, (after, mean)
    assert after < 0.1 * before, (after, before)


def test_memory_ranks_local_below_global_on_a_small_architecture():
    notebook = local_fa()  # the memory measure and table's rows live in notebook 05
    arch = Architecture(1, 12, (4, 8), 64)
    g = notebook.measure_step_memory(arch, "global", batch=4, latent_dim=8)
    l = notebook.measure_step_memory(arch, "local", batch=4, latent_dim=8)
    assert 0 < l.saved_peak_bytes < g.saved_peak_bytes, (l, g)
    # the same ranking when both go through fa.align (no shared-start first step)
    g2 = notebook.measure_step_memory(arch, "global", batch=4, latent_dim=8, shared_start=False)
    l2 = notebook.measure_step_memory(arch, "local", batch=4, latent_dim=8, shared_start=False)
    assert 0 < l2.saved_peak_bytes < g2.saved_peak_bytes, (l2, g2)
    assert l.saved_peak_bytes < l2.saved_peak_bytes  # the zeros of r_0 are not saved
    assert l.saved_peak_bytes < 0.6 * g.saved_peak_bytes, (l.saved_peak_bytes, g.saved_peak_bytes)
    # global FA's peak holds every layer's activations at once: at least the input-sized
    # tensors of the first layers, which local FA frees before the next layer
    assert g.saved_peak_bytes >= 4 * (4 * 12 * 12 + 4 * 6 * 6) * 4
    rows = notebook.memory_rows([("tiny", g, l)])
    assert len(rows[0]) == len(notebook.MEMORY_COLUMNS)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="'global' or 'local'"):
        local_fa().measure_step_memory(TINY, "both", batch=2)


@pytest.mark.parametrize("profile", config.PROFILES)
def test_local_config_profiles_build_and_round_trip(profile):
    cfg = config.make_config("local", profile)
    assert config.SECTIONS["local"](**config.to_dict(cfg)) == cfg
    assert cfg.memory_batch == (8 if profile == "smoke" else 128)
    if profile == "paper":
        assert cfg.lr == 1e-5 and set(cfg.datasets) == set(config.DATASET_NAMES)


def test_local_config_refuses_unknown_datasets():
    with pytest.raises(ConfigError, match="datasets"):
        config.make_config("local", "smoke", datasets=("mnist", "imagenet"))
