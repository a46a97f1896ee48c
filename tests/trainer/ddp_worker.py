"""Worker script launched by tests/trainer/test_distributed.py under ``torch.distributed.run``.

    python -m torch.distributed.run --nproc_per_node=2 tests/trainer/ddp_worker.py <mode> <out_dir> [epochs]

modes:
  train    train the shared tiny setup (see ``build``) and write each rank's final weights
  restart  like train, with a checkpoint every epoch and resume="auto"; on the first attempt
           (TORCHELASTIC_RESTART_COUNT=0) rank 1 SIGKILLs itself after epoch 2
  error    rank 1 raises in a callback after epoch 1 (the run must end, not hang)
  accum    like train with per-rank micro-batches of PER_RANK_BATCH // 2 and gradient_accumulation=2
  v0       the v0 docs' example: the user calls dist.init_process_group, then DistributedTrainer(config, ...)
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

N_SAMPLES, TOKENS, DIM, PER_RANK_BATCH = 48, 5, 16, 4


def build(batch_size: int, *, distributed: bool, save_dir: Path, **kwargs):
    """The model, loss and loader shared by the 1-process reference and the 2-process run."""
    from jepa.models import JEPA
    from jepa.models.encoder import Encoder
    from jepa.models.predictor import Predictor
    from jepa.trainer import create_trainer
    from jepa.trainer.losses import JEPALoss

    g = torch.Generator().manual_seed(3)
    x = torch.randn(N_SAMPLES, TOKENS, DIM, generator=g)
    y = x.roll(1, dims=1) + 0.1 * torch.randn(N_SAMPLES, TOKENS, DIM, generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)
    torch.manual_seed(0)
    model = JEPA(encoder=Encoder(hidden_dim=DIM, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=DIM))
    # batch-normalized targets and the variance/covariance regularizer use batch statistics
    loss = JEPALoss(target_norm="batch", var_weight=1.0, cov_weight=0.5)
    trainer = create_trainer(
        model, learning_rate=1e-3, device="cpu", loss_fn=loss, distributed=distributed, save_dir=save_dir,
        progress_bar=False, gradient_clip_norm=1.0, **kwargs,
    )
    return trainer, loader


class RecordingLogger:
    """Counts the metrics this rank logs."""

    def __init__(self) -> None:
        self.calls = 0

    def log_metrics(self, metrics, step) -> None:
        self.calls += 1


def v0_example(out: Path) -> None:
    """docs/training-api/v0.md, "Distributed training with your own process group", as written (gloo on CPU)."""
    import torch.distributed as dist

    from jepa.config import load_config
    from jepa.trainer.distributed import DistributedTrainer

    config = load_config("quick")
    config.training.epochs = 1
    config.logging.output_dir = str(out / "v0")
    config.logging.progress_bar = False
    dist.init_process_group(backend="gloo")
    trainer = DistributedTrainer(config, world_size=torch.distributed.get_world_size(), rank=torch.distributed.get_rank())
    history = trainer.train()
    result = {"rank": trainer.rank, "world_size": trainer.world_size, "owns_group": trainer.dist.owns_group,
              "sampler": type(trainer._active_train_loader.sampler).__name__, "history": history,
              "ddp": type(trainer._ddp).__name__}
    (out / f"result_rank{trainer.rank}.json").write_text(json.dumps(result))
    trainer.close()  # the user's group: left alone
    assert dist.is_initialized()
    dist.destroy_process_group()


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "v0":
        out.mkdir(parents=True, exist_ok=True)
        return v0_example(out)
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    rank = int(os.environ["RANK"])
    import jepa.io as jio
    from jepa.trainer.callbacks import BaseCallback

    writes = []
    original_save = jio.save

    def recording_save(state, path, *args, **kwargs):
        writes.append(Path(path).name)
        return original_save(state, path, *args, **kwargs)

    jio.save = recording_save
    logger = RecordingLogger()
    kwargs = {"logger": logger, "log_every_n_steps": 1}
    started = {}

    class RecordStart(BaseCallback):
        def on_train_start(self, trainer, model):  # after resume="auto" loaded a checkpoint
            started["step"], started["epoch"] = trainer.global_step, trainer.current_epoch

    callbacks = [RecordStart()]
    if mode == "restart":
        kwargs.update(checkpoint_every_n_epochs=1, resume="auto")
        attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

        class KillAfterEpoch2(BaseCallback):
            def on_epoch_end(self, trainer, model):
                if attempt == 0 and rank == 1 and trainer.current_epoch == 2:
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(KillAfterEpoch2())
    elif mode == "error":

        class Boom(BaseCallback):
            def on_epoch_end(self, trainer, model):
                if rank == 1 and trainer.current_epoch == 1:
                    raise ValueError("boom on rank 1")

        callbacks.append(Boom())
    batch = PER_RANK_BATCH
    if mode == "accum":
        batch, kwargs["gradient_accumulation"] = PER_RANK_BATCH // 2, 2
    trainer, loader = build(batch, distributed=True, save_dir=out / "ckpt", callbacks=callbacks, **kwargs)
    trainer.train(loader, num_epochs=epochs)
    model = trainer.model
    result = {
        "rank": rank,
        "world_size": trainer.dist.world_size,
        "global_step": trainer.global_step,
        "start_step": started["step"],
        "start_epoch": started["epoch"],
        "writes": writes,
        "log_calls": logger.calls,
        "history": trainer.history,
        "attempt": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
        "sampler": type(trainer._active_train_loader.sampler).__name__,
    }
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / f"weights_rank{rank}.pt")
    (out / f"result_rank{rank}.json").write_text(json.dumps(result))
    trainer.close()


if __name__ == "__main__":
    main()
