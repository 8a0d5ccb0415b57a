"""Training, for every method: one fit loop (:func:`fit`: progress bar, history, NaN guard,
atomic checkpoints, bit-identical resume, a checkpoint on Ctrl-C) and the step helpers
every method shares (:func:`check_batch`, :func:`refuse_non_finite`, :func:`make_adam`).
The methods' steps live with the methods (:mod:`fa_utils.fa`, :mod:`fa_utils.vfa`,
:mod:`fa_utils.baselines`, :mod:`fa_utils.local`); :func:`fit` calls one as
``step_fn(x, y)`` with each batch's images and labels (None for unlabeled data).

Reproducibility: the data order of epoch e is a permutation drawn from a generator seeded
with (seed, e), and all of the method's own randomness (r_0, ...) comes from one
``torch.Generator`` whose state is checkpointed. A run interrupted after k steps and resumed
from its checkpoint therefore ends bit-identical (on a CPU) to an uninterrupted one.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(..., weights_only=True)`` on a CPU; they carry their config, so a model can be
rebuilt from the file alone. They hold the *unwrapped* modules' states (no ``module.`` of
DistributedDataParallel / DataParallel, no ``_orig_mod.`` of ``torch.compile``), and
:func:`load_checkpoint` strips those prefixes from older files, so any of them loads
strictly into the plain model.

Interrupts: inside :func:`fit`, a SIGINT (Ctrl-C, JupyterLab's *Interrupt*, the runner's
forwarded Ctrl-C) lets the running step finish, writes a checkpoint of the step reached and
raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) saying where it is; running
the same code again resumes from it. A second SIGINT stops at once, without a checkpoint
(the previous one stays intact).

Bad input: the step functions and :func:`fit` refuse images outside [0, 1] or of another
dtype than the model (:func:`check_batch`), and the step functions refuse to apply an update
whose loss is not finite (:class:`NonFiniteLossError` names the term: rec, KL, class,
adversarial, perceptual); :func:`fit` adds the step, as its progress bar counts it.
"""
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
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that belongs to a different run."""


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the term and gives a hint.

    Raised by the step functions *before* the update (nothing is written to the weights),
    with ``term`` set ("rec", "KL", "class", "adversarial", "perceptual", or "loss" for a
    logged value); :func:`fit` re-raises it with ``step`` set (1-based, as its progress bar
    counts).
    """

    def __init__(self, message: str, *, term: Optional[str] = None,
                 step: Optional[int] = None) -> None:
        super().__init__(message)
        self.term = term
        self.step = step


class TrainingInterrupted(KeyboardInterrupt):
    """:func:`fit` stopped on SIGINT after writing a checkpoint of the step it reached.

    Attributes ``step`` (steps done, as the progress bar counts), ``total`` and
    ``checkpoint`` (the file written, or None when ``fit`` had no checkpoint). The message
    says where the checkpoint is and that running the same code again resumes from it.
    """

    def __init__(self, message: str, *, step: int, total: int,
                 checkpoint: Optional[Path]) -> None:
        super().__init__(message)
        self.step, self.total, self.checkpoint = step, total, checkpoint


#: What to do about each overflowing term (the step functions' names for them); read-only.
TERM_HINTS: Mapping[str, str] = MappingProxyType({
    "rec": "The reconstruction error ||x - r||^2 overflowed: check that the images are in "
           "[0, 1], lower the learning rate or keep the weight clamp (Eq. 9).",
    "KL": "The KL term overflowed: the encoder's mean mu is too large (its log-variance is "
          "bounded to [-30, 20] by fa_utils.losses.bounded_logvar, so exp(logvar) <= 4.9e8 "
          "cannot overflow); lower the learning rate or the KL weight beta.",
    "class": "The class term ||onehot(y) - c(x)||^2 overflowed: the class head's logits are "
             "too large; lower the learning rate or class_weight.",
    "adversarial": "An adversarial (least-squares) term overflowed: the discriminator's "
                   "outputs or the generated images are too large; lower the GAN learning "
                   "rate (gan_lr).",
    "perceptual": "The perceptual term (mu and sigma^2 of the encoder on G's images) "
                  "overflowed; lower perceptual_weight or the GAN learning rate.",
})


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
        CheckpointError: the file could not be written; names the cause (the file-size
            limit, a full disk, no permission: :func:`write_failure_hint`) and says that
            the previous checkpoint, if any, is intact.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save(dict(payload), fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (OSError, RuntimeError)):  # torch.save on a full disk: RuntimeError
            raise CheckpointError(
                f"could not write checkpoint {path} ({type(exc).__name__}: {exc}); "
                f"{write_failure_hint(exc, path.parent)}; it resumes from the last checkpoint"
                + (", which is intact." if path.exists() else ".")) from exc
        raise
    return path


