"""Multi-process training under ``torchrun``: process group, data sharding, gathers, the DDP wrapper.

The trainer (``JEPATrainer(..., distributed=True)``, ``create_trainer(..., distributed=True)`` or the
v0 :class:`DistributedTrainer`) uses this module to:

* initialise the process group from the torchrun environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) unless the user already called
  ``torch.distributed.init_process_group``: NCCL for CUDA devices, gloo on CPU
  (:func:`init_distributed`);
* pick the device ``cuda:LOCAL_RANK`` (or the CPU);
* shard a user's ``DataLoader`` with a :class:`~torch.utils.data.DistributedSampler`
  (:func:`distributed_loader`);
* wrap the model's step (:class:`ModelStep`, the model-step protocol of :mod:`jepa.trainer.objective`)
  in ``DistributedDataParallel`` (:func:`wrap_ddp`) and average gradients of steps that bypassed it
  (:func:`average_gradients`);
* gather the outputs the loss takes across ranks with gradients (:func:`gather_outputs`,
  :func:`gather_rows`), so terms that use batch statistics (the variance/covariance regularizer,
  batch-normalized targets, InfoNCE negatives, SIGReg) see the global batch and a 2-process run
  optimizes the same objective as a 1-process run with twice the batch;
* tell a failure of another rank from one of this rank (:func:`is_peer_failure`);
* hold all of this for the trainer (:class:`ParallelStrategy`): :class:`DataParallel` replicates the
  model under DDP; its sibling :class:`~jepa.trainer.fsdp.ShardedDataParallel` (``strategy="fsdp"``)
  shards it with FSDP2.

This module does not import the trainer (the trainer imports it). The v0 class
:class:`DistributedTrainer` is a :class:`~jepa.trainer.JEPATrainer`, so it is defined in
:mod:`jepa.trainer.distributed_trainer` and published here as
``jepa.trainer.distributed.DistributedTrainer`` by the package (``jepa/trainer/__init__.py``), which
always runs before this module is used.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import inspect
import logging
import os
import warnings
import weakref
from collections.abc import Iterable, Mapping
from datetime import timedelta
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

from jepa.trainer.batches import resolve_device
from jepa.trainer.checks import check_int
from jepa.trainer.objective import model_outputs

log = logging.getLogger("jepa")

__all__ = [
    "DataParallel",
    "DistributedContext",
    "DistributedTrainer",
    "ModelStep",
    "ParallelStrategy",
    "PeerFailureError",
    "abort_run",
    "all_reduce",
    "average_gradients",
    "distributed_loader",
    "gather_outputs",
    "gather_rows",
    "init_distributed",
    "is_distributed",
    "is_peer_failure",
    "set_loader_epoch",
    "wrap_ddp",
]


@dataclass
class DistributedContext:
    """Where this process sits in a multi-process run."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str
    owns_group: bool  # True when jepa initialised the process group (and so destroys it)

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def _destroy_group() -> None:
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # pragma: no cover - best effort at exit
            pass


