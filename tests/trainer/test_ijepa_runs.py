"""I-JEPA runs from a config on a generated image folder, with masks drawn in DataLoader workers:
exact mid-epoch resume in a new process after a SIGKILL, and DDP on 2 processes (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from jepa.data import write_shapes_folder

WORKER = Path(__file__).resolve().parent / "ijepa_worker.py"
sys.path.insert(0, str(WORKER.parent))
import ijepa_worker  # noqa: E402
from torchrun_util import torchrun  # noqa: E402


def _env() -> dict:
    # no PYTHONPATH to the source tree: the workers import the installed jepa (with its compiled jepa._C)
    return dict(os.environ, OMP_NUM_THREADS="1")


def _run(mode: str, out: Path, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), mode, str(out), str(folder)], env=_env(), capture_output=True, text=True, timeout=300)


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_sigkill_mid_epoch_then_resume_with_worker_masks_is_bit_identical(tmp_path):
    folder = write_shapes_folder(tmp_path / "images", num_train=40, num_val=8, image_size=16, num_classes=4)
    full = _run("full", tmp_path / "full", folder)
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "interrupted"
    crash = _run("crash", out, folder)
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-3000:]
    assert (out / "ckpt" / "latest.pt").is_file() and not (out / "result.json").exists()
    resumed = _run("resume", out, folder)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    result = json.loads((out / "result.json").read_text())
    reference = json.loads((tmp_path / "full" / "result.json").read_text())
    steps_per_epoch = 40 // ijepa_worker.BATCH
    last_saved = (ijepa_worker.KILL_AT_STEP // ijepa_worker.EVERY_N_STEPS) * ijepa_worker.EVERY_N_STEPS
    assert result["started"] == {"step": last_saved, "epoch": last_saved // steps_per_epoch}
    assert last_saved % steps_per_epoch != 0  # mid-epoch: the epoch's masks are replayed in a fresh worker
    assert result["global_step"] == reference["global_step"] == ijepa_worker.EPOCHS * steps_per_epoch
    assert result["history"] == reference["history"]  # train and validation losses, bit for bit
    a, b = _weights(out / "weights.pt"), _weights(tmp_path / "full" / "weights.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["ema_step"]) == result["global_step"]


def test_ddp_two_processes_draw_their_own_masks_and_step_as_the_mean_of_their_losses(tmp_path):
    """Each rank draws masks in its loader worker from its own seed; the update of the one step equals
    SGD on the mean of the ranks' prediction losses plus the variance/covariance term of the
    projections of both ranks together (gathered), computed here in one process."""
    from jepa.models import build_model
    from jepa.trainer.losses import IJEPALoss, variance_covariance

    folder = write_shapes_folder(tmp_path / "images", num_train=8, num_val=4, image_size=16, num_classes=2)
    out = tmp_path / "ddp"
    out.mkdir()
    proc = torchrun([str(WORKER), "ddp", str(out), str(folder)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    infos = [json.loads((out / f"info_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(i["sampler"] == "DistributedSampler" and i["workers"] == 1 and i["steps"] == 1 for i in infos)
    batches = [torch.load(out / f"batch_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert not torch.equal(batches[0]["images"], batches[1]["images"])  # each rank its own shard
    assert not (batches[0]["context_idx"].shape == batches[1]["context_idx"].shape
                and torch.equal(batches[0]["context_idx"], batches[1]["context_idx"])
                and torch.equal(batches[0]["target_idx"], batches[1]["target_idx"]))  # and its own masks
    before = [_weights(out / f"before_rank{r}.pt") for r in (0, 1)]
    after = [_weights(out / f"after_rank{r}.pt") for r in (0, 1)]
    # identical on both ranks, but for the running statistics of the projector's batch norm (per-rank batches)
    assert all(torch.equal(before[0][k], before[1][k]) for k in before[0])
    assert all(torch.equal(after[0][k], after[1][k]) for k in after[0] if ".running_" not in k)

    model = build_model("IJEPA", infos[0]["model_config"])
    model.load_state_dict(before[0])
    outs = [model.forward_batch(b) for b in batches]
    pred = sum(IJEPALoss()(o["prediction"], o["target_tokens"], o["target_index"], o["target_valid"]) for o in outs) / 2
    var, cov = variance_covariance(torch.cat([o["projection"] for o in outs]))
    (pred + var + cov).backward()
    lr = 0.5
    moved = 0
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        expected = before[0][name] - lr * p.grad
        assert torch.allclose(after[0][name], expected, atol=2e-5, rtol=1e-4), name
        moved += int(not torch.equal(after[0][name], before[0][name]))
    assert moved > 0
