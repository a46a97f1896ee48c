"""jepa.ops._backend: the one chooser (settings, the global/per-op rule, forced-backend errors, auto order,
dtype tables) and what it means for a model: JEPA_BACKEND=cpp runs a training step instead of raising."""

from __future__ import annotations

import importlib

import pytest
import torch

import jepa.ops as ops
from jepa.ops import BackendUnavailableError, _backend

OPS = {"attention", "ema_update", "info_nce", "jepa_loss", "unscale_", "update_scale_"}


def test_every_public_op_is_registered_with_torch_and_valid_auto_orders():
    specs = _backend.registered_ops()
    assert OPS <= set(specs)
    for name, spec in specs.items():
        assert spec.name == name and "torch" in spec.backends
        for order in spec.auto.values():
            assert set(order) <= set(spec.backends)


@pytest.mark.parametrize(
    "spec, global_backend, per_op",
    [
        ("triton", "triton", {}),
        (" Torch ", "torch", {}),
        ("ema_update=cuda,attention=torch", None, {"ema_update": "cuda", "attention": "torch"}),
        ("cpp, attention = torch", "cpp", {"attention": "torch"}),
        ("auto,jepa_loss=triton", "auto", {"jepa_loss": "triton"}),
    ],
)
def test_settings_are_parsed(spec, global_backend, per_op):
    setting = _backend._parse(spec, "JEPA_BACKEND")
    assert setting.global_backend == global_backend and dict(setting.per_op) == per_op


@pytest.mark.parametrize(
    "spec, match",
    [
        ("fast", "unknown backend 'fast'"),
        ("atention=torch", "unknown op 'atention'"),
        ("triton,cpp", "two global backends"),
        ("ema_update=cuda,ema_update=cpp", "given twice"),
        ("ema_update=gpu", "unknown backend 'gpu'"),
    ],
)
def test_bad_settings_are_refused_naming_the_entry(monkeypatch, spec, match):
    monkeypatch.setenv("JEPA_BACKEND", spec)
    with pytest.raises(ValueError, match=match):
        ops.ema_update([torch.zeros(2)], [torch.ones(2)], 0.5)
    with pytest.raises(ValueError, match=match):
        with ops.use_backend(spec):
            pass


def test_use_backend_needs_something_and_checks_op_names():
    with pytest.raises(ValueError, match="name a backend"):
        with ops.use_backend():
            pass
    with pytest.raises(ValueError, match="unknown op 'attn'"):
        with ops.use_backend(attn="torch"):
            pass


def test_global_setting_applies_only_to_ops_that_have_the_backend(monkeypatch):
    monkeypatch.setenv("JEPA_BACKEND", "cpp")
    assert _backend.requested_backend("ema_update") == "cpp"
    assert _backend.requested_backend("unscale_") == "cpp"
    for op in ("attention", "jepa_loss", "info_nce"):  # no C++ path: left on auto, not an error
        assert _backend.requested_backend(op) == "auto"
    assert _backend.requested_backend() == "cpp"  # the global setting itself


def test_inner_settings_win_and_skipped_globals_fall_through(monkeypatch):
    monkeypatch.setenv("JEPA_BACKEND", "attention=torch,triton")
    assert _backend.requested_backend("attention") == "torch"  # per-op beats the same layer's global
    assert _backend.requested_backend("info_nce") == "triton"
    with ops.use_backend("cpp"):
        # attention has no cpp: this block says nothing about it, the environment's per-op entry applies
        assert _backend.requested_backend("attention") == "torch"
        assert _backend.requested_backend("ema_update") == "cpp"
        assert _backend.requested_backend("info_nce") == "triton"
        with ops.use_backend(info_nce="torch"):
            assert _backend.requested_backend("info_nce") == "torch"
            assert _backend.requested_backend("ema_update") == "cpp"
        with ops.use_backend("auto"):  # every op has auto: it resets everything inside
            assert {_backend.requested_backend(op) for op in OPS} == {"auto"}
    assert _backend.requested_backend("ema_update") == "triton"


def test_forced_backend_errors_name_op_backend_and_reason(native):
    spec = _backend.registered_ops()["jepa_loss"]
    with ops.use_backend(jepa_loss="cpp"), pytest.raises(
        BackendUnavailableError, match=r"jepa_loss: backend 'cpp' does not implement jepa_loss \(jepa_loss backends: torch, triton\)"
    ):
        _backend.choose(spec, device=torch.device("cpu"))
    with ops.use_backend(jepa_loss="triton"), pytest.raises(
        BackendUnavailableError, match="jepa_loss: backend 'triton' cannot run: dtype float64 is not supported by the triton kernels"
    ):
        _backend.choose(spec, device=torch.device("cuda"), dtypes=(torch.float64,))
    with ops.use_backend(jepa_loss="triton"), pytest.raises(BackendUnavailableError, match="cannot run: too wide"):
        _backend.choose(spec, device=torch.device("cuda"), dtypes=(torch.float32,), check=lambda b: "too wide")


