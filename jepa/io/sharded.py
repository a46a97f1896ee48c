"""Sharded checkpoints: one file per rank plus a metadata file that commits the save.

When a model is sharded over ranks (the trainer's ``strategy="fsdp"``) no rank holds the whole
model, so no rank can write the whole checkpoint.
A sharded checkpoint named ``<dir>/<name>`` (``last.pt``, ``latest.pt``, ...) is::

    <dir>/<name>                                   metadata: a jepa.io file, written last (the commit)
    <dir>/<name>.shards/<save id>/rank00000.pt     rank 0's rows of every sharded tensor (jepa.io file)
    <dir>/<name>.shards/<save id>/rank00001.pt     rank 1's ...

Every file is written by :func:`jepa.io.save` (temporary file, fsync, rename; a CRC32C per tensor).
The shards of a save go to a folder of their own, named by a save id all ranks agree on; only when
every rank has written its shard does rank 0 write the metadata file, atomically, over the previous
one, and only then are the shard folders of older saves of that name removed. A crash at any moment
before the rename leaves the previous metadata file and the shards it names untouched: the previous
checkpoint still loads. The metadata file is what :func:`~jepa.trainer.checkpoints.checkpoint_files`
lists, what ``resume="auto"`` finds and what every loader accepts.

The metadata file holds the trainer's state with every sharded tensor (a ``DTensor`` sharded along
one dimension over a 1-D mesh, FSDP's layout) replaced by a reference ``{"jepa.sharded_tensor":
name}``, and under ``"sharded"`` the index: world size, save id, shard files, and for every sharded
tensor its global shape, the dimension it is split along and the range ``[start, stop)`` of that
dimension each rank holds. Replicated tensors (buffers, step counters, RNG states) are stored once,
in the metadata file.

Loading reshards: :meth:`ShardedCheckpoint.part` reads any range of a tensor along any dimension
from the shard files that hold it, so a checkpoint written by N ranks loads into M ranks, and
:meth:`ShardedCheckpoint.consolidate` gives the whole state, as one process without sharding (or a
DDP rank) needs it; :func:`jepa.io.load` returns that whole state for a sharded checkpoint's path.
Shard files are mapped, not read into memory, and verified (checksums) before their first use.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from jepa.io._file import CheckpointError

__all__ = [
    "SHARD_KEY",
    "ShardedCheckpoint",
    "is_shard_ref",
    "is_sharded_state",
    "leaf_part",
    "leaf_shape",
    "open_checkpoint",
    "save_sharded",
    "shard_layout",
    "shard_rows",
]

#: Key of the placeholder that stands for a sharded tensor in the metadata file.
SHARD_KEY = "jepa.sharded_tensor"
#: Version of the sharded layout (``state["sharded"]["format"]``).
SHARDED_FORMAT = 1


# ----------------------------------------------------------------------------------- layout helpers
def shard_rows(length: int, rank: int, world_size: int) -> tuple[int, int]:
    """The range ``[start, stop)`` of a dimension of size ``length`` that ``rank`` holds when it is
    split over ``world_size`` ranks the way FSDP and DTensor's ``Shard`` (``torch.chunk``) split it:
    chunks of ``ceil(length / world_size)``, the last ranks holding fewer or none."""
    chunk = math.ceil(length / world_size) if length else 0
    start = min(rank * chunk, length)
    return start, min(start + chunk, length)


def _dtensor_type() -> Any:
    try:
        from torch.distributed.tensor import DTensor  # noqa: PLC0415
    except ImportError:  # pragma: no cover - a torch build without distributed tensors
        return None
    return DTensor


def shard_layout(t: Any, name: str = "tensor") -> tuple[int, int, int]:
    """``(dim, start, stop)``: the dimension a DTensor is sharded along over its 1-D mesh and the range
    of it this rank holds; ``ValueError`` for any other layout."""
    from torch.distributed.tensor import Shard  # noqa: PLC0415

    placements = tuple(t.placements)
    if t.device_mesh.ndim != 1 or len(placements) != 1 or not isinstance(placements[0], Shard) or t.dim() == 0:
        raise ValueError(
            f"sharded checkpoint: {name} is a DTensor with placements {placements} on a {t.device_mesh.ndim}-D mesh; "
            "only FSDP's layout (Shard(dim) on a 1-D mesh) or Replicate() can be saved"
        )
    dim = placements[0].dim % t.dim()
    start, stop = shard_rows(t.shape[dim], t.device_mesh.get_local_rank(), t.device_mesh.size())
    return dim, start, stop


def _local_part(t: Any, name: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The local tensor of a sharded DTensor and its layout (:func:`shard_layout`), checked."""
    dim, start, stop = shard_layout(t, name)
    local = t.to_local().detach()
    expected = [*t.shape[:dim], stop - start, *t.shape[dim + 1 :]]
    if list(local.shape) != expected:
        raise ValueError(
            f"sharded checkpoint: {name} holds a local shard of shape {tuple(local.shape)}, expected {tuple(expected)} "
            f"([{start}, {stop}) of dim {dim} of {tuple(t.shape)})"
        )
    return local, (dim, start, stop)


