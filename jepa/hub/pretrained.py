"""One entry point for weights from anywhere: our directories, Hugging Face I-JEPA directories,
official I-JEPA checkpoint files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from jepa.hub.hf import from_transformers, require_transformers
from jepa.hub.ijepa import load_ijepa_checkpoint
from jepa.models.base import CONFIG_NAME, BaseModel

__all__ = ["from_pretrained"]


def from_pretrained(path: str | os.PathLike, map_location: str = "cpu") -> BaseModel:
    """Load a model from ``path``, whatever wrote it:

    * a directory written by :meth:`jepa.models.BaseModel.save_pretrained` (its ``config.json`` names
      the class): that model, as :meth:`~jepa.models.BaseModel.from_pretrained` rebuilds it;
    * a Hugging Face I-JEPA directory (``config.json`` with ``"model_type": "ijepa"``, e.g. written
      by ``to_transformers(vit).save_pretrained(...)`` or downloaded from the Hub): a
      :class:`~jepa.models.vision.VisionTransformer` (:func:`~jepa.hub.from_transformers`; needs
      ``transformers``; read with ``local_files_only=True``, no network);
    * an official I-JEPA checkpoint file (``.pth.tar``): an :class:`~jepa.models.IJEPA`
      (:func:`~jepa.hub.load_ijepa_checkpoint`).

    Raises:
        FileNotFoundError: ``path`` does not exist, or a directory has no ``config.json``.
        NotImplementedError: a Hugging Face V-JEPA 2 directory (no video encoder yet).
        ValueError: a ``config.json`` of another kind.
    """
    path = Path(path)
    if path.is_file():
        return load_ijepa_checkpoint(path, map_location=map_location)
    if not path.is_dir():
        raise FileNotFoundError(f"from_pretrained: no such file or directory: {str(path)!r}")
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"from_pretrained: no {CONFIG_NAME} in {str(path)!r}")
    meta = json.loads(config_path.read_text())
    if "class" in meta:
        return BaseModel.from_pretrained(path, map_location=map_location)
    model_type = meta.get("model_type")
    if model_type == "ijepa":
        transformers = require_transformers()
        hf = transformers.IJepaModel.from_pretrained(str(path), local_files_only=True)
        return from_transformers(hf.eval()).to(map_location)
    if model_type == "vjepa2":
        raise NotImplementedError(
            f"from_pretrained: {str(path)!r} is a V-JEPA 2 video model; jepa.models has no video encoder yet"
        )
    raise ValueError(
        f"from_pretrained: {str(config_path)!r} is neither a jepa model (no 'class') nor a Hugging Face I-JEPA "
        f"model (model_type={model_type!r}, expected 'ijepa')"
    )
