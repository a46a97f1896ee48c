import json
import subprocess
import sys
import pytest



def run(*args, cwd=None, timeout=300):
    """``python -m jepa.cli ARGS`` with the installed package (the same as the ``jepa`` script)."""
    return subprocess.run([sys.executable, "-m", "jepa.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_train_writes_metrics_table_and_checkpoints(tmp_path):
    out = run("train", "--epochs", "1", "--output-dir", str(tmp_path / "run"), "--no-progress")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for who in ("pretrained", "random_init", "raw_input"):
        for k in ("10_per_class", "all"):
            assert 0.0 <= metrics["probe"][who][k] <= 1.0
    assert metrics["probe"]["raw_input"]["all"] > 0.9  # the probe itself works: raw digits are easy
    assert 1.0 <= metrics["effective_rank"] <= metrics["embedding_dim"] == 64
    assert "linear probe accuracy" in out.stdout and "effective rank" in out.stdout
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
    assert 0.0 < report["downstream"]["linear"]["accuracy"] <= 1.0 and 0.0 < report["downstream"]["knn"]["accuracy"] <= 1.0
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
