"""JupyterLab explorers of the method (ipywidgets; headless, a static PNG): controls
(``fa-control-<name>``), PNG(s) and a status line in a ``VBox`` (``fa-explorer-<kind>``)."""
from __future__ import annotations

import html
import io
import math
import os

import ipywidgets as w
import torch
from ipyevents import Event
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import fa, local, outputs, vfa
from .metrics import Stopwatch, one_thread
from .plotting import show_images

HEADLESS_ENV = "FA_HEADLESS"  # 1: static figures (set by the runner and the tests)
MAX_ONEHOT_VALUE = 12.0       # the end of the conditional sampler's one-hot slider


class Explorer:
    """A subclass adds controls (:meth:`control`) and draws its state (``draw(fig)`` -> status)."""

    kind, figsize = "base", (9.0, 3.0)
    # fixed subplot margins in inches, no layout engine (docs/choices.md section 11)
    top_in, bottom_in, left_in, wspace = 0.3, 0.1, 0.15, 0.25

    def __init__(self):
        self.renders, self.error, self.controls, self._hold, self._widget = 0, None, {}, False, None
        self._image = w.Image(format="png").add_class("fa-explorer-image")
        self._status = w.HTML().add_class("fa-explorer-status")  # a Label cuts a long status

    def control(self, name, widget, observe=True):
        """Add control ``name``, its description shown in full; a change redraws if ``observe``."""
        if getattr(widget, "description", "") and hasattr(widget.style, "description_width"):
            widget.style.description_width = "initial"
        if observe:  # a redraw, unless set() holds it
            widget.observe(lambda _: None if self._hold else self.update(), names="value")
        self.controls[name] = widget.add_class(f"fa-control-{name}")
        return widget

    def value(self, name):
        return self.controls[name].value

    @property
    def widget(self):
        """The ``VBox`` (controls, picture, status), built and drawn on first access."""
        if self._widget is None:
            self._image.layout.width = f"{int(self.figsize[0] * 80)}px"
            controls = w.HBox(list(self.controls.values()), layout=w.Layout(flex_flow="row wrap"))
            self._widget = w.VBox([controls, self._image, self._status])
            self._widget.add_class("fa-explorer").add_class(f"fa-explorer-{self.kind}")
            self.update()
        return self._widget

    def set(self, **values) -> None:
        """Set several controls, then redraw once. Raises KeyError: an unknown control."""
        if unknown := sorted(set(values) - set(self.controls)):
            raise KeyError(f"unknown control(s) {unknown}; known: {sorted(self.controls)}")
        self._hold = True
        try:
            for name, v in values.items():
                self.controls[name].value = v
        finally:
            self._hold = False
        self.update()

    def _new_figure(self):
        width, height = self.figsize
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(left=self.left_in / width, right=1 - 0.15 / width,
                            wspace=self.wspace, bottom=self.bottom_in / height,
                            top=1 - self.top_in / height)
        return fig

    def picture(self):
        """(PNG bytes at 80 dpi, status): the current state drawn on one thread."""
        with one_thread():
            fig, buf = self._new_figure(), io.BytesIO()
            status = self.draw(fig)
            fig.savefig(buf, format="png", dpi=80)
        return buf.getvalue(), status

    def update(self) -> None:
        """Redraw the widget (once built); an error goes to the status line and ``error``."""
        if self._widget is None:
            return
        with Stopwatch() as sw:
            try:
                self._image.value, status = self.picture()
                self.error = None
            except Exception as exc:  # noqa: BLE001 - shown to the user, kept in .error
                status = self.error = f"error: {type(exc).__name__}: {exc}"
        self.renders += 1
        text = html.escape(f"{status}  |  render {self.renders}, {1e3 * sw.seconds:.0f} ms")
        self._status.value = text.replace("WARNING", '<b style="color:#c00000">WARNING</b>')


def check_interactive(interactive):
    """A notebook's ``interactive`` parameter: None, True or False. Raises TypeError otherwise."""
    if interactive is not None and not isinstance(interactive, bool):
        raise TypeError(f"interactive must be None, True or False, got {interactive!r}; "
                        f"from the runner: -p interactive False")
    return interactive


