"""Continue pretraining from saved weights: ``model.init_from`` / ``jepa train --init-from PATH``.

The run's encoder gets the weights of the encoder found at ``PATH``, and its EMA target (when it
has one) is set equal to that encoder, as at the start of any run; the predictor, the projector and
the optimizer start fresh. ``PATH`` is one of:

* a trainer checkpoint file (``last.pt``, ``best_model.pt``, ...): the encoder of the model it
  records (the online encoder, the one the optimizer was training);
* an official I-JEPA checkpoint file (``.pth.tar`` with ``encoder``/``predictor``/``target_encoder``):
  its ``encoder`` (:func:`jepa.hub.load_ijepa_checkpoint`);
* a directory written by :meth:`~jepa.models.BaseModel.save_pretrained`: the saved model's
  ``encoder`` (a saved :class:`~jepa.models.IJEPA` or :class:`~jepa.models.JEPA`), or the saved
  model itself when it is an encoder (a :class:`~jepa.models.vision.VisionTransformer`);
* a Hugging Face ``IJepaModel`` directory (``save_pretrained`` of ``transformers``; needs the ``hf``
  extra, read from local files only): the converted encoder (:func:`jepa.hub.from_transformers`).

The encoder's non-persistent buffers are the run's own: the pixel statistics of the run's data and
the fixed sin-cos position table of the run's grid. Any other difference (architecture, width,
depth, patch size, a learned position table) is a :class:`ValueError` naming the path and every
mismatched key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

import jepa.io as jio
from jepa.hub import from_pretrained as hub_from_pretrained
from jepa.hub import load_ijepa_checkpoint
from jepa.trainer.checkpoints import model_from_checkpoint_state

__all__ = ["encoder_from_path", "init_encoder_from"]

_SHOWN_KEYS = 8


def _source_error(path: Path, what: str) -> ValueError:
    return ValueError(f"model.init_from: {str(path)!r} {what}")


def encoder_from_path(path: str | os.PathLike) -> nn.Module:
    """The encoder stored at ``path`` (any source listed in :mod:`jepa.trainer.init_from`), on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist, or a directory has no ``config.json``.
        ValueError: the file or directory holds no encoder this module can read.
        ImportError: a Hugging Face directory and ``transformers`` is not installed.
        NotImplementedError: a Hugging Face V-JEPA 2 directory (no video encoder yet).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"model.init_from must be a path (str), got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model.init_from: no such file or directory: {str(path)!r}")
    if path.is_dir():
        model = hub_from_pretrained(path)
    else:
        try:
            state = jio.load(path, map_location="cpu")
        except (jio.CheckpointError, OSError, RuntimeError) as exc:
            raise _source_error(path, f"is not a readable checkpoint: {exc}") from None
        if not isinstance(state, Mapping):
            raise _source_error(path, f"holds a {type(state).__name__}, not a checkpoint dict")
        if "model_class" in state and "model" in state:
            model = model_from_checkpoint_state(state, source=str(path))
        elif "encoder" in state and isinstance(state["encoder"], Mapping):
            model = load_ijepa_checkpoint(path)
        else:
            raise _source_error(
                path, "is neither a jepa trainer checkpoint (model_class, model) nor an official I-JEPA checkpoint (encoder, ...)"
            )
    encoder = getattr(model, "encoder", None)  # a whole JEPA, or (no .encoder) an encoder saved alone
    return encoder if isinstance(encoder, nn.Module) else model


def _mismatches(own: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> list[str]:
    lines = [f"missing {k}" for k in own if k not in theirs]
    lines += [f"unexpected {k}" for k in theirs if k not in own]
    lines += [
        f"{k}: saved {tuple(theirs[k].shape)}, run {tuple(v.shape)}"
        for k, v in own.items() if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    return lines


@torch.no_grad()
def init_encoder_from(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Copy the encoder stored at ``path`` into ``model.encoder`` and ``model.target_encoder``.

    ``model`` is a JEPA of the library (an ``encoder`` attribute; ``target_encoder`` ``None`` for the
    ``"shared"``/``"none"`` modes). Returns the source encoder.

    Raises:
        ValueError: the saved encoder does not fit ``model.encoder`` (the message names ``path``,
            both classes and the mismatched keys), or ``path`` holds no encoder.
        TypeError: ``model`` has no ``encoder``.
        FileNotFoundError, ImportError, NotImplementedError: as :func:`encoder_from_path`.
    """
    target = getattr(model, "encoder", None)
    if not isinstance(target, nn.Module):
        raise TypeError(f"model.init_from: the run's model ({type(model).__name__}) has no encoder to initialise")
    source = encoder_from_path(path)
    own, theirs = target.state_dict(), source.state_dict()
    bad = _mismatches(own, theirs)
    if bad:
        shown = "; ".join(bad[:_SHOWN_KEYS]) + (f"; ... ({len(bad) - _SHOWN_KEYS} more)" if len(bad) > _SHOWN_KEYS else "")
        raise ValueError(
            f"model.init_from: the encoder in {str(path)!r} ({type(source).__name__}) does not fit this run's encoder "
            f"({type(target).__name__}): {len(bad)} mismatched keys: {shown}"
        )
    target.load_state_dict({k: v.to(own[k].dtype) for k, v in theirs.items()}, strict=True)
    ema = getattr(model, "target_encoder", None)
    if isinstance(ema, nn.Module):
        ema.load_state_dict(target.state_dict(), strict=True)
    return source
