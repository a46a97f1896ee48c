"""Hugging Face ``transformers`` I-JEPA encoders in and out: :func:`from_transformers`, :func:`to_transformers`.

``transformers`` is optional (``pip install 'jepa-torch[hf]'``) and imported only when one of these
functions runs. Both layouts of ``IJepaModel`` are read and written: transformers 5 (``layers[i]``
with ``q_proj``/``k_proj``/``v_proj``/``o_proj`` and ``mlp.fc1``/``mlp.fc2``) and transformers 4
(``encoder.layer[i]`` with ``attention.attention.query``/``key``/``value``, ``attention.output.dense``,
``intermediate.dense`` and ``output.dense``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from jepa.hub._layout import is_sincos_table, mlp_ratio_for
from jepa.models.vision.vit import VisionTransformer

__all__ = ["TRANSFORMERS_MISSING", "from_transformers", "require_transformers", "to_transformers"]

TRANSFORMERS_MISSING = "jepa.hub needs Hugging Face transformers for this: pip install 'jepa-torch[hf]' (or pip install transformers)"

def require_transformers() -> Any:
    """Import and return the ``transformers`` module, or raise an ``ImportError`` saying what to install."""
    try:
        import transformers  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(TRANSFORMERS_MISSING) from exc
    return transformers


def _hf_layers(model: nn.Module) -> tuple[nn.Module, list[dict[str, nn.Module]], nn.Module]:
    """``(embeddings, per-layer modules, final layer norm)`` of an ``IJepaModel`` of either layout.

    Each layer is ``{"norm1", "q", "k", "v", "o", "norm2", "fc1", "fc2"}``.
    """
    if hasattr(model, "layers"):  # transformers >= 5
        layers = [
            {
                "norm1": layer.layernorm_before,
                "q": layer.attention.q_proj,
                "k": layer.attention.k_proj,
                "v": layer.attention.v_proj,
                "o": layer.attention.o_proj,
                "norm2": layer.layernorm_after,
                "fc1": layer.mlp.fc1,
                "fc2": layer.mlp.fc2,
            }
            for layer in model.layers
        ]
    elif hasattr(model, "encoder") and hasattr(model.encoder, "layer"):  # transformers 4
        layers = [
            {
                "norm1": layer.layernorm_before,
                "q": layer.attention.attention.query,
                "k": layer.attention.attention.key,
                "v": layer.attention.attention.value,
                "o": layer.attention.output.dense,
                "norm2": layer.layernorm_after,
                "fc1": layer.intermediate.dense,
                "fc2": layer.output.dense,
            }
            for layer in model.encoder.layer
        ]
    else:
        raise TypeError(f"{type(model).__name__}: neither the transformers 4 nor the transformers 5 layout of IJepaModel")
    return model.embeddings, layers, model.layernorm


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"from_transformers: config.{name} must be an int or a pair, got {value!r}")


def _check_hf_model(model: Any) -> None:
    name = type(model).__name__
    if name.startswith("VJEPA2"):
        raise NotImplementedError(
            f"from_transformers({name}): V-JEPA 2 is a video encoder (3-D tubelet patch embedding, 3-D rotary "
            "positions) and jepa.models has no video ViT yet; only I-JEPA image encoders (IJepaModel) convert today"
        )
    transformers = require_transformers()
    if isinstance(model, transformers.IJepaForImageClassification):
        raise TypeError(
            "from_transformers: got IJepaForImageClassification; pass its encoder, model.ijepa (the classifier "
            "head has no counterpart in VisionTransformer)"
        )
    if not isinstance(model, transformers.IJepaModel):
        raise TypeError(f"from_transformers: model must be a transformers.IJepaModel, got {name}")


def from_transformers(model: Any, *, learned_pos_embed: bool | None = None) -> VisionTransformer:
    """A :class:`~jepa.models.vision.VisionTransformer` with the weights of a ``transformers.IJepaModel``.

    For the same images, ``vit(images)`` equals ``model(pixel_values=images).last_hidden_state``
    (to float32 rounding) in eval mode. The result is on the device and in the dtype of ``model``.

    Args:
        model: a ``transformers.IJepaModel`` (e.g. ``IJepaModel.from_pretrained("facebook/ijepa_vith14_1k")``).
        learned_pos_embed: ``None`` (default) keeps the fixed sin-cos position table when the model's
            table is that table (every released I-JEPA checkpoint), else makes the table a trained
            parameter holding the model's values. ``False`` requires the sin-cos table; ``True``
            always copies it into a parameter.

    Raises:
        NotImplementedError: for ``VJEPA2Model`` (the video encoder is not in ``jepa.models`` yet).
        TypeError: for anything that is not an ``IJepaModel``.
        ValueError: for configurations a VisionTransformer cannot reproduce (non-square patches, an
            activation other than exact GELU, a head size other than ``hidden_size / heads``).
        ImportError: when ``transformers`` is not installed.

    The optional pooler of ``IJepaModel(add_pooling_layer=True)`` (a dense layer on the first token,
    unused by I-JEPA) has no counterpart and is not converted; attention-probability dropout is not
    carried over either (our attention has none).
    """
    _check_hf_model(model)
    cfg = model.config
    if cfg.hidden_act != "gelu":
        raise ValueError(f"from_transformers: hidden_act must be 'gelu' (exact GELU, as VisionTransformer), got {cfg.hidden_act!r}")
    patch = _pair(cfg.patch_size, "patch_size")
    if patch[0] != patch[1]:
        raise ValueError(f"from_transformers: patches must be square, got patch_size={cfg.patch_size!r}")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if head_dim * cfg.num_attention_heads != cfg.hidden_size:
        raise ValueError(
            f"from_transformers: head_dim * num_attention_heads = {head_dim} * {cfg.num_attention_heads} must equal "
            f"hidden_size={cfg.hidden_size}"
        )
    image = _pair(cfg.image_size, "image_size")
    grid = (image[0] // patch[0], image[1] // patch[1])
    embeddings, layers, final_norm = _hf_layers(model)
    table = embeddings.position_embeddings
    sincos = is_sincos_table(table, grid)
    if learned_pos_embed is None:
        learned_pos_embed = not sincos
    elif not learned_pos_embed and not sincos:
        raise ValueError(
            "from_transformers: learned_pos_embed=False needs the model's position_embeddings to be the fixed 2-D sin-cos "
            "table, and they are not (pass learned_pos_embed=None or True to copy them)"
        )
    param = table
    vit = VisionTransformer(
        image_size=image,
        patch_size=patch[0],
        in_chans=cfg.num_channels,
        embed_dim=cfg.hidden_size,
        depth=cfg.num_hidden_layers,
        num_heads=cfg.num_attention_heads,
        mlp_ratio=mlp_ratio_for(cfg.hidden_size, cfg.intermediate_size),
        dropout=float(cfg.hidden_dropout_prob),
        norm_eps=float(cfg.layer_norm_eps),
        qkv_bias=bool(cfg.qkv_bias),
        learned_pos_embed=bool(learned_pos_embed),
    )
    with torch.no_grad():
        vit.to(device=param.device, dtype=param.dtype)
        vit.patch_embed.weight.copy_(embeddings.patch_embeddings.projection.weight)
        vit.patch_embed.bias.copy_(embeddings.patch_embeddings.projection.bias)
        if learned_pos_embed:
            vit.pos_embed.copy_(table)
        for block, hf in zip(vit.blocks, layers):
            _copy_affine(block.norm1, hf["norm1"])
            block.attn.qkv.weight.copy_(torch.cat([hf["q"].weight, hf["k"].weight, hf["v"].weight], dim=0))
            if block.attn.qkv.bias is not None:
                block.attn.qkv.bias.copy_(torch.cat([hf["q"].bias, hf["k"].bias, hf["v"].bias], dim=0))
            _copy_affine(block.attn.proj, hf["o"])
            _copy_affine(block.norm2, hf["norm2"])
            _copy_affine(block.mlp[0], hf["fc1"])
            _copy_affine(block.mlp[3], hf["fc2"])
        _copy_affine(vit.norm, final_norm)
    return vit.train(model.training)


def to_transformers(vit: VisionTransformer) -> Any:
    """A ``transformers.IJepaModel`` with the weights of ``vit``, in eval mode, on ``vit``'s device and dtype.

    ``hf(pixel_values=images).last_hidden_state`` equals ``vit(images)``, and
    :func:`from_transformers` of the result gives back the same weights. Save it with
    ``save_pretrained(directory)`` to publish it or to use it with Hugging Face pipelines. The
    position table (the fixed sin-cos one or a learned one) is written to ``position_embeddings``.

    Raises:
        TypeError: when ``vit`` is not a :class:`~jepa.models.vision.VisionTransformer`.
        ImportError: when ``transformers`` is not installed.
    """
    if not isinstance(vit, VisionTransformer):
        raise TypeError(f"to_transformers: vit must be a jepa.models.vision.VisionTransformer, got {type(vit).__name__}")
    transformers = require_transformers()
    first = vit.blocks[0]
    height, width = vit.image_size
    config = transformers.IJepaConfig(
        hidden_size=vit.embed_dim,
        num_hidden_layers=len(vit.blocks),
        num_attention_heads=vit.num_heads,
        intermediate_size=first.mlp[0].out_features,
        hidden_act="gelu",
        hidden_dropout_prob=float(vit.config.get("dropout", 0.0)),
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=float(vit.norm.eps),
        image_size=height if height == width else [height, width],
        patch_size=vit.patch_size,
        num_channels=vit.in_chans,
        qkv_bias=first.attn.qkv.bias is not None,
    )
    hf = transformers.IJepaModel(config, add_pooling_layer=False)
    embeddings, layers, final_norm = _hf_layers(hf)
    d = vit.embed_dim
    with torch.no_grad():
        embeddings.patch_embeddings.projection.weight.copy_(vit.patch_embed.weight)
        embeddings.patch_embeddings.projection.bias.copy_(vit.patch_embed.bias)
        embeddings.position_embeddings.copy_(vit.pos_embed.reshape(embeddings.position_embeddings.shape))
        for block, out in zip(vit.blocks, layers):
            _copy_affine(out["norm1"], block.norm1)
            for i, key in enumerate(("q", "k", "v")):
                out[key].weight.copy_(block.attn.qkv.weight[i * d : (i + 1) * d])
                if block.attn.qkv.bias is not None:
                    out[key].bias.copy_(block.attn.qkv.bias[i * d : (i + 1) * d])
            _copy_affine(out["o"], block.attn.proj)
            _copy_affine(out["norm2"], block.norm2)
            _copy_affine(out["fc1"], block.mlp[0])
            _copy_affine(out["fc2"], block.mlp[3])
        _copy_affine(final_norm, vit.norm)
    param = vit.patch_embed.weight
    return hf.to(device=param.device, dtype=param.dtype).eval()


def _copy_affine(dst: nn.Module, src: nn.Module) -> None:
    """Copy ``weight`` and ``bias`` of a Linear or LayerNorm into one of the same shapes."""
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)
