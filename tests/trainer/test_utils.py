import logging

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from jepa.trainer.utils import (
    count_parameters,
    create_data_splits,
    get_device_info,
    load_training_config,
    log_model_summary,
    plot_training_history,
    save_training_config,
    setup_reproducibility,
)


def test_count_parameters_by_hand():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # 3*4+4 + 4*2+2 = 26
    assert count_parameters(model) == 26
    model[0].requires_grad_(False)
    assert count_parameters(model) == 10 and count_parameters(model, trainable_only=False) == 26
    tied = nn.Sequential(model[1], model[1])
    assert count_parameters(tied) == 10


def test_plot_training_history_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "h.png"
    plot_training_history({"train_loss": [3, 2, 1], "val_loss": [3.5, 2.5, 1.5], "lr": [1e-3, 5e-4, 1e-4]}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="loss"):
        plot_training_history({"lr": [1.0]}, tmp_path / "x.png")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_training_config_round_trip(tmp_path, suffix):
    cfg = {"training": {"epochs": 3, "learning_rate": 1e-4, "betas": [0.9, 0.99]}, "name": "run"}
    path = save_training_config(cfg, tmp_path / f"c{suffix}")
    assert load_training_config(path) == cfg


def test_training_config_round_trip_of_typed_config(tmp_path):
    from jepa.config import Config, config_from_dict

    cfg = Config()
    cfg.training.epochs = 7
    loaded = load_training_config(save_training_config(cfg, tmp_path / "c.yaml"))
    assert config_from_dict(loaded) == cfg


def test_training_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.yaml"):
        save_training_config({}, tmp_path / "c.txt")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="not valid"):
        load_training_config(bad)
    with pytest.raises(FileNotFoundError):
        load_training_config(tmp_path / "missing.yaml")


def test_create_data_splits_disjoint_and_seeded():
    ds = TensorDataset(torch.arange(100))
    tr, va, te = create_data_splits(ds, 0.7, 0.2, 0.1, seed=1)
    assert (len(tr), len(va), len(te)) == (70, 20, 10)
    idx = set(tr.indices) | set(va.indices) | set(te.indices)
    assert idx == set(range(100))
    tr2, _, _ = create_data_splits(ds, 0.7, 0.2, 0.1, seed=1)
    assert tr.indices == tr2.indices
    assert create_data_splits(ds, 0.7, 0.2, 0.1, seed=2)[0].indices != tr.indices
    with pytest.raises(ValueError, match="sum"):
        create_data_splits(ds, 0.8, 0.3)
    with pytest.raises(ValueError, match="empty"):
        create_data_splits(TensorDataset(torch.zeros(0)))


def test_setup_reproducibility_repeats_draws():
    import random

    import numpy as np

    setup_reproducibility(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    setup_reproducibility(5)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    with pytest.raises(ValueError, match="seed"):
        setup_reproducibility(-1)


def test_get_device_info_reports_this_process():
    info = get_device_info()
    assert info["torch_version"] == torch.__version__
    assert info["cuda_available"] == torch.cuda.is_available()
    assert "torch" in info["jepa_backends"]


def test_log_model_summary_lists_modules(caplog):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with caplog.at_level(logging.INFO, logger="jepa"):
        text = log_model_summary(model)
    assert "Linear" in text and "16" in text and "total: 16 parameters" in text
    assert "model summary" in caplog.text


def test_plot_training_history_without_matplotlib_says_what_to_install(monkeypatch, tmp_path):
    import sys  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as where it is not installed
    with pytest.raises(ImportError, match=r"matplotlib \(a dependency of jepa-torch\): pip install matplotlib$"):
        plot_training_history({"train_loss": [1.0]}, tmp_path / "h.png")
