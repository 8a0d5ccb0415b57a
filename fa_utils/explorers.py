"""JupyterLab explorers of the method (base: :mod:`.explorer_base`); a static PNG headless."""
from __future__ import annotations

import math
import os
from types import SimpleNamespace

import ipywidgets as w
import torch
from matplotlib.ticker import Formatter, LogLocator, MaxNLocator, NullFormatter

from . import fa, local, outputs, vfa
from .data import DATASETS
from .explorer_base import Explorer, class_labels, figure_png, imshow
from .latent_pad import LatentPad  # noqa: F401 (fa_utils.explorers.LatentPad in the notebooks)

HEADLESS_ENV = "FA_HEADLESS"  # 1: static figures (set by the runner and the tests)
MAX_ONEHOT_VALUE = 12.0       # the end of the conditional sampler's one-hot slider
CLASS_NAMES = {name: info.class_names for name, info in DATASETS.items() if info.class_names}


def headless() -> bool:
    """``FA_HEADLESS`` is 1/true/yes, or (unless 0/false/no) this is not a Jupyter kernel."""
    flag = os.environ.get(HEADLESS_ENV, "").strip().lower()
    if flag in ("1", "true", "yes", "0", "false", "no"):
        return flag in ("1", "true", "yes")
    return not outputs.in_jupyter_kernel()


def check_interactive(interactive):
    """A notebook's ``interactive`` parameter: None, True or False. Raises TypeError otherwise."""
    if interactive is not None and not isinstance(interactive, bool):
        raise TypeError(f"interactive must be None, True or False, got {interactive!r} "
                        f"({type(interactive).__name__}); from the runner: -p interactive False")
    return interactive


def check_onehot_value(value, max_value=MAX_ONEHOT_VALUE) -> float:
    """The sampler's opening one-hot value, in 0..max_value. Raises TypeError, ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"onehot_value must be a number, got {value!r} ({type(value).__name__})")
    if not 0 <= value <= max_value:
        raise ValueError(f"onehot_value (the one-hot value) must be in 0..{max_value:g} "
                         f"(training used 1), got {value!r}")
    return float(value)


def show(explorer, interactive=None) -> None:
    """The widget, or (``interactive`` False; None: :func:`headless`) a PNG of the default state.
    Raises TypeError: not an :class:`Explorer`, a bad ``interactive``."""
    from IPython import display
    if not isinstance(explorer, Explorer):
        raise TypeError(f"show() takes an Explorer, got {type(explorer).__name__}")
    if check_interactive(interactive) is None:
        interactive = not headless()
    if interactive:
        display.display(explorer.widget)
    else:
        display.display(display.Image(data=figure_png(explorer.figure())))
        print(f"[static figure: {explorer.kind} explorer in its default state; open the "
              f"notebook in JupyterLab for the widgets]")


def _device(module):
    return next(module.parameters()).device


def _images(images, n=50):
    """The first ``n`` of (N, C, H, W) images, on the CPU. Raises ValueError otherwise."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    return images.detach().cpu()[:n]


def fa_decoder(encoder, shape, *, head="z", T=1, tau=1.0, r_init="zeros", squash="none",
               seed=0):
    """z (B, Z) -> the image (B, C, H, W) :func:`fa_utils.fa.decode_latent` finds for it; from
    r_0 = 0, E(0) and its Jacobian are built once: the encoder must not change meanwhile."""
    frozen = r_init == "zeros" and fa.supports(encoder, head)
    start = fa.frozen_start(encoder, tuple(shape), head=head) if frozen else None

    def decode(z):
        g = torch.Generator(device=z.device).manual_seed(seed)
        return fa.decode_latent(encoder, z.to(_device(encoder)), shape, head=head, T=T, tau=tau,
                                r_init=r_init, squash=squash, generator=g, start=start).image
    return decode


def fa_encoder_fn(encoder, head="z"):
    """x (B, C, H, W) -> E(x)[head] (B, Z), no graph."""
    return torch.no_grad()(lambda x: encoder(x.to(_device(encoder)))[head])


def vfa_codec(encoder, settings, shape):
    """(encode, decode): x -> [mu(x), c(x)] (:func:`fa_utils.vfa.latent_of`) and that target ->
    image (:func:`fa_utils.vfa.decode_full`, E(0) and its Jacobian built once)."""
    shape = tuple(shape)
    start = vfa.frozen_start(encoder, shape, settings) if settings.r_init == "zeros" else None
    return (lambda x: vfa.latent_of(encoder, x.to(_device(encoder)), settings),
            lambda t: vfa.decode_full(encoder, t.to(_device(encoder)), shape, settings,
                                      start=start))


