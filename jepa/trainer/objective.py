"""The model-step protocol: batch -> named outputs -> loss terms.

Training, validation and :meth:`~jepa.trainer.eval.JEPAEvaluator.evaluate` all compute the loss of a
batch in the same two calls (so ``evaluate()["loss"]`` and ``validate()`` are the same objective)::

    outputs = model_outputs(model, batch)      # dict of named outputs
    terms = loss_terms(loss_fn, outputs)       # dict with "loss" (+ other terms, logged)

**Model side** (:func:`model_outputs`), first rule that applies:

1. ``model.forward_batch(batch)``: a model that defines it consumes the whole batch as the loader
   produced it (moved to the device): a tuple, a dict (e.g. images, context/target indices and
   validity masks for I-JEPA; observation and action windows for a world model) or any object.
   It returns a mapping of named outputs: ``prediction``, ``target``, ``context``,
   ``projection``, ``valid``, ... any names its loss asks for.
2. ``model.forward_features(*unpack_batch(batch))`` (:class:`~jepa.models.JEPA`,
   :class:`~jepa.models.JEPAAction`): pair/triple batches, a dict of outputs.
3. ``model(*unpack_batch(batch))``: a mapping of outputs, or a ``(prediction, target)`` pair.

**Loss side** (:func:`loss_terms`): ``loss_fn.terms`` when the loss has it (a dict of terms),
else ``loss_fn`` itself (a tensor, or a dict with ``"loss"``), called with the outputs it accepts
*by name* (:func:`loss_arguments`): a parameter called ``projection`` receives
``outputs["projection"]``, a ``**kwargs`` parameter receives every output no named parameter took.
Positional parameters whose names are not outputs take ``prediction``, ``target`` (and ``context``
for losses with ``uses_context = True``) in that order, so ``nn.MSELoss()`` or
``def loss(a, b)`` keep working. A required parameter that no output fills is a ``TypeError``
naming it and the outputs there are. ``loss_fn.terms(*args, **kwargs)`` pass-through wrappers
get the call the trainer always made: ``(prediction, target, context, projection=...)``.

**Distributed** (see :func:`jepa.trainer.distributed.gather_outputs`): every tensor output the
loss takes that has at least one dimension is treated as batch-first and gathered along dim 0
across ranks before the loss is called (with gradients; ranks may hold different numbers of
rows), so batch statistics are global. A model whose output is not batch-first names it in a
``unbatched_outputs`` attribute (a collection of output names); those, 0-d tensors and non-tensors
reach the loss as each rank computed them. A loss that reduces statistics over ranks itself
(SIGReg's all-reduce of its characteristic function) names those outputs in a
``reduces_over_ranks`` attribute (a collection of output names, or ``True`` for all of its inputs):
they are not gathered, so no sample is counted twice (:func:`gathered_inputs`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

from jepa.trainer.batches import unpack_batch

__all__ = ["gathered_inputs", "loss_arguments", "loss_callable", "loss_inputs", "loss_terms", "model_outputs", "unbatched_outputs"]

_LEGACY_ORDER = ("prediction", "target", "context")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def model_outputs(model: Any, batch: Any) -> dict[str, Any]:
    """The named outputs of ``model`` on ``batch`` (see the module docstring for the rules)."""
    if hasattr(model, "forward_batch"):
        out = model.forward_batch(batch)
    elif hasattr(model, "forward_features"):
        out = model.forward_features(*unpack_batch(batch))
    else:
        out = model(*unpack_batch(batch))
        if isinstance(out, (tuple, list)) and len(out) == 2:
            return {"prediction": out[0], "target": out[1]}
    if not isinstance(out, Mapping):
        raise TypeError(
            f"{type(model).__name__}: the model step must return a mapping of named outputs "
            f"(or a (prediction, target) pair from forward), got {type(out).__name__}"
        )
    return dict(out)


def unbatched_outputs(model: Any) -> frozenset[str]:
    """Names of the outputs ``model`` declares not batch-first (its ``unbatched_outputs``)."""
    names = getattr(model, "unbatched_outputs", ())
    if isinstance(names, str):
        names = (names,)
    return frozenset(names)


def loss_callable(loss_fn: Any) -> Callable[..., Any]:
    """What is called for the loss terms: ``loss_fn.terms`` when it exists, else ``loss_fn``."""
    terms = getattr(loss_fn, "terms", None)
    return terms if callable(terms) else loss_fn


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature
        return None


class _Plan:
    """How one loss callable takes the outputs of one model: which output feeds which parameter."""

    __slots__ = ("legacy", "positional", "keywords", "rest")

    def __init__(self, legacy: tuple[str, ...] | None, positional: list[str], keywords: dict[str, str], rest: bool) -> None:
        self.legacy = legacy  # not None: a (*args, **kwargs) callable, called the way the trainer always did
        self.positional = positional  # output names for the positional-only parameters, in order
        self.keywords = keywords  # parameter name -> output name
        self.rest = rest  # **kwargs: also gets every output no parameter took


def _make_plan(loss_fn: Any, names: tuple[str, ...]) -> _Plan:
    fn = loss_callable(loss_fn)
    legacy = _LEGACY_ORDER if getattr(loss_fn, "uses_context", False) or fn is not loss_fn else _LEGACY_ORDER[:2]
    sig = _signature(fn)
    params = [] if sig is None else list(sig.parameters.values())
    named = [p for p in params if p.kind in (*_POSITIONAL, inspect.Parameter.KEYWORD_ONLY)]
    if not named:
        return _Plan(legacy, [], {}, False)
    claimed = {p.name for p in named if p.name in names}
    positional: list[str] = []
    keywords: dict[str, str] = {}
    index = 0
    for p in named:
        source = p.name if p.name in names else None
        if source is None and p.kind in _POSITIONAL and index < len(legacy):
            fallback = legacy[index]
            source = fallback if fallback in names and fallback not in claimed else None
        index += p.kind in _POSITIONAL
        if source is None:
            if p.default is inspect.Parameter.empty:
                raise TypeError(
                    f"loss {getattr(loss_fn, '__name__', type(loss_fn).__name__)}: parameter {p.name!r} is not one of the model's outputs "
                    f"{sorted(names)}; name the parameter after the output it takes, or give it a default"
                )
            if p.kind == inspect.Parameter.POSITIONAL_ONLY:
                break  # later positional-only parameters cannot be passed without this one
            continue
        if p.kind == inspect.Parameter.POSITIONAL_ONLY:
            positional.append(source)
        else:
            keywords[p.name] = source
    rest = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)
    return _Plan(None, positional, keywords, rest)


_PLANS: dict[Any, _Plan] = {}


def _plan(loss_fn: Any, outputs: Mapping[str, Any]) -> _Plan:
    """The binding plan, cached per loss class (or function) and set of output names: signature
    inspection costs tens of microseconds, a lookup costs nothing."""
    names = tuple(outputs)
    if isinstance(loss_fn, torch.nn.Module) or inspect.ismethod(getattr(loss_fn, "terms", None)):
        owner: Any = type(loss_fn)
    elif inspect.isfunction(loss_fn):
        owner = loss_fn
    else:  # partials, callable instances of plain classes: their signature may be per instance
        return _make_plan(loss_fn, names)
    key = (owner, bool(getattr(loss_fn, "uses_context", False)), names)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 256:  # losses made afresh in a loop (lambdas) must not grow the cache forever
            _PLANS.clear()
        plan = _PLANS[key] = _make_plan(loss_fn, names)
    return plan


def loss_arguments(loss_fn: Any, outputs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` with which :func:`loss_terms` calls ``loss_callable(loss_fn)``.

    Values are taken from ``outputs`` (see the module docstring for the binding rules); raises
    ``TypeError`` naming a required parameter that no output fills.
    """
    plan = _plan(loss_fn, outputs)
    if plan.legacy is not None:  # fn(*args, **kwargs) or no signature: the call the trainer always made
        args = [outputs.get(name) for name in plan.legacy]
        terms = loss_callable(loss_fn) is not loss_fn
        return args, ({"projection": outputs["projection"]} if terms and outputs.get("projection") is not None else {})
    kwargs = {param: outputs[source] for param, source in plan.keywords.items()}
    if plan.rest:
        taken = set(plan.keywords.values()) | set(plan.positional)
        kwargs.update({k: v for k, v in outputs.items() if k not in taken and k not in kwargs})
    return [outputs[name] for name in plan.positional], kwargs


