"""SIGReg (LeJEPA): the sliced Epps–Pulley test of embeddings against an isotropic Gaussian.

For embeddings ``z (N, D)`` and unit directions ``a_m`` (the columns of ``directions (D, M)``), each
projection ``x_m = z @ a_m`` is compared with a standard normal through its empirical characteristic
function (ECF) on ``knots`` points ``t_k = linspace(0, t_max, knots)``:

    EP_m = N * sum_k w_k * [(mean_n cos(t_k x_nm) - phi(t_k))^2 + (mean_n sin(t_k x_nm))^2]

with ``phi(t) = exp(-t^2 / 2)`` and ``w_k = phi(t_k) * (dt at both ends, 2 dt inside)`` (the trapezoid
rule on ``[0, t_max]`` doubled, for the integral over the whole real line of an even integrand);
:func:`sigreg` is the mean of ``EP_m`` over the ``M`` directions.

The op is two stages so that a distributed caller can all-reduce between them:

- :func:`sigreg_ecf` (``z``, ``directions`` -> the ``(2, M, knots)`` ECF means: cos, then sin) is the
  heavy part, differentiable in ``z``;
- :func:`sigreg_from_ecf` (ECF, sample count -> the statistic) is a few element-wise torch ops on
  ``2 * M * knots`` numbers.

:func:`sigreg` is their composition.

Backends of :func:`sigreg_ecf` (see :mod:`jepa.ops._backend`):

- ``torch``: :func:`sigreg_ecf_reference` (any device and dtype, full autograd into ``z`` and the
  directions); it materializes the ``(N, M, knots)`` angles, cosines and sines.
- ``triton``: fused kernels (kernels/triton/sigreg.py): projection tiles ``z @ a`` computed on chip, the
  cos/sin sums over ``N`` accumulated on chip (one ``sin``/``cos`` per projection; the knots by exact
  rotations), deterministic (no atomics); backward recomputes the tiles in one more pass over ``N``
  and writes ``dL/dx (N, M)``, then ``dz = dL/dx @ a.T``. ``z`` of float32/float16/bfloat16, CUDA
  tensors (or CPU tensors under ``TRITON_INTERPRET=1``); the directions get no gradient on this path.
- ``cuda``/``cpp``: not implemented; a per-op ``sigreg=cpp`` raises :class:`BackendUnavailableError`,
  a global ``cpp`` leaves this op on ``auto`` (the rule of :mod:`jepa.ops._backend`).

``auto`` runs Triton for CUDA tensors when it applies and the directions need no gradient, else the
reference. Both paths are the custom op ``torch.ops.jepa.sigreg_ecf`` (fake implementation and
autograd registered), so ``torch.compile(fullgraph=True)`` traces callers without graph breaks.
"""

from __future__ import annotations

import contextlib
import math

import torch

from jepa.ops import _backend

__all__ = ["sigreg", "sigreg_ecf", "sigreg_ecf_reference", "sigreg_from_ecf", "sigreg_reference", "sigreg_weights"]

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- reference


def _exact(device: torch.device):
    """A context without autocast on ``device``: the reference computes in its work dtype, not in
    autocast's 16-bit matmuls (which would change the statistic by about 1e-2)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _work_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 when any input is float64, else float32 (16-bit inputs are computed in float32)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def sigreg_weights(
    t_max: float = 3.0, knots: int = 17, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The knots ``t``, the target ``phi(t) = exp(-t^2/2)`` and the weights ``w`` of :func:`sigreg`.

    ``t = linspace(0, t_max, knots)``; ``w = phi(t) * [dt, 2 dt, ..., 2 dt, dt]`` with
    ``dt = t_max / (knots - 1)``. No input checks (the public ops check ``t_max`` and ``knots``).
    """
    t = torch.linspace(0.0, float(t_max), int(knots), dtype=dtype, device=device)
    phi = torch.exp(-0.5 * t * t)
    dt = float(t_max) / (int(knots) - 1)
    trapezoid = torch.full((int(knots),), 2.0 * dt, dtype=dtype, device=device)
    trapezoid[0] = dt
    trapezoid[-1] = dt
    return t, phi, phi * trapezoid


