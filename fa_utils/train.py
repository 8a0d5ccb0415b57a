"""The training loop of every method, which knows no method (:func:`fit`): atomic checkpoints
(a plain dict that ``torch.load(..., weights_only=True)`` reads), epoch e's order drawn from
(seed, e), so a resumed run ends bit-identical (on a CPU) to an uninterrupted one."""
from __future__ import annotations

import contextlib
import errno
import math
import os
import resource
import shlex
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from .fa import NonFiniteLossError, check_batch, refuse_non_finite  # noqa: F401

CHECKPOINT_FORMAT = 1
WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)
_RUN_ONLY = {"epochs", "device", "num_workers", "ckpt_every"}  # may change on resume
_KEPT = "The last checkpoint (if any) was kept and not overwritten."


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read, or that belongs to another run."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C in :func:`fit` after checkpointing ``step`` of ``total`` to ``checkpoint``."""

    def __init__(self, message: str, *, step: int, total: int, checkpoint: Optional[Path]):
        super().__init__(message)
        self.step, self.total, self.checkpoint = step, total, checkpoint


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else CPU. Raises RuntimeError for CUDA without one."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for but CUDA is not available; use "
                           f"device='auto' or 'cpu'")
    return torch.device(device)


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename: never half a file.
    Raises CheckpointError naming the cause by errno and its fix; the old file is intact."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(payload), fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0o22)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if not isinstance(exc, (OSError, RuntimeError)):  # torch.save: RuntimeError from OSError
            raise
        raise CheckpointError(f"could not write checkpoint {path} ({type(exc).__name__}: {exc}); "
                              f"{_write_hint(exc, path.parent)}; it resumes from the last "
                              f"checkpoint{', which is intact.' if path.exists() else '.'}"
                              ) from exc
    return path


def _write_hint(exc: BaseException, folder: Path) -> str:
    err = next((e.errno for e in (exc, exc.__cause__, exc.__context__)
                if isinstance(e, OSError) and e.errno), None)
    if err == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return (f"the file would exceed the file-size limit of this process ({limit:,} bytes, "
                f"`ulimit -f`): raise it (`ulimit -f unlimited`) and run again")
    if err in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"no permission to write in {folder}: make it writable (or set FA_OUTPUT_ROOT "
                f"to a folder you can write) and run again")
    free = shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free
    full = "the disk is full" if err in (errno.ENOSPC, errno.EDQUOT) else "if the disk is full"
    return (f"{full} ({free / 2 ** 20:.0f} MiB free in {folder}): free some space (or set "
            f"FA_OUTPUT_ROOT to another disk) and run again")


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP, DataParallel and ``torch.compile``, in any nesting."""
    while isinstance(inner := module.module if isinstance(module, WRAPPERS)
                     else getattr(module, "_orig_mod", None), nn.Module):
        module = inner
    return module


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(weights_only=True)``, ``module.`` / ``_orig_mod.`` stripped from the modules'
    keys. Raises FileNotFoundError, or CheckpointError (truncated, corrupt, foreign; untouched)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged zip or pickle
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}). It is truncated or corrupt. "
                              f"Nothing was overwritten; delete or move it to train from "
                              f"scratch, or restore a copy.") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this project "
                              f"(format {CHECKPOINT_FORMAT} expected)")
    for state in (ckpt.get("modules") or {}).values():  # only a prefix that every key has
        while state and (p := next((p for p in ("module.", "_orig_mod.")
                                    if all(k.startswith(p) for k in state)), None)):
            consume_prefix_in_state_dict_if_present(state, p)
    return ckpt


def make_adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), *,
              fused: Optional[bool] = None, **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam``, fused where torch has it unless ``fused=False`` (docs/choices.md
    section 13)."""
    params = list(params)
    if fused is not False:
        with contextlib.suppress(RuntimeError, TypeError):  # no fused Adam for these parameters
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True, **kwargs)
    return torch.optim.Adam(params, lr=lr, betas=betas, **kwargs)


