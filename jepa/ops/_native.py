"""Raw-buffer plumbing between jepa.ops and the extension jepa._C.

jepa._C does not link libtorch: it receives data pointers (ints), element counts and a dtype code.
This module turns lists of tensors into that form and caches the result:

A :class:`TensorListPlan` records, for parallel lists of tensors (e.g. EMA targets and onlines), whether
a native kernel may run on them (``route`` is ``"cpu"``, ``"cuda"`` or ``None`` with a ``reason``) and the
validated pointers and sizes. Validating thousands of tensors in Python costs about as much as the
update itself, so plans are cached and reused while the *same tensor objects* still have the *same
data pointers* (checked on every call, so ``param.data = ...``, ``module.to(...)`` or a reallocation
gives a fresh plan). A plan is dropped as soon as one of its tensors is garbage collected.
Changing a tensor's shape, strides or dtype in place without moving its data (``t.as_strided_``,
``t.data = t.data.t()``) is not detected: don't do that to tensors you pass to an op.
"""

from __future__ import annotations

import weakref
from typing import Callable, Sequence

import torch

from jepa.ops._backend import native_module

__all__ = ["DeviceTable", "TensorListPlan", "dtype_code", "get_plan", "clear_plan_cache"]

_DATA_PTR = torch.Tensor.data_ptr
# Exact types whose data_ptr() is a real address (subclasses such as FakeTensor or DTensor are not).
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
_NATIVE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_PLANS = 16
_PLANS: dict[tuple, "TensorListPlan"] = {}


def dtype_code(dtype: torch.dtype) -> int | None:
    """The jepa._C dtype code of ``dtype`` (float32, float16, bfloat16), or None when unsupported."""
    mod = native_module()
    if mod is None:
        return None
    if dtype == torch.float32:
        return int(mod.DTYPE_FLOAT32)
    if dtype == torch.float16:
        return int(mod.DTYPE_FLOAT16)
    if dtype == torch.bfloat16:
        return int(mod.DTYPE_BFLOAT16)
    return None


