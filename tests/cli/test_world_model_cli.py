"""`jepa train --task world_model` and `jepa plan`, end to end with tiny settings: the table,
metrics.json, the checkpoint `jepa plan` loads (and gets the same episodes from), a trajectory
file with --horizon, resume, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import yaml

import jepa.io as jio
from jepa.envs import EVAL_PAIRS, TwoRooms, collect
from jepa.trainer.checkpoints import model_from_checkpoint_state

TINY = {
    "task": "world_model",
    "world_model": {
        "episodes": 24, "episode_steps": 12, "horizon": 2, "latent_dim": 4, "hidden_dim": 32, "val_fraction": 0.25,
        "eval_horizon": 4, "eval_windows": 16,
        "planning": {"planners": ["cem", "mppi"], "horizon": 3, "samples": 16, "iterations": 2, "elites": 4, "max_steps": 12},
    },
    "training": {"epochs": 2, "batch_size": 32, "weight_decay": 1.0e-4},
    "logging": {"collapse_check_every_n_steps": 0},
}


def run(*args, cwd=None, timeout=300):
    """``python -m jepa.cli ARGS`` with the installed package (the same as the ``jepa`` script)."""
    return subprocess.run([sys.executable, "-m", "jepa.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return str(path)


def _fixed_pair_counts(successes):
    kinds = [p.kind for p in EVAL_PAIRS]
    return {k: sum(s for s, kk in zip(successes, kinds) if kk == k) for k in ("same_room", "cross_wall")}


def test_train_world_model_end_to_end_then_plan_on_its_checkpoint_then_resume(tmp_path):
    run_dir = tmp_path / "wm"
    out = run("train", "--task", "world_model", "--config", _tiny(tmp_path), "--output-dir", str(run_dir), "--no-progress")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "world model + CEM" in out.stdout and "straight line to the goal" in out.stdout and "offline" in out.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    p = metrics["planning"]
    assert p["planner"] == "cem" and p["pairs"] == len(EVAL_PAIRS) == 20 and p["max_steps"] == 12
    assert set(p["planners"]) == {"cem", "mppi"} and set(p["baselines"]) == {"random", "straight_line"}
    for result in [*p["planners"].values(), *p["baselines"].values()]:
        assert len(result["successes"]) == 20 and set(result["by_kind"]) == {"same_room", "cross_wall"}
        assert result["success_rate"] == np.mean(result["successes"])
        counts = _fixed_pair_counts(result["successes"])
        assert {k: v["success"] for k, v in result["counts"].items()} == counts
        assert result["by_kind"] == {k: counts[k] / 10 for k in counts}
    assert p["success_rate"] == p["planners"]["cem"]["success_rate"] and p["ms_per_step"] > 0
    # the baselines are the environment's, not the model's: straight lines reach every same-room goal
    # and the 4 cross-wall goals whose straight path passes the door; the random policy takes 12 steps always
    assert _fixed_pair_counts(p["baselines"]["straight_line"]["successes"]) == {"same_room": 10, "cross_wall": 4}
    assert p["baselines"]["straight_line"]["ms_per_step"] < p["ms_per_step"]
    off = metrics["offline"]
    assert off["horizon"] == 4 and len(off["latent_mse"]) == len(off["state_error"]) == 4 and off["windows"] == 16
    assert metrics["train_steps"] == 2 * ((18 * (13 - 2)) // 32) and metrics["judged_checkpoint"].endswith("best_model.pt")
    assert (run_dir / "history.png").read_bytes()[:4] == b"\x89PNG" and (run_dir / "config.yaml").is_file()

    # the checkpoint rebuilds the model; `jepa plan` on it reproduces the training run's episodes exactly
    state = jio.load(run_dir / "best_model.pt")
    assert type(model_from_checkpoint_state(state)).__name__ == "WorldModel"
    plan = run("plan", "--checkpoint", str(run_dir / "best_model.pt"), "--planner", "cem", "--no-baselines")
    assert plan.returncode == 0, plan.stderr[-3000:]
    again = json.loads((run_dir / "plan.json").read_text())
    assert again["planners"]["cem"]["successes"] == p["planners"]["cem"]["successes"]
    assert again["planners"]["cem"]["steps"] == p["planners"]["cem"]["steps"] and "baselines" not in again

    # random pairs: --episodes of them, kinds by the room of each end
    plan = run("plan", "--checkpoint", str(run_dir / "best_model.pt"), "--episodes", "6", "--planner", "mppi",
               "--max-steps", "4", "--output", str(tmp_path / "random.json"))
    assert plan.returncode == 0, plan.stderr[-3000:]
    rand = json.loads((tmp_path / "random.json").read_text())
    assert rand["pairs"] == 6 and rand["planner"] == "mppi" and rand["episodes"] == "random"
    assert sum(c["episodes"] for c in rand["planners"]["mppi"]["counts"].values()) == 6
    assert all(s <= 4 for s in rand["planners"]["mppi"]["steps"]) and "random actions" in plan.stdout

    resumed = run("train", "--config", _tiny(tmp_path), "--output-dir", str(run_dir), "--epochs", "3", "--resume", "auto", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at epoch 2" in resumed.stdout
    assert jio.load(run_dir / "last.pt")["epoch"] == 3
    assert json.loads((run_dir / "metrics.json").read_text())["train_steps"] == metrics["train_steps"] // 2


def test_train_on_a_trajectory_file_with_a_horizon_and_bad_files_are_refused(tmp_path):
    path = tmp_path / "my_trajectories.npz"
    collect(TwoRooms(), episodes=12, steps=10, seed=3, path=path)
    out = run("train", "--task", "world_model", "--config", _tiny(tmp_path), "--data", str(path), "--horizon", "3",
              "--epochs", "1", "--output-dir", str(tmp_path / "f"), "--no-progress")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "windows of 3 steps" in out.stdout and str(path) in out.stdout
    saved = yaml.safe_load((tmp_path / "f" / "config.yaml").read_text())
    assert saved["world_model"]["data"] == str(path) and saved["world_model"]["horizon"] == 3
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert metrics["train_steps"] == (9 * (11 - 3)) // 32 and metrics["planning"]["pairs"] == 20  # 3 of 12 episodes held out

    bad = tmp_path / "bad.npz"
    np.savez(bad, observations=np.zeros((3, 6, 2), np.float32), actions=np.zeros((3, 5), np.float32))
    out = run("train", "--task", "world_model", "--config", _tiny(tmp_path), "--data", str(bad), "--output-dir", str(tmp_path / "b"))
    assert out.returncode == 2 and "array 'actions'" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = run("train", "--task", "world_model", "--data", str(tmp_path / "missing.npz"))
    assert out.returncode == 2 and "--data" in out.stderr


def test_one_line_errors(tmp_path):
    out = run("train", "--horizon", "3", "--output-dir", str(tmp_path / "x"))
    assert out.returncode == 2 and "--task world_model" in out.stderr
    out = run("plan", "--checkpoint", str(tmp_path / "nope.pt"))
    assert out.returncode == 2 and "not found" in out.stderr
    # a JEPA checkpoint cannot plan
    from jepa.models import JEPA, Encoder, Predictor
    from jepa.trainer.checkpoints import save_checkpoint

    save_checkpoint(JEPA(Encoder(hidden_dim=16, input_dim=8, num_layers=1, num_heads=2), Predictor(16)), None, None, 0, 0.0, tmp_path / "jepa.pt")
    out = run("plan", "--checkpoint", str(tmp_path / "jepa.pt"))
    assert out.returncode == 2 and "cannot plan" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_train_on_rendered_images_then_plan_in_the_image_environment(tmp_path):
    import copy
    import os

    cfg = copy.deepcopy(TINY)
    cfg["world_model"].update(env_options={"observation": "image", "image_size": 16}, conv_channels=[4, 8], episodes=12)
    cfg["world_model"]["planning"].update(planners=["cem"], baselines=False, max_steps=3)
    cfg["training"]["epochs"] = 1
    path = tmp_path / "img.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # small convolutions: one thread is faster on a shared machine
    out = subprocess.run([sys.executable, "-m", "jepa.cli", "train", "--config", str(path), "--output-dir", str(tmp_path / "img"),
                          "--no-progress"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "img" / "metrics.json").read_text())
    assert metrics["planning"]["pairs"] == 20 and len(metrics["offline"]["state_error"]) == 4  # states recorded with the images
    state = jio.load(tmp_path / "img" / "best_model.pt")
    assert json.loads(state["model_config"])["state_encoder"]["__model__"] == "ConvEncoder"
    # jepa plan rebuilds the image environment from the run's config (env_options)
    plan = subprocess.run([sys.executable, "-m", "jepa.cli", "plan", "--checkpoint", str(tmp_path / "img" / "best_model.pt"),
                           "--episodes", "2", "--max-steps", "2", "--no-baselines"], capture_output=True, text=True, timeout=300, env=env)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert json.loads((tmp_path / "img" / "plan.json").read_text())["pairs"] == 2
