"""The explorers' base: a ``VBox`` (classes ``fa-explorer``, ``fa-explorer-<kind>``) of controls
(``fa-control-<name>``), a PNG (``fa-explorer-image``) and a status line (``fa-explorer-status``);
every redraw runs on one CPU thread, timed in ``last_seconds``."""
from __future__ import annotations

import html
import io
import math
import textwrap

import ipywidgets as w
import torch
from matplotlib.figure import Figure

from . import plotting
from .metrics import Stopwatch, one_thread


def figure_png(fig, dpi=80) -> bytes:
    """PNG bytes of a matplotlib figure or a PIL image."""
    buf = io.BytesIO()
    if isinstance(fig, Figure):
        fig.savefig(buf, format="png", dpi=dpi)
    else:
        fig.save(buf, format="PNG")
    return buf.getvalue()


def imshow(ax, images, title="", nrow=8):
    plotting.show_images(ax, images, nrow=nrow).set_title(title, fontsize=9)


def class_labels(labels):  # None for unlabeled data (CelebA, STL-10: labels -1)
    return None if labels is None or not bool((torch.as_tensor(labels) >= 0).any()) else labels


def tag(widget, *classes):
    widget._dom_classes = (*widget._dom_classes, *classes)
    return widget


class Explorer:
    """Controls, picture(s) and a status line; a subclass adds controls (:meth:`control`) and
    draws its state on a figure (:meth:`draw`, returns the status). ``renders`` counts redraws."""

    kind, figsize = "base", (9.0, 3.0)
    # fixed subplot margins in inches, no layout engine (docs/choices.md section 11)
    top_in, bottom_in, left_in, wspace = 0.3, 0.1, 0.15, 0.25

    def __init__(self):
        self.renders, self.last_seconds, self.error, self.controls = 0, math.nan, None, {}
        self._widget = self._image = self._status = None
        self._hold = False

    def control(self, name, widget, observe=True):
        """Add control ``name`` (description in full; a change redraws if ``observe``)."""
        if getattr(widget, "description", "") and hasattr(widget.style, "description_width"):
            widget.style.description_width = "initial"
        if observe:
            widget.observe(self._on_change, names="value")
        self.controls[name] = tag(widget, f"fa-control-{name}")
        return widget

    def _player(self, slider, interval):
        """A ``play`` control that animates ``slider`` (linked in the browser)."""
        play = w.Play(value=slider.value, min=slider.min, max=slider.max, interval=interval)
        w.jslink((self.control("play", play, observe=False), "value"), (slider, "value"))

    def value(self, name):
        return self.controls[name].value

    def views(self):
        """The pictures between the controls and the status line."""
        return [self._image]

    @property
    def widget(self):
        """The ``VBox`` (controls, picture(s), status), built and drawn on first access."""
        if self._widget is None:
            px = f"{int(self.figsize[0] * 80)}px"
            self._image = tag(w.Image(format="png", layout=w.Layout(width=px)),
                              "fa-explorer-image")
            self._status = tag(w.HTML(), "fa-explorer-status")  # a Label cuts a long status
            views = self.views()
            controls = w.HBox(list(self.controls.values()), layout=w.Layout(flex_flow="row wrap"))
            self._widget = tag(w.VBox([controls, w.HBox(views) if len(views) > 1 else views[0],
                                       self._status]), "fa-explorer", f"fa-explorer-{self.kind}")
            self.update()
        return self._widget

    def set(self, **values) -> None:
        """Set several controls, then redraw once. Raises KeyError: an unknown control."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise KeyError(f"unknown control(s) {unknown}; this explorer has "
                           f"{sorted(self.controls)}")
        self._hold = True
        try:
            for name, v in values.items():
                self.controls[name].value = v
        finally:
            self._hold = False
        self.update()

    def _on_change(self, change):
        if not self._hold:
            self.update()

    def draw(self, fig) -> str:
        raise NotImplementedError

    def _new_figure(self, title_room=0.0):
        w, h = self.figsize[0], self.figsize[1] + title_room
        fig = Figure(figsize=(w, h))
        fig.subplots_adjust(left=self.left_in / w, right=1 - 0.15 / w, wspace=self.wspace,
                            bottom=self.bottom_in / h, top=1 - (self.top_in + title_room) / h)
        return fig

    def figure(self) -> Figure:
        """The state as a figure, the status as its title (wrapped; the figure grows)."""
        with one_thread():
            fig = self._new_figure(title_room=0.35)
            lines = textwrap.wrap(self.draw(fig), width=max(int(self.figsize[0] * 13), 40))
            if len(lines) > 1:
                self.draw(fig := self._new_figure(title_room=0.35 + 0.16 * (len(lines) - 1)))
        fig.suptitle("\n".join(lines), fontsize=9, y=0.99, va="top")
        return fig

    def refresh(self) -> str:
        """Redraw the widget's picture(s); returns the status."""
        fig = self._new_figure()
        status = self.draw(fig)
        self._image.value = figure_png(fig)
        return status

    def update(self) -> None:
        """Redraw now; an error goes to the status line and ``error``, not the front end's log."""
        with Stopwatch() as sw:
            try:
                with one_thread():
                    status = (self.draw(self._new_figure()) if self._image is None
                              else self.refresh())
                self.error = None
            except Exception as exc:  # noqa: BLE001 - shown to the user, kept in .error
                status = self.error = f"error: {type(exc).__name__}: {exc}"
        self.renders, self.last_seconds = self.renders + 1, sw.seconds
        if self._status is not None:
            text = f"{status}  |  render {self.renders}, {1e3 * sw.seconds:.0f} ms"
            head, warn, tail = text.partition("WARNING")
            red = f'<span style="color:#c00000">{html.escape(warn + tail)}</span>'
            self._status.value = html.escape(head) + (red if warn else "")