def init_distributed(
    world_size: int | None = None,
    local_rank: int | None = None,
    device: str | torch.device | None = "auto",
    *,
    rank: int | None = None,
) -> DistributedContext:
    """Join (or create) the default process group and pick this process's device.

    When ``torch.distributed`` is already initialised (the user called ``init_process_group``) it is
    used as is. Otherwise the group is created from the torchrun environment variables; without
    them (a plain ``python script.py``) a ``RuntimeError`` says how to launch.

    ``world_size``, ``local_rank`` and ``rank`` are checked against the environment / group when
    given (``rank`` may be the global rank or, as in the v0 docs, the local rank).
    """
    check_int("world_size", world_size, minimum=1, optional=True)
    check_int("local_rank", local_rank, minimum=0, optional=True)
    check_int("rank", rank, minimum=0, optional=True)
    if not dist.is_available():
        raise RuntimeError("distributed=True: this torch build has no torch.distributed support")
    env_local = _env_int("LOCAL_RANK")
    owns = False
    if dist.is_initialized():
        group_rank, group_world = dist.get_rank(), dist.get_world_size()
        backend = str(dist.get_backend())
        lr = env_local if env_local is not None else (local_rank if local_rank is not None else group_rank)
    else:
        env_world, env_rank = _env_int("WORLD_SIZE"), _env_int("RANK")
        if env_world is None or env_rank is None or "MASTER_ADDR" not in os.environ:
            raise RuntimeError(
                "distributed=True needs the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, "
                "MASTER_PORT) or an initialised process group. Launch with e.g. "
                "`torchrun --nproc_per_node=2 -m jepa.cli train --distributed true` or "
                "`torchrun --nproc_per_node=2 your_script.py`, or call torch.distributed.init_process_group first."
            )
        lr = env_local if env_local is not None else env_rank
        dev = resolve_device(device)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(lr)
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is not None:
            # Under torchrun the workers of every restart attempt share the agent's store; keys the
            # previous attempt's process group left there (e.g. the gloo address of a dead rank)
            # would be read by the new attempt. A prefix per attempt keeps the attempts apart.
            use_agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env_world,
                is_master=(not use_agent and env_rank == 0), timeout=timedelta(minutes=10),
                **({} if use_agent else {"multi_tenant": True}),
            )
            store = dist.PrefixStore(f"jepa/attempt_{restart}", store)
            dist.init_process_group(backend=backend, store=store, rank=env_rank, world_size=env_world)
        else:
            dist.init_process_group(backend=backend)
        owns = True
        atexit.register(_destroy_group)
        group_rank, group_world = dist.get_rank(), dist.get_world_size()
    if world_size is not None and world_size != group_world:
        raise ValueError(f"world_size={world_size} but the process group has {group_world} processes (WORLD_SIZE)")
    if local_rank is not None and env_local is not None and local_rank != env_local:
        raise ValueError(f"local_rank={local_rank} but LOCAL_RANK={env_local} in the environment")
    if rank is not None and rank not in (group_rank, lr):
        raise ValueError(f"rank={rank} is neither the global rank ({group_rank}) nor the local rank ({lr}) of this process")
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", lr if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    return DistributedContext(rank=group_rank, local_rank=lr, world_size=group_world, device=dev, backend=backend, owns_group=owns)


_MAX_DIMS = 8  # outputs with more dimensions than this cannot be gathered (their shapes are exchanged in fixed rows)


