"""Every Python example of the documentation's training-API pages and guides, run as written, in page
order, with small real data where the page has ``...``; then a check of what the examples produced."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from doc_blocks import blocks, run_page


def _pairs(n: int, t: int, d: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, d, generator=g)
    return TensorDataset(x, x + 0.1 * torch.randn(n, t, d, generator=g))


@pytest.fixture
def torchrun_env(monkeypatch):
    """The environment torchrun gives a 1-process job (a real gloo group on this machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def _is_png(path) -> bool:
    return Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_api_page(tmp_path, monkeypatch, torchrun_env):
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "doc_example", "_pairs": _pairs}
    try:
        run_page(
            "training-api/v1.md",
            ns,
            {
                "train_dataset = ...": "train_dataset = _pairs(96, 4, 256)",
                "test_loader = ...": "test_loader = DataLoader(_pairs(32, 4, 256, seed=1), batch_size=16)",
            },
        )
    finally:
        if "trainer" in ns:
            ns["trainer"].close()  # the last trainer of the page is the distributed one: leaves the group
    from jepa.models import JEPA

    assert len(ns["history"]["train_loss"]) == 3 and all(math.isfinite(v) for v in ns["history"]["train_loss"])
    assert isinstance(ns["restored"], JEPA) and not ns["restored"].training
    for key, value in ns["model"].state_dict().items():
        assert torch.equal(ns["restored"].state_dict()[key], value), key
    assert {"loss", "mse", "cosine_similarity", "effective_rank"} <= set(ns["metrics"])
    assert _is_png("history.png") and Path("run/config.yaml").is_file() and Path("checkpoints/checkpoint_epoch_10.pt").is_file()


