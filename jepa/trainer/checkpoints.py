"""Checkpoint contents and discovery: RNG state (global and the data loaders'), model stamps,
finding the newest valid checkpoint, rebuilding a model from one.

The trainer writes its state with :func:`jepa.io.save`; this module holds what that state is made
of apart from the trainer's own counters:

* :func:`rng_state` / :func:`set_rng_state`: torch (CPU and CUDA), numpy and python RNGs, and the
  ``torch.Generator`` objects of data loaders (``DataLoader(..., generator=g)``, a sampler's
  ``generator``, the ``collate_fn``'s ``generator``, e.g. a mask collator's): a loader with its own
  generator draws its shuffling (and its workers' seeds) from it, not from the global RNG, so exact
  resume needs its state too.
* :func:`stamp_model`: the model class, its recorded config and the jepa version, so a checkpoint
  alone rebuilds the model (:func:`model_from_checkpoint_state`).
* :func:`checkpoint_files` / :func:`find_latest_checkpoint`: what counts as a checkpoint in a folder
  (one suffix set, temporary files of interrupted saves excluded) and the newest one that loads.
* Sharded checkpoints (``strategy="fsdp"``: one file per rank and a metadata file that commits the
  save, :mod:`jepa.io.sharded`) are found, verified and loaded by the same functions:
  the metadata file is the checkpoint's path; it loads into any number of ranks or into one process.

A leaf of :mod:`jepa.trainer`: it imports nothing else from it. :class:`TrainerCheckpoints` holds
the trainer's checkpoint methods (``checkpoint_state``, ``save_checkpoint``, ``load_checkpoint``,
``resume_from``); :class:`~jepa.trainer.trainer.BaseTrainer` inherits them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jepa import __version__
from jepa import io as jio
from jepa.models.base import BaseModel, build_model, load_state_dict_strict
from jepa.trainer.checks import as_float, check_int

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SUFFIXES",
    "TrainerCheckpoints",
    "best_spec",
    "checkpoint_files",
    "find_latest_checkpoint",
    "get_best_checkpoint",
    "load_checkpoint",
    "load_latest_checkpoint",
    "loader_generators",
    "model_from_checkpoint_state",
    "rng_state",
    "save_checkpoint",
    "set_loader_rng_state",
    "set_rng_state",
    "stamp_model",
]

log = logging.getLogger("jepa")

#: Version of the trainer checkpoint layout (the ``format`` entry).
CHECKPOINT_FORMAT = 1
#: File names that count as checkpoints in a folder.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")

# Where a DataLoader keeps torch.Generator objects that decide its order (checked in this order).
# The collate function's: a collator drawing random masks in the main process (jepa.data.MultiBlockMaskCollator).
_GENERATOR_PATHS = ("generator", "sampler.generator", "batch_sampler.generator", "batch_sampler.sampler.generator", "collate_fn.generator")


# ----------------------------------------------------------------------------------- RNG state
def loader_generators(loader: Any) -> dict[str, torch.Generator]:
    """The distinct ``torch.Generator`` objects of ``loader`` by attribute path (``"generator"``,
    ``"sampler.generator"``, ...); empty for a loader that draws from the global RNG."""
    found: dict[str, torch.Generator] = {}
    seen: set[int] = set()
    for path in _GENERATOR_PATHS:
        obj = loader
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.Generator) and id(obj) not in seen:
            seen.add(id(obj))
            found[path] = obj
    return found


def set_loader_rng_state(loader: Any, state: Mapping[str, torch.Tensor], *, name: str = "loader") -> None:
    """Restore the generators of ``loader`` from ``state`` (from :func:`rng_state`'s ``"loaders"``).

    A generator recorded in ``state`` that ``loader`` no longer has is reported with a warning: the
    data order then differs from the checkpointed run's.
    """
    generators = loader_generators(loader)
    for path, saved in state.items():
        gen = generators.get(path)
        if gen is None:
            warnings.warn(
                f"the checkpoint holds the state of {name}.{path} but this {name} has no such torch.Generator; "
                "its data order will differ from the checkpointed run's",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        gen.set_state(saved.cpu() if isinstance(saved, torch.Tensor) else torch.as_tensor(saved))


def rng_state(loaders: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every RNG a training run draws from: torch (CPU; CUDA when initialised), numpy, python, and
    under ``"loaders"`` the generators of each named loader in ``loaders`` that has any."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    per_loader = {}
    for name, loader in (loaders or {}).items():
        generators = loader_generators(loader) if loader is not None else {}
        if generators:
            per_loader[name] = {path: g.get_state() for path, g in generators.items()}
    if per_loader:
        state["loaders"] = per_loader
    return state


def set_rng_state(state: Mapping[str, Any], loaders: Mapping[str, Any] | None = None) -> None:
    """Restore what :func:`rng_state` recorded: the global RNGs, and the generators of the loaders
    in ``loaders`` (by name) that ``state`` holds."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].cpu().numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    saved = state.get("loaders") or {}
    for name, loader in (loaders or {}).items():
        if loader is not None and name in saved:
            set_loader_rng_state(loader, saved[name], name=f"{name} loader")


# ----------------------------------------------------------------------------------- model stamps
def stamp_model(state: dict[str, Any], model: Any) -> dict[str, Any]:
    """Add what rebuilds ``model`` without code (``model_class``, ``model_config``, for a
    :class:`~jepa.models.BaseModel`) and the ``jepa_version`` that wrote ``state``; returns it."""
    if isinstance(model, BaseModel):
        state["model_class"] = _class_name(model)
        state["model_config"] = json.dumps(model.config)
    state["jepa_version"] = __version__
    return state


def _class_name(model: nn.Module) -> str:
    """The class name of ``model``, without the wrapper class FSDP puts in front (``FSDPJEPA`` -> ``JEPA``)."""
    for cls in type(model).__mro__:
        if not cls.__module__.startswith("torch.distributed"):
            if cls.__name__.startswith("FSDP") and any(b.__module__.startswith("torch.distributed") for b in cls.__bases__):
                continue
            return cls.__name__
    return type(model).__name__


def model_from_checkpoint_state(state: Mapping[str, Any], source: str = "checkpoint") -> BaseModel:
    """Rebuild the model recorded in a trainer checkpoint (class + config) and load its weights."""
    if "model_class" not in state or "model_config" not in state:
        raise jio.CheckpointError(f"{source}: no model class/config recorded; cannot rebuild the model without code")
    model = build_model(state["model_class"], json.loads(state["model_config"]))
    load_state_dict_strict(model, state["model"], source=source)
    return model


# ----------------------------------------------------------------------------------- discovery
def checkpoint_files(directory: str | os.PathLike) -> list[Path]:
    """The checkpoint files of ``directory``, newest first: names ending in one of
    :data:`CHECKPOINT_SUFFIXES`, without the temporary files of an interrupted save
    (``*.tmp-<pid>``). Empty when the folder does not exist."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES and ".tmp-" not in p.name]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    return files


def _latest(directory: str | os.PathLike, map_location: Any = "cpu") -> tuple[Path, Any, jio.ShardedCheckpoint | None] | None:
    """The newest checkpoint of ``directory`` that loads and verifies: ``(path, state, sharded)``
    (``sharded``: the reader of a sharded checkpoint, whose every shard file was verified)."""
    for path in checkpoint_files(directory):
        try:
            state, sharded = jio.open_checkpoint(path, map_location, verify_shards=True)
        except (jio.CheckpointError, OSError, ValueError) as exc:
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
            continue
        if isinstance(state, Mapping) and "model" in state:
            return path, state, sharded
    return None


def load_latest_checkpoint(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """:func:`find_latest_checkpoint` with the state it loaded (so the winner is read only once; a
    sharded checkpoint's state is consolidated: every tensor whole)."""
    found = _latest(directory, map_location)
    if found is None:
        return None
    path, state, sharded = found
    return path, (state if sharded is None else sharded.consolidate(state))


def find_latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest checkpoint in ``directory`` that loads and verifies (None when there is none).

    Temporary files of an interrupted save (``*.tmp-<pid>``) are never candidates; a damaged or
    truncated file is skipped with a warning and the next newest one is tried. A sharded
    checkpoint counts when its metadata file and every shard file it names verify.
    """
    found = _latest(directory)
    return None if found is None else found[0]


def best_spec(save_best: Any) -> tuple[str, str]:
    """``(monitor, mode)`` of the trainer's ``save_best``: ``True``/``False`` -> ``("loss", "min")`` (the
    validation loss, else the training loss); a metric name (``"val_accuracy"``) -> that metric, maximised
    when its name says accuracy (``acc``), else minimised; a ``(name, "min"|"max")`` pair as given."""
    if isinstance(save_best, bool):
        return "loss", "min"
    if isinstance(save_best, str) and save_best:
        return save_best, "max" if "acc" in save_best else "min"
    if isinstance(save_best, (tuple, list)) and len(save_best) == 2 and isinstance(save_best[0], str) and save_best[1] in ("min", "max"):
        return save_best[0], save_best[1]
    raise ValueError(f"save_best must be a bool, a metric name or a (name, 'min'|'max') pair, got {save_best!r}")


# ----------------------------------------------------------------------------------- the trainer's side
class TrainerCheckpoints:
    """Checkpoint methods of :class:`~jepa.trainer.trainer.BaseTrainer` (mixed into it).

    What a checkpoint holds: ``model`` (weights, EMA target and its momentum step), ``optimizer``,
    ``scheduler``, ``grad_scaler``, ``epoch``, ``global_step``, ``best_score`` and ``best_monitor``
    (what ``best_model.pt`` follows; ``best_loss`` too when that is a loss), ``history``,
    ``nan_skipped_steps``, ``rng`` (:func:`rng_state` with the trainer's loaders; per rank under
    DDP as ``rng_per_rank``), for ``latest.pt`` written mid-epoch the ``epoch_progress`` (position
    in the epoch and the RNG state the epoch started from), and the :func:`stamp_model` entries.

    It works on the trainer's attributes (``model``, ``optimizer``, ``scheduler``, ``scaler``,
    counters, ``parallel``, ``save_dir``, ...); it holds no state of its own.
    """

    def _init_checkpoints(self, save_dir: Any, save_best: bool, save_last: bool, every_epochs: int | None,
                          every_steps: int | None, async_checkpoint: bool, resume: Any) -> None:
        """The checkpoint settings of the trainer (see its arguments)."""
        self.save_dir = Path(save_dir)
        self.best_monitor, self.best_mode = best_spec(save_best)
        self.save_best, self.save_last = bool(save_best), save_last
        self.best_score = math.inf if self.best_mode == "min" else -math.inf
        self.checkpoint_every_n_epochs = check_int("checkpoint_every_n_epochs", every_epochs, minimum=1, optional=True)
        self.checkpoint_every_n_steps = check_int("checkpoint_every_n_steps", every_steps, minimum=1, optional=True)
        self.async_checkpoint = bool(async_checkpoint)
        if resume is not None and not isinstance(resume, (str, os.PathLike)):
            raise ValueError(f"resume must be None, 'auto' or a checkpoint path, got {resume!r}")
        self.resume, self._resumed = resume, False
        self._epoch_progress: dict[str, Any] | None = None  # mid-epoch position (for step checkpoints)
        self._resume_position: dict[str, Any] | None = None
        self._pending_loader_rng: dict[str, Any] | None = None  # loaders' generators, applied in train()

    def _improves_best(self, metrics: Mapping[str, Any], loss: float) -> bool:
        """True (and the best score updated) when this epoch's monitored value beats the best so far:
        ``loss`` (the validation loss, else the training loss) for ``save_best=True``, else
        ``metrics[best_monitor]`` (epochs without it never improve)."""
        value = loss if self.best_monitor == "loss" else metrics.get(self.best_monitor)
        if value is None or math.isnan(float(value)):
            return False
        if (value < self.best_score) if self.best_mode == "min" else (value > self.best_score):
            self.best_score = float(value)
            return True
        return False

    def _resolve_path(self, name: str | os.PathLike) -> Path:
        path = Path(name)
        return path if path.is_absolute() or path.parent != Path(".") else self.save_dir / path

    def _loaders(self) -> dict[str, Any]:
        return {"train": getattr(self, "_active_train_loader", None), "val": getattr(self, "_active_val_loader", None)}

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly: weights, optimizer, scheduler, counters, RNG."""
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.current_epoch,
            "global_step": self.global_step,
            "best_score": self.best_score,
            "best_monitor": [self.best_monitor, self.best_mode],
            **({"best_loss": self.best_score} if self.best_mode == "min" and self.best_monitor.endswith("loss") else {}),
            "history": self.history,
            "rng": rng_state(self._loaders()),
            "nan_skipped_steps": self.nonfinite.skipped_steps,
        }
        if self.schedule.scheduler is not None:
            state["scheduler"] = self.schedule.state_dict()
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        if self._epoch_progress is not None:  # a mid-epoch checkpoint: where in the epoch we are
            state["epoch_progress"] = dict(self._epoch_progress)
        return stamp_model(state, self.model)

    def save_checkpoint(self, name: str | os.PathLike) -> Path:
        """Write the full training state to ``save_dir/name`` (atomically); returns the path.

        Distributed: only rank 0 writes (the call is a no-op returning the path on other ranks, so
        ``if rank == 0: trainer.save_checkpoint(...)`` and calling it on every rank both work).

        ``strategy="fsdp"``: a sharded checkpoint, written by every rank (so every rank must call
        this): each rank's shards in ``<name>.shards/``, then the metadata file ``save_dir/name``,
        which is the returned path and what :meth:`load_checkpoint` (in any number of processes),
        :func:`load_checkpoint` and ``resume`` accept.
        """
        if self._sharded_strategy():
            return self._save_sharded(name)
        if not self.is_global_zero:
            return self._resolve_path(name)
        path = jio.save(self.checkpoint_state(), self._resolve_path(name))
        self._callback("on_save_checkpoint", path)
        return path

    def _sharded_strategy(self) -> bool:
        parallel = getattr(self, "parallel", None)
        return parallel is not None and parallel.sharded

    def _save_sharded(self, name: str | os.PathLike) -> Path:
        """A sharded save (collective): every rank's RNG states gathered into rank 0's metadata, every
        rank writing its shards (:meth:`~jepa.trainer.fsdp.ShardedDataParallel.save_state`)."""
        state = self.checkpoint_state()
        mine = {"rng": state["rng"]}
        if self._epoch_progress is not None:
            mine["epoch_rng"] = self._epoch_progress["epoch_rng"]
        gathered = self.parallel.gather_rng(mine)
        state["rng_per_rank"] = [g["rng"] for g in gathered]
        if self._epoch_progress is not None:
            state["epoch_rng_per_rank"] = [g["epoch_rng"] for g in gathered]
        path = self.parallel.save_state(state, self._resolve_path(name))
        if self.is_global_zero:
            self._callback("on_save_checkpoint", path)
        return path

    def _save_in_loop(self, name: str) -> Path:
        """Save from inside ``train()``: every rank's RNG state is gathered, rank 0 writes, and all
        ranks wait for the file (no rank reads a checkpoint that is still being written)."""
        if self._sharded_strategy():
            return self._save_sharded(name)
        if self.parallel is None or not self.parallel.multi_process:
            path = jio.save(self.checkpoint_state(), self._resolve_path(name), async_=self.async_checkpoint)
            self._callback("on_save_checkpoint", path)
            return path
        mine = {"rng": rng_state(self._loaders())}
        if self._epoch_progress is not None:
            mine["epoch_rng"] = self._epoch_progress["epoch_rng"]
        gathered = self.parallel.gather_rng(mine)
        path = self._resolve_path(name)
        if self.is_global_zero:
            state = self.checkpoint_state()
            state["rng_per_rank"] = [g["rng"] for g in gathered]
            if self._epoch_progress is not None:
                state["epoch_rng_per_rank"] = [g["epoch_rng"] for g in gathered]
            path = jio.save(state, path, async_=self.async_checkpoint)
            self._callback("on_save_checkpoint", path)
        self.parallel.barrier()
        return path

    def _save_interrupted(self) -> None:
        """After Ctrl-C: rank 0 writes ``interrupted.pt``; no collectives (other ranks may be
        interrupted elsewhere), so a sharded run (FSDP) cannot save and says so."""
        if not self.is_global_zero:
            return
        if self._sharded_strategy():
            log.warning("training interrupted at step %d; not saved (a sharded save needs every rank): resume from the "
                        "last checkpoint written during training", self.global_step)
            return
        path = self.save_checkpoint("interrupted.pt")
        log.warning("training interrupted at step %d; state saved to %s", self.global_step, path)

    def load_checkpoint(self, name: str | os.PathLike, *, restore_rng: bool = True) -> dict[str, Any]:
        """Restore model, target encoder, optimizer, scheduler, counters and RNG from a checkpoint.

        ``name`` is a path or a file name inside ``save_dir``. A following ``train()`` continues
        the same run (the loaders' generators are restored when it starts).

        Sharded checkpoints (``strategy="fsdp"``) load into any number of ranks: under FSDP each rank
        reads only the rows of its own shards; otherwise (one process, or DDP) the whole state is
        assembled from the shard files. An ordinary checkpoint loads under FSDP too (each rank takes
        its rows). A checkpoint of another model (other parameter names or shapes) raises
        ``ValueError`` naming the first mismatch.
        """
        path = self._resolve_path(name)
        if not path.is_file() and Path(name).is_file():
            path = Path(name)
        state, sharded = jio.open_checkpoint(path, map_location=self.device)
        return self._restore(state, path, restore_rng=restore_rng, sharded=sharded)

    def _restore(self, state: dict[str, Any], path: Path, *, restore_rng: bool = True, sharded: jio.ShardedCheckpoint | None = None) -> dict[str, Any]:
        """Apply a loaded checkpoint ``state`` (read from ``path``; ``sharded``: the reader of a sharded
        checkpoint, whose ``state`` holds references to its tensors) to this trainer."""
        if not isinstance(state, Mapping) or "model" not in state:
            raise jio.CheckpointError(f"{str(path)!r} is not a jepa trainer checkpoint (no 'model' entry)")
        if self._sharded_strategy():
            self.parallel.load_model_state(self.model, state["model"], sharded, str(path))
            if "optimizer" in state:
                self.parallel.load_optimizer_state(self.optimizer, state["optimizer"], sharded)
        else:
            if sharded is not None:  # one process (or DDP) reads every shard
                state = sharded.consolidate(state)
            load_state_dict_strict(self.model, state["model"], source=str(path))
            if "optimizer" in state:
                self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            self.schedule.load_state_dict(state["scheduler"])
        if "grad_scaler" in state and self.scaler is not None:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.current_epoch = int(state.get("epoch", 0))
        self.global_step = int(state.get("global_step", 0))
        monitor = state.get("best_monitor")
        if monitor is None or list(monitor) == [self.best_monitor, self.best_mode]:  # a best of another metric does not carry over
            self.best_score = float(state.get("best_score", state.get("best_loss", self.best_score)))
        self.history = {k: list(v) for k, v in state.get("history", self.history).items()}
        self.nonfinite.skipped_steps = int(state.get("nan_skipped_steps", 0))
        ctx = self.dist

        def for_this_rank(key: str, fallback: Any) -> Any:
            per_rank = state.get(key)
            if ctx is not None and isinstance(per_rank, (list, tuple)) and len(per_rank) == ctx.world_size:
                return per_rank[ctx.rank]
            return fallback

        progress = state.get("epoch_progress")
        self._resume_position = None
        if progress is not None:
            position = dict(progress)
            position["epoch_rng"] = for_this_rank("epoch_rng_per_rank", progress["epoch_rng"])
            position["epoch"], position["batch_in_epoch"] = int(position["epoch"]), int(position["batch_in_epoch"])
            self._resume_position = position
        rng = for_this_rank("rng_per_rank", state.get("rng")) if restore_rng else None
        if rng is not None:
            set_rng_state(rng)
            self._pending_loader_rng = rng.get("loaders")  # applied when train() knows the loaders
        return state

    def _maybe_resume(self) -> None:
        if self.resume is None or self._resumed:
            return
        path = self.resume_from(self.resume)
        if path is not None and self.is_global_zero:
            log.warning("resumed from %s at epoch %d, step %d", path, self.current_epoch, self.global_step)

    def resume_from(self, resume: str | os.PathLike) -> Path | None:
        """Load the checkpoint to continue from: a path, or ``"auto"`` for the newest one in
        ``save_dir`` that loads and verifies (chosen by rank 0 and broadcast when distributed; every
        rank must call this). Returns the path, or None when ``"auto"`` found no checkpoint."""
        self._resumed = True
        if resume != "auto":
            path = Path(resume)
            self.load_checkpoint(path)
            return path
        found = _latest(self.save_dir, self.device) if self.is_global_zero else None
        path = None if found is None else found[0]
        if self.parallel is not None:
            chosen = self.parallel.broadcast(None if path is None else str(path))
            path = None if chosen is None else Path(chosen)
        if path is None:
            if self.is_global_zero:
                log.info("resume='auto': no checkpoint in %s, starting from scratch", self.save_dir)
            return None
        if found is not None:  # rank 0 already holds the verified state
            self._restore(found[1], path, sharded=found[2])
        else:
            self.load_checkpoint(path)
        return path