def write_failure_hint(exc: BaseException, folder: Path) -> str:
    """The cause of a failed write and its fix, from the errno of ``exc`` or of the
    OSError it wraps (torch.save raises a RuntimeError from it): EFBIG the file-size limit
    (``ulimit -f``), EACCES / EPERM / EROFS no permission, else the free space."""
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


#: Key prefixes that wrappers add to a module's state_dict: DistributedDataParallel and
#: DataParallel (``module.``), ``torch.compile`` (``_orig_mod.``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_module(module: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel, DataParallel and ``torch.compile``
    wrappers, in any nesting (the module itself when unwrapped)."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):  # torch.compile
            module = module._orig_mod
        else:
            return module


def strip_wrapper_prefixes(state_dict: dict) -> dict:
    """Remove the wrappers' key prefixes (:data:`WRAPPER_PREFIXES`, repeatedly, e.g.
    ``_orig_mod.module.``) from a state_dict, in place, with torch's
    ``consume_prefix_in_state_dict_if_present``; a prefix is removed only when *every* key
    has it, so a plain module with a submodule named ``module`` is left alone. Returns it."""
    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

    changed = True
    while changed and state_dict:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                consume_prefix_in_state_dict_if_present(state_dict, prefix)
                changed = True
    return state_dict


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``. The modules' states (``ckpt["modules"]``)
    come without wrapper prefixes (:func:`strip_wrapper_prefixes`), so each loads strictly
    into the plain model with ``load_state_dict``.

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
    for state in (ckpt.get("modules") or {}).values():
        if isinstance(state, dict):
            strip_wrapper_prefixes(state)
    return ckpt


def _load_module_state(module: nn.Module, state: Mapping, name: str, path) -> None:
    try:
        unwrap_module(module).load_state_dict(state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"checkpoint {path}: its module {name!r} does not fit this model ({first}). It "
            f"was written for another architecture or size: delete it (rm {shlex.quote(str(path))}) "
            f"to train from scratch, or give this run another output folder "
            f"(FA_OUTPUT_ROOT=<folder>).") from exc


# --------------------------------------------------------------------------------------
# Input checks and the non-finite refusal (shared by every step function)
# --------------------------------------------------------------------------------------


def _param_dtype(module) -> Optional[torch.dtype]:
    modules = module if isinstance(module, (list, tuple)) else [module]
    for m in modules:
        if m is None:
            continue
        for p in m.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


def check_batch(x: Any, module: nn.Module | list | None = None,
                name: str = "the training batch", *, deferred: bool = False
                ) -> Optional[torch.Tensor]:
    """Refuse a training batch that is not images in this project's convention.

    Accepts a floating-point (B, C, H, W) tensor with values in [0, 1]
    (:func:`fa_utils.data.check_images`, the same check and message as the FID functions)
    whose dtype is that of ``module``'s parameters (when given). One device sync, or, with
    ``deferred=True``, none: the value range is returned as a (2,) tensor (min, max) for
    the step to read with its own one sync and check with
    :func:`fa_utils.data.check_value_range` before its update (None for an empty batch).

    Raises:
        ValueError: not a float tensor, not 4-dimensional, values outside [0, 1] (the
            message gives the found range and how to map 8-bit or [-1, 1] images), or a
            dtype other than the model's (e.g. float64 images for a float32 encoder).
    """
    from .data import check_images

    bounds = check_images(x, name, deferred=True)
    want = _param_dtype(module) if module is not None else None
    if want is not None and x.dtype != want:
        raise ValueError(f"{name} is {x.dtype} but the model's parameters are {want}: "
                         f"convert the images with x.to({want})")
    if deferred or bounds is None:
        return bounds
    check_batch_range(bounds.tolist(), name)
    return None


