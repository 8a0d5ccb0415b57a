import math

import pytest
import torch

from fa_utils import models
from notebook_code import toy


def test_mnist_vfa_encoder_has_table3_size():
    # Table 3: VFA on MNIST has 14.0 M parameters: Table 7's encoder with Z = 128,
    # mu and logvar heads and a 10-class head.
    enc = models.make_encoder("mnist", {"mu": 128, "logvar": 128, "logits": 10})
    n = models.count_parameters(enc)
    assert n == 14_003_946
    assert abs(n / 14.0e6 - 1) < 0.01


@pytest.mark.parametrize("dataset", list(models.ARCHITECTURES))
def test_every_network_has_the_right_shapes_and_gradients(dataset):
    arch = models.architecture(dataset)
    x = torch.rand(2, arch.channels, arch.size, arch.size)
    enc = models.Encoder(arch, {"mu": 8, "logvar": 8})  # default init: orthogonal QR of
    out = enc(x)  # 4096 x 4096 matrices is slow and tested on its own below
    assert set(out) == {"mu", "logvar"} and out["mu"].shape == (2, 8)
    disc = models.Discriminator(arch)
    assert disc(x).shape == (2,)
    gen = models.FAGenerator(arch.channels)
    assert gen(x).shape == x.shape
    g = models.GANGenerator(arch, 8)
    z = torch.randn(2, 8)
    img = g(z)
    assert img.shape == x.shape and img.min() >= 0 and img.max() <= 1
    dec = models.MirroredDecoder(arch, 8)
    assert dec(z).shape == x.shape
    for module, y in ((enc, out["mu"] + out["logvar"]), (disc, disc(x)), (gen, gen(x)), (g, img), (dec, dec(z))):
        module.zero_grad()
        y.sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0
                   for p in module.parameters() if p.dim() > 1), type(module).__name__


def test_table_shapes_of_the_trunks():
    assert models.architecture("mnist").flat_dim == 64 * 7 * 7
    assert models.architecture("cifar10").flat_dim == 128 * 4 * 4
    assert models.architecture("celeba").flat_dim == 256 * 4 * 4
    assert models.architecture("cifar10").hidden == 2048


def test_unknown_dataset_and_empty_heads():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        models.architecture("svhn")
    with pytest.raises(ValueError, match="at least one head"):
        models.make_encoder("mnist", {})


def test_orthogonal_init_and_clamp():
    lin = torch.nn.Linear(64, 16)
    bias = lin.bias.detach().clone()
    models.init_orthogonal_(lin)
    w = lin.weight
    assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-5)
    assert torch.equal(lin.bias, bias)  # biases keep PyTorch's default
    models.init_orthogonal_(lin, zero_bias=True)
    assert torch.all(lin.bias == 0)
    with torch.no_grad():
        lin.weight.mul_(10)
        lin.bias.fill_(5.0)
    models.clamp_weights_(lin)
    assert lin.weight.abs().max() <= math.sqrt(2) + 1e-7
    assert lin.weight.abs().max().item() == pytest.approx(math.sqrt(2))
    assert torch.all(lin.bias == 5.0)  # biases are not clamped (authors' code)


def test_toy_mlp():
    toy_mlp = toy().ToyMLP  # notebook 01's (Section 3.2)
    net = toy_mlp(hidden=16, out=2)
    assert net(torch.zeros(5, 1)).shape == (5, 2)
    assert models.count_parameters(toy_mlp(1024, 2)) == 2 * 1024 + 1024 * 1024 + 1024 + 1024 * 2 + 2


def test_scaled_architectures_narrow_inside_the_block_only_and_never_compound():
    paper = models.architecture("celeba")
    with models.scaled_architectures(0.25):
        small = models.architecture("celeba")
        assert small.widths == (8, 16, 32, 64) and small.hidden == 1024
        assert (small.channels, small.size) == (paper.channels, paper.size)
        with models.scaled_architectures(0.5):  # nested: half of the paper's, not of 0.25
            assert models.architecture("celeba").widths == (16, 32, 64, 128)
        assert models.architecture("celeba") == small
        n_small = models.count_parameters(models.make_encoder("celeba", {"z": 128}))
    assert models.architecture("celeba") is paper and models.ARCHITECTURES["celeba"] is paper
    assert n_small < 0.1 * models.count_parameters(models.make_encoder("celeba", {"z": 128}))
    with pytest.raises(TypeError):
        models.ARCHITECTURES["celeba"] = small  # read-only: nothing can change the paper's table
    with pytest.raises(ValueError, match="scale"):
        with models.scaled_architectures(0):
            pass


def test_paper_sizes_are_counted_at_full_width_inside_a_scaled_block():
    from fa_utils import baselines
    full = baselines.parameter_counts("mnist")
    with models.scaled_architectures(0.25):
        assert baselines.parameter_counts("mnist") == full
