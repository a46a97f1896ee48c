"""Metrics of predictions against targets, and sending metrics to a logger (the v0 helpers of
:mod:`jepa.trainer.utils`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from jepa.trainer.checks import as_float

__all__ = ["METRICS", "compute_metrics", "log_metrics"]


METRICS = ("mse", "mae", "rmse", "cosine_sim", "r2", "smooth_l1", "correlation")


def compute_metrics(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    metric_types: Sequence[str] | str = ("mse", "mae", "cosine_sim"),
) -> dict[str, float]:
    """Regression/embedding metrics of ``predictions`` against ``targets`` (same shape), as floats.

    Supported names: ``"mse"``, ``"mae"``, ``"rmse"``, ``"cosine_sim"`` (mean cosine similarity
    over the last dimension), ``"r2"`` (``1 - SS_res / SS_tot`` over all elements; NaN when the
    targets are constant), ``"smooth_l1"`` (Huber with beta 1, mean) and ``"correlation"``
    (Pearson over the flattened tensors; NaN when either is constant). Computed in float64 without
    gradients. Array-likes are converted with ``torch.as_tensor``.
    """
    if isinstance(metric_types, str):
        metric_types = (metric_types,)
    metric_types = list(metric_types)
    unknown = [m for m in metric_types if m not in METRICS]
    if unknown:
        raise ValueError(f"compute_metrics: unknown metric_types {unknown}; valid: {', '.join(METRICS)}")
    p = predictions if isinstance(predictions, torch.Tensor) else torch.as_tensor(predictions)
    t = targets if isinstance(targets, torch.Tensor) else torch.as_tensor(targets)
    if p.shape != t.shape:
        raise ValueError(f"compute_metrics: predictions and targets must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    if p.numel() == 0:
        raise ValueError(f"compute_metrics: predictions and targets are empty (shape {tuple(p.shape)})")
    dtype = torch.float32 if p.device.type == "mps" else torch.float64
    with torch.no_grad():
        p = p.detach().to(dtype=dtype)
        t = t.detach().to(device=p.device, dtype=dtype)
        diff = p - t
        out: dict[str, float] = {}
        for name in metric_types:
            if name == "mse":
                out[name] = float(diff.pow(2).mean())
            elif name == "mae":
                out[name] = float(diff.abs().mean())
            elif name == "rmse":
                out[name] = float(diff.pow(2).mean().sqrt())
            elif name == "cosine_sim":
                pv, tv = (p.reshape(1), t.reshape(1)) if p.dim() == 0 else (p, t)
                out[name] = float(torch.nn.functional.cosine_similarity(pv, tv, dim=-1).mean())
            elif name == "r2":
                ss_res = diff.pow(2).sum()
                ss_tot = (t - t.mean()).pow(2).sum()
                out[name] = float(1.0 - ss_res / ss_tot) if ss_tot > 0 else math.nan
            elif name == "smooth_l1":
                out[name] = float(torch.nn.functional.smooth_l1_loss(p, t, beta=1.0))
            elif name == "correlation":
                pc, tc = p.flatten() - p.mean(), t.flatten() - t.mean()
                denom = pc.pow(2).sum().sqrt() * tc.pow(2).sum().sqrt()
                out[name] = float((pc * tc).sum() / denom) if denom > 0 else math.nan
    return out


def log_metrics(metrics: Mapping[str, Any], step: int, logger: Any = None) -> dict[str, float]:
    """Send ``metrics`` at ``step`` to ``logger``; returns them as plain floats.

    ``logger`` may be None (the ``"jepa"`` :class:`logging.Logger`, INFO level), a
    :class:`logging.Logger` / :class:`logging.LoggerAdapter` (one INFO line ``step N: k=v, ...``),
    or any object with a ``log_metrics(metrics, step)`` method (a :mod:`jepa.loggers` logger, for
    example), which is called with the float values. Tensors (one element) are converted with
    ``float()``.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"log_metrics: metrics must be a mapping of name -> number, got {type(metrics).__name__}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"log_metrics: step must be an int, got {type(step).__name__} {step!r}")
    values = {str(k): as_float(v, f"log_metrics: metrics[{k!r}]") for k, v in metrics.items()}
    if logger is None:
        logger = logging.getLogger("jepa")
    if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        logger.info("step %d: %s", int(step), ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
    elif callable(getattr(logger, "log_metrics", None)):
        logger.log_metrics(values, int(step))
    else:
        raise TypeError(
            f"log_metrics: logger must be None, a logging.Logger or an object with a log_metrics(metrics, step) method, got {type(logger).__name__}"
        )
    return values


