"""The method-free training loop :func:`fit`, whose resumed runs are bit-identical."""
import contextlib
import math
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from .fa import NonFiniteLossError, check_batch

CHECKPOINT_FORMAT = 1
_RUN_ONLY = {"epochs", "device", "num_workers", "ckpt_every"}  # may change on resume
_KEPT = "The last checkpoint (if any) was kept and not overwritten."


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read, or that belongs to another run."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C in :func:`fit` (``desc``) after checkpointing ``step`` of ``total``."""

    def __init__(self, desc: str, step: int, total: int, checkpoint) -> None:
        self.checkpoint = Path(checkpoint).resolve() if checkpoint is not None else None
        where = (f"checkpoint written to {self.checkpoint}; run the same code again to resume "
                 f"from step {step}" if checkpoint is not None else "no checkpoint was given")
        super().__init__(f"{desc}: training interrupted at step {step} of {total} (as the "
                         f"progress bar counts); {where}.")


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else CPU. Raises RuntimeError for CUDA without one."""
    cuda = torch.cuda.is_available()
    if device != "auto" and torch.device(device).type == "cuda" and not cuda:
        raise RuntimeError(f"device {device!r}: CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(("cuda" if cuda else "cpu") if device == "auto" else device)


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """``torch.save`` to a temporary file, fsync, rename. CheckpointError: the old file stays."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(dict(payload), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save: RuntimeError from OSError
        raise CheckpointError(f"could not write checkpoint {path} ({type(exc).__name__}: {exc});"
                              f" the last checkpoint, if any, is intact") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP, DataParallel and ``torch.compile``, in any nesting."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(inner := module.module if isinstance(module, wrappers)
                     else getattr(module, "_orig_mod", None), nn.Module):
        module = inner
    return module


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint on the CPU, wrapper prefixes stripped. FileNotFoundError, CheckpointError."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged zip or pickle
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({exc!r:.200}); it "
                              f"was not overwritten: delete it to train from scratch") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint (format {CHECKPOINT_FORMAT}) of fit")
    for state in (ckpt.get("modules") or {}).values():  # only a prefix that every key has
        while state and (p := next((p for p in ("module.", "_orig_mod.")
                                    if all(k.startswith(p) for k in state)), None)):
            consume_prefix_in_state_dict_if_present(state, p)
    return ckpt


def make_adam(params, lr: float, betas: tuple = (0.9, 0.999), **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam``, fused where torch has it."""
    params = list(params)
    with contextlib.suppress(RuntimeError, TypeError):  # no fused Adam for these parameters
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True, **kwargs)
    return torch.optim.Adam(params, lr=lr, betas=betas, **kwargs)


@dataclass
class History:
    """``train``, ``eval``: {name: [[step, value], ...]}; ``seconds`` of training, over resumes."""
    train: dict[str, list] = field(default_factory=dict)
    eval: dict[str, list] = field(default_factory=dict)
    seconds: float = field(default=0.0, compare=False)

    def log(self, kind: str, step: int, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            getattr(self, kind).setdefault(k, []).append([int(step), float(v)])


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=seeded_generator(int(seed) * 1_000_003 + epoch))


def shard_order(order: torch.Tensor, batch_size: int, rank: int, world_size: int) -> torch.Tensor:
    """Of each global batch of ``order``, this rank's slice. ValueError: uneven slices."""
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} not divisible by {world_size} processes")
    local, n = batch_size // world_size, len(order) // batch_size
    return order[:n * batch_size].view(n, batch_size)[:, rank * local:(rank + 1) * local].flatten()


