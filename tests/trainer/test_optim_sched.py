"""create_optimizer (incl. Lion) and create_scheduler against hand-computed values."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from jepa.trainer.optimizers import Lion, create_optimizer, fused_supported
from jepa.trainer.schedulers import create_scheduler

# ---------------------------------------------------------------- optimizers


def _model():
    return nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))


def test_v0_doc_example():
    model = _model()
    optimizer = create_optimizer(model.parameters(), optimizer_type="adamw", learning_rate=1e-4, weight_decay=1e-2, betas=(0.9, 0.999))
    assert isinstance(optimizer, torch.optim.AdamW)
    g = optimizer.param_groups[0]
    assert g["lr"] == 1e-4 and g["weight_decay"] == 1e-2 and g["betas"] == (0.9, 0.999)
    assert bool(g.get("fused")) == fused_supported("cpu")


@pytest.mark.parametrize(
    "name,cls",
    [("adamw", torch.optim.AdamW), ("ADAM", torch.optim.Adam), ("sgd", torch.optim.SGD), ("RMSprop", torch.optim.RMSprop), ("lion", Lion)],
)
def test_types(name, cls):
    opt = create_optimizer(_model(), optimizer_type=name, learning_rate=0.01)
    assert type(opt) is cls and all(g["lr"] == 0.01 for g in opt.param_groups)


def test_module_skips_decay_on_biases_and_norms():
    model = _model()
    opt = create_optimizer(model, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(no_decay["params"]) == 4  # two biases + LayerNorm weight and bias


def test_group_dicts_pass_through():
    model = _model()
    groups = [{"params": model[0].parameters(), "lr": 0.5}, {"params": model[2].parameters()}]
    opt = create_optimizer(groups, optimizer_type="sgd", learning_rate=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]


def test_sgd_momentum_steps_by_hand():
    p = nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = create_optimizer([p], optimizer_type="sgd", learning_rate=0.1, weight_decay=0.0, momentum=0.9)
    assert opt.param_groups[0]["nesterov"] is False
    p.grad = torch.tensor([1.0, 2.0])
    opt.step()  # buf = g; p -= 0.1 * buf
    torch.testing.assert_close(p.data, torch.tensor([0.9, -1.2]))
    p.grad = torch.tensor([1.0, 2.0])
    opt.step()  # buf = 0.9 * buf + g = [1.9, 3.8]
    torch.testing.assert_close(p.data, torch.tensor([0.71, -1.58]))


def test_lion_two_steps_by_hand():
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = create_optimizer([p], optimizer_type="lion", learning_rate=0.1, weight_decay=0.5, betas=(0.9, 0.99))
    assert isinstance(opt, Lion)
    p.grad = torch.tensor([0.3, -0.1, 0.0], dtype=torch.float64)
    opt.step()
    # update = sign(0.1 * g) = [1, -1, 0]; p = p * (1 - 0.1 * 0.5) - 0.1 * update
    torch.testing.assert_close(p.data, torch.tensor([0.85, -1.8, 0.475], dtype=torch.float64))
    torch.testing.assert_close(opt.state[p]["exp_avg"], torch.tensor([0.003, -0.001, 0.0], dtype=torch.float64))
    p.grad = torch.tensor([-0.01, -0.5, 0.2], dtype=torch.float64)
    opt.step()
    # c = 0.9 * m + 0.1 * g = [0.0017, -0.0509, 0.02] -> sign [1, -1, 1] (first one against the new gradient)
    torch.testing.assert_close(p.data, torch.tensor([0.7075, -1.61, 0.35125], dtype=torch.float64))
    torch.testing.assert_close(opt.state[p]["exp_avg"], torch.tensor([0.00287, -0.00599, 0.002], dtype=torch.float64))


def test_lion_state_dict_round_trip_and_closure():
    model = _model()
    opt = create_optimizer(model, optimizer_type="lion", learning_rate=0.01)
    x = torch.randn(5, 4)
    loss = opt.step(lambda: model(x).pow(2).sum().backward() or model(x).pow(2).sum())
    assert torch.isfinite(loss)
    opt2 = create_optimizer(model, optimizer_type="lion", learning_rate=0.01)
    opt2.load_state_dict(opt.state_dict())
    for p in model.parameters():
        torch.testing.assert_close(opt2.state[p]["exp_avg"], opt.state[p]["exp_avg"])


def test_adam_fused_on_supported_device():
    opt = create_optimizer(_model(), optimizer_type="adam", device="cpu")
    assert bool(opt.param_groups[0].get("fused")) == fused_supported("cpu")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"optimizer_type": "adagrad"}, "unknown optimizer_type 'adagrad'; expected one of adamw, adam, sgd, rmsprop, lion"),
        ({"learning_rate": 0.0}, "learning_rate must be a number > 0, got 0.0"),
        ({"learning_rate": -1e-3}, "learning_rate must be a number > 0, got -0.001"),
        ({"weight_decay": -0.1}, "weight_decay must be a number >= 0, got -0.1"),
        ({"betas": (0.9, 1.0)}, r"betas must be two numbers in \[0, 1\), got \(0.9, 1.0\)"),
        ({"betas": (-0.1, 0.9)}, r"betas must be two numbers in \[0, 1\)"),
        ({"momentum": 1.5}, r"momentum must be a number in \[0, 1\), got 1.5"),
    ],
)
def test_optimizer_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_optimizer(_model(), **kwargs)


def test_optimizer_bad_params():
    with pytest.raises(ValueError, match="params is empty"):
        create_optimizer([])
    with pytest.raises(TypeError, match=r"params\[1\] must be a tensor"):
        create_optimizer([nn.Parameter(torch.zeros(1)), 3])


# ---------------------------------------------------------------- schedulers


def _opt(lr=1.0, groups=None):
    p = nn.Parameter(torch.zeros(1))
    return torch.optim.SGD(groups or [p], lr=lr)


def _lrs(sched, opt, n, group=0):
    """lr in use at units 0..n-1 (an optimizer step before every scheduler step)."""
    out = []
    for _ in range(n):
        out.append(opt.param_groups[group]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_warmup_then_decay_per_epoch():
    opt = _opt(1.0)
    sched = create_scheduler(opt, scheduler_type="cosine", max_epochs=10, warmup_epochs=2, min_lr=0.1)
    assert sched.jepa_interval == "epoch"
    lrs = _lrs(sched, opt, 13)
    expected = [0.5, 1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (e - 2) / 8)) for e in range(2, 11)] + [0.1, 0.1]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[2] == pytest.approx(1.0) and lrs[6] == pytest.approx(0.55) and lrs[10] == pytest.approx(0.1)


def test_v0_doc_example_cosine():
    opt = _opt(1e-4)
    scheduler = create_scheduler(opt, scheduler_type="cosine", max_epochs=100, warmup_epochs=10, min_lr=1e-6)
    lrs = _lrs(scheduler, opt, 101)
    assert lrs[0] == pytest.approx(1e-5) and lrs[9] == pytest.approx(1e-4) and lrs[10] == pytest.approx(1e-4)
    assert lrs[55] == pytest.approx(1e-6 + (1e-4 - 1e-6) * 0.5) and lrs[100] == pytest.approx(1e-6)


def test_per_step_vs_per_epoch():
    opt = _opt(1.0)
    sched = create_scheduler(opt, scheduler_type="cosine", max_epochs=5, warmup_epochs=1, min_lr=0.0, steps_per_epoch=4)
    assert sched.jepa_interval == "step"
    lrs = _lrs(sched, opt, 21)
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lrs[12] == pytest.approx(0.5)  # halfway through the 16 decay steps
    assert lrs[20] == pytest.approx(0.0, abs=1e-15)
    # the same schedule per epoch visits the lr at every 4th step
    opt_e = _opt(1.0)
    per_epoch = _lrs(create_scheduler(opt_e, "cosine", max_epochs=5, warmup_epochs=1), opt_e, 6)
    assert per_epoch[1:] == pytest.approx(lrs[4::4])


def test_linear_to_min_lr():
    opt = _opt(1.0)
    lrs = _lrs(create_scheduler(opt, "linear", max_epochs=10, min_lr=0.2), opt, 12)
    assert lrs == pytest.approx([1.0 - 0.08 * e for e in range(11)] + [0.2])


def test_step_decay_with_warmup_and_floor():
    opt = _opt(1.0)
    lrs = _lrs(create_scheduler(opt, "step", max_epochs=20, step_size=3, gamma=0.5), opt, 10)
    assert lrs == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125])
    opt = _opt(1.0)
    lrs = _lrs(create_scheduler(opt, "step", max_epochs=20, warmup_epochs=2, step_size=3, gamma=0.5, min_lr=0.3), opt, 10)
    assert lrs == pytest.approx([0.5, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.3, 0.3])
    opt = _opt(1.0)  # per step: step_size is in epochs
    lrs = _lrs(create_scheduler(opt, "step", max_epochs=20, step_size=1, gamma=0.1, steps_per_epoch=2), opt, 5)
    assert lrs == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_constant_with_warmup():
    opt = _opt(2.0)
    lrs = _lrs(create_scheduler(opt, "Constant", max_epochs=10, warmup_epochs=4), opt, 7)
    assert lrs == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0])


def test_min_lr_is_absolute_per_group():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    sched = create_scheduler(opt, "cosine", max_epochs=4, min_lr=0.01)
    for _ in range(4):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.01])


def test_plateau():
    opt = _opt(1.0)
    sched = create_scheduler(opt, "plateau", gamma=0.5, patience=1, min_lr=0.2)
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) and sched.jepa_interval == "epoch"
    lrs = []
    for metric in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]:
        sched.step(metric)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2])
    with pytest.raises(ValueError, match="warmup_epochs=2 is not supported with scheduler_type='plateau'"):
        create_scheduler(_opt(), "plateau", warmup_epochs=2)


@pytest.mark.parametrize("kind", ["cosine", "linear", "step", "constant"])
def test_state_dict_round_trip(kind):
    opt = _opt(1.0)
    sched = create_scheduler(opt, kind, max_epochs=10, warmup_epochs=2, min_lr=0.05, step_size=2, gamma=0.5)
    _lrs(sched, opt, 5)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = _opt(1.0)
    sched2 = create_scheduler(opt2, kind, max_epochs=3, warmup_epochs=0, min_lr=0.0, step_size=1, gamma=0.9)  # other settings
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert _lrs(sched2, opt2, 8) == pytest.approx(_lrs(sched, opt, 8))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"scheduler_type": "exponential"}, "unknown scheduler_type 'exponential'; expected one of cosine, linear, step, constant, plateau"),
        ({"max_epochs": 0}, "max_epochs must be an int > 0, got 0"),
        ({"warmup_epochs": 11}, r"warmup_epochs must be an int in \[0, max_epochs=10\], got 11"),
        ({"warmup_epochs": -1}, "warmup_epochs must be an int"),
        ({"min_lr": -1e-6}, "min_lr must be a number >= 0, got -1e-06"),
        ({"min_lr": 2.0}, r"min_lr=2.0 exceeds the lr 1.0 of optimizer.param_groups\[0\]"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be None or an int > 0, got 0"),
        ({"step_size": 0}, "step_size must be None or an int > 0, got 0"),
        ({"gamma": 0.0}, r"gamma must be a number in \(0, 1\], got 0.0"),
        ({"patience": -1}, "patience must be an int >= 0, got -1"),
    ],
)
def test_scheduler_errors(kwargs, match):
    kwargs = {"max_epochs": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        create_scheduler(_opt(1.0), **kwargs)
