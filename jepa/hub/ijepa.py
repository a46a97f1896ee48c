"""Official I-JEPA checkpoints (facebookresearch/ijepa ``.pth.tar`` files) into our models.

A checkpoint of the I-JEPA repository is a dict with the state dicts ``encoder``, ``predictor``
and ``target_encoder`` (keys prefixed ``module.`` when saved from DistributedDataParallel), plus
the optimizer state and counters, which are not read. Its parameter names map onto ours as:

=============================================  =============================================
I-JEPA encoder / target_encoder                :class:`~jepa.models.vision.VisionTransformer`
=============================================  =============================================
``patch_embed.proj.weight`` / ``.bias``        ``patch_embed.weight`` / ``.bias``
``pos_embed`` ``(1, N, D)``                    the fixed sin-cos table (or ``pos_embed``)
``blocks.i.{norm1,attn.qkv,attn.proj,norm2}``  the same names
``blocks.i.mlp.fc1`` / ``blocks.i.mlp.fc2``    ``blocks.i.mlp.0`` / ``blocks.i.mlp.3``
``norm``                                       ``norm``
=============================================  =============================================

=============================================  =============================================
I-JEPA predictor                               :class:`~jepa.models.vision.MaskedPredictor`
=============================================  =============================================
``predictor_embed``                            ``input_proj``
``mask_token`` ``(1, 1, d)``                   ``mask_token``
``predictor_pos_embed`` ``(1, N, d)``          the fixed sin-cos table (or ``pos_embed``)
``predictor_blocks.i.*``                       ``blocks.i.*`` (``mlp.fc1``/``fc2`` as above)
``predictor_norm`` / ``predictor_proj``        ``norm`` / ``proj``
=============================================  =============================================

The number of attention heads is not stored in the weights: it is taken from I-JEPA's presets by
width (192: 3, 384: 6, 768: 12, 1024, 1280 and 1408: 16; the predictor uses the encoder's), or
given explicitly.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Mapping

import torch

from jepa.hub._layout import is_sincos_table, mlp_ratio_for
from jepa.models.base import load_state_dict_strict
from jepa.models.ijepa import IJEPA
from jepa.models.vision.predictor import MaskedPredictor
from jepa.models.vision.vit import VisionTransformer

__all__ = ["IJEPA_HEADS", "load_ijepa_checkpoint", "predictor_from_ijepa_state_dict", "vit_from_ijepa_state_dict"]

#: Attention heads of I-JEPA's ViT presets, by width (tiny, small, base, large, huge, giant).
IJEPA_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}

#: Layer-norm epsilon of every I-JEPA model.
IJEPA_NORM_EPS = 1e-6

_MLP = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` without the leading ``module.`` that DistributedDataParallel adds to every key."""
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _need(state: Mapping[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    if key not in state:
        shown = ", ".join(sorted(state)[:6])
        raise ValueError(f"{what}: no {key!r} in the state dict (keys: {shown}{', ...' if len(state) > 6 else ''})")
    return state[key]


def _depth(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    if not indices or indices != set(range(len(indices))):
        raise ValueError(f"expected blocks {prefix}0, {prefix}1, ... in the state dict, found indices {sorted(indices)}")
    return len(indices)


def _square_grid(num_patches: int, what: str) -> tuple[int, int]:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"{what}: {num_patches} position embeddings do not form a square grid (I-JEPA's are square)")
    return (side, side)


def _heads(width: int, num_heads: int | None, what: str) -> int:
    if num_heads is not None:
        return num_heads
    if width not in IJEPA_HEADS:
        raise ValueError(
            f"{what}: width {width} is not one of I-JEPA's presets {sorted(IJEPA_HEADS)}, so the number of heads "
            "is unknown; pass num_heads="
        )
    return IJEPA_HEADS[width]


def _blocks(state: Mapping[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """Rename ``{src}i.*`` block keys to ``{dst}i.*`` with I-JEPA's MLP names mapped to ours."""
    out = {}
    for key, value in state.items():
        if not key.startswith(src):
            continue
        name = dst + key[len(src) :]
        for old, new in _MLP.items():
            name = name.replace("." + old, "." + new)
        out[name] = value
    return out


def vit_from_ijepa_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, num_heads: int | None = None, what: str = "I-JEPA encoder"
) -> VisionTransformer:
    """A :class:`~jepa.models.vision.VisionTransformer` holding an I-JEPA encoder's weights.

    Sizes (width, depth, patch size, image size, MLP width, qkv bias) are read from the tensors; the
    position table stays the fixed sin-cos buffer when it is that table, else it becomes a learned
    ``pos_embed`` holding the checkpoint's values. ``module.`` prefixes are removed.

    Args:
        state_dict: the ``encoder`` or ``target_encoder`` state dict of an I-JEPA checkpoint.
        num_heads: attention heads (default: I-JEPA's preset for the width, :data:`~jepa.hub.ijepa.IJEPA_HEADS`).
        what: how error messages name the state dict.
    """
    state = strip_module_prefix(state_dict)
    patch_w = _need(state, "patch_embed.proj.weight", what)
    if patch_w.dim() != 4 or patch_w.shape[2] != patch_w.shape[3]:
        raise ValueError(f"{what}: patch_embed.proj.weight must be (D, C, p, p), got {tuple(patch_w.shape)}")
    embed_dim, in_chans, patch = patch_w.shape[0], patch_w.shape[1], patch_w.shape[2]
    pos = _need(state, "pos_embed", what)
    grid = _square_grid(pos.shape[-2], what)
    learned = not is_sincos_table(pos, grid)
    hidden = _need(state, "blocks.0.mlp.fc1.weight", what).shape[0]
    vit = VisionTransformer(
        image_size=(grid[0] * patch, grid[1] * patch),
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depth=_depth(state, "blocks."),
        num_heads=_heads(embed_dim, num_heads, what),
        mlp_ratio=mlp_ratio_for(embed_dim, hidden),
        norm_eps=IJEPA_NORM_EPS,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        learned_pos_embed=learned,
    )
    ours = {"patch_embed.weight": patch_w, "patch_embed.bias": _need(state, "patch_embed.proj.bias", what)}
    if learned:
        ours["pos_embed"] = pos.reshape(1, *pos.shape[-2:])
    ours.update(_blocks(state, "blocks.", "blocks."))
    ours.update({k: v for k, v in state.items() if k.startswith("norm.")})
    _check_known(state, ("patch_embed.proj.", "pos_embed", "blocks.", "norm."), what)
    load_state_dict_strict(vit, {k: v.float() for k, v in ours.items()}, source=what)
    return vit


def predictor_from_ijepa_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, num_heads: int, what: str = "I-JEPA predictor"
) -> MaskedPredictor:
    """A :class:`~jepa.models.vision.MaskedPredictor` holding an I-JEPA predictor's weights.

    Args:
        state_dict: the ``predictor`` state dict of an I-JEPA checkpoint.
        num_heads: attention heads; I-JEPA builds its predictor with the encoder's.
        what: how error messages name the state dict.
    """
    state = strip_module_prefix(state_dict)
    embed = _need(state, "predictor_embed.weight", what)
    predictor_dim, embed_dim = embed.shape
    pos = _need(state, "predictor_pos_embed", what)
    grid = _square_grid(pos.shape[-2], what)
    learned = not is_sincos_table(pos, grid)
    hidden = _need(state, "predictor_blocks.0.mlp.fc1.weight", what).shape[0]
    predictor = MaskedPredictor(
        grid_size=grid,
        embed_dim=embed_dim,
        predictor_embed_dim=predictor_dim,
        depth=_depth(state, "predictor_blocks."),
        num_heads=num_heads,
        mlp_ratio=mlp_ratio_for(predictor_dim, hidden),
        norm_eps=IJEPA_NORM_EPS,
        qkv_bias="predictor_blocks.0.attn.qkv.bias" in state,
        learned_pos_embed=learned,
    )
    ours = {
        "input_proj.weight": embed,
        "input_proj.bias": _need(state, "predictor_embed.bias", what),
        "mask_token": _need(state, "mask_token", what).reshape(1, 1, predictor_dim),
    }
    if learned:
        ours["pos_embed"] = pos.reshape(pos.shape[-2:])
    ours.update(_blocks(state, "predictor_blocks.", "blocks."))
    for src, dst in (("predictor_norm.", "norm."), ("predictor_proj.", "proj.")):
        ours.update({dst + k[len(src) :]: v for k, v in state.items() if k.startswith(src)})
    _check_known(state, ("predictor_embed.", "mask_token", "predictor_pos_embed", "predictor_blocks.", "predictor_norm.", "predictor_proj."), what)
    load_state_dict_strict(predictor, {k: v.float() for k, v in ours.items()}, source=what)
    return predictor


def _check_known(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...], what: str) -> None:
    """Refuse tensors outside the known names (a layout this loader does not know); unknown names
    inside the blocks are caught by the strict load."""
    unknown = [k for k in state if not k.startswith(prefixes)]
    if unknown:
        raise ValueError(f"{what}: unexpected tensors {unknown[:4]}{'...' if len(unknown) > 4 else ''} (not an I-JEPA ViT layout)")


def load_ijepa_checkpoint(
    path: str | os.PathLike,
    *,
    num_heads: int | None = None,
    predictor_num_heads: int | None = None,
    map_location: str | torch.device = "cpu",
) -> IJEPA:
    """Read an official I-JEPA checkpoint (``.pth.tar`` of facebookresearch/ijepa) into an :class:`~jepa.models.IJEPA`.

    ``model.encoder`` gets the checkpoint's ``encoder``, ``model.predictor`` its ``predictor`` and
    ``model.target_encoder`` its ``target_encoder`` (the EMA encoder, the one I-JEPA evaluates;
    when absent, a copy of the encoder). The file is read with ``torch.load(weights_only=True)``:
    no code in it runs. The optimizer state and counters in the file are ignored.

    Args:
        path: the checkpoint file.
        num_heads: attention heads of the encoder (default: I-JEPA's preset for its width).
        predictor_num_heads: attention heads of the predictor (default: the encoder's, as I-JEPA).
        map_location: device the tensors are loaded to.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not an I-JEPA checkpoint (names the missing key or unknown tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_ijepa_checkpoint: checkpoint not found: {str(path)!r}")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, Mapping) or "encoder" not in checkpoint or "predictor" not in checkpoint:
        keys = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"load_ijepa_checkpoint: {str(path)!r} is not an I-JEPA checkpoint: expected 'encoder' and 'predictor', got {keys}")
    encoder = vit_from_ijepa_state_dict(checkpoint["encoder"], num_heads=num_heads, what=f"{path.name}: encoder")
    heads = predictor_num_heads if predictor_num_heads is not None else encoder.num_heads
    predictor = predictor_from_ijepa_state_dict(checkpoint["predictor"], num_heads=heads, what=f"{path.name}: predictor")
    model = IJEPA(encoder, predictor, target_encoder="ema")
    if checkpoint.get("target_encoder") is not None:
        target = vit_from_ijepa_state_dict(checkpoint["target_encoder"], num_heads=encoder.num_heads, what=f"{path.name}: target_encoder")
        if target.config != encoder.config:
            raise ValueError(f"load_ijepa_checkpoint: {path.name}: target_encoder and encoder have different shapes")
        model.target_encoder.load_state_dict(target.state_dict())
    return model.to(map_location)
