"""Run health during training: OnlineProbe's val_accuracy / val_knn_accuracy (metrics, logs, history),
ModelCheckpoint / EarlyStopping / best_model.pt following it, LiDAR and RankMe monitors with their
collapse warning, and the run report (recipe, best-model rule, monitors' last values)."""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import jepa.io as jio
from jepa.config import load_config
from jepa.models import JEPA, Encoder, Predictor
from jepa.trainer import JEPATrainer, create_trainer
from jepa.trainer.callbacks import CollapseMonitor, EarlyStopping, LiDAR, ModelCheckpoint, OnlineProbe, RankMe, labelled_data
from jepa.trainer.health import knn_accuracy, lidar, ridge_probe_accuracy


class Recorder:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step):
        self.logged.append((step, dict(metrics)))


def _config(tmp_path, epochs=2, **validation):
    cfg = load_config("default")
    cfg.training.epochs = epochs
    cfg.logging.output_dir = str(tmp_path)
    cfg.logging.progress_bar = False
    cfg.logging.loggers = []
    cfg.logging.collapse_check_every_n_steps = 0
    # the default recipe, smaller (seconds per test): the probe only needs a model that embeds digits
    cfg.model.hidden_dim, cfg.model.encoder_layers, cfg.model.projector_hidden_dim, cfg.model.projector_dim = 16, 1, 32, 32
    cfg.training.batch_size = 256
    for k, v in validation.items():
        setattr(cfg.training.validation, k, v)
    return cfg


def _probe_now(model, trainer, seed=0):
    """The probe's numbers recomputed here from the clean digits of both splits (its documented
    384-sample training subset)."""
    (xtr, ytr), (xva, yva) = labelled_data(trainer.train_loader.dataset), labelled_data(trainer.val_loader.dataset)
    keep = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))[:384].sort().values
    xtr, ytr = xtr[keep], ytr[keep]
    model.eval()
    with torch.no_grad():
        ztr, zva = model.embed(xtr), model.embed(xva)
    return ridge_probe_accuracy(ztr, ytr, zva, yva), knn_accuracy(ztr, ytr, zva, yva, 20)


def test_probe_is_on_by_default_and_adds_val_accuracy_to_metrics_logs_and_history(tmp_path):
    seen = []

    class Reads(EarlyStopping):  # any callback sees the probe's metrics in on_validation_end
        def on_validation_end(self, trainer, model, metrics):
            seen.append(dict(metrics))

    logger = Recorder()
    trainer = JEPATrainer(_config(tmp_path), callbacks=[Reads()], logger=logger)
    probes = [cb for cb in trainer.callbacks if isinstance(cb, OnlineProbe)]
    assert len(probes) == 1 and trainer.best_monitor == "val_accuracy" and trainer.best_mode == "max"
    history = trainer.train()
    assert len(history["val_accuracy"]) == len(history["val_knn_accuracy"]) == 2
    assert all(0.5 < a <= 1.0 for a in history["val_accuracy"]) and all(0.3 < a <= 1.0 for a in history["val_knn_accuracy"])  # chance: 0.1
    assert [m["val_accuracy"] for m in seen] == history["val_accuracy"]
    logged = {k for _, m in logger.logged for k in m}
    assert {"val/accuracy", "val/knn_accuracy", "val/loss"} <= logged
    # the last validation ran on the final weights: recomputing the probe here gives the same numbers
    assert (history["val_accuracy"][-1], history["val_knn_accuracy"][-1]) == pytest.approx(_probe_now(trainer.model, trainer), abs=1e-12)
    assert probes[0].records[-1]["seconds"] > 0


def test_best_model_pt_follows_the_probe_and_resumes_with_its_best(tmp_path):
    trainer = JEPATrainer(_config(tmp_path, epochs=3))
    history = trainer.train()
    accs = history["val_accuracy"]
    best = jio.load(tmp_path / "checkpoints" / "best_model.pt")
    assert best["best_monitor"] == ["val_accuracy", "max"] and "best_loss" not in best
    first_best = accs.index(max(accs))  # ties keep the first epoch that reached the best
    assert best["best_score"] == max(accs) == trainer.best_score and best["epoch"] == first_best + 1
    # the saved weights give that accuracy when probed again
    model = JEPATrainer(_config(tmp_path / "again", epochs=3)).model
    model.load_state_dict(best["model"])
    assert _probe_now(model, trainer)[0] == pytest.approx(max(accs), abs=1e-12)
    resumed = JEPATrainer(_config(tmp_path / "resumed", epochs=3))
    resumed.load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert resumed.best_score == max(accs)


