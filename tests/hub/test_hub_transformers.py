"""jepa.hub.from_transformers / to_transformers against real (small, random, local) transformers models."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from jepa.hub import from_pretrained, from_transformers, to_transformers  # noqa: E402
from jepa.models.vision import VisionTransformer, sincos_2d  # noqa: E402

TOL = 1e-5


def _hf(**kw):
    args = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=50, image_size=16, patch_size=4, num_channels=3)
    torch.manual_seed(0)
    return transformers.IJepaModel(transformers.IJepaConfig(**{**args, **kw})).eval()


def _hf_out(hf, x):
    with torch.no_grad():
        return hf(pixel_values=x).last_hidden_state


def _randomize(module):
    """Random values in every parameter (layer norms around 1), so that a mapping that swaps or drops
    any tensor changes the output."""
    with torch.no_grad():
        for m in module.modules():
            for p in m.parameters(recurse=False):
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if isinstance(m, torch.nn.LayerNorm) and p is m.weight else 0.0))
    return module


@pytest.mark.parametrize(
    "kw",
    [
        {},  # transformers' defaults: layer_norm_eps=1e-12, qkv biases
        {"qkv_bias": False, "layer_norm_eps": 1e-6, "num_channels": 1},
        {"image_size": [8, 20], "intermediate_size": 37},  # rectangular images, an MLP width that is not a round ratio
    ],
)
def test_from_transformers_gives_identical_outputs(kw):
    hf = _randomize(_hf(**kw))
    vit = from_transformers(hf)
    assert isinstance(vit, VisionTransformer) and not vit.training
    x = torch.randn(3, hf.config.num_channels, *vit.image_size)
    with torch.no_grad():
        ours = vit(x)
    ref = _hf_out(hf, x)
    assert ours.shape == ref.shape and (ours - ref).abs().max() <= TOL
    # random HF position embeddings are kept as a learned table
    assert vit.pos_embed.requires_grad and torch.equal(vit.pos_embed, hf.embeddings.position_embeddings)
    assert vit.norm.eps == hf.config.layer_norm_eps and (vit.blocks[0].attn.qkv.bias is None) == (not hf.config.qkv_bias)


def test_sincos_position_table_becomes_the_fixed_one():
    hf = _randomize(_hf())
    with torch.no_grad():
        hf.embeddings.position_embeddings.copy_(sincos_2d(32, (4, 4))[None])  # what released I-JEPA checkpoints hold
    vit = from_transformers(hf)
    assert "pos_embed" not in vit.state_dict() and not vit.config["learned_pos_embed"]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert (vit(x) - _hf_out(hf, x)).abs().max() <= TOL
    assert from_transformers(hf, learned_pos_embed=True).pos_embed.requires_grad
    with pytest.raises(ValueError, match="learned_pos_embed=False needs"):
        from_transformers(_hf(), learned_pos_embed=False)


@pytest.mark.parametrize("learned", [False, True])
def test_to_transformers_has_our_weights_and_outputs(learned):
    vit = VisionTransformer(image_size=(12, 16), patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.5, learned_pos_embed=learned)
    _randomize(vit).eval()
    hf = to_transformers(vit)
    assert isinstance(hf, transformers.IJepaModel) and not hf.training
    x = torch.randn(2, 3, 12, 16)
    with torch.no_grad():
        assert (_hf_out(hf, x) - vit(x)).abs().max() <= TOL
    back = from_transformers(hf)
    assert back.config == vit.config  # same constructor arguments, incl. learned_pos_embed and norm_eps
    for key, value in vit.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_transformers_weights_survive_a_round_trip_through_our_model():
    hf = _randomize(_hf(qkv_bias=False))
    again = to_transformers(from_transformers(hf))
    theirs, ours = hf.state_dict(), again.state_dict()
    assert theirs.keys() == ours.keys()
    for key in theirs:
        assert torch.equal(theirs[key], ours[key]), key


def test_exported_directory_loads_with_transformers_and_with_jepa(tmp_path):
    vit = _randomize(VisionTransformer(image_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=4)).eval()
    to_transformers(vit).save_pretrained(tmp_path / "hf")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = vit(x)
    reloaded = transformers.IJepaModel.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert (_hf_out(reloaded, x) - expected).abs().max() <= TOL
    ours = from_pretrained(tmp_path / "hf")
    assert isinstance(ours, VisionTransformer)
    with torch.no_grad():
        assert (ours(x) - expected).abs().max() <= TOL


def test_vjepa2_is_not_supported_yet():
    cfg = transformers.VJEPA2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, crop_size=16, patch_size=8, frames_per_clip=2, tubelet_size=2,
        pred_hidden_size=16, pred_num_hidden_layers=1, pred_num_attention_heads=2, num_pooler_layers=1,
    )
    with pytest.raises(NotImplementedError, match="V-JEPA 2 is a video encoder"):
        from_transformers(transformers.VJEPA2Model(cfg))


def test_wrong_models_are_refused():
    with pytest.raises(TypeError, match="model.ijepa"):
        from_transformers(transformers.IJepaForImageClassification(transformers.IJepaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16, patch_size=4)))
    with pytest.raises(TypeError, match="IJepaModel, got Linear"):
        from_transformers(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="hidden_act must be 'gelu'.*'relu'"):
        from_transformers(_hf(hidden_act="relu"))
    with pytest.raises(TypeError, match="VisionTransformer, got Linear"):
        to_transformers(torch.nn.Linear(2, 2))
