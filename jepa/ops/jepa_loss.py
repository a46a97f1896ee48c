"""The JEPA prediction loss: distance between predicted and (normalized) target embeddings.

Backends (chosen by :func:`jepa.ops._backend.choose`):

- ``torch``: :func:`jepa_loss_reference` (any device and dtype; full autograd, including into the
  target and double backward).
- ``triton``: one fused kernel pass (kernels/triton/jepa_loss.py): target layer-norm, distance, mask,
  per-row partial sums, then a one-program deterministic finalize; backward writes the gradient of
  ``pred`` in one more pass. Neither syncs with the host. The target gets **no gradient** on this path: in JEPA it is the
  output of the EMA target encoder (stop-gradient). Needs CUDA tensors (or CPU tensors under
  ``TRITON_INTERPRET=1``), ``pred`` and ``target`` of one dtype among float32/float16/bfloat16 and
  ``D <= 16384``.
- ``cuda``/``cpp``: not implemented for this op: a global ``cpp``/``cuda`` setting leaves it on ``auto``,
  a per-op one (``jepa_loss=cpp``) raises :class:`BackendUnavailableError`.

``auto`` runs Triton for CUDA tensors when it applies *and* the target needs no gradient (so the
reference semantics are kept whenever a gradient into the target is asked for), else the reference.

Fused target gather (the I-JEPA masks): with ``target_index`` (B, M) the M predictions of batch b are
compared with rows ``target_index[b]`` of the (B, N, D) target encoder output. The Triton kernels read
those rows in place (the gathered, repeated targets are never written to memory); the torch reference
layer-normalizes the N target rows once and gathers the normalized rows (one (B, M, D) temporary).
Empty inputs take the reference path on every backend (there is nothing to launch).

Both paths are registered as the custom op ``torch.ops.jepa.jepa_loss`` (``torch.library.custom_op``
with a fake implementation and autograd), so ``torch.compile(fullgraph=True)`` traces models calling
:func:`jepa_loss` without graph breaks; under compilation the torch backend runs through the op too,
with an analytic backward (into pred and target) equal to the reference's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa.ops import _backend

__all__ = ["JEPA_LOSS_KINDS", "REDUCTIONS", "jepa_loss", "jepa_loss_reference"]

JEPA_LOSS_KINDS = ("smooth_l1", "mse", "l1")
REDUCTIONS = ("mean", "sum", "none")
_LN_EPS = 1e-5  # F.layer_norm's default, as in I-JEPA
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

JEPA_LOSS = _backend.register_op(
    "jepa_loss", backends=("torch", "triton"), dtypes={"triton": _TRITON_DTYPES}, auto={"cuda": ("triton", "torch")}
)


def _gather(target: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
    """Rows ``target[b, target_index[b, m]]`` as a (B, M, D) tensor."""
    return torch.gather(target, 1, target_index.unsqueeze(-1).expand(-1, -1, target.shape[-1]))


def _elementwise(pred: torch.Tensor, target: torch.Tensor, loss: str, beta: float, reduction: str) -> torch.Tensor:
    if loss == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta, reduction=reduction)
    if loss == "mse":
        return F.mse_loss(pred, target, reduction=reduction)
    return F.l1_loss(pred, target, reduction=reduction)


def jepa_loss_reference(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    loss: str = "smooth_l1",
    normalize_target: bool = True,
    beta: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    target_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Torch reference of :func:`jepa_loss` (no input checks; call :func:`jepa_loss` for those).

    With ``target_index`` the target rows are normalized first (N rows, not M) and then gathered."""
    if normalize_target:
        target = F.layer_norm(target, target.shape[-1:])
    if target_index is not None:
        target = _gather(target, target_index)
    if mask is None:
        return _elementwise(pred, target, loss, beta, reduction)
    per_elem = _elementwise(pred, target, loss, beta, "none")
    weights = mask.unsqueeze(-1).to(per_elem.dtype)
    masked = per_elem * weights
    if reduction == "none":
        return masked
    total = masked.sum()
    if reduction == "sum":
        return total
    count = mask.sum().clamp(min=1) * pred.shape[-1]
    return total / count.to(total.dtype)


# ----------------------------------------------------------------------------- custom op


