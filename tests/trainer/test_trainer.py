import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from jepa.models import JEPA, Encoder, Predictor
from jepa.trainer import JEPALoss, JEPATrainer, create_trainer
from jepa.trainer.eval import JEPAEvaluator


def _model(dim=16):
    return JEPA(encoder=Encoder(hidden_dim=dim, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=dim))


def _trainer(tmp_path, model=None, **kw):
    kw.setdefault("progress_bar", False)
    return create_trainer(model or _model(), learning_rate=1e-3, device="cpu", save_dir=tmp_path, **kw)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_train_reduces_loss_and_returns_history(tmp_path, pair_loader):
    trainer = _trainer(tmp_path)
    history = trainer.train(pair_loader, num_epochs=4, val_loader=pair_loader)
    assert len(history["train_loss"]) == 4 and len(history["val_loss"]) == 4 and len(history["lr"]) == 4
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert (tmp_path / "best_model.pt").is_file() and (tmp_path / "last.pt").is_file()


def test_fused_adamw_and_cosine_schedule_sized_to_real_steps(tmp_path, pair_loader):
    trainer = _trainer(tmp_path, warmup_fraction=0.0)
    assert trainer.optimizer.defaults.get("fused") is True
    trainer.train(pair_loader, num_epochs=2)
    steps = 2 * len(pair_loader)
    assert trainer.global_step == steps
    # at the end of a cosine over exactly `steps` steps the lr reaches min_lr_ratio * base
    assert trainer.current_lr() == pytest.approx(1e-3 * 0.01, rel=1e-6)
    no_decay = [g for g in trainer.optimizer.param_groups if g["weight_decay"] == 0.0]
    assert no_decay and all(p.ndim <= 1 or p.shape[0] == 1 for p in no_decay[0]["params"])


def test_ema_updated_once_per_optimizer_step_under_accumulation(tmp_path, pair_loader):
    trainer = _trainer(tmp_path, gradient_accumulation=2)
    trainer.train(pair_loader, num_epochs=1)
    expected = math.ceil(len(pair_loader) / 2)
    assert trainer.global_step == expected
    assert int(trainer.model.ema_step) == expected
    assert int(trainer.model.ema_total_steps) == expected


def test_gradient_accumulation_equals_big_batch(tmp_path):
    torch.manual_seed(3)
    x, y = torch.randn(32, 4, 16), torch.randn(32, 4, 16)
    results = []
    for bs, accum in ((32, 1), (16, 2)):
        torch.manual_seed(0)
        model = _model()
        loader = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=False)
        # the regularizer uses batch statistics, so compare the pure prediction loss
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        t = JEPATrainer(model, opt, device="cpu", loss_fn=JEPALoss(var_weight=0, cov_weight=0), gradient_accumulation=accum, progress_bar=False, save_dir=tmp_path, save_best=False, save_last=False)
        t.train(loader, num_epochs=1)
        results.append(_weights(model))
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-4, atol=1e-6)


def test_training_step_loss_matches_hand_computation(tmp_path):
    import torch.nn.functional as F

    model = _model()
    trainer = _trainer(tmp_path, model=model, loss_fn=JEPALoss(var_weight=0.0, cov_weight=0.0))
    x, y = torch.randn(4, 3, 16), torch.randn(4, 3, 16)
    terms = trainer.training_step((x, y), 0)
    pred = model.predictor(model.encoder(x))
    target = F.layer_norm(model.target_encoder(y), (16,))
    torch.testing.assert_close(terms["loss"], F.smooth_l1_loss(pred, target))


def test_user_loss_fn_with_two_arguments(tmp_path, pair_loader):
    calls = []

    def mse(pred, target):
        calls.append(pred.shape)
        return torch.nn.functional.mse_loss(pred, target)

    trainer = _trainer(tmp_path, loss_fn=mse)
    trainer.train(pair_loader, num_epochs=1)
    assert len(calls) == len(pair_loader)


def test_checkpoint_round_trip_and_exact_resume(tmp_path, pair_loader):
    # An uninterrupted 3-epoch run that also writes epoch_<n>.pt checkpoints.
    torch.manual_seed(0)
    full = _trainer(tmp_path, model=_model(), checkpoint_every_n_epochs=1)
    torch.manual_seed(10)
    full.train(pair_loader, num_epochs=3)
    assert (tmp_path / "epoch_2.pt").is_file()
    # A new process would rebuild everything from scratch (other init, other RNG state), load the
    # epoch-2 checkpoint and continue: it must end exactly where the uninterrupted run ended.
    torch.manual_seed(123)
    resumed = _trainer(tmp_path / "r", model=_model())
    state = resumed.load_checkpoint(tmp_path / "epoch_2.pt")
    assert resumed.current_epoch == 2 and resumed.global_step == 2 * len(pair_loader)
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, state["model"][k]), k
    resumed.train(pair_loader, num_epochs=3)
    w_full, w_resumed = _weights(full.model), _weights(resumed.model)
    for k in w_full:
        assert torch.equal(w_full[k], w_resumed[k]), k
    assert resumed.history["train_loss"] == full.history["train_loss"]
    assert resumed.current_lr() == full.current_lr()


