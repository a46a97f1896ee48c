"""The shipped I-JEPA recipes (ijepa_vit_small, ijepa_vit_base, ijepa_vit_huge14): the paper's
hyper-parameters, the published ViT sizes, and one training step of a tiny override of each."""

from __future__ import annotations

import pytest
import torch

from jepa.config import load_config, shipped_configs
from jepa.data import write_shapes_folder
from jepa.trainer.builders import scheduler_spec
from jepa.trainer.images import image_model, resolve_image_config
from jepa.trainer.schedulers import warmup_cosine_factor

CPU = torch.device("cpu")


def _timm_backbone(total: int, width: int, tokens: int, classes: int = 1000) -> int:
    """Parameters of a published timm ViT (ImageNet-1k head, class token, learned position
    embeddings) without those three: what remains is the I-JEPA encoder (fixed sin-cos positions)."""
    return total - (width * classes + classes) - (tokens + 1) * width - width


# (config, preset, patch, encoder width, predictor depth, epochs, encoder parameters)
RECIPES = [
    # timm vit_small_patch16_224: 22,050,664 parameters; vit_base_patch16_224: 86,567,656;
    # vit_huge_patch14_224: 632,045,800 (ViT-H/14 of "An Image is Worth 16x16 Words").
    ("ijepa_vit_small", "vit_small", 16, 384, 6, 600, _timm_backbone(22_050_664, 384, 196)),
    ("ijepa_vit_base", "vit_base", 16, 768, 6, 600, _timm_backbone(86_567_656, 768, 196)),
    ("ijepa_vit_huge14", "vit_huge", 14, 1280, 12, 300, _timm_backbone(632_045_800, 1280, 256)),
]


def _predictor_params(width: int, depth: int, inner: int = 384) -> int:
    """I-JEPA's predictor: input projection, one mask token, ``depth`` pre-norm blocks (4x MLP),
    final norm, output projection (hand count)."""
    block = 4 * inner + (3 * inner * inner + 3 * inner) + (inner * inner + inner) + (8 * inner * inner + 5 * inner)
    return (width * inner + inner) + inner + depth * block + 2 * inner + (inner * width + width)


@pytest.mark.parametrize(("name", "arch", "patch", "width", "pred_depth", "epochs", "encoder_params"), RECIPES)
def test_recipe_has_the_paper_settings_and_the_published_vit_size(name, arch, patch, width, pred_depth, epochs, encoder_params, tmp_path):
    assert name in shipped_configs()
    cfg = load_config(name)
    t, m, d = cfg.training, cfg.model, cfg.data
    assert (m.arch, m.patch_size, d.image_size, d.dataset) == (arch, patch, 224, "image_folder")
    assert (m.vit.predictor_embed_dim, m.vit.predictor_depth, m.ema_momentum, m.ema_momentum_end) == (384, pred_depth, 0.996, 1.0)
    assert (d.masks.num_targets, d.masks.target_scale, d.masks.target_aspect, d.masks.context_scale, d.masks.min_keep) == (
        4, [0.15, 0.2], [0.75, 1.5], [0.85, 1.0], 10)
    assert (t.learning_rate, t.scheduler.start_lr, t.scheduler.min_lr, t.scheduler.warmup_epochs) == (1e-3, 2e-4, 1e-6, 40)
    assert (t.weight_decay, t.weight_decay_end, t.batch_size, t.epochs, t.mixed_precision) == (0.04, 0.4, 128, epochs, True)
    assert (cfg.loss.type, cfg.loss.normalize_target, cfg.loss.var_weight, cfg.loss.cov_weight) == ("smooth_l1", True, 0.0, 0.0)
    assert (d.crop_scale, d.flip, d.color_jitter, d.normalize) == ([0.3, 1.0], False, 0.0, "imagenet")

    cfg.data.path = str(tmp_path)
    cfg = resolve_image_config(cfg, CPU)
    assert (cfg.model.arch, cfg.model.patch_size, cfg.data.image_size) == (arch, patch, 224)  # nothing re-chosen by "auto"
    with torch.device("meta"):  # sizes only: ViT-H/14 would take gigabytes
        model = image_model(cfg, 3, None, None)
    assert model.encoder.embed_dim == width
    assert sum(p.numel() for p in model.encoder.parameters()) == encoder_params
    assert sum(p.numel() for p in model.predictor.parameters()) == _predictor_params(width, pred_depth)
    assert sum(p.numel() for p in model.target_encoder.parameters()) == encoder_params


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shapes_folder(tmp_path_factory.mktemp("recipes") / "images", num_train=8, num_val=4, image_size=24, num_classes=2)


@pytest.mark.parametrize(("name", "arch", "patch", "width"), [r[:4] for r in RECIPES])
def test_tiny_override_of_recipe_trains_one_step(name, arch, patch, width, folder, tmp_path):
    from jepa.trainer import JEPATrainer

    cfg = load_config(name)
    cfg.data.path, cfg.data.image_size, cfg.data.num_workers = str(folder), 4 * patch, 0  # a 4x4 patch grid
    cfg.data.masks.min_keep = 4
    cfg.model.vit.depth, cfg.model.vit.predictor_depth = 1, 1
    cfg.training.epochs, cfg.training.batch_size, cfg.training.device = 1, 8, "cpu"  # 8 training images: one step
    cfg.logging.output_dir, cfg.logging.progress_bar, cfg.logging.loggers = str(tmp_path), False, []
    cfg.logging.collapse_check_every_n_steps = 0
    trainer = JEPATrainer(cfg)
    assert trainer.autocast_dtype == torch.bfloat16  # the recipe's bf16
    before = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    history = trainer.train()
    assert trainer.global_step == 1 and len(history["train_loss"]) == 1
    assert torch.isfinite(torch.tensor(history["train_loss"][0]))
    assert trainer.model.encoder.embed_dim == width and len(trainer.model.encoder.blocks) == 1
    after = trainer.model.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_start_lr_warms_up_from_it():
    # I-JEPA: linear from start_lr to lr over the warmup, then cosine to min_lr
    assert warmup_cosine_factor(0, 100, 10, 0.0, start_ratio=0.2) == pytest.approx(0.2 + 0.8 * 1 / 10)
    assert warmup_cosine_factor(9, 100, 10, 0.0, start_ratio=0.2) == pytest.approx(1.0)
    assert warmup_cosine_factor(0, 100, 10, 0.0) == pytest.approx(0.1)  # unchanged without start_lr
    cfg = load_config("ijepa_vit_base")  # warmup 40 of 600 epochs, start 2e-4, lr 1e-3, min 1e-6
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.training.learning_rate)
    sched = scheduler_spec(cfg)(opt, 6000)  # 10 steps per epoch: 400 warmup steps
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4 + 8e-4 / 400)
    for _ in range(399):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    for _ in range(5600):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6, rel=1e-3)
    cfg.training.scheduler.start_lr = 2e-3
    with pytest.raises(ValueError, match="training.scheduler.start_lr"):
        from jepa.trainer.builders import check_training

        check_training(cfg)
