"""Training: one step per method, and one fit loop with progress bar, history, NaN guard,
atomic checkpoints and bit-identical resume.

Reproducibility: the data order of epoch e is a permutation drawn from a generator seeded
with (seed, e), and all of the method's own randomness (r_0, ...) comes from one
``torch.Generator`` whose state is checkpointed. A run interrupted after k steps and resumed
from its checkpoint therefore ends bit-identical (on a CPU) to an uninterrupted one.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(..., weights_only=True)`` on a CPU; they carry their config, so a model can be
rebuilt from the file alone.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import fa
from .models import clamp_weights_, clampable_weights  # noqa: F401

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that belongs to a different run."""


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message gives the step and a hint."""


# --------------------------------------------------------------------------------------
# Devices and seeds
# --------------------------------------------------------------------------------------


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; otherwise ``torch.device(device)``.

    Raises:
        RuntimeError: CUDA asked for but not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for but CUDA is not available; "
                           f"use device='auto' or 'cpu'")
    return dev


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` with ``torch.save`` atomically: to a temporary file in the same
    folder, flushed to disk, then renamed over ``path``. An interruption never leaves a
    half-written file at ``path``.

    Raises:
        CheckpointError: the file could not be written (e.g. a full disk); says how much
            space is free and that the previous checkpoint, if any, is intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(payload), fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (OSError, RuntimeError)):  # torch.save on a full disk: RuntimeError
            free = shutil.disk_usage(path.parent).free / 2 ** 20
            raise CheckpointError(
                f"could not write checkpoint {path} ({type(exc).__name__}: {exc}); "
                f"{free:.0f} MiB free in {path.parent}: free some space (or set FA_OUTPUT_ROOT "
                f"to another disk) and run again; it resumes from the last checkpoint"
                + (", which is intact." if path.exists() else ".")) from exc
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt or not a checkpoint of this
            project; the message says how to recover (the file is left untouched).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged zip/pickle
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). It is truncated or corrupt. Nothing was "
            f"overwritten; delete or move it to train from scratch, or restore a copy."
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this project "
                              f"(format {CHECKPOINT_FORMAT} expected)")
    return ckpt


# --------------------------------------------------------------------------------------
# Train steps
# --------------------------------------------------------------------------------------


def fa_loss(encoder: nn.Module, x: torch.Tensor, *, head: str = "z", T: int = 1,
            tau: float = 1.0, r_init: str = "zeros", squash: str = "none",
            generator: Optional[torch.Generator] = None, shared_start: Optional[bool] = None,
            inner_encoder: Optional[nn.Module] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's outer loss C = ||x - squash(r_T)||^2 (per-example sum, batch mean).

    Shapes: x (B, C, H, W) -> (scalar loss with a graph to the encoder, image (B, C, H, W)).

    ``shared_start``: see :func:`fa_utils.fa.reconstruct` (default: the faster, equal
    first step from r_0 = 0 when it applies). A ``DistributedDataParallel`` encoder runs
    E(x) through the wrapper and the inner problem on its ``.module`` (one wrapper forward
    per step) unless ``inner_encoder`` says otherwise.
    """
    if inner_encoder is None and isinstance(encoder, nn.parallel.DistributedDataParallel):
        inner_encoder = encoder.module
    result = fa.reconstruct(encoder, x, head=head, T=T, tau=tau, r_init=r_init, squash=squash,
                            generator=generator, create_graph=True, shared_start=shared_start,
                            inner_encoder=inner_encoder)
    return fa.reconstruction_loss(x, result.image), result.image


def clamp_weights_fast_(module: nn.Module | list, bound: float = math.sqrt(2)) -> None:
    """Eq. 9's clamp of the Conv/Linear weights (as :func:`fa_utils.models.clamp_weights_`),
    on a module or a precomputed list of weights: one ``torch._foreach`` pair on CUDA (two
    launches for all weights), an in-place ``clamp_`` per weight elsewhere (one pass over
    memory instead of two: measured 2x faster than foreach on a CPU)."""
    weights = module if isinstance(module, (list, tuple)) else clampable_weights(module)
    if not weights:
        return
    with torch.no_grad():
        if weights[0].device.type == "cuda":
            torch._foreach_clamp_min_(weights, -bound)
            torch._foreach_clamp_max_(weights, bound)
        else:
            for w in weights:
                w.clamp_(-bound, bound)


