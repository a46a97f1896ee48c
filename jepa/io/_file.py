"""Checkpoint files through jepa._C: header building, writing, mapping, verification, tensors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from jepa.io._codec import DTYPE_TO_ST, ST_TO_DTYPE, Encoded, decode

__all__ = ["FORMAT", "CheckpointError", "native", "read_file", "write_file"]

FORMAT = "jepa.checkpoint/1"
MAX_HEADER_BYTES = 100 << 20  # the limit of jepa._C's reader and of the safetensors package
_CRC_KEY = b'"jepa.crc32c":"'
_HEADER_CRC_KEY = b'"jepa.header_crc32c":"'
_ITEMSIZE = {d: torch.empty((), dtype=d).element_size() for d in ST_TO_DTYPE.values()}


class CheckpointError(RuntimeError):
    """A checkpoint file is truncated, corrupted, or not a checkpoint (the message names the file)."""


def native():
    """The extension module jepa._C (its checkpoint functions), or a clear ImportError."""
    try:
        from jepa import _C  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - the package is always built with its extension
        raise ImportError(
            f"jepa.io needs the compiled extension jepa._C ({exc}); reinstall jepa-torch (`pip install jepa-torch`, or `pip install .` in a source checkout) so it is built"
        ) from exc
    return _C


def _plain_cpu(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with the same values (no copy when ``t`` already is one)."""
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if not t.is_contiguous():
        t = t.contiguous()
    return t