def check_batch_range(bounds: Sequence[float], name: str = "the training batch") -> None:
    """The deferred half of :func:`check_batch`: ``bounds`` (min, max) as floats.

    Raises:
        ValueError: values outside [0, 1] (:func:`fa_utils.data.check_value_range`).
    """
    from .data import check_value_range

    if bounds:
        check_value_range(*bounds, name=name)


def refuse_non_finite(terms: Mapping[str, torch.Tensor], *, what: str = "the loss",
                      collective: bool = False) -> None:
    """Raise :class:`NonFiniteLossError` if any term (a tensor of any shape: per-example
    values or a scalar) holds NaN or an infinity. Call it before ``backward()`` and the
    optimiser step: when it raises, nothing has been written to the weights (the caller
    clears no gradient: there is none yet). One device sync for all terms.

    Args:
        terms: name -> tensor; the name's first word ("rec", "KL", "class",
            "adversarial", "perceptual") selects the hint in :data:`TERM_HINTS` and is the
            error's ``term``.
        what: the loss they belong to, for the message (e.g. "the VFA loss").
        collective: inside an initialised ``torch.distributed`` group, agree over all
            ranks (one all-reduce), so that every rank refuses the same step (a DDP model:
            a rank that skipped its backward would leave the others waiting).

    Raises:
        NonFiniteLossError: ``term`` is the first non-finite term; the message names all
            of them with their largest magnitude and says that the update was refused.
    """
    names = list(terms)
    finite = torch.stack([torch.isfinite(t.detach()).all() for t in terms.values()])
    if collective:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flags = finite.to(torch.float32)
            if dist.get_backend() != "nccl":
                flags = flags.cpu()
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
            finite = flags > 0
    ok = finite.tolist()
    if all(ok):
        return
    bad = [n for n, good in zip(names, ok) if not good]
    described = []
    for n in bad:
        t = terms[n].detach()
        described.append(f"{n} = {'nan' if torch.isnan(t).any() else 'inf'}"
                         if t.dim() == 0 else
                         f"{n} {'NaN' if torch.isnan(t).any() else 'infinite'} for "
                         f"{int((~torch.isfinite(t)).sum())} of {t.numel()} "
                         f"{'examples' if t.dim() == 1 else 'values'}")
    hint = " ".join(dict.fromkeys(TERM_HINTS.get(n.split()[0], "") for n in bad)).strip()
    raise NonFiniteLossError(
        f"{what} is not finite ({', '.join(described)}); the update was refused: nothing "
        f"was written to the weights. {hint}".rstrip(), term=bad[0].split()[0])


# --------------------------------------------------------------------------------------
# Optimiser
# --------------------------------------------------------------------------------------


def make_adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), *,
              fused: Optional[bool] = None, device: torch.device | str | None = None,
              **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the fused implementation where this torch has it for the
    parameters' device (CPU and CUDA in torch >= 2.4), else the default one; the same
    update within fp32 rounding (docs/choices.md section 13).

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


# --------------------------------------------------------------------------------------
# The fit loop
# --------------------------------------------------------------------------------------


