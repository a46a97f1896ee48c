"""jepa.hub.from_pretrained on our own directories, and save_pretrained/from_pretrained of the vision models."""

import json

import pytest
import torch

from jepa.hub import from_pretrained
from jepa.models import IJEPA, BaseModel, MaskedPredictor, VisionTransformer


def _vit(**kw):
    return VisionTransformer(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, **kw)


@pytest.mark.parametrize("kw", [{}, {"learned_pos_embed": True, "qkv_bias": False, "norm_eps": 1e-5}])
def test_vision_transformer_round_trip(tmp_path, kw):
    vit = _vit(**kw).eval()
    if kw:
        with torch.no_grad():
            vit.pos_embed.add_(0.5)  # a trained table is saved and restored
    vit.save_pretrained(tmp_path / "vit")
    x = torch.randn(2, 3, 16, 16)
    for restored in (VisionTransformer.from_pretrained(tmp_path / "vit"), from_pretrained(tmp_path / "vit")):
        assert type(restored) is VisionTransformer and restored.config == vit.config
        with torch.no_grad():
            assert torch.equal(restored.eval()(x), vit(x))


def test_ijepa_round_trip_keeps_encoder_predictor_target_and_ema_schedule(tmp_path):
    enc = _vit(learned_pos_embed=True)
    pred = MaskedPredictor(grid_size=4, embed_dim=32, predictor_embed_dim=16, depth=1, num_heads=2, qkv_bias=False)
    model = IJEPA(enc, pred)
    with torch.no_grad():
        for p in model.target_encoder.parameters():
            p.add_(1.0)  # the EMA target differs from the encoder
    model.set_total_steps(100)
    model.ema_step.fill_(7)
    model.save_pretrained(tmp_path / "ijepa")
    restored = from_pretrained(tmp_path / "ijepa")
    assert isinstance(restored, IJEPA) and BaseModel.from_pretrained(tmp_path / "ijepa").config == model.config
    own, back = model.state_dict(), restored.state_dict()
    assert own.keys() == back.keys() and all(torch.equal(own[k], back[k]) for k in own)
    assert int(restored.ema_step) == 7 and restored.predictor.blocks[0].attn.qkv.bias is None


def test_unknown_paths_and_configs_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type='bert', expected 'ijepa'"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vjepa2"}))
    with pytest.raises(NotImplementedError, match="V-JEPA 2"):
        from_pretrained(tmp_path)
