"""Feature alignment, written once (Section 3.1, Eq. 1-2, Algorithm 1).

Inner problem: from r_0 (same shape as x), T gradient steps on

    L(r) = 1/2 || z_x - E(r) ||^2      (per example, summed over latent dimensions)
    r_t  = r_{t-1} - tau * dL/dr_{t-1}

Outer problem: C = || x - squash(r_T) ||^2 minimised over the encoder's parameters.

Two reductions matter (docs/method.md section 1):

* the inner energy is a per-example *sum* and the batch is combined by *sum*, so that each
  r_i receives exactly its own gradient: a batch mean would divide every step by B;
* the 1/2 factor is Appendix Eq. 11's; without it the step doubles.

With ``create_graph=True`` the inner gradient stays in the autograd graph, so C reaches the
encoder's parameters through dL/dr (a double backward). Training, sampling, the notebooks
and the tests all call :func:`align`.

Speed (same results): with r_0 = 0, shared by the whole batch, :func:`reconstruct` and
:func:`decode_latent` take the first inner step with :func:`shared_start_step`, which runs
E(0) once on a batch of one and applies the transposed Jacobian to the B residuals layer by
layer; T > 1 continues with :func:`align`'s loop. This removes the batch-B forward of
E(r_0) and its backward: an FA training step drops from ~1.5x to ~1.0x the FLOPs of a VAE
step of the same encoder (``benchmarks/run.py``). The result equals the textbook step
within fp32 rounding (``tests/test_speed_equivalence.py``); ``shared_start=False`` forces
the textbook path. Without a graph (``create_graph=False``: sampling, evaluation) the
batch-of-one forward E(0) and its activation pattern do not depend on z either, so they
are kept between calls (:func:`start_cache_info`) while the encoder's weights, buffers,
train/eval flags, device and dtype are unchanged: a sample then costs the transposed
Jacobian only, bit for bit the same result. Training (``create_graph=True``) never uses
this cache. Caveat, measured: coordinates whose exact gradient is zero (e.g. the
head's bias, which shifts E(x) and E(r) alike) get round-off gradients of ~1e-8 instead of
the textbook path's exact cancellation, and Adam with eps = 1e-8 turns those into steps of
up to lr: such coordinates drift, without effect on the loss.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

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
# The first step from a start shared by the whole batch (r_0 = 0): a faster, equal path
# --------------------------------------------------------------------------------------

#: Layers the shared-start step knows how to transpose (piecewise-linear activations only).
SHARED_START_LAYERS = (nn.Conv2d, nn.Linear, nn.LeakyReLU, nn.ReLU, nn.Flatten, nn.Identity)


def _module_has_hooks(module: nn.Module) -> bool:
    from torch.nn.modules import module as _m
    if any(getattr(_m, name, None) for name in (
            "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
            "_global_backward_pre_hooks")):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
               or getattr(m, "_backward_pre_hooks", None) for m in module.modules())


Head = Union[str, Sequence[str]]


def _head_names(head: Head) -> tuple[str, ...]:
    return (head,) if isinstance(head, str) else tuple(head)


def supports_shared_start(encoder: nn.Module, head: Head = "z") -> bool:
    """Whether :func:`shared_start_step` can take the first inner step of ``encoder``.

    True for a :class:`fa_utils.models.Encoder` (not a subclass with its own forward, not a
    ``DistributedDataParallel`` wrapper: pass its ``.module``) whose trunk holds only
    Conv2d (zero padding given as numbers), Linear, LeakyReLU, ReLU, Flatten(start_dim=1)
    and Identity layers, with the head ``head`` (a name, or a sequence of names whose
    outputs are concatenated, e.g. ``("mu", "logits")`` for a conditional VFA), and no
    module hooks.
    """
    from .models import Encoder
    if not isinstance(encoder, Encoder) or type(encoder).forward is not Encoder.forward:
        return False
    names = _head_names(head)
    if not names or any(h not in encoder.heads or not isinstance(encoder.heads[h], nn.Linear)
                        for h in names):
        return False
    for m in encoder.trunk:
        if not isinstance(m, SHARED_START_LAYERS):
            return False
        if isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return False
        if isinstance(m, nn.Flatten) and m.start_dim != 1:
            return False
    return not _module_has_hooks(encoder)


def _start_forward(encoder: nn.Module, r0: torch.Tensor, names: tuple[str, ...]):
    """E(r_0) on the batch of one, the (concatenated) head weight and the tape of what the
    transposed Jacobian needs (conv input sizes, activation slopes, flatten shapes)."""
    tape: list[tuple[str, object]] = []
    h = r0
    for m in encoder.trunk:
        if isinstance(m, nn.Conv2d):
            tape.append(("conv", (m, h.shape[-2:])))
            h = m(h)
        elif isinstance(m, nn.Linear):
            tape.append(("linear", m))
            h = m(h)
        elif isinstance(m, (nn.LeakyReLU, nn.ReLU)):
            slope = m.negative_slope if isinstance(m, nn.LeakyReLU) else 0.0
            with torch.no_grad():  # the derivative is piecewise constant: no gradient
                # PyTorch's convention at the kink (input exactly 0): the slope
                d = torch.where(h > 0, torch.ones((), dtype=h.dtype, device=h.device),
                                torch.full((), slope, dtype=h.dtype, device=h.device))
            tape.append(("mask", d))
            h = m(h)
        elif isinstance(m, nn.Flatten):
            tape.append(("shape", h.shape[1:]))
            h = m(h)
        # nn.Identity: nothing to record
    layers = [encoder.heads[n] for n in names]
    if len(layers) == 1:
        return layers[0](h), layers[0].weight, tape
    return (torch.cat([lay(h) for lay in layers], 1),
            torch.cat([lay.weight for lay in layers], 0), tape)


def _transposed_jacobian(z_r: torch.Tensor, weight: torch.Tensor, tape: list,
                         z_target: torch.Tensor) -> torch.Tensor:
    """J_E(r_0)^T (E(r_0) - z_target) for B latents, from :func:`_start_forward`'s output."""
    if z_target.shape[1:] != z_r.shape[1:]:
        raise ValueError(f"latent shapes differ: target {tuple(z_target.shape)} vs "
                         f"E(r) {tuple(z_r.shape)}")
    g = z_r - z_target  # (B, Z): dL/dE(r) of L = 1/2 ||z - E(r)||^2, per example
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


