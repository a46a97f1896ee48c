"""An independent float64 re-statement of the official I-JEPA ViT and predictor forward passes
(facebookresearch/ijepa src/models/vision_transformer.py), written against its parameter names,
and random state dicts in its layout. The test oracle for jepa.hub.load_ijepa_checkpoint."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def official_sincos(dim: int, side: int) -> torch.Tensor:
    """I-JEPA's get_2d_sincos_pos_embed (numpy, float64): meshgrid(w, h), first half from grid[0]."""
    grid = np.stack(np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float)), axis=0).reshape(2, 1, side, side)

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=float) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)
    return torch.from_numpy(emb).float()[None]


def _rand(g, *shape, scale=0.2):
    return torch.randn(*shape, generator=g) * scale


def _block_state(g, prefix: str, dim: int, hidden: int, qkv_bias: bool) -> dict[str, torch.Tensor]:
    s = {
        f"{prefix}norm1.weight": 1 + _rand(g, dim, scale=0.1),
        f"{prefix}norm1.bias": _rand(g, dim, scale=0.1),
        f"{prefix}attn.qkv.weight": _rand(g, 3 * dim, dim),
        f"{prefix}attn.proj.weight": _rand(g, dim, dim),
        f"{prefix}attn.proj.bias": _rand(g, dim),
        f"{prefix}norm2.weight": 1 + _rand(g, dim, scale=0.1),
        f"{prefix}norm2.bias": _rand(g, dim, scale=0.1),
        f"{prefix}mlp.fc1.weight": _rand(g, hidden, dim),
        f"{prefix}mlp.fc1.bias": _rand(g, hidden),
        f"{prefix}mlp.fc2.weight": _rand(g, dim, hidden),
        f"{prefix}mlp.fc2.bias": _rand(g, dim),
    }
    if qkv_bias:
        s[f"{prefix}attn.qkv.bias"] = _rand(g, 3 * dim)
    return s


def encoder_state(seed, *, dim, depth, patch, chans, side, hidden, qkv_bias=True, pos=None):
    g = torch.Generator().manual_seed(seed)
    s = {
        "patch_embed.proj.weight": _rand(g, dim, chans, patch, patch),
        "patch_embed.proj.bias": _rand(g, dim),
        "pos_embed": official_sincos(dim, side) if pos is None else pos,
        "norm.weight": 1 + _rand(g, dim, scale=0.1),
        "norm.bias": _rand(g, dim, scale=0.1),
    }
    for i in range(depth):
        s.update(_block_state(g, f"blocks.{i}.", dim, hidden, qkv_bias))
    return s


def predictor_state(seed, *, embed_dim, dim, depth, side, hidden, qkv_bias=True, pos=None):
    g = torch.Generator().manual_seed(seed)
    s = {
        "predictor_embed.weight": _rand(g, dim, embed_dim),
        "predictor_embed.bias": _rand(g, dim),
        "mask_token": _rand(g, 1, 1, dim),
        "predictor_pos_embed": official_sincos(dim, side) if pos is None else pos,
        "predictor_norm.weight": 1 + _rand(g, dim, scale=0.1),
        "predictor_norm.bias": _rand(g, dim, scale=0.1),
        "predictor_proj.weight": _rand(g, embed_dim, dim),
        "predictor_proj.bias": _rand(g, embed_dim),
    }
    for i in range(depth):
        s.update(_block_state(g, f"predictor_blocks.{i}.", dim, hidden, qkv_bias))
    return s


def _apply_masks(x, masks):
    """I-JEPA's apply_masks: gather rows of x for each mask, concatenated along the batch (mask-major)."""
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).repeat(1, 1, x.size(-1))) for m in masks], dim=0)


def _block(s, prefix, x, heads):
    d = lambda k: s[prefix + k].double()  # noqa: E731
    b, n, c = x.shape
    h = F.layer_norm(x, (c,), d("norm1.weight"), d("norm1.bias"), eps=1e-6)
    bias = d("attn.qkv.bias") if prefix + "attn.qkv.bias" in s else None
    qkv = F.linear(h, d("attn.qkv.weight"), bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = ((qkv[0] @ qkv[1].transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
    y = F.linear((attn @ qkv[2]).transpose(1, 2).reshape(b, n, c), d("attn.proj.weight"), d("attn.proj.bias"))
    x = x + y
    h = F.layer_norm(x, (c,), d("norm2.weight"), d("norm2.bias"), eps=1e-6)
    h = F.linear(F.gelu(F.linear(h, d("mlp.fc1.weight"), d("mlp.fc1.bias"))), d("mlp.fc2.weight"), d("mlp.fc2.bias"))
    return x + h


def encoder_forward(s, images, heads, masks=None):
    """VisionTransformer.forward of I-JEPA (float64): patchify, + pos_embed, apply_masks, blocks, norm."""
    w = s["patch_embed.proj.weight"].double()
    x = F.conv2d(images.double(), w, s["patch_embed.proj.bias"].double(), stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = x + s["pos_embed"].double()
    if masks is not None:
        x = _apply_masks(x, masks)
    depth = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    for i in range(depth):
        x = _block(s, f"blocks.{i}.", x, heads)
    return F.layer_norm(x, (x.shape[-1],), s["norm.weight"].double(), s["norm.bias"].double(), eps=1e-6)


def predictor_forward(s, x, masks_x, masks, heads):
    """VisionTransformerPredictor.forward of I-JEPA (float64), one context mask (nenc = 1).

    Returns ``(len(masks) * B, Lt, embed_dim)``, mask-major as the original."""
    b = x.shape[0]
    pos = s["predictor_pos_embed"].double().repeat(b, 1, 1)
    x = F.linear(x.double(), s["predictor_embed.weight"].double(), s["predictor_embed.bias"].double())
    x = x + _apply_masks(pos, [masks_x])
    n_ctx = x.shape[1]
    pos_embs = _apply_masks(pos, masks)
    pred = s["mask_token"].double().repeat(pos_embs.size(0), pos_embs.size(1), 1) + pos_embs
    x = torch.cat([x.repeat(len(masks), 1, 1), pred], dim=1)
    depth = len({k.split(".")[1] for k in s if k.startswith("predictor_blocks.")})
    for i in range(depth):
        x = _block(s, f"predictor_blocks.{i}.", x, heads)
    x = F.layer_norm(x, (x.shape[-1],), s["predictor_norm.weight"].double(), s["predictor_norm.bias"].double(), eps=1e-6)
    return F.linear(x[:, n_ctx:], s["predictor_proj.weight"].double(), s["predictor_proj.bias"].double())


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double() - ref).norm() / ref.norm().clamp_min(1e-30))


__all__ = ["encoder_forward", "encoder_state", "official_sincos", "predictor_forward", "predictor_state", "rel_err"]
