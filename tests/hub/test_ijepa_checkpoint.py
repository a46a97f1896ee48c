"""jepa.hub.load_ijepa_checkpoint against an independent float64 re-statement of the official I-JEPA
forward passes (tests/hub/ijepa_reference.py) on random weights saved in the official layout."""

import pickle

import pytest
import torch

from ijepa_reference import encoder_forward, encoder_state, official_sincos, predictor_forward, predictor_state, rel_err
from jepa.hub import load_ijepa_checkpoint, predictor_from_ijepa_state_dict, vit_from_ijepa_state_dict
from jepa.models import IJEPA, MaskedPredictor, VisionTransformer

TOL = 1e-5  # float32 against float64


def _official_checkpoint(path, *, dim=32, heads=4, pdim=16, side=4, patch=4, depth=2, pdepth=2, qkv_bias=True, pos=None, ppos=None, prefix="module."):
    shapes = dict(dim=dim, depth=depth, patch=patch, chans=3, side=side, hidden=3 * dim + 1, qkv_bias=qkv_bias, pos=pos)
    enc, tgt = encoder_state(1, **shapes), encoder_state(2, **shapes)
    pred = predictor_state(3, embed_dim=dim, dim=pdim, depth=pdepth, side=side, hidden=2 * pdim, qkv_bias=qkv_bias, pos=ppos)
    # the rest of what I-JEPA's train.py saves: optimizer state, scaler, counters (plain data)
    opt = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]}
    torch.save(
        {
            "encoder": {prefix + k: v for k, v in enc.items()},
            "predictor": {prefix + k: v for k, v in pred.items()},
            "target_encoder": {prefix + k: v for k, v in tgt.items()},
            "opt": opt, "scaler": None, "epoch": 3, "loss": 0.25, "batch_size": 8, "world_size": 1, "lr": 1e-3,
        },
        path,
    )
    return enc, pred, tgt


def _masks(b, n, g):
    """One context mask (B, 7) and two target blocks (B, 3) of distinct patch indices, as I-JEPA's collator gives."""
    perm = torch.stack([torch.randperm(n, generator=g) for _ in range(b)])
    return perm[:, :7], [perm[:, 7:10], perm[:, 10:13]]


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_official_checkpoint_loads_into_ijepa_with_identical_forwards(tmp_path, prefix):
    path = tmp_path / "IN1K-vit.h.14-300e.pth.tar"
    enc, pred, tgt = _official_checkpoint(path, prefix=prefix)
    model = load_ijepa_checkpoint(path, num_heads=4).eval()
    assert isinstance(model, IJEPA) and isinstance(model.predictor, MaskedPredictor)
    assert model.encoder.image_size == (16, 16) and model.encoder.patch_size == 4 and len(model.encoder.blocks) == 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 16, 16, generator=g)
    ctx_idx, blocks = _masks(3, 16, g)
    with torch.no_grad():
        # context encoder on the context patches (I-JEPA: encoder(imgs, masks_enc))
        ctx = model.encoder(x, keep=ctx_idx)
        assert rel_err(ctx, encoder_forward(enc, x, 4, [ctx_idx])) < TOL
        # target encoder on full images
        assert rel_err(model.target_encoder(x), encoder_forward(tgt, x, 4)) < TOL
        # predictor: ours (B, K, Lt, D), I-JEPA's (K * B, Lt, D) mask-major
        ours = model.predictor(ctx, ctx_idx, torch.stack(blocks, dim=1))
        ref = predictor_forward(pred, ctx.double(), ctx_idx, blocks, 4)
        assert rel_err(ours.transpose(0, 1).reshape(ref.shape), ref) < TOL
    # the sin-cos tables were recognised: fixed buffers, not parameters
    assert "pos_embed" not in model.encoder.state_dict() and "pos_embed" not in model.predictor.state_dict()


