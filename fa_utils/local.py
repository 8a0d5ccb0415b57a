"""Local feature alignment (Section 3.5, Algorithms 2-3, Figure 16) and the memory it saves.

Each layer l of :class:`LocalFANet` (the encoder shape of Tables 7-9, arcsinh activations) is
a :class:`LocalBlock` trained alone (Algorithm 2) on its detached input x_l:

    a_l     = op_l(x_l)                                  (the target, with its graph)
    r_hat_l = r_0 - tau d/dr 1/2 ||a_l - op_l(r)||^2     (T steps, :func:`fa.align`)
    C_l     = ||x_l - r_hat_l||^2,   x_{l+1} = arcsinh(a_l).detach()

Reconstruction (Algorithm 3) goes down from z: sinh, then the inner problem on op_l. The
``align_activation`` reading and the memory measurement (bytes saved for backward,
:class:`fa_utils.metrics.SavedTensorMeter`): docs/method.md section 5.
"""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from . import fa
from .metrics import CudaPeak, SavedTensorMeter, Stopwatch, one_thread
from .models import (Architecture, Encoder, architecture, clamp_weights_, init_orthogonal_)

SQRT2 = math.sqrt(2.0)
#: Stored in local-FA checkpoints; bumped when :class:`LocalFANet`'s layout changes, so that
#: an old checkpoint is refused with a clear message instead of a state_dict error.
LOCAL_NET_FORMAT = 2


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------


