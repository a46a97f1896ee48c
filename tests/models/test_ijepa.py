import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from jepa.data import MultiBlockMaskCollator, TensorImageDataset
from jepa import ops
from jepa.models import IJEPA, JEPA, BaseModel, MaskedPredictor, Projector, VisionTransformer

KEYS = {"prediction", "target_tokens", "target_index", "target_valid", "context", "context_valid", "pooled"}


def _model(**kw):
    enc = VisionTransformer(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    pred = MaskedPredictor(grid_size=(4, 4), embed_dim=32, predictor_embed_dim=16, depth=1, num_heads=2)
    return IJEPA(enc, pred, **kw)


def _prediction_loss(out):
    """I-JEPA's loss over the outputs (the trainer's IJEPALoss is tested in tests/trainer)."""
    return ops.jepa_loss(out["prediction"], out["target_tokens"], mask=out["target_valid"], target_index=out["target_index"])


def _masks(batch=3, seed=0):
    col = MultiBlockMaskCollator(grid=(4, 4), num_targets=2, target_scale=(0.1, 0.2), min_keep=2)
    return col.sample(batch, torch.Generator().manual_seed(seed))._asdict()


def test_forward_returns_named_outputs_with_their_shapes():
    model = _model()
    images = torch.randn(3, 3, 16, 16)
    masks = _masks()
    out = model(images, **masks)
    assert set(out) == KEYS
    k, lt = masks["target_idx"].shape[1:]
    lc = masks["context_idx"].shape[1]
    assert out["prediction"].shape == (3, k * lt, 32) and out["prediction"].requires_grad
    assert out["target_tokens"].shape == (3, 16, 32) and not out["target_tokens"].requires_grad
    assert torch.equal(out["target_index"], masks["target_idx"].reshape(3, k * lt))
    assert torch.equal(out["target_valid"], masks["target_valid"].reshape(3, k * lt))
    assert out["context"].shape == (3, lc, 32) and torch.equal(out["context_valid"], masks["context_valid"])
    assert out["pooled"].shape == (3, 32)
    # pooled = mean of the valid context tokens, computed by hand
    v = masks["context_valid"]
    by_hand = torch.stack([out["context"][i][v[i]].mean(0) for i in range(3)])
    assert torch.allclose(out["pooled"], by_hand, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(out["target_tokens"], model.target_encoder(images))


def test_prediction_sees_only_context_pixels_and_target_sees_everything():
    model = _model().eval()
    images = torch.randn(1, 3, 16, 16)
    ctx = torch.tensor([[0, 1, 2, 3, 4, 5]])
    tgt = torch.tensor([[[10, 11], [14, 15]]])
    out = model(images, ctx, tgt)
    changed = images.clone()
    changed[..., 8:16, 8:16] = 50.0  # patches 10, 11, 14, 15: targets, not context
    out2 = model(changed, ctx, tgt)
    assert torch.equal(out["prediction"], out2["prediction"])
    assert not torch.allclose(out["target_tokens"], out2["target_tokens"])


def test_projector_output_is_added():
    model = _model(projector=Projector(32, 16, 8))
    out = model(torch.randn(3, 3, 16, 16), **_masks())
    assert out["projection"].shape == (3, 8)


def test_forward_batch_takes_the_collated_dict_and_ignores_labels():
    model = _model()
    images = torch.randn(3, 3, 16, 16)
    masks = _masks()
    a = model.forward_batch({"images": images, "labels": torch.arange(3), **masks})
    b = model(images, **masks)
    assert set(a) == KEYS and all(torch.equal(a[k], b[k]) for k in KEYS if k != "prediction")
    assert torch.allclose(a["prediction"], b["prediction"])
    assert {"prediction", "target_tokens", "target_index", "target_valid"} <= set(model.unbatched_outputs)
    assert "pooled" not in model.unbatched_outputs  # the regularizer's input is gathered across ranks
    with pytest.raises(TypeError, match="MultiBlockMaskCollator"):
        model.forward_batch((images, masks["context_idx"]))
    with pytest.raises(ValueError, match=r"lacks \['target_idx'\]"):
        model.forward_batch({"images": images, "context_idx": masks["context_idx"]})


def test_one_hand_written_optimisation_step_trains_only_online_modules_and_moves_target_by_ema():
    torch.manual_seed(0)
    model = _model(momentum=0.9)
    images = torch.randn(4, 3, 16, 16)
    masks = _masks(batch=4)
    online = [p for m in model.online_modules() for p in m.parameters()]
    assert {id(p) for p in online} == {id(p) for p in model.encoder.parameters()} | {id(p) for p in model.predictor.parameters()}
    opt = torch.optim.AdamW(online, lr=1e-2)
    target_before = {k: v.clone() for k, v in model.target_encoder.state_dict().items()}
    online_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    for a, b in zip(model.encoder.parameters(), model.target_encoder.parameters()):
        assert torch.equal(a, b)  # the target starts as a copy of the context encoder

    loss = _prediction_loss(model(images, **masks))  # forward
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for name, p in list(model.encoder.named_parameters()) + list(model.predictor.named_parameters()):
        assert p.grad is not None, name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.encoder.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in model.predictor.parameters())
    for p in model.target_encoder.parameters():
        assert p.grad is None and not p.requires_grad
    opt.step()
    for k, v in model.target_encoder.state_dict().items():
        assert torch.equal(v, target_before[k])  # the optimizer does not touch the target

    m = model.update_target_encoder()  # EMA, momentum from the schedule (no total steps: the start value)
    assert m == pytest.approx(0.9)
    online_after = model.encoder.state_dict()
    moved = 0
    for k, v in model.target_encoder.state_dict().items():
        expected = 0.9 * target_before[k] + 0.1 * online_after[k]
        assert torch.allclose(v, expected, atol=1e-6), k
        moved += int(not torch.equal(online_after[k], online_before[k]))
    assert moved > 0 and int(model.ema_step) == 1


def test_dataloader_collator_and_model_work_together():
    ds = TensorImageDataset(torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8), labels=list(range(6)))
    col = MultiBlockMaskCollator(grid=(4, 4), num_targets=2, target_scale=(0.1, 0.2), min_keep=2)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=col)))
    model = _model()
    out = model(batch["images"], **{k: v for k, v in batch.items() if k not in ("images", "labels")})
    assert torch.isfinite(_prediction_loss(out))


