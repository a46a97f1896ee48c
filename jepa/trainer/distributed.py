"""Multi-process training under ``torchrun``: process group, data sharding, gathers, DistributedTrainer.

The trainer (``JEPATrainer(..., distributed=True)``, ``create_trainer(..., distributed=True)`` or the
v0 :class:`DistributedTrainer`) uses this module to:

* initialise the process group from the torchrun environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) unless the user already called
  ``torch.distributed.init_process_group``: NCCL for CUDA devices, gloo on CPU;
* pick the device ``cuda:LOCAL_RANK`` (or the CPU);
* shard a user's ``DataLoader`` with a :class:`~torch.utils.data.DistributedSampler`
  (:func:`distributed_loader`);
* gather embeddings across ranks with gradients (:func:`gather_rows`), so terms that use batch
  statistics (the variance/covariance regularizer, batch-normalized targets, InfoNCE negatives)
  see the global batch and a 2-process run optimizes the same objective as a 1-process run with
  twice the batch.
"""

from __future__ import annotations

import atexit
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

from jepa.trainer.trainer import JEPATrainer

log = logging.getLogger("jepa")

__all__ = [
    "DistributedContext",
    "DistributedTrainer",
    "all_reduce",
    "distributed_loader",
    "gather_rows",
    "init_distributed",
    "is_distributed",
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


def _check_int(name: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"{name} must be an int >= {minimum} or None, got {value!r}")


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
    _check_int("world_size", world_size, 1)
    _check_int("local_rank", local_rank, 0)
    _check_int("rank", rank, 0)
    if not dist.is_available():
        raise RuntimeError("distributed=True: this torch build has no torch.distributed support")
    from jepa.trainer.trainer import resolve_device  # noqa: PLC0415

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
            from datetime import timedelta  # noqa: PLC0415

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


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the sum over ranks of the gradients
    of its own rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``(b, ...)``, the same shape on every rank) over ranks along dim 0, keeping
    the gradient: the result is ``(world_size * b, ...)`` in rank order.

    The backward sums the gradients every rank computed for each slice, so when every rank
    evaluates the same loss on the gathered batch and DDP averages the parameter gradients, the
    update is the gradient of that loss: the same objective as one process holding the whole batch.
    """
    if not is_distributed():
        return x
    if x.requires_grad:
        return _GatherRows.apply(x)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


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


class FeatureForward(torch.nn.Module):
    """The module DDP wraps: its forward is the model's ``forward_features`` (or ``forward``).

    DDP synchronises gradients only for forwards that go through it; the trainer's training step
    calls this wrapper so the JEPA's feature dict (prediction, target, context, projection) comes
    back while the reducer tracks the online parameters. The EMA target encoder has no trainable
    parameters, so DDP leaves it alone.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, *items: torch.Tensor) -> Any:
        self.calls += 1
        if hasattr(self.model, "forward_features"):
            return self.model.forward_features(*items)
        return self.model(*items)


class DistributedTrainer(JEPATrainer):
    """JEPATrainer for ``torchrun`` launches (v0 API): ``DistributedTrainer(config, world_size, rank)``.

    Builds the trainer of ``config`` with ``distributed=True``: the process group comes from the
    torchrun environment (or the one you already initialised with ``dist.init_process_group``), the
    online encoder and predictor train under ``DistributedDataParallel``, data are sharded with a
    ``DistributedSampler``, and only rank 0 shows progress, logs and writes checkpoints.

    ``rank`` may be the global rank or the local rank (the v0 docs pass ``local_rank``); it is
    checked against the process group. With ``world_size == 1`` and no torchrun environment this is
    an ordinary single-process run.
    """

    def __init__(self, config: Any, world_size: int = 1, rank: int = 0, **kwargs: Any) -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"DistributedTrainer: world_size must be an int >= 1, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ValueError(f"DistributedTrainer: rank must be an int >= 0, got {rank!r}")
        launched = dist.is_available() and (dist.is_initialized() or "WORLD_SIZE" in os.environ)
        if world_size == 1 and not launched:
            if rank != 0:
                raise ValueError(f"DistributedTrainer: rank must be 0 when world_size is 1, got {rank!r}")
            super().__init__(config, **kwargs)
        else:
            super().__init__(config, distributed=True, world_size=world_size, distributed_rank=rank, **kwargs)
        self.world_size = self.dist.world_size if self.dist is not None else 1
        self.rank = self.dist.rank if self.dist is not None else 0
