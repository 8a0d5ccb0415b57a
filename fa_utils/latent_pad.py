"""The 2-D latent pad (Figure 6a): a custom widget with its own mouse events (ipyevents)."""
from __future__ import annotations

import html
import io
import math
import time

import ipywidgets as w
import numpy as np
import torch
from ipyevents import Event
from matplotlib import colormaps
from matplotlib.artist import setp
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw

from .explorer_base import Explorer, class_labels, figure_png, imshow, tag


class LatentPad(Explorer):
    """A 2-neuron latent (Figure 6a): a click or drag on the scatter of ``latents`` (N, 2),
    ``labels`` (N,) or None, moves the point (sliders ``x``, ``y``) decoded by ``decode`` (B, 2)
    -> (B, C, H, W). Raises ValueError: latents not (N, 2), fewer class names than classes."""

    kind, figsize, left_in, bottom_in, PAD_BORDER = "latent-pad", (8.0, 3.4), 0.55, 0.45, 1
    # defaults prevented: a native drag of the <img> swallows the mouse events
    PAD_EVENTS = ("mousedown", "mousemove", "click", "dragstart")
    ECHO_SECONDS = 2.0  # how long a pad point's echo from the sliders may take to arrive

    def __init__(self, decode, latents, labels=None, *, class_names=None, pad_pixels=300):
        super().__init__()
        latents = torch.as_tensor(latents).detach().float().cpu()
        if latents.dim() != 2 or latents.shape[1] != 2:
            raise ValueError(f"LatentPad needs (N, 2) latents, got {tuple(latents.shape)}; use "
                             f"LatentSliders for a latent with more than 2 dimensions")
        self.decode, self.latents, self.labels = decode, latents, class_labels(labels)
        self.pad_pixels, self._last_stamp, self._background = int(pad_pixels), -math.inf, None
        self._sent = []  # (time, z_1, z_2) of the pad's recent points: their echoes are stale
        k = 0 if self.labels is None else int(torch.as_tensor(self.labels).max()) + 1
        if class_names is not None and len(class_names) < k:
            raise ValueError(f"{len(class_names)} class names for labels up to {k - 1}")
        self.class_names = [str(c) for c in class_names or [f"class {i}" for i in range(k)]]
        lo, hi = latents.min(0).values, latents.max(0).values
        span = (hi - lo).clamp_min(1e-6)  # a 14 % margin each side: where the axes are drawn
        self.lo, self.hi = (lo - 0.14 * span).tolist(), (hi + 0.14 * span).tolist()
        steps = [(self.hi[i] - self.lo[i]) / 200 for i in (0, 1)]
        self.decimals = max(2, math.ceil(-math.log10(min(steps))))
        for i, start in enumerate(latents.median(0).values.tolist()):
            self.control("xy"[i], w.FloatSlider(start, min=self.lo[i], max=self.hi[i],
                                                step=steps[i], description=f"z_{i + 1}",
                                                readout_format=f".{self.decimals}f"))

    def class_colours(self):
        """One RGBA colour per class (tab10; tab20 above 10 classes), as in the scatter."""
        cmap = colormaps["tab10" if len(self.class_names) <= 10 else "tab20"]
        return [cmap(k % cmap.N) for k in range(len(self.class_names))]

    def _scatter(self, ax):
        colour = ("tab:blue" if self.labels is None else
                  np.array(self.class_colours())[torch.as_tensor(self.labels).cpu().numpy()])
        ax.scatter(self.latents[:, 0], self.latents[:, 1], s=5, alpha=0.6, c=colour)
        ax.set(xlim=(self.lo[0], self.hi[0]), ylim=(self.lo[1], self.hi[1]))

    def background(self):
        """The pad (PIL): the scatter filling the square (pixel -> latent linear), axes inside."""
        if self._background is None:
            fig = Figure(figsize=(self.pad_pixels / 100,) * 2, dpi=100)
            ax = fig.add_axes((0, 0, 1, 1))
            self._scatter(ax)
            for i, axis in enumerate((ax.xaxis, ax.yaxis)):  # ticks clear of the corners
                ticks = MaxNLocator(nbins=5).tick_values(self.lo[i], self.hi[i])
                frac = (ticks - self.lo[i]) / (self.hi[i] - self.lo[i])
                axis.set_ticks(ticks[(frac > 0.12) & (frac < 0.86)])
            ax.tick_params(direction="in", length=4, labelsize=7, colors="#444", pad=-3)
            ax.tick_params(axis="x", pad=-10)
            ax.grid(True, color="#ddd", lw=0.5)
            ax.set_axisbelow(True)
            setp(ax.get_yticklabels(), ha="left")
            setp(ax.get_xticklabels(), va="bottom")
            for x, y, ha, va, text in ((0.985, 0.015, "right", "bottom", "z_1 \u2192"),
                                       (0.015, 0.985, "left", "top", "z_2 \u2191")):
                ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=8,
                        weight="bold", color="#222")
            self._background = Image.open(io.BytesIO(figure_png(fig, dpi=100))).convert("RGB")
        return self._background

    def pixel_to_latent(self, px, py):
        """Pad pixel (x right, y down, 0..pad_pixels) -> latent (z_1, z_2)."""
        n, lo, hi = self.pad_pixels, self.lo, self.hi
        return lo[0] + px / n * (hi[0] - lo[0]), hi[1] - py / n * (hi[1] - lo[1])

    def latent_to_pixel(self, z1, z2):
        n, lo, hi = self.pad_pixels, self.lo, self.hi
        return (z1 - lo[0]) / (hi[0] - lo[0]) * n, (hi[1] - z2) / (hi[1] - lo[1]) * n

    def click(self, px, py) -> None:
        """A click (or drag) at pad pixel (px, py): move the point there, unless it is there."""
        z1, z2 = self.pixel_to_latent(px, py)
        z1, z2 = min(max(z1, self.lo[0]), self.hi[0]), min(max(z2, self.lo[1]), self.hi[1])
        if (z1, z2) != (self.value("x"), self.value("y")):
            now = time.monotonic()
            self._sent = [p for p in self._sent if now - p[0] < self.ECHO_SECONDS] + [(now, z1, z2)]
            self.set(x=z1, y=z2)

    def snap(self, name, value):
        """``value`` on slider ``name``'s grid (min + k step), as its front end puts it."""
        sl = self.controls[name]
        return sl.min + round((value - sl.min) / sl.step) * sl.step

    def _on_change(self, change):
        # the sliders' echo of a point from the pad, snapped, must not redraw (it moved a drag back)
        name = next((k for k in "xy" if change["owner"] is self.controls[k]), None)
        if name is None:
            return super()._on_change(change)
        tol, i = 1e-3 * self.controls[name].step, "xy".index(name)
        if abs(change["new"] - self.snap(name, change["old"])) <= tol:
            return
        # the echo of an earlier pad point that arrives after a newer one (a drag under load)
        # would move the point back: restore the newer one (its own echo is then the above)
        stale = [p[i + 1] for p in self._sent[:-1] if time.monotonic() - p[0] < self.ECHO_SECONDS]
        if any(abs(change["new"] - self.snap(name, v)) <= tol for v in stale):
            self.controls[name].value = self._sent[-1][i + 1]
            return
        super()._on_change(change)

    def event_pixel(self, event):
        """An event's pad pixel: from its box (``dataX`` is 0 while a PNG loads), dataX, or None."""
        b, n = self.PAD_BORDER, self.pad_pixels
        try:
            w, h = (float(event[k]) - 2 * b for k in ("boundingRectWidth", "boundingRectHeight"))
            if w > 0 and h > 0:
                return ((float(event["relativeX"]) - b) * n / w,
                        (float(event["relativeY"]) - b) * n / h)
        except (KeyError, TypeError, ValueError):
            pass
        return (float(event["dataX"]), float(event["dataY"])) if "dataX" in event else None

    def _on_event(self, event):
        # a press, a move with the button held or a click; an event older than one handled: stale
        kind, stamp = event.get("type"), event.get("timeStamp", self._last_stamp)
        if kind not in ("mousedown", "mousemove", "click") or stamp < self._last_stamp or (
                kind == "mousemove" and not event.get("buttons", 0) & 1):
            return
        self._last_stamp = stamp
        at = self.event_pixel(event)
        if at is not None:
            self.click(*at)

    def views(self):
        px = f"{self.pad_pixels}px"
        self._pad = tag(w.Image(format="png", layout=w.Layout(
            width=px, height=px, border=f"{self.PAD_BORDER}px solid #999")), "fa-explorer-pad")
        self._image.layout.width = px  # the decoded image as large as the pad
        self._events = Event(source=self._pad, watched_events=list(self.PAD_EVENTS),
                             prevent_default_action=True, wait=40, throttle_or_debounce="throttle")
        self._events.on_dom_event(self._on_event)
        if not self.class_names:
            return [self._pad, self._image]
        rows = "".join(f'<div style="white-space:nowrap"><span style="color:{to_hex(c)};'
                       f'font-size:14px">&#9679;</span> {html.escape(nm)}</div>'
                       for nm, c in zip(self.class_names, self.class_colours()))
        self._legend = tag(w.HTML(f'<div style="font-size:12px;line-height:17px;'
                                  f'padding:4px 6px">{rows}</div>'), "fa-explorer-legend")
        return [self._pad, self._legend, self._image]

    def point(self, z=None):
        """(1, 2) the point ``z`` (default: the sliders')."""
        return torch.tensor([z or (self.value("x"), self.value("y"))], dtype=torch.float32)

    def decoded(self, z=None):
        """(1, C, H, W) the image decoded from ``z`` (default: the sliders'), in [0, 1]."""
        return self.decode(self.point(z)).detach().float().cpu().clamp(0, 1)

    def _where(self, z):
        return f"z = ({z[0]:.{self.decimals}f}, {z[1]:.{self.decimals}f})"

    def draw(self, fig):
        z = (self.value("x"), self.value("y"))
        a, leg, b = fig.subplots(1, 3, width_ratios=[1, 0.32, 1])
        self._scatter(a)
        a.plot([z[0]], [z[1]], "k+", ms=14, mew=2)
        a.set_title("2-neuron latent (click/drag in JupyterLab)", fontsize=8)
        a.set_xlabel("z_1", fontsize=8, labelpad=1)
        a.set_ylabel("z_2", fontsize=8, labelpad=1)
        a.tick_params(labelsize=7)
        leg.set_axis_off()
        if self.class_names:
            leg.legend(handles=[Line2D([], [], ls="", marker="o", ms=5, color=c, label=nm)
                                for nm, c in zip(self.class_names, self.class_colours())],
                       loc="center", fontsize=7, frameon=False, handletextpad=0.2,
                       borderaxespad=0)
        imshow(b, self.decoded(z), "decoded")
        return self._where(z)

    def refresh(self):
        # z read once: the sliders' snapped echo can arrive mid-draw (ipykernel 7.4); status = z
        z, pad = (self.value("x"), self.value("y")), self.background().copy()
        px, py = self.latent_to_pixel(*z)
        for line in ([(px - 9, py), (px + 9, py)], [(px, py - 9), (px, py + 9)]):  # crosshair
            ImageDraw.Draw(pad).line(line, fill=(0, 0, 0), width=3)
        self._pad.value = figure_png(pad)
        arr = (self.decoded(z)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        self._image.value = figure_png(img.resize((self.pad_pixels,) * 2, Image.NEAREST))
        return self._where(z)
