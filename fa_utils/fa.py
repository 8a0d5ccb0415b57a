"""Feature alignment, written once (Section 3.1, Eq. 1-2, Algorithm 1).

Inner problem: from r_0 (same shape as x), T gradient steps on

    L(r) = 1/2 || z_x - E(r) ||^2      (per example, summed over latent dimensions)
    r_t  = r_{t-1} - tau * dL/dr_{t-1}

Outer problem: C = || x - squash(r_T) ||^2 minimised over the encoder's parameters.

Two reductions matter (METHOD.md section 1):

* the inner energy is a per-example *sum* and the batch is combined by *sum*, so that each
  r_i receives exactly its own gradient: a batch mean would divide every step by B;
* the 1/2 factor is Appendix Eq. 11's; without it the step doubles.

With ``create_graph=True`` the inner gradient stays in the autograd graph, so C reaches the
encoder's parameters through dL/dr (a double backward). Training, sampling, the notebooks
and the tests all call :func:`align`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

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
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    apply_squash(r0[:0], squash)  # validate early
    energies: list[torch.Tensor] = []
    trajectory: list[torch.Tensor] = []
    if not create_graph:
        z_target = z_target.detach()
    with torch.enable_grad():
        r = r0.detach().requires_grad_(True)
        for _ in range(T):
            if track_trajectory:
                trajectory.append(r.detach().clone())
            energy = inner_energy(z_target, encode(r))
            if track_energy:
                energies.append(energy.detach())
            # sum over the batch: each r_i only sees its own term (never a mean)
            (grad,) = torch.autograd.grad(energy.sum(), r, create_graph=create_graph)
            r = r - tau * grad
            if not create_graph:
                r = r.detach().requires_grad_(True)
        if track_energy:
            energies.append(inner_energy(z_target, encode(r)).detach())
    if track_trajectory:
        trajectory.append(r.detach().clone())
    if not create_graph:
        r = r.detach()
    return AlignResult(r=r, image=apply_squash(r, squash), energies=energies,
                       trajectory=trajectory)


def head_encoder(encoder: nn.Module, head: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> encoder(x)[head]``, for encoders that return a dict of named heads.

    Raises:
        KeyError: the encoder has no head of that name (the message lists its heads).
    """
    def encode(x: torch.Tensor) -> torch.Tensor:
        out = encoder(x)
        if head not in out:
            raise KeyError(f"encoder has no head {head!r}; its heads are {list(out)}")
        return out[head]
    return encode


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """C = ||x - x_hat||^2 summed per example, averaged over the batch (Algorithm 1).

    Shapes: (B, ...) and (B, ...) -> scalar. (The batch average only rescales the
    gradient, which Adam ignores; the per-example sum keeps the paper's loss.)
    """
    return (x - x_hat).pow(2).flatten(1).sum(1).mean()


def reconstruct(encoder: nn.Module, x: torch.Tensor, *, head: str = "z", T: int = 1,
                tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
                generator: Optional[torch.Generator] = None,
                create_graph: bool = False, **kwargs) -> AlignResult:
    """Recover x from its latent alone: z_x = E(x)[head], then :func:`align` from r_0.

    Shapes: x (B, C, H, W) -> AlignResult with image (B, C, H, W). With
    ``create_graph=True`` this is the forward pass of the FA training loss.
    Extra keyword arguments go to :func:`align`.
    """
    encode = head_encoder(encoder, head)
    with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()):
        z_x = encode(x)
    r0 = init_r(x.shape, r_init, generator=generator, device=x.device, dtype=x.dtype)
    return align(encode, z_x, r0, T=T, tau=tau, create_graph=create_graph, squash=squash,
                 **kwargs)


def decode_latent(encoder: nn.Module, z: torch.Tensor, shape, *, head: str = "z", T: int = 1,
                  tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
                  generator: Optional[torch.Generator] = None, **kwargs) -> AlignResult:
    """The image whose latent is z, found by the inner optimisation (Figure 1, right).

    Args:
        z: (B, Z) latents (e.g. drawn from N(0, I) for sampling).
        shape: the image shape (C, H, W).

    Returns:
        :class:`AlignResult` with image (B, C, H, W), detached.
    """
    r0 = init_r((z.shape[0], *shape), r_init, generator=generator, device=z.device,
                dtype=z.dtype)
    return align(head_encoder(encoder, head), z, r0, T=T, tau=tau, create_graph=False,
                 squash=squash, **kwargs)


def transposed_jacobian_decoder(encoder: nn.Module, z: torch.Tensor, shape, *,
                                head: str = "z") -> torch.Tensor:
    """r_1 = J_E(0)^T (z - E(0)): the one-step FA decoder from r_0 = 0, written explicitly.

    METHOD.md section 1: with r_0 = 0, T = 1 and tau = 1, the inner step equals the
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