@dataclass
class History:
    """Per-step training values and periodic evaluations.

    ``train[name]`` is a list of (step, value); ``eval[name]`` likewise. ``seconds``: wall
    time spent in training steps (data, step, logging; not evaluations or checkpoints),
    summed over resumed runs. It is kept beside, not in, :meth:`to_dict`, so that an
    interrupted-and-resumed history equals an uninterrupted one (:func:`fit` stores it in
    the checkpoint separately).
    """

    train: dict[str, list] = field(default_factory=dict)
    eval: dict[str, list] = field(default_factory=dict)
    seconds: float = field(default=0.0, compare=False)

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
    """Yield (images (B, C, H, W), labels (B,) or None) in ``order`` (full batches only);
    the labels as :func:`_batch_labels` makes them.

    ``shard=(rank, world_size)``: yield this rank's (B / world_size)-row slice of each
    global batch (:func:`shard_order`).

    Raises:
        ValueError: labels that are not integers (:func:`_batch_labels`).
    """
    if shard is not None and shard[1] > 1:
        order = shard_order(order, batch_size, *shard)
        batch_size //= shard[1]
    n_batches = len(order) // batch_size
    order = order[: n_batches * batch_size]
    if isinstance(dataset, TensorDataset):
        images = dataset.tensors[0]
        labels = dataset.tensors[1] if len(dataset.tensors) > 1 else None
        for i in range(n_batches):
            rows = order[i * batch_size:(i + 1) * batch_size]
            yield images[rows], _batch_labels(None if labels is None else labels[rows], batch_size)
        return
    loader = DataLoader(dataset, batch_size=batch_size, sampler=order.tolist(),
                        num_workers=num_workers, pin_memory=pin_memory, drop_last=True,
                        collate_fn=_collate)
    for images, labels in loader:
        yield images, _batch_labels(labels, batch_size)


def _collate(items: list) -> tuple[torch.Tensor, Any]:
    """DataLoader items -> (images stacked by ``default_collate``, labels collated, or None
    when the items are bare images or any label is None)."""
    from torch.utils.data import default_collate

    if not isinstance(items[0], (tuple, list)):
        return default_collate(items), None
    images = default_collate([item[0] for item in items])
    if len(items[0]) < 2 or any(item[1] is None for item in items):
        return images, None
    return images, default_collate([item[1] for item in items])


def _batch_labels(labels: Any, batch_size: int) -> Optional[torch.Tensor]:
    """What :func:`fit` hands its step function as ``y``: the batch's labels as a (B,) int64
    tensor, or None when it has none: ``labels`` is None, or every label is -1 (how
    :mod:`fa_utils.data` labels the datasets it uses unlabeled, celeba and stl10). Labels
    on a GPU cost one device sync (the -1 test).

    Raises:
        ValueError: labels that are not integers, or not of shape (B,).
    """
    if labels is None:
        return None
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"the training labels must be integers (class indices, -1 where "
                         f"unlabeled), got dtype {labels.dtype}: convert them with y.long()")
    if tuple(labels.shape) != (batch_size,):
        raise ValueError(f"the training labels must have shape ({batch_size},), one per image, "
                         f"got {tuple(labels.shape)}")
    if bool((labels == -1).all()):
        return None
    return labels.long()


def _check_finite(values: Mapping[str, float], step: int, hint: str) -> None:
    """``step``: 1-based, as the progress bar counts."""
    for name, v in values.items():
        if not math.isfinite(v):
            raise NonFiniteLossError(
                f"training loss {name!r} became {v} at step {step} (as the progress bar "
                f"counts). {hint} The last checkpoint (if any) was kept and not overwritten.",
                term=name, step=step)


@contextlib.contextmanager
def deferred_sigint():
    """Within the block, the first SIGINT only sets ``state["count"]`` (the caller stops at
    a safe point); a second one raises ``KeyboardInterrupt`` at once. The previous handler
    is restored on exit. Outside the main thread (signals are delivered there only), or
    when SIGINT is ignored, nothing is installed and the count stays 0.

    Yields:
        ``state``, a dict with ``"count"``: SIGINTs received in the block.
    """
    state = {"count": 0}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield state
        return

    def handler(signum, frame):
        state["count"] += 1
        if state["count"] > 1:
            raise KeyboardInterrupt("second interrupt: stopped at once, without a checkpoint")

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


#: What :func:`fit` calls once per batch: ``step_fn(x, y)`` -> values to log.
StepFn = Callable[[torch.Tensor, Optional[torch.Tensor]], Mapping[str, Any]]


def images_only(step: Callable[[torch.Tensor], Mapping[str, Any]]) -> StepFn:
    """A :func:`fit` step function from a step that takes the images alone: the labels
    ``y`` are dropped. ``images_only(step)(x, y) == step(x)``."""
    def step_fn(x: torch.Tensor, y: Optional[torch.Tensor]) -> Mapping[str, Any]:
        return step(x)
    return step_fn


