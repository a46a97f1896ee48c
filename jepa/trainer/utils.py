"""Supporting utilities: parameter counts, plots, config persistence, splits, reproducibility,
device information, model summaries, and the v0 training helpers (``setup_training``, checkpoint
save/load/selection, metrics, logging and progress bars). ``create_optimizer`` and
``create_scheduler`` are re-exported lazily from :mod:`jepa.trainer.optimizers` and
:mod:`jepa.trainer.schedulers`."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from jepa import io as jio
from jepa.models.base import BaseModel, load_state_dict_strict

__all__ = [
    "compute_metrics",
    "count_parameters",
    "create_data_splits",
    "create_optimizer",
    "create_scheduler",
    "get_best_checkpoint",
    "get_device_info",
    "load_checkpoint",
    "load_training_config",
    "log_metrics",
    "log_model_summary",
    "plot_training_history",
    "save_checkpoint",
    "save_training_config",
    "setup_reproducibility",
    "setup_training",
    "track_progress",
]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` by default).

    Shared (tied) parameters are counted once.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters: model must be an nn.Module, got {type(model).__name__}")
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def plot_training_history(history: Mapping[str, Sequence[float]], save_path: str | os.PathLike | None = None, show: bool = False):
    """Plot train/val loss (and lr on a second axis when present) per epoch.

    Writes a PNG to ``save_path`` when given and returns the matplotlib figure.
    Needs matplotlib (``pip install 'jepa[plot]'``).
    """
    try:
        import matplotlib  # noqa: PLC0415

        if not show:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("plot_training_history needs matplotlib: pip install 'jepa[plot]'") from exc
    if not isinstance(history, Mapping):
        raise TypeError(f"plot_training_history: history must be a mapping of lists, got {type(history).__name__}")
    losses = {k: list(v) for k, v in history.items() if k.endswith("loss") and len(v) > 0}
    if not losses:
        raise ValueError(f"plot_training_history: history has no non-empty '*loss' series (keys: {sorted(history)})")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in losses.items():
        ax.plot(range(1, len(values) + 1), values, marker="o" if len(values) < 30 else None, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    lr = list(history.get("lr", []))
    if lr:
        ax2 = ax.twinx()
        ax2.plot(range(1, len(lr) + 1), lr, color="grey", linestyle="--", label="lr")
        ax2.set_ylabel("learning rate")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right")
    ax.set_title("training history")
    fig.tight_layout()
    if save_path is not None:
        Path(save_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_path, dpi=120)
    if show:
        plt.show()
    else:
        plt.close(fig)
    return fig


def _to_plain(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    import dataclasses  # noqa: PLC0415

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def save_training_config(config: Any, path: str | os.PathLike) -> Path:
    """Save a training config (a dict or a jepa :class:`~jepa.config.Config`) as YAML or JSON,
    chosen by the file extension (``.yaml``/``.yml`` or ``.json``)."""
    import yaml  # noqa: PLC0415

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
    import yaml  # noqa: PLC0415

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


def create_data_splits(
    dataset: Dataset,
    train_ratio: float = 0.8,
    val_ratio: float = 0.1,
    test_ratio: float | None = None,
    seed: int = 42,
) -> tuple[Subset, Subset, Subset]:
    """Split ``dataset`` into disjoint train/val/test subsets, shuffled by ``seed``.

    ``test_ratio`` defaults to what remains; ratios must be >= 0 and sum to at most 1. Sizes are
    rounded down, leftovers go to train.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("create_data_splits: the dataset is empty")
    if test_ratio is None:
        test_ratio = max(0.0, 1.0 - train_ratio - val_ratio)
    for name, r in (("train_ratio", train_ratio), ("val_ratio", val_ratio), ("test_ratio", test_ratio)):
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"create_data_splits: {name} must be in [0, 1], got {r!r}")
    if train_ratio + val_ratio + test_ratio > 1.0 + 1e-9:
        raise ValueError(f"create_data_splits: ratios sum to {train_ratio + val_ratio + test_ratio:.3f} > 1")
    n_val, n_test = int(n * val_ratio), int(n * test_ratio)
    n_train = n - n_val - n_test if abs(train_ratio + val_ratio + test_ratio - 1.0) < 1e-9 else int(n * train_ratio)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train_idx = perm[:n_train]
    val_idx = perm[n_train : n_train + n_val]
    test_idx = perm[n_train + n_val : n_train + n_val + n_test]
    return Subset(dataset, train_idx), Subset(dataset, val_idx), Subset(dataset, test_idx)


