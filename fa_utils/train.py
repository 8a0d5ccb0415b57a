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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import fa
from .models import clamp_weights_

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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
            generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's outer loss C = ||x - squash(r_T)||^2 (per-example sum, batch mean).

    Shapes: x (B, C, H, W) -> (scalar loss with a graph to the encoder, image (B, C, H, W)).
    """
    result = fa.reconstruct(encoder, x, head=head, T=T, tau=tau, r_init=r_init, squash=squash,
                            generator=generator, create_graph=True)
    return fa.reconstruction_loss(x, result.image), result.image


def fa_step(encoder: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, *,
            generator: Optional[torch.Generator] = None, weight_clamp: Optional[float] = math.sqrt(2),
            **fa_kwargs) -> dict[str, float]:
    """One FA training step (Algorithm 1): loss, double backward, Adam, Eq. 9 clamp.

    Returns ``{"loss": C, "mse": per-pixel mean squared error}`` as floats.
    """
    optimizer.zero_grad(set_to_none=True)
    loss, image = fa_loss(encoder, x, generator=generator, **fa_kwargs)
    loss.backward()
    optimizer.step()
    if weight_clamp is not None:
        clamp_weights_(encoder, weight_clamp)
    with torch.no_grad():
        mse = (image - x).pow(2).mean()
    return {"loss": loss.detach().item(), "mse": mse.item()}


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


def _batches(dataset: Dataset, order: torch.Tensor, batch_size: int, num_workers: int,
             pin_memory: bool):
    """Yield image batches (B, C, H, W) in ``order`` (full batches only)."""
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

    Returns:
        The :class:`History` (also stored in the checkpoint).

    Raises:
        CheckpointError: the checkpoint is unreadable or from another config.
        NonFiniteLossError: a logged value became NaN or inf (nothing is overwritten).
        ValueError: a batch size larger than the dataset.
    """
    from tqdm.auto import tqdm

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
                f"(saved, now): {diff}. Use another checkpoint path or delete it.")
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
        save_checkpoint(checkpoint, {
            "format": CHECKPOINT_FORMAT, "step": step, "config": config,
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history.to_dict(),
        })

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
    bar = tqdm(total=total, initial=step, desc=desc, disable=not progress, leave=False)
    last_saved = step
    for m in modules.values():
        m.train()
    pin = device.type == "cuda"
    try:
        while step < end:
            epoch, offset = divmod(step, steps_per_epoch)
            order = _epoch_order(n, seed, epoch)[offset * batch_size:]
            for x in _batches(dataset, order, batch_size, num_workers, pin):
                values = step_fn(x.to(device, non_blocking=pin))
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
        save()
    return history
