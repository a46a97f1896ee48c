import json
import subprocess
import sys
import pytest

import jepa.io as jio
from jepa.data import load_digits_split
from jepa.trainer.checkpoints import model_from_checkpoint_state
from jepa.trainer.eval import JEPAEvaluator, linear_probe_accuracy


def run(*args, cwd=None, timeout=300):
    """``python -m jepa.cli ARGS`` with the installed package (the same as the ``jepa`` script)."""
    return subprocess.run([sys.executable, "-m", "jepa.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_train_writes_metrics_table_and_checkpoints(tmp_path):
    out = run("train", "--epochs", "1", "--output-dir", str(tmp_path / "run"), "--no-progress")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # every probe is far above chance (10 classes) ...
    for who in ("pretrained", "random_init", "raw_input"):
        assert metrics["probe"][who]["10_per_class"] > 0.3 and metrics["probe"][who]["all"] > 0.5, who
    assert metrics["probe"]["raw_input"]["all"] > 0.9  # the probe itself works: raw digits are easy
    # ... and reports what the saved encoder and the raw pixels give when probed again here (the
    # encoder's numbers up to a test sample or two flipping with the thread count)
    tr, te = load_digits_split("train"), load_digits_split("test")
    model = model_from_checkpoint_state(jio.load(tmp_path / "run" / "checkpoints" / "last.pt")).eval()
    features = {"pretrained": (model.embed(tr.tokens), model.embed(te.tokens)), "raw_input": (tr.images, te.images)}
    for who, (ztr, zte) in features.items():
        for k, n in (("10_per_class", 10), ("all", None)):
            again = linear_probe_accuracy(ztr, tr.labels, zte, te.labels, n, seed=0)
            assert abs(metrics["probe"][who][k] - again) <= 2 / len(te), (who, k)
    assert 1.0 <= metrics["effective_rank"] <= metrics["embedding_dim"] == 16 * 64  # the flattened 4x4 grid of 64-wide tokens
    assert "linear probe accuracy" in out.stdout and "effective rank" in out.stdout
    # the recipe, the best-checkpoint rule and the run-health monitors, printed and in metrics.json
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert metrics["recipe"]["name"] == "I-JEPA + VC" and "recipe: I-JEPA + VC" in out.stdout
    assert metrics["best_model"] == {"monitor": "val_accuracy", "mode": "max", "value": history["val_accuracy"][0]}
    assert "best_model.pt: kept by val_accuracy" in out.stdout
    mons = metrics["monitors"]
    assert mons["val_accuracy"] == history["val_accuracy"][-1] and 0.5 < mons["val_accuracy"] <= 1.0
    assert 1.0 <= mons["rankme"] <= 64 and mons["lidar"] > 0  # at most the 64 held-out rows it measures and "last monitors: val_accuracy" in out.stdout
    cost = metrics["probe_cost"]  # the online probe's share of an epoch, measured and printed
    assert 0 < cost["probe_seconds"] < cost["epoch_seconds"] <= metrics["train_seconds"] + 0.005  # train_seconds: rounded to 0.01 s
    assert cost["fraction_of_epoch"] == pytest.approx(cost["probe_seconds"] / cost["epoch_seconds"])
    assert f"{100 * cost['fraction_of_epoch']:.1f}% of an epoch" in out.stdout
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()

    ev = run("evaluate", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"), "--output", str(tmp_path / "ev.json"))
    assert ev.returncode == 0, ev.stderr
    assert "cosine_similarity" in ev.stdout and json.loads((tmp_path / "ev.json").read_text())["prediction"]["loss"] > 0
    assert "effective_rank" in ev.stdout and "collapsed" in ev.stdout

    ev = run(
        "evaluate", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"),
        "--task", "classification", "--labels-per-class", "10", "--plots", str(tmp_path / "plots"),
    )
    assert ev.returncode == 0, ev.stderr
    report = json.loads((tmp_path / "run" / "checkpoints" / "evaluation.json").read_text())
    assert report["downstream"]["labels_per_class"] == 10
    # the same evaluation of the checkpoint, here: the same numbers (up to a sample or two), far above chance
    evaluator = JEPAEvaluator.from_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", device="cpu")
    down = evaluator.evaluate_downstream("classification", (tr.tokens, tr.labels), (te.tokens, te.labels), method="both", labels_per_class=10)
    for method in ("linear", "knn"):
        assert abs(report["downstream"][method]["accuracy"] - down[method]["accuracy"]) <= 2 / len(te), method
        assert report["downstream"][method]["accuracy"] > 0.3, method
    assert "classification linear accuracy" in ev.stdout
    assert (tmp_path / "plots" / "embeddings.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "plots" / "history.png").is_file()

    resumed = run("train", "--epochs", "2", "--output-dir", str(tmp_path / "run"), "--no-progress", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at epoch 1" in resumed.stdout


def test_config_command_writes_loadable_default(tmp_path):
    out = run("config", "--output", "config/default_config.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    from jepa.config import load_config

    assert load_config(tmp_path / "config" / "default_config.yaml") == load_config("default")


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--lr", "-1"], "--lr"),
        (["train", "--batch-size", "abc"], "--batch-size"),
        (["train", "--config", "missing.yaml"], "missing.yaml"),
        (["train", "--resume", "missing.pt", "--epochs", "1"], "missing.pt"),
        (["train", "--distributed", "maybe"], "--distributed"),
        (["train", "--bogus"], "--bogus"),
        (["evaluate", "--checkpoint", "missing.pt"], "missing.pt"),
        (["evaluate", "--checkpoint", "missing.pt", "--task", "segmentation"], "--task"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, args, message):
    out = run(*args, "--output-dir", str(tmp_path)) if args[0] == "train" and "--bogus" not in args else run(*args, cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0] and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_bad_config_value_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("training:\n  epochz: 3\n")
    out = run("train", "--config", str(cfg))
    assert out.returncode == 2 and "did you mean 'training.epochs'" in out.stderr and "Traceback" not in out.stderr