# ----------------------------------------------------------------------------------- v0 functions
def save_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    epoch: int,
    loss: float | torch.Tensor,
    checkpoint_path: str | os.PathLike,
) -> Path:
    """Write model weights, optimizer/scheduler state, epoch and loss to ``checkpoint_path``.

    The file is written atomically through :func:`jepa.io.save` (parent folders are created; any
    suffix works, ``.pt``/``.pth`` by convention). Keys match :meth:`~jepa.trainer.checkpoints.TrainerCheckpoints.checkpoint_state`
    (``"model"``, ``"optimizer"``, ``"scheduler"``, ``"epoch"``, and ``"model_class"`` /
    ``"model_config"`` for a :class:`~jepa.models.BaseModel`) plus ``"loss"``, so the trainer can
    resume from it; ``optimizer``/``scheduler`` may be None, in which case their key is left out.
    Returns the path written.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_checkpoint: model must be an nn.Module, got {type(model).__name__}")
    if optimizer is not None and not callable(getattr(optimizer, "state_dict", None)):
        raise TypeError(f"save_checkpoint: optimizer must be a torch optimizer or None, got {type(optimizer).__name__}")
    if scheduler is not None and not callable(getattr(scheduler, "state_dict", None)):
        raise TypeError(f"save_checkpoint: scheduler must be a torch LR scheduler or None, got {type(scheduler).__name__}")
    check_int("epoch", epoch, minimum=0, owner="save_checkpoint")
    loss_value = as_float(loss, "save_checkpoint: loss")
    if not isinstance(checkpoint_path, (str, os.PathLike)):
        raise TypeError(f"save_checkpoint: checkpoint_path must be a str or os.PathLike, got {type(checkpoint_path).__name__}")
    state: dict[str, Any] = {
        "model": {k: v.detach() for k, v in model.state_dict().items()},
        "epoch": int(epoch),
        "loss": loss_value,
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    return jio.save(stamp_model(state, model), Path(checkpoint_path))


def load_checkpoint(
    checkpoint_path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, torch.optim.Optimizer | None, Any | None, int]:
    """Restore ``model`` (and ``optimizer``/``scheduler`` when given) from a checkpoint.

    Reads files written by :func:`save_checkpoint` and by :meth:`~jepa.trainer.checkpoints.TrainerCheckpoints.save_checkpoint`
    (safely: ``weights_only`` loading, no unpickling), sharded ones (``strategy="fsdp"``, any number
    of ranks) included: their shards are assembled into whole tensors. The weights must match the model exactly:
    a missing/unexpected key or a shape mismatch raises ``ValueError`` naming the key (and both
    shapes). An optimizer or scheduler passed in is restored when the checkpoint holds its state;
    when it does not, a warning says so and it is left unchanged. Returns
    ``(model, optimizer, scheduler, epoch)``.

    Raises:
        FileNotFoundError: ``checkpoint_path`` does not exist.
        jepa.io.CheckpointError: the file is damaged or is not a model checkpoint.
    """
    if not isinstance(checkpoint_path, (str, os.PathLike)):
        raise TypeError(f"load_checkpoint: checkpoint_path must be a str or os.PathLike, got {type(checkpoint_path).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_checkpoint: model must be an nn.Module, got {type(model).__name__}")
    if optimizer is not None and not callable(getattr(optimizer, "load_state_dict", None)):
        raise TypeError(f"load_checkpoint: optimizer must be a torch optimizer or None, got {type(optimizer).__name__}")
    if scheduler is not None and not callable(getattr(scheduler, "load_state_dict", None)):
        raise TypeError(f"load_checkpoint: scheduler must be a torch LR scheduler or None, got {type(scheduler).__name__}")
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: checkpoint_path {str(path)!r} does not exist or is not a file")
    state = jio.load(path, map_location=map_location)
    if not isinstance(state, Mapping) or not isinstance(state.get("model"), Mapping):
        raise jio.CheckpointError(f"load_checkpoint: {str(path)!r} is not a jepa checkpoint (no 'model' state dict)")
    load_state_dict_strict(model, dict(state["model"]), source=str(path))
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if state.get(name) is not None:
            obj.load_state_dict(state[name])
        else:
            warnings.warn(f"load_checkpoint: {str(path)!r} holds no {name} state; the {name} passed in is left unchanged", stacklevel=2)
    epoch = int(state.get("epoch", 0))
    return model, optimizer, scheduler, epoch


def get_best_checkpoint(checkpoint_dir: str | os.PathLike, mode: str = "min", metric: str = "loss") -> Path | None:
    """The checkpoint file (:func:`~jepa.trainer.checkpoints.checkpoint_files`: the usual suffixes,
    no temporary files) in ``checkpoint_dir`` with the best stored ``metric``.

    The value is read from the checkpoint key ``metric`` or, failing that, ``"best_" + metric``
    (:func:`save_checkpoint` stores ``"loss"``, :class:`~jepa.trainer.JEPATrainer` stores ``"best_loss"``).
    ``mode="min"`` picks the smallest value, ``"max"`` the largest; ties go to the file written
    first (then by name). Files that cannot be read, lack the metric or hold NaN are skipped with a
    warning. Returns None when no file qualifies.

    Raises:
        ValueError: ``mode`` is not ``"min"`` or ``"max"``.
        FileNotFoundError: ``checkpoint_dir`` is missing.
        NotADirectoryError: ``checkpoint_dir`` is not a folder.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"get_best_checkpoint: mode must be 'min' or 'max', got {mode!r}")
    if not isinstance(metric, str) or not metric:
        raise TypeError(f"get_best_checkpoint: metric must be a non-empty str, got {metric!r}")
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"get_best_checkpoint: checkpoint_dir must be a str or os.PathLike, got {type(checkpoint_dir).__name__}")
    directory = Path(checkpoint_dir)
    if not directory.exists():
        raise FileNotFoundError(f"get_best_checkpoint: checkpoint_dir {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"get_best_checkpoint: checkpoint_dir {str(directory)!r} is not a directory")
    files = sorted(checkpoint_files(directory), key=lambda p: p.name)
    best: tuple[float, int, str] | None = None
    best_path: Path | None = None
    sign = 1.0 if mode == "min" else -1.0
    for path in files:
        try:
            state = jio.load(path, map_location="cpu", shards=False)  # (a sharded checkpoint: its metadata is enough)
        except (jio.CheckpointError, OSError) as exc:
            warnings.warn(f"get_best_checkpoint: skipping unreadable {str(path)!r}: {exc}", stacklevel=2)
            continue
        raw = None
        if isinstance(state, Mapping):
            raw = state.get(metric, state.get(f"best_{metric}"))
        if raw is None:
            warnings.warn(f"get_best_checkpoint: skipping {str(path)!r}: no {metric!r} or 'best_{metric}' entry", stacklevel=2)
            continue
        try:
            value = as_float(raw, f"{metric} in {str(path)!r}")
        except (TypeError, ValueError) as exc:
            warnings.warn(f"get_best_checkpoint: skipping {str(path)!r}: {exc}", stacklevel=2)
            continue
        if math.isnan(value):
            warnings.warn(f"get_best_checkpoint: skipping {str(path)!r}: {metric} is NaN", stacklevel=2)
            continue
        key = (sign * value, path.stat().st_mtime_ns, path.name)
        if best is None or key < best:
            best, best_path = key, path
    return best_path