def fit(step_fn: StepFn, *,
        modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
        dataset: Dataset, batch_size: int, epochs: int, seed: int, config: Mapping[str, Any],
        generator: torch.Generator, device: torch.device | str = "cpu",
        checkpoint: Optional[str | os.PathLike] = None, ckpt_every: int = 200,
        ckpt_every_s: Optional[float] = 60.0,
        eval_fn: Optional[Callable[[], Mapping[str, float]]] = None, eval_every: Optional[int] = None,
        stop_after: Optional[int] = None, num_workers: int = 0, desc: str = "train",
        progress: bool = True, nan_hint: str = "Lower the learning rate or keep the weight clamp on.",
        distributed: Optional[Any] = None,
        ) -> History:
    """Train for ``epochs`` epochs of full batches, resuming from ``checkpoint`` if it exists.

    Args:
        step_fn: called as ``step_fn(x, y)`` once per batch, in the epoch's order: ``x``
            the images (B, C, H, W) on ``device``, ``y`` their labels (B,) int64 on
            ``device``, or ``None`` when the batch has none (a TensorDataset of one tensor,
            items that are bare images or whose label is None, or every label -1: how
            :mod:`fa_utils.data` labels celeba and stl10, used unlabeled). B is
            ``batch_size`` (``batch_size / world_size`` on each rank). It does one
            optimiser step and returns floats (or 0-d tensors) to log; a step that needs
            no labels is wrapped with :func:`images_only`.
        modules, optimizers: what the checkpoint saves and restores, by name. Wrapped
            modules (DDP, DataParallel, ``torch.compile``) are saved unwrapped
            (:func:`unwrap_module`), so the file loads into the plain model.
        dataset: items (image, label) with an integer (or 0-d integer tensor) or None
            label, items that are bare images, or a TensorDataset (images first, integer
            labels second if any). Images float in [0, 1], as ``check_batch`` accepts.
        epochs: total epochs; ``len(dataset) // batch_size`` steps each.
        seed: fixes the data order of every epoch.
        config: the run's config as a plain dict; stored in the checkpoint and compared on
            resume (a mismatch is refused, so a checkpoint never mixes two runs).
        generator: the method's random generator (r_0 ...); its state is checkpointed.
        checkpoint: file to resume from and write to (atomically) every ``ckpt_every`` steps,
            every ``ckpt_every_s`` seconds of training (checked after each step), on an
            interrupt and at the end; ``None`` trains without checkpoints.
        ckpt_every_s: seconds between time-based checkpoints (None: by steps only).
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
            ``eval_fn`` runs on every rank. Interrupts and time-based checkpoints are
            agreed over the ranks in the same all-reduce.

    Checks: the first batch's images must be (B, C, H, W), floating point in the modules'
    dtype, with values in [0, 1] (:func:`check_batch`); labels must be integers, one per
    image.

    Interrupts: a SIGINT during training lets the running step finish, then writes the
    checkpoint of the step reached and raises :class:`TrainingInterrupted`; a second
    SIGINT raises ``KeyboardInterrupt`` at once (the last checkpoint stays intact).

    Returns:
        The :class:`History` (also stored in the checkpoint).

    Raises:
        CheckpointError: the checkpoint is unreadable, from another config, or does not
            fit the modules.
        NonFiniteLossError: a step refused a non-finite loss, or a logged value became NaN
            or inf; the message gives the step as the progress bar counts it (1 for the
            first) and the term; nothing is overwritten.
        TrainingInterrupted: SIGINT (Ctrl-C, Jupyter's Interrupt); a checkpoint was written.
        ValueError: a batch size larger than the dataset, a bad first batch, or labels
            that are not integers of shape (B,).
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
            _load_module_state(module, ckpt["modules"][name], name, checkpoint)
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        step = int(ckpt["step"])
        history = History.from_dict(ckpt["history"])
        history.seconds = float(ckpt.get("train_seconds", 0.0))

    def save() -> None:
        if checkpoint is None:
            return
        if rank != 0:
            _barrier(world)
            return
        save_checkpoint(checkpoint, {
            "format": CHECKPOINT_FORMAT, "step": step, "config": config,
            "modules": {k: unwrap_module(m).state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history.to_dict(), "train_seconds": history.seconds,
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
    last_saved = step
    for m in modules.values():
        m.train()
    pin = device.type == "cuda"
    first = True
    interrupted = False
    with deferred_sigint() as sigint:
        bar = tqdm(total=total, initial=step, desc=desc, disable=not progress or rank != 0,
                   leave=False)
        last_saved_t = monotonic()
        try:
            while step < end and not interrupted:
                epoch, offset = divmod(step, steps_per_epoch)
                order = _epoch_order(n, seed, epoch)[offset * batch_size:]
                batches = _batches(dataset, order, batch_size, num_workers, pin,
                                   shard=(rank, world) if world > 1 else None)
                while True:
                    t_step = monotonic()
                    try:
                        x, y = next(batches)
                    except StopIteration:
                        break
                    except Exception:
                        # DataLoader workers share the kernel's process group and die on
                        # the same SIGINT: with an interrupt pending, that is the interrupt
                        if world == 1 and sigint["count"]:
                            interrupted = True
                            break
                        raise
                    x = x.to(device, non_blocking=pin)
                    if y is not None:
                        y = y.to(device, non_blocking=pin)
                    if first:
                        check_batch(x, list(modules.values()), "the first training batch")
                        first = False
                    try:
                        values = step_fn(x, y)
                    except NonFiniteLossError as err:
                        raise NonFiniteLossError(
                            f"training stopped at step {step + 1} of {total} (as the progress "
                            f"bar counts): {err} {nan_hint} The last checkpoint (if any) was "
                            f"kept and not overwritten.", term=err.term, step=step + 1) from err
                    due = ckpt_every_s is not None and monotonic() - last_saved_t >= ckpt_every_s
                    if world > 1:
                        values, (stop_votes, due_votes) = _mean_over_ranks(
                            values, device, extra=(float(sigint["count"] > 0), float(due)))
                        stop, due = stop_votes > 0, due_votes > 0
                    else:
                        stop = sigint["count"] > 0
                    _check_finite(values, step + 1, nan_hint)
                    step += 1
                    history.log("train", step, values)
                    history.seconds += monotonic() - t_step
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
                    if eval_every and step % eval_every == 0:
                        evaluate()  # also when stopping: the resumed history stays identical
                    if stop:
                        interrupted = True
                        break
                    if step - last_saved >= ckpt_every or (due and step != last_saved):
                        save()
                        last_saved, last_saved_t = step, monotonic()
                    if step >= end:
                        break
                batches.close()
        finally:
            bar.close()
        if interrupted:
            if step != last_saved or (checkpoint is not None and not Path(checkpoint).exists()):
                save()
            where = (f"checkpoint written to {Path(checkpoint).resolve()}; run the same code "
                     f"again (the cell, the notebook or the command) to resume from step {step}"
                     if checkpoint is not None else
                     "no checkpoint file was given (checkpoint=None), so the steps are not kept")
            raise TrainingInterrupted(
                f"{desc}: training interrupted at step {step} of {total} (as the progress bar "
                f"counts); {where}.", step=step, total=total,
                checkpoint=Path(checkpoint).resolve() if checkpoint is not None else None)
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


def _mean_over_ranks(values: Mapping[str, Any], device: torch.device, extra=()
                     ) -> tuple[dict[str, float], list[float]]:
    """All-reduce the logged values (floats or 0-d tensors) to their mean over the ranks,
    and the ``extra`` numbers (flags) to their sum: one collective, one sync.
    Returns (means by name, sums of ``extra``)."""
    import torch.distributed as dist
    names = list(values)
    buf = torch.tensor([float(values[k]) for k in names] + [float(e) for e in extra],
                       dtype=torch.float64)
    if dist.get_backend() == "nccl":
        buf = buf.to(device)
    dist.all_reduce(buf)
    out = buf.tolist()
    world = dist.get_world_size()
    return dict(zip(names, [v / world for v in out[:len(names)]])), out[len(names):]