def check_onehot_value(value) -> float:
    """``value`` as a float in 0..MAX_ONEHOT_VALUE. Raises TypeError, ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"onehot_value must be a number, got {value!r}")
    if not 0 <= value <= MAX_ONEHOT_VALUE:
        raise ValueError(f"onehot_value (the one-hot value) must be in 0..{MAX_ONEHOT_VALUE:g} "
                         f"(training used 1), got {value!r}")
    return float(value)


def show(explorer, interactive=None) -> None:
    """The widget, or a PNG of the default state and its status (``interactive`` False; None:
    ``FA_HEADLESS`` is 1, or unset outside a kernel). Raises TypeError: a bad argument."""
    from IPython import display
    if not isinstance(explorer, Explorer):
        raise TypeError(f"show() takes an Explorer, got {type(explorer).__name__}")
    if check_interactive(interactive) is None:
        flag = os.environ.get(HEADLESS_ENV, "").strip().lower()
        interactive = flag not in ("1", "true", "yes") if flag else outputs.in_jupyter_kernel()
    if interactive:
        display.display(explorer.widget)
        return
    png, status = explorer.picture()
    display.display(display.Image(data=png))
    print(f"{status}\n[a static figure: open the notebook in JupyterLab for the widgets]")


def _images(images, n=50):
    """The first ``n`` of (N, C, H, W) images, on the CPU. Raises ValueError otherwise."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    return images.detach().cpu()[:n]


class InnerOptimisation(Explorer):
    """Eq. 2's r_0 ... r_T towards E(x)[head] and Eq. 1's energy, for ``images`` (N, C, H, W)
    in [0, 1]. Raises ValueError: T outside 1..MAX_T, an unknown squash."""

    kind, figsize, bottom_in, wspace, MAX_T = "inner", (10.0, 2.8), 0.5, 0.4, 20
    DIVERGENCE_NOTE = ("the step diverges: it contracts only while tau x the largest eigenvalue "
                       "of J^T J is < 2 (Appendix 7.1, one weight w: 0 < tau w^2 < 2)")

    def __init__(self, encoder, images, *, head="z", T=4, tau=1.0, r_init="zeros",
                 squash="none", seed=0):
        super().__init__()
        self.encoder, self.head, self.squash, self.seed = encoder, head, squash, seed
        self.images, self._cache = _images(images), {}
        fa.apply_squash(torch.zeros(0), squash)  # raises on an unknown squash
        if not 1 <= T <= self.MAX_T:
            raise ValueError(f"T must be in 1..{self.MAX_T}, got {T}")
        self.control("image", w.IntSlider(0, 0, len(self.images) - 1, description="image"))
        t_slider = w.IntSlider(T, 1, self.MAX_T, description="T")
        t_slider.observe(self._on_T, names="value")  # before the redraw that control() adds
        self.control("T", t_slider)
        self.control("tau", w.FloatLogSlider(tau, base=10, min=-2, max=1, step=0.05,
                                             description="tau"))
        self.control("r_init", w.Dropdown(options=fa.R_INITS, value=r_init, description="r_0"))
        self.control("step", w.IntSlider(T, 0, T, description="step"))

    def _on_T(self, change):
        """The step slider ends at the new T and moves there, without a redraw of its own."""
        hold, self._hold, step = self._hold, True, self.controls["step"]
        step.max = step.value = change["new"]
        self._hold = hold

    def trajectory(self):
        """(r_0..r_T, each (C, H, W); Eq. 1's inner energies), kept while only the step moves."""
        key = (self.value("image"), self.value("T"), round(self.value("tau"), 6),
               self.value("r_init"))
        if key not in self._cache:
            i, T, tau, r_init = key
            device = next(self.encoder.parameters()).device
            g = torch.Generator(device=device).manual_seed(self.seed)
            # Eq. 2: r_{t+1} = r_t - tau grad_r 1/2 ||E(x) - E(r_t)||^2, t = 0..T-1
            res = fa.reconstruct(self.encoder, self.images[i:i + 1].to(device), head=self.head,
                                 T=T, tau=tau, r_init=r_init, generator=g, track_energy=True,
                                 track_trajectory=True)
            self._cache = {key: ([r[0].cpu() for r in res.trajectory],
                                 [float(e[0]) for e in res.energies])}
        return self._cache[key]

    @staticmethod
    def energy_grows(energies, rel=1e-4):
        """The first step whose energy rose by more than ``rel`` relatively, or None."""
        return next((t for t in range(1, len(energies))
                     if energies[t] > energies[t - 1] * (1 + rel) + 1e-12), None)

    def draw(self, fig):
        traj, energies = self.trajectory()
        t, grew = min(self.value("step"), len(traj) - 1), self.energy_grows(energies)
        x, r_t = self.images[self.value("image")], fa.apply_squash(traj[t], self.squash)
        images, ax = fig.subplots(1, 2, width_ratios=[3, 2.6])
        show_images(images, torch.stack([x, fa.apply_squash(traj[0], self.squash), r_t]),
                    title=f"x (target E(x)), r_0 ({self.value('r_init')}), r_{t}")
        ax.plot(energies, "o-", ms=3, color="tab:blue" if grew is None else "tab:red")
        ax.plot([t], [energies[t]], "o", ms=8, color="black", mfc="none", mew=1.5)
        ax.set_yscale("log" if 0 < min(energies) <= max(energies) / 10 else "linear")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("inner step t", fontsize=8, labelpad=1)
        ax.set_ylabel("1/2 ||E(x) - E(r_t)||^2", fontsize=8, labelpad=2)
        ax.tick_params(labelsize=7)
        status = (f"T={self.value('T')}, tau={self.value('tau'):.3g}: step {t}, inner energy "
                  f"{energies[t]:.4g}, MSE(r_{t}, x) per pixel "
                  f"{float(((r_t - x) ** 2).mean()):.4f}")
        if grew is None:
            return status
        ax.text(0.02, 0.97, f"energy grows from step {grew}:\ntau too large, the step diverges",
                transform=ax.transAxes, ha="left", va="top", fontsize=7, color="tab:red")
        return f"{status}; WARNING energy grows from step {grew}: {self.DIVERGENCE_NOTE}"


