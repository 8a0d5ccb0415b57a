"""Feature alignment (Section 3.1, Eq. 1-2, Algorithm 1).

Inner problem: T steps of Eq. 2 from r_0 on L(r) = 1/2 ||z_x - E(r)||^2 (per example, the
batch summed: each r_i gets its own gradient). Outer problem: C = ||x - squash(r_T)||^2 over
the encoder's weights, through dL/dr (a double backward). From r_0 = 0 the first step is
taken once for the batch (:func:`first_step`). docs/method.md section 1.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as hooks

from .losses import bounded_logvar
from .models import Encoder, Head, MeanPlusSigma, clamp_weights_, head_items, head_names, read_out

R_INITS = ("zeros", "uniform", "normal")
SQUASHES = ("none", "sigmoid")


def inner_energy(z_target: torch.Tensor, z_r: torch.Tensor) -> torch.Tensor:
    """Eq. 1 per example (the 1/2 of Appendix Eq. 11): (B, ...), (B, ...) -> (B,).
    Raises ValueError: the shapes differ."""
    if z_target.shape != z_r.shape:
        raise ValueError(f"latent shapes differ: target {tuple(z_target.shape)} vs "
                         f"E(r) {tuple(z_r.shape)}")
    # L = 1/2 ||z_x - E(r)||^2
    return 0.5 * (z_target - z_r).pow(2).flatten(1).sum(1)


def init_r(shape, r_init: str = "zeros", *, generator: Optional[torch.Generator] = None,
           device=None, dtype=torch.float32, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """r_0 of ``shape``: ``"zeros"`` (the authors' code), ``"uniform"`` U(low, high) or
    ``"normal"`` N(0, 1) from ``generator``. Raises ValueError: unknown ``r_init``."""
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
    """The image of r_T: r (``"none"``) or sigmoid(r) (the authors' code).
    Raises ValueError: unknown ``squash``."""
    if squash == "none":
        return r
    if squash == "sigmoid":
        return torch.sigmoid(r)
    raise ValueError(f"unknown squash {squash!r}; choose one of {list(SQUASHES)}")


@dataclass
class AlignResult:
    """r: (B, ...) r_T before squashing; image: squash(r_T); energies: the (B,) energies
    at r_0 ... r_T (``track_energy``); trajectory: r_0 ... r_T (``track_trajectory``)."""

    r: torch.Tensor
    image: torch.Tensor
    energies: list[torch.Tensor] = field(default_factory=list)
    trajectory: list[torch.Tensor] = field(default_factory=list)


def align(encode: Callable[[torch.Tensor], torch.Tensor], z_target: torch.Tensor,
          r0: torch.Tensor, *, T: int = 1, tau: float = 1.0, create_graph: bool = True,
          squash: str = "none", track_energy: bool = False,
          track_trajectory: bool = False) -> AlignResult:
    """T steps of Eq. 2 on L(r) = 1/2 ||z_target - encode(r)||^2 from r0 (a constant):
    z_target (B, Z), r0 (B, ...) -> :class:`AlignResult`. ``create_graph``: keep the inner
    gradient in the graph (training); ``False`` detaches. Runs alike under ``no_grad`` and
    ``inference_mode`` (:func:`inner_autograd`). Raises ValueError: T < 1, tau <= 0, unknown
    squash, latent shapes; RuntimeError: ``create_graph`` inside ``inference_mode``."""
    _check_inner_args(T, tau, squash, create_graph)
    energies: list[torch.Tensor] = []
    trajectory: list[torch.Tensor] = []
    r = _iterate(encode, z_target, r0.detach(), T=T, tau=tau, create_graph=create_graph,
                 energies=energies if track_energy else None,
                 trajectory=trajectory if track_trajectory else None)
    return AlignResult(r=r, image=apply_squash(r, squash), energies=energies,
                       trajectory=trajectory)


def _check_inner_args(T: int, tau: float, squash: str, create_graph: bool = False) -> None:
    if create_graph and torch.is_inference_mode_enabled():
        raise RuntimeError("create_graph=True (training: the loss reaches the encoder through "
                           "the inner steps) cannot run inside torch.inference_mode(); train "
                           "outside it, and decode with create_graph=False there")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    apply_squash(torch.zeros(0), squash)  # validate early


@contextlib.contextmanager
def inner_autograd():
    """Autograd on inside, even under ``no_grad`` or ``inference_mode`` (tensors made under
    inference mode enter through :func:`fresh`)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def check_weights(module: nn.Module) -> None:
    """Raises RuntimeError (naming the fix) when ``module``'s weights were created under
    ``inference_mode``: the inner optimisation differentiates through them."""
    if any(p.is_inference() for p in module.parameters()):
        raise RuntimeError(f"the {type(module).__name__}'s weights were created under "
                           f"torch.inference_mode(), so the inner optimisation cannot take "
                           f"gradients through them: create or load the network outside "
                           f"inference_mode (decoding may then run inside it)")


def fresh(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a normal copy when made under ``inference_mode`` (autograd cannot save it)."""
    return t.clone() if t.is_inference() else t


def _iterate(encode: Callable[[torch.Tensor], torch.Tensor], z_target: torch.Tensor,
             r: torch.Tensor, *, T: int, tau: float, create_graph: bool,
             energies: Optional[list] = None, trajectory: Optional[list] = None) -> torch.Tensor:
    """T steps of Eq. 2 from r, under :func:`inner_autograd`; an r with a graph (a first
    step taken with ``create_graph=True``) is kept as it is, any other is detached."""
    if not create_graph:
        z_target = z_target.detach()
    with inner_autograd():
        z_target, r = fresh(z_target), fresh(r)
        if not create_graph or not r.requires_grad:
            r = r.detach().requires_grad_(True)
        for _ in range(T):
            if trajectory is not None:
                trajectory.append(r.detach().clone())
            # L(r_{t-1}) = 1/2 ||z_x - E(r_{t-1})||^2, per example
            energy = inner_energy(z_target, encode(r))
            if energies is not None:
                energies.append(energy.detach())
            # dL/dr_{t-1}: the batch's energies summed, so each r_i sees its own (no mean)
            (grad,) = torch.autograd.grad(energy.sum(), r, create_graph=create_graph)
            # r_t = r_{t-1} - tau dL/dr_{t-1}                                       (Eq. 2)
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
    if head_items(head):
        if not (isinstance(module, Encoder) and type(module).forward is Encoder.forward
                and all(isinstance(dict(module.heads).get(n), nn.Linear) for n in head_names(head))):
            return None
        layers = list(module.trunk)
        heads = [tuple(module.heads[n] for n in i) if isinstance(i, MeanPlusSigma)
                 else module.heads[i] for i in head_items(head)]
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
    """Whether :func:`first_step` applies to r -> module(r)[head]: :data:`PIECEWISE_LINEAR`
    layers without hooks (an ``Encoder`` with Linear heads, not a subclass nor DDP; or with
    ``head=None`` a layer or an ``nn.Sequential``)."""
    return _pieces(module, head) is not None


def _linearise(layers: list, heads: list, r0: torch.Tensor):
    """E(r_0) (1, Z) and v -> J_E(r_0)^T v ((B, Z) -> (B, C, H, W)), layer by layer down."""
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
    return h, lambda v: functools.reduce(lambda g, t: t(g), reversed(transposes), v)


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
        e0, transpose = _linearise(*pieces, r0)
        _check_latent(z_target, e0)
        # dL/dE(r_0) = E(r_0) - z per example (L = 1/2 ||z - E(r)||^2); tau scales it
        # before the transpose, a (B, Z) product instead of a (B, C, H, W) one
        residual = e0 - z_target if tau == 1 else tau * (e0 - z_target)
        # r_1 = r_0 - tau J_E(r_0)^T (E(r_0) - z)
        r1 = r0 - transpose(residual)
    return r1 if create_graph else r1.detach()


class FrozenStart:
    """E(r_0) (1, Z) and J_E(r_0)^T of a network as it is now (a snapshot on a copy);
    :meth:`step` is :func:`first_step` at those weights. Raises ValueError: as it."""

    def __init__(self, module: nn.Module, r0: torch.Tensor, *, head: Head = None):
        _checked_pieces(module, head, r0)
        self.r0 = r0.detach()
        with torch.no_grad():
            self.e0, self._transpose = _linearise(*_pieces(copy.deepcopy(module), head), self.r0)

    def transpose(self, v: torch.Tensor) -> torch.Tensor:
        """J_E(r_0)^T v: (B, Z) -> (B, C, H, W), no graph. Raises ValueError: v's shape."""
        _check_latent(v, self.e0)
        with torch.no_grad():
            return self._transpose(v.detach())

    def step(self, z: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """r_1 = r_0 - tau J_E(r_0)^T (E(r_0) - z): (B, Z) -> (B, C, H, W), no graph.
        Raises ValueError: z's shape differs from E(r_0)'s."""
        _check_latent(z, self.e0)
        with torch.no_grad():
            residual = self.e0 - z.detach()
            return self.r0 - self._transpose(residual if tau == 1 else tau * residual)


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
    """The inner problem for z (B, Z): T steps of Eq. 2 from :func:`init_r` on
    E = r -> module(r)[head], images of ``shape``. From r_0 = 0 the first step is the shared
    one (:func:`first_step`) where :func:`supports` holds and nothing is tracked
    (``shared_start`` None; True requires it, False never), or ``start``'s (a
    :class:`FrozenStart`, no graph). Other arguments: :func:`align`.
    Raises ValueError: bad arguments, shared or frozen start where it does not apply;
    RuntimeError: as :func:`align` and :func:`check_weights`."""
    _check_inner_args(T, tau, squash, create_graph)
    check_weights(module)
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
    """x -> :func:`read_out` of encoder(x) for ``head`` (e.g. ``("mu", "logits")``:
    (B, Z + K), a conditional VFA's random side). Raises KeyError: a missing head."""
    def encode(x: torch.Tensor) -> torch.Tensor:
        return read_out(encoder(x), head)
    return encode


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """C = ||x - x_hat||^2 per example, the batch's mean (Algorithm 1): (B, ...) -> ().
    The mean only rescales the gradient (Adam ignores it)."""
    # C = ||x - squash(r_T)||^2
    return (x - x_hat).pow(2).flatten(1).sum(1).mean()


def reconstruct(encoder: nn.Module, x: torch.Tensor, *, head: Head = "z", T: int = 1,
                tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
                generator: Optional[torch.Generator] = None,
                create_graph: bool = False, shared_start: Optional[bool] = None,
                inner_encoder: Optional[nn.Module] = None, **kwargs) -> AlignResult:
    """x (B, C, H, W) recovered from z_x = E(x)[head] alone by :func:`solve`;
    ``inner_encoder`` runs E(r) (default ``encoder``; a DDP wrapper's ``.module``)."""
    encode = head_encoder(encoder, head)
    _check_inner_args(T, tau, squash, create_graph)
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
    """The image (B, C, H, W) whose latent is z (B, Z) (Figure 1, right), no graph:
    :func:`solve` on E(r)[head], reusing ``start`` (:func:`frozen_start`) if given."""
    return solve(encoder, z, tuple(shape), head=head, T=T, tau=tau,
                 r_init=r_init, squash=squash, generator=generator, create_graph=False,
                 shared_start=shared_start, start=start, **kwargs)


def frozen_start(encoder: nn.Module, shape, *, head: Head = "z") -> FrozenStart:
    """:class:`FrozenStart` of E(r)[head] at r_0 = 0 (1, *shape) on the encoder's device
    and dtype. Raises ValueError: not :func:`supports`."""
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
    """Algorithm 1's C = ||x - squash(r_T)||^2: x (B, C, H, W) -> (C with a graph, image).
    A DDP encoder runs E(x) through the wrapper and E(r) on its ``.module``
    (docs/choices.md section 8)."""
    if inner_encoder is None and isinstance(encoder, nn.parallel.DistributedDataParallel):
        inner_encoder = encoder.module
    result = reconstruct(encoder, x, head=head, T=T, tau=tau, r_init=r_init, squash=squash,
                         generator=generator, create_graph=True, shared_start=shared_start,
                         inner_encoder=inner_encoder)
    return reconstruction_loss(x, result.image), result.image


def _step_values(loss: torch.Tensor, numel: int, sync: bool,
                 extra: Optional[torch.Tensor] = None):
    """``{"loss", "mse"}`` as floats from one sync (and ``extra``'s floats in it), or 0-d
    tensors without ``sync``."""
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
    """One step of Algorithm 1 on x (B, C, H, W) in [0, 1]: :func:`fa_loss` (keyword
    arguments go there), double backward, optimiser, Eq. 9 clamp (None: none).
    Returns ``{"loss": C, "mse": C / (C*H*W)}`` as floats from one sync before the update
    (x checked, a non-finite loss refused, over the ranks under DDP); ``sync=False``: 0-d
    tensors, no checks. ``autocast_dtype``: the loss under autocast (docs/choices.md 13).
    Raises ValueError: bad images; NonFiniteLossError: the weights stay unchanged."""
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
    # dC/dtheta, through E(x) and the inner gradient dL/dr (a double backward)
    loss.backward()
    optimizer.step()
    # theta <- clamp(theta, -sqrt 2, sqrt 2) for the weights                    (Eq. 9)
    if weight_clamp is not None:
        clamp_weights_(encoder, weight_clamp)
    return values if values is not None else _step_values(loss, x[0].numel(), sync)