class DeviceTable:
    """An int64 launch table copied once to a device and then read by kernels on any stream.

    On CUDA the values go through pinned host memory (kept as long as the table) with an asynchronous copy
    on the building stream, followed by an event: :meth:`get` makes any other stream wait on that event
    before its first use and registers the stream with the caching allocator (``record_stream``), so the
    memory is not handed out again while that stream may still read it. No host synchronization.

    CUDA graphs: build tables before capturing (run the op once on the same tensors, as the warm-up
    iterations ``torch.cuda.graph`` needs anyway). Building one inside a capture raises ``RuntimeError``:
    the captured copy would be replayed from a host buffer. A table built before the capture is read by
    the captured kernels as is (no wait can cross the capture boundary; ``torch.cuda.graph`` and
    ``make_graphed_callables`` synchronize the device before they capture, so its copy is done).
    """

    __slots__ = ("tensor", "host", "_event", "_streams")

    def __init__(self, values: Sequence[int], device: torch.device, owner: str) -> None:
        host = torch.tensor(list(values), dtype=torch.int64)
        self.host: torch.Tensor | None = None
        self._event = None
        self._streams: set[int] = set()
        if device.type != "cuda":
            self.tensor = host.to(device)
            return
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"{owner}: its launch table for these tensors would be built inside a CUDA-graph capture, where the "
                "host-to-device copy would be captured and replayed from a temporary host buffer; call "
                f"{owner} once on the same tensors before capturing (a warm-up iteration)"
            )
        with torch.cuda.device(device):
            stream = torch.cuda.current_stream(device)
            self.host = host.pin_memory()
            self.tensor = self.host.to(device, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(stream)
        self._streams.add(stream.cuda_stream)

    def get(self) -> torch.Tensor:
        """The device table, ready for kernels launched on the current stream of its device."""
        if self._event is None:
            return self.tensor
        stream = torch.cuda.current_stream(self.tensor.device)
        handle = stream.cuda_stream
        if handle not in self._streams:
            if not torch.cuda.is_current_stream_capturing():  # see the class docstring for captures
                stream.wait_event(self._event)
            self.tensor.record_stream(stream)
            self._streams.add(handle)
        return self.tensor


class TensorListPlan:
    """Validated facts about parallel lists of tensors, reused across calls on the same tensors.

    ``route``: ``"cpu"`` or ``"cuda"`` when every tensor is a plain, contiguous tensor of one supported
    dtype on one device of that type, else ``None`` and ``reason`` says why. ``layout_reason`` says why
    the tensors are not plain contiguous tensors on one CPU/CUDA device ("" when they are: ``ptrs`` is
    then set, also for mixed dtypes); ``dtypes`` holds every dtype seen.
    """

    __slots__ = (
        "ids", "ptrs", "numels", "route", "reason", "layout_reason", "device", "dtype", "dtypes", "_table",
        "_device_table", "_refs", "__weakref__",
    )

    def __init__(self, lists: Sequence[list[torch.Tensor]]) -> None:
        mod = native_module()
        # Object identities, checked on reuse (C++ when available: one pointer compare per tensor).
        self.ids = [mod.ObjectIds(lst) if mod is not None else list(map(id, lst)) for lst in lists]
        self.ptrs: list[list[int]] | None = None
        self.numels: list[int] = []
        self.route: str | None = None
        self.reason = ""
        self.layout_reason = ""
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.dtypes: frozenset = frozenset()
        self._table = None
        self._device_table: DeviceTable | None = None
        self._refs: list = []
        self._classify(lists)

    def _classify(self, lists: Sequence[list[torch.Tensor]]) -> None:
        names = ("targets", "onlines") if len(lists) == 2 else tuple(f"lists[{k}]" for k in range(len(lists)))
        first = lists[0][0]
        self.device, self.dtype = first.device, first.dtype
        dtypes = set()
        mixed = ""
        for name, lst in zip(names, lists):
            for i, t in enumerate(lst):
                if type(t) not in _PLAIN_TYPES:
                    self.reason = self.layout_reason = f"{name}[{i}] is a {type(t).__name__}, not a plain torch.Tensor"
                    return
                if t.device != self.device:
                    self.reason = self.layout_reason = f"mixed devices ({self.device} and {t.device} at {name}[{i}])"
                    return
                if not t.is_contiguous():
                    self.reason = self.layout_reason = f"{name}[{i}] is not contiguous"
                    return
                dtypes.add(t.dtype)
                if not mixed and t.dtype != self.dtype:
                    mixed = f"mixed dtypes ({self.dtype} and {t.dtype} at {name}[{i}])"
        self.dtypes = frozenset(dtypes)
        if self.device.type not in ("cpu", "cuda"):
            self.reason = self.layout_reason = f"device type {self.device.type!r} has no native kernel"
            return
        # Plain CPU/CUDA tensors have real addresses: record them (this also makes the plan cacheable,
        # with mixed dtypes too: the Triton kernels take those).
        self.ptrs = [list(map(_DATA_PTR, lst)) for lst in lists]
        self.numels = [t.numel() for t in lists[0]]
        if mixed:
            self.reason = mixed
            return
        if self.dtype not in _NATIVE_DTYPES:
            self.reason = f"dtype {self.dtype} is not supported by the native kernels (float32, float16, bfloat16)"
            return
        self.route = self.device.type

    def matches(self, lists: Sequence[list[torch.Tensor]]) -> bool:
        """True when ``lists`` holds the same tensor objects with the same data pointers as at planning."""
        if self.ptrs is None:
            return False
        for lst, ids in zip(lists, self.ids):
            if isinstance(ids, list):
                if list(map(id, lst)) != ids:
                    return False
            elif not ids.matches(lst):
                return False
        for lst, ptrs in zip(lists, self.ptrs):
            if list(map(_DATA_PTR, lst)) != ptrs:
                return False
        return True

    def table(self):
        """The ``jepa._C.TensorTable`` of this plan's pointers (built on first use)."""
        if self._table is None:
            mod = native_module()
            code = dtype_code(self.dtype) if self.dtype is not None else None
            if mod is None or code is None or self.ptrs is None:
                raise RuntimeError(f"no native table for this plan: {self.reason or 'jepa._C is not built'}")
            self._table = mod.TensorTable(self.ptrs, self.numels, code)
        return self._table

    def device_table(self, owner: str = "ema_update") -> torch.Tensor:
        """The table's device-side layout (``TensorTable.device_layout()``: pointers, element counts,
        chunk prefix sums) as an int64 tensor on the plan's CUDA device, ready for the current stream:
        a :class:`DeviceTable` built once per plan (pinned host memory, an asynchronous copy, memory from
        torch's caching allocator: no cudaMalloc, cudaMemcpy or cudaFree, each of which would synchronize
        the device). Raises ``RuntimeError`` when first asked for inside a CUDA-graph capture."""
        if self._device_table is None:
            self._device_table = DeviceTable(self.table().device_layout(), self.device, owner)
        return self._device_table.get()


def _forget(key: tuple, plan_ref: "weakref.ref[TensorListPlan]") -> Callable[[object], None]:
    def callback(_dead: object) -> None:
        # Runs when one of the plan's tensors is collected (possibly inside another call): no locks here.
        plan = plan_ref()
        if plan is not None and _PLANS.get(key) is plan:
            _PLANS.pop(key, None)

    return callback


def get_plan(
    op: str,
    lists: Sequence[list[torch.Tensor]],
    validate: Callable[[Sequence[list[torch.Tensor]]], None],
) -> TensorListPlan:
    """The cached plan for ``lists`` (non-empty, equal lengths), validating them with ``validate`` first
    when no plan matches. ``validate`` raises ``TypeError``/``ValueError`` on bad input."""
    key = (op, len(lists[0])) + tuple(id(lst[0]) for lst in lists)
    plan = _PLANS.get(key)
    if plan is not None and plan.matches(lists):
        return plan
    validate(lists)
    plan = TensorListPlan(lists)
    if plan.ptrs is not None:  # only plain tensors are cached (their ids and pointers are checkable)
        try:
            callback = _forget(key, weakref.ref(plan))
            plan._refs = [weakref.ref(t, callback) for lst in lists for t in lst]
        except TypeError:  # an object without weak reference support: don't cache
            return plan
        while len(_PLANS) >= _MAX_PLANS:
            _PLANS.pop(next(iter(_PLANS)), None)
        _PLANS[key] = plan
    return plan


def clear_plan_cache() -> None:
    """Forget every cached plan (they are also dropped when one of their tensors is collected)."""
    _PLANS.clear()
