"""Worker of tests/trainer/test_resume_loader_rng.py: one run in its own process, on a DataLoader
that shuffles with its own ``torch.Generator`` (the usual way to make shuffling reproducible).

    python tests/trainer/loader_rng_worker.py <mode> <out_dir> <where>

mode: full (uninterrupted), crash (SIGKILL right after the checkpoint is written), resume (a new
process: fresh model, load_checkpoint, train to the end). where: "epoch" (epoch_2.pt, written at
the end of epoch 2 of 4) or "step" (latest.pt, written mid-epoch). Each finished run writes
weights.pt and result.json.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

EPOCHS, N, BATCH = 4, 40, 8
KILL_STEP = 7  # "step": latest.pt every 7 steps; 7 is inside epoch 1 (5 steps per epoch)


def main() -> None:
    mode, out, where = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    from jepa.models import JEPA
    from jepa.models.encoder import Encoder
    from jepa.models.predictor import Predictor
    from jepa.trainer import create_trainer
    from jepa.trainer.callbacks import BaseCallback

    torch.manual_seed(0 if mode != "resume" else 1234)  # the resumed process starts from other weights
    data = torch.randn(N, 6, 12, generator=torch.Generator().manual_seed(5))
    dataset = TensorDataset(data, data.roll(1, dims=1))
    g = torch.Generator().manual_seed(7)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=g)
    model = JEPA(encoder=Encoder(hidden_dim=12, num_layers=1, num_heads=2, dropout=0.1), predictor=Predictor(hidden_dim=12))
    target = "epoch_2.pt" if where == "epoch" else "latest.pt"

    class KillAfterSave(BaseCallback):
        def on_save_checkpoint(self, trainer, path):
            if mode == "crash" and Path(path).name == target and (where == "epoch" or trainer.global_step == KILL_STEP):
                os.kill(os.getpid(), signal.SIGKILL)

    kwargs = {"checkpoint_every_n_epochs": 1} if where == "epoch" else {"checkpoint_every_n_steps": KILL_STEP}
    trainer = create_trainer(
        model, learning_rate=3e-3, device="cpu", save_dir=out / "ckpt", progress_bar=False, callbacks=[KillAfterSave()],
        save_best=False, save_last=False, **kwargs,
    )
    if mode == "resume":
        trainer.load_checkpoint(out / "ckpt" / target)
    history = trainer.train(loader, num_epochs=EPOCHS)
    torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, out / "weights.pt")
    (out / "result.json").write_text(json.dumps({"history": history, "global_step": trainer.global_step}))


if __name__ == "__main__":
    main()