def test_probe_cost_after_a_resume_counts_only_the_epochs_this_process_trained(tmp_path):
    from jepa.trainer.experiment import run_health

    JEPATrainer(_config(tmp_path, epochs=2)).train()
    resumed = JEPATrainer(_config(tmp_path, epochs=5))
    assert resumed.resume_from("auto") is not None
    resumed.train()
    assert len(resumed.history["train_loss"]) == 5  # the history spans both processes ...
    (probe,) = [cb for cb in resumed.callbacks if isinstance(cb, OnlineProbe)]
    assert len(probe.records) == 3  # ... the probe's records and the timed seconds only this one's 3 epochs
    cost = run_health(resumed, train_seconds=6.0)["probe_cost"]
    assert cost["epoch_seconds"] == pytest.approx(2.0)


def test_loss_monitor_without_probe_and_config_errors(tmp_path):
    trainer = JEPATrainer(_config(tmp_path, probe=False))
    assert not any(isinstance(cb, OnlineProbe) for cb in trainer.callbacks) and trainer.best_monitor == "loss"
    with pytest.raises(ValueError, match="training.validation.monitor='val_accuracy' needs the online probe"):
        JEPATrainer(_config(tmp_path, probe=False, monitor="val_accuracy"))
    with pytest.raises(ValueError, match="training.validation.monitor"):
        JEPATrainer(_config(tmp_path, monitor="accuracy"))
    stopper = JEPATrainer(_config(tmp_path, patience=2)).callbacks
    (es,) = [cb for cb in stopper if isinstance(cb, EarlyStopping)]
    assert (es.monitor, es.mode) == ("val_accuracy", "max")


def test_model_checkpoint_and_early_stopping_follow_val_accuracy(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "best", filename="probe-{epoch}-{val_accuracy:.4f}", monitor="val_accuracy", mode="max", save_top_k=2)
    stop = EarlyStopping(monitor="val_accuracy", mode="max", patience=1)
    trainer = JEPATrainer(_config(tmp_path, epochs=4), callbacks=[ckpt, stop])
    history = trainer.train()
    accs = history["val_accuracy"]
    expected_stop = next((i + 1 for i in range(1, len(accs)) if accs[i] <= max(accs[:i])), None)
    assert stop.stopped_epoch == expected_stop and len(accs) == (expected_stop or 4)
    kept = sorted(accs, reverse=True)[:2]
    assert [v for v, _ in ckpt.best_k] == kept and all(p.is_file() for _, p in ckpt.best_k)
    assert f"{kept[0]:.4f}" in ckpt.best_model_path.name


def _pairs(n=40, t=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, d, generator=g)
    return x, x + 0.1 * torch.randn(n, t, d, generator=g)


