"""Feature alignment (Section 3.1, Eq. 1-2, Algorithm 1) and the guards of every training step.

Inner problem: T steps of Eq. 2 from r_0 on L(r) = 1/2 ||z_x - E(r)||^2 per example. Outer
problem: C = ||x - squash(r_T)||^2 over the encoder's weights, through dL/dr (a double
backward). docs/method.md section 1.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as hooks

from .models import Encoder, Head, bounded_logvar, clamp_weights_, head_items, head_names, read_out

R_INITS = ("zeros", "uniform", "normal")
SQUASHES = ("none", "sigmoid")
#: The layers whose transposed Jacobian :func:`first_step` writes (piecewise linear).
PIECEWISE_LINEAR = (nn.Conv2d, nn.Linear, nn.LeakyReLU, nn.ReLU, nn.Flatten, nn.Identity)
DDP = nn.parallel.DistributedDataParallel


def check_choice(name: str, value, allowed) -> None:
    """Raises ValueError naming the choices when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(allowed)}")


def inner_energy(z_target: torch.Tensor, z_r: torch.Tensor) -> torch.Tensor:
    """Eq. 1 per example: (B, ...), (B, ...) -> (B,). Raises ValueError: the shapes differ."""
    if z_target.shape != z_r.shape:
        raise ValueError(f"latent shapes differ: target {tuple(z_target.shape)} vs "
                         f"E(r) {tuple(z_r.shape)}")
    # Eq. 1: L = 1/2 ||z_x - E(r)||^2
    return 0.5 * (z_target - z_r).pow(2).flatten(1).sum(1)


