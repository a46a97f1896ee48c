"""BaseModel: nn.Module with a recorded constructor config and HuggingFace-style save/load.

Every subclass records the arguments it was built with (``model.config``), so a model can be
rebuilt from a directory or a checkpoint without the user's code. Sub-modules that are themselves
``BaseModel`` instances are recorded as nested ``{"class": name, "config": {...}}`` entries.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jepa import io as jio
from jepa.io import atomic_write

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"

_REGISTRY: dict[str, type["BaseModel"]] = {}


def _encode(value: Any, where: str) -> Any:
    """Turn a constructor argument into JSON; BaseModels become nested class+config entries."""
    if isinstance(value, BaseModel):
        return {"__model__": type(value).__name__, "config": value.config}
    if isinstance(value, nn.Module):
        # A plain nn.Module cannot be rebuilt from JSON; remember its class so the error is clear.
        return {"__module__": f"{type(value).__module__}.{type(value).__qualname__}"}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).replace("torch.", "")}
    raise TypeError(f"{where}: cannot record constructor argument of type {type(value).__name__} in config.json")


def _decode(value: Any, where: str, overrides: dict[str, nn.Module]) -> Any:
    if isinstance(value, dict):
        if "__model__" in value:
            return build_model(value["__model__"], value["config"])
        if "__module__" in value:
            name = where.rsplit(".", 1)[-1]
            if name in overrides:
                return overrides[name]
            raise ValueError(
                f"{where} was a plain nn.Module ({value['__module__']}) that cannot be rebuilt from its "
                f"config; pass it explicitly, e.g. from_pretrained(path, {name}=...)"
            )
        if "__dtype__" in value:
            return getattr(torch, value["__dtype__"])
        return {k: _decode(v, f"{where}.{k}", overrides) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]", overrides) for i, v in enumerate(value)]
    return value


def build_model(class_name: str, config: dict[str, Any], **modules: nn.Module) -> "BaseModel":
    """Rebuild a registered ``BaseModel`` subclass from its recorded ``config``.

    ``modules`` replace sub-module arguments by name (e.g. ``encoder=my_encoder``).
    """
    if class_name not in _REGISTRY:
        raise ValueError(f"unknown model class {class_name!r}; known: {', '.join(sorted(_REGISTRY))}")
    cls = _REGISTRY[class_name]
    kwargs = {}
    for key, value in config.items():
        if key in modules:
            kwargs[key] = modules[key]
        else:
            kwargs[key] = _decode(value, f"{class_name}.{key}", modules)
    return cls(**kwargs)


class BaseModel(nn.Module):
    """Base class of every jepa model: records its config, saves and loads itself."""

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls
        original_init = cls.__init__
        signature = inspect.signature(original_init)

        def __init__(self, *args: Any, **kw: Any) -> None:  # noqa: N807
            # Record only at the outermost constructor (a subclass calling super().__init__ must not
            # overwrite its own config with the parent's arguments).
            outermost = not getattr(self, "_recording_config", False)
            if outermost:
                object.__setattr__(self, "_recording_config", True)
            try:
                original_init(self, *args, **kw)
            finally:
                if outermost:
                    object.__setattr__(self, "_recording_config", False)
            if outermost and type(self) is cls:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                params = dict(bound.arguments)
                params.pop("self", None)
                for name, param in signature.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD and name in params:
                        params.update(params.pop(name))
                    elif param.kind is inspect.Parameter.VAR_POSITIONAL and name in params:
                        if params.pop(name):
                            raise TypeError(f"{cls.__name__}: positional *args cannot be recorded in config")
                object.__setattr__(
                    self, "config", {k: _encode(v, f"{cls.__name__}.{k}") for k, v in params.items()}
                )

        __init__.__doc__ = original_init.__doc__
        __init__.__wrapped__ = original_init  # keeps inspect.signature() honest
        cls.__init__ = __init__

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory: str | os.PathLike, *, safe_serialization: bool = True) -> Path:
        """Write ``config.json`` and the weights: ``model.safetensors`` (written by :func:`jepa.io.save`:
        atomic, fsync'd, a CRC32C per tensor; readable by ``safetensors.torch.load_file``), or
        ``pytorch_model.bin`` (``torch.save``) with ``safe_serialization=False``.

        Returns the directory path.
        """
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"class": type(self).__name__, "config": self.config, "jepa_version": _version()}
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if safe_serialization:
            jio.save(state, directory / SAFETENSORS_NAME)
            stale = directory / TORCH_WEIGHTS_NAME
        else:
            atomic_write(directory / TORCH_WEIGHTS_NAME, lambda p: torch.save(state, p))
            stale = directory / SAFETENSORS_NAME
        if stale.exists():
            stale.unlink()
        atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
        return directory

    @classmethod
    def from_pretrained(cls, load_directory: str | os.PathLike, map_location: str | torch.device = "cpu", **modules: nn.Module):
        """Rebuild a model saved by :meth:`save_pretrained` and load its weights.

        ``modules`` are sub-modules to use instead of rebuilding them from the config (their
        weights are overwritten by the saved ones), e.g.
        ``JEPA.from_pretrained(path, encoder=encoder, predictor=predictor)``.
        """
        directory = Path(load_directory)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"from_pretrained: no {CONFIG_NAME} in {str(directory)!r}")
        meta = json.loads(config_path.read_text())
        class_name = meta.get("class")
        if cls is not BaseModel and class_name != cls.__name__ and not issubclass(_REGISTRY.get(class_name, object), cls):
            raise ValueError(
                f"from_pretrained: {str(directory)!r} holds a {class_name}, not a {cls.__name__}"
            )
        model = build_model(class_name, meta["config"], **modules)
        st_path, pt_path = directory / SAFETENSORS_NAME, directory / TORCH_WEIGHTS_NAME
        if st_path.is_file():
            state = jio.load(st_path, map_location=map_location)  # ours (checksums verified) or any safetensors file
        elif pt_path.is_file():
            state = torch.load(pt_path, map_location=map_location, weights_only=True)
        else:
            raise FileNotFoundError(f"from_pretrained: no {SAFETENSORS_NAME} or {TORCH_WEIGHTS_NAME} in {str(directory)!r}")
        load_state_dict_strict(model, state, source=str(directory))
        return model.to(map_location)


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` that names the first missing/unexpected/mis-shaped key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not match the model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{source}: shape mismatch for {key!r}: checkpoint has {tuple(state[key].shape)}, "
                f"model has {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)


def _version() -> str:
    from jepa import __version__  # noqa: PLC0415

    return __version__