def setup_reproducibility(seed: int = 42, deterministic: bool = False) -> int:
    """Seed python, numpy and torch (all devices); with ``deterministic`` also ask torch for
    deterministic algorithms (slower, raises on ops without one). Returns the seed."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"setup_reproducibility: seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def get_device_info() -> dict[str, Any]:
    """What this process can compute on: torch version, CPU threads, CUDA devices, jepa backends."""
    from jepa import ops  # noqa: PLC0415

    info: dict[str, Any] = {
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "devices": [],
        "jepa_backends": ops.available_backends(),
    }
    if torch.cuda.is_available():
        info["cuda_version"] = torch.version.cuda
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["devices"].append(
                {"index": i, "name": props.name, "total_memory_gb": round(props.total_memory / 2**30, 2), "capability": f"{props.major}.{props.minor}"}
            )
    return info


def log_model_summary(model: nn.Module, logger: logging.Logger | None = None, max_depth: int = 2) -> str:
    """A table of the model's sub-modules (down to ``max_depth``) with parameter counts.

    Logs it at INFO level on ``logger`` (the ``jepa`` logger by default) and returns it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"log_model_summary: model must be an nn.Module, got {type(model).__name__}")
    rows = [("module", "type", "params", "trainable")]
    for name, module in model.named_modules():
        depth = 0 if name == "" else name.count(".") + 1
        if depth > max_depth:
            continue
        rows.append((name or "(root)", type(module).__name__, f"{count_parameters(module, False):,}", f"{count_parameters(module, True):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    total, trainable = count_parameters(model, False), count_parameters(model, True)
    lines.append(f"total: {total:,} parameters ({trainable:,} trainable, {total - trainable:,} frozen)")
    summary = "\n".join(lines)
    (logger or logging.getLogger("jepa")).info("model summary:\n%s", summary)
    return summary


# ---------------------------------------------------------------------------------------------
# v0 training helpers (spec/training-api-v0.md, "Training Utilities")
# ---------------------------------------------------------------------------------------------

_LAZY_EXPORTS = {
    "create_optimizer": "jepa.trainer.optimizers",
    "create_scheduler": "jepa.trainer.schedulers",
}


def __getattr__(name: str) -> Any:
    """Lazily re-export ``create_optimizer`` / ``create_scheduler`` from their own modules."""
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    try:
        value = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise AttributeError(f"{__name__}.{name}: cannot import {name!r} from {module_name!r}: {exc}") from exc
    globals()[name] = value
    return value


def setup_training(config: Any) -> tuple[torch.device, nn.Module, DataLoader]:
    """Device, model and training DataLoader described by a :class:`~jepa.config.Config`.

    ``config`` is a ``Config``, a plain dict in the YAML layout, or a path/shipped name accepted by
    :func:`jepa.config.load_config`. Seeds python/numpy/torch from ``config.training.seed`` (via
    :func:`setup_reproducibility`), resolves ``config.training.device`` (``"auto"`` picks CUDA when
    available), builds the dataset of ``config.data`` and the model of ``config.model`` (input size
    taken from the data unless ``model.input_dim`` is set), moves the model to the device and returns
    ``(device, model, train_loader)``.
    """
    from jepa.config import Config, config_from_dict, load_config  # noqa: PLC0415
    from jepa.trainer.builders import build_datasets, build_loaders, build_model  # noqa: PLC0415
    from jepa.trainer.trainer import resolve_device  # noqa: PLC0415

    if isinstance(config, Mapping):
        config = config_from_dict(dict(config))
    elif isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    if not isinstance(config, Config):
        raise TypeError(f"setup_training: config must be a jepa.config.Config, a dict or a config path, got {type(config).__name__}")
    device = resolve_device(config.training.device)
    setup_reproducibility(config.training.seed)
    train_set, _ = build_datasets(config)
    model = build_model(config, input_dim=train_set.token_dim, num_tokens=train_set.num_tokens).to(device)
    train_loader, _ = build_loaders(config, train_set, None)
    return device, model, train_loader


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{what} must be a single number, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach())
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number, got bool {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a number or a one-element tensor, got {type(value).__name__} {value!r}") from exc


def save_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    epoch: int,
    loss: float | torch.Tensor,
    checkpoint_path: str | os.PathLike,
) -> Path:
    """Write model weights, optimizer/scheduler state, epoch and loss to ``checkpoint_path``.

    The file is written atomically through :func:`jepa.io.save` (parent folders are created; any
    suffix works, ``.pt``/``.pth`` by convention). Keys match :meth:`JEPATrainer.checkpoint_state`
    (``"model"``, ``"optimizer"``, ``"scheduler"``, ``"epoch"``, and ``"model_class"`` /
    ``"model_config"`` for a :class:`~jepa.models.BaseModel`) plus ``"loss"``, so the trainer can
    resume from it; ``optimizer``/``scheduler`` may be None, in which case their key is left out.
    Returns the path written.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_checkpoint: model must be an nn.Module, got {type(model).__name__}")
    if optimizer is not None and not callable(getattr(optimizer, "state_dict", None)):
        raise TypeError(f"save_checkpoint: optimizer must be a torch optimizer or None, got {type(optimizer).__name__}")
    if scheduler is not None and not callable(getattr(scheduler, "state_dict", None)):
        raise TypeError(f"save_checkpoint: scheduler must be a torch LR scheduler or None, got {type(scheduler).__name__}")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"save_checkpoint: epoch must be a non-negative int, got {epoch!r}")
    loss_value = _as_float(loss, "save_checkpoint: loss")
    if not isinstance(checkpoint_path, (str, os.PathLike)):
        raise TypeError(f"save_checkpoint: checkpoint_path must be a str or os.PathLike, got {type(checkpoint_path).__name__}")
    state: dict[str, Any] = {
        "model": {k: v.detach() for k, v in model.state_dict().items()},
        "epoch": int(epoch),
        "loss": loss_value,
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if isinstance(model, BaseModel):
        state["model_class"] = type(model).__name__
        state["model_config"] = json.dumps(model.config)
    from jepa import __version__  # noqa: PLC0415

    state["jepa_version"] = __version__
    return jio.save(state, Path(checkpoint_path))


def load_checkpoint(
    checkpoint_path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, torch.optim.Optimizer | None, Any | None, int]:
    """Restore ``model`` (and ``optimizer``/``scheduler`` when given) from a checkpoint.

    Reads files written by :func:`save_checkpoint` and by :meth:`JEPATrainer.save_checkpoint`
    (safely: ``weights_only`` loading, no unpickling). The weights must match the model exactly:
    a missing/unexpected key or a shape mismatch raises ``ValueError`` naming the key (and both
    shapes). An optimizer or scheduler passed in is restored when the checkpoint holds its state;
    when it does not, a warning says so and it is left unchanged. Returns
    ``(model, optimizer, scheduler, epoch)``.

    Raises:
        FileNotFoundError: ``checkpoint_path`` does not exist.
        jepa.io.CheckpointError: the file is damaged or is not a model checkpoint.
    """
    if not isinstance(checkpoint_path, (str, os.PathLike)):
        raise TypeError(f"load_checkpoint: checkpoint_path must be a str or os.PathLike, got {type(checkpoint_path).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"load_checkpoint: model must be an nn.Module, got {type(model).__name__}")
    if optimizer is not None and not callable(getattr(optimizer, "load_state_dict", None)):
        raise TypeError(f"load_checkpoint: optimizer must be a torch optimizer or None, got {type(optimizer).__name__}")
    if scheduler is not None and not callable(getattr(scheduler, "load_state_dict", None)):
        raise TypeError(f"load_checkpoint: scheduler must be a torch LR scheduler or None, got {type(scheduler).__name__}")
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: checkpoint_path {str(path)!r} does not exist or is not a file")
    state = jio.load(path, map_location=map_location)
    if not isinstance(state, Mapping) or not isinstance(state.get("model"), Mapping):
        raise jio.CheckpointError(f"load_checkpoint: {str(path)!r} is not a jepa checkpoint (no 'model' state dict)")
    load_state_dict_strict(model, dict(state["model"]), source=str(path))
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if state.get(name) is not None:
            obj.load_state_dict(state[name])
        else:
            warnings.warn(f"load_checkpoint: {str(path)!r} holds no {name} state; the {name} passed in is left unchanged", stacklevel=2)
    epoch = int(state.get("epoch", 0))
    return model, optimizer, scheduler, epoch


def get_best_checkpoint(checkpoint_dir: str | os.PathLike, mode: str = "min", metric: str = "loss") -> Path | None:
    """The ``*.pt``/``*.pth`` file in ``checkpoint_dir`` with the best stored ``metric``.

    The value is read from the checkpoint key ``metric`` or, failing that, ``"best_" + metric``
    (:func:`save_checkpoint` stores ``"loss"``, :class:`JEPATrainer` stores ``"best_loss"``).
    ``mode="min"`` picks the smallest value, ``"max"`` the largest; ties go to the file written
    first (then by name). Files that cannot be read, lack the metric or hold NaN are skipped with a
    warning. Returns None when no file qualifies.

    Raises:
        ValueError: ``mode`` is not ``"min"`` or ``"max"``.
        FileNotFoundError / NotADirectoryError: ``checkpoint_dir`` is missing or not a folder.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"get_best_checkpoint: mode must be 'min' or 'max', got {mode!r}")
    if not isinstance(metric, str) or not metric:
        raise TypeError(f"get_best_checkpoint: metric must be a non-empty str, got {metric!r}")
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"get_best_checkpoint: checkpoint_dir must be a str or os.PathLike, got {type(checkpoint_dir).__name__}")
    directory = Path(checkpoint_dir)
    if not directory.exists():
        raise FileNotFoundError(f"get_best_checkpoint: checkpoint_dir {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"get_best_checkpoint: checkpoint_dir {str(directory)!r} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".pt", ".pth") and p.is_file())
    best: tuple[float, int, str] | None = None
    best_path: Path | None = None
    sign = 1.0 if mode == "min" else -1.0
    for path in files:
        try:
            state = jio.load(path, map_location="cpu")
        except (jio.CheckpointError, OSError) as exc:
            warnings.warn(f"get_best_checkpoint: skipping unreadable {str(path)!r}: {exc}", stacklevel=2)
            continue
        raw = None
        if isinstance(state, Mapping):
            raw = state.get(metric, state.get(f"best_{metric}"))
        if raw is None:
            warnings.warn(f"get_best_checkpoint: skipping {str(path)!r}: no {metric!r} or 'best_{metric}' entry", stacklevel=2)
            continue
        try:
            value = _as_float(raw, f"{metric} in {str(path)!r}")
        except (TypeError, ValueError) as exc:
            warnings.warn(f"get_best_checkpoint: skipping {str(path)!r}: {exc}", stacklevel=2)
            continue
        if math.isnan(value):
            warnings.warn(f"get_best_checkpoint: skipping {str(path)!r}: {metric} is NaN", stacklevel=2)
            continue
        key = (sign * value, path.stat().st_mtime_ns, path.name)
        if best is None or key < best:
            best, best_path = key, path
    return best_path


