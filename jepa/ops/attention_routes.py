"""Where ``auto`` sends unmasked CUDA attention: SDPA (flash / cuDNN) unless our Triton kernel was
measured faster for that shape bucket on that GPU architecture.

The measurements live in a JSON table, ``attention_routes.json`` next to this module (shipped with the
package), or the file named by ``JEPA_ATTENTION_ROUTES``. ``benchmarks/bench_attention.py --routes-out
FILE`` (run by ``benchmarks/gpu_suite.sh``) times both on a GPU and writes such a table; copy it here
to ship it. Format::

    {"format": 1, "entries": [
        {"arch": "sm_90", "dtype": "bfloat16", "head_dim": 64, "n": 256, "causal": false,
         "backend": "triton", "triton_ms": 0.41, "sdpa_ms": 0.47, "device": "NVIDIA H200", ...}, ...]}

A bucket is (arch ``sm_<major><minor>``, dtype, padded head size = the next power of two >= 16 of d,
sequence bucket = the next power of two >= max(N_q, N_k, 16), causal). A call whose bucket is not in
the table goes to SDPA: an unmeasured Triton kernel is not assumed faster than the vendor's.
Calls with a key padding mask do not look here: SDPA has no fast path for them, Triton does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["ROUTES_FILE", "bucket", "load_routes", "route", "clear_cache"]

ROUTES_FILE = Path(__file__).with_name("attention_routes.json")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

_cache: dict[str, dict[tuple, str]] = {}
_arch_cache: dict[int, str] = {}


def _pow2(n: int, low: int) -> int:
    n = max(int(n), low)
    return 1 << (n - 1).bit_length()


def bucket(arch: str, dtype: torch.dtype, head_dim: int, n_q: int, n_k: int, causal: bool) -> tuple:
    """The table key of a call: (arch, dtype name, padded head size, sequence bucket, causal)."""
    return (arch, str(dtype).replace("torch.", ""), _pow2(head_dim, 16), _pow2(max(n_q, n_k), 16), bool(causal))


def _entry_key(entry: dict[str, Any], where: str) -> tuple:
    try:
        dtype = _DTYPES[entry["dtype"]]
        return bucket(str(entry["arch"]), dtype, int(entry["head_dim"]), int(entry["n"]), int(entry["n"]),
                      bool(entry["causal"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: bad attention route entry {entry!r} ({exc!r}); see jepa.ops.attention_routes") from exc


def load_routes(path: str | os.PathLike | None = None) -> dict[tuple, str]:
    """The table at ``path`` (default: ``$JEPA_ATTENTION_ROUTES`` or the shipped file) as
    ``{bucket: "triton" | "torch"}``; a missing file is an empty table. Cached per path."""
    if path is None:
        path = os.environ.get("JEPA_ATTENTION_ROUTES") or ROUTES_FILE
    key = str(path)
    table = _cache.get(key)
    if table is not None:
        return table
    table = {}
    p = Path(path)
    if p.is_file():
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not valid JSON ({exc}); expected an attention route table") from exc
        if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(data.get("entries"), list):
            raise ValueError(f"{p}: expected {{'format': 1, 'entries': [...]}}, got {str(data)[:100]!r}")
        for entry in data["entries"]:
            backend = entry.get("backend") if isinstance(entry, dict) else None
            if backend not in ("triton", "torch"):
                raise ValueError(f"{p}: entry {entry!r} needs 'backend': 'triton' or 'torch'")
            table[_entry_key(entry, str(p))] = backend
    _cache[key] = table
    return table


def clear_cache() -> None:
    """Forget loaded tables (after writing a new one in the same process)."""
    _cache.clear()


def _arch(device: torch.device) -> str:
    index = device.index if device.index is not None else torch.cuda.current_device()
    arch = _arch_cache.get(index)
    if arch is None:
        major, minor = torch.cuda.get_device_capability(index)
        arch = _arch_cache[index] = f"sm_{major}{minor}"
    return arch


def route(q: torch.Tensor, k: torch.Tensor, causal: bool) -> str:
    """``"triton"`` when the table says our kernel is faster for this unmasked CUDA call, else ``"torch"``
    (SDPA).

    Safe inside ``torch.compile(fullgraph=True)``: what cannot be traced (reading the table file, asking the
    GPU for its architecture) runs eagerly when the model is traced, and the traced code reads only the
    loaded table. A table written or pointed at (``JEPA_ATTENTION_ROUTES``) after a model was compiled
    is seen by the compiled code after ``torch._dynamo.reset()`` (or a re-trace for another reason).
    """
    arch = _arch_if_routed(q.device)
    if not arch:
        return "torch"
    return load_routes().get(bucket(arch, q.dtype, q.shape[-1], q.shape[-2], k.shape[-2], causal), "torch")


def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result(fn)`` without its ``import torch._dynamo`` (a second at every
    ``import jepa``, so at every ``jepa`` command): the decorator only sets this attribute, which dynamo
    reads when it traces a call (tests/ops/test_attention.py checks it is still what torch sets)."""
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant_result
def _arch_if_routed(device: torch.device) -> str:
    """Loads the route table (filling the cache :func:`route` then reads) and returns ``device``'s
    architecture, or ``""`` when the table is empty (no CUDA query then).

    Marked constant for dynamo: called eagerly at trace time, its string baked into the graph (file IO and
    CUDA queries cannot be traced: "Dynamo does not know how to trace the builtin posix.stat")."""
    return _arch(device) if load_routes() else ""
