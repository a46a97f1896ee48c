import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils import flop_counter

from jepa.models import BaseModel
from jepa.models.vision import (
    VIT_PRESETS,
    MaskedPredictor,
    VisionTransformer,
    build_vit,
    sincos_2d,
    vit_base,
    vit_huge,
    vit_large,
    vit_small,
    vit_tiny,
)


def _vit(**kw):
    args = {"image_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
    return VisionTransformer(**{**args, **kw}).eval()


def test_sincos_2d_matches_hand_computed_values():
    pe = sincos_2d(8, (2, 3))
    assert pe.shape == (6, 8) and pe.dtype == torch.float32
    # patch (row 1, col 2) = index 5: first half encodes the column, second half the row,
    # each [sin(p w0), sin(p w1), cos(p w0), cos(p w1)] with w = 1 / 10000 ** ([0, 1] / 2)
    w = [1.0, 0.01]
    col = [math.sin(2 * w[0]), math.sin(2 * w[1]), math.cos(2 * w[0]), math.cos(2 * w[1])]
    row = [math.sin(1 * w[0]), math.sin(1 * w[1]), math.cos(1 * w[0]), math.cos(1 * w[1])]
    assert torch.allclose(pe[5], torch.tensor(col + row), atol=1e-7)
    assert torch.equal(pe[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    assert len({tuple(r) for r in sincos_2d(16, (5, 7)).tolist()}) == 35  # every patch its own position
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(6, (2, 2))


def test_patch_embedding_equals_the_convolution():
    vit = _vit(in_chans=2)
    x = torch.randn(3, 2, 16, 16)
    tokens = F.linear(vit.patchify(x), vit.patch_embed.weight.flatten(1), vit.patch_embed.bias)
    conv = F.conv2d(x, vit.patch_embed.weight, vit.patch_embed.bias, stride=4).flatten(2).transpose(1, 2)
    assert torch.allclose(tokens, conv, atol=1e-5)


def test_full_forward_shape_and_rectangular_images():
    vit = _vit(image_size=(8, 20))
    assert vit.grid_size == (2, 5) and vit.num_patches == 10
    assert vit(torch.randn(2, 3, 8, 20)).shape == (2, 10, 32)


def test_keep_all_patches_in_any_order_permutes_the_full_output():
    vit = _vit()
    x = torch.randn(2, 3, 16, 16)
    full = vit(x)
    perm = torch.stack([torch.randperm(16), torch.randperm(16)])
    kept = vit(x, keep=perm)
    assert torch.allclose(kept, full.gather(1, perm[..., None].expand(-1, -1, 32)), atol=1e-5)


def test_keep_subset_depends_only_on_kept_pixels():
    vit = _vit()
    x = torch.randn(1, 3, 16, 16)
    keep = torch.tensor([[0, 5, 10, 15]])
    y = x.clone()
    y[..., 4:8, 0:4] = 100.0  # patch 4, not kept
    assert torch.allclose(vit(x, keep=keep), vit(y, keep=keep))
    y[..., 0:4, 0:4] = 100.0  # patch 0, kept
    assert not torch.allclose(vit(x, keep=keep), vit(y, keep=keep))


def test_padded_rows_are_masked_and_zero():
    vit = _vit()
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[1, 2, 3, 7, 9], [4, 6, 0, 0, 0]])
    valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = vit(x, keep=keep, keep_valid=valid)
    alone = vit(x[1:], keep=keep[1:, :2])  # the second image without its padding
    assert torch.allclose(out[1, :2], alone[0], atol=1e-5)
    assert torch.equal(out[1, 2:], torch.zeros(3, 32))
    assert torch.allclose(out[0], vit(x[:1], keep=keep[:1])[0], atol=1e-5)


def _forward_flops(model, *args, count_cpu_attention=True, **kwargs):
    # CPU SDPA runs as _scaled_dot_product_flash_attention_for_cpu, which torch's counter does not
    # know: count it with torch's own SDPA formula so attention is included.
    cpu_sdpa = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: flop_counter.sdpa_flop_count(q, k, v)
    }
    with flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_sdpa if count_cpu_attention else None) as counter:
        model(*args, **kwargs)
    return counter.get_total_flops()