class LatentSliders(Explorer):
    """z = z_start + sum_k a_k s_k v_k along the k leading principal axes v_k (std s_k) of the
    encoded ``images`` (N, C, H, W), a_k from sliders ``pc1``... Raises ValueError: bad ``k``."""

    kind, figsize = "latent-sliders", (4.6, 2.5)

    def __init__(self, encode, decode, images, *, k=6):
        super().__init__()
        self.images, self.decode = _images(images, None), decode
        self.latents = encode(self.images).detach().float().cpu()
        n, z_dim = self.latents.shape
        if not 1 <= k <= min(n - 1, z_dim):
            raise ValueError(f"k must be in 1..{min(n - 1, z_dim)} (images - 1, latent size), "
                             f"got {k}")
        self.mean = self.latents.mean(0)
        _, s, v = torch.linalg.svd(self.latents - self.mean, full_matrices=False)
        self.axes, self.stds = v[:k], s[:k] / math.sqrt(max(n - 1, 1))   # (k, Z), (k,)
        self.explained = float((s[:k] ** 2).sum() / (s ** 2).sum().clamp_min(1e-12))
        opts = [("mean latent", -1)] + [(f"held-out #{i}", i) for i in range(min(20, n))]
        self.control("start", w.Dropdown(options=opts, value=-1, description="start"))
        for i in range(k):
            self.control(f"pc{i + 1}", w.FloatSlider(0.0, min=-3, max=3, step=0.1,
                                                     description=f"axis {i + 1}"))
        self.control("reset", w.Button(description="reset sliders"), observe=False).on_click(
            lambda _: self.set(**{f"pc{i + 1}": 0.0 for i in range(k)}))

    def _moves(self):
        return [self.value(f"pc{j + 1}") for j in range(len(self.axes))]

    def latent(self):
        """(1, Z) the current latent."""
        i = self.value("start")
        return ((self.mean if i < 0 else self.latents[i])
                + (torch.tensor(self._moves()) * self.stds) @ self.axes)[None]

    def draw(self, fig):
        i, (a, b) = self.value("start"), fig.subplots(1, 2)
        start = self.images[i:i + 1] if i >= 0 else self.decode(self.mean[None])
        show_images(a, start, title=f"start: held-out #{i}" if i >= 0 else "start: mean latent")
        show_images(b, self.decode(self.latent()), title="decoded from the sliders")
        moved = ", ".join(f"{j + 1}:{v:+.1f}" for j, v in enumerate(self._moves()) if v != 0)
        return (f"{len(self.axes)} leading axes ({self.explained:.0%} of the latent variance); "
                f"moved (std): {moved or 'none'}")


