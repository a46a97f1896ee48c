"""Distributed training with real processes: torch.distributed.run, 2 ranks, gloo on CPU."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

import jepa
import jepa.io as jio
from jepa.data import load_digits_split
from jepa.trainer.checkpoints import model_from_checkpoint_state
from jepa.trainer.eval import linear_probe_accuracy

HERE = Path(__file__).resolve().parent
WORKER = HERE / "ddp_worker.py"
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402
from torchrun_util import torchrun, worker_env  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def _torchrun(args: list[str], *, timeout: float = 240, nproc: int = 2, extra: list[str] | None = None, cwd=None):
    # the worker imports the installed jepa, like a user's script
    env = worker_env(TRITON_INTERPRET=os.environ.get("TRITON_INTERPRET", "1"))
    return torchrun(args, nproc=nproc, timeout=timeout, extra=extra, env=env, cwd=cwd)


def _reference(tmp_path: Path, epochs: int, accumulation: int = 1) -> dict[str, torch.Tensor]:
    """One process, batch 2b, the same data order as 2 ranks with batch b each."""
    trainer, loader = ddp_worker.build(
        2 * ddp_worker.PER_RANK_BATCH // accumulation, distributed=False, save_dir=tmp_path / "ref",
        gradient_accumulation=accumulation,
    )
    trainer.train(loader, num_epochs=epochs)
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _results(out: Path) -> list[dict]:
    return [json.loads((out / f"result_rank{r}.json").read_text()) for r in range(2)]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def test_two_processes_match_one_process_with_twice_the_batch(tmp_path):
    out = tmp_path / "run"
    proc = _torchrun([str(WORKER), "train", str(out), "2"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = _results(out)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["sampler"] == r1["sampler"] == "DistributedSampler"
    assert r0["global_step"] == r1["global_step"] == 2 * (ddp_worker.N_SAMPLES // (2 * ddp_worker.PER_RANK_BATCH))
    # only rank 0 writes checkpoints and logs
    assert r0["writes"] and "last.pt" in r0["writes"] and r1["writes"] == []
    assert r0["log_calls"] > 0 and r1["log_calls"] == 0
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["best_model.pt", "last.pt"]
    w0 = torch.load(out / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(out / "weights_rank1.pt", weights_only=True)
    # every rank holds the same weights, EMA target encoder included
    assert any(k.startswith("target_encoder") for k in w0)
    assert _max_diff(w0, w1) == 0.0
    ref = _reference(tmp_path, 2)
    assert _max_diff(w0, ref) < 1e-5
    # the logged loss is the global one: the same history as the 1-process run
    assert r0["history"]["train_loss"] == pytest.approx(r1["history"]["train_loss"])


def test_gradient_accumulation_under_ddp_matches_one_process(tmp_path):
    """Micro-batches of b/2 per rank with accumulation 2 (no all-reduce on the first micro-batch):
    the same weights as 1 process with micro-batches of b and accumulation 2."""
    out = tmp_path / "run"
    proc = _torchrun([str(WORKER), "accum", str(out), "2"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = _results(out)
    assert r0["global_step"] == 2 * (ddp_worker.N_SAMPLES // (2 * ddp_worker.PER_RANK_BATCH))
    w0 = torch.load(out / "weights_rank0.pt", weights_only=True)
    assert _max_diff(w0, torch.load(out / "weights_rank1.pt", weights_only=True)) == 0.0
    assert _max_diff(w0, _reference(tmp_path, 2, accumulation=2)) < 1e-5


def test_killed_rank_restarts_and_resumes_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _torchrun([str(WORKER), "restart", str(out), "4"], extra=["--max-restarts=1"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = _results(out)
    steps_per_epoch = ddp_worker.N_SAMPLES // (2 * ddp_worker.PER_RANK_BATCH)
    for r in (r0, r1):
        assert r["attempt"] == 1  # the results come from the restarted attempt
        assert r["start_epoch"] == 2 and r["start_step"] == 2 * steps_per_epoch  # resumed, not restarted
        assert r["global_step"] == 4 * steps_per_epoch
        assert len(r["history"]["train_loss"]) == 4
    w0 = torch.load(out / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(out / "weights_rank1.pt", weights_only=True)
    assert _max_diff(w0, w1) == 0.0
    # exact resume: the same weights as an uninterrupted run
    assert _max_diff(w0, _reference(tmp_path, 4)) < 1e-5


def test_an_exception_on_one_rank_ends_the_run(tmp_path):
    out = tmp_path / "run"
    proc = _torchrun([str(WORKER), "error", str(out), "3"], timeout=180)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert text.count("ValueError: boom on rank 1") == 1  # the real error, printed once
    assert "another rank failed" in text or "SIGTERM" in text  # rank 0 says why it stopped (or was ended)
    assert "Connection closed by peer" not in text
    assert not (out / "result_rank0.json").exists()


def test_v0_distributed_trainer_in_the_users_process_group(tmp_path):
    out = tmp_path / "run"
    proc = _torchrun([str(WORKER), "v0", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = _results(out)
    for r, rank in ((r0, 0), (r1, 1)):
        assert r["rank"] == rank and r["world_size"] == 2
        assert r["owns_group"] is False  # the user's own dist.init_process_group was used
        assert r["sampler"] == "DistributedSampler" and r["ddp"] == "DistributedDataParallel"
    assert r0["history"]["train_loss"] == pytest.approx(r1["history"]["train_loss"])
    assert (out / "v0" / "checkpoints" / "last.pt").is_file()


def test_cli_under_torchrun_trains_the_default_data(tmp_path):
    out = tmp_path / "cli"
    proc = _torchrun(
        ["-m", "jepa.cli", "train", "--distributed", "true", "--epochs", "2", "--output-dir", str(out), "--no-progress"],
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout
    assert proc.stdout.count("linear probe accuracy") == 1  # rank 0 reports once
    metrics = json.loads((out / "metrics.json").read_text())
    state = jio.load(out / "checkpoints" / "last.pt")
    assert state["jepa_version"] == jepa.__version__ and state["epoch"] == 2
    # the reported probe is the trained encoder's: probing the saved weights again gives it (up to a
    # test sample or two flipping with the thread count), and it is far above chance (10 classes)
    tr, te = load_digits_split("train"), load_digits_split("test")
    model = model_from_checkpoint_state(state).eval()
    again = linear_probe_accuracy(model.embed(tr.tokens), tr.labels, model.embed(te.tokens), te.labels, None, seed=0)
    assert abs(metrics["probe"]["pretrained"]["all"] - again) <= 2 / len(te)
    assert metrics["probe"]["pretrained"]["all"] > 0.5