def loss_inputs(loss_fn: Any, outputs: Mapping[str, Any]) -> frozenset[str]:
    """Names of the outputs the loss receives (what is gathered across ranks under DDP)."""
    plan = _plan(loss_fn, outputs)
    if plan.legacy is not None:
        names = set(plan.legacy) | ({"projection"} if loss_callable(loss_fn) is not loss_fn else set())
        return frozenset(n for n in names if n in outputs)
    if plan.rest:
        return frozenset(outputs)
    return frozenset(plan.keywords.values()) | frozenset(plan.positional)


def gathered_inputs(loss_fn: Any, outputs: Mapping[str, Any]) -> frozenset[str]:
    """Names of the outputs to gather across ranks before the loss: its inputs (:func:`loss_inputs`)
    less those it reduces over ranks itself (its ``reduces_over_ranks``: a collection of output
    names, or a bool meaning all or none of its inputs)."""
    names = loss_inputs(loss_fn, outputs)
    own = getattr(loss_fn, "reduces_over_ranks", ())
    if isinstance(own, bool):
        return frozenset() if own else names
    if isinstance(own, str):
        own = (own,)
    return names - frozenset(own)


def loss_terms(loss_fn: Any, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Loss terms of one batch: a dict whose ``"loss"`` is minimised (other entries are logged).

    Calls ``loss_fn.terms`` (or ``loss_fn``) with the outputs it accepts by name; a tensor result
    becomes ``{"loss": tensor}``.
    """
    args, kwargs = loss_arguments(loss_fn, outputs)
    result = loss_callable(loss_fn)(*args, **kwargs)
    if isinstance(result, Mapping):
        if "loss" not in result:
            raise TypeError(f"loss {type(loss_fn).__name__} returned a dict without a 'loss' entry: keys {sorted(result)}")
        return dict(result)
    return {"loss": result}