class _ShortFormatter(Formatter):
    """The fewest significant digits (3 to 8) that tell the ticks apart; no offset text."""

    def __call__(self, x, pos=None):
        return f"{x:.4g}"

    def format_ticks(self, values):
        n = next((n for n in range(3, 8) if len({f"{v:.{n}g}" for v in values}) == len(values)), 8)
        return [f"{v:.{n}g}" for v in values]


class InnerOptimisation(Explorer):
    """r_0 ... r_T of Eq. 2 moving towards E(x)[head], and the energy (Eq. 1); ``images``
    (N, C, H, W) in [0, 1]. Raises ValueError: T outside 1..MAX_T, an unknown squash."""

    kind, figsize, bottom_in, wspace, MAX_T = "inner", (10.0, 2.8), 0.5, 0.4, 20
    DIVERGENCE_NOTE = ("the step diverges: the inner descent contracts only while tau x the "
                       "largest eigenvalue of J^T J is < 2 (Appendix 7.1, one weight w: "
                       "0 < tau w^2 < 2)")

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
        self._player(self.control("step", w.IntSlider(T, 0, T, description="step")), 400)

    def _on_T(self, change):
        """The step slider ends at the new T and moves there, without a redraw of its own."""
        hold, self._hold, step = self._hold, True, self.controls["step"]
        step.max = self.controls["play"].max = step.value = change["new"]
        self._hold = hold

    def trajectory(self):
        """(r_0..r_T, each (C, H, W); the inner energies 1/2 ||E(x) - E(r_t)||^2 of Eq. 1)."""
        key = (self.value("image"), self.value("T"), round(self.value("tau"), 6),
               self.value("r_init"))
        if key not in self._cache:
            i, T, tau, r_init = key
            device = _device(self.encoder)
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
        x, shown = self.images[self.value("image")], fa.apply_squash(traj[t], self.squash)
        gs = fig.add_gridspec(1, 3, left=self.left_in / fig.get_size_inches()[0], right=0.56,
                              wspace=0.25, bottom=fig.subplotpars.bottom, top=fig.subplotpars.top)
        for i, (img, title) in enumerate([(x, "image x (target E(x))"),
                                          (fa.apply_squash(traj[0], self.squash),
                                           f"r_0 ({self.value('r_init')})"), (shown, f"r_{t}")]):
            imshow(fig.add_subplot(gs[0, i]), img[None], title)
        left, sp = 0.56 + 1.05 / fig.get_size_inches()[0], fig.subplotpars  # room for y labels
        ax = fig.add_axes((left, sp.bottom, 0.985 - left, sp.top - sp.bottom))
        ax.plot(range(len(energies)), energies, "o-", ms=3,
                color="tab:blue" if grew is None else "tab:red")
        ax.plot([t], [energies[t]], "o", ms=8, color="black", mfc="none", mew=1.5)
        lo, hi = min(energies), max(energies)
        if lo > 0 and hi / lo >= 10:  # log axis: powers of 10, with 2 and 5 below 3 decades
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(10, subs=(1, 2, 5) if hi / lo < 1e3 else (1,),
                                                  numticks=6))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_formatter(_ShortFormatter())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.3, max(len(energies) - 1, 1) + 0.3)
        ax.set_xlabel("inner step t", fontsize=8, labelpad=1)
        ax.set_ylabel("1/2 ||E(x) - E(r_t)||^2", fontsize=8, labelpad=2)
        ax.tick_params(labelsize=7)
        status = (f"T={self.value('T')}, tau={self.value('tau'):.3g}: step {t}, inner energy "
                  f"{energies[t]:.4g}, MSE(r_{t}, x) per pixel "
                  f"{float(((shown - x) ** 2).mean()):.4f}")
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
        with torch.no_grad():
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
        if i >= 0:
            imshow(a, self.images[i:i + 1], f"start: held-out #{i}")
        else:
            imshow(a, self.decode(self.mean[None]), "start: decoded mean latent")
        imshow(b, self.decode(self.latent()), "decoded from the sliders")
        moved = ", ".join(f"{j + 1}:{v:+.1f}" for j, v in enumerate(self._moves()) if v != 0)
        return (f"{len(self.axes)} leading axes ({self.explained:.0%} of the latent variance); "
                f"moved (std): {moved or 'none'}")