def sigreg_ecf_reference(z: torch.Tensor, directions: torch.Tensor, t_max: float = 3.0, knots: int = 17) -> torch.Tensor:
    """Torch reference of :func:`sigreg_ecf` (no input checks). Materializes ``(N, M, knots)``."""
    work = _work_dtype(z.dtype, directions.dtype)
    with _exact(z.device):
        x = z.to(work) @ directions.to(work)
    t = torch.linspace(0.0, float(t_max), int(knots), dtype=work, device=z.device)
    tx = x.unsqueeze(-1) * t
    return torch.stack([tx.cos().mean(0), tx.sin().mean(0)])


def _from_ecf(ecf: torch.Tensor, num_samples: int | torch.Tensor, t_max: float) -> torch.Tensor:
    _, phi, w = sigreg_weights(t_max, ecf.shape[-1], dtype=ecf.dtype, device=ecf.device)
    err = (ecf[0] - phi).square() + ecf[1].square()  # (M, knots)
    return num_samples * (err * w).sum(-1).mean()  # element-wise, not a matmul: autocast leaves it alone


def sigreg_reference(z: torch.Tensor, directions: torch.Tensor, t_max: float = 3.0, knots: int = 17) -> torch.Tensor:
    """Torch reference of :func:`sigreg` (no input checks): the CPU path and the test oracle."""
    return _from_ecf(sigreg_ecf_reference(z, directions, t_max, knots), z.shape[0], t_max)


# ----------------------------------------------------------------------------- custom op


def _torch_backward(
    grad: torch.Tensor, z: torch.Tensor, directions: torch.Tensor, t_max: float, knots: int, directions_grad: bool
) -> list[torch.Tensor]:
    """Analytic gradients of :func:`sigreg_ecf_reference` given ``grad = dL/d ecf (2, M, knots)``.

    ``dL/dx_nm = (1/N) sum_k t_k (g_sin[m,k] cos(t_k x_nm) - g_cos[m,k] sin(t_k x_nm))``, then
    ``dz = dL/dx @ a.T`` and ``d a = z.T @ dL/dx`` (float32 math, float64 for float64 inputs)."""
    work = _work_dtype(z.dtype, directions.dtype)
    zw, aw = z.to(work), directions.to(work)
    t = torch.linspace(0.0, float(t_max), int(knots), dtype=work, device=z.device)
    with _exact(z.device):
        tx = (zw @ aw).unsqueeze(-1) * t
        g = grad.to(work) * (t / z.shape[0])
        dx = (g[1] * tx.cos() - g[0] * tx.sin()).sum(-1)  # (N, M)
        out = [(dx @ aw.T).to(z.dtype)]
        if directions_grad:
            out.append((zw.T @ dx).to(directions.dtype))
    return out


@torch.library.custom_op(
    "jepa::sigreg_ecf", mutates_args=(), schema="(Tensor z, Tensor directions, float t_max, int knots, str impl) -> Tensor"
)
def _sigreg_ecf_op(z, directions, t_max, knots, impl):
    if impl == "triton":
        from jepa.kernels.triton import sigreg as kernels  # noqa: PLC0415  (optional dependency)

        with _backend.device_guard(z.device):  # Triton launches on the current device, not z's
            return kernels.ecf_forward(z, directions, t_max=t_max, knots=knots)
    return sigreg_ecf_reference(z, directions, t_max, knots)


@_sigreg_ecf_op.register_fake
def _(z, directions, t_max, knots, impl):
    dtype = _work_dtype(z.dtype, directions.dtype)
    return z.new_empty((2, directions.shape[1], knots), dtype=dtype)


@torch.library.custom_op(
    "jepa::sigreg_ecf_backward",
    mutates_args=(),
    schema="(Tensor grad, Tensor z, Tensor directions, float t_max, int knots, str impl, bool directions_grad) "
    "-> Tensor[]",
)
def _sigreg_ecf_backward_op(grad, z, directions, t_max, knots, impl, directions_grad):
    if impl == "triton":
        from jepa.kernels.triton import sigreg as kernels  # noqa: PLC0415

        with _backend.device_guard(z.device):
            return [kernels.ecf_backward(grad, z, directions, t_max=t_max, knots=knots)]
    # Contiguous like the kernel and the fake, whatever z's strides.
    return [g.contiguous() for g in _torch_backward(grad, z, directions, t_max, knots, directions_grad)]