def _check_shared_start(encoder: nn.Module, head: Head, r0: torch.Tensor) -> None:
    if not supports_shared_start(encoder, head):
        raise ValueError(f"shared_start_step does not support this encoder/head "
                         f"({type(encoder).__name__}, head {head!r}); see supports_shared_start")
    if r0.shape[0] != 1:
        raise ValueError(f"r0 must be one shared start of shape (1, ...), got {tuple(r0.shape)}")


def shared_start_step(encoder: nn.Module, z_target: torch.Tensor, r0: torch.Tensor, *,
                      head: Head = "z", tau: float = 1.0,
                      create_graph: bool = True) -> torch.Tensor:
    """One step of Eq. 2 from a start r_0 shared by every example (r_0 = 0 in training).

    r_1 = r_0 - tau * J_E(r_0)^T (E(r_0) - z_target), with E(r_0) and the Jacobian's
    activation pattern computed once, on a batch of one, and J^T applied to the B latent
    residuals layer by layer (transposed convolutions and matrix products). This equals
    :func:`align`'s first step (same maths; fp32 rounding differs, about 1e-6 relative) and
    skips the batch-B forward of E(r_0) and, in training, its backward: the FA training
    step then costs about as much as a VAE step (docs/method.md section 1: from r_0 = 0 the step is the
    transposed Jacobian of the encoder at the origin). Only piecewise-linear activations
    are supported, whose derivative does not depend on the weights to first order.

    This function always recomputes E(r_0); :func:`decode_latent` (and :func:`reconstruct`
    without a graph) reuse it between calls instead (:func:`start_cache_info`).

    Args:
        encoder: an encoder for which :func:`supports_shared_start` holds.
        z_target: (B, Z) latents; may carry a graph to the encoder (training).
        r0: (1, C, H, W) the shared start (a constant).
        head: the head's name, or names whose outputs are concatenated (Z their total
            width; e.g. ``("mu", "logits")``, the conditional VFA's random side, Figure 3).
        create_graph: keep the step in the graph (training); ``False`` returns it detached.

    Returns:
        (B, C, H, W) r_1.

    Raises:
        ValueError: an unsupported encoder, or a latent shape that differs from E(r_0)'s.
    """
    _check_shared_start(encoder, head, r0)
    r0 = r0.detach()
    if not create_graph:
        z_target = z_target.detach()
    with torch.set_grad_enabled(create_graph):
        z_r, weight, tape = _start_forward(encoder, r0, _head_names(head))
        g = _transposed_jacobian(z_r, weight, tape, z_target)
        r1 = r0 - tau * g
    return r1 if create_graph else r1.detach()