class ConditionalSampling(Explorer):
    """Section 3.4's samples for the class target s x onehot(class), s opening at ``scale`` = 8
    (docs/method.md section 9). Raises ValueError: an unconditional VFA, a bad ``scale``."""

    kind, figsize = "conditional", (6.5, 2.9)

    def __init__(self, encoder, settings, latent_dim, shape, *, n=40, seed=0, scale=8.0,
                 class_names=None):
        super().__init__()
        if not settings.conditional:
            raise ValueError("ConditionalSampling needs a conditional VFA (settings.num_classes "
                             "> 0); train it with conditional=True")
        scale = check_onehot_value(scale)
        self.encoder, self.settings, self.latent_dim = encoder, settings, int(latent_dim)
        self.shape, self.n = tuple(shape), int(n)
        names = class_names or [f"class {i}" for i in range(settings.num_classes)]
        self.control("label", w.Dropdown(options=[(nm, i) for i, nm in enumerate(names)],
                                         value=0, description="class"))
        self.control("scale", w.FloatSlider(scale, min=0, max=MAX_ONEHOT_VALUE, step=0.25,
                                            description="one-hot value"))
        self.control("seed", w.IntText(seed, description="seed", layout=w.Layout(width="160px")))
        self.control("resample", w.Button(description="new samples"), observe=False).on_click(
            lambda _: self.resample())

    def resample(self) -> None:
        """A fresh grid: the next seed."""
        self.controls["seed"].value += 1

    def samples(self):
        """(n, C, H, W): :func:`fa_utils.vfa.sample` of the class at the one-hot value."""
        device = next(self.encoder.parameters()).device
        g = torch.Generator(device=device).manual_seed(int(self.value("seed")))
        labels = torch.full((self.n,), int(self.value("label")), dtype=torch.long, device=device)
        return vfa.sample(self.encoder, self.n, self.shape, settings=self.settings,
                          latent_dim=self.latent_dim, labels=labels,
                          scale=float(self.value("scale")), generator=g)[0]

    def draw(self, fig):
        show_images(fig.subplots(1, 1), self.samples(), nrow=10)
        return (f"{self.controls['label'].label}, one-hot value {self.value('scale'):g} (class "
                f"target s x onehot(class); training used {self.settings.class_scale:g}; a larger "
                f"s pulls harder towards the class, s = 0: none), seed {self.value('seed')}")


class Interpolation(Explorer):
    """(1 - t) z_a + t z_b decoded (Figure 8) in rows of ``per_row`` (docs/choices.md section 11);
    ``encode``/``decode`` as :func:`fa_utils.experiments.vfa_codec`; ``images`` (N, C, H, W)."""

    kind, per_row, min_image_px = "interpolation", 8, 64
    row_in, top_in, bottom_in, wspace = 0.95, 0.3, 0.08, 0.08  # row_in: one row, inches

    def __init__(self, encode, decode, images, *, steps=8):
        super().__init__()
        self.encode, self.decode, self.images = encode, decode, _images(images)
        n = len(self.images)
        self.control("a", w.IntSlider(0, 0, n - 1, description="image a"))
        self.control("b", w.IntSlider(min(1, n - 1), 0, n - 1, description="image b"))
        self.control("steps", w.IntSlider(steps, 2, 16, description="steps"))

    @property
    def figsize(self):  # 11 inches wide (880 px in the widget); one row per per_row steps
        rows = math.ceil(self.value("steps") / self.per_row)
        return 11.0, max(1.9, rows * self.row_in + self.top_in + self.bottom_in + 0.25)

    def path(self):
        """(steps, C, H, W) decoded along the line from z_a to z_b."""
        z = self.encode(self.images[[self.value("a"), self.value("b")]])
        t = torch.linspace(0, 1, self.value("steps"), device=z.device)[:, None]
        return self.decode((1 - t) * z[0] + t * z[1])

    def draw(self, fig):
        a, b, steps = self.value("a"), self.value("b"), self.value("steps")
        cols, rows = min(steps, self.per_row), math.ceil(steps / self.per_row)
        axes = fig.subplots(1, 3, width_ratios=[1, cols, 1], subplot_kw={"anchor": "N"})
        show_images(axes[0], self.images[a:a + 1], title=f"a: #{a}")
        title = "decoded along (1 - t) z_a + t z_b" + ", row by row" * (rows > 1)
        show_images(axes[1], self.path(), nrow=cols, title=title)
        show_images(axes[2], self.images[b:b + 1], title=f"b: #{b}")
        return f"interpolating held-out #{a} -> #{b} in {steps} steps"


