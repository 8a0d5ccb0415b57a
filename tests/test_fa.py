"""The FA core (Section 3.1, Eq. 1-2, Algorithm 1)."""
import pytest
import torch
from torch.func import functional_call

from fa_utils import fa, models
from fa_utils.fa import fa_loss
from notebook_code import cell_namespace


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


# --------------------------------------------------------------------------------------
# Every decode / reconstruct / sample entry point under no_grad and inference_mode
# --------------------------------------------------------------------------------------

def _entry_points(T, start, side):
    """name -> a call returning the decoded tensor, for every decoding entry point."""
    from fa_utils import baselines, local, vfa
    torch.manual_seed(0)
    arch = models.Architecture(1, 6, (2,), 8)
    enc, x, z = tiny_encoder(), torch.rand(3, 1, 6, 6), torch.randn(3, 3)
    zeros = start != "uniform"
    opts = {"shared": {}, "textbook": {"shared_start": False},
            "uniform": {"r_init": "uniform"}}[start]
    settings = vfa.VFASettings(T=T, rand_side=side, num_classes=2,
                               r_init="zeros" if zeros else "uniform")
    venc = models.Encoder(arch, vfa.vfa_heads(4, 2))
    net = local.make_local_net(arch, 4, spectral_init=False)
    gen = torch.nn.Sequential(torch.nn.Linear(3, 36), torch.nn.Unflatten(1, (1, 6, 6)))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    emphasis = cell_namespace("03_vfa", "vfa-class-emphasis").class_emphasis
    return {
        "fa.align": lambda: fa.align(fa.head_encoder(enc, "z"), enc(x)["z"], torch.zeros_like(x), T=T,
                                     create_graph=False).image,
        "fa.decode_latent": lambda: fa.decode_latent(enc, z, (1, 6, 6), T=T, generator=g(),
                                                     **opts).image,
        "fa.frozen_start": lambda: fa.decode_latent(enc, z, (1, 6, 6), T=T,
                                                    start=fa.frozen_start(enc, (1, 6, 6))).image,
        "fa.reconstruct": lambda: fa.reconstruct(enc, x, T=T, generator=g(), **opts).image,
        "vfa.decode": lambda: vfa.decode(venc, z[:, :2].repeat(1, 2), (1, 6, 6),
                                         settings=settings, labels=torch.tensor([0, 1, 1]),
                                         generator=g()),
        "vfa.sample": lambda: vfa.sample(venc, 3, (1, 6, 6), settings=settings, latent_dim=4,
                                         generator=g())[0],
        "vfa.reconstruct": lambda: vfa.reconstruct(venc, x, settings=settings),
        "vfa.interpolation_grid": lambda: vfa.interpolation_grid(venc, x[[0, 1, 2, 0]], 2,
                                                                 settings=settings),
        "vfa.class_emphasis (notebook 03)": lambda: emphasis(
            venc, z[0, :2].repeat(2), (1, 6, 6), [1.0], settings=settings)[0],
        "local.local_recover": lambda: local.local_recover(net, x, T=T, **opts),
        "local.operator_norm": lambda: torch.tensor(local.operator_norm(net.blocks[0].op,
                                                                        (1, 6, 6), generator=g())),
        "baselines.gan_reconstruct": lambda: baselines.gan_reconstruct(gen, x, latent_dim=3,
                                                                       steps=2)[0],
    }


def _applies(name, T, start, side):
    """Whether T, the start and the random side are arguments of this entry point."""
    if name.startswith("vfa."):  # no shared_start argument: zeros (shared) or uniform
        return start != "textbook"
    if name in ("local.operator_norm", "baselines.gan_reconstruct"):
        return (T, start, side) == (1, "shared", "mu")
    return side == "mu" and (start == "shared" or name not in ("fa.align", "fa.frozen_start"))


_CASES = [(name, T, start, side)
          for T in (1, 2) for start in ("shared", "textbook", "uniform")
          for side in ("mu", "mu+sigma")
          for name in _entry_points(1, "shared", "mu") if _applies(name, T, start, side)]


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("name,T,start,side", _CASES)
def test_every_decoder_works_under_no_grad_and_inference_mode(mode, name, T, start, side):
    # the inner optimisation enables autograd inside, on fresh tensors, whatever the caller
    call = _entry_points(T, start, side)[name]
    torch.manual_seed(2)  # the same random starts where no generator is taken
    expected = call()
    torch.manual_seed(2)
    with mode():
        got = call()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_training_inside_inference_mode_is_refused_with_what_to_do():
    enc = tiny_encoder()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside it"):
        fa_loss(enc, torch.rand(2, 1, 6, 6))


def test_a_network_created_under_inference_mode_is_refused_with_what_to_do():
    from fa_utils import baselines

    with torch.inference_mode():
        enc = tiny_encoder()
        gen = torch.nn.Linear(3, 4)
        for call in (lambda: fa.decode_latent(enc, torch.randn(2, 3), (1, 6, 6), T=2),
                     lambda: baselines.gan_reconstruct(gen, torch.rand(2, 4), latent_dim=3)):
            with pytest.raises(RuntimeError, match="create or load the network outside"):
                call()


def test_check_batch_names_what_is_wrong_with_images():
    fa.check_batch(torch.rand(2, 3, 8, 8))
    fa.check_batch(torch.zeros(0, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[-1, 1\]; this project's images are in \[0, 1\]"):
        fa.check_batch(torch.linspace(-1, 1, 16).view(1, 1, 4, 4))
    with pytest.raises(ValueError, match="1.5"):
        fa.check_batch(torch.full((1, 1, 2, 2), 1.5), name="x")
    with pytest.raises(ValueError, match="nan"):
        fa.check_batch(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="4 dims"):
        fa.check_batch(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        fa.check_batch(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
