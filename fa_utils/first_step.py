"""The first inner step from a start shared by the whole batch (Eq. 2 at t = 1).

Algorithm 1 starts every example's inner problem at the same r_0 (zeros, as in the
authors' code). Its first step is, per example i,

    r_1^i = r_0 - tau * J_E(r_0)^T (E(r_0) - z_i)                       (Eq. 2, t = 1)

where J_E(r_0) is the encoder's Jacobian at the start. E(r_0) and J_E(r_0) are the same
for every example, so they are computed once, on a batch of one, and the transposed
Jacobian is applied to the B residuals E(r_0) - z_i layer by layer, from the output down:
a product with each Linear weight, the activation slopes at r_0 as a mask, a transposed
convolution for each Conv2d. The textbook alternative (B copies of r_0 through E, then
autograd) computes the same numbers with B forwards and their backward instead of one;
the result is equal within fp32 rounding (``tests/test_speed_equivalence.py``).

The step stays inside autograd: with ``create_graph=True`` the outer loss ||x - r_1||^2
reaches the encoder's parameters through the weights used here (the activation slopes are
piecewise constant, so they carry no gradient). With r_0 = 0 and tau = 1 the step is a
tied-weight decoder, r_1 = J_E(0)^T (z - E(0)) (docs/method.md section 1), which
:class:`FrozenStart` keeps for sampling. Global FA (an encoder and its heads) and local FA
(one layer's operator) take their first step here alike.

Which networks: :func:`supports` is true for piecewise-linear stacks only (Conv2d with
numeric zero padding, Linear, LeakyReLU, ReLU, Flatten(start_dim=1), Identity), with no
module hooks; the callers take the textbook path for anything else (smooth activations,
BatchNorm, which mixes the batch, a log-variance head). The alternative written with
``torch.func`` (``vmap`` over ``vjp``) needs no such list but was 4-10 % slower per
training step here and runs with autograd's saved-tensor hooks disabled, which the memory
measurement of Section 3.5 relies on (docs/choices.md section 12).
"""
from __future__ import annotations

import copy
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .losses import bounded_logvar

#: Layers whose transposed Jacobian is written here (piecewise-linear activations only).
LAYERS = (nn.Conv2d, nn.Linear, nn.LeakyReLU, nn.ReLU, nn.Flatten, nn.Identity)

class MeanPlusSigma(NamedTuple):
    """A read-out of two heads as mean + exp(logvar / 2) (VFA's ``mu + sigma`` random
    side; the log-variance bounded by :func:`fa_utils.losses.bounded_logvar`)."""

    mean: str = "mu"
    logvar: str = "logvar"


#: A read-out of an encoder's heads: a head name, a :class:`MeanPlusSigma`, or a sequence
#: of those, concatenated along dim 1; None: the network's own output.
Head = Union[str, MeanPlusSigma, Sequence[Union[str, MeanPlusSigma]], None]


def head_names(head: Head) -> tuple:
    """The read-out's items as a tuple of names and :class:`MeanPlusSigma` (``()`` for
    None: the network's own output)."""
    if head is None:
        return ()
    return (head,) if isinstance(head, (str, MeanPlusSigma)) else tuple(head)


def _mean_plus_sigma(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mean + (0.5 * bounded_logvar(logvar)).exp()


def read_out(out: dict, head: Head) -> torch.Tensor:
    """The read-out ``head`` of an encoder's outputs ``out`` (name -> (B, width)):
    (B, sum of widths).

    Raises:
        KeyError: a head the encoder does not have (the message lists its heads).
    """
    parts = []
    for item in head_names(head):
        for name in (item if isinstance(item, MeanPlusSigma) else (item,)):
            if name not in out:
                raise KeyError(f"encoder has no head {name!r}; its heads are {list(out)}")
        parts.append(_mean_plus_sigma(out[item.mean], out[item.logvar])
                     if isinstance(item, MeanPlusSigma)
                     else out[item])
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _has_hooks(module: nn.Module) -> bool:
    from torch.nn.modules import module as _m
    if any(getattr(_m, name, None) for name in (
            "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
            "_global_backward_pre_hooks")):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
               or getattr(m, "_backward_pre_hooks", None) for m in module.modules())


