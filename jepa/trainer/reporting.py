"""Human-facing reports of a run: parameter counts, a model summary table, the loss/lr plot, a
progress bar (the v0 helpers of :mod:`jepa.trainer.utils`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from jepa.trainer.checks import check_number, check_type

__all__ = ["count_parameters", "log_model_summary", "plot_training_history", "track_progress"]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` by default).

    Shared (tied) parameters are counted once.
    """
    check_type("model", model, nn.Module, owner="count_parameters", what="an nn.Module")
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total



def log_model_summary(model: nn.Module, logger: logging.Logger | None = None, max_depth: int = 2) -> str:
    """A table of the model's sub-modules (down to ``max_depth``) with parameter counts.

    Logs it at INFO level on ``logger`` (the ``jepa`` logger by default) and returns it.
    """
    check_type("model", model, nn.Module, owner="log_model_summary", what="an nn.Module")
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



def plot_training_history(history: Mapping[str, Sequence[float]], save_path: str | os.PathLike | None = None, show: bool = False):
    """Plot train/val loss (and lr on a second axis when present) per epoch.

    Writes a PNG to ``save_path`` when given and returns the matplotlib figure.
    Needs matplotlib (a dependency of jepa-torch; ``pip install matplotlib`` where it is missing).
    """
    try:
        import matplotlib  # noqa: PLC0415

        if not show:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("plot_training_history needs matplotlib (a dependency of jepa-torch): pip install matplotlib") from exc
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
    check_number("total", total, low=0, optional=True, owner="track_progress")
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"track_progress: desc must be a str or None, got {type(desc).__name__}")
    return tqdm(iterable, total=total, desc=desc, disable=disable, **kwargs)

