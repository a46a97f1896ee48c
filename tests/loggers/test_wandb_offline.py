"""WandbLogger against the real wandb package in offline mode (no network, no account)."""

from __future__ import annotations

import pytest

wandb = pytest.importorskip("wandb")

from jepa.config.config import Config  # noqa: E402
from jepa.loggers import WandbLogger, create_logger  # noqa: E402


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Every file wandb writes (runs, cache, settings) under tmp_path; offline, quiet."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (("WANDB_DIR", "wandb-dir"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def test_metrics_and_hyperparameters_reach_the_offline_run(offline):
    lg = WandbLogger("jepa-tests", name="offline-run", save_dir=offline / "wb", config={"lr": 1e-3, "model": {"depth": 2}})
    run = lg.run
    assert run.offline and run.name == "offline-run" and run.project == "jepa-tests"
    lg.log_metrics({"train/loss": 0.654321, "lr": 1e-3}, 7)
    lg.log_metrics({"train/loss": 0.123457}, 8)
    lg.log_hyperparams({"batch_size": 8})
    # wandb commits a step's row when a later step arrives (the last one at finish)
    assert run.summary["train/loss"] == 0.654321 and run.summary["lr"] == 1e-3
    assert run.config["lr"] == 1e-3 and run.config["model"] == {"depth": 2} and run.config["batch_size"] == 8
    lg.close()
    # the run was written under save_dir, as a .wandb file holding the logged keys and values
    files = list((offline / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    for needle in (b"train/loss", b"0.654321", b"0.123457", b"batch_size"):
        assert needle in data, needle


def test_trainer_config_builds_a_real_offline_run(offline):
    cfg = Config()
    cfg.logging.output_dir = str(offline / "run")
    cfg.logging.loggers = ["wandb"]
    cfg.logging.wandb_project = "jepa-tests"
    lg = create_logger(cfg)
    try:
        assert isinstance(lg, WandbLogger) and lg.run.offline
        assert lg.run.config["training"]["learning_rate"] == cfg.training.learning_rate
        lg.log_metrics({"val/loss": 1.5}, 0)
        lg.log_metrics({"val/loss": 1.25}, 1)
        assert lg.run.summary["val/loss"] == 1.5
    finally:
        lg.close()
    assert list((offline / "run" / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