class LocalLayers(Explorer):
    """Algorithm 3 layer by layer: the estimate after ``depth`` inverted layers beside the truth."""

    kind, figsize, bottom_in, wspace = "local", (10.0, 3.0), 0.5, 0.4

    def __init__(self, net, images, *, recon_kwargs=None, seed=0):
        super().__init__()
        self.net, self.seed, self.images = net, seed, _images(images)
        self.kw, self.L, self._cache = dict(recon_kwargs or {}), len(net.blocks), {}
        self.control("image", w.IntSlider(0, 0, len(self.images) - 1, description="image"))
        self.control("depth", w.IntSlider(self.L, 0, self.L, description="layers inverted"))

    def levels(self):
        """(true x_0..x_L, estimates r_0..r_L with r_L = x_L = z), one image, on the CPU."""
        i = self.value("image")
        if i not in self._cache:
            device = next(self.net.parameters()).device
            feats = self.net.features(self.images[i:i + 1].to(device))
            g = torch.Generator(device=device).manual_seed(self.seed)
            est = [feats[-1]]
            for block, shape in zip(reversed(self.net.blocks), reversed(self.net.input_shapes)):
                est.append(local.invert_block(block, est[-1], shape, generator=g, **self.kw))
            self._cache = {i: ([f[0].cpu() for f in feats], [e[0].cpu() for e in est[::-1]])}
        return self._cache[i]

    def draw(self, fig):
        truth, est = self.levels()
        depth, level = self.value("depth"), self.L - self.value("depth")  # x_level estimated
        errs = [float((e - t).norm() / t.norm().clamp_min(1e-12)) for t, e in zip(truth, est)]
        t = truth[level]
        lo, hi = float(t.min()), float(t.max())

        def tiles(h):  # (n, 1, h, w): the image, the first 8 channels, or the vector as a row
            if level == 0:
                return h[None]
            h = h if h.dim() == 3 else h.reshape(1, 1, -1)
            return (h[:8, None] - lo) / max(hi - lo, 1e-12)
        images, ax = fig.subplots(1, 2, width_ratios=[4, 2.2])
        what = "image x_0" if level == 0 else f"x_{level} {tuple(t.shape)}"
        show_images(images, torch.cat([tiles(t), tiles(est[level])]), nrow=len(tiles(t)),
                    title=f"true {what} (top), estimate after {depth} layer(s) (bottom)")
        ax.plot(errs, "o-", ms=3)
        ax.plot([level], [errs[level]], "o", ms=8, color="tab:red")
        ax.set_xlabel(f"level l (0 = image, {self.L} = latent)", fontsize=8)
        ax.set_ylabel("||r_l - x_l|| / ||x_l||", fontsize=8)
        ax.tick_params(labelsize=7)
        return (f"held-out #{self.value('image')}: {depth} of {self.L} layers inverted, level "
                f"{level}, relative error {errs[level]:.3f}")