# E(0) kept between sampling calls (create_graph=False only)
# --------------------------------------------------------------------------------------

#: Set to ``False`` to recompute E(r_0) on every sampling call (the cache is then unused).
START_CACHE_ENABLED = True

# encoder -> {(heads, r0 shape, dtype, device): (key, weak refs to the tensors, entry)};
# weak keys: an encoder that is dropped takes its entries with it.
_START_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_START_CACHE_COUNTS = {"hits": 0, "misses": 0}

# Fused optimisers (``torch.optim.Adam(fused=True)``, what ``train.make_adam`` picks) update
# the parameters without bumping their version counters (measured, torch 2.14 CPU), so
# every ``torch.optim`` step, of any optimiser, also invalidates every entry: a global
# step post-hook counts them (an integer increment per step).
_OPTIMIZER_STEPS = [0]


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    _OPTIMIZER_STEPS[0] += 1


_OPTIMIZER_HOOK = register_optimizer_step_post_hook(_count_optimizer_step)


_LAYER_SETTINGS = ("negative_slope", "stride", "padding", "dilation", "groups", "start_dim")


def _start_state(encoder: nn.Module) -> tuple[list[torch.Tensor], tuple]:
    """Everything E(r_0) and its activation pattern depend on, as a comparable key: each
    parameter's and buffer's identity, version counter (bumped by in-place changes through
    autograd: the weight clamp, ``load_state_dict``, for-loop and foreach optimisers),
    storage, dtype, device and shape; every module's train/eval flag; the layers
    themselves and their settings; the number of ``torch.optim`` steps taken by any
    optimiser (fused ones do not bump version counters); inference mode."""
    tensors = list(encoder.parameters()) + list(encoder.buffers())
    tkey = tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device, t.shape, t.stride())
                 for t in tensors)
    # plain attributes live in the module's __dict__ (getattr would go through
    # nn.Module.__getattr__ and an exception for each missing one: 60 us on the MNIST net)
    mkey = tuple((id(m), m.training) + tuple(m.__dict__.get(a) for a in _LAYER_SETTINGS)
                 for m in encoder.modules())
    return tensors, (tkey, mkey, _OPTIMIZER_STEPS[0], torch.is_inference_mode_enabled())


def _cached_start_step(encoder: nn.Module, z_target: torch.Tensor, shape, *,
                       head: Head, tau: float) -> torch.Tensor:
    """:func:`shared_start_step` from r_0 = 0 (1, *shape) with ``create_graph=False``:
    E(r_0), the head weight and the tape kept between calls while :func:`_start_state` is
    unchanged; the same operations on the same tensors, so the same result bit for bit.
    Never used with a graph (training)."""
    r0 = torch.zeros((1, *shape), device=z_target.device, dtype=z_target.dtype)
    _check_shared_start(encoder, head, r0)
    names = _head_names(head)
    z_target = z_target.detach()
    slot = (names, tuple(r0.shape), r0.dtype, r0.device)
    tensors, key = _start_state(encoder)
    with torch.no_grad():
        per_encoder = _START_CACHE.setdefault(encoder, {})
        hit = per_encoder.get(slot)
        if (hit is not None and hit[0] == key and len(hit[1]) == len(tensors)
                and all(ref() is t for ref, t in zip(hit[1], tensors))):
            _START_CACHE_COUNTS["hits"] += 1
            _, _, (z_r, weight, tape) = hit
        else:
            _START_CACHE_COUNTS["misses"] += 1
            z_r, weight, tape = _start_forward(encoder, r0, names)
            per_encoder[slot] = (key, [weakref.ref(t) for t in tensors],
                                 (z_r, weight, tape))
        g = _transposed_jacobian(z_r, weight, tape, z_target)
        r1 = r0 - tau * g
    return r1


def start_cache_info() -> dict[str, int]:
    """Counts of the E(r_0) cache used by sampling (:func:`decode_latent`,
    :func:`reconstruct` without a graph): ``hits`` and ``misses`` since the start (or
    :func:`clear_start_cache`), ``encoders`` (how many encoders have an entry)."""
    return {**_START_CACHE_COUNTS, "encoders": len(_START_CACHE)}