def _torch_backward(
    grad: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    loss: str,
    normalize_target: bool,
    beta: float,
    reduction: str,
    target_grad: bool,
    target_index: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Analytic gradients of :func:`jepa_loss_reference` (float32 math, float64 for float64 inputs)."""
    work = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
    p = pred.to(work)
    t = target.to(work) if target_index is None else _gather(target, target_index).to(work)
    if normalize_target:
        tc = t - t.mean(-1, keepdim=True)
        rstd = torch.rsqrt((tc * tc).mean(-1, keepdim=True) + _LN_EPS)
        t = tc * rstd
    d = p - t
    if loss == "smooth_l1":
        de = torch.where(d.abs() < beta, d / beta, d.sign())
    elif loss == "mse":
        de = 2.0 * d
    else:
        de = d.sign()
    g = grad.to(work)
    if reduction == "mean":
        n = pred.numel() if mask is None else mask.sum().clamp(min=1) * pred.shape[-1]
        g = g / n
    gp = de * g
    if mask is not None:
        gp = gp * mask.unsqueeze(-1).to(work)
    out = [gp.to(pred.dtype)]
    if target_grad:
        gt = -gp
        if normalize_target:  # layer-norm backward (no affine)
            gt = rstd * (gt - gt.mean(-1, keepdim=True) - t * (gt * t).mean(-1, keepdim=True))
        if target_index is not None:  # rows used several times sum their gradients
            idx = target_index.unsqueeze(-1).expand(-1, -1, target.shape[-1])
            gt = torch.zeros(target.shape, dtype=work, device=target.device).scatter_add_(1, idx, gt)
        out.append(gt.to(target.dtype))
    return out


@torch.library.custom_op(
    "jepa::jepa_loss",
    mutates_args=(),
    schema="(Tensor pred, Tensor target, Tensor? mask, str loss, bool normalize_target, float beta, "
    "str reduction, str impl, Tensor? target_index=None) -> (Tensor, Tensor)",
)
def _jepa_loss_op(pred, target, mask, loss, normalize_target, beta, reduction, impl, target_index=None):
    # Returns (loss, count): count is the Triton path's float32 (1,) element count of "mean" (kept on
    # the device for backward), empty otherwise.
    if impl == "triton":
        from jepa.kernels.triton import jepa_loss as kernels  # noqa: PLC0415  (optional dependency)

        with _backend.device_guard(pred.device):
            return kernels.forward(
                pred, target, mask, loss=loss, normalize_target=normalize_target, beta=beta, reduction=reduction,
                eps=_LN_EPS, target_index=target_index,
            )
    out = jepa_loss_reference(
        pred, target, loss=loss, normalize_target=normalize_target, beta=beta, mask=mask, reduction=reduction,
        target_index=target_index,
    )
    # Contiguous like the fake and the Triton path ("none" would otherwise keep pred's strides).
    out = out.contiguous()
    out = out.clone() if out is pred or out is target else out
    return out, pred.new_empty((0,), dtype=torch.float32)


@_jepa_loss_op.register_fake
def _(pred, target, mask, loss, normalize_target, beta, reduction, impl, target_index=None):
    dtype = torch.promote_types(pred.dtype, target.dtype)
    shape = pred.shape if reduction == "none" else ()
    count = (1,) if impl == "triton" and reduction != "none" else (0,)
    return pred.new_empty(shape, dtype=dtype), pred.new_empty(count, dtype=torch.float32)


@torch.library.custom_op(
    "jepa::jepa_loss_backward",
    mutates_args=(),
    schema="(Tensor grad, Tensor count, Tensor pred, Tensor target, Tensor? mask, str loss, bool normalize_target, "
    "float beta, str reduction, str impl, bool target_grad, Tensor? target_index=None) -> Tensor[]",
)
def _jepa_loss_backward_op(
    grad, count, pred, target, mask, loss, normalize_target, beta, reduction, impl, target_grad, target_index=None
):
    if impl == "triton":
        from jepa.kernels.triton import jepa_loss as kernels  # noqa: PLC0415

        with _backend.device_guard(pred.device):
            gp = kernels.backward(
                grad, count, pred, target, mask, loss=loss, normalize_target=normalize_target, beta=beta,
                reduction=reduction, eps=_LN_EPS, target_index=target_index,
            )
        return [gp]
    grads = _torch_backward(
        grad, pred, target, mask, loss, normalize_target, beta, reduction, target_grad, target_index
    )
    return [g.contiguous() for g in grads]  # like the kernel and the fake, whatever pred's strides


@_jepa_loss_backward_op.register_fake
def _(grad, count, pred, target, mask, loss, normalize_target, beta, reduction, impl, target_grad, target_index=None):
    # Contiguous gradients, as both implementations return them (not empty_like: it keeps permuted strides).
    out = [pred.new_empty(pred.shape)]
    if target_grad and impl != "triton":
        out.append(target.new_empty(target.shape))
    return out


def _setup_context(ctx, inputs, output):
    pred, target, mask, loss, normalize_target, beta, reduction, impl = inputs[:8]
    target_index = inputs[8] if len(inputs) > 8 else None
    ctx.save_for_backward(pred, target, mask, output[1], target_index)
    ctx.options = (loss, normalize_target, beta, reduction, impl)


def _backward(ctx, grad, _grad_count):
    pred, target, mask, count, target_index = ctx.saved_tensors
    loss, normalize_target, beta, reduction, impl = ctx.options
    # The Triton path treats the target as detached (stop-gradient): it never computes its gradient.
    target_grad = bool(ctx.needs_input_grad[1]) and impl != "triton"
    grads = _jepa_loss_backward_op(
        grad, count, pred, target, mask, loss, normalize_target, beta, reduction, impl, target_grad, target_index
    )
    gp = grads[0] if ctx.needs_input_grad[0] else None
    gt = grads[1] if target_grad else None
    return gp, gt, None, None, None, None, None, None, None


_jepa_loss_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- dispatch


def _kernel_reason(pred: torch.Tensor, target: torch.Tensor) -> str:
    """Why the Triton kernels cannot take these inputs ("" when they can); availability, device and the
    dtype table are the chooser's."""
    if pred.dtype != target.dtype:
        return f"pred is {pred.dtype} but target is {target.dtype}; the Triton kernels need one dtype"
    from jepa.kernels.triton.jepa_loss import MAX_D  # noqa: PLC0415  (triton is importable here)

    if pred.shape[-1] > MAX_D:
        return f"D={pred.shape[-1]} exceeds the Triton kernels' row limit of {MAX_D}"
    return ""


def _check_target_index(pred: torch.Tensor, target: torch.Tensor, target_index: object) -> None:
    if not isinstance(target_index, torch.Tensor):
        raise TypeError(f"jepa_loss: target_index must be an int64 tensor or None, got {type(target_index).__name__}")
    if target_index.dtype != torch.int64:
        raise TypeError(f"jepa_loss: target_index must be an int64 (long) tensor, got dtype {target_index.dtype}")
    if pred.dim() != 3 or target.dim() != 3:
        raise ValueError(
            f"jepa_loss: with target_index, pred must be (B, M, D) and target (B, N, D); got shapes "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    b, m, d = pred.shape
    if target.shape[0] != b or target.shape[2] != d:
        raise ValueError(
            f"jepa_loss: with target_index, target must be (B, N, D) = ({b}, N, {d}); got {tuple(target.shape)}"
        )
    if tuple(target_index.shape) != (b, m):
        raise ValueError(
            f"jepa_loss: target_index must have shape (B, M) = {(b, m)} (pred's first two dims), "
            f"got {tuple(target_index.shape)}"
        )
    if target_index.device != pred.device:
        raise ValueError(f"jepa_loss: target_index is on {target_index.device} but pred is on {pred.device}")
    # On the CPU the range check is cheap; on a GPU it would be a host sync per call, so it is left to
    # the kernels (Triton: NaN loss; torch.gather: a device-side assert).
    if target_index.device.type == "cpu" and target_index.numel():
        lo, hi = int(target_index.min()), int(target_index.max())
        n = target.shape[1]
        if lo < 0 or hi >= n:
            raise ValueError(
                f"jepa_loss: target_index values must be in [0, N) = [0, {n}); got values in [{lo}, {hi}]"
            )


def jepa_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    loss: str = "smooth_l1",
    normalize_target: bool = True,
    beta: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    target_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Distance between predicted embeddings ``pred`` and target embeddings ``target`` (``(..., D)``).

    Args:
        pred: predicted embeddings, floating point, shape ``(..., D)``.
        target: target embeddings, same shape as ``pred``. With the torch backend (and in ``auto``
            whenever the target requires a gradient) gradients flow into it too; detach it first for
            the I-JEPA stop-gradient. The forced ``triton`` backend never computes a target gradient.
        loss: ``"smooth_l1"`` (I-JEPA), ``"mse"`` or ``"l1"``.
        normalize_target: layer-norm every target row over its last dimension (no affine, eps 1e-5) first.
        beta: smooth-L1 transition point (> 0); used only by ``"smooth_l1"``.
        mask: optional bool tensor of shape ``pred.shape[:-1]``; True marks the tokens that count.
            ``"mean"`` is then the mean over selected tokens x features (0 when none is selected),
            ``"sum"`` the sum over them, and ``"none"`` the elementwise loss with the unselected
            tokens set to 0.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (elementwise, the shape of ``pred``).
        target_index: optional int64 ``(B, M)`` (the I-JEPA target masks): ``pred`` is then ``(B, M, D)``,
            ``target`` ``(B, N, D)`` (e.g. the target encoder's output for every token), and row
            ``(b, m)`` of ``pred`` is compared with the (layer-normed, if ``normalize_target``) row
            ``target[b, target_index[b, m]]``, without materializing the gathered targets on the Triton
            path; ``mask`` is then ``(B, M)``. Indices must be in ``[0, N)``: checked on CPU tensors
            (``ValueError``); on CUDA the Triton path returns NaN for an out-of-range index (a check
            would cost a host sync) and the torch path raises a device-side assert.

    Returns:
        The loss: a scalar, or a tensor shaped like ``pred`` for ``reduction="none"``.

    Raises:
        ValueError: on bad shapes, dtypes or option values.
        TypeError: the same checks, for a bad type rather than a bad value.
        BackendUnavailableError: when the backend forced for this op cannot run (``triton`` without
            triton, on CPU tensors without ``TRITON_INTERPRET=1``, ...; ``jepa_loss=cpp`` or
            ``jepa_loss=cuda``: the op has no such backend).
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"jepa_loss: pred and target must be tensors, got {type(pred).__name__} and {type(target).__name__}")
    if not pred.is_floating_point():
        raise TypeError(f"jepa_loss: pred must be a floating-point tensor, got dtype {pred.dtype}")
    if not target.is_floating_point():
        raise TypeError(f"jepa_loss: target must be a floating-point tensor, got dtype {target.dtype}")
    if pred.dim() < 1:
        raise ValueError(f"jepa_loss: pred must have at least 1 dimension (..., D), got shape {tuple(pred.shape)}")
    if target_index is not None:
        _check_target_index(pred, target, target_index)
    elif pred.shape != target.shape:
        raise ValueError(f"jepa_loss: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}; expected equal shapes")
    if pred.device != target.device:
        raise ValueError(f"jepa_loss: pred is on {pred.device} but target is on {target.device}; expected one device")
    if loss not in JEPA_LOSS_KINDS:
        raise ValueError(f"jepa_loss: loss must be one of {JEPA_LOSS_KINDS}, got {loss!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"jepa_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"jepa_loss: beta must be a number > 0, got {type(beta).__name__} {beta!r}")
    if loss == "smooth_l1" and not beta > 0:
        raise ValueError(f"jepa_loss: beta must be > 0 for smooth_l1, got {beta!r}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"jepa_loss: mask must be a bool tensor, got {got}")
        if mask.shape != pred.shape[:-1]:
            raise ValueError(
                f"jepa_loss: mask must have shape pred.shape[:-1]={tuple(pred.shape[:-1])}, got {tuple(mask.shape)}"
            )
        if mask.device != pred.device:
            raise ValueError(f"jepa_loss: mask is on {mask.device} but pred is on {pred.device}; expected one device")
    backend = _backend.choose(
        JEPA_LOSS, device=pred.device, dtypes=(pred.dtype, target.dtype),
        check=lambda _b: _kernel_reason(pred, target),
        auto=_auto_order(pred.device.type == "cuda", _target_needs_grad(target)),
    )
    impl = backend
    if pred.numel() == 0:
        impl = "torch"  # nothing to launch; the reference gives torch's values for empty inputs
    if impl == "torch" and not torch.compiler.is_compiling():
        return jepa_loss_reference(
            pred, target, loss=loss, normalize_target=normalize_target, beta=beta, mask=mask, reduction=reduction,
            target_index=target_index,
        )
    options = (loss, bool(normalize_target), float(beta), reduction)
    return _jepa_loss_op(pred, target, mask, *options, impl, target_index)[0]


def _auto_order(on_cuda: bool, target_needs_grad: bool) -> tuple[str, ...]:
    """``auto``'s candidates: Triton for CUDA tensors unless a gradient into the target is asked for (the
    kernels treat the target as detached, the reference does not); the reference otherwise."""
    return ("triton", "torch") if on_cuda and not target_needs_grad else ("torch",)


def _target_needs_grad(target: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and target.requires_grad