def test_heads_come_from_ijepa_presets_by_width(tmp_path):
    path = tmp_path / "small.pth.tar"
    enc, _, _ = _official_checkpoint(path, dim=192, pdim=24, depth=1, pdepth=1)
    model = load_ijepa_checkpoint(path)  # 192 wide: ViT-Ti, 3 heads; predictor uses the encoder's
    assert model.encoder.num_heads == 3 and model.predictor.blocks[0].attn.num_heads == 3
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert rel_err(model.encoder.eval()(x), encoder_forward(enc, x, 3)) < TOL
    path2 = tmp_path / "odd.pth.tar"
    _official_checkpoint(path2, dim=40, depth=1, pdepth=1)
    with pytest.raises(ValueError, match="width 40 .*pass num_heads="):
        load_ijepa_checkpoint(path2)


def test_learned_position_tables_and_no_qkv_bias_are_kept(tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    pos, ppos = 0.1 * torch.randn(1, 16, 32), 0.1 * torch.randn(1, 16, 16)
    enc, pred, _ = _official_checkpoint(path, qkv_bias=False, pos=pos, ppos=ppos)
    model = load_ijepa_checkpoint(path, num_heads=4).eval()
    assert torch.equal(model.encoder.pos_embed, pos) and model.encoder.pos_embed.requires_grad
    assert torch.equal(model.predictor.pos_embed, ppos[0]) and model.encoder.blocks[0].attn.qkv.bias is None
    x = torch.randn(2, 3, 16, 16)
    ctx_idx, blocks = _masks(2, 16, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ctx = model.encoder(x, keep=ctx_idx)
        assert rel_err(ctx, encoder_forward(enc, x, 4, [ctx_idx])) < TOL
        ref = predictor_forward(pred, ctx.double(), ctx_idx, blocks, 4)
        assert rel_err(model.predictor(ctx, ctx_idx, torch.stack(blocks, 1)).transpose(0, 1).reshape(ref.shape), ref) < TOL


def test_single_state_dict_converters():
    enc = encoder_state(5, dim=32, depth=1, patch=4, chans=1, side=3, hidden=64)
    vit = vit_from_ijepa_state_dict({"module." + k: v for k, v in enc.items()}, num_heads=2).eval()
    assert isinstance(vit, VisionTransformer) and vit.in_chans == 1 and vit.image_size == (12, 12)
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        assert rel_err(vit(x), encoder_forward(enc, x, 2)) < TOL
    pred = predictor_state(6, embed_dim=32, dim=16, depth=1, side=3, hidden=32)
    assert predictor_from_ijepa_state_dict(pred, num_heads=2).grid_size == (3, 3)


def test_official_sincos_is_our_fixed_table():
    # I-JEPA's numpy table (columns in the first half, rows in the second) is the table our models use
    from jepa.models.vision import sincos_2d

    assert torch.allclose(official_sincos(48, 5)[0], sincos_2d(48, (5, 5)), atol=1e-6, rtol=0)


def test_bad_files_are_refused_without_running_code(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth.tar"):
        load_ijepa_checkpoint(tmp_path / "nope.pth.tar")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an I-JEPA checkpoint.*'encoder' and 'predictor'.*\\['model'\\]"):
        load_ijepa_checkpoint(tmp_path / "other.pt")

    ran = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    with open(tmp_path / "evil.pth.tar", "wb") as f:
        pickle.dump({"encoder": Exploit(), "predictor": {}}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        load_ijepa_checkpoint(tmp_path / "evil.pth.tar")
    assert not ran.exists()

    enc = encoder_state(1, dim=32, depth=1, patch=4, chans=3, side=4, hidden=64)
    with pytest.raises(ValueError, match="unexpected tensors \\['cls_token'\\]"):
        vit_from_ijepa_state_dict({**enc, "cls_token": torch.zeros(1, 1, 32)}, num_heads=4)
    with pytest.raises(ValueError, match="no 'patch_embed.proj.weight'"):
        vit_from_ijepa_state_dict({k: v for k, v in enc.items() if not k.startswith("patch_embed")}, num_heads=4)
    with pytest.raises(ValueError, match="square grid"):
        vit_from_ijepa_state_dict({**enc, "pos_embed": torch.zeros(1, 15, 32)}, num_heads=4)