def _all_gather_padded(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """all_gather ``x`` (this rank's ``rows[rank]`` rows) when ranks hold different numbers of rows:
    pad to the largest, gather, cut each part back. Bool tensors travel as uint8."""
    wire = x.to(torch.uint8) if x.dtype == torch.bool else x
    most = max(rows)
    if wire.shape[0] < most:
        wire = torch.cat([wire, wire.new_zeros((most - wire.shape[0], *wire.shape[1:]))])
    parts = [torch.empty_like(wire) for _ in rows]
    dist.all_gather(parts, wire.contiguous())
    out = torch.cat([p[:n] for p, n in zip(parts, rows)], dim=0)
    return out.to(torch.bool) if x.dtype == torch.bool else out


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the sum over ranks of the gradients
    of its own rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: list[int]) -> torch.Tensor:  # type: ignore[override]
        ctx.rows = rows
        return _all_gather_padded(x, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = sum(ctx.rows[: dist.get_rank()])
        return grad[start : start + ctx.rows[dist.get_rank()]], None


_METADATA_GROUPS: dict[int, Any] = {}


def _metadata_group() -> Any:
    """The process group shapes travel on: the default one when it is gloo (CPU tensors), else a
    gloo side group created once (collectively, on every rank's first gather), so exchanging shapes
    never makes the host wait for the GPU. None: no gloo; shapes then go through the default group."""
    world = dist.group.WORLD
    if dist.get_backend() == "gloo":
        return world
    key = id(world)
    if key not in _METADATA_GROUPS:
        try:
            _METADATA_GROUPS[key] = dist.new_group(backend="gloo")
        except (RuntimeError, ValueError):  # a build without gloo
            _METADATA_GROUPS[key] = None
    return _METADATA_GROUPS[key]


def _shapes_of_all_ranks(tensors: list[torch.Tensor], names: list[str]) -> list[list[tuple[int, ...]]]:
    """For every rank, the shapes of ``tensors`` there (one small all_gather for all of them)."""
    table = torch.full((len(tensors), 1 + _MAX_DIMS), -1, dtype=torch.long)
    for i, (t, name) in enumerate(zip(tensors, names)):
        if t.dim() > _MAX_DIMS:
            raise ValueError(f"gather_outputs: output {name!r} has {t.dim()} dimensions; at most {_MAX_DIMS} can be gathered")
        table[i, 0] = t.dim()
        table[i, 1 : 1 + t.dim()] = torch.tensor(t.shape, dtype=torch.long)
    group = _metadata_group()
    if group is None:
        table = table.to(tensors[0].device)
    parts = [torch.empty_like(table) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, table, group=group)
    return [[tuple(int(s) for s in row[1 : 1 + int(row[0])]) for row in part.cpu()] for part in parts]


def gather_outputs(outputs: Mapping[str, Any], names: Iterable[str], unbatched: Iterable[str] = ()) -> dict[str, Any]:
    """``outputs`` with every tensor among ``names`` that has at least one dimension (and is not in
    ``unbatched``) concatenated over ranks along dim 0, in rank order, keeping the gradient.

    Ranks may hold different numbers of rows (an uneven last batch); every other dimension must
    agree across ranks, else ``ValueError`` names the output and the shapes (pad per-sample
    variable-length outputs to a fixed size and pass a validity mask). The backward hands each
    rank the sum over ranks of the gradients of its own rows: when every rank evaluates the same
    loss on the gathered outputs and DDP averages the parameter gradients, the update is the
    gradient of that loss, the same objective as one process holding the whole batch.

    Not distributed (or a single process): ``outputs`` unchanged.
    """
    out = dict(outputs)
    if not is_distributed():
        return out
    skip = set(unbatched)
    picked = sorted(n for n in set(names) if n not in skip and isinstance(out.get(n), torch.Tensor) and out[n].dim() >= 1)
    if not picked:
        return out
    tensors = [out[n] for n in picked]
    shapes = _shapes_of_all_ranks(tensors, picked)
    for i, (name, x) in enumerate(zip(picked, tensors)):
        per_rank = [ranks[i] for ranks in shapes]
        if any(len(s) != x.dim() or s[1:] != tuple(x.shape[1:]) for s in per_rank):
            raise ValueError(
                f"gather_outputs: output {name!r} has shapes {per_rank} on the ranks; only dim 0 (the batch) may differ. "
                "Pad per-sample variable-size outputs to a fixed size (with a validity mask), or list the output in the "
                "model's unbatched_outputs if it is not batch-first"
            )
        rows = [s[0] for s in per_rank]
        out[name] = _GatherRows.apply(x, rows) if x.requires_grad else _all_gather_padded(x.detach(), rows)
    return out


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``(b, ...)``; ``b`` may differ between ranks, the other dimensions may not)
    over ranks along dim 0, keeping the gradient: the result has the rows of rank 0, then rank 1, ...

    See :func:`gather_outputs` for the backward. Not distributed: ``x`` itself.
    """
    return gather_outputs({"x": x}, ("x",))["x"]


def all_reduce(values: torch.Tensor, op: str = "mean") -> torch.Tensor:
    """``values`` reduced over ranks with ``op`` ("mean", "sum" or "max"), as a new tensor
    (``values`` itself is unchanged); ``values`` when not distributed."""
    if op not in ("mean", "sum", "max"):
        raise ValueError(f"all_reduce: op must be 'mean', 'sum' or 'max', got {op!r}")
    if not is_distributed():
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return out / dist.get_world_size() if op == "mean" else out

def _sampler_of(loader: DataLoader) -> Any:
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    if isinstance(sampler, DistributedSampler):
        return sampler
    if batch_sampler is not None and isinstance(getattr(batch_sampler, "sampler", None), DistributedSampler):
        return batch_sampler.sampler
    return None


def distributed_loader(
    loader: DataLoader, ctx: DistributedContext | None = None, *, shuffle: bool | None = None, seed: int = 0
) -> DataLoader:
    """``loader`` sharded over the ranks.

    A loader that already uses a :class:`~torch.utils.data.DistributedSampler` is returned as is.
    Otherwise an equivalent loader is built (same dataset, batch size, workers, collate function,
    pin_memory, drop_last) whose sampler is a ``DistributedSampler`` that shuffles when the original
    did (``RandomSampler``) or when ``shuffle`` says so; the trainer calls ``set_epoch`` every epoch.

    ``drop_last``: with ``False`` (the default) the sampler repeats a few samples so every rank gets
    the same number of them, and each rank's last batch may be smaller; with ``True`` the samples
    that do not divide evenly over the ranks, and each rank's incomplete last batch, are dropped.
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(f"distributed training needs a torch.utils.data.DataLoader, got {type(loader).__name__}")
    world = ctx.world_size if ctx is not None else (dist.get_world_size() if is_distributed() else 1)
    rank = ctx.rank if ctx is not None else (dist.get_rank() if is_distributed() else 0)
    if world == 1 or _sampler_of(loader) is not None:
        return loader
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset):
        raise ValueError(
            "distributed training cannot shard an IterableDataset automatically: split the stream by "
            "torch.distributed.get_rank() inside the dataset and pass the loader with a DistributedSampler-free "
            "map-style dataset, or use a map-style dataset"
        )
    if loader.batch_size is None:
        raise ValueError(
            "distributed training cannot rebuild a DataLoader that uses a custom batch_sampler: build it with "
            "sampler=DistributedSampler(dataset) yourself"
        )
    if shuffle is None:
        shuffle = isinstance(loader.sampler, RandomSampler)
    elif not isinstance(loader.sampler, (RandomSampler, SequentialSampler)):
        warnings.warn(
            f"distributed training replaces the loader's {type(loader.sampler).__name__} by a DistributedSampler",
            stacklevel=2,
        )
    n = len(dataset)
    if n < world:
        warnings.warn(
            f"the dataset has {n} samples for {world} processes: some ranks only see repeated samples",
            stacklevel=2,
        )
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=loader.drop_last)
    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "sampler": sampler,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": loader.drop_last,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "generator": loader.generator,
    }
    if loader.num_workers > 0:
        kwargs["multiprocessing_context"] = loader.multiprocessing_context
        kwargs["prefetch_factor"] = loader.prefetch_factor
        kwargs["persistent_workers"] = loader.persistent_workers
    return DataLoader(dataset, **kwargs)


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the loader's sampler when it has one (DistributedSampler)."""
    sampler = _sampler_of(loader) if isinstance(loader, DataLoader) else None
    if sampler is not None:
        sampler.set_epoch(epoch)


