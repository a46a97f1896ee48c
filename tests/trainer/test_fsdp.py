"""strategy="fsdp" with real processes (torch.distributed.run, 2 ranks, gloo on CPU): FSDP2 sharding of
the online modules and the EMA target, global-batch equivalence with one process, sharded checkpoints
that reshard (2 ranks -> 1 process, 1 process -> 2 ranks, 2 -> 2), a SIGKILL in the middle of a
sharded save, and --max-restarts resume."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import jepa.io as jio
from jepa.trainer.checkpoints import find_latest_checkpoint, load_checkpoint

HERE = Path(__file__).resolve().parent
WORKER = HERE / "fsdp_worker.py"
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402
import fsdp_worker  # noqa: E402
from test_distributed import _max_diff, _torchrun  # noqa: E402  (the gloo harness of the DDP tests)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

TOL = 1e-4  # 2 ranks x b vs 1 process x 2b, a few steps, float32


def _results(out: Path) -> list[dict]:
    return [json.loads((out / f"result_rank{r}.json").read_text()) for r in range(2)]


def _seq_reference(save_dir: Path, epochs: int):
    """One process, batch 2b: the run 2 ranks with batch b must reproduce."""
    trainer, loader = ddp_worker.build(2 * ddp_worker.PER_RANK_BATCH, distributed=False, save_dir=save_dir, save_best=False)
    trainer.train(loader, num_epochs=epochs)
    return trainer, loader


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    """One 2-rank launch of fsdp_worker.py 'train' (shared by the tests below), with its 1-process reference."""
    root = tmp_path_factory.mktemp("fsdp")
    ref, _ = _seq_reference(root / "ref", fsdp_worker.EPOCHS)
    # an ordinary checkpoint of another (1-process, 1-epoch) run: the workers load it into their shards
    other, other_loader = ddp_worker.build(2 * ddp_worker.PER_RANK_BATCH, distributed=False, save_dir=root / "other", save_best=False, save_last=False)
    other.train(other_loader, num_epochs=1)
    plain = other.save_checkpoint("plain.pt")
    out = root / "run"
    proc = _torchrun([str(WORKER), "train", str(out), str(plain)], timeout=420)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return {"out": out, "ref": ref, "plain": plain, "results": _results(out)}


def test_two_fsdp_ranks_match_one_process_with_twice_the_batch(fsdp_run, tmp_path):
    r0, r1 = fsdp_run["results"]
    ref = fsdp_run["ref"]
    assert r0["global_step"] == r1["global_step"] == ref.global_step
    # the logged loss is the global one on both ranks, and it is the 1-process run's
    assert r0["history"]["train_loss"] == pytest.approx(r1["history"]["train_loss"])
    assert r0["history"]["train_loss"] == pytest.approx(ref.history["train_loss"], abs=TOL)
    # the sharded checkpoint both ranks wrote, assembled in this process: the 1-process weights,
    # EMA target included, and the same optimizer state
    assert r0["final"] == r1["final"]
    state = jio.load(r0["final"])
    assert state["global_step"] == ref.global_step and len(state["rng_per_rank"]) == 2
    assert state["model_class"] == "JEPA"  # not FSDP's wrapper class: the checkpoint rebuilds the model without code
    assert any(k.startswith("target_encoder.") for k in state["model"])
    assert _max_diff(state["model"], ref.model.state_dict()) < TOL
    ref_opt = ref.optimizer.state_dict()["state"]
    for idx, entries in ref_opt.items():
        for k, v in entries.items():
            assert float((state["optimizer"]["state"][idx][k].double() - v.double()).abs().max()) < TOL, (idx, k)


def test_parameters_optimizer_state_and_ema_target_are_dtensors_with_half_the_elements_per_rank(fsdp_run):
    for r in fsdp_run["results"]:
        # one FSDP unit per transformer block, per component (encoder, predictor, EMA target), the root last
        assert r["units"] == ["encoder.blocks.0", "encoder", "predictor", "target_encoder.blocks.0", "target_encoder", ""]
        for key in ("fractions", "vit_fractions"):
            f = r[key]
            assert f["all_dtensor"] and f["n_opt"] > 0
            for group in ("online", "target", "optimizer"):
                assert 0.45 <= f[group] <= 0.55, (key, group, f[group])
    vit_units = fsdp_run["results"][0]["vit_units"]
    assert vit_units[:3] == ["encoder.blocks.0", "encoder.blocks.1", "encoder"] and "target_encoder.blocks.1" in vit_units


def test_a_two_rank_checkpoint_loads_in_one_process_and_training_continues_there(fsdp_run, tmp_path):
    final = Path(fsdp_run["results"][0]["final"])
    # the v1 function: weights and optimizer state, assembled from the two shard files
    trainer, loader = ddp_worker.build(2 * ddp_worker.PER_RANK_BATCH, distributed=False, save_dir=tmp_path / "one", save_best=False)
    _, _, _, epoch = load_checkpoint(final, trainer.model, trainer.optimizer)
    assert epoch == fsdp_worker.EPOCHS
    assert _max_diff(trainer.model.state_dict(), fsdp_run["ref"].model.state_dict()) < TOL
    # resume="auto" in one process finds the sharded checkpoint (final.pt is the newest) and continues
    # exactly: one more epoch lands where the 1-process run continued for one more epoch lands
    resumed, loader = ddp_worker.build(2 * ddp_worker.PER_RANK_BATCH, distributed=False, save_dir=final.parent, save_best=False, save_last=False, resume="auto")
    assert find_latest_checkpoint(final.parent) == final
    resumed.train(loader, num_epochs=fsdp_worker.EPOCHS + 1)
    ref, ref_loader = _seq_reference(tmp_path / "ref3", fsdp_worker.EPOCHS)
    ref.train(ref_loader, num_epochs=fsdp_worker.EPOCHS + 1)
    assert resumed.global_step == ref.global_step
    assert _max_diff(resumed.model.state_dict(), ref.model.state_dict()) < TOL


def test_an_ordinary_checkpoint_loads_into_fsdp_shards(fsdp_run):
    for r in fsdp_run["results"]:
        assert r["plain_step"] == jio.load(fsdp_run["plain"])["global_step"]
        assert r["plain_diff"] == [0.0, 0.0]  # every rank's shards are exactly the rows of the file


def test_vit_blocks_with_activation_checkpointing_accumulation_and_clipping_match_one_process(fsdp_run, tmp_path):
    r0 = fsdp_run["results"][0]
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *args, **kwargs):
        norms.append(float(clip(params, max_norm, *args, **kwargs)))
        return norms[-1]

    ref, loader = fsdp_worker.vit_trainer(2 * fsdp_worker.VIT_PER_RANK, distributed=False, save_dir=tmp_path / "vit")
    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        ref.train(loader, num_epochs=1)
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    assert min(norms) > fsdp_worker.VIT_CLIP  # clipping was active at every step
    assert r0["vit_steps"] == ref.global_step == fsdp_worker.VIT_STEPS
    state = jio.load(r0["vit"])
    assert _max_diff(state["model"], ref.model.state_dict()) < TOL


def test_mixed_precision_policies(fsdp_run):
    r0, r1 = fsdp_run["results"]
    for r in (r0, r1):
        b = r["bf16"]
        assert b["loss"] == b["loss"] and abs(b["loss"]) < 1e3  # finite
        assert b["optimizer_params_sharded"]  # the user's optimizer now steps the sharded parameters
        assert b["prediction_dtype"] == "torch.bfloat16"  # computed in bf16 ...
        assert b["param_dtypes"] == ["torch.float32"] and b["target_local_dtypes"] == ["torch.float32"]  # ... kept in fp32
        f = r["fp16"]
        assert f["scaler"] == "ShardedGradScaler" and f["loss"] == f["loss"] and abs(f["loss"]) < 1e3
        assert f["found_inf"] == [1.0]  # an inf in rank 1's shard alone: both ranks skip the step
    assert r0["fp16"]["loss"] == r1["fp16"]["loss"]


def test_damaged_or_missing_shard_is_refused_and_skipped(fsdp_run, tmp_path):
    src = Path(fsdp_run["results"][0]["final"]).parent
    ckpt = tmp_path / "ckpt"
    shutil.copytree(src, ckpt)
    for p in ckpt.iterdir():  # keep only final.pt and its shards
        if p.name not in ("final.pt", "final.pt.shards"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    (shard,) = [p for p in (ckpt / "final.pt.shards").rglob("rank00001.pt")]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(jio.CheckpointError, match="checksum"):
        jio.load(ckpt / "final.pt")
    assert find_latest_checkpoint(ckpt) is None  # the only candidate does not verify
    shard.unlink()
    with pytest.raises(jio.CheckpointError, match="missing"):
        jio.load(ckpt / "final.pt")


def test_checkpoint_of_another_model_gives_one_clear_error(fsdp_run, tmp_path):
    from jepa.models import JEPA
    from jepa.models.encoder import Encoder
    from jepa.models.predictor import Predictor
    from jepa.trainer import create_trainer

    final = fsdp_run["results"][0]["final"]
    wider = JEPA(encoder=Encoder(hidden_dim=24, num_layers=1, num_heads=2), predictor=Predictor(hidden_dim=24))
    with pytest.raises(ValueError, match="shape mismatch for 'encoder.pos_embed'"):
        load_checkpoint(final, wider)
    deeper = create_trainer(JEPA(encoder=Encoder(hidden_dim=16, num_layers=2, num_heads=2), predictor=Predictor(hidden_dim=16)),
                            device="cpu", save_dir=tmp_path, progress_bar=False)
    with pytest.raises(ValueError, match=r"weights do not match the model: missing \['encoder.blocks.1"):
        deeper.load_checkpoint(final)


def test_sigkill_during_a_sharded_save_and_max_restarts_resume_exactly(tmp_path):
    out = tmp_path / "run"
    proc = _torchrun([str(WORKER), "restart", str(out)], extra=["--max-restarts=1"], timeout=420)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    r0, r1 = _results(out)
    for r in (r0, r1):
        assert r["attempt"] == 1  # these results come from the restarted attempt
        # the save at KILL_STEP never committed: the previous one (mid-epoch) was found and loaded,
        # with this rank's own RNG state
        assert r["start"]["step"] == fsdp_worker.KILL_STEP - fsdp_worker.EVERY
        assert r["start"]["rng_restored"] and r["start"]["ranks_rng_differ"]
        assert r["global_step"] == 6 * fsdp_worker.RESTART_EPOCHS
        assert len(r["shard_folders"]) == 1  # the interrupted save's shards were cleaned up after the next commit
    # exact resume (weights, EMA, optimizer, data position): the uninterrupted 1-process run
    ref, _ = _seq_reference(tmp_path / "ref", fsdp_worker.RESTART_EPOCHS)
    state = jio.load(out / "ckpt" / "last.pt")
    assert state["global_step"] == ref.global_step
    assert _max_diff(state["model"], ref.model.state_dict()) < TOL
    assert r0["history"]["train_loss"] == pytest.approx(ref.history["train_loss"], abs=TOL)