def _pieces(module: nn.Module, head: Head) -> Optional[tuple[list[nn.Module], list[nn.Linear]]]:
    """(layers, heads) of the function r -> module(r)[head] when it is a piecewise-linear
    stack, else None. ``head=None``: the module itself is the function (a layer, or an
    ``nn.Sequential`` of layers); a name or names: an :class:`fa_utils.models.Encoder`'s
    trunk followed by those Linear heads (or :class:`MeanPlusSigma` pairs), concatenated."""
    from .models import Encoder

    items = head_names(head)
    if items:
        if not isinstance(module, Encoder) or type(module).forward is not Encoder.forward:
            return None
        names = [n for item in items
                 for n in (item if isinstance(item, MeanPlusSigma) else (item,))]
        if any(h not in module.heads or not isinstance(module.heads[h], nn.Linear)
               for h in names):
            return None
        layers = list(module.trunk)
        heads = [tuple(module.heads[n] for n in item) if isinstance(item, MeanPlusSigma)
                 else module.heads[item] for item in items]
    else:
        layers = list(module) if type(module) is nn.Sequential else [module]
        heads = []
    for m in layers:
        if not isinstance(m, LAYERS):
            return None
        if isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return None
        if isinstance(m, nn.Flatten) and m.start_dim != 1:
            return None
    return layers, heads


def supports(module: nn.Module, head: Head = None) -> bool:
    """Whether :func:`first_step` can take the first inner step of r -> module(r)[head].

    True for a piecewise-linear stack (:data:`LAYERS`) without module hooks: an
    :class:`fa_utils.models.Encoder` (not a subclass with its own forward, not a
    ``DistributedDataParallel`` wrapper: pass its ``.module``) with Linear heads ``head``
    (a name, or names whose outputs are concatenated, e.g. ``("mu", "logits")`` for a
    conditional VFA; :class:`MeanPlusSigma` reads mu + sigma), or, with ``head=None``,
    a layer or an ``nn.Sequential`` of layers (local FA's operators).
    """
    return _pieces(module, head) is not None and not _has_hooks(module)


def _start_forward(layers: list[nn.Module], heads: list[nn.Linear], r0: torch.Tensor):
    """E(r_0) on the batch of one, the (concatenated) head weight (None without heads; for a
    mean + sigma pair W_mean + diag(sigma(r_0) / 2) W_logvar, the read-out's Jacobian at
    the trunk's output, since bounded_logvar passes the gradient straight through) and
    the tape of what the transposed Jacobian needs (conv input sizes, activation slopes,
    flatten shapes)."""
    tape: list[tuple[str, object]] = []
    h = r0
    for m in layers:
        if isinstance(m, nn.Conv2d):
            tape.append(("conv", (m, h.shape[-2:])))
        elif isinstance(m, nn.Linear):
            tape.append(("linear", m))
        elif isinstance(m, (nn.LeakyReLU, nn.ReLU)):
            slope = m.negative_slope if isinstance(m, nn.LeakyReLU) else 0.0
            with torch.no_grad():  # the derivative is piecewise constant: no gradient
                # PyTorch's convention at the kink (input exactly 0): the slope
                d = torch.where(h > 0, torch.ones((), dtype=h.dtype, device=h.device),
                                torch.full((), slope, dtype=h.dtype, device=h.device))
            tape.append(("mask", d))
        elif isinstance(m, nn.Flatten):
            tape.append(("shape", h.shape[1:]))
        h = m(h)
    if not heads:
        return h, None, tape
    values, weights = [], []
    for item in heads:
        if isinstance(item, tuple):  # mean + exp(logvar / 2): a per-row slope on logvar
            mean, logvar = item
            sigma = (0.5 * bounded_logvar(logvar(h))).exp()  # (1, Z), a graph to the weights
            values.append(mean(h) + sigma)
            weights.append(mean.weight + 0.5 * sigma.reshape(-1, 1) * logvar.weight)
        else:
            values.append(item(h))
            weights.append(item.weight)
    if len(values) == 1:
        return values[0], weights[0], tape
    return torch.cat(values, 1), torch.cat(weights, 0), tape


def _transpose(g: torch.Tensor, weight: Optional[torch.Tensor], tape: list) -> torch.Tensor:
    """J_E(r_0)^T g for B rows g (B, Z), from :func:`_start_forward`'s weight and tape."""
    if weight is not None:
        g = g @ weight
    for kind, item in reversed(tape):
        if kind == "linear":
            g = g @ item.weight
        elif kind == "mask":
            g = g * item
        elif kind == "shape":
            g = g.reshape(g.shape[0], *item)
        else:  # conv: the transpose of Conv2d(h) with respect to h
            m, in_size = item
            out_pad = [int(in_size[i]) - ((g.shape[-2 + i] - 1) * m.stride[i] - 2 * m.padding[i]
                                          + m.dilation[i] * (m.kernel_size[i] - 1) + 1)
                       for i in range(2)]
            g = F.conv_transpose2d(g, m.weight, None, m.stride, m.padding, out_pad,
                                   m.groups, m.dilation)
    return g