@dataclass
class History:
    """``train[name]``, ``eval[name]``: lists of [step, value]; ``seconds`` in training steps,
    summed over resumed runs, not in :meth:`to_dict` (resumed equals uninterrupted)."""
    train: dict[str, list] = field(default_factory=dict)
    eval: dict[str, list] = field(default_factory=dict)
    seconds: float = field(default=0.0, compare=False)

    def log(self, kind: str, step: int, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            getattr(self, kind).setdefault(k, []).append([int(step), float(v)])

    def last(self, kind: str, name: str) -> Optional[float]:
        return getattr(self, kind)[name][-1][1] if getattr(self, kind).get(name) else None

    def to_dict(self) -> dict:
        return {"train": self.train, "eval": self.eval}


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=seeded_generator(int(seed) * 1_000_003 + epoch))


def shard_order(order: torch.Tensor, batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """Of each global batch of ``order``, the ``rank``-th of ``world_size`` equal slices (the
    shards of batch k make batch k). ValueError if ``batch_size % world_size``."""
    if batch_size % world_size:
        raise ValueError(f"the global batch size {batch_size} must be divisible by the "
                         f"number of processes {world_size}")
    local, n = batch_size // world_size, len(order) // batch_size
    return order[:n * batch_size].view(n, batch_size)[:, rank * local:(rank + 1) * local].flatten()


def _collate(items: list) -> tuple[torch.Tensor, Any]:
    """Items (image, label), (image,) or bare images -> (images, labels or None)."""
    items = [i if isinstance(i, (tuple, list)) else (i,) for i in items]
    labels = [i[1] if len(i) > 1 else None for i in items]
    return (default_collate([i[0] for i in items]),
            None if None in labels else default_collate(labels))


def _batches(dataset: Dataset, order: torch.Tensor, batch_size: int, num_workers: int, pin: bool):
    """(images (B, C, H, W), labels (B,) int64, or None when absent or all -1) in ``order``."""
    rows = order[:len(order) // batch_size * batch_size].view(-1, batch_size)
    loader = (((t[0], t[1] if len(t) > 1 else None) for t in map(dataset.__getitem__, rows))
              if isinstance(dataset, TensorDataset) else
              DataLoader(dataset, batch_sampler=rows.tolist(), num_workers=num_workers,
                         pin_memory=pin, collate_fn=_collate))
    for x, y in loader:
        if y is not None and ((y := torch.as_tensor(y)).is_floating_point() or y.is_complex()
                              or y.dtype == torch.bool):
            raise ValueError(f"the training labels must be integers (class indices, -1 where "
                             f"unlabeled), got dtype {y.dtype}: convert them with y.long()")
        if y is not None and tuple(y.shape) != (batch_size,):
            raise ValueError(f"the training labels must have shape ({batch_size},), one per "
                             f"image, got {tuple(y.shape)}")
        yield x, None if y is None or bool((y == -1).all()) else y.long()


def _shards(dataset, step, end, batch_size, seed, rank, world, num_workers, pin, sigint):
    """This rank's (x, y) of global batches step + 1 ... end; ends early when a DataLoader
    worker dies of the SIGINT that stopped the kernel."""
    per_epoch = len(dataset) // batch_size
    while step < end:
        order = _epoch_order(len(dataset), seed, step // per_epoch)[step % per_epoch * batch_size:]
        batches = _batches(dataset, shard_order(order, batch_size, rank, world),
                           batch_size // world, num_workers, pin)
        try:
            for batch in batches:
                yield batch
                if (step := step + 1) >= end:
                    return
        except Exception:
            if world == 1 and sigint["count"] > 0:
                return
            raise
        finally:
            batches.close()


@contextlib.contextmanager
def _deferred_sigint():
    """A first SIGINT only counts (``state["count"]``); a second raises KeyboardInterrupt.
    Nothing is installed off the main thread or when SIGINT is ignored."""
    state = {"count": 0}

    def handler(signum, frame):
        state["count"] += 1
        if state["count"] > 1:
            raise KeyboardInterrupt("second interrupt: stopped at once, without a checkpoint")

    install = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)
    previous = signal.signal(signal.SIGINT, handler) if install else None
    try:
        yield state
    finally:
        if install:
            signal.signal(signal.SIGINT, previous or signal.default_int_handler)


#: What :func:`fit` calls once per batch: ``step_fn(x, y)`` -> values to log.
StepFn = Callable[[torch.Tensor, Optional[torch.Tensor]], Mapping[str, Any]]


def images_only(step: Callable[[torch.Tensor], Mapping[str, Any]]) -> StepFn:
    """A :func:`fit` step from a step of the images alone: ``images_only(s)(x, y) == s(x)``."""
    return lambda x, y: step(x)


def fit(step_fn: StepFn, *, modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer], dataset: Dataset, batch_size: int,
        epochs: int, seed: int, config: Mapping[str, Any], generator: torch.Generator,
        device: torch.device | str = "cpu", checkpoint: Optional[str | os.PathLike] = None,
        ckpt_every: int = 200, ckpt_every_s: Optional[float] = 60.0,
        eval_fn: Optional[Callable[[], Mapping[str, float]]] = None,
        eval_every: Optional[int] = None, stop_after: Optional[int] = None, num_workers: int = 0,
        desc: str = "train", progress: bool = True,
        nan_hint: str = "Lower the learning rate or keep the weight clamp on.",
        distributed: Optional[Any] = None) -> History:
    """Train ``epochs`` epochs of full batches with ``step_fn(x, y)``, resuming from ``checkpoint``.

    ``x`` (B, C, H, W) on ``device``; ``y`` (B,) int64 or None (no labels, or all -1). The
    checkpoint (``modules``, ``optimizers``, ``generator``, ``config``, compared on resume) is
    written every ``ckpt_every`` steps and ``ckpt_every_s`` s, on Ctrl-C, at ``stop_after`` and
    at the end; ``eval_fn()`` is logged every ``eval_every`` steps and at the end. Under
    ``distributed`` (``.rank``, ``.world_size``) ``batch_size`` is global, values are averaged.
    Raises CheckpointError, NonFiniteLossError (with the step as the bar counts),
    TrainingInterrupted (Ctrl-C, after checkpointing), ValueError (batch > dataset, bad batch).
    """
    from tqdm.auto import tqdm

    rank, world = (int(distributed.rank), int(distributed.world_size)) if distributed else (0, 1)
    device, config, per_epoch = torch.device(device), dict(config), len(dataset) // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch size {batch_size} is larger than the dataset "
                         f"({len(dataset)} items)")
    total = epochs * per_epoch
    end = total if stop_after is None else min(total, stop_after)
    first, history = _resume(checkpoint, config, modules, optimizers, generator)
    step = saved = first
    save = lambda: _save(checkpoint, rank, world, step, config, modules,  # noqa: E731
                         optimizers, generator, history)
    _evaluate(None, modules, history, step)  # modules in train mode
    pin, stop, t0 = device.type == "cuda", False, monotonic()
    saved_at = t0
    with _deferred_sigint() as sigint, tqdm(total=total, initial=step, desc=desc, leave=False,
                                            disable=not progress or rank != 0) as bar, \
            contextlib.closing(_shards(dataset, step, end, batch_size, seed, rank, world,
                                       num_workers, pin, sigint)) as batches:
        for x, y in batches:
            x = x.to(device, non_blocking=pin)
            y = y if y is None else y.to(device, non_blocking=pin)
            if step == first:
                check_batch(x, list(modules.values()), "the first training batch")
            try:
                values = {k: float(v) for k, v in step_fn(x, y).items()}
            except NonFiniteLossError as err:
                raise NonFiniteLossError(f"training stopped at step {step + 1} of {total} (as the "
                                         f"progress bar counts): {err} {nan_hint} {_KEPT}",
                                         term=err.term, step=step + 1) from err
            due = ckpt_every_s is not None and monotonic() - saved_at >= ckpt_every_s
            stop = sigint["count"] > 0
            if world > 1:  # one all-reduce: the mean values, and any rank's stop or due
                values, stop, due = _mean_over_ranks(values, device, stop, due)
            _refuse_non_finite_values(values, step + 1, nan_hint)
            step += 1
            history.log("train", step, values)
            history.seconds += monotonic() - t0
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
            if eval_every and step % eval_every == 0:  # also when stopping: same history
                _evaluate(eval_fn, modules, history, step)
            if not stop and (step - saved >= ckpt_every or (due and step != saved)):
                save()
                saved, saved_at = step, monotonic()
            if stop:
                break
            t0 = monotonic()
    stop = stop or (world == 1 and step < end and sigint["count"] > 0)  # a worker died of it
    evaluated = history.eval and next(iter(history.eval.values()))[-1][0] == step
    if not stop and step >= total and not evaluated:
        _evaluate(eval_fn, modules, history, step)
    if step != saved or (checkpoint is not None and not Path(checkpoint).exists()):
        save()  # the same decision on every rank (one shared file system)
    if stop:
        raise _interrupted(desc, step, total, checkpoint)
    return history


def _refuse_non_finite_values(values: dict, step: int, nan_hint: str) -> None:
    if bad := next((k for k, v in values.items() if not math.isfinite(v)), None):
        raise NonFiniteLossError(f"training loss {bad!r} became {values[bad]} at step {step} "
                                 f"(as the progress bar counts). {nan_hint} {_KEPT}",
                                 term=bad, step=step)


def _resume(checkpoint, config: dict, modules, optimizers, generator) -> tuple[int, History]:
    """(step, history) of ``checkpoint``, every state restored; (0, empty) without one."""
    if checkpoint is None or not Path(checkpoint).exists():
        return 0, History()
    ckpt = load_checkpoint(checkpoint)
    saved, rm = ckpt.get("config", {}), f"rm {shlex.quote(str(checkpoint))}"
    if diff := {k: (saved.get(k), config.get(k)) for k in (set(saved) | set(config)) - _RUN_ONLY
                if saved.get(k) != config.get(k)}:
        raise CheckpointError(f"checkpoint {checkpoint} belongs to another run; differing settings"
                              f" (saved, now): {diff}. To retrain with the new settings, delete it "
                              f"({rm}); to keep both runs, give this one another output folder: "
                              f"FA_OUTPUT_ROOT=<folder> (checkpoints go to "
                              f"<folder>/runs/checkpoints/).")
    if missing := sorted(set(modules) - set(ckpt["modules"])):
        raise CheckpointError(f"checkpoint {checkpoint} lacks module(s) {missing}")
    for name, module in modules.items():
        try:
            _unwrap(module).load_state_dict(ckpt["modules"][name])
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {checkpoint}: its module {name!r} does not fit this "
                                  f"model ({' '.join(str(exc).split())[:300]}). It was written for "
                                  f"another architecture or size: delete it ({rm}) to train from "
                                  f"scratch, or give this run another output folder "
                                  f"(FA_OUTPUT_ROOT=<folder>).") from exc
    for name, opt in optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][name])
    generator.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    h = ckpt["history"]
    return int(ckpt["step"]), History(h["train"], h["eval"], ckpt.get("train_seconds", 0.0))