class LatentPad(Explorer):
    """Figure 6a: a click or drag on the scatter of ``latents`` (N, 2) (colour: ``labels``) moves z,
    decoded beside it by ``decode`` (B, 2) -> (B, C, H, W). Raises ValueError: not (N, 2)."""

    kind, PAD_BORDER, GAP = "latent-pad", 1, 20  # GAP: pixels between the pad and the image

    def __init__(self, decode, latents, labels=None, *, pad_pixels=300):
        super().__init__()
        latents = torch.as_tensor(latents).detach().float().cpu()
        if latents.dim() != 2 or latents.shape[1] != 2:
            raise ValueError(f"LatentPad needs (N, 2) latents, got {tuple(latents.shape)}; use "
                             f"LatentSliders for a latent with more than 2 dimensions")
        self.decode, self.latents, self.labels = decode, latents, labels
        self.pad_pixels, self._last_stamp = int(pad_pixels), -math.inf
        self.figsize = ((2 * self.pad_pixels + self.GAP) / 80, self.pad_pixels / 80)  # 80 dpi
        lo, hi = latents.min(0).values, latents.max(0).values
        span = (hi - lo).clamp_min(1e-6)  # a 14 % margin each side
        self.lo, self.hi = (lo - 0.14 * span).tolist(), (hi + 0.14 * span).tolist()
        steps = [(self.hi[i] - self.lo[i]) / 200 for i in (0, 1)]
        self.decimals = max(2, math.ceil(-math.log10(min(steps))))
        for i, start in enumerate(latents.median(0).values.tolist()):
            # no continuous update: the slider's echo of a pad point (snapped, late) undid drags
            self.control("xy"[i], w.FloatSlider(start, min=self.lo[i], max=self.hi[i],
                                                step=steps[i], description=f"z_{i + 1}",
                                                readout_format=f".{self.decimals}f",
                                                continuous_update=False))
        self._image.layout.border = f"{self.PAD_BORDER}px solid #999"
        self._image.add_class("fa-explorer-pad")
        # defaults prevented: a native drag of the <img> swallows the mouse events
        self._events = Event(source=self._image, prevent_default_action=True, wait=40,
                             watched_events=["mousedown", "mousemove", "click", "dragstart"],
                             throttle_or_debounce="throttle")
        self._events.on_dom_event(self._on_event)

    def scatter(self, ax, z):
        """The latents and the point ``z`` (a cross) on ``ax``, the pad's limits, no ticks."""
        colours = {} if self.labels is None else {"c": torch.as_tensor(self.labels).cpu(),
                                                  "cmap": "tab10"}
        ax.scatter(self.latents[:, 0], self.latents[:, 1], s=5, alpha=0.6, **colours)
        ax.plot([z[0]], [z[1]], "k+", ms=14, mew=2)
        ax.set(xlim=(self.lo[0], self.hi[0]), ylim=(self.lo[1], self.hi[1]), xticks=[], yticks=[])

    def pixel_to_latent(self, px, py):
        """Pad pixel (x right, y down, 0..pad_pixels) -> latent (z_1, z_2), within the pad."""
        (x0, y0), (x1, y1), n = self.lo, self.hi, self.pad_pixels
        z1, z2 = x0 + px / n * (x1 - x0), y1 - py / n * (y1 - y0)
        return min(max(z1, x0), x1), min(max(z2, y0), y1)

    def click(self, px, py) -> None:
        """A click (or drag) at pixel (px, py) of the pad moves the point there."""
        z = self.pixel_to_latent(px, py)
        if px <= self.pad_pixels and z != (self.value("x"), self.value("y")):
            self.set(x=z[0], y=z[1])

    def _on_event(self, event):
        # a press, a move with the button held or a click; an event older than one handled: stale
        kind, stamp = event.get("type"), event.get("timeStamp", self._last_stamp)
        if kind not in ("mousedown", "mousemove", "click") or stamp < self._last_stamp or (
                kind == "mousemove" and not event.get("buttons", 0) & 1):
            return
        self._last_stamp = stamp
        # the pixel from the box (ipyevents' dataX is 0 while the next PNG loads), else dataX
        b, width, n = self.PAD_BORDER, 2 * self.pad_pixels + self.GAP, self.pad_pixels
        bw, bh = (event.get(k, 0) - 2 * b for k in ("boundingRectWidth", "boundingRectHeight"))
        if bw > 0 and bh > 0:
            self.click((event["relativeX"] - b) * width / bw, (event["relativeY"] - b) * n / bh)
        elif "dataX" in event:
            self.click(event["dataX"], event["dataY"])

    def decoded(self, z=None):
        """(1, C, H, W) the image decoded from ``z`` (default: the sliders'), in [0, 1]."""
        point = torch.tensor([z or (self.value("x"), self.value("y"))], dtype=torch.float32)
        return self.decode(point).detach().float().cpu().clamp(0, 1)

    def draw(self, fig):
        # the pad, a square of pad_pixels filled by the scatter (pixel <-> latent linear), and
        # the decoded image, a square as large
        z, share = (self.value("x"), self.value("y")), self.pad_pixels / (80 * self.figsize[0])
        self.scatter(fig.add_axes((0, 0, share, 1)), z)
        show_images(fig.add_axes((1 - share, 0, share, 1)), self.decoded(z))
        return f"z = ({z[0]:.{self.decimals}f}, {z[1]:.{self.decimals}f})"
