"""Training configs as files: a dict or :class:`~jepa.config.Config` to YAML/JSON and back (the v0
helpers of :mod:`jepa.trainer.utils`). Loading never runs code (``yaml.safe_load``)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["load_training_config", "save_training_config"]


def _to_plain(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def save_training_config(config: Any, path: str | os.PathLike) -> Path:
    """Save a training config (a dict or a jepa :class:`~jepa.config.Config`) as YAML or JSON,
    chosen by the file extension (``.yaml``/``.yml`` or ``.json``)."""
    path = Path(path)
    data = _to_plain(config)
    if not isinstance(data, Mapping):
        raise TypeError(f"save_training_config: config must be a dict or a Config, got {type(config).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    elif suffix == ".json":
        path.write_text(json.dumps(data, indent=2))
    else:
        raise ValueError(f"save_training_config: path must end in .yaml, .yml or .json, got {str(path)!r}")
    return path


def load_training_config(path: str | os.PathLike) -> dict[str, Any]:
    """Load a YAML or JSON training config as a plain dict (``yaml.safe_load``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_training_config: no such file {str(path)!r}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"load_training_config: {str(path)!r} is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"load_training_config: {str(path)!r} must hold a mapping at the top level, got {type(data).__name__}")
    return data