@_sigreg_ecf_backward_op.register_fake
def _(grad, z, directions, t_max, knots, impl, directions_grad):
    # Contiguous gradients, as both implementations return them (not empty_like: it keeps permuted strides).
    out = [z.new_empty(z.shape)]
    if directions_grad and impl != "triton":
        out.append(directions.new_empty(directions.shape))
    return out


def _setup_context(ctx, inputs, output):
    z, directions, t_max, knots, impl = inputs
    ctx.save_for_backward(z, directions)
    ctx.options = (t_max, knots, impl)


def _backward(ctx, grad):
    z, directions = ctx.saved_tensors
    t_max, knots, impl = ctx.options
    # The Triton path differentiates z only (dispatch never sends it directions that need a gradient).
    directions_grad = bool(ctx.needs_input_grad[1]) and impl != "triton"
    grads = _sigreg_ecf_backward_op(grad, z, directions, t_max, knots, impl, directions_grad)
    dz = grads[0] if ctx.needs_input_grad[0] else None
    da = grads[1] if directions_grad else None
    return dz, da, None, None, None


_sigreg_ecf_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- checks and dispatch


def _check_options(t_max, knots, owner: str) -> None:
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not math.isfinite(t_max) or not t_max > 0:
        raise ValueError(f"{owner}: t_max must be a finite number > 0, got {t_max!r}")
    if isinstance(knots, bool) or not isinstance(knots, int) or knots < 2:
        raise ValueError(f"{owner}: knots must be an int >= 2, got {knots!r}")


def _check_inputs(z, directions, t_max, knots, owner: str) -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{owner}: z must be a tensor, got {type(z).__name__}")
    if not isinstance(directions, torch.Tensor):
        raise TypeError(f"{owner}: directions must be a tensor, got {type(directions).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{owner}: z must be a floating-point tensor, got dtype {z.dtype}")
    if not directions.is_floating_point():
        raise TypeError(f"{owner}: directions must be a floating-point tensor, got dtype {directions.dtype}")
    if z.dim() != 2 or z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"{owner}: z must be (N, D) with N >= 1 and D >= 1, got shape {tuple(z.shape)}")
    if directions.dim() != 2 or directions.shape[0] != z.shape[1] or directions.shape[1] < 1:
        raise ValueError(
            f"{owner}: directions must be (D, M) with D = z.shape[1] = {z.shape[1]} and M >= 1, "
            f"got shape {tuple(directions.shape)}"
        )
    if z.device != directions.device:
        raise ValueError(f"{owner}: z is on {z.device} but directions is on {directions.device}; expected one device")
    _check_options(t_max, knots, owner)


SIGREG = _backend.register_op(
    "sigreg", backends=("torch", "triton"), dtypes={"triton": _TRITON_DTYPES}, auto={"cuda": ("triton", "torch")}
)


def _kernel_reason(directions: torch.Tensor) -> str:
    """This op's own reason why the Triton kernels cannot run ("" when they can); the chooser owns
    availability, devices and dtypes."""
    if torch.is_grad_enabled() and directions.requires_grad:
        return "directions require a gradient; the Triton kernels differentiate z only"
    return ""


