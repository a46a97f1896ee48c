"""Every Triton launch of every op happens with the tensors' device made current.

Triton launches on the *current* CUDA device, not the tensors': with tensors on cuda:1 and cuda:0
current (no ``torch.cuda.set_device``, the default of a DDP-less multi-GPU script), an unguarded launch
reads another GPU's memory. Each op wraps its launches in ``jepa.ops._backend.device_guard(device)``
(``torch.cuda.device`` on CUDA, nothing on CPU). Here (CPU tensors, TRITON_INTERPRET=1) the guard is
replaced by a recorder and every kernel by a wrapper that notes which device was current at its launch.
"""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

pytest.importorskip("triton")

import jepa.ops as ops  # noqa: E402
from jepa.ops import _backend  # noqa: E402

if not _backend.triton_can_run(torch.empty(1, device="cuda" if torch.cuda.is_available() else "cpu")):
    pytest.skip("Triton cannot run here (no GPU and TRITON_INTERPRET is not set)", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KERNEL_MODULES = ("attention", "jepa_loss", "info_nce", "ema_update", "sigreg")


class _Watched:
    """Records launches (``kernel[grid](...)``); calls from inside other kernels (helpers) pass through."""

    def __init__(self, kernel, name, state):
        self.kernel, self.name, self.state = kernel, name, state

    def __call__(self, *args, **kwargs):
        return self.kernel(*args, **kwargs)

    def __getattr__(self, attr):
        return getattr(self.kernel, attr)

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            current = self.state["current"][-1] if self.state["current"] else None
            self.state["launches"].append((self.name, current))
            return launch(*args, **kwargs)

        return run


@pytest.fixture
def launches(monkeypatch):
    state = {"current": [], "launches": []}

    @contextlib.contextmanager
    def guard(device):
        state["current"].append(device)
        try:
            yield
        finally:
            state["current"].pop()

    monkeypatch.setattr(_backend, "device_guard", guard)
    # On a GPU the autotuner launches the jit functions it was built with (kern._TUNED), not the watched
    # wrappers of _KERNELS: watch the pinned path, which every launch then takes.
    monkeypatch.setenv("JEPA_TRITON_AUTOTUNE", "0")
    for mod_name in KERNEL_MODULES:
        mod = importlib.import_module(f"jepa.kernels.triton.{mod_name}")
        for name, obj in list(vars(mod).items()):
            if name.startswith("_") and hasattr(obj, "fn") and hasattr(obj, "__getitem__") and not isinstance(obj, dict):
                monkeypatch.setattr(mod, name, _Watched(obj, f"{mod_name}.{name}", state))
        for key, obj in list(getattr(mod, "_KERNELS", {}).items()):
            monkeypatch.setitem(mod._KERNELS, key, _Watched(obj, f"{mod_name}.{key}", state))
    return state["launches"]


def _check(launches, expected_kernels, device):
    names = {n for n, _ in launches}
    assert set(expected_kernels) <= names, names
    wrong = [(n, d) for n, d in launches if d is None or torch.device(d) != device]
    assert not wrong, f"launched outside the tensors' device {device}: {wrong}"


def test_attention_launches_on_the_tensors_device(launches):
    q = torch.randn(2, 2, 9, 16, device=DEVICE, requires_grad=True)
    with ops.use_backend(attention="triton"):
        ops.attention(q, q, q, causal=True).sum().backward()
    _check(launches, ["attention.fwd", "attention._attn_bwd_delta", "attention.dkdv", "attention.dq"], q.device)


def test_losses_launch_on_the_tensors_device(launches):
    pred = torch.randn(2, 5, 8, device=DEVICE, requires_grad=True)
    target = torch.randn(2, 7, 8, device=DEVICE)
    index = torch.randint(0, 7, (2, 5), device=DEVICE)
    with ops.use_backend("triton"):
        ops.jepa_loss(pred, target, target_index=index).backward()
        ops.info_nce(pred[:, 0], pred[:, 1], symmetric=True).backward()
    _check(launches, ["jepa_loss._jepa_loss_fwd_kernel", "jepa_loss._jepa_loss_finalize_kernel",
                      "jepa_loss._jepa_loss_bwd_kernel", "info_nce._inv_norm_kernel", "info_nce._lse_kernel",
                      "info_nce._bwd_kernel", "info_nce._finish_kernel"], pred.device)


def test_ema_update_launches_on_the_tensors_device(launches):
    t = [torch.zeros(5, device=DEVICE), torch.zeros(3, device=DEVICE, dtype=torch.bfloat16)]
    o = [torch.ones(5, device=DEVICE), torch.ones(3, device=DEVICE, dtype=torch.bfloat16)]
    with ops.use_backend(ema_update="triton"):
        ops.ema_update(t, o, 0.5)
    _check(launches, ["ema_update._ema_kernel"], t[0].device)
    assert sum(n == "ema_update._ema_kernel" for n, _ in launches) == 2  # one launch per dtype


def test_sigreg_launches_on_the_tensors_device(launches):
    z = torch.randn(9, 5, device=DEVICE, requires_grad=True)
    directions = torch.nn.functional.normalize(torch.randn(5, 3, device=DEVICE), dim=0)
    with ops.use_backend(sigreg="triton"):
        ops.sigreg(z, directions, knots=5).backward()
    _check(launches, ["sigreg._ecf_fwd_kernel", "sigreg._ecf_bwd_kernel"], z.device)
