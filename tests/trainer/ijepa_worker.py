"""Worker for tests/trainer/test_ijepa_runs.py: I-JEPA trained from a config on a generated image
folder, with masks drawn in a DataLoader worker.

    python tests/trainer/ijepa_worker.py full|crash|resume <out_dir> <image_folder>
    python -m torch.distributed.run --nproc_per_node=2 tests/trainer/ijepa_worker.py ddp <out_dir> <image_folder>

full    train EPOCHS epochs with a latest.pt every EVERY_N_STEPS steps; write the weights and history
crash   the same, SIGKILLed right after optimizer step KILL_AT_STEP (mid-epoch)
resume  continue the crashed run from latest.pt in a new process, then write like full
ddp     one optimizer step per rank on 2 processes (gloo, SGD, constant lr, VC regularizer on the
        gathered projection); write the rank's batch, its masks and the weights before and after
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

EPOCHS, EVERY_N_STEPS, KILL_AT_STEP, BATCH = 2, 3, 7, 8  # 40 images / 8 = 5 steps per epoch


def config(folder: str, out: Path, **overrides):
    from jepa.config import config_from_dict

    cfg = {
        "model": {"arch": "vit_tiny", "patch_size": 4, "vit": {"embed_dim": 32, "depth": 1, "num_heads": 2,
                  "predictor_embed_dim": 16, "predictor_depth": 1}, "projector_hidden_dim": 0, "projector_dim": 0},
        "loss": {"var_weight": 0.0, "cov_weight": 0.0},
        "data": {"dataset": "image_folder", "path": folder, "image_size": 16, "num_workers": 1, "flip": True,
                 "masks": {"num_targets": 2, "min_keep": 2}},
        "training": {"epochs": EPOCHS, "batch_size": BATCH, "device": "cpu", "seed": 3, "weight_decay_end": 0.2},
        "logging": {"output_dir": str(out), "progress_bar": False, "loggers": [], "collapse_check_every_n_steps": 0},
    }
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        cfg.setdefault(section, {})[name] = value
    return config_from_dict(cfg)


def write(trainer, out: Path, started) -> None:
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, out / "weights.pt")
    (out / "result.json").write_text(json.dumps({"history": trainer.history, "global_step": trainer.global_step, "started": started}))


def train(mode: str, out: Path, folder: str) -> None:
    from jepa.trainer import JEPATrainer
    from jepa.trainer.callbacks import BaseCallback

    class Kill(BaseCallback):
        def on_batch_end(self, trainer, model, outputs, batch, batch_idx):
            if trainer.global_step == KILL_AT_STEP:
                os.kill(os.getpid(), signal.SIGKILL)

    out.mkdir(parents=True, exist_ok=True)
    trainer = JEPATrainer(config(folder, out), checkpoint_every_n_steps=EVERY_N_STEPS, save_dir=str(out / "ckpt"),
                          callbacks=[Kill()] if mode == "crash" else [])
    started = None
    if mode == "resume":
        trainer.load_checkpoint(out / "ckpt" / "latest.pt")
        started = {"step": trainer.global_step, "epoch": trainer.current_epoch}
    trainer.train()
    write(trainer, out, started)


def ddp(out: Path, folder: str) -> None:
    import torch.distributed as dist

    from jepa.trainer import JEPATrainer
    from jepa.trainer.callbacks import BaseCallback

    class Record(BaseCallback):
        def on_batch_start(self, trainer, model, batch, batch_idx):
            rank = dist.get_rank()
            torch.save({k: v.clone() for k, v in batch.items()}, out / f"batch_rank{rank}.pt")
            torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / f"before_rank{rank}.pt")

    cfg = config(folder, out, **{
        "training.epochs": 1, "training.batch_size": 4, "training.learning_rate": 0.5, "training.weight_decay": 0.0,
        "training.weight_decay_end": None, "training.optimizer": {"type": "sgd"}, "training.scheduler": {"type": "constant"},
        "loss.var_weight": 1.0, "loss.cov_weight": 1.0, "model.projector_hidden_dim": 16, "model.projector_dim": 8,
    })
    trainer = JEPATrainer(cfg, distributed=True, callbacks=[Record()], save_dir=str(out / "ckpt"))
    loader = trainer.train_loader  # 8 images, 4 per rank: one optimizer step
    trainer.train()
    rank = dist.get_rank()
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, out / f"after_rank{rank}.pt")
    info = {"rank": rank, "sampler": type(loader.sampler).__name__, "workers": loader.num_workers,
            "steps": trainer.global_step, "model_config": trainer.model.config}
    (out / f"info_rank{rank}.json").write_text(json.dumps(info))
    trainer.close()


if __name__ == "__main__":
    mode, out, folder = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if mode == "ddp":
        ddp(out, folder)
    else:
        train(mode, out, folder)
