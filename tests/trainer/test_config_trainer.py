import pytest

from jepa.config import load_config
from jepa.trainer import JEPATrainer


def _cfg(tmp_path, **training):
    cfg = load_config("quick")
    cfg.training.epochs = 2
    cfg.logging.output_dir = str(tmp_path)
    cfg.logging.progress_bar = False
    for k, v in training.items():
        setattr(cfg.training, k, v)
    return cfg


def test_config_optimizer_and_scheduler_types_are_used(tmp_path):
    import torch

    cfg = _cfg(tmp_path)
    cfg.training.optimizer.type = "sgd"
    cfg.training.scheduler.type = "step"
    trainer = JEPATrainer(cfg)
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    trainer.train()
    assert trainer.scheduler_interval == "step"  # create_scheduler told the trainer how it steps
    assert trainer.current_lr() < cfg.training.learning_rate


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("optimizer", "type"), "adamx", "training.optimizer.type"),
        (("scheduler", "type"), "cosin", "training.scheduler.type"),
        ((None, "learning_rate"), -1.0, "training.learning_rate"),
        ((None, "batch_size"), 0, "training.batch_size"),
        ((None, "batch_size"), 100_000, "larger than the training set"),
    ],
)
def test_bad_training_config_fails_before_training(tmp_path, path, value, message):
    cfg = _cfg(tmp_path)
    section, key = path
    setattr(getattr(cfg.training, section) if section else cfg.training, key, value)
    with pytest.raises(ValueError, match=message):
        JEPATrainer(cfg)


def test_validation_patience_adds_early_stopping_and_logger_writes_csv(tmp_path):
    from jepa.trainer.callbacks import EarlyStopping

    cfg = _cfg(tmp_path)
    cfg.training.validation.patience = 1
    cfg.logging.loggers = ["csv"]
    trainer = JEPATrainer(cfg)
    assert any(isinstance(cb, EarlyStopping) and cb.patience == 1 for cb in trainer.callbacks)
    trainer.train()
    trainer.logger.close()
    text = (tmp_path / "logs" / "metrics.csv").read_text()
    assert "train/loss" in text and "val/loss" in text