def test_auto_takes_the_first_backend_that_can_run(monkeypatch):
    spec = _backend.register_op("_test_op", backends=("torch", "cuda", "triton"), dtypes={"cuda": (torch.float32,)},
                                auto={"cuda": ("cuda", "triton", "torch")})
    try:
        monkeypatch.setattr(_backend, "cuda_unavailable_reason", lambda: "")
        monkeypatch.setattr(_backend, "triton_available", lambda: True)
        cuda = torch.device("cuda", 0)
        assert _backend.choose(spec, device=cuda, dtypes=(torch.float32,)) == "cuda"
        assert _backend.choose(spec, device=cuda, dtypes=(torch.float16,)) == "triton"  # cuda's dtype table
        assert _backend.choose(spec, device=cuda, check=lambda b: "no" if b == "triton" else "") == "cuda"
        assert _backend.choose(spec, device=cuda, check=lambda b: "no") == "torch"
        assert _backend.choose(spec, device=cuda, auto=("triton", "cuda")) == "triton"
        assert _backend.choose(spec, device=torch.device("cpu")) == "torch"  # no cpu order: the reference
        monkeypatch.setattr(_backend, "cuda_unavailable_reason", lambda: "built without CUDA")
        assert _backend.choose(spec, device=cuda, dtypes=(torch.float32,)) == "triton"
    finally:
        _backend._OPS.pop("_test_op", None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backends=("cpp",)), "needs the 'torch' reference"),
        (dict(backends=("torch", "gpu")), "unknown backend 'gpu'"),
        (dict(backends=("torch",), auto={"cuda": ("triton", "torch")}), "does not implement"),
    ],
)
def test_register_op_validates_its_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _backend.register_op("_bad_op", **kwargs)
    assert "_bad_op" not in _backend.registered_ops()


def test_device_guard_is_a_no_op_off_cuda():
    with _backend.device_guard(torch.device("cpu")), _backend.device_guard(None):
        pass


def test_a_training_step_runs_under_global_cpp(native, monkeypatch):
    """JEPA_BACKEND=cpp on a CPU training step: attention, jepa_loss (with the target gather) and info_nce
    have no C++ path and run on auto, ema_update and loss scaling run in C++; nothing raises. Per op, the
    same request for attention raises."""
    from jepa.models.layers import TransformerBlock  # noqa: PLC0415

    ema_mod = importlib.import_module("jepa.ops.ema_update")
    ran = []
    real_cpp = ema_mod._run_cpp
    monkeypatch.setattr(ema_mod, "_run_cpp", lambda plan, m: (ran.append("ema cpp"), real_cpp(plan, m)))
    monkeypatch.setenv("JEPA_BACKEND", "cpp")
    torch.manual_seed(0)
    online, target = TransformerBlock(16, 2), TransformerBlock(16, 2)
    x = torch.randn(3, 9, 16)
    kpm = torch.zeros(3, 9, dtype=torch.bool)
    kpm[1, 6:] = True
    pred = online(x, kpm)[:, :4]
    with torch.no_grad():
        tgt = target(x, kpm)
    index = torch.randint(0, 9, (3, 4))
    loss = ops.jepa_loss(pred, tgt, target_index=index) + ops.info_nce(pred.mean(1), tgt.mean(1))
    loss.backward()
    grads = [p.grad for p in online.parameters()]
    found = torch.zeros(())
    ops.unscale_(grads, torch.tensor(0.5), found)
    ops.ema_update(list(target.parameters()), list(online.parameters()), 0.99)
    assert torch.isfinite(loss) and found.item() == 0.0 and ran == ["ema cpp"]
    monkeypatch.setenv("JEPA_BACKEND", "cpp,attention=cpp")
    with pytest.raises(BackendUnavailableError, match="'cpp' does not implement attention"):
        online(x, kpm)


def test_without_triton_the_reason_names_the_distribution_to_install(monkeypatch):
    monkeypatch.setattr(_backend, "triton_available", lambda: False)
    reason = _backend.triton_unavailable_reason(torch.zeros(2))
    assert reason == "triton is not installed (pip install 'jepa-torch[gpu]' or pip install triton)"