def _choose_impl(z: torch.Tensor, directions: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"`` for :func:`sigreg_ecf` (validate -> :func:`jepa.ops._backend.choose` -> run)."""
    return _backend.choose(
        SIGREG,
        device=z.device,
        dtypes=(z.dtype, directions.dtype),
        check=lambda b: _kernel_reason(directions) if b == "triton" else "",
    )


# ----------------------------------------------------------------------------- public ops


def sigreg_ecf(z: torch.Tensor, directions: torch.Tensor, t_max: float = 3.0, knots: int = 17) -> torch.Tensor:
    """Empirical characteristic function of the projections ``z @ directions`` at the SIGReg knots.

    Args:
        z: embeddings, floating point ``(N, D)``.
        directions: projection directions ``(D, M)``, one per column (unit columns for SIGReg; not
            checked, which would synchronize with the device).
        t_max: last knot (> 0); the knots are ``linspace(0, t_max, knots)``.
        knots: number of knots (>= 2).

    Returns:
        ``(2, M, knots)``: ``[0, m, k] = mean_n cos(t_k x_nm)``, ``[1, m, k] = mean_n sin(t_k x_nm)``
        with ``x = z @ directions``; float32 (float64 when an input is float64). Differentiable in
        ``z`` (and in ``directions`` on the torch backend).

    Raises:
        ValueError: on bad shapes, dtypes, devices, ``t_max`` or ``knots``.
        TypeError: the same checks, for a bad type rather than a bad value.
        BackendUnavailableError: when the forced backend cannot run.
    """
    _check_inputs(z, directions, t_max, knots, "sigreg_ecf")
    impl = _choose_impl(z, directions)
    if impl == "torch" and not torch.compiler.is_compiling():
        return sigreg_ecf_reference(z, directions, float(t_max), int(knots))
    return _sigreg_ecf_op(z, directions, float(t_max), int(knots), impl)


def sigreg_from_ecf(ecf: torch.Tensor, num_samples: int | torch.Tensor, t_max: float = 3.0) -> torch.Tensor:
    """The SIGReg statistic from ECF means (:func:`sigreg_ecf`) of ``num_samples`` samples.

    ``num_samples * mean_m sum_k w_k [(ecf[0, m, k] - phi(t_k))^2 + ecf[1, m, k]^2]`` (see the module
    docstring for ``w`` and ``phi``). The knot count is ``ecf.shape[-1]``.

    Args:
        ecf: ``(2, M, knots)`` floating point: mean cosines, then mean sines.
        num_samples: the ``N`` the means are over: an int >= 1, or a tensor (e.g. the count summed
            over ranks) on ``ecf``'s device.
        t_max: last knot (> 0), as given to :func:`sigreg_ecf`.

    Returns:
        A scalar tensor of ``ecf``'s dtype.
    """
    if not isinstance(ecf, torch.Tensor) or not ecf.is_floating_point():
        got = ecf.dtype if isinstance(ecf, torch.Tensor) else type(ecf).__name__
        raise TypeError(f"sigreg_from_ecf: ecf must be a floating-point tensor, got {got}")
    if ecf.dim() != 3 or ecf.shape[0] != 2 or ecf.shape[1] < 1:
        raise ValueError(f"sigreg_from_ecf: ecf must be (2, M, knots) with M >= 1, got shape {tuple(ecf.shape)}")
    if isinstance(num_samples, torch.Tensor):
        if num_samples.numel() != 1:
            raise ValueError(f"sigreg_from_ecf: num_samples must be a single number, got shape {tuple(num_samples.shape)}")
    elif isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"sigreg_from_ecf: num_samples must be an int >= 1 or a tensor, got {num_samples!r}")
    _check_options(t_max, ecf.shape[-1], "sigreg_from_ecf")
    if isinstance(num_samples, torch.Tensor):
        num_samples = num_samples.reshape(()).to(ecf.dtype)
    return _from_ecf(ecf, num_samples, float(t_max))


def sigreg(z: torch.Tensor, directions: torch.Tensor, t_max: float = 3.0, knots: int = 17) -> torch.Tensor:
    """SIGReg: the mean over directions of the Epps–Pulley statistic of the projections ``z @ directions``.

    ``EP = N * sum_k w_k [(mean_n cos(t_k x_n) - phi(t_k))^2 + (mean_n sin(t_k x_n))^2]`` per direction
    (module docstring), averaged over the ``M`` directions. About 0 (order ``1/N`` per knot) for samples
    of an isotropic standard Gaussian, large for collapsed or anisotropic embeddings.

    Args:
        z: embeddings, floating point ``(N, D)``.
        directions: ``(D, M)`` unit columns (not checked).
        t_max: last knot (> 0).
        knots: number of knots (>= 2).

    Returns:
        A scalar tensor: float32 (float64 when an input is float64).

    Raises:
        ValueError: on bad shapes, dtypes, devices, ``t_max`` or ``knots``.
        TypeError: the same checks, for a bad type rather than a bad value.
        BackendUnavailableError: when the forced backend cannot run.
    """
    ecf = sigreg_ecf(z, directions, t_max, knots)
    return _from_ecf(ecf, z.shape[0], float(t_max))
