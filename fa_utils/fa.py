"""Feature alignment (Section 3.1, Eq. 1-2, Algorithm 1).

Inner problem, from r_0 (the shape of x), T steps of gradient descent on

    L(r) = 1/2 || z_x - E(r) ||^2      (per example, summed over latent dimensions)
    r_t  = r_{t-1} - tau * dL/dr_{t-1}                                        (Eq. 2)

Outer problem: C = || x - squash(r_T) ||^2 minimised over the encoder's parameters
(Algorithm 1); with ``create_graph=True`` C reaches them through dL/dr (a double backward).
The energy is a per-example sum and the batch is combined by sum, so each r_i receives its
own gradient; the 1/2 is Appendix Eq. 11's (docs/method.md section 1).

From the default r_0 = 0, shared by the batch, the first step is taken once for the
batch (:func:`first_step`) and the rest by :func:`align`; :func:`frozen_start` keeps
E(0) and J_E(0)^T of a trained encoder for sampling.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as hooks

from .losses import bounded_logvar
from .models import Encoder, clamp_weights_

R_INITS = ("zeros", "uniform", "normal")
SQUASHES = ("none", "sigmoid")


def inner_energy(z_target: torch.Tensor, z_r: torch.Tensor) -> torch.Tensor:
    """L = 1/2 ||z_target - z_r||^2 per example (Eq. 1-2 with Appendix Eq. 11's 1/2).

    Args:
        z_target: (B, ...) target latent, e.g. E(x).
        z_r: (B, ...) latent of the moving input, E(r).

    Returns:
        (B,) energies, summed over every non-batch dimension.
    """
    if z_target.shape != z_r.shape:
        raise ValueError(f"latent shapes differ: target {tuple(z_target.shape)} vs "
                         f"E(r) {tuple(z_r.shape)}")
    return 0.5 * (z_target - z_r).pow(2).flatten(1).sum(1)


def init_r(shape, r_init: str = "zeros", *, generator: Optional[torch.Generator] = None,
           device=None, dtype=torch.float32, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """The starting point r_0 of the inner optimisation.

    Args:
        shape: the input's shape, (B, C, H, W) for images or (B, 1) for the toy.
        r_init: ``"zeros"`` (authors' code), ``"uniform"`` (U(low, high)) or ``"normal"``
            (N(0, 1)); the paper says "a random input from some distribution (uniform or
            Gaussian)".
        generator: the random generator to draw from (for reproducible, resumable runs).
        low, high: the uniform range; the data range [0, 1] for images.

    Raises:
        ValueError: unknown ``r_init``.
    """
    if r_init == "zeros":
        return torch.zeros(shape, device=device, dtype=dtype)
    if r_init == "uniform":
        u = torch.rand(shape, generator=generator, device=device if generator is None else
                       generator.device, dtype=dtype)
        return (low + (high - low) * u).to(device)
    if r_init == "normal":
        return torch.randn(shape, generator=generator, device=device if generator is None else
                           generator.device, dtype=dtype).to(device)
    raise ValueError(f"unknown r_init {r_init!r}; choose one of {list(R_INITS)}")


def apply_squash(r: torch.Tensor, squash: str) -> torch.Tensor:
    """The image read off r_T: ``"none"`` returns r, ``"sigmoid"`` sigmoid(r) (authors' code).

    Raises:
        ValueError: unknown ``squash``.
    """
    if squash == "none":
        return r
    if squash == "sigmoid":
        return torch.sigmoid(r)
    raise ValueError(f"unknown squash {squash!r}; choose one of {list(SQUASHES)}")


@dataclass
class AlignResult:
    """What :func:`align` returns.

    Attributes:
        r: (B, ...) the last iterate r_T, *before* squashing.
        image: (B, ...) squash(r_T), the recovered input.
        energies: T + 1 tensors of shape (B,) (detached): the inner energy at r_0 ... r_T;
            empty unless ``track_energy``.
        trajectory: r_0 ... r_T (detached), empty unless ``track_trajectory``.
    """

    r: torch.Tensor
    image: torch.Tensor
    energies: list[torch.Tensor] = field(default_factory=list)
    trajectory: list[torch.Tensor] = field(default_factory=list)


def align(encode: Callable[[torch.Tensor], torch.Tensor], z_target: torch.Tensor,
          r0: torch.Tensor, *, T: int = 1, tau: float = 1.0, create_graph: bool = True,
          squash: str = "none", track_energy: bool = False,
          track_trajectory: bool = False) -> AlignResult:
    """Move r_0 by T gradient steps of L(r) = 1/2 ||z_target - encode(r)||^2 (Eq. 2).

    Args:
        encode: maps (B, ...) inputs to (B, ...) latents (the encoder with its head chosen).
        z_target: (B, ...) latents to match; may carry a graph to the encoder (training).
        r0: (B, ...) start, see :func:`init_r`; treated as a constant.
        T: number of inner steps (>= 1). tau: step size.
        create_graph: keep the inner gradient in the graph so that a loss on the result
            back-propagates into the encoder (training, Algorithm 1). ``False`` for sampling
            and evaluation: the result is then detached.
        squash: ``"none"`` or ``"sigmoid"``, applied to r_T only (:func:`apply_squash`).
        track_energy: record the energy at every iterate, including the last.
        track_trajectory: record every iterate (detached).

    Returns:
        :class:`AlignResult`.

    Raises:
        ValueError: T < 1, tau <= 0, unknown squash, or mismatched latent shapes.
    """
    _check_inner_args(T, tau, squash)
    energies: list[torch.Tensor] = []
    trajectory: list[torch.Tensor] = []
    r = _iterate(encode, z_target, r0.detach(), T=T, tau=tau, create_graph=create_graph,
                 energies=energies if track_energy else None,
                 trajectory=trajectory if track_trajectory else None)
    return AlignResult(r=r, image=apply_squash(r, squash), energies=energies,
                       trajectory=trajectory)


def _check_inner_args(T: int, tau: float, squash: str) -> None:
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    apply_squash(torch.zeros(0), squash)  # validate early


def _iterate(encode: Callable[[torch.Tensor], torch.Tensor], z_target: torch.Tensor,
             r: torch.Tensor, *, T: int, tau: float, create_graph: bool,
             energies: Optional[list] = None, trajectory: Optional[list] = None) -> torch.Tensor:
    """T steps of Eq. 2 from r (the body of :func:`align`).

    ``r`` may carry a graph to the encoder (a first step already taken with
    ``create_graph=True``); it is used as it is then, and detached otherwise.
    """
    if not create_graph:
        z_target = z_target.detach()
    with torch.enable_grad():
        if not create_graph or not r.requires_grad:
            r = r.detach().requires_grad_(True)
        for _ in range(T):
            if trajectory is not None:
                trajectory.append(r.detach().clone())
            energy = inner_energy(z_target, encode(r))
            if energies is not None:
                energies.append(energy.detach())
            # sum over the batch: each r_i only sees its own term (never a mean)
            (grad,) = torch.autograd.grad(energy.sum(), r, create_graph=create_graph)
            r = r - tau * grad
            if not create_graph:
                r = r.detach().requires_grad_(True)
        if energies is not None:
            energies.append(inner_energy(z_target, encode(r)).detach())
    if trajectory is not None:
        trajectory.append(r.detach().clone())
    if not create_graph:
        r = r.detach()
    return r


# --------------------------------------------------------------------------------------
# Read-outs of an encoder's heads: the side of the inner energy that sees r
# --------------------------------------------------------------------------------------


class MeanPlusSigma(NamedTuple):
    """The read-out mean + exp(logvar / 2) of two heads (VFA's ``mu + sigma`` side; the
    log-variance bounded by :func:`fa_utils.losses.bounded_logvar`)."""

    mean: str = "mu"
    logvar: str = "logvar"


#: A read-out of an encoder's dict of heads: a head name, a :class:`MeanPlusSigma`, or a
#: sequence of those (concatenated along dim 1); None: the network's own output.
Head = Union[str, MeanPlusSigma, Sequence[Union[str, MeanPlusSigma]], None]


def _items(head: Head) -> tuple:
    if head is None:
        return ()
    return (head,) if isinstance(head, (str, MeanPlusSigma)) else tuple(head)


def _names(head: Head) -> list:
    return [n for item in _items(head) for n in (item if isinstance(item, MeanPlusSigma) else (item,))]


def read_out(out: dict, head: Head) -> torch.Tensor:
    """``head`` read off an encoder's outputs ``out`` (name -> (B, width)): (B, total width).

    Raises:
        KeyError: a head the encoder does not have (the message lists its heads).
    """
    for name in _names(head):
        if name not in out:
            raise KeyError(f"encoder has no head {name!r}; its heads are {list(out)}")
    parts = [out[i.mean] + (0.5 * bounded_logvar(out[i.logvar])).exp()
             if isinstance(i, MeanPlusSigma) else out[i] for i in _items(head)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


# --------------------------------------------------------------------------------------
# The first inner step from the start r_0 = 0 that the batch shares (Eq. 2 at t = 1)
# --------------------------------------------------------------------------------------
# E(r_0) and J_E(r_0) are the same for every example, so they are computed once on a
# batch of one and J_E(r_0)^T is applied to the B residuals, layer by layer from the
# output down. Equal to B starts within fp32 rounding (tests/test_speed_equivalence.py);
# why written by hand and not with torch.func: docs/choices.md section 12.

#: The layers whose transposed Jacobian :func:`_linearise` writes (piecewise linear).
PIECEWISE_LINEAR = (nn.Conv2d, nn.Linear, nn.LeakyReLU, nn.ReLU, nn.Flatten, nn.Identity)


def _pieces(module: nn.Module, head: Head):
    """(layers, heads) of r -> module(r)[head] when it is a piecewise-linear stack without
    hooks, else None: an :class:`fa_utils.models.Encoder`'s trunk and Linear heads, or
    (``head=None``) a layer or an ``nn.Sequential`` of layers (local FA's operators)."""
    if _items(head):
        if not (isinstance(module, Encoder) and type(module).forward is Encoder.forward
                and all(isinstance(dict(module.heads).get(n), nn.Linear) for n in _names(head))):
            return None
        layers = list(module.trunk)
        heads = [tuple(module.heads[n] for n in i) if isinstance(i, MeanPlusSigma)
                 else module.heads[i] for i in _items(head)]
    else:
        layers, heads = list(module) if type(module) is nn.Sequential else [module], []
    if any(not isinstance(m, PIECEWISE_LINEAR)
           or isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str))
           or isinstance(m, nn.Flatten) and m.start_dim != 1 for m in layers):
        return None
    if any(getattr(hooks, f"_global_{k}_hooks", None)
           for k in ("forward", "forward_pre", "backward", "backward_pre")) or any(
            m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
            or m._backward_pre_hooks for m in module.modules()):
        return None
    return layers, heads


def supports(module: nn.Module, head: Head = None) -> bool:
    """Whether :func:`first_step` applies to r -> module(r)[head]: a stack of
    :data:`PIECEWISE_LINEAR` layers without hooks (an ``Encoder``, not a subclass with its
    own forward nor a DDP wrapper, with Linear heads; or with ``head=None`` a layer or an
    ``nn.Sequential``)."""
    return _pieces(module, head) is not None


def _linearise(layers: list, heads: list, r0: torch.Tensor):
    """E(r_0) (1, Z) and the layers' transposes, v -> J_E(r_0)^T v, last layer first."""
    h, transposes = r0, []
    for m in layers:
        out = m(h)
        if isinstance(m, nn.Conv2d):  # J^T of h -> conv(h): the transposed convolution,
            pad = [h.shape[2 + i] - ((out.shape[2 + i] - 1) * m.stride[i] - 2 * m.padding[i]
                                     + m.dilation[i] * (m.kernel_size[i] - 1) + 1) for i in (0, 1)]
            transposes.append(lambda g, m=m, pad=pad: F.conv_transpose2d(  # back to h's size
                g, m.weight, None, m.stride, m.padding, pad, m.groups, m.dilation))
        elif isinstance(m, nn.Linear):
            transposes.append(lambda g, w=m.weight: g @ w)
        elif isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            with torch.no_grad():  # the slope at h (1 where h > 0): piecewise constant
                slope = torch.full_like(h, getattr(m, "negative_slope", 0.0)).masked_fill_(h > 0, 1)
            transposes.append(lambda g, slope=slope: g * slope)
        elif isinstance(m, nn.Flatten):
            transposes.append(lambda g, size=h.shape[1:]: g.reshape(g.shape[0], *size))
        h = out
    if heads:
        values, weights = [], []
        for item in heads:
            if isinstance(item, tuple):
                mean, logvar = item
                sigma = (0.5 * bounded_logvar(logvar(h))).exp()
                values.append(mean(h) + sigma)
                # d(mean + sigma)/dh = W_mean + diag(sigma / 2) W_logvar (bounded_logvar
                # passes the gradient straight through)
                weights.append(mean.weight + 0.5 * sigma.reshape(-1, 1) * logvar.weight)
            else:
                values.append(item(h))
                weights.append(item.weight)
        weight = weights[0] if len(weights) == 1 else torch.cat(weights, 0)
        transposes.append(lambda g: g @ weight)
        h = values[0] if len(values) == 1 else torch.cat(values, 1)
    return h, transposes[::-1]


def _transpose(transposes: list, v: torch.Tensor) -> torch.Tensor:
    for t in transposes:
        v = t(v)
    return v


def _checked_pieces(module: nn.Module, head: Head, r0: torch.Tensor):
    pieces = _pieces(module, head)
    if pieces is None:
        raise ValueError(f"the shared first step does not apply to {type(module).__name__} "
                         f"with head {head!r}: fa.supports is False; pass shared_start=False")
    if r0.shape[0] != 1:
        raise ValueError(f"the shared start r_0 must have batch size 1, got shape "
                         f"{tuple(r0.shape)}: pass r_0 of shape (1, C, H, W)")
    return pieces


def _check_latent(z: torch.Tensor, e0: torch.Tensor) -> None:
    if z.shape[1:] != e0.shape[1:]:
        raise ValueError(f"latent shapes differ: target {tuple(z.shape)} vs E(r_0) {tuple(e0.shape)}")


def first_step(module: nn.Module, z_target: torch.Tensor, r0: torch.Tensor, *,
               head: Head = None, tau: float = 1.0, create_graph: bool = True) -> torch.Tensor:
    """Eq. 2 at t = 1 for B targets from one start: r_1 = r_0 - tau J_E(r_0)^T (E(r_0) - z),
    E = r -> module(r)[head].

    Shapes: z_target (B, Z) (may carry a graph: training), r0 (1, C, H, W) -> (B, C, H, W).
    ``create_graph=False`` returns r_1 detached.

    Raises:
        ValueError: :func:`supports` is False, r0's batch size is not 1, or z's shape
            differs from E(r_0)'s.
    """
    pieces = _checked_pieces(module, head, r0)
    r0 = r0.detach()
    z_target = z_target if create_graph else z_target.detach()
    with torch.set_grad_enabled(create_graph):
        e0, transposes = _linearise(*pieces, r0)
        _check_latent(z_target, e0)
        # dL/dE(r_0) = E(r_0) - z per example (L = 1/2 ||z - E(r)||^2); tau scales it
        # before the transpose, a (B, Z) product instead of a (B, C, H, W) one
        residual = e0 - z_target if tau == 1 else tau * (e0 - z_target)
        # r_1 = r_0 - tau J_E(r_0)^T (E(r_0) - z)
        r1 = r0 - _transpose(transposes, residual)
    return r1 if create_graph else r1.detach()


class FrozenStart:
    """E(r_0) and J_E(r_0)^T of a network as it is now, for decoding many latents.

    A snapshot (built on a copy): it keeps the step of the weights it was built from.
    :meth:`step` equals :func:`first_step` at those weights bit for bit. Build it with
    :func:`frozen_start` or :func:`fa_utils.vfa.frozen_start`.

    Attributes:
        e0: (1, Z) E(r_0). r0: (1, C, H, W) the start.

    Raises:
        ValueError: as :func:`first_step`.
    """

    def __init__(self, module: nn.Module, r0: torch.Tensor, *, head: Head = None):
        _checked_pieces(module, head, r0)
        self.r0 = r0.detach()
        with torch.no_grad():
            self.e0, self._transposes = _linearise(*_pieces(copy.deepcopy(module), head), self.r0)

    def transpose(self, v: torch.Tensor) -> torch.Tensor:
        """J_E(r_0)^T v: (B, Z) -> (B, C, H, W), no graph. Raises ValueError: v's shape."""
        _check_latent(v, self.e0)
        with torch.no_grad():
            return _transpose(self._transposes, v.detach())

    def step(self, z: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """r_1 = r_0 - tau J_E(r_0)^T (E(r_0) - z): (B, Z) -> (B, C, H, W), no graph.
        Raises ValueError: z's shape differs from E(r_0)'s."""
        _check_latent(z, self.e0)
        with torch.no_grad():
            residual = self.e0 - z.detach()
            return self.r0 - _transpose(self._transposes, residual if tau == 1 else tau * residual)


def _use_shared_start(shared_start: Optional[bool], module: nn.Module, head: Head,
                      r_init: str, kwargs: dict) -> bool:
    if shared_start is False:
        return False
    ok = (r_init == "zeros" and not kwargs.get("track_energy")
          and not kwargs.get("track_trajectory") and supports(module, head))
    if shared_start and not ok:
        raise ValueError("shared_start=True needs r_init='zeros', no tracking and a network "
                         "for which fa.supports holds; pass shared_start=None or False")
    return ok


def solve(module: nn.Module, z: torch.Tensor, shape, *, head: Head = None,
          T: int = 1,
          tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
          generator: Optional[torch.Generator] = None, create_graph: bool = False,
          shared_start: Optional[bool] = None, start: Optional[FrozenStart] = None,
          **kwargs) -> AlignResult:
    """The inner problem for latents z: T steps of Eq. 2 from :func:`init_r`'s start.

    The side of the energy that sees r is r -> module(r)[head] (a read-out of the heads,
    :data:`Head`), or module(r) when ``head`` is None. With r_0 = 0 and that default, the first step is
    taken from one start shared by the batch (:func:`first_step`),
    the rest by :func:`align`.

    Args:
        module: the network E runs (an :class:`fa_utils.models.Encoder`, or one layer's
            operator in local FA).
        z: (B, Z) targets; may carry a graph (training, ``create_graph=True``).
        shape: the input shape (C, H, W).
        head: the encoder's head name(s) (:func:`head_encoder`), or None.
        shared_start: ``None`` (default): the shared first step when r_init is
            ``"zeros"``, nothing is tracked and
            :func:`supports` holds: the same result within fp32
            rounding, faster. ``False``: B starts (the textbook path); ``True``: require
            the shared step.
        start: a :class:`FrozenStart` of this function (no graph
            only): its E(0) and Jacobian are reused for the first step.
        Other arguments as in :func:`align` (T, tau, squash, tracking).

    Raises:
        ValueError: bad inner arguments, ``shared_start=True`` where it does not apply, or
            a frozen start with a graph, another shape, random starts or tracking.
    """
    _check_inner_args(T, tau, squash)
    fn = head_encoder(module, head) if head is not None else module
    if start is not None:
        if create_graph or r_init != "zeros" or kwargs or tuple(start.r0.shape[1:]) != tuple(shape):
            raise ValueError(f"a frozen start decodes without a graph from r_0 = 0 of shape "
                             f"{tuple(start.r0.shape[1:])}, without tracking; got "
                             f"create_graph={create_graph}, r_init={r_init!r}, shape "
                             f"{tuple(shape)}, options {sorted(kwargs)}")
        r = start.step(z, tau)
    elif _use_shared_start(shared_start, module, head, r_init, kwargs):
        r0 = torch.zeros((1, *shape), device=z.device, dtype=z.dtype)
        r = first_step(module, z, r0, head=head, tau=tau, create_graph=create_graph)
    else:
        r0 = init_r((z.shape[0], *shape), r_init, generator=generator, device=z.device,
                    dtype=z.dtype)
        return align(fn, z, r0, T=T, tau=tau, create_graph=create_graph, squash=squash,
                     **kwargs)
    if T > 1:
        r = _iterate(fn, z, r, T=T - 1, tau=tau, create_graph=create_graph)
    return AlignResult(r=r, image=apply_squash(r, squash))


def head_encoder(encoder: nn.Module, head: Head) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> encoder(x)[head]``, for encoders that return a dict of named heads; for a
    read-out of several (:data:`Head`), their outputs concatenated
    along dim 1 (e.g. ``("mu", "logits")``: (B, Z + K), the conditional VFA's random side
    with ``rand_side="mu"``; :class:`MeanPlusSigma`: mu + sigma).

    Raises:
        KeyError: the encoder has no head of that name (the message lists its heads).
    """
    def encode(x: torch.Tensor) -> torch.Tensor:
        return read_out(encoder(x), head)
    return encode


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """C = ||x - x_hat||^2 summed per example, averaged over the batch (Algorithm 1).

    Shapes: (B, ...) and (B, ...) -> scalar. (The batch average only rescales the
    gradient, which Adam ignores; the per-example sum keeps the paper's loss.)
    """
    return (x - x_hat).pow(2).flatten(1).sum(1).mean()


def reconstruct(encoder: nn.Module, x: torch.Tensor, *, head: Head = "z", T: int = 1,
                tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
                generator: Optional[torch.Generator] = None,
                create_graph: bool = False, shared_start: Optional[bool] = None,
                inner_encoder: Optional[nn.Module] = None, **kwargs) -> AlignResult:
    """Recover x from its latent alone: z_x = E(x)[head], then :func:`align` from r_0.

    Shapes: x (B, C, H, W) -> AlignResult with image (B, C, H, W). With
    ``create_graph=True`` this is the forward pass of the FA training loss.
    Extra keyword arguments go to :func:`align`.

    Args:
        shared_start: as in :func:`solve`.
        inner_encoder: the module that runs the inner problem E(r) (default ``encoder``);
            e.g. the module inside a ``DistributedDataParallel`` wrapper, so that the
            wrapper sees one forward (E(x)) per step.
    """
    encode = head_encoder(encoder, head)
    _check_inner_args(T, tau, squash)
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        z_x = encode(x)
    inner = encoder if inner_encoder is None else inner_encoder
    return solve(inner, z_x, x.shape[1:], head=head, T=T, tau=tau,
                 r_init=r_init, squash=squash, generator=generator, create_graph=create_graph,
                 shared_start=shared_start, **kwargs)


def decode_latent(encoder: nn.Module, z: torch.Tensor, shape, *, head: Head = "z", T: int = 1,
                  tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
                  generator: Optional[torch.Generator] = None,
                  shared_start: Optional[bool] = None,
                  start: Optional[FrozenStart] = None, **kwargs) -> AlignResult:
    """The image whose latent is z, found by the inner optimisation (Figure 1, right).

    Args:
        z: (B, Z) latents (e.g. drawn from N(0, I) for sampling).
        shape: the image shape (C, H, W).
        head: a head's name, or names whose outputs are concatenated (:func:`head_encoder`);
            z then has their total width.
        shared_start: as in :func:`reconstruct`.
        start: a :func:`frozen_start` of this encoder and head (r_0 = 0): the first step
            reuses its E(0) and Jacobian, so with T = 1 a call costs one transposed-Jacobian
            product, r_1 = tau J_E(0)^T (z - E(0)) (Eq. 2). It is a snapshot of the weights
            it was built from; later steps (T > 1) use the encoder as it is.

    Returns:
        :class:`AlignResult` with image (B, C, H, W), detached.
    """
    return solve(encoder, z, tuple(shape), head=head, T=T, tau=tau,
                 r_init=r_init, squash=squash, generator=generator, create_graph=False,
                 shared_start=shared_start, start=start, **kwargs)


def frozen_start(encoder: nn.Module, shape, *, head: Head = "z") -> FrozenStart:
    """E(0) and J_E(0)^T of a trained encoder's head, for :func:`decode_latent` (``start``):
    a snapshot of the weights as they are (:class:`FrozenStart`).

    ``shape``: the image shape (C, H, W); r_0 = 0 of shape (1, C, H, W) on the encoder's
    device and dtype.

    Raises:
        ValueError: :func:`supports` does not hold for the encoder.
    """
    p = next(encoder.parameters())
    return FrozenStart(encoder, torch.zeros((1, *shape), device=p.device, dtype=p.dtype),
                              head=head)


# --------------------------------------------------------------------------------------
# Algorithm 1's training step
# --------------------------------------------------------------------------------------


def fa_loss(encoder: nn.Module, x: torch.Tensor, *, head: str = "z", T: int = 1,
            tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
            generator: Optional[torch.Generator] = None, shared_start: Optional[bool] = None,
            inner_encoder: Optional[nn.Module] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's outer loss C = ||x - squash(r_T)||^2 (per-example sum, batch mean).

    Shapes: x (B, C, H, W) -> (scalar loss with a graph to the encoder, image (B, C, H, W)).

    ``shared_start``: see :func:`reconstruct` (default: the faster, equal first step from
    r_0 = 0 when it applies). A ``DistributedDataParallel`` encoder runs E(x) through the
    wrapper and the inner problem on its ``.module`` (one wrapper forward per step) unless
    ``inner_encoder`` says otherwise.
    """
    if inner_encoder is None and isinstance(encoder, nn.parallel.DistributedDataParallel):
        inner_encoder = encoder.module
    result = reconstruct(encoder, x, head=head, T=T, tau=tau, r_init=r_init, squash=squash,
                         generator=generator, create_graph=True, shared_start=shared_start,
                         inner_encoder=inner_encoder)
    return reconstruction_loss(x, result.image), result.image


def _step_values(loss: torch.Tensor, numel: int, sync: bool,
                 extra: Optional[torch.Tensor] = None):
    """The FA step's logged values ``{"loss": C, "mse": C / numel}``: floats from one
    device sync, or 0-d tensors without any when ``sync=False``. With ``sync`` and
    ``extra`` (a 1-d tensor, e.g. the batch's value range), returns (values, ``extra`` read
    in the same sync as a list of floats)."""
    loss = loss.detach()
    values = {"loss": loss, "mse": loss / numel}
    if not sync:
        return values
    parts = [torch.stack(list(values.values()))]
    if extra is not None:
        parts.append(extra.detach().to(loss.dtype))
    read = torch.cat(parts).tolist()  # one sync
    values = dict(zip(values, read[:2]))
    return values if extra is None else (values, read[2:])


def fa_step(encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, *,
            generator: Optional[torch.Generator] = None, weight_clamp: Optional[float] = math.sqrt(2),
            sync: bool = True, autocast_dtype: Optional[torch.dtype] = None,
            **fa_kwargs) -> dict[str, float]:
    """One FA training step (Algorithm 1): loss, double backward, Adam, Eq. 9 clamp
    (:func:`fa_utils.models.clamp_weights_`, bound ``weight_clamp``; None: no clamp).

    Shapes: x (B, C, H, W) float in [0, 1], the encoder's dtype. Loss: per-example sum of
    squared errors over pixels, batch mean.

    Returns ``{"loss": C, "mse": per-pixel mean squared error}`` as floats (one device
    sync for both, taken before the update), or as 0-d tensors without any sync when
    ``sync=False``. The mse is C / (C*H*W), the same number as
    ``(image - x).pow(2).mean()`` up to rounding.

    Checks (``sync=True``): ``x`` as :func:`fa_utils.train.check_batch` (its value range
    read in the step's one sync, before the update), and a non-finite loss is refused
    before ``backward()`` (:func:`fa_utils.train.refuse_non_finite`, term "rec"; for a DDP encoder agreed over
    the ranks). With ``sync=False`` neither check runs (no sync at all): the caller checks
    the returned tensors.

    ``autocast_dtype``: run the loss under ``torch.autocast`` with this dtype (e.g.
    ``torch.bfloat16`` on a GPU). Off by default: fp32 is kept (docs/choices.md section 13).
    Other keyword arguments go to :func:`fa_loss` (head, T, tau, r_init, squash,
    shared_start, inner_encoder).

    Raises:
        ValueError: bad images (:func:`fa_utils.train.check_batch`).
        fa_utils.train.NonFiniteLossError: the loss is NaN or infinite; the weights are
            unchanged.
    """
    from .train import check_batch, check_batch_range, refuse_non_finite

    bounds = check_batch(x, encoder, deferred=True) if sync else None
    optimizer.zero_grad(set_to_none=True)
    if autocast_dtype is None:
        loss, _ = fa_loss(encoder, x, generator=generator, **fa_kwargs)
    else:
        with torch.autocast(x.device.type, dtype=autocast_dtype):
            loss, _ = fa_loss(encoder, x, generator=generator, **fa_kwargs)
        loss = loss.float()
    values = None
    if sync:  # the step's one sync, before the update: the values and the batch's range
        if bounds is None:  # an empty batch
            values, read = _step_values(loss, x[0].numel(), sync), []
        else:
            values, read = _step_values(loss, x[0].numel(), sync, bounds)
        check_batch_range(read)
        ddp = isinstance(encoder, nn.parallel.DistributedDataParallel)
        if ddp or not math.isfinite(values["loss"]):
            refuse_non_finite({"rec": loss}, what="the FA loss", collective=ddp)
    loss.backward()
    optimizer.step()
    if weight_clamp is not None:
        clamp_weights_(encoder, weight_clamp)
    return values if values is not None else _step_values(loss, x[0].numel(), sync)
