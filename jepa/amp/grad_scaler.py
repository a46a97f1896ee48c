"""GradScaler: dynamic loss scaling for float16 mixed-precision training, a drop-in for ``torch.amp.GradScaler``.

Same API, semantics and state dict as torch's (``scale``, ``unscale_``, ``step``, ``update``, ``get_scale``,
``get_growth_factor`` / ``set_growth_factor`` and the other getters and setters, ``is_enabled``,
``state_dict`` / ``load_state_dict``, pickling), with the arithmetic in jepa's kernels:

- gradients are unscaled and checked for inf/NaN by :func:`jepa.ops.unscale_` (on CPU one multi-threaded
  C++ pass over all gradients of a dtype; on CUDA one kernel launch, no host sync);
- the scale update (scale, growth tracker, found_inf -> new scale and tracker) runs in C++ on CPU and as a
  device kernel on CUDA, through :func:`jepa.ops.update_scale_`.

Results (scales, skipped steps, weights) are identical to torch's. Differences: ``device`` defaults to
``None`` (use the device of the first tensor passed to :meth:`GradScaler.scale`, where torch defaults to
``"cuda"``), and bad constructor/setter arguments raise ``ValueError``/``TypeError`` where torch uses
``AssertionError`` or accepts them silently.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import abc, defaultdict
from typing import Any, Iterable, overload

import torch
from torch.amp.grad_scaler import OptState

from jepa.ops.amp import unscale_ as _unscale_op
from jepa.ops.amp import update_scale_ as _update_scale_op

__all__ = ["GradScaler", "OptState"]


def _fresh_optimizer_state() -> dict[str, Any]:
    return {"stage": OptState.READY, "found_inf_per_device": {}}


class _PerDevice:
    """Lazily made copies of one tensor on each device it is needed on (the master stays where it is)."""

    def __init__(self, master: torch.Tensor) -> None:
        self.master = master
        self.copies: dict[torch.device, torch.Tensor] = {}

    def get(self, device: torch.device) -> torch.Tensor:
        t = self.copies.get(device)
        if t is None:
            t = self.master.to(device=device, non_blocking=True, copy=True) if device != self.master.device else self.master
            self.copies[device] = t
        return t


def _check_real(name: str, value: object, *, low: float, low_inclusive: bool, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"GradScaler: {name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = math.isfinite(v) and (v >= low if low_inclusive else v > low) and (high is None or v < high)
    if not ok:
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"GradScaler: {name} must be a finite number {bound}, got {v!r}")
    return v


def _check_interval(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"GradScaler: growth_interval must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if not 1 <= v <= 2**31 - 1:
        raise ValueError(f"GradScaler: growth_interval must be in [1, 2**31 - 1], got {v}")
    return v


class GradScaler:
    """Dynamic loss scaler for float16 autocast training (drop-in for ``torch.amp.GradScaler``).

    Usage is torch's::

        scaler = GradScaler()
        with torch.autocast(device_type, dtype=torch.float16):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)          # optional: e.g. to clip the true gradients
        scaler.step(optimizer)              # skipped when a gradient holds inf/NaN
        scaler.update()                     # back off after a skipped step, grow after growth_interval good ones

    bfloat16 autocast needs no scaler (bfloat16 has float32's exponent range).

    Args:
        device: device type of the scale (``"cpu"``, ``"cuda"``, ...). ``None`` (default): the device of the
            first tensor given to :meth:`scale`. ``"cuda"`` without CUDA disables the scaler with a
            warning, as torch does.
        init_scale: initial scale factor (2**16).
        growth_factor: factor (> 1) applied after ``growth_interval`` consecutive steps without inf/NaN (2.0).
        backoff_factor: factor in (0, 1) applied after a step with inf/NaN gradients (0.5).
        growth_interval: consecutive good steps before the scale grows (2000).
        enabled: ``False`` makes every method a pass-through (:meth:`step` just calls ``optimizer.step()``).
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        if device is not None and not isinstance(device, (str, torch.device)):
            raise TypeError(f"GradScaler: device must be a str, torch.device or None, got {type(device).__name__} {device!r}")
        if not isinstance(enabled, bool):
            raise TypeError(f"GradScaler: enabled must be a bool, got {type(enabled).__name__} {enabled!r}")
        self._device: str | None = torch.device(device).type if device is not None else None
        self._enabled = enabled
        if self._device == "cuda" and enabled and not torch.cuda.is_available():
            warnings.warn("GradScaler is enabled for device 'cuda', but CUDA is not available. Disabling.", stacklevel=2)
            self._enabled = False
        if self._enabled:
            self._init_scale = _check_real("init_scale", init_scale, low=0.0, low_inclusive=False)
            self._growth_factor = _check_real("growth_factor", growth_factor, low=1.0, low_inclusive=False)
            self._backoff_factor = _check_real("backoff_factor", backoff_factor, low=0.0, low_inclusive=False, high=1.0)
            self._growth_interval = _check_interval(growth_interval)
            self._init_growth_tracker = 0
            # made lazily by the first scale(), on the device of its outputs
            self._scale: torch.Tensor | None = None
            self._growth_tracker: torch.Tensor | None = None
            self._per_optimizer_states: dict[int, dict[str, Any]] = defaultdict(_fresh_optimizer_state)

    # ------------------------------------------------------------------ internals
    def _check_scale_growth_tracker(self, funcname: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self._scale is None or self._growth_tracker is None:
            raise RuntimeError(
                f"GradScaler.{funcname}() was called before scale(): call scaler.scale(loss) (or outputs) earlier "
                "in the iteration"
            )
        return self._scale, self._growth_tracker

    def _lazy_init_scale_growth_tracker(self, dev: torch.device) -> None:
        self._scale = torch.full((), self._init_scale, dtype=torch.float32, device=dev)
        self._growth_tracker = torch.full((), self._init_growth_tracker, dtype=torch.int32, device=dev)
        if self._device is None:
            self._device = dev.type

    def _get_scale_async(self) -> torch.Tensor | None:
        return self._scale

    # ------------------------------------------------------------------ scale
    @overload
    def scale(self, outputs: torch.Tensor) -> torch.Tensor: ...

    @overload
    def scale(self, outputs: list[torch.Tensor]) -> list[torch.Tensor]: ...

    @overload
    def scale(self, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]: ...

    @overload
    def scale(self, outputs: Iterable[torch.Tensor]) -> Iterable[torch.Tensor]: ...

    def scale(self, outputs: torch.Tensor | Iterable[torch.Tensor]) -> torch.Tensor | Iterable[torch.Tensor]:
        """Multiply a tensor (or nested lists/tuples/iterables of tensors) by the current scale.

        Returns the scaled outputs (the same structure); unchanged when the scaler is disabled.
        """
        if not self._enabled:
            return outputs
        if isinstance(outputs, torch.Tensor):
            if self._scale is None:
                self._lazy_init_scale_growth_tracker(outputs.device)
            assert self._scale is not None  # for type checkers: set just above
            return outputs * self._scale.to(device=outputs.device, non_blocking=True)

        copies: list[_PerDevice] = []

        def apply(val: Any) -> Any:
            if isinstance(val, torch.Tensor):
                if not copies:
                    if self._scale is None:
                        self._lazy_init_scale_growth_tracker(val.device)
                    assert self._scale is not None
                    copies.append(_PerDevice(self._scale))
                return val * copies[0].get(val.device)
            if isinstance(val, abc.Iterable) and not isinstance(val, (str, bytes)):
                mapped = map(apply, val)
                return type(val)(mapped) if isinstance(val, (list, tuple)) else mapped
            raise ValueError(f"GradScaler.scale: outputs must be a Tensor or an iterable of Tensors, got {type(val).__name__}")

        return apply(outputs)

    # ------------------------------------------------------------------ unscale_
    def _unscale_grads_(
        self, optimizer: torch.optim.Optimizer, inv_scale: torch.Tensor, found_inf: torch.Tensor, allow_fp16: bool
    ) -> dict[torch.device, torch.Tensor]:
        inv_per_device = _PerDevice(inv_scale)
        found_per_device = _PerDevice(found_inf)
        per_device: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
        with torch.no_grad():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if not isinstance(param, torch.Tensor):
                        raise TypeError(f"GradScaler: optimizer params must be tensors, got {type(param).__name__}")
                    grad = param.grad
                    if grad is None:
                        continue
                    if not allow_fp16 and grad.dtype == torch.float16:
                        raise ValueError(
                            "Attempting to unscale FP16 gradients: keep the parameters in float32 and run the "
                            "forward under torch.autocast(dtype=torch.float16)"
                        )
                    if grad.is_sparse:
                        # Duplicate indices are summed by coalesce(); for float16 that sum may overflow, so
                        # check the coalesced values (torch does the same).
                        if grad.dtype is torch.float16:
                            param.grad = grad = grad.coalesce()
                        grad = grad._values()
                    per_device[grad.device].append(grad)
            for device, grads in per_device.items():
                # one call per device: jepa.ops.unscale_ groups the dtypes itself
                _unscale_op(grads, inv_per_device.get(device), found_per_device.get(device))
        return {d: found_per_device.get(d) for d in per_device}

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the optimizer's gradients by the scale in place and record whether any is inf/NaN.

        Optional: :meth:`step` unscales when this was not called. Call it at most once per optimizer per
        :meth:`update` (a second call raises ``RuntimeError``), after all gradients are accumulated, e.g.
        to clip the true gradients. Does not synchronize with the GPU.
        """
        if not self._enabled:
            return
        self._check_scale_growth_tracker("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        assert self._scale is not None
        # the reciprocal in float64, rounded once (float32 division may be imprecise under some flags)
        if self._scale.device.type == "mps":
            inv_scale = self._scale.reciprocal()
        else:
            inv_scale = self._scale.double().reciprocal().float()
        found_inf = torch.zeros((), dtype=torch.float32, device=self._scale.device)
        state["found_inf_per_device"] = self._unscale_grads_(optimizer, inv_scale, found_inf, False)
        state["stage"] = OptState.UNSCALED

    # ------------------------------------------------------------------ step
    def _maybe_opt_step(self, optimizer: torch.optim.Optimizer, state: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if not sum(v.item() for v in state["found_inf_per_device"].values()):
            return optimizer.step(*args, **kwargs)
        return None

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        """Unscale the gradients (unless :meth:`unscale_` did) and run ``optimizer.step(*args, **kwargs)``
        when none of them holds inf/NaN; otherwise skip it. Returns what ``optimizer.step`` returned (None
        when skipped). Closures are not supported while enabled.

        Optimizers that unscale themselves (``_step_supports_amp_scaling``, e.g. ``Adam(fused=True)``) get
        ``grad_scale`` and ``found_inf`` attributes for the duration of their step, as with torch.
        """
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale_growth_tracker("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")

        if getattr(optimizer, "_step_supports_amp_scaling", False):
            return self._step_self_scaling(optimizer, state, *args, **kwargs)

        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if len(state["found_inf_per_device"]) == 0:
            raise RuntimeError("GradScaler.step: no inf checks were recorded for this optimizer (no gradients?).")
        retval = self._maybe_opt_step(optimizer, state, *args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def _step_self_scaling(self, optimizer: torch.optim.Optimizer, state: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        import inspect  # noqa: PLC0415  (only for optimizers that unscale themselves)

        has_grad_scaler_kwarg = "grad_scaler" in inspect.signature(optimizer.step).parameters
        if has_grad_scaler_kwarg:
            warnings.warn(
                "GradScaler is going to stop passing itself as a keyword argument to the passed optimizer; "
                "use the optimizer's grad_scale and found_inf attributes instead.",
                FutureWarning,
                stacklevel=3,
            )
            kwargs.update({"grad_scaler": self})
        else:
            if state["stage"] is OptState.READY:
                self._check_inf_per_device(optimizer)
            scale = self._get_scale_async()
            assert scale is not None
            found_inf = sum(t.to(scale.device, non_blocking=True) for t in state["found_inf_per_device"].values())
            # the product of the scales when the user already set optimizer.grad_scale
            optimizer.grad_scale = (  # type: ignore[attr-defined]
                getattr(optimizer, "grad_scale", None)
                if state["stage"] is OptState.UNSCALED
                else scale * getattr(optimizer, "grad_scale", 1)
            )
            optimizer.found_inf = found_inf  # type: ignore[attr-defined]
        retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        if not has_grad_scaler_kwarg:
            del optimizer.grad_scale  # type: ignore[attr-defined]
            del optimizer.found_inf  # type: ignore[attr-defined]
        return retval

    def _check_inf_per_device(self, optimizer: torch.optim.Optimizer) -> dict[torch.device, torch.Tensor]:
        scale, _ = self._check_scale_growth_tracker("_check_inf_per_device")
        # inv_scale == 1: the kernels only check, they write nothing
        one = torch.ones((), dtype=torch.float32, device=scale.device)
        found_inf = torch.zeros((), dtype=torch.float32, device=scale.device)
        state = self._per_optimizer_states[id(optimizer)]
        state["found_inf_per_device"] = self._unscale_grads_(optimizer, one, found_inf, True)
        return state["found_inf_per_device"]

    def _found_inf_per_device(self, optimizer: torch.optim.Optimizer) -> dict[torch.device, torch.Tensor]:
        return self._per_optimizer_states[id(optimizer)]["found_inf_per_device"]

    # ------------------------------------------------------------------ update
    def update(self, new_scale: float | torch.Tensor | None = None) -> None:
        """Update the scale at the end of an iteration (after :meth:`step` for every optimizer).

        Without ``new_scale``: back off (``* backoff_factor``) when a step was skipped this iteration, grow
        (``* growth_factor``) after ``growth_interval`` consecutive good steps. With ``new_scale`` (a number
        or a 1-element tensor without grad on the scaler's device type) the scale is set to it.
        """
        if not self._enabled:
            return
        scale, tracker = self._check_scale_growth_tracker("update")
        if new_scale is not None:
            if isinstance(new_scale, torch.Tensor):
                if new_scale.device.type != scale.device.type:
                    raise ValueError(
                        f"GradScaler.update: new_scale is on {new_scale.device} but the scale is on {scale.device}"
                    )
                if new_scale.numel() != 1:
                    raise ValueError(f"GradScaler.update: new_scale must have 1 element, got shape {tuple(new_scale.shape)}")
                if new_scale.requires_grad:
                    raise ValueError("GradScaler.update: new_scale must not require grad")
                scale.copy_(new_scale.reshape(()))
            elif isinstance(new_scale, numbers.Real) and not isinstance(new_scale, bool):
                scale.fill_(float(new_scale))
            else:
                raise TypeError(
                    f"GradScaler.update: new_scale must be a float or a 1-element tensor, got {type(new_scale).__name__}"
                )
        else:
            found_infs = [
                f.to(device=scale.device, non_blocking=True)
                for state in self._per_optimizer_states.values()
                for f in state["found_inf_per_device"].values()
            ]
            if not found_infs:
                raise RuntimeError("GradScaler.update: no inf checks were recorded before update() (call step() first).")
            combined = found_infs[0]
            for f in found_infs[1:]:
                combined = combined + f
            _update_scale_op(scale, tracker, combined, self._growth_factor, self._backoff_factor, self._growth_interval)
        self._per_optimizer_states = defaultdict(_fresh_optimizer_state)

    # ------------------------------------------------------------------ getters / setters
    def get_scale(self) -> float:
        """The current scale as a Python float (1.0 when disabled). Synchronizes with the GPU."""
        if not self._enabled:
            return 1.0
        scale = self._get_scale_async()
        return self._init_scale if scale is None else float(scale.item())

    def get_growth_factor(self) -> float:
        """The scale growth factor."""
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        """Set the scale growth factor (> 1)."""
        self._growth_factor = _check_real("growth_factor", new_factor, low=1.0, low_inclusive=False)

    def get_backoff_factor(self) -> float:
        """The scale backoff factor."""
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        """Set the scale backoff factor (in (0, 1))."""
        self._backoff_factor = _check_real("backoff_factor", new_factor, low=0.0, low_inclusive=False, high=1.0)

    def get_growth_interval(self) -> int:
        """The number of consecutive good steps before the scale grows."""
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        """Set the growth interval (an int >= 1)."""
        self._growth_interval = _check_interval(new_interval)

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else int(self._growth_tracker.item())

    def is_enabled(self) -> bool:
        """Whether the scaler is enabled."""
        return self._enabled

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The scaler's state, with torch's keys: ``scale``, ``growth_factor``, ``backoff_factor``,
        ``growth_interval``, ``_growth_tracker`` (empty when disabled). Take it after :meth:`update`."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._get_growth_tracker(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict` (ours or ``torch.amp.GradScaler``'s). No-op when disabled."""
        if not self._enabled:
            return
        if not isinstance(state_dict, abc.Mapping):
            raise TypeError(f"GradScaler.load_state_dict: expected a dict, got {type(state_dict).__name__}")
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler."
            )
        keys = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")
        missing = [k for k in keys if k not in state_dict]
        if missing:
            raise ValueError(f"GradScaler.load_state_dict: state_dict lacks {missing}; expected the keys {list(keys)}")
        scale = _check_real("state_dict['scale']", state_dict["scale"], low=0.0, low_inclusive=False)
        growth = _check_real("state_dict['growth_factor']", state_dict["growth_factor"], low=1.0, low_inclusive=False)
        backoff = _check_real(
            "state_dict['backoff_factor']", state_dict["backoff_factor"], low=0.0, low_inclusive=False, high=1.0
        )
        interval = _check_interval(state_dict["growth_interval"])
        tracker = state_dict["_growth_tracker"]
        if isinstance(tracker, bool) or not isinstance(tracker, numbers.Integral) or not 0 <= int(tracker) < 2**31:
            raise ValueError(f"GradScaler.load_state_dict: _growth_tracker must be an int >= 0, got {tracker!r}")
        self._init_scale = scale
        if self._scale is not None:
            self._scale.fill_(scale)
        self._growth_factor, self._backoff_factor, self._growth_interval = growth, backoff, interval
        self._init_growth_tracker = int(tracker)
        if self._growth_tracker is not None:
            self._growth_tracker.fill_(int(tracker))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._enabled:
            if len(self._per_optimizer_states) != 0:
                raise RuntimeError(
                    "A GradScaler instance may only be pickled at the beginning of an iteration, "
                    "or at the end after scaler.update()."
                )
            # the unpickled instance makes its tensors again lazily, from these values
            state["_init_scale"] = self.get_scale()
            state["_init_growth_tracker"] = self._get_growth_tracker()
            state["_scale"] = None
            state["_growth_tracker"] = None
            state["_per_optimizer_states"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._enabled:
            self._per_optimizer_states = defaultdict(_fresh_optimizer_state)

    def __repr__(self) -> str:
        if not self._enabled:
            return "GradScaler(enabled=False)"
        return (
            f"GradScaler(device={self._device!r}, scale={self.get_scale()}, growth_factor={self._growth_factor}, "
            f"backoff_factor={self._backoff_factor}, growth_interval={self._growth_interval})"
        )
