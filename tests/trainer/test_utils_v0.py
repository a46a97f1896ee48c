"""The v0 training helpers of jepa.trainer.utils (docs/training-api/v0.md, "Training utilities")."""

import io
import logging
import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from jepa import io as jio
from jepa.config import Config
from jepa.models import JEPA, Encoder, Predictor
from jepa.trainer import create_trainer
from jepa.trainer.optimizers import param_groups
from jepa.trainer.utils import (
    compute_metrics,
    get_best_checkpoint,
    load_checkpoint,
    log_metrics,
    save_checkpoint,
    setup_training,
    track_progress,
)


def _model(dim=16, seed=0):
    torch.manual_seed(seed)
    return JEPA(encoder=Encoder(hidden_dim=dim, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=dim))


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, 16, generator=g)
    return DataLoader(TensorDataset(x, x + 0.1 * torch.randn(16, 4, 16, generator=g)), batch_size=8, shuffle=False)


def _stepped(model, lr=1e-2):
    """An AdamW + StepLR pair that has taken one step (so both have non-trivial state)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    sum(p.sum() for p in model.parameters() if p.requires_grad).backward()
    opt.step()
    sched.step()
    return opt, sched


# ------------------------------------------------------------------ setup_training
def _small_config(seed=3):
    cfg = Config()
    cfg.model.hidden_dim, cfg.model.encoder_layers, cfg.model.num_heads = 16, 1, 2
    cfg.model.predictor_layers, cfg.model.projector_hidden_dim, cfg.model.projector_dim = 1, 0, 0
    cfg.training.batch_size, cfg.training.device, cfg.training.seed = 8, "cpu", seed
    return cfg


def test_setup_training_builds_device_model_loader_and_seeds():
    device, model, loader = setup_training(_small_config())
    assert device == torch.device("cpu")
    assert isinstance(model, JEPA) and all(p.device.type == "cpu" for p in model.parameters())
    assert loader.batch_size == 8 and loader.drop_last
    batch = next(iter(loader))
    s_t, s_t1 = batch[0], batch[-1]
    assert s_t.shape == s_t1.shape and s_t.shape[0] == 8
    assert model.encoder.config["input_dim"] == s_t.shape[-1] == loader.dataset.token_dim  # from the data
    _, again, _ = setup_training(_small_config())
    _assert_same_weights(model, again)  # same seed -> same init
    _, other, _ = setup_training(_small_config(seed=4))
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
    with pytest.raises(TypeError, match="config"):
        setup_training(42)


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("name", ["sub/dir/epoch_3.pth", "epoch_3.pt"])
def test_save_load_checkpoint_round_trip(tmp_path, name):
    model = _model(seed=0)
    opt, sched = _stepped(model)
    path = save_checkpoint(model, opt, sched, 3, torch.tensor(0.25), tmp_path / name)
    assert path == tmp_path / name and path.is_file()
    assert not list(path.parent.glob("*.tmp-*"))  # atomic write left no temporary behind
    state = jio.load(path)  # our format (safetensors layout), read by content
    assert {"model", "optimizer", "scheduler", "epoch", "loss", "model_class", "model_config"} <= set(state)
    assert state["epoch"] == 3 and state["loss"] == 0.25 and state["model_class"] == "JEPA"

    fresh = _model(seed=1)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    m, o, s, epoch = load_checkpoint(str(path), fresh, opt2, sched2)
    assert m is fresh and o is opt2 and s is sched2 and epoch == 3
    _assert_same_weights(model, fresh)
    assert opt2.param_groups[0]["lr"] == pytest.approx(5e-3) and sched2.last_epoch == 1
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_checkpoint_without_optimizer_and_scheduler(tmp_path):
    model = _model()
    path = save_checkpoint(model, None, None, 0, 1.5, tmp_path / "w.pt")
    state = jio.load(path)  # our format (safetensors layout), read by content
    assert "optimizer" not in state and "scheduler" not in state
    _, o, s, epoch = load_checkpoint(path, _model(seed=2))
    assert o is None and s is None and epoch == 0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="no optimizer state"):
        load_checkpoint(path, _model(seed=2), opt)
    plain = nn.Linear(3, 2)  # not a BaseModel: no class/config recorded, still loadable
    path = save_checkpoint(plain, None, None, 1, 0.0, tmp_path / "plain.pt")
    assert "model_class" not in jio.load(path)  # our format (safetensors layout), read by content
    other = nn.Linear(3, 2)
    load_checkpoint(path, other)
    _assert_same_weights(plain, other)


def test_checkpoint_errors(tmp_path):
    model = _model()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt", model)
    path = save_checkpoint(model, None, None, 1, 0.5, tmp_path / "a.pt")
    bigger = _model(dim=32)
    with pytest.raises(ValueError, match=r"shape mismatch for '[^']+': checkpoint has \(.*\), model has \(.*\)"):
        load_checkpoint(path, bigger)
    with pytest.raises(ValueError, match="epoch"):
        save_checkpoint(model, None, None, -1, 0.5, tmp_path / "b.pt")
    with pytest.raises(TypeError, match="model"):
        save_checkpoint("not a model", None, None, 1, 0.5, tmp_path / "b.pt")
    with pytest.raises(TypeError, match="loss"):
        save_checkpoint(model, None, None, 1, "low", tmp_path / "b.pt")
    with pytest.raises(TypeError, match="optimizer"):
        load_checkpoint(path, model, optimizer=object())


def test_utils_and_trainer_checkpoints_are_interchangeable(tmp_path):
    loader = _loader()
    trainer = create_trainer(_model(seed=0), learning_rate=1e-3, device="cpu", save_dir=tmp_path / "t", progress_bar=False)
    trainer.train(loader, num_epochs=1)
    trainer_path = trainer.save_checkpoint("trainer.pt")

    # trainer -> utils: weights, optimizer state and epoch come back
    fresh = _model(seed=5)
    opt = torch.optim.AdamW(param_groups(fresh, 0.05), lr=1e-3)  # the trainer's group layout
    _, opt, _, epoch = load_checkpoint(trainer_path, fresh, opt)
    assert epoch == trainer.current_epoch == 1
    _assert_same_weights(trainer.model, fresh)
    assert len(opt.state) == len(trainer.optimizer.state) > 0

    # utils -> trainer: a resumable state the trainer accepts
    model = _model(seed=7)
    save_checkpoint(model, trainer.optimizer, trainer.scheduler, 4, 0.125, tmp_path / "utils.pth")
    other = create_trainer(_model(seed=8), learning_rate=1e-3, device="cpu", save_dir=tmp_path / "o", progress_bar=False)
    other.load_checkpoint(tmp_path / "utils.pth")
    assert other.current_epoch == 4
    _assert_same_weights(model, other.model)


def test_get_best_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        get_best_checkpoint(tmp_path, mode="lowest")
    assert get_best_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="nope"):
        get_best_checkpoint(tmp_path / "nope")
    model = nn.Linear(2, 2)
    for epoch, loss in ((1, 0.9), (2, 0.3), (3, 0.6)):
        save_checkpoint(model, None, None, epoch, loss, tmp_path / f"epoch_{epoch}.pth")
    torch.save({"model": {}, "best_loss": 0.45}, tmp_path / "trainer_style.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.warns(UserWarning, match="broken.pt"):
        assert get_best_checkpoint(tmp_path) == tmp_path / "epoch_2.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_best_checkpoint(tmp_path, mode="max") == tmp_path / "epoch_1.pth"
        (tmp_path / "epoch_2.pth").unlink()
        assert get_best_checkpoint(tmp_path) == tmp_path / "trainer_style.pt"  # reads "best_loss" too


# ------------------------------------------------------------------ metrics
def test_compute_metrics_against_hand_values():
    p = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    # diff = [0, 2, 0, 2]; targets mean 1.5, SS_tot = 0.25 + 2.25 + 2.25 + 0.25 = 5, SS_res = 8
    m = compute_metrics(p, t, ["mse", "mae", "rmse", "r2", "smooth_l1", "cosine_sim", "correlation"])
    assert m["mse"] == pytest.approx(2.0)
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(2.0))
    assert m["r2"] == pytest.approx(1 - 8 / 5)
    assert m["smooth_l1"] == pytest.approx((0 + 1.5 + 0 + 1.5) / 4)  # |d|=2 > beta=1: |d| - 0.5
    # rows: cos([1,2],[1,0]) = 1/sqrt(5); cos([3,4],[3,2]) = 17/(5*sqrt(13))
    assert m["cosine_sim"] == pytest.approx((1 / math.sqrt(5) + 17 / (5 * math.sqrt(13))) / 2)
    # Pearson of [1,2,3,4] vs [1,0,3,2]: centred [-1.5,-.5,.5,1.5] . [-.5,-1.5,1.5,.5] = 3; norms sqrt(5)*sqrt(5)
    assert m["correlation"] == pytest.approx(3 / 5)
    assert all(type(v) is float for v in m.values())
    assert set(compute_metrics(p, t)) == {"mse", "mae", "cosine_sim"}
    assert compute_metrics(p, p, "r2") == {"r2": 1.0}
    assert math.isnan(compute_metrics(p, torch.ones(2, 2), ["r2"])["r2"])


def test_compute_metrics_errors():
    with pytest.raises(ValueError, match=r"unknown metric_types \['accuracy'\].*mse.*correlation"):
        compute_metrics(torch.zeros(2), torch.zeros(2), ["mse", "accuracy"])
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3, 2\)"):
        compute_metrics(torch.zeros(2, 3), torch.zeros(3, 2))


# ------------------------------------------------------------------ logging and progress
def test_log_metrics_to_logging_logger_default_and_custom(caplog):
    with caplog.at_level(logging.INFO, logger="jepa"):
        values = log_metrics({"loss": torch.tensor(0.5), "lr": 1e-3}, step=7)
    assert values == {"loss": 0.5, "lr": 1e-3}
    assert "step 7: loss=0.5, lr=0.001" in caplog.messages

    custom = logging.getLogger("jepa.test_utils_v0")
    with caplog.at_level(logging.INFO, logger="jepa.test_utils_v0"):
        log_metrics({"acc": 1}, step=2, logger=custom)
    assert caplog.records[-1].name == "jepa.test_utils_v0" and caplog.records[-1].getMessage() == "step 2: acc=1"

    class Backend:
        def __init__(self):
            self.calls = []

        def log_metrics(self, metrics, step):
            self.calls.append((metrics, step))

    backend = Backend()
    log_metrics({"loss": torch.tensor(2.0)}, 3, logger=backend)
    assert backend.calls == [({"loss": 2.0}, 3)] and type(backend.calls[0][0]["loss"]) is float
    with pytest.raises(TypeError, match="logger"):
        log_metrics({"loss": 1.0}, 1, logger="console")
    with pytest.raises(TypeError, match="step"):
        log_metrics({"loss": 1.0}, "1")


def test_track_progress(capsys):
    items = list(range(5))
    bar = track_progress(items, desc="epochs", disable=True)
    assert list(bar) == items
    bar.close()
    assert capsys.readouterr().err == ""
    bar = track_progress(iter(items), total=5, desc="epochs", mininterval=0)
    assert list(bar) == items
    bar.close()
    assert "epochs" in capsys.readouterr().err
    sink = io.StringIO()
    manual = track_progress(total=3, desc="manual", file=sink)  # no iterable: a bar updated by hand
    manual.update(2)
    assert manual.n == 2 and manual.total == 3
    manual.close()
    assert "manual" in sink.getvalue() and capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="total"):
        track_progress(items, total=-1)
