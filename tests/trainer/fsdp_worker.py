"""Worker script launched by tests/trainer/test_fsdp.py under ``torch.distributed.run`` (gloo, CPU).

    python -m torch.distributed.run --nproc_per_node=2 tests/trainer/fsdp_worker.py <mode> <out_dir> [args]

modes:
  train <out> <plain.pt>  the shared tiny sequence JEPA (ddp_worker.build) under strategy="fsdp" for
           EPOCHS epochs, then trainer.save_checkpoint("final.pt") on every rank; then the ordinary
           (1-process) checkpoint <plain.pt> is loaded into the sharded trainer and each rank compares
           its shards with the rows of that file; then a tiny I-JEPA (ViT blocks) with activation
           checkpointing, gradient accumulation and active clipping for VIT_STEPS steps (saved as vit.pt),
           and the same ViT under bf16 and fp16.
           Each rank writes result_rank<r>.json.
  restart <out>  the sequence JEPA with checkpoint_every_n_steps=EVERY, resume="auto", for
           RESTART_EPOCHS epochs. On the first attempt (TORCHELASTIC_RESTART_COUNT=0) rank 1 SIGKILLs
           itself inside the sharded save at step KILL_STEP, after writing its shard file and before
           the metadata file (the commit) is written; the restarted attempt must resume from the
           previous save (step KILL_STEP - EVERY, mid-epoch) and finish. Each rank writes
           result_rank<r>.json (start step, whether its own RNG state came back).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ddp_worker  # noqa: E402

EPOCHS = 2
RESTART_EPOCHS, EVERY, KILL_STEP = 3, 4, 12  # 6 steps per epoch: saves at 4, 6, 8, 12, 16, 18; 8 is mid-epoch 2
# ViT runs: micro-batches of 1 image per rank, 2 per optimizer step, gradients clipped to a norm their
# norm (~0.47) exceeds, so accumulation and clipping of sharded gradients are both exercised
VIT_SAMPLES, VIT_PER_RANK, VIT_ACCUMULATION, VIT_CLIP, VIT_STEPS = 8, 1, 2, 0.2, 2
GRID, LC, K, LT = 4, 6, 2, 3  # 4x4 patches, 6 context patches, 2 target blocks of 3 patches


class FixedMaskImages(Dataset):
    """Images with one fixed I-JEPA mask each (fixed sizes, so the default collate stacks them)."""

    def __init__(self, n: int = VIT_SAMPLES) -> None:
        g = torch.Generator().manual_seed(11)
        self.images = torch.randn(n, 3, 16, 16, generator=g)
        perms = torch.stack([torch.randperm(GRID * GRID, generator=g) for _ in range(n)])
        self.context = perms[:, :LC]
        self.target = perms[:, LC : LC + K * LT].reshape(n, K, LT)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"images": self.images[i], "context_idx": self.context[i], "target_idx": self.target[i]}


def ijepa_loss(prediction, target_tokens, target_index, target_valid):
    """The I-JEPA objective over the (gathered) outputs it names."""
    from jepa.trainer.losses import IJEPALoss

    return IJEPALoss()(prediction, target_tokens, target_index, target_valid)


def vit_model():
    """A tiny I-JEPA whose model step takes the dict batches of :class:`FixedMaskImages`."""
    from jepa.models import IJEPA, MaskedPredictor, VisionTransformer

    class BatchIJEPA(IJEPA):
        def forward_batch(self, batch):
            return self.forward_features(batch["images"], batch["context_idx"], batch["target_idx"])

    torch.manual_seed(1)
    enc = VisionTransformer(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    pred = MaskedPredictor(grid_size=(GRID, GRID), embed_dim=32, predictor_embed_dim=16, depth=1, num_heads=2)
    return BatchIJEPA(enc, pred, momentum=0.9)


def vit_trainer(batch_size: int, *, distributed: bool, save_dir: Path, **kwargs):
    """The tiny I-JEPA with plain SGD (its update scales with the gradient, so clipping shows in the
    weights; AdamW would mostly normalise it away), built over the unsharded parameters."""
    from jepa.trainer import JEPATrainer

    loader = DataLoader(FixedMaskImages(), batch_size=batch_size, shuffle=False)
    model = vit_model()
    trainer = JEPATrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), device="cpu", loss_fn=ijepa_loss, distributed=distributed,
        save_dir=save_dir, progress_bar=False, gradient_clip_norm=VIT_CLIP, gradient_accumulation=VIT_ACCUMULATION, save_best=False,
        save_last=False, **kwargs,
    )
    return trainer, loader


def _fractions(trainer) -> dict[str, float]:
    """Share of the elements of each group of tensors this rank holds, and whether all are DTensors."""
    from torch.distributed.tensor import DTensor

    model = trainer.model
    online = [p for m in model.online_modules() for p in m.parameters()]
    target = list(model.target_encoder.parameters())
    opt = [v for s in trainer.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0]

    def share(ts):
        return sum((t.to_local() if isinstance(t, DTensor) else t).numel() for t in ts) / sum(t.numel() for t in ts)

    return {
        "all_dtensor": all(isinstance(t, DTensor) for t in online + target + opt),
        "online": share(online),
        "target": share(target),
        "optimizer": share(opt),
        "n_opt": len(opt),
    }


def _max_shard_diff(trainer, plain: dict) -> tuple[float, float]:
    """Largest difference between this rank's shards (weights, optimizer state) and the rows of ``plain``."""
    from torch.distributed.tensor import DTensor

    from jepa.io.sharded import shard_layout

    def rows(t, full):
        if not isinstance(t, DTensor):
            return t, full
        dim, start, stop = shard_layout(t)
        return t.to_local(), full.narrow(dim, start, stop - start)

    weights = 0.0
    for key, t in trainer.model.state_dict().items():
        mine, expected = rows(t, plain["model"][key])
        weights = max(weights, float((mine - expected).abs().max()) if mine.numel() else 0.0)
    states = 0.0
    for idx, entries in trainer.optimizer.state_dict()["state"].items():
        for k, v in entries.items():
            mine, expected = rows(v, plain["optimizer"]["state"][idx][k])
            states = max(states, float((mine - expected).abs().max()) if mine.numel() else 0.0)
    return weights, states