def test_evaluator_from_checkpoint_rebuilds_model_without_code(tmp_path, pair_loader):
    trainer = _trainer(tmp_path)
    trainer.train(pair_loader, num_epochs=1)
    pair_loader = DataLoader(pair_loader.dataset, batch_size=16, shuffle=False)
    evaluator = JEPAEvaluator.from_checkpoint(tmp_path / "best_model.pt", device="cpu")
    metrics = evaluator.evaluate(pair_loader)
    assert {"loss", "mse", "cosine_similarity", "effective_rank", "collapsed"} <= set(metrics)
    trainer.model.eval()
    ref = JEPAEvaluator(trainer.model, device="cpu").evaluate(pair_loader)
    assert metrics == pytest.approx(ref)
    emb = evaluator.encode(torch.randn(5, 5, 16))
    assert emb.shape == (5, 16)


def test_non_finite_loss_is_reported_with_step_and_weights_untouched(tmp_path):
    x = torch.randn(16, 3, 16)
    y = x.clone()
    x[8:] = float("nan")
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    trainer = _trainer(tmp_path)
    trainer.train(DataLoader(TensorDataset(x[:8], y[:8]), batch_size=8), num_epochs=1)
    before = _weights(trainer.model)
    trainer.current_epoch = 0
    with pytest.raises(FloatingPointError, match=r"step 2 \(epoch 0, batch 1\)"):
        trainer.train(loader, num_epochs=1)
    after = _weights(trainer.model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # batch 0 (finite) trained; then the NaN batch stopped training before any NaN reached the weights
    assert changed and all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


@pytest.mark.parametrize(
    "batch, err, msg",
    [
        (torch.randn(2, 3), TypeError, "tuple, list or dict"),
        ((torch.randn(2, 3, 16),), ValueError, "of 1 items"),
        ((torch.randn(2, 3, 16), torch.randn(2, 4, 16)), ValueError, "same shape"),
        ((torch.ones(2, 3, 16, dtype=torch.long), torch.ones(2, 3, 16, dtype=torch.long)), TypeError, "floating-point"),
        ({"a": torch.randn(2, 3, 16)}, ValueError, "state_t"),
    ],
)
def test_bad_batches_are_refused_with_clear_errors(tmp_path, batch, err, msg):
    trainer = _trainer(tmp_path)
    with pytest.raises(err, match=msg):
        trainer.training_step(batch, 0)


def test_bad_arguments(tmp_path, pair_loader):
    with pytest.raises(ValueError, match="num_epochs"):
        _trainer(tmp_path).train(pair_loader, num_epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        create_trainer(_model(), learning_rate=-1.0, device="cpu")
    with pytest.raises(ValueError, match="gradient_accumulation"):
        _trainer(tmp_path, gradient_accumulation=0)
    with pytest.raises(ValueError, match="empty"):
        _trainer(tmp_path).train(DataLoader(TensorDataset(torch.randn(3, 2, 16), torch.randn(3, 2, 16)), batch_size=4, drop_last=True), num_epochs=1)
    with pytest.raises(RuntimeError, match="torchrun"):  # no torchrun environment, no process group
        create_trainer(_model(), distributed=True, world_size=2, local_rank=0, device="cpu")
    with pytest.raises(FileNotFoundError):
        _trainer(tmp_path).load_checkpoint("nope.pt")


def test_user_scheduler_steps_per_epoch(tmp_path, pair_loader):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    trainer = JEPATrainer(model, opt, scheduler=sched, device="cpu", progress_bar=False, save_dir=tmp_path)
    history = trainer.train(pair_loader, num_epochs=3)
    assert history["lr"] == pytest.approx([1.0, 0.5, 0.25])
    assert trainer.current_lr() == pytest.approx(0.125)


def test_progress_bar_shows_loss_and_lr(tmp_path, pair_loader, capsys):
    trainer = _trainer(tmp_path, progress_bar=True, log_every_n_steps=1)
    trainer.train(pair_loader, num_epochs=1)
    err = capsys.readouterr().err
    assert "loss=" in err and "lr=" in err


def test_logger_receives_metrics(tmp_path, pair_loader):
    class Recorder:
        def __init__(self):
            self.rows = []

        def log_metrics(self, metrics, step):
            self.rows.append((step, metrics))

    rec = Recorder()
    trainer = _trainer(tmp_path, logger=rec, log_every_n_steps=1)
    trainer.train(pair_loader, num_epochs=1, val_loader=pair_loader)
    assert any("train/loss" in m for _, m in rec.rows) and any("val/loss" in m for _, m in rec.rows)
    assert [s for s, m in rec.rows if "train/loss" in m] == list(range(1, len(pair_loader) + 1))


def test_jepa_action_trains_on_triples(tmp_path):
    from jepa.models import JEPAAction

    model = JEPAAction(
        state_encoder=Encoder(hidden_dim=16, num_layers=1, num_heads=2),
        action_encoder=Predictor(hidden_dim=2, output_dim=16),
        predictor=Predictor(hidden_dim=16),
    )
    g = torch.Generator().manual_seed(0)
    s = torch.randn(32, 4, 16, generator=g)
    a = torch.randn(32, 2, generator=g)
    s1 = s + a.sum(dim=1, keepdim=True)[:, :, None]
    loader = DataLoader(TensorDataset(s, a, s1), batch_size=8)
    trainer = _trainer(tmp_path, model=model)
    before = model.action_encoder.net[0].weight.clone()
    history = trainer.train(loader, num_epochs=2)
    assert len(history["train_loss"]) == 2
    assert not torch.equal(before, model.action_encoder.net[0].weight)  # the action path is trained
    assert int(model.jepa.ema_step) == trainer.global_step == 8