def _split(state: Any) -> tuple[Any, dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """``state`` with every DTensor replaced by a reference, the local pieces by name, and their index
    entries (global shape, dtype, split dimension, range of this rank)."""
    dtensor = _dtensor_type()
    pieces: dict[str, torch.Tensor] = {}
    index: dict[str, dict[str, Any]] = {}

    def go(obj: Any, path: list[str]) -> Any:
        if dtensor is not None and isinstance(obj, dtensor):
            name = ".".join(path)
            from torch.distributed.tensor import Replicate  # noqa: PLC0415

            if all(isinstance(p, Replicate) for p in obj.placements):
                return obj.to_local().detach()
            local, (dim, start, stop) = _local_part(obj, name)
            pieces[name] = local
            index[name] = {"shape": list(obj.shape), "dtype": obj.dtype, "dim": dim, "rows": [start, stop]}
            return {SHARD_KEY: name}
        if isinstance(obj, Mapping):
            return {k: go(v, path + [str(k)]) for k, v in obj.items()}
        if isinstance(obj, list):
            return [go(v, path + [str(i)]) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):  # (namedtuples become plain tuples, as jepa.io stores them)
            return tuple(go(v, path + [str(i)]) for i, v in enumerate(obj))
        return obj

    return go(state, []), pieces, index


def is_sharded_state(state: Any) -> bool:
    """True for the state of a sharded checkpoint's metadata file (as :func:`jepa.io.load` returns it)."""
    return isinstance(state, Mapping) and isinstance(state.get("sharded"), Mapping) and "files" in state["sharded"]


def is_shard_ref(obj: Any) -> bool:
    """True for the placeholder that stands for a sharded tensor in a sharded checkpoint's state."""
    return isinstance(obj, Mapping) and len(obj) == 1 and SHARD_KEY in obj


# ----------------------------------------------------------------------------------- saving
def _shard_name(rank: int) -> str:
    return f"rank{rank:05d}.pt"


def _shards_root(path: Path) -> Path:
    return path.with_name(f"{path.name}.shards")


def _write_shard(file: Path, save_id: str, rank: int, world_size: int, pieces: dict[str, torch.Tensor]) -> None:
    """Write this rank's shard file (a separate function so tests can interrupt a save right here)."""
    from jepa.io import save  # noqa: PLC0415  (jepa.io's front imports this module)

    save({"save_id": save_id, "rank": rank, "world_size": world_size, "tensors": pieces}, file)


def save_sharded(state: Mapping[str, Any], path: str | os.PathLike, *, rank: int, world_size: int) -> Path:
    """Write ``state`` as a sharded checkpoint at ``path`` (a collective: every rank calls it).

    Every rank passes its own ``state``: sharded tensors (DTensors) contribute this rank's rows;
    everything else is taken from rank 0's ``state``. Returns ``path`` (the metadata file) once the
    save is committed on every rank. A failure of any rank (e.g. a full disk) raises on every rank
    and leaves the previous checkpoint at ``path`` in place.
    """
    path = Path(path)
    multi = world_size > 1 and dist.is_available() and dist.is_initialized()
    box = [f"{int(time.time() * 1000):x}-{secrets.token_hex(4)}" if rank == 0 else None]
    if multi:
        dist.broadcast_object_list(box, src=0)
    save_id = str(box[0])
    tree, pieces, index = _split(state)
    shard_dir = _shards_root(path) / save_id
    error = None
    try:
        _write_shard(shard_dir / _shard_name(rank), save_id, rank, world_size, pieces)
    except Exception as exc:  # noqa: BLE001 - reported on every rank below, so no rank waits forever
        error = f"rank {rank}: {type(exc).__name__}: {exc}"
    reports: list[Any] = [None] * world_size
    if multi:
        dist.all_gather_object(reports, (error, index))
    else:
        reports = [(error, index)]
    errors = [e for e, _ in reports if e is not None]
    if errors:
        raise OSError(f"sharded save of {str(path)!r} failed ({'; '.join(errors)}); the previous checkpoint there is unchanged")
    commit_error = None
    if rank == 0:
        try:
            merged: dict[str, dict[str, Any]] = {}
            for r, (_, idx) in enumerate(reports):
                for name, entry in idx.items():
                    have = merged.setdefault(name, {"shape": entry["shape"], "dtype": entry["dtype"], "dim": entry["dim"], "rows": [[0, 0]] * world_size})
                    if have["shape"] != entry["shape"] or have["dim"] != entry["dim"]:
                        raise ValueError(f"sharded save: {name} is laid out differently on rank {r} ({entry}) than on another ({have})")
                    have["rows"] = [*have["rows"][:r], entry["rows"], *have["rows"][r + 1 :]]
            meta = dict(tree)
            meta["sharded"] = {
                "format": SHARDED_FORMAT,
                "world_size": world_size,
                "save_id": save_id,
                "shards": f"{_shards_root(path).name}/{save_id}",
                "files": [_shard_name(r) for r in range(world_size)],
                "tensors": merged,
            }
            from jepa.io import save  # noqa: PLC0415

            save(meta, path)  # the commit: an atomic rename over the previous metadata file
            for old in _shards_root(path).iterdir():  # shard folders of older (or interrupted) saves
                if old.name != save_id and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
        except Exception as exc:  # noqa: BLE001
            commit_error = f"{type(exc).__name__}: {exc}"
    if multi:
        box = [commit_error]
        dist.broadcast_object_list(box, src=0)
        commit_error = box[0]
    if commit_error is not None:
        raise OSError(f"sharded save of {str(path)!r}: writing the metadata file failed on rank 0 ({commit_error})")
    return path


# ----------------------------------------------------------------------------------- loading
class ShardedCheckpoint:
    """Reads the tensors of a sharded checkpoint from its shard files (see the module docstring).

    Built by :func:`open_checkpoint` from the metadata file. Shard files are opened (mapped and
    verified) on first use, one at a time, and kept open.
    """

    def __init__(self, path: Path, meta: Mapping[str, Any], map_location: Any = "cpu") -> None:
        info = meta["sharded"]
        self.path = Path(path)
        self.world_size = int(info["world_size"])
        self.save_id = str(info["save_id"])
        self.directory = self.path.parent / str(info["shards"])
        self.files = [str(f) for f in info["files"]]
        self.tensors: dict[str, dict[str, Any]] = {str(k): dict(v) for k, v in info["tensors"].items()}
        self.map_location = map_location
        self._open: dict[int, dict[str, torch.Tensor]] = {}
        if int(info.get("format", 0)) != SHARDED_FORMAT or len(self.files) != self.world_size:
            raise CheckpointError(f"{str(self.path)!r}: unknown sharded checkpoint layout {info.get('format')!r}")
        # the shards live next to the metadata file, in its own "<name>.shards/<id>" folder: refuse
        # anything that points elsewhere
        inside = self.directory.resolve().is_relative_to(self.path.parent.resolve())
        if not inside or any(Path(f).name != f for f in self.files):
            raise CheckpointError(f"{str(self.path)!r}: shard files {info['shards']!r}/{self.files} lie outside the checkpoint's folder")

    def shard(self, rank: int) -> dict[str, torch.Tensor]:
        """The tensors of rank ``rank``'s shard file (opened and verified once)."""
        if rank not in self._open:
            file = self.directory / self.files[rank]
            if not file.is_file():
                raise CheckpointError(
                    f"{str(self.path)!r}: shard file {str(file)!r} of this sharded checkpoint is missing"
                )
            from jepa.io import load  # noqa: PLC0415

            state = load(file, map_location=self.map_location)
            if not isinstance(state, Mapping) or state.get("save_id") != self.save_id or int(state.get("rank", -1)) != rank:
                raise CheckpointError(
                    f"{str(file)!r} does not belong to {str(self.path)!r} (save id {state.get('save_id') if isinstance(state, Mapping) else None!r}, "
                    f"expected {self.save_id!r} for rank {rank})"
                )
            self._open[rank] = dict(state["tensors"])
        return self._open[rank]

    def verify(self) -> None:
        """Open (and so verify) every shard file and check it holds the parts the index names."""
        for rank in range(self.world_size):
            pieces = self.shard(rank)
            for name, entry in self.tensors.items():
                dim, (start, stop) = int(entry["dim"]), entry["rows"][rank]
                if stop > start and (name not in pieces or pieces[name].shape[dim] != stop - start):
                    raise CheckpointError(f"{str(self.path)!r}: shard of rank {rank} lacks [{start}, {stop}) of dim {dim} of {name}")

    def shape(self, name: str) -> tuple[int, ...]:
        """Global shape of the sharded tensor ``name``."""
        return tuple(int(s) for s in self._entry(name)["shape"])

    def _entry(self, name: str) -> dict[str, Any]:
        if name not in self.tensors:
            raise CheckpointError(f"{str(self.path)!r}: the state refers to sharded tensor {name!r}, which the index lacks")
        return self.tensors[name]

    def part(self, name: str, dim: int, start: int, stop: int) -> torch.Tensor:
        """``[start, stop)`` of dimension ``dim`` of the sharded tensor ``name``, read from the shards
        that hold it (along the dimension it was saved split along: only the overlapping shards are
        read; along another one: the whole tensor is assembled, then cut)."""
        entry = self._entry(name)
        shape = [int(s) for s in entry["shape"]]
        if not 0 <= dim < len(shape) or not 0 <= start <= stop <= shape[dim]:
            raise ValueError(f"[{start}, {stop}) of dim {dim} is outside {name} of shape {tuple(shape)}")
        saved_dim = int(entry["dim"])
        if dim != saved_dim:
            return self.part(name, saved_dim, 0, shape[saved_dim]).narrow(dim, start, stop - start)
        parts = []
        for rank, (a, b) in enumerate(entry["rows"]):
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                parts.append(self.shard(rank)[name].narrow(dim, lo - a, hi - lo))
        if not parts:
            return torch.empty([*shape[:dim], stop - start, *shape[dim + 1 :]], dtype=entry["dtype"])
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)
        if out.shape[dim] != stop - start:
            raise CheckpointError(f"{str(self.path)!r}: the shards hold {out.shape[dim]} of [{start}, {stop}) of dim {dim} of {name}")
        return out

    def full(self, name: str) -> torch.Tensor:
        """The whole sharded tensor ``name``."""
        dim = int(self._entry(name)["dim"])
        return self.part(name, dim, 0, self.shape(name)[dim])

    def consolidate(self, state: Any) -> Any:
        """``state`` (the metadata file's) with every reference replaced by the whole tensor and the
        ``"sharded"`` index removed: the state an unsharded save of the same run would hold."""

        def go(obj: Any) -> Any:
            if is_shard_ref(obj):
                return self.full(obj[SHARD_KEY])
            if isinstance(obj, dict):
                return {k: go(v) for k, v in obj.items() if not (obj is state and k == "sharded")}
            if isinstance(obj, list):
                return [go(v) for v in obj]
            if isinstance(obj, tuple):
                return tuple(go(v) for v in obj)
            return obj

        return go(state)


