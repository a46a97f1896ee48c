"""Worker of tests/trainer/test_resume.py: one training run in its own process.

    python tests/trainer/resume_worker.py <mode> <out_dir>

modes: full (uninterrupted), crash (SIGKILL right after optimizer step KILL_AT_STEP), resume
(resume="auto" from <out_dir>/ckpt and finish). Each finished run writes weights.pt and result.json.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

EPOCHS, EVERY_N_STEPS, KILL_AT_STEP = 3, 3, 7


class NoisyPairs(Dataset):
    """Pairs whose augmentation draws from the torch, numpy and python RNGs (all must be restored)."""

    def __init__(self, n: int = 40) -> None:
        g = torch.Generator().manual_seed(5)
        self.x = torch.randn(n, 6, 12, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        noisy = x + 0.1 * torch.randn_like(x) + float(np.random.uniform(-0.1, 0.1)) + random.uniform(-0.1, 0.1)
        return noisy, x.roll(1, dims=0)


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    from jepa.models import JEPA
    from jepa.models.encoder import Encoder
    from jepa.models.predictor import Predictor
    from jepa.trainer import create_trainer
    from jepa.trainer.callbacks import BaseCallback

    model = JEPA(encoder=Encoder(hidden_dim=12, num_layers=1, num_heads=2, dropout=0.1), predictor=Predictor(hidden_dim=12))
    callbacks = []
    if mode == "crash":

        class Kill(BaseCallback):
            def on_batch_end(self, trainer, model, outputs, batch, batch_idx):
                if trainer.global_step == KILL_AT_STEP:
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(Kill())
    started = {}

    class RecordStart(BaseCallback):
        def on_train_start(self, trainer, model):
            started.update(step=trainer.global_step, epoch=trainer.current_epoch)

    callbacks.append(RecordStart())
    trainer = create_trainer(
        model, learning_rate=3e-3, device="cpu", save_dir=out / "ckpt", progress_bar=False, callbacks=callbacks,
        checkpoint_every_n_steps=EVERY_N_STEPS, resume="auto" if mode == "resume" else None,
    )
    loader = DataLoader(NoisyPairs(), batch_size=8, shuffle=True)
    history = trainer.train(loader, num_epochs=EPOCHS)
    torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, out / "weights.pt")
    (out / "result.json").write_text(json.dumps({"history": history, "started": started, "global_step": trainer.global_step}))


if __name__ == "__main__":
    main()
