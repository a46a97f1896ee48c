"""jepa.amp.GradScaler: a drop-in for torch.amp.GradScaler (same scales, skipped steps and weights), state
dict interchange, errors, the disabled pass-through, and that the work runs in jepa's kernels."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import pytest
import torch
from torch import nn

from jepa.amp import GradScaler, OptState
from jepa.ops import _backend


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 3))


def _batches(n: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    # large inputs: under float16 autocast the scaled backward overflows float16 at the initial scale 2**16
    return [(torch.randn(16, 12, generator=gen) * 40, torch.randn(16, 3, generator=gen)) for _ in range(n)]


def _train(scaler, *, steps=60, opt="sgd", clip=False, seed=0):
    """fp16-autocast training on CPU with float32 params; returns per-step (scale, tracker, skipped) and the model."""
    model = _model(seed)
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    elif opt == "adam_fused":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    log = []
    for x, y in _batches(steps):
        before = [p.detach().clone() for p in model.parameters()]
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
        loss = ((out.float() - y) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        skipped = all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
        log.append((scaler.get_scale(), scaler._get_growth_tracker(), skipped))
    return log, model


@pytest.mark.parametrize("opt, clip", [("sgd", False), ("sgd", True), ("adamw", False), ("adam_fused", False)])
def test_same_scales_skips_and_weights_as_torch(opt, clip):
    kw = dict(init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)
    ours_log, ours_model = _train(GradScaler("cpu", **kw), opt=opt, clip=clip)
    ref_log, ref_model = _train(torch.amp.GradScaler("cpu", **kw), opt=opt, clip=clip)
    # the scenario exercises both directions: overflow -> skipped steps and backoff, then growth
    scales = [s for s, _, _ in ref_log]
    assert sum(skip for _, _, skip in ref_log) >= 2, "the reference run skipped no step: the test lost its overflow"
    assert scales[0] < 2.0**16, "the first step should have overflowed and backed off"
    assert any(b > a for a, b in zip(scales, scales[1:])), "the scale never grew"
    assert sum(not skip for _, _, skip in ref_log) >= 10
    assert ours_log == ref_log
    for (name, p), q in zip(ours_model.named_parameters(), ref_model.parameters()):
        assert torch.equal(p, q), f"{name} differs from the torch.amp.GradScaler run"


def test_kernels_do_the_work_not_torch(monkeypatch):
    if _backend.native_module() is None:
        pytest.skip("jepa._C is not built")

    def boom(*args, **kwargs):
        raise AssertionError("torch's amp op ran instead of jepa's kernel")

    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", boom)
    monkeypatch.setattr(torch, "_amp_update_scale_", boom)
    log, _ = _train(GradScaler("cpu", growth_interval=3), steps=20)
    assert any(skip for _, _, skip in log) and any(not skip for _, _, skip in log)


def test_two_optimizers_match_torch():
    def run(scaler):
        torch.manual_seed(0)
        a, b = nn.Linear(6, 6), nn.Linear(6, 2)
        oa, ob = torch.optim.SGD(a.parameters(), lr=1e-3), torch.optim.SGD(b.parameters(), lr=1e-3)
        out = []
        for x, _ in _batches(15, seed=3):
            x = x[:, :6]
            with torch.autocast("cpu", dtype=torch.float16):
                loss = b(torch.relu(a(x))).float().pow(2).mean()
            oa.zero_grad()
            ob.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(oa)
            scaler.step(ob)
            scaler.update()
            out.append(scaler.get_scale())
        return out, [p.detach().clone() for p in list(a.parameters()) + list(b.parameters())]

    ours, ours_w = run(GradScaler(growth_interval=2))
    ref, ref_w = run(torch.amp.GradScaler("cpu", growth_interval=2))
    assert ours == ref
    assert all(torch.equal(p, q) for p, q in zip(ours_w, ref_w))


def test_state_dict_round_trip_and_interchange_with_torch():
    ours = GradScaler("cpu", growth_interval=3)
    _train(ours, steps=12)
    sd = ours.state_dict()
    ref = torch.amp.GradScaler("cpu", growth_interval=3)
    _train(ref, steps=12)
    ref_sd = ref.state_dict()
    assert sd == ref_sd  # same keys, same values after the same training
    assert set(sd) == {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}

    # ours -> ours (before and after the scale tensor exists)
    fresh = GradScaler("cpu")
    fresh.load_state_dict(sd)
    assert fresh.state_dict() == sd
    fresh.scale(torch.ones(()))
    assert fresh.get_scale() == sd["scale"] and fresh._get_growth_tracker() == sd["_growth_tracker"]
    # ours -> torch and torch -> ours, then the two continue identically
    t2 = torch.amp.GradScaler("cpu")
    t2.load_state_dict(sd)
    o2 = GradScaler()
    o2.load_state_dict(ref_sd)
    assert t2.state_dict() == o2.state_dict() == sd
    log_o, _ = _train(o2, steps=10, seed=5)
    log_t, _ = _train(t2, steps=10, seed=5)
    assert log_o == log_t


def test_pickle_round_trip():
    s = GradScaler("cpu", growth_interval=3)
    _train(s, steps=5)
    s2 = pickle.loads(pickle.dumps(s))
    assert s2.state_dict() == s.state_dict()
    log_a, _ = _train(s, steps=6, seed=2)
    log_b, _ = _train(s2, steps=6, seed=2)
    assert log_a == log_b
    # deepcopy too (checkpointing code does this)
    assert copy.deepcopy(s).state_dict() == s.state_dict()


def test_double_unscale_and_order_errors_like_torch():
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = GradScaler("cpu")
    with pytest.raises(RuntimeError, match="before scale"):
        s.unscale_(opt)
    s.scale(model(torch.ones(2, 3)).sum()).backward()
    s.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        s.unscale_(opt)
    s.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        s.unscale_(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        s.step(opt)
    s.update()
    with pytest.raises(RuntimeError, match="Closure"):
        s.step(opt, closure=lambda: None)
    fresh = GradScaler("cpu")
    fresh.scale(torch.ones(()))
    with pytest.raises(RuntimeError, match="no inf checks"):
        fresh.update()  # update() without any step()


def test_fp16_gradients_are_refused_like_torch():
    model = nn.Linear(3, 1).half()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = GradScaler("cpu")
    s.scale(model(torch.ones(2, 3, dtype=torch.float16)).float().sum()).backward()
    with pytest.raises(ValueError, match="FP16 gradients"):
        s.unscale_(opt)


def test_bad_arguments():
    with pytest.raises(ValueError, match="growth_factor must be a finite number > 1.0, got 1.0"):
        GradScaler(growth_factor=1.0)
    with pytest.raises(ValueError, match="backoff_factor"):
        GradScaler(backoff_factor=1.5)
    with pytest.raises(ValueError, match="init_scale"):
        GradScaler(init_scale=-1.0)
    with pytest.raises(TypeError, match="growth_interval must be an int"):
        GradScaler(growth_interval=2.5)
    with pytest.raises(ValueError, match="growth_interval must be in"):
        GradScaler(growth_interval=0)
    with pytest.raises(TypeError, match="device must be"):
        GradScaler(device=3)
    s = GradScaler()
    with pytest.raises(ValueError, match="growth_factor"):
        s.set_growth_factor(0.5)
    with pytest.raises(ValueError, match="outputs must be a Tensor"):
        s.scale([torch.ones(()), 3])
    with pytest.raises(RuntimeError, match="empty"):
        s.load_state_dict({})
    with pytest.raises(ValueError, match="lacks \\['_growth_tracker'\\]"):
        s.load_state_dict({"scale": 1.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 10})
    s.scale(torch.ones(()))
    with pytest.raises(TypeError, match="new_scale"):
        s.update(new_scale="big")


def test_disabled_is_a_pass_through():
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = GradScaler(enabled=False)
    loss = model(torch.ones(2, 3)).sum()
    assert s.scale(loss) is loss
    loss.backward()
    before = model.weight.detach().clone()
    s.unscale_(opt)
    s.step(opt)
    s.update()
    assert not torch.equal(before, model.weight)
    assert s.get_scale() == 1.0 and s.state_dict() == {} and not s.is_enabled()
    s.load_state_dict({"scale": 4.0})  # no-op, like torch


def test_device_defaults_to_the_first_scaled_tensor_and_cuda_without_gpu_disables():
    s = GradScaler()
    assert s._device is None and s.get_scale() == 2.0**16
    out = s.scale(torch.ones(3))
    assert s._device == "cpu" and s._scale.device.type == "cpu" and torch.equal(out, torch.full((3,), 2.0**16))
    if not torch.cuda.is_available():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            c = GradScaler("cuda")
        assert not c.is_enabled() and any("CUDA is not available" in str(x.message) for x in w)


def test_scale_nested_outputs_and_manual_new_scale():
    s = GradScaler(init_scale=4.0)
    a, b, c = torch.ones(2), torch.full((3,), 2.0), torch.full((1,), 3.0)
    out = s.scale([a, (b, c)])
    assert isinstance(out, list) and isinstance(out[1], tuple)
    assert torch.equal(out[0], a * 4) and torch.equal(out[1][0], b * 4) and torch.equal(out[1][1], c * 4)
    gen_out = list(s.scale(x for x in [a, b]))
    assert torch.equal(gen_out[1], b * 4)
    s.update(new_scale=64.0)
    assert s.get_scale() == 64.0
    s.update(new_scale=torch.tensor([8.0]))
    assert s.get_scale() == 8.0
    with pytest.raises(ValueError, match="1 element"):
        s.update(new_scale=torch.ones(2))


def test_skipped_step_leaves_weights_and_backs_off():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = GradScaler("cpu", init_scale=8.0, growth_interval=1)
    loss = model(torch.ones(1, 2)).sum()
    s.scale(loss).backward()
    model.weight.grad[0, 0] = math.nan
    before = [p.detach().clone() for p in model.parameters()]
    assert s.step(opt) is None
    s.update()
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert s.get_scale() == 4.0 and s._get_growth_tracker() == 0
    opt.zero_grad()
    s.scale(model(torch.ones(1, 2)).sum()).backward()
    s.step(opt)
    s.update()
    assert s.get_scale() == 8.0  # interval 1: grows after every good step
    assert s._per_optimizer_states[id(opt)]["stage"] is OptState.READY  # fresh state after update()
