"""The table of bad inputs: each gets one clear error, and nothing is written.

Every row: what the user did, the exception type, a pattern its message must match. After each
failure the save directory must still be empty (no half-written checkpoint or log)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from jepa import io as jio
from jepa.config import ConfigError, load_config
from jepa.models import JEPA
from jepa.models.encoder import Encoder
from jepa.models.predictor import Predictor
from jepa.trainer import JEPATrainer, create_trainer
from jepa.trainer.losses import get_loss
from jepa.trainer.optimizers import create_optimizer
from jepa.trainer.schedulers import create_scheduler


def _model(dim=16):
    return JEPA(encoder=Encoder(hidden_dim=dim, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=dim))


def _trainer(save_dir, **kwargs):
    return create_trainer(_model(), device="cpu", save_dir=save_dir, progress_bar=False, **kwargs)


X = torch.randn(8, 4, 16, generator=torch.Generator().manual_seed(0))


def _train(save_dir, loader, epochs=1):
    return _trainer(save_dir).train(loader, num_epochs=epochs)


class ListOfTensors(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return X[i]


def _quick_config(tmp, **training):
    config = load_config("quick")
    config.logging.output_dir = str(tmp / "run")
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CASES = [
    ("batch is a bare tensor", lambda d: _train(d, DataLoader(ListOfTensors(), batch_size=4)), TypeError, r"batch must be a tuple, list or dict"),
    ("state_t / state_t1 shapes differ", lambda d: _train(d, DataLoader(TensorDataset(X, torch.randn(8, 5, 16)), batch_size=4)),
     ValueError, r"same shape, got \(4, 4, 16\) and \(4, 5, 16\)"),
    ("integer tensors", lambda d: _train(d, DataLoader(TensorDataset(X.long(), X.long()), batch_size=4)), TypeError, r"floating-point.*int64"),
    ("dict batch without state_t1", lambda d: _train(d, DataLoader([{"state_t": X[0]}] * 4, batch_size=2)), ValueError, r"keys 'state_t' and 'state_t1'"),
    ("empty dataset", lambda d: _train(d, DataLoader(TensorDataset(X[:0], X[:0]), batch_size=4)), ValueError, r"no batches: the dataset is empty"),
    ("batch_size > dataset with drop_last", lambda d: _train(d, DataLoader(TensorDataset(X, X), batch_size=16, drop_last=True)),
     ValueError, r"smaller than batch_size with drop_last"),
    ("learning rate 0", lambda d: _trainer(d, learning_rate=0.0), ValueError, r"learning_rate must be > 0, got 0"),
    ("negative learning rate", lambda d: _trainer(d, learning_rate=-1e-3), ValueError, r"learning_rate must be > 0"),
    ("epochs 0", lambda d: _train(d, DataLoader(TensorDataset(X, X), batch_size=4), epochs=0), ValueError, r"num_epochs must be an int >= 1, got 0"),
    ("config: batch_size 0", lambda d: JEPATrainer(_quick_config(d, batch_size=0)), ValueError, r"training.batch_size must be >= 1, got 0"),
    ("config: epochs -1", lambda d: JEPATrainer(_quick_config(d, epochs=-1)), ValueError, r"training.epochs must be >= 1, got -1"),
    ("config: learning_rate 0", lambda d: JEPATrainer(_quick_config(d, learning_rate=0.0)), ValueError, r"training.learning_rate must be > 0"),
    ("unknown optimizer", lambda d: create_optimizer(_model(), optimizer_type="adamz"), ValueError, r"'adamz'; expected one of adamw, adam, sgd"),
    ("unknown scheduler", lambda d: create_scheduler(torch.optim.SGD(_model().parameters(), lr=0.1), scheduler_type="cosinez"),
     ValueError, r"'cosinez'; expected one of cosine, linear"),
    ("unknown loss", lambda d: get_loss("msez"), ValueError, r"'msez'; expected one of contrastive, ijepa, infonce, jepa"),
    ("gradient_accumulation 0", lambda d: _trainer(d, gradient_accumulation=0), ValueError, r"gradient_accumulation must be an int >= 1"),
    ("missing checkpoint", lambda d: _trainer(d).load_checkpoint(d.parent / "nope.pt"), FileNotFoundError, r"checkpoint not found: .*nope.pt"),
    ("config file that is not YAML", lambda d: load_config(_write(d.parent / "bad.yaml", "a: [1, 2\n b: {")), ConfigError, r"bad.yaml.*not valid YAML"),
    ("config with an unknown key", lambda d: load_config(_write(d.parent / "typo.yaml", "training:\n  learning_rat: 0.1\n")),
     ConfigError, r"learning_rat.*did you mean.*learning_rate"),
]


@pytest.mark.parametrize("name, call, exc, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clear_error_and_writes_nothing(tmp_path, name, call, exc, pattern):
    save_dir = tmp_path / "ckpt"
    with pytest.raises(exc, match=pattern):
        call(save_dir)
    assert not save_dir.exists() or not any(save_dir.iterdir()), f"{name}: files written: {list(save_dir.iterdir())}"
    assert not (tmp_path / "run").exists()


def _saved_checkpoint(tmp_path) -> Path:
    trainer = _trainer(tmp_path / "src")
    return trainer.save_checkpoint(tmp_path / "good.pt")


def test_checkpoint_of_another_architecture_names_key_and_shapes(tmp_path):
    path = _saved_checkpoint(tmp_path)
    other = create_trainer(_model(dim=32), device="cpu", save_dir=tmp_path / "other", progress_bar=False)
    with pytest.raises(ValueError, match=r"good.pt.*'encoder\.[a-z_.0-9]+'.*\(.*16\).*\(.*32\)"):
        other.load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "foreign file", "empty file"])
def test_damaged_checkpoint_is_refused_by_name(tmp_path, damage):
    path = _saved_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped byte":
        data[len(data) - 100] ^= 0x40
    elif damage == "foreign file":
        data = bytearray(b"PK\x03\x04 this is a zip of something else" * 10)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    trainer = _trainer(tmp_path / "dst")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(jio.CheckpointError, match="good.pt"):
        trainer.load_checkpoint(path)
    # refused before anything was loaded
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loading_never_unpickles_untrusted_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Exploit(str(marker))}, path)
    with pytest.raises(jio.CheckpointError):
        jio.load(path)
    assert not marker.exists()
    # a YAML config cannot run code either (yaml.safe_load)
    cfg = _write(tmp_path / "evil.yaml", f"training: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_config(cfg)
    assert not marker.exists()
    assert pickle  # the exploit above is a real pickle payload
