"""InfoNCE: the contrastive cross-entropy with in-batch negatives.

Backends (chosen by :func:`jepa.ops._backend.choose`):

- ``torch``: :func:`info_nce_reference` (any device and dtype, full autograd).
- ``triton``: fused kernels (kernels/triton/info_nce.py): row norms, then the ``N x N`` logits in
  tiles with an online log-sum-exp (never stored), and a fused backward writing the gradients of
  both ``a`` and ``b``. Needs CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``) of
  float32/float16/bfloat16 and ``D <= 65536``.
- ``cuda``/``cpp``: not implemented for this op: a global ``cpp``/``cuda`` setting leaves it on ``auto``,
  a per-op one (``info_nce=cpp``) raises :class:`BackendUnavailableError`.

``auto`` runs Triton for CUDA tensors when it applies, else the reference.
Both paths are the custom op ``torch.ops.jepa.info_nce`` (fake implementation + autograd registered),
so ``torch.compile(fullgraph=True)`` traces callers without graph breaks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa.ops import _backend

__all__ = ["info_nce", "info_nce_reference"]

_NORM_EPS = 1e-12  # F.normalize's default
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

INFO_NCE = _backend.register_op(
    "info_nce", backends=("torch", "triton"), dtypes={"triton": _TRITON_DTYPES}, auto={"cuda": ("triton", "torch")}
)


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


# ----------------------------------------------------------------------------- custom op


def _torch_backward(
    grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, temperature: float, symmetric: bool
) -> list[torch.Tensor]:
    """Analytic gradients of :func:`info_nce_reference` (float32 math, float64 for float64 inputs)."""
    work = torch.float64 if a.dtype == torch.float64 else torch.float32
    x, y = a.to(work), b.to(work)
    nx = x.norm(dim=1, keepdim=True)
    ny = y.norm(dim=1, keepdim=True)
    xh, yh = x / nx.clamp_min(_NORM_EPS), y / ny.clamp_min(_NORM_EPS)
    s = xh @ yh.T / temperature
    n = s.shape[0]
    eye = torch.eye(n, dtype=work, device=a.device)
    g = torch.softmax(s, dim=1) - eye
    if symmetric:
        g = 0.5 * (g + torch.softmax(s, dim=0) - eye)
    g = g * (grad.to(work) / n)
    dxh = g @ yh / temperature
    dyh = g.T @ xh / temperature

    def through_normalize(xhat, dxhat, nrm):
        proj = (xhat * dxhat).sum(1, keepdim=True)
        return torch.where(nrm > _NORM_EPS, (dxhat - xhat * proj) / nrm, dxhat / _NORM_EPS)

    return [through_normalize(xh, dxh, nx).to(a.dtype), through_normalize(yh, dyh, ny).to(b.dtype)]


@torch.library.custom_op(
    "jepa::info_nce",
    mutates_args=(),
    schema="(Tensor a, Tensor b, float temperature, bool symmetric, str impl) -> (Tensor, Tensor)",
)
def _info_nce_op(a, b, temperature, symmetric, impl):
    if impl == "triton":
        from jepa.kernels.triton import info_nce as kernels  # noqa: PLC0415  (optional dependency)

        with _backend.device_guard(a.device):
            return kernels.forward(a, b, temperature=temperature, symmetric=symmetric, eps=_NORM_EPS)
    loss = info_nce_reference(a, b, temperature=temperature, symmetric=symmetric)
    return loss, a.new_empty((0,), dtype=torch.float32)


@_info_nce_op.register_fake
def _(a, b, temperature, symmetric, impl):
    stats = a.new_empty((4, a.shape[0]) if impl == "triton" else (0,), dtype=torch.float32)
    return a.new_empty((), dtype=a.dtype), stats


@torch.library.custom_op(
    "jepa::info_nce_backward",
    mutates_args=(),
    schema="(Tensor grad, Tensor a, Tensor b, Tensor stats, float temperature, bool symmetric, str impl) "
    "-> (Tensor, Tensor)",
)
def _info_nce_backward_op(grad, a, b, stats, temperature, symmetric, impl):
    if impl == "triton":
        from jepa.kernels.triton import info_nce as kernels  # noqa: PLC0415

        with _backend.device_guard(a.device):
            return kernels.backward(grad, a, b, stats, temperature=temperature, symmetric=symmetric, eps=_NORM_EPS)
    da, db = _torch_backward(grad, a, b, temperature, symmetric)
    return da.contiguous(), db.contiguous()  # like the kernels and the fake, whatever a's strides


@_info_nce_backward_op.register_fake
def _(grad, a, b, stats, temperature, symmetric, impl):
    # Contiguous gradients, as both implementations return them (not empty_like: it keeps permuted strides).
    return a.new_empty(a.shape), b.new_empty(b.shape)


def _setup_context(ctx, inputs, output):
    a, b, temperature, symmetric, impl = inputs
    ctx.save_for_backward(a, b, output[1])
    ctx.options = (temperature, symmetric, impl)


def _backward(ctx, grad, _grad_stats):
    a, b, stats = ctx.saved_tensors
    da, db = _info_nce_backward_op(grad, a, b, stats, *ctx.options)
    return (da if ctx.needs_input_grad[0] else None), (db if ctx.needs_input_grad[1] else None), None, None, None


_info_nce_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- dispatch


def _kernel_reason(a: torch.Tensor) -> str:
    """Why the Triton kernels cannot take these inputs ("" when they can); availability, device and the
    dtype table are the chooser's."""
    from jepa.kernels.triton.info_nce import MAX_D  # noqa: PLC0415  (triton is importable here)

    if a.shape[1] > MAX_D:
        return f"D={a.shape[1]} exceeds the Triton kernels' limit of {MAX_D}"
    return ""


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
        A scalar tensor (dtype of ``a``).

    Raises:
        ValueError: on bad shapes, dtypes or a non-positive temperature.
        TypeError: the same checks, for a bad type rather than a bad value.
        BackendUnavailableError: when the backend forced for this op cannot run (``triton`` without
            triton, on CPU tensors without ``TRITON_INTERPRET=1``, ...; ``info_nce=cpp`` or
            ``info_nce=cuda``: the op has no such backend).
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
    impl = _backend.choose(INFO_NCE, device=a.device, dtypes=(a.dtype,), check=lambda _b: _kernel_reason(a))
    if impl == "torch" and not torch.compiler.is_compiling():
        return info_nce_reference(a, b, temperature=float(temperature), symmetric=symmetric)
    return _info_nce_op(a, b, float(temperature), bool(symmetric), impl)[0]
