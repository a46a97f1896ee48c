"""Supporting utilities: parameter counts, plots, config persistence, splits, reproducibility,
device information and model summaries."""

from __future__ import annotations

import json
import logging
import os
import platform
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

__all__ = [
    "count_parameters",
    "create_data_splits",
    "get_device_info",
    "load_training_config",
    "log_model_summary",
    "plot_training_history",
    "save_training_config",
    "setup_reproducibility",
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