def test_explicit_labelled_data_on_a_plain_trainer_and_no_labels_no_metric(tmp_path):
    x, y = _pairs()
    labels = (x[:, 0, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    torch.manual_seed(0)
    model = JEPA(Encoder(hidden_dim=8, num_layers=1, num_heads=2, input_dim=6), Predictor(hidden_dim=8))
    probe = OnlineProbe(train_data=(x[:30], labels[:30]), val_data=(x[30:], labels[30:]), k=5)
    trainer = create_trainer(model, device="cpu", save_dir=tmp_path, progress_bar=False, callbacks=[probe], save_best="val_accuracy")
    history = trainer.train(loader, num_epochs=2, val_loader=loader)
    assert len(history["val_accuracy"]) == 2 and trainer.best_monitor == "val_accuracy"
    model.eval()
    with torch.no_grad():
        z = model.embed(x)
    assert history["val_accuracy"][-1] == ridge_probe_accuracy(z[:30], labels[:30], z[30:], labels[30:])
    assert history["val_knn_accuracy"][-1] == knn_accuracy(z[:30], labels[:30], z[30:], labels[30:], 5)
    # unlabelled pair loaders: the probe finds nothing and adds nothing
    silent = OnlineProbe()
    trainer = create_trainer(model, device="cpu", save_dir=tmp_path / "b", progress_bar=False, callbacks=[silent])
    history = trainer.train(loader, num_epochs=1, val_loader=loader)
    assert not silent.active and "val_accuracy" not in history


def test_labelled_data_finds_labels_in_datasets():
    class Folder(torch.utils.data.Dataset):  # an image-folder-like dataset: (image, int label) items
        def __init__(self, labels):
            self.labels = labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return torch.zeros(3, 4, 4), self.labels[i]

    assert labelled_data(Folder([0, 1, 1])) is not None
    assert labelled_data(Folder([-1, -1, -1])) is None  # unlabelled folder
    assert labelled_data(Folder([2, 2])) is None  # one class: nothing to probe
    assert labelled_data(TensorDataset(torch.zeros(3, 2), torch.zeros(3, 2))) is None


class _Const(nn.Module):
    """A collapsed encoder: every input maps to the same embedding."""

    def __init__(self, dim=16):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(dim))

    def forward(self, x):
        return self.bias.expand(*x.shape[:-1], -1) + 0 * x.sum(-1, keepdim=True)


class _Aug(torch.utils.data.Dataset):
    """An augmenting dataset drawing its views from the global RNG."""

    def __init__(self, n=12, t=4, d=16):
        self.base = torch.randn(n, t, d, generator=torch.Generator().manual_seed(3))

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        v = self.base[i] + 0.2 * torch.randn_like(self.base[i])
        return v, v


class _Trainer:
    def __init__(self, dataset, model):
        self.global_step, self.device, self.logged = 0, torch.device("cpu"), []
        self._active_val_loader = DataLoader(dataset, batch_size=4)
        self.model = model

    def _log(self, metrics, step):
        self.logged.append((step, metrics))


def test_lidar_matches_the_measure_on_its_views_and_warns_on_collapse():
    from jepa.trainer.fixed_views import sample_seed, seeded_rngs

    torch.manual_seed(0)
    healthy = JEPA(Encoder(hidden_dim=16, num_layers=1, num_heads=2), Predictor(hidden_dim=16))
    data = _Aug()
    mon, trainer = LiDAR(every_n_steps=2, num_samples=10, num_views=3), _Trainer(data, healthy)
    mon.on_train_start(trainer, healthy)
    views = []
    for i in range(10):
        for v in range(3):
            with seeded_rngs(sample_seed(v, i)):
                views.append(data[i][0])
    assert torch.equal(mon.views, torch.stack(views))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for step in (1, 2, 3, 4):
            trainer.global_step = step
            mon.on_batch_end(trainer, healthy, {}, None, 0)
    healthy.eval()
    with torch.no_grad():
        expected = lidar(healthy.embed(torch.stack(views)).reshape(10, 3, -1))
    assert [r["step"] for r in mon.records] == [2, 4] and mon.records[-1]["lidar"] == pytest.approx(expected)
    assert trainer.logged[-1] == (4, {"collapse/lidar": mon.records[-1]["lidar"]})

    collapsed = JEPA(_Const(16), nn.Identity())
    mon, trainer = LiDAR(every_n_steps=1, num_samples=10, num_views=3), _Trainer(data, collapsed)
    mon.on_train_start(trainer, collapsed)
    trainer.global_step = 7
    with pytest.warns(RuntimeWarning, match=r"collapse suspected at step 7: LiDAR .*Try: raise the regularizer weight.*lower the EMA momentum"):
        mon.on_batch_end(trainer, collapsed, {}, None, 0)
    mon.on_train_end(trainer, collapsed)  # this step was measured already: no second record
    assert len(mon.records) == 1


def test_rankme_is_the_collapse_monitor_and_its_warning_names_metric_step_and_remedies(tmp_path):
    assert RankMe is CollapseMonitor
    torch.manual_seed(0)
    model = JEPA(_Const(64), nn.Identity(), target_encoder="none")
    x, y = _pairs(n=80, d=64)
    loader = DataLoader(TensorDataset(x, y), batch_size=20)  # 20 held-out rows: the rank bound is 10% of 20
    from jepa.trainer.losses import JEPALoss

    trainer = create_trainer(model, device="cpu", save_dir=tmp_path, progress_bar=False, collapse_check_every_n_steps=3,
                             loss_fn=JEPALoss(regularizer="none", stop_gradient=False))
    with pytest.warns(RuntimeWarning, match=r"at step 3: RankMe effective rank .*add an anti-collapse regularizer.*lower the learning rate") as rec:
        trainer.train(loader, num_epochs=1)
    assert not any("EMA" in str(w.message) for w in rec)  # no EMA in this run: not suggested
    (mon,) = [cb for cb in trainer.callbacks if isinstance(cb, CollapseMonitor)]
    assert [r["step"] for r in mon.records] == [3, 4]  # every 3 steps, and the end of training


def test_run_report_names_recipe_best_rule_and_last_monitors(tmp_path):
    from jepa.trainer.experiment import run_health

    cfg = _config(tmp_path, epochs=1)
    cfg.logging.collapse_check_every_n_steps = 3
    cfg.model.target_encoder, cfg.loss.regularizer, cfg.loss.regularizer_weight = "none", "sigreg", 0.1
    cfg.loss.sigreg.num_slices = 64
    trainer = JEPATrainer(cfg)
    history = trainer.train()
    health = run_health(trainer)
    assert health["recipe"] == {"name": "LeJEPA-style", "target_encoder": "none", "regularizer": "sigreg", "regularizer_weight": 0.1}
    assert health["best_model"] == {"monitor": "val_accuracy", "mode": "max", "value": max(history["val_accuracy"])}
    mons = health["monitors"]
    assert mons["val_accuracy"] == history["val_accuracy"][-1] and mons["val_knn_accuracy"] == history["val_knn_accuracy"][-1]
    lid = [cb for cb in trainer.callbacks if isinstance(cb, LiDAR)][0]
    rank = [cb for cb in trainer.callbacks if isinstance(cb, CollapseMonitor)][0]
    assert mons["lidar"] == lid.records[-1]["lidar"] and lid.records[-1]["step"] == trainer.global_step
    width = 16 * 16  # the flattened 4x4 grid of 16-wide tokens (model.pool: flatten)
    assert mons["rankme"] == rank.records[-1]["effective_rank"] and 1 <= mons["rankme"] <= width and math.isfinite(mons["lidar"])
    # the probe's cost: its mean seconds per validation against the mean epoch of a timed run
    assert "probe_cost" not in health  # not timed: no cost
    (probe,) = [cb for cb in trainer.callbacks if isinstance(cb, OnlineProbe)]
    cost = run_health(trainer, train_seconds=8.0)["probe_cost"]
    mean = sum(r["seconds"] for r in probe.records) / len(probe.records)
    assert cost == pytest.approx({"probe_seconds": mean, "epoch_seconds": 8.0, "fraction_of_epoch": mean / 8.0})


def test_monitors_bound_ranks_by_the_samples_they_measure_when_embeddings_are_wider():
    """Flattened token grids (model.pool: flatten) are wider than the held-out batch: a healthy
    encoder must not be called collapsed for a rank the samples cannot exceed; a collapsed one still is."""
    torch.manual_seed(0)
    healthy = JEPA(Encoder(hidden_dim=16, num_layers=1, num_heads=2), Predictor(hidden_dim=16), pool="flatten")
    data = _Aug(n=12, t=8)  # 8 tokens x 16 = 128-wide embeddings of 12 samples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lid, trainer = LiDAR(every_n_steps=1, num_samples=12, num_views=3, rank_fraction=0.2), _Trainer(data, healthy)
        lid.on_train_start(trainer, healthy)
        trainer.global_step = 1
        lid.on_batch_end(trainer, healthy, {}, None, 0)
        rec = lid.records[-1]
        assert rec["embedding_dim"] == 128 and rec["max_rank"] == 11  # 12 samples: a discriminant of rank <= 11
        assert 0.2 * 11 <= rec["lidar"] < 0.2 * 128  # healthy for its samples, "collapsed" against the width
        mon = CollapseMonitor(every_n_steps=1, rank_fraction=0.3)
        mon.on_train_start(trainer, healthy)  # the loader's first batch: 4 samples
        mon.on_batch_end(trainer, healthy, {}, None, 0)
        rec = mon.records[-1]
        assert rec["max_rank"] == 4 and 0.3 * 4 <= rec["effective_rank"] < 0.3 * 128
    collapsed = JEPA(_Const(16), nn.Identity(), pool="flatten")
    mon = CollapseMonitor(every_n_steps=1, rank_fraction=0.3)
    trainer = _Trainer(data, collapsed)
    mon.on_train_start(trainer, collapsed)
    trainer.global_step = 5
    with pytest.warns(RuntimeWarning, match=r"at step 5: RankMe effective rank .*30% of 4, the most rank held-out samples allow \(128 dims\)"):
        mon.on_batch_end(trainer, collapsed, {}, None, 0)