def train(out: Path, plain_path: Path) -> None:
    import jepa.io as jio

    rank = int(os.environ["RANK"])
    trainer, loader = ddp_worker.build(ddp_worker.PER_RANK_BATCH, distributed=True, save_dir=out / "ckpt", strategy="fsdp", save_best=False)
    history = trainer.train(loader, num_epochs=EPOCHS)
    result = {"rank": rank, "global_step": trainer.global_step, "history": history, "units": trainer.parallel.units,
              "fractions": _fractions(trainer)}
    result["final"] = str(trainer.save_checkpoint("final.pt"))
    # an ordinary checkpoint of another run, loaded into the sharded trainer: each rank takes its rows
    trainer.load_checkpoint(plain_path)
    result["plain_step"] = trainer.global_step
    result["plain_diff"] = _max_shard_diff(trainer, jio.load(plain_path))

    # ViT blocks, with activation checkpointing (fp32: the same numbers as without it)
    vit, vit_loader = vit_trainer(VIT_PER_RANK, distributed=True, save_dir=out / "vit", strategy="fsdp", activation_checkpointing=True)
    vit.train(vit_loader, num_epochs=1)
    result["vit_units"] = vit.parallel.units
    result["vit_fractions"] = _fractions(vit)
    result["vit_steps"] = vit.global_step
    result["vit"] = str(vit.save_checkpoint("vit.pt"))

    # bf16 mixed precision: bf16 compute, fp32 reduce, fp32 sharded master weights and EMA target
    from jepa.trainer.callbacks import BaseCallback

    class KeepOutputs(BaseCallback):  # (with a callback the trainer keeps step_outputs)
        pass

    from jepa.trainer import JEPATrainer

    # (JEPATrainer with the user's own optimizer, built over the unsharded parameters)
    model = vit_model()
    bf16 = JEPATrainer(model, torch.optim.AdamW(model.parameters(), lr=1e-3), device="cpu", loss_fn=ijepa_loss, distributed=True,
                       strategy="fsdp", mixed_precision="bf16", callbacks=[KeepOutputs()], save_dir=out / "bf16", progress_bar=False,
                       save_best=False, save_last=False)
    bf16_loader = DataLoader(FixedMaskImages(), batch_size=VIT_PER_RANK, shuffle=False)
    bf16_history = bf16.train(bf16_loader, num_epochs=1)
    from torch.distributed.tensor import DTensor

    result["bf16"] = {
        "loss": bf16_history["train_loss"][-1],
        "optimizer_params_sharded": all(isinstance(p, DTensor) for g in bf16.optimizer.param_groups for p in g["params"]),
        "prediction_dtype": str(bf16.step_outputs["prediction"].dtype),
        "param_dtypes": sorted({str(p.dtype) for p in bf16.model.parameters()}),
        "target_local_dtypes": sorted({str(p.to_local().dtype) for p in bf16.model.target_encoder.parameters() if isinstance(p, DTensor)}),
    }
    # fp16: fp16 compute with a loss scaler whose inf/NaN check is agreed over the ranks
    fp16, fp16_loader = vit_trainer(VIT_PER_RANK, distributed=True, save_dir=out / "fp16", strategy="fsdp", mixed_precision="fp16")
    fp16_history = fp16.train(fp16_loader, num_epochs=1)
    with torch.no_grad():  # an inf in rank 1's shard only: both ranks must see it
        for p in fp16.model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        first = next(p for p in fp16.model.parameters() if p.requires_grad)
        if rank == 1:
            first.grad.to_local().view(-1)[0] = float("inf")
        found = fp16.scaler._unscale_grads_(fp16.optimizer, torch.ones(()), torch.zeros(()), False)
    result["fp16"] = {"loss": fp16_history["train_loss"][-1], "scaler": type(fp16.scaler).__name__,
                      "found_inf": [float(v) for v in found.values()]}
    (out / f"result_rank{rank}.json").write_text(json.dumps(result))
    trainer.close()