def _scaled(residual: torch.Tensor, tau: float) -> torch.Tensor:
    """tau times the residual, before the transpose (a (B, Z) product instead of one on
    the (B, C, H, W) result, the same up to rounding); nothing to do for tau = 1."""
    return residual if tau == 1 else tau * residual


def _check_latent(z: torch.Tensor, e0: torch.Tensor) -> None:
    if z.shape[1:] != e0.shape[1:]:
        raise ValueError(f"latent shapes differ: target {tuple(z.shape)} vs "
                         f"E(r_0) {tuple(e0.shape)}")


def _checked_pieces(module: nn.Module, head: Head, r0: torch.Tensor):
    if not supports(module, head):
        raise ValueError(f"first_step does not support this network/head "
                         f"({type(module).__name__}, head {head!r}); see first_step.supports")
    if r0.shape[0] != 1:
        raise ValueError(f"the shared start r_0 must have batch size 1, got shape "
                         f"{tuple(r0.shape)}: pass r_0 of shape (1, C, H, W)")
    return _pieces(module, head)


def first_step(module: nn.Module, z_target: torch.Tensor, r0: torch.Tensor, *,
               head: Head = None, tau: float = 1.0, create_graph: bool = True) -> torch.Tensor:
    """r_1 = r_0 - tau * J_E(r_0)^T (E(r_0) - z) for B targets from one shared start,
    with E = r -> module(r)[head] (module(r) when ``head`` is None).

    Args:
        module: a network for which :func:`supports` holds.
        z_target: (B, Z) targets (the shape of E's output); may carry a graph to the
            encoder (training).
        r0: (1, C, H, W) the shared start, a constant.
        head: the encoder's head name(s), or None.
        tau: the step size.
        create_graph: keep the step in the autograd graph (training); ``False`` returns
            it detached (sampling, evaluation).

    Returns:
        (B, C, H, W) r_1.

    Raises:
        ValueError: an unsupported network, ``r0`` of batch size other than 1, or targets
            whose shape differs from E(r_0)'s.
    """
    layers, heads = _checked_pieces(module, head, r0)
    r0 = r0.detach()
    if not create_graph:
        z_target = z_target.detach()
    with torch.set_grad_enabled(create_graph):
        e0, weight, tape = _start_forward(layers, heads, r0)
        _check_latent(z_target, e0)
        # dL/dE(r_0) of L = 1/2 ||z - E(r)||^2, per example, then through the layers
        r1 = r0 - _transpose(_scaled(e0 - z_target, tau), weight, tape)
    return r1 if create_graph else r1.detach()


class FrozenStart:
    """E(r_0) and J_E(r_0)^T of a network as it is now, kept for decoding many latents.

    After training the encoder does not change, so its first inner step is a fixed affine
    map of the latent: ``step(z) = r_0 - tau * J_E(r_0)^T (E(r_0) - z)``, which costs one
    transposed-Jacobian product per call (what a VAE decoder costs) instead of also a
    forward of E(r_0). It is a snapshot: built on a copy of ``module``, it keeps giving the
    step of the weights it was built from when they change later (build a new one to
    follow them). Equal to :func:`first_step` at those weights, bit for bit (the same
    operations). Build it with :func:`fa_utils.fa.frozen_start` or
    :func:`fa_utils.vfa.frozen_start`.

    Args:
        module, head: as in :func:`first_step` (:func:`supports` must hold).
        r0: (1, C, H, W) the start.

    Attributes:
        e0: (1, Z) E(r_0).
        r0: (1, C, H, W) the start.

    Raises:
        ValueError: as :func:`first_step`.
    """

    def __init__(self, module: nn.Module, r0: torch.Tensor, *, head: Head = None):
        _checked_pieces(module, head, r0)
        self.r0 = r0.detach()
        with torch.no_grad():
            layers, heads = _pieces(copy.deepcopy(module), head)
            self.e0, self._weight, self._tape = _start_forward(layers, heads, self.r0)

    def transpose(self, v: torch.Tensor) -> torch.Tensor:
        """J_E(r_0)^T v: (B, Z) -> (B, C, H, W), no graph.

        Raises:
            ValueError: v's shape differs from E(r_0)'s.
        """
        _check_latent(v, self.e0)
        with torch.no_grad():
            return _transpose(v.detach(), self._weight, self._tape)

    def step(self, z: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """r_1 for latents z (B, Z) -> (B, C, H, W), no graph (Eq. 2 at t = 1); the same
        operations as :func:`first_step`.

        Raises:
            ValueError: z's shape differs from E(r_0)'s.
        """
        _check_latent(z, self.e0)
        with torch.no_grad():
            return self.r0 - _transpose(_scaled(self.e0 - z.detach(), tau), self._weight,
                                        self._tape)