@pytest.fixture
def default_config_file(tmp_path, monkeypatch):
    """The page's `jepa config --output config/default_config.yaml`, then shortened for the test
    (1 epoch, no progress bar); everything else as shipped."""
    monkeypatch.chdir(tmp_path)
    (command,) = [line for block in blocks("training-api/v0.md", "bash") for line in block.splitlines() if line.startswith("jepa config")]
    args = command.split()[1:]
    out = subprocess.run([sys.executable, "-m", "jepa.cli", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    from jepa.config import load_config, save_config

    config = load_config("config/default_config.yaml")
    config.training.epochs = 1
    config.logging.progress_bar = False
    save_config(config, "config/default_config.yaml")
    return tmp_path


def test_config_training_api_page(default_config_file, torchrun_env, capsys):
    ns: dict = {"__name__": "doc_example"}
    run_page("training-api/v0.md", ns)
    assert "Starting epoch 0" in capsys.readouterr().out  # the custom callback ran
    assert ns["embeddings"].shape == (10, 16 * ns["config"].model.hidden_dim)  # the flattened 4x4 token grid (model.pool)
    assert 0.5 < ns["downstream_results"]["linear"]["accuracy"] <= 1.0  # digits: a working probe
    assert ns["epoch"] == 10 and Path("checkpoints/epoch_10.pth").is_file() and ns["metrics"]["mse"] >= 0
    assert Path("logs/metrics.csv").is_file() and Path("artifacts/best/config.json").is_file()
    assert len(ns["history"]["train_loss"]) == 1 and math.isfinite(ns["test_metrics"]["loss"])
    assert Path("runs/default/checkpoints/best_model.pt").is_file()


def test_config_training_api_yaml_block_loads(tmp_path):
    from jepa.config import load_config

    (block,) = blocks("training-api/v0.md", "yaml")
    path = tmp_path / "training.yaml"
    path.write_text(block)
    t = load_config(path).training
    assert (t.epochs, t.batch_size, t.learning_rate, t.weight_decay) == (100, 64, 1e-4, 1e-2)
    assert t.optimizer.type == "adamw" and t.optimizer.betas == [0.9, 0.999] and t.optimizer.eps == 1e-8
    assert (t.scheduler.type, t.scheduler.warmup_epochs, t.scheduler.min_lr) == ("cosine", 10, 1e-6)
    assert t.mixed_precision is True and t.gradient_clip == 1.0 and t.gradient_accumulation == 1
    assert (t.validation.frequency, t.validation.patience) == (5, 10)


def test_quickstart_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = run_page("guides/quickstart.md", {"__name__": "doc_example"}, {"torch.randn(512, 8, 256)": "torch.randn(128, 8, 256)"})
    assert len(ns["history"]["train_loss"]) == 5
    for key, value in ns["model"].state_dict().items():
        assert torch.equal(ns["restored"].state_dict()[key], value), key


def test_images_guide(tmp_path, monkeypatch):
    from jepa.data import write_shapes_folder
    from jepa.models import IJEPA

    monkeypatch.chdir(tmp_path)
    write_shapes_folder("photos", num_train=64, num_val=20, image_size=32, seed=0)
    ns = run_page("guides/images.md", {"__name__": "doc_example"})
    assert isinstance(ns["model"], IJEPA) and int(ns["model"].ema_step) == 2 * len(ns["loader"])
    assert math.isfinite(ns["loss"].item())
    assert ns["train_x"].shape == (len(ns["train_eval"]), 192) and 0.0 <= ns["val_x"].abs().mean() < math.inf
    assert IJEPA.from_pretrained("artifacts/ijepa-photos").config == ns["model"].config


def _official_ijepa_file(path: Path):
    """A small checkpoint in the official I-JEPA layout (names of facebookresearch/ijepa), made from one
    of our models by renaming its tensors; returns that model."""
    from jepa.models import IJEPA

    torch.manual_seed(0)
    model = IJEPA.from_preset("vit_tiny", image_size=32, patch_size=8, depth=2, predictor_depth=1)

    def rename(state, prefix_map):
        out = {}
        for key, value in state.items():
            for old, new in prefix_map:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
            out["module." + key.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.3.", ".mlp.fc2.")] = value
        return out

    enc_map = [("patch_embed.", "patch_embed.proj.")]
    encoder = rename(model.encoder.state_dict(), enc_map) | {"module.pos_embed": model.encoder.pos_embed}
    target = rename(model.target_encoder.state_dict(), enc_map) | {"module.pos_embed": model.encoder.pos_embed}
    predictor = rename(
        model.predictor.state_dict(),
        [("input_proj.", "predictor_embed."), ("blocks.", "predictor_blocks."), ("norm.", "predictor_norm."), ("proj.", "predictor_proj.")],
    ) | {"module.predictor_pos_embed": model.predictor.pos_embed[None]}
    torch.save({"encoder": encoder, "predictor": predictor, "target_encoder": target, "epoch": 300}, path)
    return model


def test_weights_guide(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    from jepa.models import IJEPA, VisionTransformer

    monkeypatch.chdir(tmp_path)
    reference = _official_ijepa_file(tmp_path / "IN1K-vit.h.14-300e.pth.tar")
    config = transformers.IJepaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=16, patch_size=4, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    ns = {"__name__": "doc_example", "TINY_HF": transformers.IJepaModel(config).eval()}
    run_page("guides/weights.md", ns, {'IJepaModel.from_pretrained("facebook/ijepa_vith14_1k")': "TINY_HF"})
    assert (ns["ours"] - ns["theirs"]).abs().max() <= 1e-5
    assert isinstance(ns["exported"], transformers.IJepaModel) and Path("artifacts/my-ijepa-hf/config.json").is_file()
    assert isinstance(ns["model"], IJEPA) and isinstance(ns["ijepa"], IJEPA)
    for key, value in reference.state_dict().items():
        assert torch.equal(ns["model"].state_dict()[key], value), key
    assert isinstance(ns["same"], VisionTransformer) and isinstance(ns["from_hf"], VisionTransformer)


def test_kernels_guide():
    run_page("guides/kernels.md", {"__name__": "doc_example"})


def test_world_models_guide(tmp_path, monkeypatch):
    from jepa.models import WorldModel

    monkeypatch.chdir(tmp_path)
    ns = run_page("guides/world_models.md", {"__name__": "doc_example"})
    assert len(ns["data"]) == 60 * (21 - 4) and tuple(ns["obs"].shape) == (5, 2) and tuple(ns["actions"].shape) == (4, 2)
    assert len(ns["history"]["train_loss"]) == 3 and all(math.isfinite(v) for v in ns["history"]["train_loss"])
    assert ns["result"].steps <= 5 and ns["result"].ms_per_step > 0
    assert len(ns["errors"]["latent_relative"]) == len(ns["errors"]["state_error"]) == 8
    assert isinstance(ns["trainer"].model, WorldModel) and Path("runs/wm-config/best_model.pt").is_file()
    assert ns["report"]["pairs"] == 2 and ns["report"]["baselines"]["straight_line"]["success_rate"] == 1.0
    assert tuple(ns["image_out"]["rollout"].shape) == (16, 2, 8) and ns["frames"]["states"].shape == (8, 11, 2)


def test_every_page_with_python_is_run_here():
    """A new page with Python examples must be added to this file (or to the list of pages without)."""
    from doc_blocks import DOCS

    run_here = {"training-api/v1.md", "training-api/v0.md", "guides/quickstart.md", "guides/images.md", "guides/weights.md", "guides/kernels.md"}
    run_here |= {"guides/world_models.md"}
    with_python = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if blocks(str(p.relative_to(DOCS)))}
    assert with_python == run_here


def _command_lines(page: str) -> list[str]:
    """The shell commands of a page's bash blocks, continuation lines joined, comments dropped."""
    text = "\n".join(blocks(page, "bash")).replace("\\\n", " ")
    return [line.split("#")[0].strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_documented_jepa_commands_use_existing_flags():
    """torchrun gets `-m jepa.cli` (never `python -m ...`, which makes it look for a script named
    python), and every `jepa <command> --flag` of the pages is a flag of that command."""
    pages = ("training-api/v1.md", "training-api/v0.md", "guides/distributed.md", "guides/quickstart.md", "guides/weights.md")
    pages += ("guides/world_models.md",)
    lines = [line for page in pages for line in _command_lines(page)]
    torchrun = [line for line in lines if line.startswith("torchrun")]
    assert len(torchrun) == 5 and all(" -m jepa.cli " in line and " python " not in line for line in torchrun)
    helps: dict[str, str] = {}
    checked = 0
    for line in lines:
        words = line.split()
        if "jepa.cli" in words:
            words = words[words.index("jepa.cli"):]
        elif words[0] == "jepa":
            words = ["jepa.cli", *words[1:]]
        else:
            continue
        command = words[1]
        if command not in helps:
            out = subprocess.run([sys.executable, "-m", "jepa.cli", command, "--help"], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            helps[command] = out.stdout
        for flag in (w for w in words[2:] if w.startswith("--")):
            assert flag in helps[command], f"{line!r}: `jepa {command}` has no {flag}"
            checked += 1
    assert checked >= 15


def test_files_named_by_the_pages_exist():
    """Every repository file a page points readers to (benchmark scripts, tests, READMEs) exists."""
    import re

    from doc_blocks import DOCS

    root = DOCS.parent
    named = set()
    for page in DOCS.rglob("*.md"):
        named |= set(re.findall(r"\b((?:benchmarks|tests|kernels|csrc|jepa)/[\w./-]+\.(?:py|sh|md|cu|h))\b", page.read_text()))
    assert len(named) >= 15
    missing = sorted(p for p in named if not (root / p).is_file())
    assert not missing, f"the docs name files that do not exist: {missing}"