class ModelStep(torch.nn.Module):
    """The module DDP wraps: its forward is the model step, :func:`jepa.trainer.objective.model_outputs`
    (``forward_batch(batch)``, ``forward_features(*pair)`` or ``forward(*pair)``).

    DDP synchronises gradients only for forwards that go through it; the trainer's training step
    calls this wrapper with the whole batch, so the model's named outputs come back while the
    reducer tracks the online parameters. The EMA target encoder has no trainable parameters, so
    DDP leaves it alone. ``calls`` counts forwards (to notice a training step that bypassed DDP).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, batch: Any) -> dict[str, Any]:
        """The named outputs of the model on ``batch`` (counted in ``calls``)."""
        self.calls += 1
        return model_outputs(self.model, batch)


def wrap_ddp(model: torch.nn.Module, ctx: DistributedContext, *, find_unused_parameters: bool = True) -> DistributedDataParallel:
    """``DistributedDataParallel`` around :class:`ModelStep` of ``model`` (on ``ctx.device``).

    Buffers are not broadcast every forward: the EMA step counter and the target encoder are
    identical on every rank by construction (the online weights are)."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(
        ModelStep(model),
        device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
        **no_buffer_sync,
    )


def average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Average the gradients of ``model`` over ranks (one all_reduce per dtype): for steps whose
    forwards bypassed DDP (a custom ``training_step`` calling ``self.model`` directly)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in model.parameters():
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        flat /= world_size
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


class PeerFailureError(RuntimeError):
    """This rank stopped because another rank of a distributed run failed."""


_PEER_FAILURE_MARKERS = ("connection closed by peer", "connection reset by peer", "remote worker", "broken pipe")


def is_peer_failure(exc: BaseException) -> bool:
    """True when ``exc`` is a collective failing because another rank went away (its error is that
    rank's, not this one's)."""
    dist_error = getattr(torch.distributed, "DistError", ())
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        (dist_error and isinstance(exc, dist_error)) or any(m in text for m in _PEER_FAILURE_MARKERS)
    )


def abort_run(ctx: DistributedContext, exc: BaseException, step: int) -> PeerFailureError | None:
    """After ``exc`` ended this rank's training: tear the process group down (when jepa created it)
    so ranks blocked in a collective with this one fail instead of waiting forever (torchrun then
    ends the others and reports the root cause). Returns the one-line :class:`PeerFailureError` to
    raise instead of ``exc`` when ``exc`` is only the echo of another rank's failure."""
    if ctx.owns_group:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    if is_peer_failure(exc):
        return PeerFailureError(
            f"rank {ctx.rank}: stopped at step {step} because another rank failed "
            "(its error is printed by that rank and summarised by torchrun)"
        )
    return None


def _close_at_exit(ref: Any) -> None:
    parallel = ref()
    if parallel is not None:
        with contextlib.suppress(Exception):
            parallel.close()