def clear_start_cache(encoder: Optional[nn.Module] = None) -> None:
    """Drop the cached E(r_0) of ``encoder`` (all encoders, and the counts, by default).
    Needed only after a weight change that neither bumps a version counter nor is a
    ``torch.optim`` step: an in-place write through ``param.data``, a fused kernel called
    directly, a ``torch.distributed`` collective writing into the parameters."""
    if encoder is None:
        _START_CACHE.clear()
        _START_CACHE_COUNTS.update(hits=0, misses=0)
    else:
        _START_CACHE.pop(encoder, None)


def _use_shared_start(shared_start: Optional[bool], encoder: nn.Module, head: Head,
                      r_init: str, kwargs: dict) -> bool:
    if shared_start is False:
        return False
    ok = (r_init == "zeros" and not kwargs.get("track_energy")
          and not kwargs.get("track_trajectory") and supports_shared_start(encoder, head))
    if shared_start and not ok:
        raise ValueError("shared_start=True needs r_init='zeros', no tracking and an encoder "
                         "for which fa.supports_shared_start holds")
    return ok


def _solve(encoder: nn.Module, z: torch.Tensor, shape, *, head: Head, T: int, tau: float,
           r_init: str, squash: str, generator: Optional[torch.Generator], create_graph: bool,
           shared_start: Optional[bool], kwargs: dict) -> AlignResult:
    """The inner problem for latents z from :func:`init_r`'s start, by the shared-start
    first step when it applies, else by :func:`align`."""
    if _use_shared_start(shared_start, encoder, head, r_init, kwargs):
        _check_inner_args(T, tau, squash)
        if create_graph or not START_CACHE_ENABLED:
            r0 = torch.zeros((1, *shape), device=z.device, dtype=z.dtype)
            r = shared_start_step(encoder, z, r0, head=head, tau=tau, create_graph=create_graph)
        else:  # sampling / evaluation: E(r_0) reused while the weights are unchanged
            r = _cached_start_step(encoder, z, shape, head=head, tau=tau)
        if T > 1:
            r = _iterate(head_encoder(encoder, head), z, r, T=T - 1, tau=tau,
                         create_graph=create_graph)
        return AlignResult(r=r, image=apply_squash(r, squash))
    r0 = init_r((z.shape[0], *shape), r_init, generator=generator, device=z.device,
                dtype=z.dtype)
    return align(head_encoder(encoder, head), z, r0, T=T, tau=tau, create_graph=create_graph,
                 squash=squash, **kwargs)


def head_encoder(encoder: nn.Module, head: Head) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> encoder(x)[head]``, for encoders that return a dict of named heads; for a
    sequence of names, the heads' outputs concatenated along dim 1 (e.g. ``("mu",
    "logits")``: (B, Z + K), the conditional VFA's random side with ``rand_side="mu"``).

    Raises:
        KeyError: the encoder has no head of that name (the message lists its heads).
    """
    names = _head_names(head)

    def encode(x: torch.Tensor) -> torch.Tensor:
        out = encoder(x)
        for name in names:
            if name not in out:
                raise KeyError(f"encoder has no head {name!r}; its heads are {list(out)}")
        if len(names) == 1:
            return out[names[0]]
        return torch.cat([out[name] for name in names], 1)
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
        shared_start: ``None`` (default): take the first inner step with
            :func:`shared_start_step` when r_init is ``"zeros"``, nothing is tracked and the
            encoder supports it (same result within fp32 rounding, faster; without a graph
            E(0) is also reused between calls, as in :func:`decode_latent`); ``False``:
            always :func:`align`; ``True``: require the shared-start path.
        inner_encoder: the module that runs the inner problem E(r) (default ``encoder``);
            e.g. the module inside a ``DistributedDataParallel`` wrapper, so that the
            wrapper sees one forward (E(x)) per step.
    """
    encode = head_encoder(encoder, head)
    _check_inner_args(T, tau, squash)
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        z_x = encode(x)
    return _solve(encoder if inner_encoder is None else inner_encoder, z_x, x.shape[1:],
                  head=head, T=T, tau=tau, r_init=r_init, squash=squash, generator=generator,
                  create_graph=create_graph, shared_start=shared_start, kwargs=kwargs)