def test_keeping_a_quarter_of_the_patches_costs_about_a_quarter_of_the_flops():
    vit = VisionTransformer(image_size=64, patch_size=8, embed_dim=96, depth=2, num_heads=3)
    x = torch.randn(2, 3, 64, 64)
    keep = torch.stack([torch.randperm(64)[:16] for _ in range(2)])
    full, quarter = _forward_flops(vit, x), _forward_flops(vit, x, keep=keep)
    attention_full = 2 * 2 * 2 * 2 * 3 * 64 * 64 * 32  # depth x (QK^T + AV) x 2 flops/MAC x B x H x N^2 x d
    assert full - _forward_flops(vit, x, count_cpu_attention=False) == attention_full  # attention is counted
    assert 0.2 < quarter / full <= 0.25  # linear layers scale with L, attention with L^2


def test_presets_have_vit_widths_depths_heads_and_parameter_counts():
    expected = {
        vit_tiny: (16, 192, 12, 3),
        vit_small: (16, 384, 12, 6),
        vit_base: (16, 768, 12, 12),
        vit_large: (16, 1024, 24, 16),
        vit_huge: (14, 1280, 32, 16),
    }
    for preset, (p, d, depth, heads) in expected.items():
        with torch.device("meta"):
            vit = preset()
        assert (vit.patch_size, vit.embed_dim, len(vit.blocks), vit.num_heads) == (p, d, depth, heads)
        # independent count: per block 12 d^2 + 13 d (qkv, proj, fc1, fc2 with biases, two norms),
        # patch embedding d (3 p^2 + 1), final norm 2 d
        count = sum(t.numel() for t in vit.parameters())
        assert count == depth * (12 * d * d + 13 * d) + d * (3 * p * p + 1) + 2 * d
    with torch.device("meta"):
        assert vit_huge().grid_size == (16, 16)
        assert vit_small(image_size=32, patch_size=4, depth=1).grid_size == (8, 8)
    assert sorted(VIT_PRESETS) == ["vit_base", "vit_huge", "vit_large", "vit_small", "vit_tiny"]
    with pytest.raises(ValueError, match="arch must be one of"):
        build_vit("vit_giant")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"image_size": 30, "patch_size": 4}, ValueError, "not divisible by patch_size=4"),
    ({"embed_dim": 30}, ValueError, "divisible by 4"),
    ({"embed_dim": 36, "num_heads": 8}, ValueError, "num_heads=8"),
    ({"depth": 0}, ValueError, "depth"),
    ({"image_size": "big"}, TypeError, "image_size"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _vit(**kwargs)


def test_bad_forward_inputs():
    vit = _vit()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        vit(torch.randn(2, 3, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        vit(x.long())
    with pytest.raises(ValueError, match=r"values in \[0, 16\)"):
        vit(x, keep=torch.tensor([[0, 16], [1, 2]]))
    with pytest.raises(ValueError, match="long tensor"):
        vit(x, keep=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="valid mask"):
        vit(x, keep=torch.zeros(2, 3, dtype=torch.long), keep_valid=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep_valid needs keep"):
        vit(x, keep_valid=torch.ones(2, 16, dtype=torch.bool))


def test_vit_save_and_load_round_trip(tmp_path):
    vit = _vit(image_size=(8, 12))
    vit.save_pretrained(tmp_path / "vit")
    loaded = BaseModel.from_pretrained(tmp_path / "vit").eval()
    assert isinstance(loaded, VisionTransformer) and loaded.grid_size == (2, 3)
    assert "pos_embed" not in vit.state_dict()  # fixed: rebuilt from the config, not stored
    x = torch.randn(2, 3, 8, 12)
    assert torch.equal(loaded(x), vit(x))
    assert torch.equal(loaded.embed(x), vit(x).mean(1))


# ---------------------------------------------------------------------------- MaskedPredictor


def _predictor(**kw):
    args = {"grid_size": 4, "embed_dim": 32, "predictor_embed_dim": 16, "depth": 2, "num_heads": 2}
    return MaskedPredictor(**{**args, **kw}).eval()


def test_predictor_shapes_and_single_block():
    pred = _predictor()
    ctx = torch.randn(2, 5, 32)
    cidx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    tidx = torch.tensor([[[10, 11], [14, 15]], [[12, 13], [0, 1]]])
    out = pred(ctx, cidx, tidx)
    assert out.shape == (2, 2, 2, 32)
    assert torch.allclose(pred(ctx, cidx, tidx[:, 1]), out[:, 1], atol=1e-5)  # 2-D target_idx: one block


def test_predictor_target_blocks_do_not_see_each_other():
    pred = _predictor()
    ctx, cidx = torch.randn(1, 4, 32), torch.tensor([[0, 1, 2, 3]])
    a = pred(ctx, cidx, torch.tensor([[[8, 9], [12, 13]]]))
    b = pred(ctx, cidx, torch.tensor([[[8, 9], [14, 15]]]))  # only block 1 moved
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-6) and not torch.allclose(a[:, 1], b[:, 1])


def test_predictor_uses_context_and_target_positions():
    pred = _predictor()
    ctx, cidx, tidx = torch.randn(1, 4, 32), torch.tensor([[0, 1, 2, 3]]), torch.tensor([[[8, 9]]])
    out = pred(ctx, cidx, tidx)
    assert not torch.allclose(out[0, 0, 0], out[0, 0, 1])  # the mask tokens differ only by position
    assert not torch.allclose(pred(ctx + 1, cidx, tidx), out)
    assert not torch.allclose(pred(ctx, torch.tensor([[4, 5, 6, 7]]), tidx), out)  # context positions matter


def test_predictor_padding_is_ignored():
    pred = _predictor()
    ctx = torch.randn(2, 4, 32)
    cidx = torch.tensor([[0, 1, 2, 3], [4, 5, 0, 0]])
    cvalid = torch.tensor([[True] * 4, [True, True, False, False]])
    tidx = torch.tensor([[[8, 9, 10]], [[12, 13, 0]]])
    tvalid = torch.tensor([[[True] * 3], [[True, True, False]]])
    out = pred(ctx, cidx, tidx, cvalid, tvalid)
    alone = pred(ctx[1:, :2], cidx[1:, :2], tidx[1:, :, :2])
    assert torch.allclose(out[1, :, :2], alone[0], atol=1e-5)
    assert torch.equal(out[1, 0, 2], torch.zeros(32))


def test_predictor_bad_inputs():
    pred = _predictor()
    ctx, cidx = torch.randn(1, 4, 32), torch.tensor([[0, 1, 2, 3]])
    with pytest.raises(ValueError, match=r"context must be \(B, Lc, 32\)"):
        pred(torch.randn(1, 4, 16), cidx, torch.tensor([[[5]]]))
    with pytest.raises(ValueError, match=r"values in \[0, 16\)"):
        pred(ctx, cidx, torch.tensor([[[16]]]))
    with pytest.raises(ValueError, match="like the context"):
        pred(ctx, cidx[:, :3], torch.tensor([[[5]]]))
    with pytest.raises(ValueError, match="predictor_embed_dim"):
        _predictor(predictor_embed_dim=18)


def test_qkv_bias_and_learned_pos_embed_keywords():
    default = _vit()
    assert default.blocks[0].attn.qkv.bias is not None and "pos_embed" not in default.state_dict()
    assert _vit(qkv_bias=False).blocks[0].attn.qkv.bias is None
    learned = _vit(learned_pos_embed=True)
    assert isinstance(learned.pos_embed, torch.nn.Parameter) and torch.equal(learned.pos_embed[0], sincos_2d(32, (4, 4)))
    learned(torch.randn(2, 3, 16, 16), keep=torch.tensor([[0, 5], [3, 9]])).sum().backward()
    grad = learned.pos_embed.grad[0]
    assert grad[[0, 3, 5, 9]].abs().sum() > 0 and grad[[1, 2, 4]].abs().sum() == 0  # only kept patches' rows train
    pred = MaskedPredictor(grid_size=4, embed_dim=32, predictor_embed_dim=16, depth=1, num_heads=2, qkv_bias=False, learned_pos_embed=True)
    assert pred.blocks[0].attn.qkv.bias is None and pred.state_dict()["pos_embed"].shape == (16, 16)
    with pytest.raises(TypeError, match="learned_pos_embed must be a bool, got 'yes'"):
        _vit(learned_pos_embed="yes")
    with pytest.raises(TypeError, match="MaskedPredictor: qkv_bias must be a bool, got 1"):
        MaskedPredictor(grid_size=4, embed_dim=32, qkv_bias=1)
