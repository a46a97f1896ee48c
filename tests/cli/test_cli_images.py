"""`jepa train --data DIR` and `jepa evaluate --data DIR` end to end on small generated folders, and
every bad input of an image run: one clear line, exit code 2 (or handled)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

import jepa.io as jio
from jepa.cli.main import main
from jepa.data import ImageFolderDataset, write_shapes_folder
from jepa.trainer.checkpoints import model_from_checkpoint_state
from jepa.trainer.eval import linear_probe_accuracy
from jepa.trainer.image_probes import encode_images

PROBE_KEYS = {"pretrained", "random_init", "raw_input"}


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "jepa.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("cli") / "shapes", num_train=40, num_val=12, image_size=16, num_classes=4)


def test_train_on_a_folder_writes_the_digits_probe_keys_and_evaluate_probes_the_checkpoint(shapes, tmp_path):
    out = run("train", "--data", str(shapes), "--image-size", "16", "--patch-size", "4", "--epochs", "2", "--batch-size", "8",
              "--output-dir", str(tmp_path / "run"), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "training I-JEPA (vit_tiny" in out.stdout and "linear probe accuracy" in out.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["probe"]) == PROBE_KEYS and all(set(v) == {"10_per_class", "all"} for v in metrics["probe"].values())
    assert all(0.0 <= v <= 1.0 for row in metrics["probe"].values() for v in row.values())
    # the resolved run is what config.yaml says; probes fit on train, scored on val, as reported
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (cfg["data"]["dataset"], cfg["data"]["image_size"], cfg["model"]["patch_size"], cfg["model"]["arch"]) == (
        "image_folder", 16, 4, "vit_tiny")
    model = model_from_checkpoint_state(jio.load(tmp_path / "run" / "checkpoints" / "last.pt")).eval()
    train, val = ImageFolderDataset(shapes, 16, split="train"), ImageFolderDataset(shapes, 16, split="val")
    ztr, ytr = encode_images(model, train)
    zva, yva = encode_images(model, val)
    assert abs(metrics["probe"]["pretrained"]["all"] - linear_probe_accuracy(ztr, ytr, zva, yva)) <= 1 / len(val)
    assert metrics["embedding_dim"] == model.encoder.embed_dim and int(model.ema_step) == 2 * (40 // 8)

    ev = run("evaluate", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"), "--data", str(shapes),
             "--labels-per-class", "5", "--output", str(tmp_path / "ev.json"))
    assert ev.returncode == 0, ev.stderr
    report = json.loads((tmp_path / "ev.json").read_text())
    assert report["downstream"]["labels_per_class"] == 5 and report["downstream"]["val_images"] == 12
    assert set(report["downstream"]) >= {"linear", "knn"} and report["prediction"]["loss"] > 0
    assert "classification knn accuracy" in ev.stdout


def _one_line_error(capsys, argv, match):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a flag's value itself
        code = exc.code
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(("jepa: error:", "jepa train: error:")) and match in err[0], err


def test_bad_folders_and_sizes_are_one_line_errors(tmp_path, capsys, shapes):
    common = ["--epochs", "1", "--batch-size", "8", "--output-dir", str(tmp_path / "run"), "--no-progress"]
    _one_line_error(capsys, ["train", "--data", str(tmp_path / "missing"), *common], "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["train", "--data", str(tmp_path / "empty"), *common], "empty folder")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("not an image")
    _one_line_error(capsys, ["train", "--data", str(tmp_path / "texts"), *common], "no image files")
    _one_line_error(capsys, ["train", "--data", str(shapes), "--image-size", "30", "--patch-size", "4", *common],
                    "image size 30 (data.image_size / --image-size) is not divisible by the patch size 4")
    cfg = tmp_path / "masks.yaml"
    cfg.write_text("data:\n  masks:\n    num_targets: 4\n    target_scale: [0.4, 0.5]\n    min_keep: 12\n")
    _one_line_error(capsys, ["train", "--config", str(cfg), "--data", str(shapes), "--image-size", "16", "--patch-size", "4", *common],
                    "min_keep=12) on a 4x4 patch grid")
    _one_line_error(capsys, ["train", "--data", str(shapes), "--model", "vit_giant", *common], "--model")
    _one_line_error(capsys, ["train", "--data", str(shapes), "--patch-size", "0", *common], "--patch-size")


def test_evaluate_data_needs_an_image_checkpoint(tmp_path, capsys, shapes):
    out = run("train", "--epochs", "1", "--output-dir", str(tmp_path / "digits"), "--no-progress", "--config", "quick")
    assert out.returncode == 0, out.stderr
    _one_line_error(capsys, ["evaluate", "--checkpoint", str(tmp_path / "digits" / "checkpoints" / "last.pt"), "--data", str(shapes)],
                    "needs an image (I-JEPA) checkpoint")


def _odd_folder(root):
    """Two classes of mixed sizes and modes (greyscale, RGBA, palette, RGB), one flat image is not allowed."""
    g = torch.Generator().manual_seed(0)
    for c, modes in (("a", ("L", "RGBA", "P", "RGB") * 3), ("b", ("RGB", "LA", "L", "RGBA") * 3)):
        (root / c).mkdir(parents=True)
        for i, mode in enumerate(modes):
            w, h = 12 + int(torch.randint(0, 30, (1,), generator=g)), 10 + int(torch.randint(0, 30, (1,), generator=g))
            array = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(array).convert(mode).save(root / c / f"{i}.png")
    return root


def test_mixed_sizes_greyscale_and_rgba_images_train_and_an_unreadable_file_is_named(tmp_path, capsys):
    folder = _odd_folder(tmp_path / "odd")
    common = ["--image-size", "16", "--patch-size", "4", "--epochs", "1", "--batch-size", "4", "--no-progress"]
    assert main(["train", "--data", str(folder), "--output-dir", str(tmp_path / "ok"), *common]) == 0
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text())["probe"]["pretrained"]["all"] >= 0.0
    capsys.readouterr()
    (folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a truncated PNG
    _one_line_error(capsys, ["train", "--data", str(folder), "--output-dir", str(tmp_path / "bad"), *common],
                    f"cannot decode image file {str(folder / 'a' / 'broken.png')!r}")
    cfg = tmp_path / "skip.yaml"
    cfg.write_text("data:\n  on_error: skip\n")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert main(["train", "--config", str(cfg), "--data", str(folder), "--output-dir", str(tmp_path / "skip"), *common]) == 0