class ParallelStrategy:
    """What the training loop needs from a multi-process strategy, whatever it does with the model:
    the process-group context, sharded copies of the trainer's loaders and the collectives.

    :class:`DataParallel` (DDP, replicated model) and
    :class:`~jepa.trainer.fsdp.ShardedDataParallel` (FSDP2, sharded model) are its two kinds; the
    trainer holds one (``trainer.parallel``) when ``distributed`` is on. Every method is correct with
    one process too (no collectives then).
    """

    #: True when the model's parameters are sharded over the ranks (no rank holds them all).
    sharded = False

    def __init__(self, ctx: DistributedContext) -> None:
        self.ctx = ctx
        self._sharded_loaders: dict[int, tuple[Any, Any]] = {}
        self._closed = False
        if ctx.owns_group:  # released at interpreter exit at the latest (a weak reference: no leak)
            atexit.register(_close_at_exit, weakref.ref(self))

    @property
    def multi_process(self) -> bool:
        """True with more than one process."""
        return self.ctx.world_size > 1

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this distributed trainer was closed (trainer.close()); build a new one to train again")

    def shard(self, loader: Any, *, shuffle: bool | None = None, seed: int = 0) -> Any:
        """``loader`` with a DistributedSampler (built once per loader; None stays None)."""
        if loader is None or not self.multi_process:
            return loader
        cached = self._sharded_loaders.get(id(loader))
        if cached is not None and cached[0] is loader:
            return cached[1]
        sharded = distributed_loader(loader, self.ctx, shuffle=shuffle, seed=seed)
        self._sharded_loaders[id(loader)] = (loader, sharded)
        return sharded

    def reduce(self, values: torch.Tensor, op: str = "mean") -> torch.Tensor:
        """:func:`all_reduce` of ``values`` over the ranks."""
        return all_reduce(values, op) if self.multi_process else values

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.multi_process:
            dist.barrier()

    def gather_rng(self, mine: Any) -> list[Any]:
        """``mine`` from every rank, in rank order (pickled objects; for per-rank RNG states)."""
        if not self.multi_process:
            return [mine]
        gathered: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(gathered, mine)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if not self.multi_process:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def start_run(self) -> None:
        """Called when :meth:`~jepa.trainer.trainer.BaseTrainer.train` starts."""

    def sync_bypassed(self, model: torch.nn.Module) -> None:
        """Called at every optimizer step, before clipping (see :meth:`DataParallel.sync_bypassed`)."""

    def _release(self) -> None:
        """Drop what holds the process group (the strategy's wrappers)."""

    def close(self) -> None:
        """Release the strategy's wrappers, then destroy the process group when jepa created it.

        The wrappers go first: they hold the process group, and a group whose last reference goes
        away only at interpreter teardown can abort the process there."""
        if not dist.is_initialized():
            return
        if not self._closed:
            self.barrier()  # no rank tears down while another is still in a collective
            self._closed = True
            self._release()
            self._sharded_loaders.clear()
            gc.collect()
        if self.ctx.owns_group:
            dist.destroy_process_group()


class DataParallel(ParallelStrategy):
    """The DDP side of one trainer: the DDP wrapper of the model step (:class:`ModelStep`) on top
    of :class:`ParallelStrategy`'s loaders and collectives. The model is replicated on every rank."""

    def __init__(self, model: torch.nn.Module, ctx: DistributedContext, *, find_unused_parameters: bool = True) -> None:
        self.ddp: Any = wrap_ddp(model, ctx, find_unused_parameters=find_unused_parameters)
        self._calls_seen = 0
        super().__init__(ctx)

    def forward(self, batch: Any) -> dict[str, Any]:
        """The model step through DDP (gradients are synchronised at the next backward)."""
        self._check_open()
        return self.ddp(batch)

    def no_sync(self, skip: bool) -> Any:
        """``ddp.no_sync()`` when ``skip`` (accumulating micro-batches), else a no-op context."""
        return self.ddp.no_sync() if skip else contextlib.nullcontext()

    def start_run(self) -> None:
        """Forget forwards counted before this run (see :meth:`sync_bypassed`)."""
        self._calls_seen = self.ddp.module.calls

    def sync_bypassed(self, model: torch.nn.Module) -> None:
        """At an optimizer step: average the gradients over ranks when no forward of this
        accumulation window went through DDP (a custom ``training_step`` that calls the model
        directly), so the ranks never silently diverge."""
        calls = self.ddp.module.calls
        bypassed, self._calls_seen = calls == self._calls_seen, calls
        if bypassed and self.multi_process:
            average_gradients(model, self.ctx.world_size)

    def _release(self) -> None:
        self.ddp = None