def _step_values(loss: torch.Tensor, numel: int, sync: bool):
    loss = loss.detach()
    values = {"loss": loss, "mse": loss / numel}
    if not sync:
        return values
    return dict(zip(values, torch.stack(list(values.values())).tolist()))  # one sync


def fa_step(encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, *,
            generator: Optional[torch.Generator] = None, weight_clamp: Optional[float] = math.sqrt(2),
            sync: bool = True, autocast_dtype: Optional[torch.dtype] = None,
            **fa_kwargs) -> dict[str, float]:
    """One FA training step (Algorithm 1): loss, double backward, Adam, Eq. 9 clamp.

    Returns ``{"loss": C, "mse": per-pixel mean squared error}`` as floats (one device
    sync for both), or as 0-d tensors without any sync when ``sync=False``. The mse is
    C / (C*H*W), the same number as ``(image - x).pow(2).mean()`` up to rounding.

    ``autocast_dtype``: run the loss under ``torch.autocast`` with this dtype (e.g.
    ``torch.bfloat16`` on a GPU). Off by default: measured on a CPU (``benchmarks.run``,
    section 7), bf16 autocast moves the outer gradient by 5.7e-2 relative to float64 against
    2-4e-6 for fp32, so fp32 is kept; not yet measured on a GPU.
    Other keyword arguments go to :func:`fa_loss` (head, T, tau, r_init, squash,
    shared_start, inner_encoder).
    """
    optimizer.zero_grad(set_to_none=True)
    if autocast_dtype is None:
        loss, _ = fa_loss(encoder, x, generator=generator, **fa_kwargs)
    else:
        with torch.autocast(x.device.type, dtype=autocast_dtype):
            loss, _ = fa_loss(encoder, x, generator=generator, **fa_kwargs)
        loss = loss.float()
    loss.backward()
    optimizer.step()
    if weight_clamp is not None:
        clamp_weights_fast_(encoder, weight_clamp)
    return _step_values(loss, x[0].numel(), sync)


def make_adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), *,
              fused: Optional[bool] = None, device: torch.device | str | None = None,
              **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the fused implementation where this torch has it for the
    parameters' device (CPU and CUDA in torch >= 2.4), else the default one.

    Measured on the MNIST encoder (13.4 M parameters, 2 shared CPU cores, 2 threads):
    fused 97 ms per step against 224 ms (for-loop) and 209 ms (foreach). Same update
    within fp32 rounding.

    Args:
        fused: ``None``: fused when supported; ``True``/``False``: force.
        device: the parameters' device (default: the first parameter's).
    """
    params = list(params)
    if fused is None:
        first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
        dev = torch.device(device) if device is not None else first.device
        fused = dev.type in ("cpu", "cuda") and all(
            p.is_floating_point() for g in params
            for p in (g["params"] if isinstance(g, dict) else [g]))
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # an older torch without fused Adam on this device
            pass
    return torch.optim.Adam(params, lr=lr, betas=betas, **kwargs)


def vae_step(encoder: nn.Module, decoder: nn.Module, optimizer: torch.optim.Optimizer,
             x: torch.Tensor, *, beta: float = 1.0,
             generator: Optional[torch.Generator] = None) -> dict[str, float]:
    """One VAE training step (the baseline): encoder heads ``mu`` and ``logvar``,
    reparameterisation, decoder, loss ||x - D(z)||^2 + beta KL (per-example sums, batch
    mean), Adam. Returns ``{"loss", "mse"}`` as floats.
    """
    from .losses import kl_normal, reparameterise

    optimizer.zero_grad(set_to_none=True)
    out = encoder(x)
    x_hat = decoder(reparameterise(out["mu"], out["logvar"], generator))
    rec = (x - x_hat).pow(2).flatten(1).sum(1)
    loss = (rec + beta * kl_normal(out["mu"], out["logvar"])).mean()
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach().item(), "mse": rec.detach().mean().item() / x[0].numel()}


# --------------------------------------------------------------------------------------
# The fit loop
# --------------------------------------------------------------------------------------


@dataclass
class History:
    """Per-step training values and periodic evaluations.

    ``train[name]`` is a list of (step, value); ``eval[name]`` likewise.
    """

    train: dict[str, list] = field(default_factory=dict)
    eval: dict[str, list] = field(default_factory=dict)

    def log(self, kind: str, step: int, values: Mapping[str, float]) -> None:
        table = self.train if kind == "train" else self.eval
        for k, v in values.items():
            table.setdefault(k, []).append([int(step), float(v)])

    def last(self, kind: str, name: str) -> Optional[float]:
        table = self.train if kind == "train" else self.eval
        return table[name][-1][1] if table.get(name) else None

    def to_dict(self) -> dict:
        return {"train": self.train, "eval": self.eval}

    @classmethod
    def from_dict(cls, d: Mapping) -> "History":
        return cls(train={k: [list(p) for p in v] for k, v in d.get("train", {}).items()},
                   eval={k: [list(p) for p in v] for k, v in d.get("eval", {}).items()})


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


def shard_order(order: torch.Tensor, batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's part of an epoch order: of each full global batch of ``batch_size``
    indices, the ``rank``-th of ``world_size`` equal consecutive slices. The ranks' shards
    of global batch k together are exactly single-process batch k.

    Raises:
        ValueError: ``batch_size`` not divisible by ``world_size``.
    """
    if batch_size % world_size:
        raise ValueError(f"the global batch size {batch_size} must be divisible by the "
                         f"number of processes {world_size}")
    local = batch_size // world_size
    n_batches = len(order) // batch_size
    return order[: n_batches * batch_size].view(n_batches, batch_size)[
        :, rank * local:(rank + 1) * local].reshape(-1)


