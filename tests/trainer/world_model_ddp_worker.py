"""Worker of tests/trainer/test_world_model_distributed.py, run under ``torch.distributed.run``:

    python -m torch.distributed.run --nproc_per_node=2 tests/trainer/world_model_ddp_worker.py <out_dir> <regularizer>

trains the shared tiny world-model setup (see ``build``) on 2 ranks and writes each rank's final
weights and history; the test compares them with one process on twice the batch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

PER_RANK_BATCH, EPOCHS = 8, 2


def build(batch_size: int, regularizer: str, *, distributed: bool, save_dir: Path):
    """Model, loss and loader shared by the 1-process reference and the 2-process run."""
    from jepa.data import TrajectoryDataset
    from jepa.envs import TwoRooms, collect
    from jepa.models import WorldModel
    from jepa.trainer import create_trainer
    from jepa.trainer.world_model_loss import WorldModelLoss

    # 8 episodes x 7 windows: 3 steps of 16 in one process, of 8 + 8 on two ranks (a DistributedSampler interleaves)
    data = TrajectoryDataset(collect(TwoRooms(), episodes=8, steps=9, seed=0, action_repeat=2), horizon=3)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, drop_last=True)
    torch.manual_seed(0)
    model = WorldModel.mlp(2, 2, latent_dim=4, hidden_dim=16, momentum=0.9)
    loss = WorldModelLoss(regularizer=regularizer, smoothness_weight=0.5, sigreg_slices=16, regularizer_weight=0.2)
    trainer = create_trainer(model, learning_rate=1e-2, device="cpu", loss_fn=loss, distributed=distributed, save_dir=save_dir, progress_bar=False)
    return trainer, loader


def main() -> None:
    out, regularizer = Path(sys.argv[1]), sys.argv[2]
    rank = int(os.environ["RANK"])
    trainer, loader = build(PER_RANK_BATCH, regularizer, distributed=True, save_dir=out / "ckpt")
    trainer.train(loader, num_epochs=EPOCHS)
    torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, out / f"weights_rank{rank}.pt")
    (out / f"result_rank{rank}.json").write_text(json.dumps({"global_step": trainer.global_step, "history": trainer.history}))
    trainer.close()


if __name__ == "__main__":
    main()