def leaf_shape(leaf: Any, checkpoint: ShardedCheckpoint | None) -> tuple[int, ...]:
    """Global shape of a state leaf (a tensor, or a reference into ``checkpoint``)."""
    if is_shard_ref(leaf):
        if checkpoint is None:
            raise CheckpointError(f"a sharded-tensor reference {leaf!r} outside a sharded checkpoint")
        return checkpoint.shape(leaf[SHARD_KEY])
    return tuple(leaf.shape)


def leaf_part(leaf: Any, dim: int, start: int, stop: int, checkpoint: ShardedCheckpoint | None) -> torch.Tensor:
    """``[start, stop)`` of dimension ``dim`` of a state leaf (a tensor, or a reference into ``checkpoint``)."""
    if is_shard_ref(leaf):
        if checkpoint is None:
            raise CheckpointError(f"a sharded-tensor reference {leaf!r} outside a sharded checkpoint")
        return checkpoint.part(leaf[SHARD_KEY], dim, start, stop)
    return leaf.narrow(dim, start, stop - start)


def open_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, verify_shards: bool = False) -> tuple[Any, ShardedCheckpoint | None]:
    """Read the checkpoint file at ``path`` without assembling shards: ``(state, None)`` for an
    ordinary checkpoint (what :func:`jepa.io.load` returns), ``(metadata state, reader)`` for a
    sharded one, whose tensors the :class:`ShardedCheckpoint` reads on demand (``verify_shards``:
    open and verify every shard file now)."""
    from jepa.io import load  # noqa: PLC0415

    state = load(path, map_location=map_location, shards=False)
    if not is_sharded_state(state):
        return state, None
    sharded = ShardedCheckpoint(Path(path), state, map_location)
    if verify_shards:
        sharded.verify()
    return state, sharded