METRICS = ("mse", "mae", "rmse", "cosine_sim", "r2", "smooth_l1", "correlation")


def compute_metrics(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    metric_types: Sequence[str] | str = ("mse", "mae", "cosine_sim"),
) -> dict[str, float]:
    """Regression/embedding metrics of ``predictions`` against ``targets`` (same shape), as floats.

    Supported names: ``"mse"``, ``"mae"``, ``"rmse"``, ``"cosine_sim"`` (mean cosine similarity
    over the last dimension), ``"r2"`` (``1 - SS_res / SS_tot`` over all elements; NaN when the
    targets are constant), ``"smooth_l1"`` (Huber with beta 1, mean) and ``"correlation"``
    (Pearson over the flattened tensors; NaN when either is constant). Computed in float64 without
    gradients. Array-likes are converted with ``torch.as_tensor``.
    """
    if isinstance(metric_types, str):
        metric_types = (metric_types,)
    metric_types = list(metric_types)
    unknown = [m for m in metric_types if m not in METRICS]
    if unknown:
        raise ValueError(f"compute_metrics: unknown metric_types {unknown}; valid: {', '.join(METRICS)}")
    p = predictions if isinstance(predictions, torch.Tensor) else torch.as_tensor(predictions)
    t = targets if isinstance(targets, torch.Tensor) else torch.as_tensor(targets)
    if p.shape != t.shape:
        raise ValueError(f"compute_metrics: predictions and targets must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    if p.numel() == 0:
        raise ValueError(f"compute_metrics: predictions and targets are empty (shape {tuple(p.shape)})")
    dtype = torch.float32 if p.device.type == "mps" else torch.float64
    with torch.no_grad():
        p = p.detach().to(dtype=dtype)
        t = t.detach().to(device=p.device, dtype=dtype)
        diff = p - t
        out: dict[str, float] = {}
        for name in metric_types:
            if name == "mse":
                out[name] = float(diff.pow(2).mean())
            elif name == "mae":
                out[name] = float(diff.abs().mean())
            elif name == "rmse":
                out[name] = float(diff.pow(2).mean().sqrt())
            elif name == "cosine_sim":
                pv, tv = (p.reshape(1), t.reshape(1)) if p.dim() == 0 else (p, t)
                out[name] = float(torch.nn.functional.cosine_similarity(pv, tv, dim=-1).mean())
            elif name == "r2":
                ss_res = diff.pow(2).sum()
                ss_tot = (t - t.mean()).pow(2).sum()
                out[name] = float(1.0 - ss_res / ss_tot) if ss_tot > 0 else math.nan
            elif name == "smooth_l1":
                out[name] = float(torch.nn.functional.smooth_l1_loss(p, t, beta=1.0))
            elif name == "correlation":
                pc, tc = p.flatten() - p.mean(), t.flatten() - t.mean()
                denom = pc.pow(2).sum().sqrt() * tc.pow(2).sum().sqrt()
                out[name] = float((pc * tc).sum() / denom) if denom > 0 else math.nan
    return out


def log_metrics(metrics: Mapping[str, Any], step: int, logger: Any = None) -> dict[str, float]:
    """Send ``metrics`` at ``step`` to ``logger``; returns them as plain floats.

    ``logger`` may be None (the ``"jepa"`` :class:`logging.Logger`, INFO level), a
    :class:`logging.Logger` / :class:`logging.LoggerAdapter` (one INFO line ``step N: k=v, ...``),
    or any object with a ``log_metrics(metrics, step)`` method (a :mod:`jepa.loggers` logger, for
    example), which is called with the float values. Tensors (one element) are converted with
    ``float()``.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"log_metrics: metrics must be a mapping of name -> number, got {type(metrics).__name__}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"log_metrics: step must be an int, got {type(step).__name__} {step!r}")
    values = {str(k): _as_float(v, f"log_metrics: metrics[{k!r}]") for k, v in metrics.items()}
    if logger is None:
        logger = logging.getLogger("jepa")
    if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        logger.info("step %d: %s", int(step), ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
    elif callable(getattr(logger, "log_metrics", None)):
        logger.log_metrics(values, int(step))
    else:
        raise TypeError(
            f"log_metrics: logger must be None, a logging.Logger or an object with a log_metrics(metrics, step) method, got {type(logger).__name__}"
        )
    return values


def track_progress(
    iterable: Iterable[Any] | None = None,
    total: int | None = None,
    desc: str | None = None,
    disable: bool = False,
    **kwargs: Any,
):
    """A ``tqdm.auto`` progress bar over ``iterable`` (or a manual bar, updated with ``.update(n)``,
    when ``iterable`` is None); extra keyword arguments go to ``tqdm``. Returns the tqdm object.
    With ``disable=True`` nothing is printed and iteration passes the items straight through.
    """
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - tqdm is a dependency
        raise ImportError("track_progress needs tqdm: pip install tqdm") from exc
    if total is not None and (isinstance(total, bool) or not isinstance(total, (int, float)) or total < 0):
        raise ValueError(f"track_progress: total must be a non-negative number or None, got {total!r}")
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"track_progress: desc must be a str or None, got {type(desc).__name__}")
    return tqdm(iterable, total=total, desc=desc, disable=disable, **kwargs)