def _save(checkpoint, rank: int, world: int, step: int, config: dict, modules, optimizers,
          generator, history: History) -> None:
    """Rank 0 writes the checkpoint; every rank waits at a barrier until the file is there."""
    if checkpoint is not None and rank == 0:
        save_checkpoint(checkpoint, {
            "format": CHECKPOINT_FORMAT, "step": step, "config": config,
            "modules": {k: _unwrap(m).state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history.to_dict(), "train_seconds": history.seconds})
    if checkpoint is not None and world > 1:
        torch.distributed.barrier()


def _mean_over_ranks(values: dict, device: torch.device, *flags: bool):
    """One all-reduce: the values' mean over the ranks, and whether any rank raised each flag."""
    import torch.distributed as dist

    buf = torch.tensor([*values.values(), *map(float, flags)], dtype=torch.float64)
    buf = buf.to(device) if dist.get_backend() == "nccl" else buf
    dist.all_reduce(buf)
    out = buf.tolist()
    flags = (f > 0 for f in out[len(values):])
    return {k: v / dist.get_world_size() for k, v in zip(values, out)}, *flags


def _evaluate(eval_fn, modules: Mapping[str, nn.Module], history: History, step: int) -> None:
    """Log ``eval_fn()`` at ``step`` with the modules in eval mode; leave them in train mode."""
    for m in modules.values():
        m.train(eval_fn is None)
    if eval_fn is not None:
        history.log("eval", step, dict(eval_fn()))
        _evaluate(None, modules, history, step)


def _interrupted(desc: str, step: int, total: int, checkpoint) -> TrainingInterrupted:
    path = Path(checkpoint).resolve() if checkpoint is not None else None
    where = (f"checkpoint written to {path}; run the same code again (the cell, the notebook or "
             f"the command) to resume from step {step}" if path is not None else
             "no checkpoint file was given (checkpoint=None), so the steps are not kept")
    return TrainingInterrupted(f"{desc}: training interrupted at step {step} of {total} (as the "
                               f"progress bar counts); {where}.", step=step, total=total,
                               checkpoint=path)