def build_header(names: list[str], tensors: list[torch.Tensor], metadata: dict[str, str]):
    """The padded header bytes, the layout and the checksum field positions for ``tensors``.

    Returns ``(header, order, offsets, crc_pos, header_crc_pos)``: ``order`` lists tensor indices in
    data order (widest element first, so every tensor is aligned to its element size).
    """
    order = sorted(range(len(tensors)), key=lambda i: -tensors[i].element_size())
    offsets = [0] * len(tensors)
    entries: dict[str, Any] = {}
    cursor = 0
    for i in order:
        t = tensors[i]
        nbytes = t.numel() * t.element_size()
        offsets[i] = cursor
        entries[names[i]] = {"dtype": DTYPE_TO_ST[t.dtype], "shape": list(t.shape), "data_offsets": [cursor, cursor + nbytes]}
        cursor += nbytes
    meta = dict(metadata)
    meta["jepa.crc32c"] = " ".join("00000000" for _ in order)
    meta["jepa.header_crc32c"] = "00000000"
    header = json.dumps({"__metadata__": meta, **entries}, separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(
            f"jepa.io.save: the checkpoint header would be {len(header)} bytes, over the {MAX_HEADER_BYTES}-byte limit "
            "readers enforce; store large non-tensor data (long lists of numbers) as tensors"
        )
    crc_start = header.index(_CRC_KEY) + len(_CRC_KEY)
    crc_pos = [0] * len(tensors)
    for rank, i in enumerate(order):
        crc_pos[i] = crc_start + 9 * rank
    header_crc_pos = header.index(_HEADER_CRC_KEY) + len(_HEADER_CRC_KEY)
    return header, order, offsets, crc_pos, header_crc_pos


def write_file(path: Path, enc: Encoded, metadata: dict[str, str], *, num_threads: int = 0, chunk_bytes: int | None = None) -> dict:
    """Write the tensors of ``enc`` (made CPU-contiguous here when needed) and ``metadata`` atomically."""
    tensors = [_plain_cpu(t) for t in enc.tensors]
    header, _order, offsets, crc_pos, header_crc_pos = build_header(enc.names, tensors, metadata)
    kwargs = {} if chunk_bytes is None else {"chunk_bytes": int(chunk_bytes)}
    return native().checkpoint_write(
        os.fspath(path),
        header,
        crc_pos,
        header_crc_pos,
        [t.data_ptr() if t.numel() else 0 for t in tensors],
        [t.numel() * t.element_size() for t in tensors],
        offsets,
        num_threads=num_threads,
        **kwargs,
    )


def _device(map_location: Any) -> torch.device:
    if map_location is None:
        return torch.device("cpu")
    if isinstance(map_location, (str, torch.device)):
        try:
            return torch.device(map_location)
        except RuntimeError as exc:
            raise ValueError(f"jepa.io.load: map_location={map_location!r} is not a device: {exc}") from exc
    raise TypeError(f"jepa.io.load: map_location must be a str, a torch.device or None, got {type(map_location).__name__}")


def read_file(path: Path, *, map_location: Any = "cpu", verify: bool = True, num_threads: int = 0,
              chunk_bytes: int | None = None) -> Any:
    """Map, validate (and verify) a safetensors-layout file; returns the saved state (jepa files)
    or a flat ``{name: tensor}`` dict (any other safetensors file)."""
    device = _device(map_location)
    C = native()
    where = str(path)
    try:
        reader = C.CheckpointReader(where, populate=bool(verify))
        meta = reader.metadata() or {}
        if verify:
            kwargs = {} if chunk_bytes is None else {"chunk_bytes": int(chunk_bytes)}
            result = reader.verify(num_threads=num_threads, **kwargs)
        entries = reader.tensors()
    except C.CheckpointFormatError as exc:
        raise CheckpointError(f"{where!r} is not a valid checkpoint: {exc}") from None
    ours = meta.get("jepa.format") is not None
    if verify:
        if not result["header_ok"]:
            raise CheckpointError(f"{where!r}: header checksum mismatch (the header was modified or damaged)")
        if result["bad_tensors"]:
            bad = result["bad_tensors"]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise CheckpointError(f"{where!r}: checksum mismatch in tensor {bad[0]!r}{more}")
        if ours and not (result["has_checksums"] and result["has_header_crc"]):
            raise CheckpointError(f"{where!r}: jepa checkpoint without its checksum fields (jepa.crc32c, jepa.header_crc32c)")
    start = reader.data_start
    cpu: dict[str, torch.Tensor] = {}
    for name, st_dtype, shape, begin, end in entries:
        dtype = ST_TO_DTYPE.get(st_dtype)
        if dtype is None:
            raise CheckpointError(f"{where!r}: tensor {name!r} has dtype {st_dtype}, which this torch ({torch.__version__}) lacks")
        if end == begin:
            cpu[name] = torch.empty(torch.Size(shape), dtype=dtype)
            continue
        # One storage per tensor, starting at its bytes (not views of one file-sized storage: torch
        # code that reads storage().data_ptr() or serializes storages must see only this tensor).
        itemsize = _ITEMSIZE.get(dtype) or torch.empty((), dtype=dtype).element_size()
        if (start + begin) % itemsize == 0:
            t = torch.frombuffer(reader, dtype=dtype, count=(end - begin) // itemsize, offset=start + begin)
        else:  # a foreign file with an unaligned tensor: copy it to aligned memory
            t = torch.frombuffer(reader, dtype=torch.uint8, count=end - begin, offset=start + begin).clone().view(dtype)
        cpu[name] = t.view(torch.Size(shape))
    moved: dict[str, torch.Tensor] = {}

    def on_device(name: str) -> torch.Tensor:
        if name not in cpu:
            raise CheckpointError(f"{where!r}: the state refers to tensor {name!r}, which the file does not hold")
        if device.type == "cpu":
            return cpu[name]
        if name not in moved:
            moved[name] = cpu[name].to(device)
        return moved[name]

    def on_cpu(name: str) -> torch.Tensor:
        if name not in cpu:
            raise CheckpointError(f"{where!r}: the state refers to tensor {name!r}, which the file does not hold")
        return cpu[name]

    if not ours:
        return {name: on_device(name) for name, *_ in entries}
    try:
        tree = json.loads(meta.get("jepa.state", "null"))
        return decode(tree, on_device, on_cpu)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{where!r}: malformed jepa.state metadata: {type(exc).__name__}: {exc}") from exc
