"""The FA core (Section 3.1, Eq. 1-2, Algorithm 1)."""
import pytest
import torch
from torch.func import functional_call

from fa_utils import fa, models
from fa_utils.fa import fa_loss


def tiny_encoder(dtype=torch.float32, z=3):
    torch.manual_seed(0)
    enc = models.Encoder(models.Architecture(1, 6, (2,), 8), {"z": z})
    models.init_orthogonal_(enc)
    return enc.to(dtype)


def test_one_example_is_the_same_alone_and_in_a_batch_of_128():
    # pins the reduction: a batch mean would divide each example's step by 128
    torch.manual_seed(0)
    enc = models.Encoder(models.architecture("mnist"), {"z": 16})  # Table 7, default init
    x = torch.rand(128, 1, 28, 28)
    batch = fa.reconstruct(enc, x).image
    alone = fa.reconstruct(enc, x[:1]).image
    scale = alone.abs().max().item()
    assert scale > 0  # the step does something
    torch.testing.assert_close(batch[:1], alone, rtol=1e-4, atol=1e-4 * scale)


def test_linear_encoder_one_step_from_zero_is_the_transpose():
    # E(r) = W r + b, r_0 = 0, T = 1, tau = 1  =>  r_1 = W^T (z - b), exactly
    torch.manual_seed(1)
    W = torch.randn(5, 12, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    z = torch.randn(7, 5, dtype=torch.float64)
    encode = lambda r: r @ W.T + b  # noqa: E731
    r1 = fa.align(encode, z, torch.zeros(7, 12, dtype=torch.float64), T=1, tau=1.0,
                  create_graph=False).r
    torch.testing.assert_close(r1, (z - b) @ W, rtol=0, atol=1e-12)


def test_reconstruction_loss_reaches_the_encoder_only_with_create_graph():
    enc = tiny_encoder()
    x = torch.rand(4, 1, 6, 6)
    loss, _ = fa_loss(enc, x)
    loss.backward()
    grads = [p.grad for p in enc.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    res = fa.reconstruct(enc, x, create_graph=False)
    assert not res.image.requires_grad
    assert not fa.reconstruction_loss(x, res.image).requires_grad  # no path to the weights


def test_inner_energy_decreases_over_steps():
    torch.manual_seed(0)
    mlp = models.init_orthogonal_(torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(36, 16), torch.nn.LeakyReLU(0.01), torch.nn.Linear(16, 6)))
    x = torch.rand(8, 1, 6, 6)
    res = fa.align(mlp, mlp(x), torch.zeros_like(x), T=20, tau=0.3, create_graph=False,
                   track_energy=True, track_trajectory=True)
    e = torch.stack(res.energies)  # (T + 1, B)
    assert e.shape == (21, 8) and len(res.trajectory) == 21
    assert torch.all(e[1:] <= e[:-1] + 1e-7), e
    assert torch.all(e[-1] < 0.5 * e[0])


def test_second_order_gradients_are_correct_in_float64():
    enc = tiny_encoder(torch.float64)
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        z = enc(x)["z"]
    energy = lambda r: fa.inner_energy(z, enc(r)["z"])  # noqa: E731
    r = torch.rand(3, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(energy, (r,))
    # and the real thing: the FA loss as a function of a weight, through the inner gradient
    params = {k: v.detach() for k, v in enc.named_parameters()}
    name = "trunk.0.weight"

    def loss_of(w):
        p = dict(params, **{name: w})
        f = lambda inp: functional_call(enc, p, (inp,))["z"]  # noqa: E731
        r1 = fa.align(f, f(x), torch.zeros_like(x), create_graph=True).r
        return fa.reconstruction_loss(x, r1)

    w = params[name].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss_of, (w,))


def test_the_frozen_start_is_the_transposed_jacobian_decoder():
    """r_1 from r_0 = 0 with T = tau = 1 is J_E(0)^T (z - E(0)) (docs/method.md section 1):
    the frozen start's transpose against Eq. 2 by autograd from B copies of r_0, and its
    atoms J_E(0)^T e_k against torch.autograd's Jacobian of E at 0."""
    enc = tiny_encoder(z=4)
    x = torch.rand(5, 1, 6, 6)
    with torch.no_grad():
        z = enc(x)["z"]
    r_align = fa.decode_latent(enc, z, (1, 6, 6), shared_start=False).r
    start = fa.frozen_start(enc, (1, 6, 6))
    torch.testing.assert_close(start.transpose(z - start.e0), r_align, rtol=1e-5, atol=1e-6)
    jac = torch.autograd.functional.jacobian(lambda r: enc(r)["z"], torch.zeros(1, 1, 6, 6))
    torch.testing.assert_close(start.transpose(torch.eye(4)), jac.reshape(4, 1, 6, 6),
                               rtol=1e-5, atol=1e-6)


def test_init_r_and_squash():
    g = torch.Generator().manual_seed(0)
    assert torch.all(fa.init_r((2, 3), "zeros") == 0)
    u = fa.init_r((1000,), "uniform", generator=g, low=-1, high=1)
    assert u.min() >= -1 and u.max() <= 1 and u.std() > 0.5
    n = fa.init_r((1000,), "normal", generator=g)
    assert abs(float(n.mean())) < 0.15 and abs(float(n.std()) - 1) < 0.1
    assert torch.equal(fa.init_r((4,), "normal", generator=torch.Generator().manual_seed(3)),
                       fa.init_r((4,), "normal", generator=torch.Generator().manual_seed(3)))
    assert torch.allclose(fa.apply_squash(torch.zeros(2), "sigmoid"), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="r_init 'gauss'"):
        fa.init_r((2,), "gauss")
    with pytest.raises(ValueError, match="squash 'tanh'"):
        fa.apply_squash(torch.zeros(2), "tanh")


def test_bad_arguments_fail_early():
    enc = tiny_encoder()
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(ValueError, match="T must be >= 1"):
        fa.reconstruct(enc, x, T=0)
    with pytest.raises(ValueError, match="tau must be > 0"):
        fa.reconstruct(enc, x, tau=0)
    with pytest.raises(KeyError, match="no head 'mu'"):
        fa.reconstruct(enc, x, head="mu")
    with pytest.raises(ValueError, match="latent shapes differ"):
        fa.inner_energy(torch.zeros(2, 3), torch.zeros(2, 4))