def restart(out: Path) -> None:
    import jepa.io as jio
    import jepa.io.sharded as sharded
    from jepa.trainer.callbacks import BaseCallback

    rank = int(os.environ["RANK"])
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    holder = {}
    write_shard = sharded._write_shard

    def write_then_die(file, save_id, r, world, pieces):
        write_shard(file, save_id, r, world, pieces)
        if attempt == 0 and rank == 1 and holder["trainer"].global_step == KILL_STEP:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-save: this rank's shard is on disk, the commit is not

    sharded._write_shard = write_then_die
    started = {}

    class RecordStart(BaseCallback):
        def on_train_start(self, trainer, model):  # after resume="auto" restored the checkpoint
            started.update(step=trainer.global_step, epoch=trainer.current_epoch)
            if trainer.global_step:
                meta = jio.load(out / "ckpt" / "latest.pt", shards=False)
                saved = meta["rng_per_rank"][rank]["torch"]
                started["rng_restored"] = bool(torch.equal(saved, torch.get_rng_state()))
                started["ranks_rng_differ"] = not torch.equal(meta["rng_per_rank"][0]["torch"], meta["rng_per_rank"][1]["torch"])

    trainer, loader = ddp_worker.build(
        ddp_worker.PER_RANK_BATCH, distributed=True, save_dir=out / "ckpt", strategy="fsdp", save_best=False,
        checkpoint_every_n_steps=EVERY, resume="auto", callbacks=[RecordStart()],
    )
    holder["trainer"] = trainer
    torch.rand(3 + rank)  # each rank's RNG stream differs from the others' (all must be restored, per rank)
    history = trainer.train(loader, num_epochs=RESTART_EPOCHS)
    result = {"rank": rank, "attempt": attempt, "start": started, "global_step": trainer.global_step, "history": history,
              "shard_folders": sorted(p.name for p in (out / "ckpt" / "latest.pt.shards").iterdir())}
    (out / f"result_rank{rank}.json").write_text(json.dumps(result))
    trainer.close()


def main() -> None:
    torch.set_num_threads(1)
    mode, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if mode == "train":
        train(out, Path(sys.argv[3]))
    elif mode == "restart":
        restart(out)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