def _collate(items: list) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Items (image, label), (image,) or images -> (x, y (n,) int64 or None). ValueError: bad y."""
    items = [i if isinstance(i, (tuple, list)) else (i,) for i in items]
    labels = [i[1] if len(i) > 1 else None for i in items]
    x = default_collate([i[0] for i in items])
    if None in labels:
        return x, None
    y = torch.as_tensor(default_collate(labels))
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"the training labels must be integers (-1: unlabeled), got {y.dtype}: "
                         f"convert them with y.long()")
    if tuple(y.shape) != (len(items),):
        raise ValueError(f"training labels must have shape ({len(items)},), got {tuple(y.shape)}")
    return x, None if bool((y == -1).all()) else y.long()


def _shards(dataset, step, end, batch_size, seed, rank, world, num_workers, device, sigint):
    """This rank's (x (B, C, H, W), y (B,) or None) on ``device`` of global batches step+1..end."""
    per_epoch, local, pin = len(dataset) // batch_size, batch_size // world, device.type == "cuda"
    while step < end:
        order = _epoch_order(len(dataset), seed, step // per_epoch)[step % per_epoch * batch_size:]
        rows = shard_order(order, batch_size, rank, world).view(-1, local)
        # its own generator: the workers' base seed never draws from the global RNG (dropout's)
        loader = DataLoader(dataset, batch_sampler=rows.tolist(), num_workers=num_workers,
                            pin_memory=pin, collate_fn=_collate,
                            generator=torch.Generator().manual_seed(seed))
        try:
            for x, y in loader:
                yield x.to(device, non_blocking=pin), None if y is None else y.to(device)
                if (step := step + 1) >= end:
                    return
        except Exception:  # a DataLoader worker killed by the SIGINT that stops the kernel
            if world == 1 and sigint["count"] > 0:
                return
            raise


@contextlib.contextmanager
def _deferred_sigint():
    """A first SIGINT only counts (``state["count"]``); a second raises KeyboardInterrupt."""
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


def images_only(step: Callable[[torch.Tensor], Mapping[str, Any]]) -> Callable:
    """A :func:`fit` step from a step of the images alone: ``images_only(s)(x, y) == s(x)``."""
    return lambda x, y: step(x)


def fit(step_fn: Callable, *, modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer], dataset: Dataset, batch_size: int,
        epochs: int, seed: int, config: Mapping[str, Any], generator: torch.Generator,
        device: torch.device | str = "cpu", checkpoint: Optional[str | os.PathLike] = None,
        ckpt_every: int = 200, ckpt_every_s: Optional[float] = 60.0,
        eval_fn: Optional[Callable[[], Mapping[str, float]]] = None,
        eval_every: Optional[int] = None, stop_after: Optional[int] = None, num_workers: int = 0,
        desc: str = "train", progress: bool = True,
        nan_hint: str = "Lower the learning rate or keep the weight clamp on.",
        distributed: Optional[Any] = None) -> History:
    """``epochs`` of ``step_fn(x (B, C, H, W), y (B,) or None)``, checkpointed: the History.
    Raises CheckpointError, NonFiniteLossError, TrainingInterrupted, ValueError."""
    rank, world = (int(distributed.rank), int(distributed.world_size)) if distributed else (0, 1)
    device, config, per_epoch = torch.device(device), dict(config), len(dataset) // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch size {batch_size} is larger than the dataset ({len(dataset)})")
    total = epochs * per_epoch
    end = total if stop_after is None else min(total, stop_after)
    first, history = _resume(checkpoint, config, modules, optimizers, generator)
    step = saved = first

    def save():  # rank 0 writes; every rank waits at the barrier until the file is there
        if checkpoint is not None and rank == 0:
            save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "step": step, "config": config, "modules": {
                    k: _unwrap(m).state_dict() for k, m in modules.items()},
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                "history": {"train": history.train, "eval": history.eval},
                "train_seconds": history.seconds})
        if checkpoint is not None and world > 1:
            torch.distributed.barrier()

    _evaluate(None, modules, history, step)  # modules in train mode
    stop, t0 = False, monotonic()
    saved_at = t0
    with _deferred_sigint() as sigint, tqdm(total=total, initial=step, desc=desc, leave=False,
                                            disable=not progress or rank != 0) as bar, \
            contextlib.closing(_shards(dataset, step, end, batch_size, seed, rank, world,
                                       num_workers, device, sigint)) as batches:
        for x, y in batches:
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
            if bad := next((k for k, v in values.items() if not math.isfinite(v)), None):
                raise NonFiniteLossError(f"training loss {bad!r} became {values[bad]} at step "
                                         f"{step + 1} (as the progress bar counts). {nan_hint} "
                                         f"{_KEPT}", term=bad, step=step + 1)
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
        raise TrainingInterrupted(desc, step, total, checkpoint)
    return history


def _resume(checkpoint, config: dict, modules, optimizers, generator) -> tuple[int, History]:
    """(step, history) of ``checkpoint``, every state restored; (0, empty) without one."""
    if checkpoint is None or not Path(checkpoint).exists():
        return 0, History()
    ckpt, fix = load_checkpoint(checkpoint), f"rm {str(checkpoint)!r}, or set FA_OUTPUT_ROOT"
    saved = ckpt.get("config", {})
    if diff := {k: (saved.get(k), config.get(k)) for k in (set(saved) | set(config)) - _RUN_ONLY
                if saved.get(k) != config.get(k)}:
        raise CheckpointError(f"checkpoint {checkpoint} belongs to another run; differing "
                              f"settings (saved, now): {diff}. {fix}.")
    for name, module in modules.items():
        try:
            _unwrap(module).load_state_dict(ckpt["modules"][name])
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {checkpoint}: its module {name!r} does not fit this "
                                  f"model ({' '.join(str(exc).split())[:300]}). {fix}.") from exc
    for name, opt in optimizers.items():
        opt.load_state_dict(ckpt["optimizers"][name])
    generator.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    h = ckpt["history"]
    return int(ckpt["step"]), History(h["train"], h["eval"], ckpt.get("train_seconds", 0.0))


def _mean_over_ranks(values: dict, device: torch.device, *flags: bool):
    """One all-reduce: the values' mean over the ranks, and whether any rank raised each flag."""
    buf = torch.tensor([*values.values(), *map(float, flags)], dtype=torch.float64)
    buf = buf.to(device) if torch.distributed.get_backend() == "nccl" else buf
    torch.distributed.all_reduce(buf)
    out, world = buf.tolist(), torch.distributed.get_world_size()
    return {k: v / world for k, v in zip(values, out)}, *(f > 0 for f in out[len(values):])


def _evaluate(eval_fn, modules: Mapping[str, nn.Module], history: History, step: int) -> None:
    """Log ``eval_fn()`` at ``step`` with the modules in eval mode; leave them in train mode."""
    for m in modules.values():
        m.train(eval_fn is None)
    if eval_fn is not None:
        history.log("eval", step, dict(eval_fn()))
        _evaluate(None, modules, history, step)
