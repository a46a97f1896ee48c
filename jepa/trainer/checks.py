"""Argument checks shared by the trainer modules: one wording for every refused value.

Each helper returns the value it accepted (so ``self.k = check_int("k", k, minimum=1)`` reads in
one line) and raises ``ValueError`` (``TypeError`` for a wrong kind of object in
:func:`check_type`) whose message names the argument, the value received and what was expected::

    ValueError: EarlyStopping: patience must be an int >= 1, got 0

``owner`` (a class or function name) prefixes the message when given. ``bool`` is never taken for
a number, although Python makes it an ``int``.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import torch

__all__ = ["as_float", "check_choice", "check_int", "check_number", "check_type"]


def _prefix(owner: str | None) -> str:
    return f"{owner}: " if owner else ""


def _bound(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def _expected(noun: str, bound: str, optional: bool) -> str:
    what = f"{noun}{bound}" if noun else bound.lstrip()
    return f"None or {what}" if optional else what


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    above: int | None = None,
    maximum: int | None = None,
    maximum_name: str | None = None,
    optional: bool = False,
    owner: str | None = None,
    noun: str = "an int",
) -> Any:
    """``value`` when it is an int (numpy integers too) with ``minimum <= value`` (or
    ``above < value``) and ``value <= maximum``; None passes when ``optional``. ``maximum_name``
    names where the maximum comes from in the message (``in [0, max_epochs=10]``). ``noun=""``
    leaves the type out of the message (for values whose type is already checked, e.g. config
    fields)."""
    if optional and value is None:
        return value
    ok = not isinstance(value, bool) and isinstance(value, Integral)
    ok = ok and (minimum is None or value >= minimum) and (above is None or value > above) and (maximum is None or value <= maximum)
    if not ok:
        if maximum is not None:
            top = f"{maximum_name}={maximum}" if maximum_name else f"{maximum}"
            bound = f" in [{minimum}, {top}]" if minimum is not None else f" <= {top}"
        else:
            bound = f" > {above}" if above is not None else (f" >= {minimum}" if minimum is not None else "")
        raise ValueError(f"{_prefix(owner)}{name} must be {_expected(noun, bound, optional)}, got {value!r}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    owner: str | None = None,
    noun: str = "a number",
) -> Any:
    """``value`` when it is a real number within the bounds (``low_open``/``high_open``: the bound
    itself is excluded; NaN never passes); None passes when ``optional``; ``noun`` as in
    :func:`check_int`."""
    if optional and value is None:
        return value
    ok = not isinstance(value, bool) and isinstance(value, Real) and value == value  # NaN != NaN
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{_prefix(owner)}{name} must be {_expected(noun, _bound(low, high, low_open, high_open), optional)}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any], *, owner: str | None = None) -> Any:
    """``value`` when it is one of ``choices``."""
    choices = tuple(choices)
    if isinstance(value, bool) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{_prefix(owner)}{name} must be one of {listed}, got {value!r}")
    return value


def check_type(name: str, value: Any, expected: type | tuple[type, ...], *, owner: str | None = None, what: str | None = None) -> Any:
    """``value`` when it is an instance of ``expected``, else ``TypeError`` naming the type received
    (``what`` describes the expectation in words, e.g. ``"an nn.Module"``)."""
    if not isinstance(value, expected):
        if what is None:
            kinds = expected if isinstance(expected, tuple) else (expected,)
            what = " or ".join(k.__name__ for k in kinds)
        raise TypeError(f"{_prefix(owner)}{name} must be {what}, got {type(value).__name__}")
    return value


def as_float(value: Any, what: str) -> float:
    """``value`` (a number or a one-element tensor) as a float; ``what`` names it in the error."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{what} must be a single number, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach())
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number, got bool {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a number or a one-element tensor, got {type(value).__name__} {value!r}") from exc