def _batches(dataset: Dataset, order: torch.Tensor, batch_size: int, num_workers: int,
             pin_memory: bool, shard: Optional[tuple[int, int]] = None):
    """Yield image batches (B, C, H, W) in ``order`` (full batches only).

    ``shard=(rank, world_size)``: yield this rank's (B / world_size)-row slice of each
    global batch (:func:`shard_order`).
    """
    if shard is not None and shard[1] > 1:
        order = shard_order(order, batch_size, *shard)
        batch_size //= shard[1]
    n_batches = len(order) // batch_size
    order = order[: n_batches * batch_size]
    if isinstance(dataset, TensorDataset):
        images = dataset.tensors[0]
        for i in range(n_batches):
            yield images[order[i * batch_size:(i + 1) * batch_size]]
        return
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order.tolist(),
                        num_workers=num_workers, pin_memory=pin_memory, drop_last=True)
    for batch in loader:
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


def _check_finite(values: Mapping[str, float], step: int, hint: str) -> None:
    for name, v in values.items():
        if not math.isfinite(v):
            raise NonFiniteLossError(
                f"training loss {name!r} became {v} at step {step}. {hint} The last "
                f"checkpoint (if any) was kept and not overwritten.")


def fit(step_fn: Callable[[torch.Tensor], Mapping[str, float]], *,
        modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
        dataset: Dataset, batch_size: int, epochs: int, seed: int, config: Mapping[str, Any],
        generator: torch.Generator, device: torch.device | str = "cpu",
        checkpoint: Optional[str | os.PathLike] = None, ckpt_every: int = 200,
        eval_fn: Optional[Callable[[], Mapping[str, float]]] = None, eval_every: Optional[int] = None,
        stop_after: Optional[int] = None, num_workers: int = 0, desc: str = "train",
        progress: bool = True, nan_hint: str = "Lower the learning rate or keep the weight clamp on.",
        distributed: Optional[Any] = None,
        ) -> History:
    """Train for ``epochs`` epochs of full batches, resuming from ``checkpoint`` if it exists.

    Args:
        step_fn: called with an image batch (B, C, H, W) on ``device``; does one optimiser
            step and returns floats to log (e.g. :func:`fa_step` bound to its model).
        modules, optimizers: what the checkpoint saves and restores, by name.
        dataset: items (image, label) or a TensorDataset (images first).
        epochs: total epochs; ``len(dataset) // batch_size`` steps each.
        seed: fixes the data order of every epoch.
        config: the run's config as a plain dict; stored in the checkpoint and compared on
            resume (a mismatch is refused, so a checkpoint never mixes two runs).
        generator: the method's random generator (r_0 ...); its state is checkpointed.
        checkpoint: file to resume from and write to (atomically) every ``ckpt_every`` steps
            and at the end; ``None`` trains without checkpoints.
        eval_fn: returns floats to log every ``eval_every`` steps and at the end.
        stop_after: stop (after checkpointing) once this many total steps are done: a
            deliberate interruption, for tests and time-boxed sessions.
        progress: show a tqdm progress bar.
        distributed: ``None`` (one process), or an object with ``rank`` and ``world_size``
            (e.g. :class:`fa_utils.distributed.DistInfo`) inside an initialised
            ``torch.distributed`` process group. Then ``batch_size`` is the *global* batch:
            every rank gets its ``batch_size / world_size`` rows of each single-process
            batch (:func:`shard_order`), the logged values are averaged over the ranks
            (so the history and the NaN guard agree everywhere), the checkpoint is written by
            rank 0 only (the others wait at a barrier) and read by every rank, and the
            progress bar shows on rank 0. ``step_fn`` must average gradients (a DDP model).
            ``eval_fn`` runs on every rank.

    Returns:
        The :class:`History` (also stored in the checkpoint).

    Raises:
        CheckpointError: the checkpoint is unreadable or from another config.
        NonFiniteLossError: a logged value became NaN or inf (nothing is overwritten).
        ValueError: a batch size larger than the dataset.
    """
    from tqdm.auto import tqdm

    rank, world = (0, 1) if distributed is None else (int(distributed.rank),
                                                       int(distributed.world_size))
    if world > 1 and batch_size % world:
        raise ValueError(f"the global batch size {batch_size} must be divisible by the "
                         f"number of processes {world}")
    n = len(dataset)
    steps_per_epoch = n // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {batch_size} is larger than the dataset ({n} items)")
    total = epochs * steps_per_epoch
    device = torch.device(device)
    history = History()
    step = 0
    config = dict(config)
    if checkpoint is not None and Path(checkpoint).exists():
        ckpt = load_checkpoint(checkpoint)
        saved = ckpt.get("config", {})
        ignore = {"epochs", "device", "num_workers", "ckpt_every"}
        diff = {k: (saved.get(k), config.get(k)) for k in set(saved) | set(config)
                if k not in ignore and saved.get(k) != config.get(k)}
        if diff:
            raise CheckpointError(
                f"checkpoint {checkpoint} belongs to another run; differing settings "
                f"(saved, now): {diff}. To retrain with the new settings, delete it "
                f"(rm {checkpoint}); to keep both runs, give this one another output folder: "
                f"FA_OUTPUT_ROOT=<folder> (checkpoints go to <folder>/runs/checkpoints/).")
        missing = sorted(set(modules) - set(ckpt["modules"]))
        if missing:
            raise CheckpointError(f"checkpoint {checkpoint} lacks module(s) {missing}")
        for name, module in modules.items():
            module.load_state_dict(ckpt["modules"][name])
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        step = int(ckpt["step"])
        history = History.from_dict(ckpt["history"])

    def save() -> None:
        if checkpoint is None:
            return
        if rank != 0:
            _barrier(world)
            return
        save_checkpoint(checkpoint, {
            "format": CHECKPOINT_FORMAT, "step": step, "config": config,
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history.to_dict(),
        })
        _barrier(world)

    def evaluate() -> None:
        if eval_fn is None:
            return
        for m in modules.values():
            m.eval()
        values = dict(eval_fn())
        for m in modules.values():
            m.train()
        history.log("eval", step, values)

    end = total if stop_after is None else min(total, stop_after)
    bar = tqdm(total=total, initial=step, desc=desc, disable=not progress or rank != 0,
               leave=False)
    last_saved = step
    for m in modules.values():
        m.train()
    pin = device.type == "cuda"
    try:
        while step < end:
            epoch, offset = divmod(step, steps_per_epoch)
            order = _epoch_order(n, seed, epoch)[offset * batch_size:]
            for x in _batches(dataset, order, batch_size, num_workers, pin,
                              shard=(rank, world) if world > 1 else None):
                values = step_fn(x.to(device, non_blocking=pin))
                if world > 1:
                    values = _mean_over_ranks(values, device)
                _check_finite(values, step, nan_hint)
                step += 1
                history.log("train", step, values)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                if eval_every and step % eval_every == 0:
                    evaluate()
                if step - last_saved >= ckpt_every:
                    save()
                    last_saved = step
                if step >= end:
                    break
    finally:
        bar.close()
    if step >= total and eval_fn is not None and (not history.eval or
                                                  next(iter(history.eval.values()))[-1][0] != step):
        evaluate()
    if step != last_saved or (checkpoint is not None and not Path(checkpoint).exists()):
        save()  # the same decision on every rank (one shared file system)
    return history


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def _mean_over_ranks(values: Mapping[str, Any], device: torch.device) -> dict[str, float]:
    """All-reduce the logged values (floats or 0-d tensors) to their mean over the ranks:
    one collective, one sync."""
    import torch.distributed as dist
    names = list(values)
    buf = torch.tensor([float(values[k]) for k in names], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        buf = buf.to(device)
    dist.all_reduce(buf)
    buf /= dist.get_world_size()
    return dict(zip(names, buf.tolist()))