class ConditionalSampling(Explorer):
    """Samples of a conditional VFA (Section 3.4), class target s x onehot(class); s opens at
    ``scale`` = 8, where the class shows (docs/method.md section 9; training used 1).
    Raises ValueError: an unconditional VFA, a bad ``scale``."""

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
        self.hint = (f"one-hot value s: the class target is s \u00d7 onehot(class); a larger s "
                     f"pulls the samples harder towards the class (training used "
                     f"{settings.class_scale:g}; s = 0: no class)")
        self.control("hint", w.HTML(f'<span style="color:#555;font-size:12px">{self.hint}</span>',
                                    layout=w.Layout(width="100%")), observe=False)

    def resample(self) -> None:
        """A fresh grid: the next seed."""
        self.controls["seed"].value += 1

    def samples(self):
        """(n, C, H, W): :func:`fa_utils.vfa.sample` of the class at the one-hot value."""
        device = _device(self.encoder)
        g = torch.Generator(device=device).manual_seed(int(self.value("seed")))
        labels = torch.full((self.n,), int(self.value("label")), dtype=torch.long, device=device)
        return vfa.sample(self.encoder, self.n, self.shape, settings=self.settings,
                          latent_dim=self.latent_dim, labels=labels,
                          scale=float(self.value("scale")), generator=g)[0]

    def draw(self, fig):
        imshow(fig.subplots(1, 1), self.samples(), nrow=10)
        return (f"{self.controls['label'].label}, one-hot value {self.value('scale'):g} "
                f"(training: {self.settings.class_scale:g}; larger = stronger pull towards the "
                f"class), seed {self.value('seed')}")


class Interpolation(Explorer):
    """(1 - t) z_a + t z_b decoded (Figure 8), in rows of ``per_row`` (docs/choices.md section
    11); ``encode``/``decode`` as :func:`vfa_codec`; ``images`` (N, C, H, W); ``labels`` (N,)."""

    kind, per_row, min_image_px = "interpolation", 8, 64
    row_in, top_in, bottom_in, wspace = 0.95, 0.3, 0.08, 0.08  # row_in: one row, inches

    def __init__(self, encode, decode, images, labels=None, *, steps=8, class_names=None):
        super().__init__()
        self.encode, self.decode, self.images = encode, decode, _images(images)
        self.labels = class_labels(None if labels is None else labels[:len(self.images)])
        self.class_names, n = class_names, len(self.images)
        self.control("a", w.IntSlider(0, 0, n - 1, description="image a"))
        self.control("b", w.IntSlider(min(1, n - 1), 0, n - 1, description="image b"))
        self.control("steps", w.IntSlider(steps, 2, 16, description="steps"))

    @property
    def figsize(self):
        """11 inches wide (880 px in the widget); one row per ``per_row`` steps."""
        rows = math.ceil(self.value("steps") / self.per_row)
        return 11.0, max(1.9, rows * self.row_in + self.top_in + self.bottom_in + 0.25)

    def path(self):
        """(steps, C, H, W) decoded along the line from z_a to z_b."""
        z = self.encode(self.images[[self.value("a"), self.value("b")]])
        t = torch.linspace(0, 1, self.value("steps"), device=z.device)[:, None]
        return self.decode((1 - t) * z[0] + t * z[1])

    def _name(self, i):
        k = -1 if self.labels is None else int(self.labels[i])
        return "" if k < 0 else f" ({self.class_names[k] if self.class_names else k})"

    def draw(self, fig):
        a, b, steps = self.value("a"), self.value("b"), self.value("steps")
        cols = min(steps, self.per_row)
        rows = math.ceil(steps / cols)
        axes = fig.subplots(1, 3, width_ratios=[1, cols, 1])
        path = self.path()
        blank = path.new_ones((rows * cols - steps, *path.shape[1:]))  # the last row's end
        imshow(axes[0], self.images[a:a + 1], f"a: #{a}{self._name(a)}")
        imshow(axes[1], torch.cat([path, blank]), "decoded along (1 - t) z_a + t z_b"
               + (", row by row" if rows > 1 else ""), nrow=cols)
        imshow(axes[2], self.images[b:b + 1], f"b: #{b}{self._name(b)}")
        for ax in axes:
            ax.set_anchor("N")
        return f"interpolating held-out #{a} -> #{b} in {steps} steps"


