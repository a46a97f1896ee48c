"""Worker of tests/trainer/test_gather.py: two gloo processes (torch.multiprocessing.spawn) gather
model outputs of different row counts and check values and gradients against one process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

ROWS = (3, 5)  # rank 0 holds 3 samples, rank 1 holds 5


def _outputs(rank: int) -> dict:
    """What rank ``rank``'s model step returned: batch-first tensors with ROWS[rank] rows, a bool
    validity mask, and a per-step scalar and a non-batch tensor that must not be gathered."""
    g = torch.Generator().manual_seed(100 + rank)
    n = ROWS[rank]
    return {
        "prediction": torch.randn(n, 4, 6, generator=g).requires_grad_(),
        "target": torch.randn(n, 4, 6, generator=g),
        "valid": torch.rand(n, 4, generator=g) > 0.3,
        "temperature": torch.tensor(0.5 + rank),
        "prototypes": torch.randn(7, 6, generator=g),  # not batch-first: listed as unbatched
    }


def masked_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    # batch statistics: the target is standardized over the whole (gathered) batch
    t = (target - target.mean(0)) / target.std(0)
    per = ((prediction - t) ** 2).mean(-1)
    return (per * valid).sum() / valid.sum()


def run(rank: int, init_file: str, out_dir: str) -> None:
    from jepa.trainer.distributed import gather_outputs, gather_rows

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        mine = _outputs(rank)
        got = gather_outputs(mine, ["prediction", "target", "valid", "temperature", "prototypes"], unbatched=["prototypes"])
        loss = masked_loss(got["prediction"], got["target"], got["valid"])
        loss.backward()
        result = {
            "prediction": got["prediction"].detach().tolist(),
            "valid": got["valid"].tolist(),
            "valid_dtype": str(got["valid"].dtype),
            "temperature": float(got["temperature"]),
            "prototypes_shape": list(got["prototypes"].shape),
            "loss": float(loss),
            "grad": mine["prediction"].grad.tolist(),
            "rows_only": gather_rows(torch.full((ROWS[rank], 2), float(rank))).tolist(),
        }
        bad = {"x": torch.zeros(2, 3 + rank)}  # trailing dims differ between ranks
        try:
            gather_outputs(bad, ["x"])
        except ValueError as exc:
            result["mismatch_error"] = str(exc)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.multiprocessing.spawn(run, args=(sys.argv[1], sys.argv[2]), nprocs=2)
