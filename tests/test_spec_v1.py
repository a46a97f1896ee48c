"""Every example of the training API (docs/training-api/v1.md; the page's own code blocks run in
tests/docs/test_doc_examples.py), run as written (real data in place of `...`)."""

import math
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import TensorDataset


def _pairs(n=96, t=4, d=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, t, d, generator=g)
    return TensorDataset(x, x + 0.1 * torch.randn(n, t, d, generator=g))


def test_creating_a_trainer_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # --- as in the doc ---
    import torch  # noqa: F811
    from torch.utils.data import DataLoader

    from jepa.models import JEPA
    from jepa.models.encoder import Encoder
    from jepa.models.predictor import Predictor
    from jepa.trainer import create_trainer

    encoder = Encoder(hidden_dim=256)
    predictor = Predictor(hidden_dim=256)
    model = JEPA(encoder=encoder, predictor=predictor)

    train_dataset = _pairs()  # yields (state_t, state_t1) pairs
    train_loader = DataLoader(train_dataset, batch_size=64, shuffle=True)

    trainer = create_trainer(model, learning_rate=5e-4)
    history = trainer.train(train_loader, num_epochs=2)  # the doc uses 50; same code path
    # --- effect ---
    assert len(history["train_loss"]) == 2 and all(torch.isfinite(torch.tensor(history["train_loss"])))
    assert isinstance(trainer.optimizer, torch.optim.AdamW)

    # Saving and loading checkpoints
    trainer.save_checkpoint("checkpoint_epoch_10.pt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    trainer.load_checkpoint("checkpoint_epoch_10.pt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    # HuggingFace-style helpers
    model.save_pretrained("artifacts/jepa-small")
    restored = JEPA.from_pretrained("artifacts/jepa-small", encoder=encoder, predictor=predictor)
    restored.eval()
    assert all(torch.equal(before[k], v) for k, v in restored.state_dict().items())

    # Evaluator
    from jepa.trainer.eval import JEPAEvaluator

    test_loader = DataLoader(_pairs(32), batch_size=16)
    evaluator = JEPAEvaluator.from_checkpoint("checkpoints/best_model.pt")
    metrics = evaluator.evaluate(test_loader)
    assert {"loss", "mse", "cosine_similarity"} <= set(metrics)


def test_for_full_control_instantiate_jepatrainer_directly(tmp_path):
    import logging

    from torch.utils.data import DataLoader

    from jepa.models import JEPA
    from jepa.models.encoder import Encoder
    from jepa.models.predictor import Predictor
    from jepa.trainer import JEPATrainer

    model = JEPA(encoder=Encoder(hidden_dim=32, num_layers=1), predictor=Predictor(hidden_dim=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    trainer = JEPATrainer(model, optimizer, scheduler=scheduler, logger=logging.getLogger("test"), save_dir=tmp_path, progress_bar=False)
    history = trainer.train(DataLoader(_pairs(32, 3, 32), batch_size=8), num_epochs=3)
    # lr used in each epoch of a per-epoch cosine over 3 epochs, then 0 after the last step
    assert history["lr"] == pytest.approx([1e-3, 0.75e-3, 0.25e-3])
    assert trainer.current_lr() == pytest.approx(0.0, abs=1e-12)


def test_distributed_example_single_process_group(monkeypatch, tmp_path):
    """The documented call under a 1-process torchrun environment: a real gloo group, DDP, training.
    (2-process runs under torchrun are in tests/trainer/test_distributed.py.)"""
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, TensorDataset

    from jepa.models import JEPA
    from jepa.models.encoder import Encoder
    from jepa.models.predictor import Predictor
    from jepa.trainer import create_trainer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    model = JEPA(encoder=Encoder(hidden_dim=32, num_layers=1), predictor=Predictor(hidden_dim=32))
    trainer = create_trainer(
        model,
        distributed=True,
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        save_dir=tmp_path,
        progress_bar=False,
    )
    try:
        assert dist.is_initialized() and trainer.dist.world_size == 1 and trainer.is_global_zero
        assert isinstance(trainer._ddp, DistributedDataParallel)
        x = torch.randn(12, 4, 32)
        history = trainer.train(DataLoader(TensorDataset(x, x.roll(1, dims=1)), batch_size=4), num_epochs=1)
        assert len(history["train_loss"]) == 1 and math.isfinite(history["train_loss"][0])
        assert (tmp_path / "last.pt").is_file()
    finally:
        trainer.close()
    assert not dist.is_initialized()


def test_automodule_members_exist():
    import jepa.trainer
    import jepa.trainer.eval
    import jepa.trainer.utils

    for name in ("JEPATrainer", "JEPAEvaluator", "create_trainer"):
        assert callable(getattr(jepa.trainer, name))
    assert callable(jepa.trainer.eval.JEPAEvaluator)
    for name in (
        "count_parameters",
        "plot_training_history",
        "save_training_config",
        "load_training_config",
        "create_data_splits",
        "setup_reproducibility",
        "get_device_info",
        "log_model_summary",
    ):
        fn = getattr(jepa.trainer.utils, name)
        assert callable(fn) and fn.__doc__


def test_python_m_jepa_cli_runs():
    out = subprocess.run([sys.executable, "-m", "jepa.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "train" in out.stdout