class LocalBlock(nn.Module):
    """One layer of local FA: ``op`` (Conv2d, or Flatten + Linear) then arcsinh if
    ``activation``. forward: x_l -> x_{l+1} = arcsinh(op(x_l)) (or op(x_l))."""

    def __init__(self, op: nn.Module, activation: bool):
        super().__init__()
        self.op = op
        self.activation = bool(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.op(x)
        return torch.asinh(a) if self.activation else a

    def inverse_activation(self, h: torch.Tensor) -> torch.Tensor:
        """sinh(h) after an arcsinh layer, else h (Algorithm 3, lines 12-14)."""
        return torch.sinh(h) if self.activation else h

    def extra_repr(self) -> str:
        return f"activation={'asinh' if self.activation else 'none'}"


class LocalFANet(nn.Module):
    """Tables 7-9's encoder with arcsinh activations, as a list of :class:`LocalBlock`.

    Layers: for each width w of the architecture, Conv2d(w, 3, 1, 1) and Conv2d(w, 3, 2, 1),
    each + arcsinh; then Flatten + Linear(hidden) + arcsinh; then Linear(Z), no activation.
    forward: (B, C, H, W) -> (B, Z). ``input_shapes[l]`` is the per-example shape of x_l.

    ``bias``: give every layer a bias. With the default inner problem on the linear
    operator the bias cancels out of the inner step (r_1 = W^T (W x + b - b)), so its
    gradient is zero analytically; in floating point it is rounding noise of either sign,
    which Adam's normalisation turns into full-size random steps. Hence no biases by
    default; training uses ``bias=align_activation`` (docs/choices.md section 3).
    """

    def __init__(self, arch: Architecture, latent_dim: int = 128, bias: bool = False):
        super().__init__()
        self.arch = arch
        self.latent_dim = int(latent_dim)
        blocks: list[LocalBlock] = []
        c = arch.channels
        for w in arch.widths:
            blocks.append(LocalBlock(nn.Conv2d(c, w, 3, 1, 1, bias=bias), True))
            blocks.append(LocalBlock(nn.Conv2d(w, w, 3, 2, 1, bias=bias), True))
            c = w
        blocks.append(LocalBlock(nn.Sequential(nn.Flatten(),
                                               nn.Linear(arch.flat_dim, arch.hidden, bias=bias)), True))
        blocks.append(LocalBlock(nn.Linear(arch.hidden, self.latent_dim, bias=bias), False))
        self.blocks = nn.ModuleList(blocks)
        shapes = [(arch.channels, arch.size, arch.size)]
        for w in arch.widths:
            s = shapes[-1][1]
            shapes += [(w, s, s), (w, (s + 1) // 2, (s + 1) // 2)]
        shapes += [(arch.hidden,)]
        self.input_shapes: list[tuple[int, ...]] = shapes  # input of block l, l = 0..L

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[x_0 = x, x_1, ..., x_{L+1} = z]: every layer's input and the latent, no graph."""
        out = [x]
        for block in self.blocks:
            out.append(block(out[-1]))
        return out


def make_local_net(arch: str | Architecture, latent_dim: int = 128, *,
                   spectral_init: bool = True, seed: int = 0, bias: bool = False) -> LocalFANet:
    """The local-FA network of a dataset (or an :class:`Architecture`).

    Orthogonal weights and zero biases (Section 4; arcsinh is smooth at 0, so zero biases
    put no unit at a kink). With ``spectral_init`` each layer's weight is then divided by
    the operator norm of its linear map (:func:`operator_norm`): an orthogonal 3x3 kernel
    acts on an image with norm up to 3 (each pixel sits in 9 patches), so the inner
    iteration r <- r + W^T (a - W r) would start outside its stable range ||W||^2 < 2
    (the matrix form of Appendix 7.1's w^2 < 2), and the one-step reconstruction W^T W x
    would be ~9x too large. Orthogonality of the kernel is kept; only its scale changes.
    """
    net = LocalFANet(architecture(arch) if isinstance(arch, str) else arch, latent_dim, bias)
    init_orthogonal_(net, zero_bias=True)
    if spectral_init:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for block, shape in zip(net.blocks, net.input_shapes):
                norm = operator_norm(block.op, shape, generator=g)
                for w in (m.weight for m in block.op.modules() if hasattr(m, "weight")):
                    w.div_(norm)
    return net


def operator_norm(op: nn.Module, input_shape, iters: int = 30,
                  generator: Optional[torch.Generator] = None) -> float:
    """Largest singular value of the linear part of ``op`` (bias removed) on inputs of
    ``input_shape`` (per example), by power iteration on W^T W. Shapes: (1, *input_shape).

    Runs with one intra-op thread (a batch of one: :func:`fa_utils.metrics.one_thread`,
    docs/choices.md section 1)."""
    with one_thread():
        return _power_iteration(op, input_shape, iters, generator)


def _power_iteration(op, input_shape, iters, generator) -> float:
    p = next(op.parameters())
    v = torch.randn((1, *input_shape), generator=generator).to(p.device, p.dtype)
    lam = torch.tensor(0.0)
    with fa.inner_autograd():
        zero = op(torch.zeros_like(v)).detach()
        for _ in range(iters):
            v = (v / v.norm()).requires_grad_(True)
            (wtw_v,) = torch.autograd.grad(0.5 * (op(v) - zero).pow(2).sum(), v)
            lam = wtw_v.norm()
            v = wtw_v.detach()
    return float(lam.sqrt())


def make_optimizers(net: LocalFANet, lr: float, betas=(0.5, 0.999)) -> list[torch.optim.Adam]:
    """One Adam per layer: a layer's update never touches another layer's state."""
    return [torch.optim.Adam(b.parameters(), lr=lr, betas=betas) for b in net.blocks]


# --------------------------------------------------------------------------------------
# Algorithm 2: training
# --------------------------------------------------------------------------------------


def _inner(block: LocalBlock, align_activation: bool):
    """The function whose inner problem is solved for ``block`` (see module docstring)."""
    return block if align_activation else block.op


def _solve(block: LocalBlock, target: torch.Tensor, input_shape, *, T: int, tau: float,
           r_init: str, align_activation: bool, generator: Optional[torch.Generator],
           create_graph: bool, shared_start: Optional[bool]) -> torch.Tensor:
    """The inner problem of one layer (:func:`fa_utils.fa.solve` on :func:`_inner`: from
    r_0 = 0 the shared first step of a linear operator, as in global FA; the textbook path
    for ``align_activation``, whose arcsinh is smooth). (B, *out) -> (B, *input_shape)."""
    return fa.solve(_inner(block, align_activation), target, tuple(input_shape), T=T, tau=tau,
                    r_init=r_init, generator=generator, create_graph=create_graph,
                    shared_start=shared_start).r


def local_layer_loss(block: LocalBlock, x: torch.Tensor, *, T: int = 1, tau: float = 1.0,
                     r_init: str = "zeros", align_activation: bool = False,
                     generator: Optional[torch.Generator] = None,
                     shared_start: Optional[bool] = None):
    """Algorithm 2, lines 2-12, for one layer: C_l = ||x_l - r_hat_l||^2.

    Args:
        block: layer l. x: (B, ...) its input, treated as a constant (detached here).
        shared_start: as in :func:`fa_utils.fa.solve` (default: from r_0 = 0 one start
            shared by the batch; ``False``: B starts, the textbook path).

    Returns:
        (C_l scalar: per-example sum, batch mean, with a graph to ``block``'s parameters
        only; x_{l+1} = block(x_l) detached; r_hat_l detached).
    """
    x = x.detach()
    a = block.op(x)
    with torch.no_grad():  # x_{l+1} is a constant for the next layer: no graph
        x_next = torch.asinh(a) if block.activation else a.detach()
    target = block(x) if align_activation else a
    r = _solve(block, target, x.shape[1:], T=T, tau=tau, r_init=r_init,
               align_activation=align_activation, generator=generator, create_graph=True,
               shared_start=shared_start)
    return fa.reconstruction_loss(x, r), x_next, r.detach()


def local_layer_step(block: LocalBlock, optimizer: torch.optim.Optimizer, x: torch.Tensor, *,
                     clamp: Optional[float] = SQRT2, **kwargs) -> tuple[torch.Tensor, float]:
    """One Adam step of layer l on C_l (then the Eq. 9 clamp of its weights if ``clamp``).

    Everything built here (the layer's graph) is freed on return, before the next layer.

    Returns:
        (x_{l+1} detached, C_l as a float).
    """
    optimizer.zero_grad(set_to_none=True)
    loss, x_next, _ = local_layer_loss(block, x, **kwargs)
    loss.backward()
    optimizer.step()
    if clamp is not None:
        clamp_weights_(block, clamp)
    return x_next, loss.item()


def local_step(net: LocalFANet, optimizers: Sequence[torch.optim.Optimizer], x: torch.Tensor, *,
               clamp: Optional[float] = SQRT2, **kwargs) -> dict[str, float]:
    """Algorithm 2 on one batch: every layer in turn, from the first to the last, each
    updated by its own optimiser before the next layer runs (keyword arguments go to
    :func:`local_layer_loss`).

    Shapes: x (B, C, H, W). Returns ``{"c0": C_0, ..., "cL": C_L, "loss": mean over layers
    of C_l / dim(x_l)}`` (C_l per example; ``loss`` per element, so that layers of
    different sizes weigh alike in the log).
    """
    out: dict[str, float] = {}
    per_elem = []
    for i, (block, opt) in enumerate(zip(net.blocks, optimizers)):
        n = x[0].numel()
        x, c = local_layer_step(block, opt, x, clamp=clamp, **kwargs)
        out[f"c{i}"] = c
        per_elem.append(c / n)
    out["loss"] = sum(per_elem) / len(per_elem)
    return out


# --------------------------------------------------------------------------------------
# Algorithm 3: reconstruction
# --------------------------------------------------------------------------------------


def invert_block(block: LocalBlock, h: torch.Tensor, input_shape, *, T: int = 1,
                 tau: float = 1.0, r_init: str = "zeros", align_activation: bool = False,
                 generator: Optional[torch.Generator] = None,
                 shared_start: Optional[bool] = None) -> torch.Tensor:
    """Estimate a layer's input from its output h (one layer of Algorithm 3, no graph).

    ``align_activation=False``: T steps of 1/2 ||sinh(h) - op(r)||^2 (sinh only after an
    arcsinh layer). ``True``: T steps of 1/2 ||h - block(r)||^2 and no sinh.
    Shapes: h (B, *out) -> (B, *input_shape).
    """
    target = h if align_activation else block.inverse_activation(h)
    return _solve(block, target.detach(), tuple(input_shape), T=T, tau=tau, r_init=r_init,
                  align_activation=align_activation, generator=generator, create_graph=False,
                  shared_start=shared_start)


def local_reconstruct(net: LocalFANet, z: torch.Tensor, **kwargs) -> torch.Tensor:
    """Algorithm 3: from latents z (B, Z) down to images (B, C, H, W), layer by layer.

    Keyword arguments go to :func:`invert_block` (T, tau, r_init, align_activation,
    generator). No squashing: the result is the last inner iterate as it is.
    """
    h = z
    for block, shape in zip(reversed(net.blocks), reversed(net.input_shapes)):
        h = invert_block(block, h, shape, **kwargs)
    return h


def local_recover(net: LocalFANet, x: torch.Tensor, *, batch_size: int = 500, seed: int = 0,
                  **kwargs) -> torch.Tensor:
    """x -> z = net(x) -> Algorithm 3, in batches. (N, C, H, W) -> (N, C, H, W) on x's device."""
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = []
    for chunk in x.split(batch_size):
        with torch.no_grad():
            z = net(chunk.to(device))
        out.append(local_reconstruct(net, z, generator=g, **kwargs).to(x.device))
    return torch.cat(out)


def layer_errors(net: LocalFANet, x: torch.Tensor, **kwargs) -> list[float]:
    """Relative error ||r_l - x_l|| / ||x_l|| of inverting each layer alone from its *true*
    output x_{l+1} (where information is lost). (N, C, H, W) -> L + 1 floats."""
    device = next(net.parameters()).device
    feats = net.features(x.to(device))
    errs = []
    for l, (block, shape) in enumerate(zip(net.blocks, net.input_shapes)):
        r = invert_block(block, feats[l + 1], shape, **kwargs)
        errs.append(float((r - feats[l]).norm() / feats[l].norm().clamp_min(1e-12)))
    return errs


# --------------------------------------------------------------------------------------
# Training from a config (what notebook 05 calls)
# --------------------------------------------------------------------------------------


def recon_kwargs(cfg) -> dict:
    """Algorithm 3's settings from a :class:`fa_utils.config.LocalFAConfig`."""
    return dict(T=cfg.recon_T, tau=cfg.recon_tau, r_init=cfg.r_init,
                align_activation=cfg.align_activation)


# --------------------------------------------------------------------------------------
# Memory: bytes saved for backward, CUDA peaks, step times
# --------------------------------------------------------------------------------------


@dataclass
class StepMemory:
    """One method's training step on one architecture (:func:`measure_step_memory`).

    Bytes are per step at ``batch``; ``cuda_*`` are None without a GPU.
    """

    dataset: str
    method: str  # "global" or "local"
    batch: int
    saved_total_bytes: int
    saved_peak_bytes: int
    n_saved: int
    step_time_s: float
    cuda_peak_bytes: Optional[int] = None  # torch.cuda.max_memory_allocated during the step
    cuda_step_bytes: Optional[int] = None  # the same minus what was allocated before it


def _shared(shared_start: Optional[bool]) -> dict:
    return {} if shared_start is None else {"shared_start": shared_start}


def make_training_step(dataset: str | Architecture, method: str, *, batch: int = 128,
                       latent_dim: int = 128, device="cpu", seed: int = 0, T: int = 1,
                       shared_start: Optional[bool] = None) -> tuple[Callable[[], Any], nn.Module]:
    """The training step that :func:`measure_step_memory` measures, ready to call.

    ``global``: :func:`fa_utils.fa.fa_step` on ``Encoder(arch, {"z": latent_dim})``
    (Adam lr 1e-4, betas (0.5, 0.999)); ``local``: :func:`local_step` on
    :class:`LocalFANet` (bias-free, the training default). Both on one fixed batch of
    random images (batch, C, H, W) in [0, 1] drawn after ``torch.manual_seed(seed)``,
    PyTorch's default init (what is saved, and the time a step takes, do not depend on the
    weights' values; the orthogonal init's QR of the 4096-wide layers would cost more than
    the step itself on a CPU). Each call does one optimiser step and returns its logged
    values.

    Returns:
        (step: zero-argument callable, the model).

    Raises:
        ValueError: unknown method.
    """
    device = torch.device(device)
    arch = architecture(dataset) if isinstance(dataset, str) else dataset
    torch.manual_seed(seed)
    x = torch.rand(batch, arch.channels, arch.size, arch.size, device=device)
    if method == "global":
        model = Encoder(arch, {"z": latent_dim}).to(device)  # = models.make_encoder's network
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
        return functools.partial(fa.fa_step, model, opt, x, T=T, **_shared(shared_start)), model
    if method == "local":
        model = LocalFANet(arch, latent_dim, bias=False).to(device)  # the training default
        opts = make_optimizers(model, 1e-4)
        return functools.partial(local_step, model, opts, x, T=T,
                                 shared_start=shared_start), model
    raise ValueError(f"unknown method {method!r}; choose 'global' or 'local'")


def measure_step_memory(dataset: str | Architecture, method: str, *, batch: int = 128,
                        latent_dim: int = 128, repeats: int = 1, device="cpu", seed: int = 0,
                        T: int = 1, name: Optional[str] = None,
                        shared_start: Optional[bool] = None) -> StepMemory:
    """Measure one training step of global FA or local FA on random inputs.

    ``global``: :func:`fa_utils.fa.fa_step` (Algorithm 1, T inner steps, double
    backward) on the network of ``make_encoder(dataset, {"z": latent_dim})``. ``local``:
    :func:`local_step` (Algorithm 2) on :class:`LocalFANet`. Both: r_0 = 0, tau = 1, Adam,
    Eq. 9 clamp, PyTorch's default init (values do not change what is saved).
    ``shared_start``: ``None`` measures each method's training path (both take their first
    inner step from one shared r_0 = 0, :func:`fa_utils.fa.first_step`); ``False`` forces both
    through B starts (the textbook path).
    The saved-tensor counts (:class:`fa_utils.metrics.SavedTensorMeter`'s ``total_bytes``,
    ``peak_bytes``, ``count``) come from the first measured step; ``step_time_s`` is the
    median over ``repeats`` steps (seconds, each in a CUDA-synchronised
    :class:`fa_utils.metrics.Stopwatch`). On CUDA one unmeasured warm-up step first allocates the
    optimiser state, so ``cuda_step_bytes`` is what the step itself needs on top of the
    resident weights, gradients and Adam moments.

    Raises:
        ValueError: unknown method.
    """
    device = torch.device(device)
    name = name or (dataset if isinstance(dataset, str) else "custom")
    step, model = make_training_step(dataset, method, batch=batch, latent_dim=latent_dim,
                                     device=device, seed=seed, T=T, shared_start=shared_start)
    if device.type == "cuda":
        step()  # warm-up: Adam state, cuDNN plans
    meter = SavedTensorMeter(exclude=list(model.parameters()))
    times = []
    with CudaPeak(device) as cuda:
        for i in range(max(1, repeats)):
            with Stopwatch(device) as sw:
                if i == 0:
                    with meter:
                        step()
                else:
                    step()
            times.append(sw.seconds)
    return StepMemory(dataset=name, method=method, batch=batch,
                      saved_total_bytes=meter.total_bytes, saved_peak_bytes=meter.peak_bytes,
                      n_saved=meter.count, step_time_s=statistics.median(times),
                      cuda_peak_bytes=cuda.peak_bytes, cuda_step_bytes=cuda.step_bytes)


def compare_memory(datasets: Sequence[str], *, batch: int = 128, latent_dim: int = 128,
                   repeats: int = 1, device="cpu", dedupe: bool = True,
                   ) -> list[tuple[str, StepMemory, StepMemory]]:
    """Global vs local FA step memory for each dataset's architecture.

    With ``dedupe``, datasets sharing an architecture (CelebA and STL-10, Table 9) are
    measured once and reported under the joined name, e.g. ``"celeba / stl10"``.

    Returns:
        [(label, global StepMemory, local StepMemory)] in the order of ``datasets``.
    """
    groups: dict[Architecture, list[str]] = {}
    for d in datasets:
        arch = architecture(d)
        key = arch if dedupe else (arch, d)
        groups.setdefault(key, []).append(d)
    out = []
    for key, names in groups.items():
        label = " / ".join(names)
        arch = architecture(names[0])
        g = measure_step_memory(arch, "global", batch=batch, latent_dim=latent_dim,
                                repeats=repeats, device=device, name=label)
        l = measure_step_memory(arch, "local", batch=batch, latent_dim=latent_dim,
                                repeats=repeats, device=device, name=label)
        out.append((label, g, l))
    return out


def memory_rows(results) -> list[tuple]:
    """Rows for ``results/local_vs_global_memory.md`` from :func:`compare_memory`."""
    mb = lambda b: None if b is None else b / 2 ** 20  # noqa: E731
    ratio = lambda a, b: None if a is None or b is None or b == 0 else a / b  # noqa: E731
    rows = []
    for label, g, l in results:
        rows.append((label, g.batch, mb(g.saved_total_bytes), mb(l.saved_total_bytes),
                     mb(g.saved_peak_bytes), mb(l.saved_peak_bytes),
                     ratio(l.saved_peak_bytes, g.saved_peak_bytes),
                     mb(g.cuda_step_bytes), mb(l.cuda_step_bytes),
                     ratio(l.cuda_step_bytes, g.cuda_step_bytes),
                     g.step_time_s, l.step_time_s,
                     "not reported (Sec. 3.5/6 claim 'less memory', no number)"))
    return rows


MEMORY_COLUMNS = [
    "architecture", "batch", "global: saved, sum over step (MiB)", "local: saved, sum (MiB)",
    "global: peak live saved (MiB)", "local: peak live saved (MiB)", "ratio local/global (peak saved)",
    "global: CUDA step peak (MiB)", "local: CUDA step peak (MiB)", "ratio local/global (CUDA)",
    "global step (s)", "local step (s)", "paper"]


def local_claims(dataset: str, mse: float, mean_image: float,
                 memory: Sequence[tuple[str, "StepMemory", "StepMemory"]], *,
                 assert_reconstruction: bool) -> list:
    """Notebook 05's claims for one dataset (Section 3.5, Figure 16) as
    :class:`fa_utils.claims.Claim` objects, ids as in :data:`fa_utils.paper.CATALOGUE`.

    Args:
        dataset: the dataset of the reconstruction (evidence names carry it).
        mse, mean_image: held-out MSE per pixel of local FA (Algorithm 3) and of the mean
            training image.
        memory: :func:`compare_memory`'s rows (label, global, local step memory).
        assert_reconstruction: the notebook asserts the reconstruction claim (quick,
            paper). The memory claim is asserted at every profile, as before.
    """
    from . import claims

    rec_ok = mse < 0.5 * mean_image
    out = [claims.Claim(
        "fig16.local_reconstructs", "3.5, Figure 16", "\"Local training can reconstruct "
        "images\" (our reading: below half the mean image's error)", "Figure 16 (image pairs)",
        f"MSE per pixel {mse:.4f} vs mean image {mean_image:.4f}", claims.verdict(rec_ok),
        "" if rec_ok else "local FA's reconstruction is not below half the mean image's error",
        (f"results/local_fa_reconstruction_{dataset}.md", f"figures/fig16_local_fa_{dataset}.png"),
        assert_reconstruction)]
    ratios = {label: loc.saved_peak_bytes / glob.saved_peak_bytes for label, glob, loc in memory}
    ok = bool(memory) and all(0 < loc.saved_peak_bytes < glob.saved_peak_bytes
                              for _, glob, loc in memory)
    out.append(claims.Claim(
        "3.5.local_less_memory", "3.5", "Local FA needs less memory than global FA (our "
        "measure: peak bytes autograd saves for backward in one training step)",
        "Sections 3.5 and 6 (stated, not measured)",
        ", ".join(f"{label} local / global {r:.2f}" for label, r in ratios.items()) or "-",
        claims.verdict(ok if memory else None),
        "" if ok else ("no architecture measured" if not memory else
                       "local FA saved as much as global FA on some architecture"),
        (f"results/local_vs_global_memory_{dataset}.md",), bool(memory)))
    return out