class LocalLayers(Explorer):
    """Algorithm 3 a layer at a time (:func:`fa_utils.local.invert_block`): after ``depth``
    layers, that level's estimate beside the truth, and the relative error at every level."""

    kind, figsize, bottom_in, wspace = "local", (10.0, 3.0), 0.5, 0.4

    def __init__(self, net, images, *, recon_kwargs=None, seed=0):
        super().__init__()
        self.net, self.seed, self.images = net, seed, _images(images)
        self.kw, self.L, self._cache = dict(recon_kwargs or {}), len(net.blocks), {}
        self.control("image", w.IntSlider(0, 0, len(self.images) - 1, description="image"))
        depth = w.IntSlider(self.L, 0, self.L, description="layers inverted")
        self._player(self.control("depth", depth), 600)

    def levels(self):
        """(true x_0..x_L, estimates r_0..r_L with r_L = x_L = z), one image, on the CPU."""
        i = self.value("image")
        if i not in self._cache:
            device = _device(self.net)
            feats = self.net.features(self.images[i:i + 1].to(device))
            g = torch.Generator(device=device).manual_seed(self.seed)
            est = [feats[-1]]
            for block, shape in zip(reversed(self.net.blocks), reversed(self.net.input_shapes)):
                est.append(local.invert_block(block, est[-1], shape, generator=g, **self.kw))
            self._cache = {i: ([f[0].cpu() for f in feats], [e[0].cpu() for e in est[::-1]])}
        return self._cache[i]

    def draw(self, fig):
        truth, est = self.levels()
        depth = self.value("depth")
        level = self.L - depth  # the tensor x_level is estimated
        errs = [float((e - t).norm() / t.norm().clamp_min(1e-12)) for t, e in zip(truth, est)]
        t = truth[level]
        lo, hi = float(t.min()), float(t.max())

        def tiles(h):  # (n, 1, h, w): the image, the first 8 channels, or the vector as a square
            if level == 0:
                return h[None]
            if h.dim() != 3:
                side = math.ceil(math.sqrt(h.numel()))
                h = torch.cat([h.reshape(-1), h.new_zeros(side * side - h.numel())])
                h = h.reshape(1, side, side)
            return (h[:8, None] - lo) / max(hi - lo, 1e-12)
        ax0, ax1, ax2 = fig.subplots(1, 3, width_ratios=[2, 2, 2.2])
        what = ("image x_0" if level == 0 else f"latent z {tuple(t.shape)}" if level == self.L
                else f"x_{level} {tuple(t.shape)}")
        imshow(ax0, tiles(t), f"true {what}", nrow=4)
        imshow(ax1, tiles(est[level]), f"estimate after {depth} layer(s)", nrow=4)
        ax2.plot(range(self.L + 1), errs, "o-", ms=3)
        ax2.plot([level], [errs[level]], "o", ms=8, color="tab:red")
        ax2.set_xlabel(f"level l (0 = image, {self.L} = latent)", fontsize=8)
        ax2.set_ylabel("||r_l - x_l|| / ||x_l||", fontsize=8)
        ax2.tick_params(labelsize=7)
        return (f"held-out #{self.value('image')}: {depth} of {self.L} layers inverted, level "
                f"{level}, relative error {errs[level]:.3f}")


def exploration_models(profile=None, *, seed=0, device="auto", progress=True):
    """The main job's MNIST models (notebooks 02, 03, 05's checkpoints; a missing one is trained):
    ``fa`` (Z = 128), ``fa2`` (Z = 2), ``fa_cfg``, ``vfa``, ``vfa_settings``, ``vfa_cfg``,
    ``local_net``, ``local_kwargs``, held-out ``test_x`` (N, C, H, W), ``test_y`` (N,), ``shape``,
    ``class_names``. Raises config.ConfigError, data.DatasetUnavailable."""
    from . import config, experiments, local
    fcfg, vcfg, lcfg = (config.make_config(s, profile, seed=seed, device=device, **kw)
                        for s, kw in (("fa", {"dataset": "mnist"}), ("vfa", {"dataset": "mnist"}),
                                      ("local", {})))
    data = experiments.load_image_data(fcfg)
    fa128, _ = experiments.train_fa_encoder(fcfg, data, progress=progress)
    fa2, _ = experiments.train_fa_encoder(fcfg, data, latent_dim=2, epochs=fcfg.latent2_epochs,
                                          progress=progress)
    venc, _ = experiments.train_vfa(vcfg, experiments.load_image_data(vcfg, verbose=False),
                                    progress=progress)
    net, _ = experiments.train_local(
        lcfg, experiments.local_data(lcfg, "mnist", verbose=False), "mnist", progress=progress)
    return SimpleNamespace(fa=fa128, fa2=fa2, fa_cfg=fcfg, vfa=venc, vfa_cfg=vcfg,
                           vfa_settings=experiments.vfa_settings(vcfg), local_net=net,
                           local_kwargs=local.recon_kwargs(lcfg), test_x=data.test_x,
                           test_y=data.test_y, shape=tuple(data.image_shape),
                           class_names=CLASS_NAMES["mnist"])