def init_r(shape, r_init: str = "zeros", *, generator: Optional[torch.Generator] = None,
           device=None, dtype=torch.float32, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """r_0 of ``shape``: zeros, U(low, high) or N(0, 1). Raises ValueError: unknown r_init."""
    check_choice("r_init", r_init, R_INITS)
    if r_init == "zeros":
        return torch.zeros(shape, device=device, dtype=dtype)
    kw = dict(generator=generator, dtype=dtype,
              device=device if generator is None else generator.device)
    if r_init == "uniform":
        return (low + (high - low) * torch.rand(shape, **kw)).to(device)
    return torch.randn(shape, **kw).to(device)


def apply_squash(r: torch.Tensor, squash: str) -> torch.Tensor:
    """The image of r_T: r or sigmoid(r) (the authors' code). Raises ValueError."""
    check_choice("squash", squash, SQUASHES)
    return torch.sigmoid(r) if squash == "sigmoid" else r


@dataclass
class AlignResult:
    """r_T (B, ...), its image squash(r_T), and if tracked the (B,) energies and r_0 ... r_T."""

    r: torch.Tensor
    image: torch.Tensor
    energies: list = field(default_factory=list)
    trajectory: list = field(default_factory=list)


@contextlib.contextmanager
def inner_autograd():
    """Autograd on inside, even under ``no_grad`` or ``inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def fresh(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a normal copy when made under ``inference_mode`` (autograd cannot save it)."""
    return t.clone() if t.is_inference() else t


def check_weights(module: nn.Module) -> None:
    """Raises RuntimeError when ``module``'s weights were made under ``inference_mode``."""
    if any(p.is_inference() for p in module.parameters()):
        raise RuntimeError(f"the {type(module).__name__}'s weights were created under "
                           f"torch.inference_mode(): create or load the network outside "
                           f"inference_mode (decoding may then run inside it)")


def _check_inner_args(T: int, tau: float, squash: str, create_graph: bool) -> None:
    if create_graph and torch.is_inference_mode_enabled():
        raise RuntimeError("create_graph=True (training) cannot run inside "
                           "torch.inference_mode(); train outside it")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    check_choice("squash", squash, SQUASHES)


def align(encode: Callable[[torch.Tensor], torch.Tensor], z_target: torch.Tensor,
          r0: torch.Tensor, *, T: int = 1, tau: float = 1.0, create_graph: bool = True,
          squash: str = "none", track_energy: bool = False,
          track_trajectory: bool = False) -> AlignResult:
    """Algorithm 1's inner loop, T steps of Eq. 2 from r0 on B starts: z_target (B, Z), r0
    (B, ...) -> :class:`AlignResult`; ``create_graph`` keeps dL/dr in the graph (training).
    Raises ValueError: T, tau, squash, latent shapes; RuntimeError: a graph in inference_mode."""
    _check_inner_args(T, tau, squash, create_graph)
    energies, trajectory = [], []
    with inner_autograd():
        z, r = fresh(z_target if create_graph else z_target.detach()), fresh(r0)
        if not (create_graph and r.grad_fn is not None):  # r0 a constant unless a first step
            r = r.detach().requires_grad_(True)
        for _ in range(T):
            if track_trajectory:
                trajectory.append(r.detach().clone())
            energy = inner_energy(z, encode(r))
            if track_energy:
                energies.append(energy.detach())
            # dL/dr of the batch's energies summed: each r_i sees its own gradient
            (grad,) = torch.autograd.grad(energy.sum(), r, create_graph=create_graph)
            # Eq. 2: r_t = r_{t-1} - tau dL/dr_{t-1}
            r = r - tau * grad
            if not create_graph:
                r = r.detach().requires_grad_(True)
        if track_energy:
            energies.append(inner_energy(z, encode(r)).detach())
    if track_trajectory:
        trajectory.append(r.detach().clone())
    r = r if create_graph else r.detach()
    return AlignResult(r, apply_squash(r, squash), energies, trajectory)


# The first step from r_0 = 0, shared by the batch: E(r_0) and J_E(r_0) are the same for every
# example, so E runs on a batch of one and J_E(r_0)^T is applied to the B residuals layer by
# layer from the output down (why by hand, not torch.func: docs/choices.md section 12).


def _pieces(module: nn.Module, head: Head):
    """(layers, heads) of r -> module(r)[head] if it is a hook-free piecewise-linear stack (an
    Encoder, not a subclass, with Linear heads; for head=None a layer or nn.Sequential)."""
    if head_items(head):
        if type(module) is not Encoder or not all(
                isinstance(dict(module.heads).get(n), nn.Linear) for n in head_names(head)):
            return None
        layers = list(module.trunk)
        heads = [[module.heads[n] for n in head_names(i)] for i in head_items(head)]
    else:
        layers, heads = list(module) if type(module) is nn.Sequential else [module], []
    kinds = ("forward", "forward_pre", "backward", "backward_pre")
    if any(getattr(hooks, f"_global_{k}_hooks") for k in kinds) or any(
            getattr(m, f"_{k}_hooks") for m in module.modules() for k in kinds):
        return None
    for m in layers:
        if not isinstance(m, PIECEWISE_LINEAR) or isinstance(m, nn.Flatten) and m.start_dim != 1:
            return None
        if isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return None
    return layers, heads


def supports(module: nn.Module, head: Head = None) -> bool:
    """Whether :func:`first_step` applies to r -> module(r)[head]."""
    return _pieces(module, head) is not None


def _linearise(module: nn.Module, head: Head, r0: torch.Tensor):
    """E(r_0) (1, Z) and v -> J_E(r_0)^T v ((B, Z) -> (B, C, H, W)). Raises ValueError."""
    if (pieces := _pieces(module, head)) is None:
        raise ValueError(f"the shared first step does not apply to {type(module).__name__} "
                         f"with head {head!r}: fa.supports is False; pass shared_start=False")
    if r0.shape[0] != 1:
        raise ValueError(f"the shared start r_0 must have batch size 1, got shape "
                         f"{tuple(r0.shape)}: pass r_0 of shape (1, C, H, W)")
    h, transposes = r0, []
    for m in pieces[0]:
        out = m(h)
        if isinstance(m, nn.Conv2d):  # the transposed convolution, back to h's size
            pad = [h.shape[2 + i] - ((out.shape[2 + i] - 1) * m.stride[i] - 2 * m.padding[i]
                                     + m.dilation[i] * (m.kernel_size[i] - 1) + 1) for i in (0, 1)]
            transposes.append(lambda g, m=m, pad=pad: F.conv_transpose2d(
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
    if pieces[1]:
        values, weights = [], []
        for item in pieces[1]:
            if len(item) == 2:  # mu + sigma; bounded_logvar passes gradients through
                mean, logvar = item
                sigma = (0.5 * bounded_logvar(logvar(h))).exp()
                values.append(mean(h) + sigma)
                # d(mean + sigma)/dh = W_mean + diag(sigma / 2) W_logvar
                weights.append(mean.weight + 0.5 * sigma.reshape(-1, 1) * logvar.weight)
            else:
                values.append(item[0](h))
                weights.append(item[0].weight)
        weight = weights[0] if len(weights) == 1 else torch.cat(weights, 0)
        transposes.append(lambda g: g @ weight)
        h = values[0] if len(values) == 1 else torch.cat(values, 1)
    return h, lambda v: functools.reduce(lambda g, t: t(g), reversed(transposes), v)


def _step_from(r0, e0, transpose, z: torch.Tensor, tau: float) -> torch.Tensor:
    if z.shape[1:] != e0.shape[1:]:
        raise ValueError(f"latent shapes differ: target {tuple(z.shape)} vs E(r_0) "
                         f"{tuple(e0.shape)}")
    residual = e0 - z  # tau scales the (B, Z) residual, not the (B, C, H, W) result
    # Eq. 2 at t = 1: r_1 = r_0 - tau J_E(r_0)^T (E(r_0) - z)
    return r0 - transpose(residual if tau == 1 else tau * residual)


def first_step(module: nn.Module, z_target: torch.Tensor, r0: torch.Tensor, *,
               head: Head = None, tau: float = 1.0, create_graph: bool = True) -> torch.Tensor:
    """Eq. 2 at t = 1 for B targets from one start, E = r -> module(r)[head]: z_target (B, Z),
    r0 (1, C, H, W) -> r_1 (B, C, H, W), detached unless ``create_graph``.
    Raises ValueError: not :func:`supports`, r0's batch size, z's shape."""
    r0, z = r0.detach(), z_target if create_graph else z_target.detach()
    with torch.set_grad_enabled(create_graph):
        r1 = _step_from(r0, *_linearise(module, head, r0), z, tau)
    return r1 if create_graph else r1.detach()


class FrozenStart(NamedTuple):
    """r_0 (1, C, H, W), E(r_0) (1, Z) and v -> J_E(r_0)^T v of a snapshot of the network."""

    r0: torch.Tensor
    e0: torch.Tensor
    transpose: Callable[[torch.Tensor], torch.Tensor]


def frozen_start(encoder: nn.Module, shape, *, head: Head = "z") -> FrozenStart:
    """:class:`FrozenStart` of E(r)[head] at r_0 = 0 (1, *shape), on a frozen copy of the
    encoder, for decoding many latents. Raises ValueError: not :func:`supports`."""
    frozen = copy.deepcopy(encoder).requires_grad_(False)
    p = next(frozen.parameters())
    r0 = torch.zeros((1, *shape), device=p.device, dtype=p.dtype)
    with torch.no_grad():
        return FrozenStart(r0, *_linearise(frozen, head, r0))


def solve(module: nn.Module, z: torch.Tensor, shape, *, head: Head = None, T: int = 1,
          tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
          generator: Optional[torch.Generator] = None, create_graph: bool = False,
          shared_start: Optional[bool] = None, start: Optional[FrozenStart] = None,
          r0: Optional[torch.Tensor] = None, **track) -> AlignResult:
    """Algorithm 1's inner problem: T steps of Eq. 2 for z (B, Z) on E = r -> module(r)[head]
    from ``r0`` or :func:`init_r` (B, *shape). From r_0 = 0 without tracking the first step is
    :func:`first_step` where it applies (``shared_start`` None; True: required; False: never)
    or ``start``'s. ``track``: :func:`align`'s. Raises ValueError, RuntimeError."""
    _check_inner_args(T, tau, squash, create_graph)
    check_weights(module)
    encode = module if head is None else head_encoder(module, head)
    zeros = r0 is None and r_init == "zeros" and not any(track.values())
    if start is not None:
        if create_graph or not zeros or track or tuple(start.r0.shape[1:]) != tuple(shape):
            raise ValueError(f"a frozen start decodes without a graph or tracking from r_0 = 0 "
                             f"of shape {tuple(start.r0.shape[1:])}; got create_graph="
                             f"{create_graph}, r_init={r_init!r}, shape {tuple(shape)}")
        with torch.no_grad():
            r = _step_from(*start, z.detach(), tau)
    elif shared_start is not False and zeros and supports(module, head):
        r = first_step(module, z, torch.zeros((1, *shape), device=z.device, dtype=z.dtype),
                       head=head, tau=tau, create_graph=create_graph)
    elif shared_start:
        raise ValueError("shared_start=True needs r_init='zeros', no tracking and a network "
                         "for which fa.supports holds; pass shared_start=None or False")
    else:
        if r0 is None:
            r0 = init_r((z.shape[0], *shape), r_init, generator=generator, device=z.device,
                        dtype=z.dtype)
        return align(encode, z, r0, T=T, tau=tau, create_graph=create_graph, squash=squash,
                     **track)
    if T > 1:  # the other T - 1 steps from r_1
        return align(encode, z, r, T=T - 1, tau=tau, create_graph=create_graph, squash=squash)
    return AlignResult(r, apply_squash(r, squash))


def head_encoder(encoder: nn.Module, head: Head) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> :func:`read_out` of encoder(x) for ``head``. Raises KeyError: a missing head."""
    return lambda x: read_out(encoder(x), head)


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Algorithm 1's C, the batch's mean: (B, ...), (B, ...) -> ()."""
    # C = ||x - squash(r_T)||^2
    return (x - x_hat).pow(2).flatten(1).sum(1).mean()


def reconstruct(encoder: nn.Module, x: torch.Tensor, *, head: Head = "z",
                create_graph: bool = False, **kwargs) -> AlignResult:
    """Algorithm 1: x (B, C, H, W) recovered from z_x = E(x)[head] alone by :func:`solve`
    (``kwargs``). A DDP encoder runs E(r) on ``.module`` (docs/choices.md section 8)."""
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        z_x = read_out(encoder(x), head)
    return solve(encoder.module if isinstance(encoder, DDP) else encoder, z_x, x.shape[1:],
                 head=head, create_graph=create_graph, **kwargs)


def decode_latent(encoder: nn.Module, z: torch.Tensor, shape, *, head: Head = "z",
                  **kwargs) -> AlignResult:
    """FA's decoder (Figure 1, right): the image (B, *shape) whose latent is z (B, Z), no
    graph (:func:`solve`'s ``kwargs``, e.g. ``start`` from :func:`frozen_start`)."""
    return solve(encoder, z, tuple(shape), head=head, create_graph=False, **kwargs)


def fa_loss(encoder: nn.Module, x: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's C: x (B, C, H, W) -> (C with a graph, image); :func:`reconstruct`'s
    ``kwargs``."""
    image = reconstruct(encoder, x, create_graph=True, **kwargs).image
    return reconstruction_loss(x, image), image


def fa_step(encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, *,
            weight_clamp: Optional[float] = math.sqrt(2), sync: bool = True,
            autocast_dtype: Optional[torch.dtype] = None, loss_scale: float = 1.0,
            **fa_kwargs) -> dict:
    """Algorithm 1, one step on x (B, C, H, W) in [0, 1] with the Eq. 9 clamp: floats ``loss``
    (C) and ``mse`` (per pixel) in one sync that checks x (``sync=False``: 0-d tensors, no
    checks). Raises ValueError: bad images; NonFiniteLossError: the weights stay unchanged."""
    bounds = check_batch(x, encoder, deferred=True) if sync else None
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss, _ = fa_loss(encoder, x, **fa_kwargs)
    loss = loss if autocast_dtype is None else loss.float()
    values = {"loss": loss.detach(), "mse": loss.detach() / x[0].numel()}
    if sync:
        values = dict(zip(values, read_once(values.values(), bounds)))
    update(encoder, optimizer, loss if loss_scale == 1 else loss * loss_scale,
           values.values() if sync else None, {"rec": loss}, "the FA loss", weight_clamp)
    return values


# The guards of every training step: the batch checked and the values read in one sync, a
# non-finite loss refused before the update.


class NonFiniteLossError(FloatingPointError):
    """A NaN or infinite loss, refused before the update; ``term`` its first word ("rec",
    "KL", "class", "adversarial", "perceptual"), ``step`` 1-based (set by ``train.fit``)."""

    def __init__(self, message: str, *, term: Optional[str] = None, step: Optional[int] = None):
        super().__init__(message)
        self.term, self.step = term, step


#: What to do about each overflowing term, by the first word of its name.
TERM_HINTS = {
    "rec": "The reconstruction error overflowed: check that the images are in [0, 1], lower "
           "the learning rate or keep the weight clamp (Eq. 9).",
    "KL": "The KL term overflowed (the log-variance is bounded): lower lr or beta.",
    "class": "The class term overflowed: lower the learning rate or class_weight.",
    "adversarial": "An adversarial term overflowed: lower the GAN learning rate (gan_lr).",
    "perceptual": "The perceptual term overflowed: lower perceptual_weight or gan_lr."}


def check_batch(x, module=None, name: str = "the training batch", *, deferred: bool = False):
    """ValueError (saying how to convert) unless x is float (B, C, H, W) in [0, 1] in the
    dtype of ``module`` (or a list's). ``deferred``: no sync; returns (min, max) (2,) or None."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch tensor, got " + (
            f"tensor of dtype {x.dtype}: convert 8-bit images with x.float() / 255"
            if isinstance(x, torch.Tensor) else type(x).__name__))
    if x.dim() != 4:
        raise ValueError(f"{name} must have 4 dims (N, C, H, W), got shape {tuple(x.shape)}")
    want = next((p.dtype for m in (module if isinstance(module, (list, tuple)) else [module])
                 if m is not None for p in m.parameters() if p.is_floating_point()), None)
    if want is not None and x.dtype != want:
        raise ValueError(f"{name} is {x.dtype} but the model's parameters are {want}: "
                         f"convert the images with x.to({want})")
    bounds = torch.stack(torch.aminmax(x.detach())) if x.numel() else None
    if deferred or bounds is None:
        return bounds
    _check_range(*bounds.tolist(), name=name)


def _check_range(lo: float, hi: float, name: str) -> None:
    if not (lo >= 0 and hi <= 1):
        fix = ("; 8-bit images: divide by 255" if hi > 1.5 else
               "; images in [-1, 1]: map them with (x + 1) / 2" if lo < 0 else "")
        raise ValueError(f"{name} has values in [{lo:.6g}, {hi:.6g}]; this project's images are "
                         f"in [0, 1]{fix}")


def read_once(tensors, bounds: Optional[torch.Tensor] = None) -> list:
    """0-d ``tensors`` as floats in one device read, which also checks :func:`check_batch`'s
    ``bounds`` (ValueError)."""
    tensors = list(tensors)
    read = torch.cat([torch.stack([t.detach().double() for t in tensors])]
                     + ([bounds.double()] if bounds is not None else [])).tolist()
    if bounds is not None:
        _check_range(*read[len(tensors):], name="the training batch")
    return read[:len(tensors)]


def refuse_non_finite(terms, *, what: str = "the loss", collective: bool = False) -> None:
    """NonFiniteLossError if a term (any shape) holds NaN or inf; one sync. ``collective``:
    agreed over the torch.distributed group (DDP: all ranks refuse)."""
    import torch.distributed as dist

    finite = torch.stack([torch.isfinite(t.detach()).all() for t in terms.values()]).float()
    if collective and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        finite = finite if dist.get_backend() == "nccl" else finite.cpu()
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not (bad := [n for n, ok in zip(terms, finite.tolist()) if not ok]):
        return
    told = []
    for n, t in ((n, terms[n].detach()) for n in bad):
        kind = ("nan", "NaN") if torch.isnan(t).any() else ("inf", "infinite")
        told.append(f"{n} = {kind[0]}" if t.dim() == 0 else f"{n} {kind[1]} for "
                    f"{int((~torch.isfinite(t)).sum())} of {t.numel()} "
                    f"{'examples' if t.dim() == 1 else 'values'}")
    hint = " ".join(dict.fromkeys(TERM_HINTS.get(n.split()[0], "") for n in bad)).strip()
    raise NonFiniteLossError(f"{what} is not finite ({', '.join(told)}); the update was refused: "
                             f"nothing was written to the weights. {hint}".rstrip(),
                             term=bad[0].split()[0])


def update(module: nn.Module, optimizer, loss: torch.Tensor, values, terms: dict, what: str,
           weight_clamp: Optional[float], only: bool = False) -> None:
    """Refuse non-finite ``terms`` if a read value is not (always under DDP; ``values`` None:
    never), then backward (into ``module``'s parameters ``only``), the optimiser, Eq. 9."""
    ddp = isinstance(module, DDP)
    if values is not None and (ddp or not all(map(math.isfinite, values))):
        refuse_non_finite(terms, what=what, collective=ddp)
    # C's gradient reaches theta through E(x) and the inner gradient dL/dr (double backward)
    # (inputs= only where the loss reaches other networks: it costs the FA step ~3 %)
    loss.backward(inputs=list(module.parameters()) if only else None)
    optimizer.step()
    if weight_clamp is not None:
        # Eq. 9: theta <- clamp(theta, -sqrt 2, sqrt 2) for the Conv / Linear weights
        clamp_weights_(module, weight_clamp)
