"""InfoNCE: the contrastive cross-entropy with in-batch negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa.ops._backend import BackendUnavailableError, requested_backend


def info_nce_reference(a: torch.Tensor, b: torch.Tensor, *, temperature: float = 0.1, symmetric: bool = False) -> torch.Tensor:
    """Torch reference of :func:`info_nce` (no input checks; call :func:`info_nce` for those)."""
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    logits = (a @ b.T) / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss


def info_nce(a: torch.Tensor, b: torch.Tensor, *, temperature: float = 0.1, symmetric: bool = False) -> torch.Tensor:
    """InfoNCE loss between paired rows of ``a`` and ``b`` (both ``(N, D)``).

    Rows are L2-normalized, ``logits = a @ b.T / temperature``, and the loss is the mean
    cross-entropy with the positive of row ``i`` at column ``i`` (every other row of ``b`` is a
    negative). With ``symmetric`` the ``b -> a`` direction is averaged in.

    Args:
        a: anchors, floating point ``(N, D)``.
        b: positives, same shape and dtype as ``a``.
        temperature: softmax temperature (> 0).
        symmetric: average the ``a -> b`` and ``b -> a`` losses.

    Returns:
        A scalar tensor.

    Raises:
        ValueError / TypeError: on bad shapes, dtypes or a non-positive temperature.
        BackendUnavailableError: when a backend other than ``auto``/``torch`` is forced.
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"info_nce: a and b must be tensors, got {type(a).__name__} and {type(b).__name__}")
    if not a.is_floating_point():
        raise TypeError(f"info_nce: a must be a floating-point tensor, got dtype {a.dtype}")
    if not b.is_floating_point():
        raise TypeError(f"info_nce: b must be a floating-point tensor, got dtype {b.dtype}")
    if a.dtype != b.dtype:
        raise TypeError(f"info_nce: a and b must share a dtype, got {a.dtype} and {b.dtype}")
    if a.dim() != 2:
        raise ValueError(f"info_nce: a must be (N, D), got shape {tuple(a.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"info_nce: b must have the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"info_nce: a and b need N >= 1 rows and D >= 1 features, got shape {tuple(a.shape)}")
    if a.device != b.device:
        raise ValueError(f"info_nce: a is on {a.device} but b is on {b.device}; expected one device")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"info_nce: temperature must be a number > 0, got {temperature!r}")
    backend = requested_backend()
    if backend not in ("auto", "torch"):
        raise BackendUnavailableError(
            f"info_nce: backend {backend!r} is not implemented yet for info_nce (available: torch)"
        )
    return info_nce_reference(a, b, temperature=float(temperature), symmetric=symmetric)
