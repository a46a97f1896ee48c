"""State <-> (tensors, JSON tree): how a nested checkpoint state maps onto a safetensors file.

Every tensor (and numpy array / numpy scalar) of the state becomes one safetensors tensor under a
stable flattened name: the keys of its path joined by ``"."`` (``"model.encoder.0.weight"``,
``"optimizer.state.3.exp_avg"``); a name already taken gets ``"~1"``, ``"~2"``, ... appended. The
rest of the state is a JSON tree in which those leaves are references, so that loading gives back
the same Python types:

=========================  =============================================
Python                     JSON
=========================  =============================================
None, bool, int, str       themselves
float                      itself; ``{"$f": "inf" | "-inf" | "nan"}`` when not finite
list                       list
tuple (incl. namedtuple)   ``{"$tuple": [...]}`` (namedtuples load as plain tuples)
dict with str keys         object (keys starting with ``$`` force the next form)
other dict                 ``{"$dict": [[key, value], ...]}`` (int keys of optimizer state)
torch.Tensor               ``{"$t": name}``
numpy.ndarray              ``{"$nd": name}``
numpy scalar               ``{"$np": name}``
torch.Size                 ``{"$size": [...]}``
torch.dtype / device       ``{"$dtype": "float32"}`` / ``{"$device": "cuda:0"}``
bytes                      ``{"$bytes": base64}``
=========================  =============================================

A tensor object that occurs twice in the state is stored once and loads as one tensor.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

__all__ = ["DTYPE_TO_ST", "ST_TO_DTYPE", "Encoded", "decode", "encode"]

_DTYPES: list[tuple[str, str]] = [
    ("float64", "F64"), ("float32", "F32"), ("float16", "F16"), ("bfloat16", "BF16"),
    ("int64", "I64"), ("int32", "I32"), ("int16", "I16"), ("int8", "I8"), ("uint8", "U8"), ("bool", "BOOL"),
    ("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64"),
    ("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"),
]
DTYPE_TO_ST: dict[torch.dtype, str] = {getattr(torch, n): s for n, s in _DTYPES if hasattr(torch, n)}
ST_TO_DTYPE: dict[str, torch.dtype] = {s: d for d, s in DTYPE_TO_ST.items()}


class Encoded:
    """The result of :func:`encode`: the JSON tree and the tensors it references, in order."""

    def __init__(self) -> None:
        self.tree: Any = None
        self.names: list[str] = []
        self.tensors: list[torch.Tensor] = []
        self._taken: set[str] = {"__metadata__"}
        self._by_id: dict[int, str] = {}

    def add(self, path: list[str], tensor: torch.Tensor, source: object) -> str:
        """Register ``tensor`` (from the state object ``source``) under a unique name; returns it."""
        known = self._by_id.get(id(source))
        if known is not None:
            return known
        base = ".".join(path) if path else "tensor"
        name, k = base, 0
        while name in self._taken:
            k += 1
            name = f"{base}~{k}"
        self._taken.add(name)
        self._by_id[id(source)] = name
        self.names.append(name)
        self.tensors.append(tensor)
        return name


def _where(path: list[str]) -> str:
    return "state" + "".join(f"[{p!r}]" for p in path)


def _tensor_leaf(t: torch.Tensor, path: list[str]) -> torch.Tensor:
    if t.layout != torch.strided:
        raise TypeError(f"jepa.io.save: {_where(path)} is a {t.layout} tensor; only dense (strided) tensors can be saved")
    if t.is_quantized:
        raise TypeError(f"jepa.io.save: {_where(path)} is a quantized tensor; dequantize it first")
    if t.dtype not in DTYPE_TO_ST:
        raise TypeError(f"jepa.io.save: {_where(path)} has dtype {t.dtype}; supported: {', '.join(str(d) for d in DTYPE_TO_ST)}")
    return t.detach()


def _numpy_leaf(a: np.ndarray, path: list[str]) -> torch.Tensor:
    if a.dtype.hasobject or a.dtype.kind not in "biuf":
        raise TypeError(f"jepa.io.save: {_where(path)} is a numpy array of dtype {a.dtype}; only bool/int/uint/float arrays can be saved")
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if not a.flags.c_contiguous or not a.flags.writeable:
        a = a.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)
    try:
        t = torch.from_numpy(a)
    except TypeError as exc:
        raise TypeError(f"jepa.io.save: {_where(path)} has numpy dtype {a.dtype}, which torch cannot hold: {exc}") from exc
    return _tensor_leaf(t, path)


def encode(state: Any) -> Encoded:
    """Split ``state`` into a JSON-serializable tree and a list of named tensors."""
    enc = Encoded()

    def go(obj: Any, path: list[str]) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, torch.Tensor):
            return {"$t": enc.add(path, _tensor_leaf(obj, path), obj)}
        if isinstance(obj, np.ndarray):
            return {"$nd": enc.add(path, _numpy_leaf(obj, path), obj)}
        if isinstance(obj, np.generic):
            return {"$np": enc.add(path, _numpy_leaf(np.asarray(obj), path), obj)}
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            value = float(obj)
            if math.isfinite(value):
                return value
            return {"$f": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
        if isinstance(obj, torch.Size):
            return {"$size": [int(d) for d in obj]}
        if isinstance(obj, tuple):
            return {"$tuple": [go(v, path + [str(i)]) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [go(v, path + [str(i)]) for i, v in enumerate(obj)]
        if isinstance(obj, Mapping):
            if all(isinstance(k, str) and not k.startswith("$") for k in obj):
                return {k: go(v, path + [k]) for k, v in obj.items()}
            return {"$dict": [[go(k, path + ["<key>"]), go(v, path + [str(k)])] for k, v in obj.items()]}
        if isinstance(obj, torch.dtype):
            return {"$dtype": str(obj).removeprefix("torch.")}
        if isinstance(obj, torch.device):
            return {"$device": str(obj)}
        if isinstance(obj, (bytes, bytearray)):
            return {"$bytes": base64.b64encode(bytes(obj)).decode("ascii")}
        raise TypeError(
            f"jepa.io.save: {_where(path)} has unsupported type {type(obj).__module__}.{type(obj).__qualname__}; "
            "expected tensors, numpy arrays, numbers, strings, bytes, None, lists, tuples or dicts"
        )

    enc.tree = go(state, [])
    return enc


def decode(tree: Any, tensor: Callable[[str], torch.Tensor], cpu_tensor: Callable[[str], torch.Tensor]) -> Any:
    """Rebuild the state from its JSON tree; ``tensor(name)`` gives a tensor on the target device,
    ``cpu_tensor(name)`` one on the CPU (for numpy leaves). Raises ValueError on a malformed tree."""

    def go(node: Any) -> Any:
        if isinstance(node, list):
            return [go(v) for v in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, value), = node.items()
            if key.startswith("$"):
                return marker(key, value)
        return {k: go(v) for k, v in node.items()}

    def marker(key: str, value: Any) -> Any:
        if key == "$t":
            return tensor(value)
        if key == "$nd":
            return cpu_tensor(value).numpy()
        if key == "$np":
            return cpu_tensor(value).numpy()[()]
        if key == "$f":
            return float(value)
        if key == "$tuple":
            return tuple(go(v) for v in value)
        if key == "$dict":
            return {_hashable(go(k)): go(v) for k, v in value}
        if key == "$size":
            return torch.Size(value)
        if key == "$dtype":
            dtype = getattr(torch, value, None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown dtype {value!r}")
            return dtype
        if key == "$device":
            return torch.device(value)
        if key == "$bytes":
            return base64.b64decode(value.encode("ascii"), validate=True)
        raise ValueError(f"unknown marker {key!r}")

    return go(tree)


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    return key
