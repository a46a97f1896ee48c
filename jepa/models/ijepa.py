"""IJEPA: I-JEPA on images (ViT context encoder on the visible patches, masked predictor, EMA target).

The target encoder (EMA, shared under stop-gradient, or none: LeJEPA-style), its momentum schedule
and ``embed`` come from :class:`~jepa.models.JEPA`;
this class only changes what one forward computes. The model returns named outputs and computes no
loss: the I-JEPA objective over those outputs is :class:`jepa.trainer.losses.IJEPALoss`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from jepa.models.jepa import JEPA
from jepa.models.vision.predictor import MaskedPredictor
from jepa.models.vision.presets import VIT_PRESETS, build_vit
from jepa.models.vision.vit import VisionTransformer, masked_mean

__all__ = ["IJEPA"]

#: Predictor depth of each preset when not given: I-JEPA's released ViT-H configs use 12 blocks,
#: its reference predictor defaults to 6.
_PREDICTOR_DEPTH = {"vit_tiny": 6, "vit_small": 6, "vit_base": 6, "vit_large": 12, "vit_huge": 12}


class IJEPA(JEPA):
    """I-JEPA: predict the target encoder's embeddings of hidden image blocks from the visible context.

    One forward (:meth:`forward_features`, also ``forward``):

    1. target encoder on the full images -> ``(B, N, D)`` tokens: the EMA copy without gradient
       (``target_encoder="ema"``, I-JEPA), the context encoder itself without gradient (``"shared"``)
       or the context encoder itself *with* gradients (``"none"``, LeJEPA-style: no EMA copy, no
       EMA state; pair it with ``IJEPALoss(regularizer="sigreg", stop_gradient=False)``);
    2. context encoder on the context patches only (``keep=context_idx``) -> ``(B, Lc, D)``;
    3. predictor from the context tokens and the target positions -> ``(B, K, Lt, D)``.

    The target tokens are returned un-normalised and un-gathered, with the index of each predicted
    token, so that the loss can layer-norm and gather them in one fused pass
    (:class:`jepa.trainer.losses.IJEPALoss`, through :func:`jepa.ops.jepa_loss` with ``target_index``).

    In the trainer the model consumes the collated batch through :meth:`forward_batch`. Under DDP
    the token outputs are not gathered across ranks (:attr:`unbatched_outputs`: every rank draws
    its own masks, of its own sizes); ``pooled``/``projection`` are.

    Args:
        encoder: the context encoder, a :class:`~jepa.models.vision.VisionTransformer`.
        predictor: a :class:`~jepa.models.vision.MaskedPredictor` of the same grid and width.
        target_encoder: ``"ema"`` (I-JEPA), ``"shared"`` or ``"none"`` (see step 1 and
            :class:`~jepa.models.JEPA`).
        momentum: EMA momentum at the start (I-JEPA: 0.996).
        momentum_end: EMA momentum at the end of the cosine schedule (I-JEPA: 1.0).
        projector: optional module applied to the pooled context, output ``"projection"`` (for a
            variance/covariance regulariser).
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        predictor: MaskedPredictor,
        target_encoder: str = "ema",
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        projector: nn.Module | None = None,
    ) -> None:
        if not isinstance(encoder, VisionTransformer):
            raise TypeError(f"IJEPA: encoder must be a VisionTransformer, got {type(encoder).__name__}")
        if not isinstance(predictor, MaskedPredictor):
            raise TypeError(f"IJEPA: predictor must be a MaskedPredictor, got {type(predictor).__name__}")
        if predictor.embed_dim != encoder.embed_dim:
            raise ValueError(
                f"IJEPA: predictor.embed_dim={predictor.embed_dim} must equal the encoder's embed_dim={encoder.embed_dim}"
            )
        if tuple(predictor.grid_size) != tuple(encoder.grid_size):
            raise ValueError(f"IJEPA: predictor grid {predictor.grid_size} != encoder grid {encoder.grid_size}")
        super().__init__(encoder, predictor, target_encoder=target_encoder, momentum=momentum, momentum_end=momentum_end, projector=projector)

    @classmethod
    def from_preset(
        cls,
        arch: str = "vit_small",
        *,
        image_size: int | tuple[int, int] = 224,
        patch_size: int | None = None,
        in_chans: int = 3,
        predictor_embed_dim: int | None = None,
        predictor_depth: int | None = None,
        predictor_num_heads: int | None = None,
        target_encoder: str = "ema",
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        **encoder_overrides: Any,
    ) -> "IJEPA":
        """An I-JEPA model around the ViT preset ``arch`` (``vit_tiny`` ... ``vit_huge``).

        The predictor follows I-JEPA: width ``min(384, embed_dim)``, the encoder's number of heads,
        depth 6 (tiny/small/base) or 12 (large/huge), unless given. ``patch_size`` defaults to the
        preset's; ``encoder_overrides`` go to the encoder (e.g. ``depth=6``).
        """
        if arch not in VIT_PRESETS:
            raise ValueError(f"IJEPA.from_preset: arch must be one of {sorted(VIT_PRESETS)}, got {arch!r}")
        kwargs = {"image_size": image_size, "in_chans": in_chans, **encoder_overrides}
        if patch_size is not None:
            kwargs["patch_size"] = patch_size
        encoder = build_vit(arch, **kwargs)
        predictor = MaskedPredictor(
            grid_size=encoder.grid_size,
            embed_dim=encoder.embed_dim,
            predictor_embed_dim=predictor_embed_dim or min(384, encoder.embed_dim),
            depth=predictor_depth or _PREDICTOR_DEPTH[arch],
            num_heads=predictor_num_heads or encoder.num_heads,
        )
        return cls(encoder, predictor, target_encoder=target_encoder, momentum=momentum, momentum_end=momentum_end)

    def forward_features(  # type: ignore[override]
        self,
        images: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        context_valid: torch.Tensor | None = None,
        target_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One I-JEPA forward on a batch of images and its multi-block masks
        (the tensors of :class:`jepa.data.masks.MultiBlockMasks`, same names).

        Returns a dict (``M = K * Lt`` predicted tokens per image, ``N`` patches, ``D`` width):

        * ``prediction`` ``(B, M, D)``: predicted target tokens (gradient flows here);
        * ``target_tokens`` ``(B, N, D)``: the target encoder's tokens of the full images, not
          layer-normed; detached, except with ``target_encoder="none"``;
        * ``target_index`` ``(B, M)`` long: the patch of ``target_tokens`` each prediction is for;
        * ``target_valid`` ``(B, M)`` bool: False for padded target rows;
        * ``context`` ``(B, Lc, D)``: context-encoder tokens (padded rows zero);
        * ``context_valid`` ``(B, Lc)`` bool;
        * ``pooled`` ``(B, D)``: mean of the valid context tokens (for a variance/covariance term);
        * ``projection``: ``projector(pooled)``, only when the model has a projector.
        """
        if not isinstance(target_idx, torch.Tensor) or target_idx.dim() != 3:
            got = tuple(target_idx.shape) if isinstance(target_idx, torch.Tensor) else type(target_idx).__name__
            raise ValueError(f"IJEPA: target_idx must be (B, K, Lt), got {got}")
        b = images.shape[0]
        target_tokens = self.encode_target(images)
        context = self.encoder(images, keep=context_idx, keep_valid=context_valid)
        prediction = self.predictor(context, context_idx, target_idx, context_valid, target_valid)
        m = target_idx.shape[1] * target_idx.shape[2]
        if target_valid is None:
            target_valid = torch.ones(b, m, dtype=torch.bool, device=target_idx.device)
        if context_valid is None:
            context_valid = torch.ones(context_idx.shape, dtype=torch.bool, device=context_idx.device)
        pooled = masked_mean(context, context_valid)
        out = {
            "prediction": prediction.reshape(b, m, prediction.shape[-1]),
            "target_tokens": target_tokens,
            "target_index": target_idx.reshape(b, m),
            "target_valid": target_valid.reshape(b, m),
            "context": context,
            "context_valid": context_valid,
            "pooled": pooled,
        }
        if self.projector is not None:
            out["projection"] = self.projector(pooled)
        return out

    #: Outputs the trainer does not gather across DDP ranks (per-rank mask sizes differ; the
    #: prediction loss is a per-rank mean, as in I-JEPA): see :mod:`jepa.trainer.objective`.
    unbatched_outputs = ("prediction", "target_tokens", "target_index", "target_valid", "context", "context_valid")

    def forward_batch(self, batch: Any) -> dict[str, torch.Tensor]:
        """The training step's forward on a collated batch: a mapping with ``images`` and the mask
        tensors of :class:`jepa.data.MultiBlockMaskCollator` (``context_idx``, ``context_valid``,
        ``target_idx``, ``target_valid``; ``labels`` and other entries are ignored). Returns
        :meth:`forward_features`'s outputs."""
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"IJEPA.forward_batch: expected the dict of jepa.data.MultiBlockMaskCollator (images and masks), "
                f"got {type(batch).__name__}; use DataLoader(..., collate_fn=MultiBlockMaskCollator(grid=...))"
            )
        missing = [k for k in ("images", "context_idx", "target_idx") if k not in batch]
        if missing:
            raise ValueError(
                f"IJEPA.forward_batch: the batch lacks {missing} (keys: {sorted(batch)}); "
                "collate it with jepa.data.MultiBlockMaskCollator"
            )
        return self.forward_features(
            batch["images"], batch["context_idx"], batch["target_idx"], batch.get("context_valid"), batch.get("target_valid")
        )

    def forward(self, images: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor, context_valid: torch.Tensor | None = None, target_valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """Same as :meth:`forward_features` (a dict of named outputs)."""
        return self.forward_features(images, context_idx, target_idx, context_valid, target_valid)