def decode_latent(encoder: nn.Module, z: torch.Tensor, shape, *, head: Head = "z", T: int = 1,
                  tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
                  generator: Optional[torch.Generator] = None,
                  shared_start: Optional[bool] = None, **kwargs) -> AlignResult:
    """The image whose latent is z, found by the inner optimisation (Figure 1, right).

    On the shared-start path (r_0 = 0) E(0) and its activation pattern are reused between
    calls while the encoder is unchanged (:func:`start_cache_info`): with T = 1 a call
    costs one transposed-Jacobian product, r_1 = tau J_E(0)^T (z - E(0)) (Eq. 2).

    Args:
        z: (B, Z) latents (e.g. drawn from N(0, I) for sampling).
        shape: the image shape (C, H, W).
        head: a head's name, or names whose outputs are concatenated (:func:`head_encoder`);
            z then has their total width.
        shared_start: as in :func:`reconstruct`.

    Returns:
        :class:`AlignResult` with image (B, C, H, W), detached.
    """
    return _solve(encoder, z, tuple(shape), head=head, T=T, tau=tau, r_init=r_init,
                  squash=squash, generator=generator, create_graph=False,
                  shared_start=shared_start, kwargs=kwargs)


def transposed_jacobian_decoder(encoder: nn.Module, z: torch.Tensor, shape, *,
                                head: str = "z") -> torch.Tensor:
    """r_1 = J_E(0)^T (z - E(0)): the one-step FA decoder from r_0 = 0, written explicitly.

    docs/method.md section 1: with r_0 = 0, T = 1 and tau = 1, the inner step equals the
    transposed Jacobian of the encoder at the origin applied to the latent residual, i.e. a
    tied-weight *linear* decoder. Computed with ``torch.func.vjp``, independently of
    :func:`align`, so the two can be compared.

    Shapes: z (B, Z) -> (B, *shape).
    """
    encode = head_encoder(encoder, head)
    zero = torch.zeros((z.shape[0], *shape), device=z.device, dtype=z.dtype)
    e0, vjp_fn = torch.func.vjp(encode, zero)
    (r1,) = vjp_fn(z - e0)
    return r1.detach()


# --------------------------------------------------------------------------------------
# Algorithm 1's training step
# --------------------------------------------------------------------------------------

import math  # noqa: E402  (here, with the training step that uses it)

from .models import clamp_weights_  # noqa: E402


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


def _step_values(loss: torch.Tensor, numel: int, sync: bool):
    """The FA step's logged values ``{"loss": C, "mse": C / numel}``: floats from one
    device sync, or 0-d tensors without any when ``sync=False``."""
    loss = loss.detach()
    values = {"loss": loss, "mse": loss / numel}
    if not sync:
        return values
    return dict(zip(values, torch.stack(list(values.values())).tolist()))  # one sync


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

    Checks (``sync=True``): ``x`` as :func:`fa_utils.train.check_batch` (one more sync),
    and a non-finite loss is refused before ``backward()``
    (:func:`fa_utils.train.refuse_non_finite`, term "rec"; for a DDP encoder agreed over
    the ranks). With ``sync=False`` neither check runs (no sync at all): the caller checks
    the returned tensors.

    ``autocast_dtype``: run the loss under ``torch.autocast`` with this dtype (e.g.
    ``torch.bfloat16`` on a GPU). Off by default: measured on a CPU (``benchmarks.run``,
    section 7), bf16 autocast moves the outer gradient by 5.7e-2 relative to float64 against
    2-4e-6 for fp32, so fp32 is kept; not yet measured on a GPU.
    Other keyword arguments go to :func:`fa_loss` (head, T, tau, r_init, squash,
    shared_start, inner_encoder).

    Raises:
        ValueError: bad images (:func:`fa_utils.train.check_batch`).
        fa_utils.train.NonFiniteLossError: the loss is NaN or infinite; the weights are
            unchanged.
    """
    from .train import check_batch, refuse_non_finite

    if sync:
        check_batch(x, encoder)
    optimizer.zero_grad(set_to_none=True)
    if autocast_dtype is None:
        loss, _ = fa_loss(encoder, x, generator=generator, **fa_kwargs)
    else:
        with torch.autocast(x.device.type, dtype=autocast_dtype):
            loss, _ = fa_loss(encoder, x, generator=generator, **fa_kwargs)
        loss = loss.float()
    values = None
    if sync:
        values = _step_values(loss, x[0].numel(), sync)  # the step's one sync, before the update
        ddp = isinstance(encoder, nn.parallel.DistributedDataParallel)
        if ddp or not math.isfinite(values["loss"]):
            refuse_non_finite({"rec": loss}, what="the FA loss", collective=ddp)
    loss.backward()
    optimizer.step()
    if weight_clamp is not None:
        clamp_weights_(encoder, weight_clamp)
    return values if values is not None else _step_values(loss, x[0].numel(), sync)