def test_embed_pools_full_images_with_either_encoder():
    model = _model()
    images = torch.randn(2, 3, 16, 16)
    z = model.embed(images)
    assert z.shape == (2, 32) and not z.requires_grad
    with torch.no_grad():
        assert torch.allclose(z, model.encoder(images).mean(1))
        assert torch.allclose(model.embed(images, use_target=True), model.target_encoder(images).mean(1))


def test_save_and_load_round_trip(tmp_path):
    model = _model(momentum=0.99)
    model.set_total_steps(10)
    model.update_target_encoder()
    model.save_pretrained(tmp_path / "ijepa")
    loaded = IJEPA.from_pretrained(tmp_path / "ijepa")
    assert isinstance(loaded, IJEPA) and isinstance(BaseModel.from_pretrained(tmp_path / "ijepa"), JEPA)
    assert loaded.momentum_start == 0.99 and int(loaded.ema_step) == 1 and int(loaded.ema_total_steps) == 10
    images, masks = torch.randn(2, 3, 16, 16), _masks(batch=2)
    a, b = model(images, **masks), loaded(images, **masks)
    assert all(torch.equal(a[k], b[k]) for k in KEYS)


def test_from_preset_follows_ijepa_predictor_defaults():
    with torch.device("meta"):
        small = IJEPA.from_preset("vit_small", image_size=224)
        huge = IJEPA.from_preset("vit_huge", image_size=224)
        tiny = IJEPA.from_preset("vit_tiny", image_size=32, patch_size=4, depth=2, predictor_depth=1)
    assert small.predictor.predictor_embed_dim == 384 and len(small.predictor.blocks) == 6
    assert small.predictor.blocks[0].attn.num_heads == 6
    assert huge.encoder.patch_size == 14 and huge.predictor.grid_size == (16, 16) and len(huge.predictor.blocks) == 12
    assert huge.predictor.blocks[0].attn.num_heads == 16  # head size 24, as I-JEPA's ViT-H predictor
    assert tiny.encoder.grid_size == (8, 8) and len(tiny.encoder.blocks) == 2 and tiny.predictor.predictor_embed_dim == 192
    with pytest.raises(ValueError, match="arch must be one of"):
        IJEPA.from_preset("resnet50")


def test_bad_compositions_are_refused():
    enc = VisionTransformer(image_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(TypeError, match="VisionTransformer"):
        IJEPA(torch.nn.Linear(2, 2), MaskedPredictor(4, 32, 16, 1, 2))
    with pytest.raises(TypeError, match="MaskedPredictor"):
        IJEPA(enc, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="embed_dim"):
        IJEPA(enc, MaskedPredictor(4, 64, 16, 1, 2))
    with pytest.raises(ValueError, match="grid"):
        IJEPA(enc, MaskedPredictor(8, 32, 16, 1, 2))
    with pytest.raises(ValueError, match=r"target_idx must be \(B, K, Lt\)"):
        _model()(torch.randn(1, 3, 16, 16), torch.tensor([[0, 1]]), torch.tensor([[5, 6]]))
