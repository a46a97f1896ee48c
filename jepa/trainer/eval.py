"""JEPAEvaluator and representation-quality metrics (linear probes, effective rank)."""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from jepa import io as jio
from jepa.trainer.trainer import model_from_checkpoint_state, move_to_device, resolve_device, unpack_batch


def effective_rank(embeddings: torch.Tensor, eps: float = 1e-12) -> float:
    """RankMe effective rank: ``exp`` of the entropy of the normalized singular values.

    Equals ``k`` for a matrix with ``k`` equal non-zero singular values; 1 for a rank-1 matrix.
    """
    if embeddings.dim() != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"effective_rank expects a non-empty (N, D) matrix, got {tuple(embeddings.shape)}")
    s = torch.linalg.svdvals(embeddings.double())
    total = s.sum()
    if total <= eps:
        return 0.0
    p = s / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def sample_per_class(labels: np.ndarray, per_class: int | None, seed: int = 0) -> np.ndarray:
    """Indices of ``per_class`` random samples of every class (all indices when None)."""
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    idx = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} samples, fewer than labels_per_class={per_class}")
        idx.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(idx))


def linear_probe_accuracy(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    test_x: np.ndarray | torch.Tensor,
    test_y: np.ndarray | torch.Tensor,
    labels_per_class: int | None = None,
    seed: int = 0,
    max_iter: int = 2000,
) -> float:
    """Test accuracy of a logistic-regression probe on standardized features."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    train_x, train_y, test_x, test_y = (np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t) for t in (train_x, train_y, test_x, test_y))
    idx = sample_per_class(train_y, labels_per_class, seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))
    clf.fit(train_x[idx].reshape(len(idx), -1), train_y[idx])
    return float((clf.predict(test_x.reshape(len(test_x), -1)) == test_y).mean())


class JEPAEvaluator:
    """Evaluates a trained JEPA: prediction loss metrics and embeddings.

    Build it from a model (``JEPAEvaluator(model)``) or from a trainer checkpoint alone
    (``JEPAEvaluator.from_checkpoint(path)``).
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "auto", loss_fn: Any = None) -> None:
        from jepa.trainer.losses import JEPALoss  # noqa: PLC0415

        if not isinstance(model, nn.Module):
            raise TypeError(f"JEPAEvaluator: model must be an nn.Module, got {type(model).__name__}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.loss_fn = loss_fn if loss_fn is not None else JEPALoss()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto") -> "JEPAEvaluator":
        """Rebuild the model from a trainer checkpoint (class, config and weights) and wrap it."""
        state = jio.load(path, map_location="cpu")
        return cls(model_from_checkpoint_state(state, source=str(path)), device=device)

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Mean prediction loss (``loss``), ``mse`` and ``cosine_similarity`` between prediction and
        layer-normed target, over every batch of ``loader``."""
        import torch.nn.functional as F  # noqa: PLC0415

        sums = {"loss": 0.0, "mse": 0.0, "cosine_similarity": 0.0}
        n = 0
        for batch in loader:
            items = unpack_batch(move_to_device(batch, self.device))
            out = self.model.forward_features(*items)
            pred, target = out["prediction"], out["target"]
            tnorm = F.layer_norm(target, target.shape[-1:])
            terms = self.loss_fn.terms(pred, target, out.get("context")) if hasattr(self.loss_fn, "terms") else {"loss": self.loss_fn(pred, target)}
            sums["loss"] += float(terms["loss"])
            sums["mse"] += float(F.mse_loss(pred, tnorm))
            sums["cosine_similarity"] += float(F.cosine_similarity(pred, tnorm, dim=-1).mean())
            n += 1
        if n == 0:
            raise ValueError("JEPAEvaluator.evaluate: the loader yielded no batches")
        return {k: v / n for k, v in sums.items()}

    @torch.no_grad()
    def encode(self, data: torch.Tensor | Iterable, batch_size: int = 256) -> torch.Tensor:
        """Pooled embeddings (one row per sample) of a tensor ``(N, T, D)`` or of the first item of
        each batch of a loader."""
        if isinstance(data, torch.Tensor):
            chunks = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
        elif isinstance(data, DataLoader) or hasattr(data, "__iter__"):
            chunks = (b[0] if isinstance(b, (list, tuple)) else b for b in data)
        else:
            raise TypeError(f"encode: expected a tensor or an iterable of batches, got {type(data).__name__}")
        outs = [self.model.embed(c.to(self.device)).cpu() for c in chunks]
        if not outs:
            raise ValueError("encode: no data")
        return torch.cat(outs)


def probe_report(
    pretrained: nn.Module,
    random_init: nn.Module,
    train_tokens: torch.Tensor,
    train_labels: torch.Tensor,
    test_tokens: torch.Tensor,
    test_labels: torch.Tensor,
    train_raw: torch.Tensor,
    test_raw: torch.Tensor,
    labels_per_class: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Linear-probe accuracy of the pretrained encoder vs the same architecture at random init vs
    the raw input, with ``labels_per_class`` labels per class and with all labels, plus the
    effective rank of the pretrained test embeddings.

    Returns ``{"probe": {"pretrained"|"random_init"|"raw_input": {"<k>_per_class", "all"}},
    "effective_rank", "embedding_dim"}``.
    """
    key = f"{labels_per_class}_per_class"
    probe: dict[str, dict[str, float]] = {}
    test_embeddings = None
    for name, model in (("pretrained", pretrained), ("random_init", random_init)):
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        ztr, zte = model.embed(train_tokens.to(device)).cpu(), model.embed(test_tokens.to(device)).cpu()
        model.train(was_training)
        if name == "pretrained":
            test_embeddings = zte
        probe[name] = {
            key: linear_probe_accuracy(ztr, train_labels, zte, test_labels, labels_per_class, seed),
            "all": linear_probe_accuracy(ztr, train_labels, zte, test_labels, None, seed),
        }
    rtr, rte = train_raw.reshape(len(train_raw), -1), test_raw.reshape(len(test_raw), -1)
    probe["raw_input"] = {
        key: linear_probe_accuracy(rtr, train_labels, rte, test_labels, labels_per_class, seed),
        "all": linear_probe_accuracy(rtr, train_labels, rte, test_labels, None, seed),
    }
    return {"probe": probe, "effective_rank": effective_rank(test_embeddings), "embedding_dim": int(test_embeddings.shape[1])}
