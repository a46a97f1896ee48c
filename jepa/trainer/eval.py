"""JEPAEvaluator and representation-quality metrics (linear/k-NN probes, effective rank, PCA)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from jepa import io as jio
from jepa.trainer.batches import first_input, move_to_device, resolve_device
from jepa.trainer.checkpoints import model_from_checkpoint_state
from jepa.trainer.checks import check_choice, check_number, check_type
from jepa.data import ImageFolderDataset
from jepa.trainer.losses import default_loss
from jepa.trainer.modes import evaluating
from jepa.trainer.objective import loss_terms, model_outputs


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


_TASKS = ("classification", "regression")
_METHODS = ("linear", "knn", "both")


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _pair(batch: Any, name: str) -> tuple[Any, Any]:
    """``(x, y)`` of one batch/sample of downstream data."""
    if isinstance(batch, Mapping):
        xk = next((k for k in ("x", "state_t") if k in batch), None)
        yk = next((k for k in ("y", "label", "labels", "target") if k in batch), None)
        if xk is None or yk is None:
            raise ValueError(f"{name}: dict items need an 'x' and a 'y' key, got keys {sorted(batch)}")
        return batch[xk], batch[yk]
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError(f"{name}: every item must be an (x, y) pair, got {type(batch).__name__}" + (f" of {len(batch)} items" if isinstance(batch, (list, tuple)) else ""))


def _collapse_flag(rank: float, dim: int, std_mean: float, rank_fraction: float, std_threshold: float) -> bool:
    low_std = bool(std_mean < std_threshold) if math.isfinite(std_mean) else False
    return bool(rank < rank_fraction * dim) or low_std


def _embedding_stats(z: torch.Tensor) -> dict[str, float]:
    """Per-dimension std over samples (unbiased; NaN with fewer than 2 samples)."""
    if z.shape[0] < 2:
        return {"embedding_std_mean": float("nan"), "embedding_std_min": float("nan")}
    std = z.double().std(dim=0)
    return {"embedding_std_mean": float(std.mean()), "embedding_std_min": float(std.min())}


class JEPAEvaluator:
    """Evaluates a trained JEPA: prediction loss, representation quality and downstream probes.

    Build it from a model (``JEPAEvaluator(model)``) or from a trainer checkpoint alone
    (``JEPAEvaluator.from_checkpoint(path)``).

    Args:
        model: a JEPA-like module with ``forward_features`` and ``embed`` (:class:`~jepa.models.JEPA`,
            :class:`~jepa.models.JEPAAction`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ... or a :class:`torch.device`.
        loss_fn: the prediction loss reported as ``loss`` (default: :func:`~jepa.trainer.losses.default_loss`
            of the model: :class:`~jepa.trainer.losses.IJEPALoss` for an :class:`~jepa.models.IJEPA`,
            else :class:`~jepa.trainer.losses.JEPALoss`).
        collapse_rank_fraction: embeddings count as ``collapsed`` when their effective rank is
            below this fraction of the embedding dimension (of the number of samples, when fewer) ...
        collapse_std_threshold: ... or when their mean per-dimension std is below this value.
        mixed_precision: None, ``"bf16"`` or ``"fp16"``: run the forward passes of :meth:`evaluate`
            under autocast with that dtype (as a trainer with that setting validates).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "auto",
        loss_fn: Any = None,
        *,
        collapse_rank_fraction: float = 0.1,
        collapse_std_threshold: float = 1e-3,
        mixed_precision: str | None = None,
    ) -> None:
        owner = "JEPAEvaluator"
        check_type("model", model, nn.Module, owner=owner, what="an nn.Module")
        check_number("collapse_rank_fraction", collapse_rank_fraction, low=0.0, high=1.0, owner=owner)
        check_number("collapse_std_threshold", collapse_std_threshold, low=0.0, owner=owner)
        check_choice("mixed_precision", mixed_precision, (None, "bf16", "fp16"), owner=owner)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.loss_fn = loss_fn if loss_fn is not None else default_loss(model)
        self.collapse_rank_fraction = float(collapse_rank_fraction)
        self.collapse_std_threshold = float(collapse_std_threshold)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto", **kwargs: Any) -> "JEPAEvaluator":
        """Rebuild the model from a trainer checkpoint (class, config and weights) and wrap it;
        ``kwargs`` go to the constructor."""
        state = jio.load(path, map_location="cpu")
        return cls(model_from_checkpoint_state(state, source=str(path)), device=device, **kwargs)

    # ------------------------------------------------------------------ helpers
    def _eval_mode(self) -> Any:
        return evaluating(self.model)

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _input_dtype(self) -> torch.dtype | None:
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return None

    def _embed(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            try:
                x = torch.as_tensor(np.asarray(x))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"encode: inputs must be tensors or arrays, got {type(x).__name__}") from exc
        dtype = self._input_dtype()
        if x.is_floating_point() and dtype is not None:
            x = x.to(self.device, dtype=dtype)
        else:
            x = x.to(self.device)
        z = self.model.embed(x)
        if z.dim() > 2:
            z = z.reshape(z.shape[0], -1)
        elif z.dim() == 1:
            z = z.unsqueeze(1)
        return z.detach().float().cpu()

    def _rep_metrics(self, z: torch.Tensor) -> dict[str, Any]:
        stats = _embedding_stats(z)
        rank = effective_rank(z)
        dim = int(z.shape[1])
        return {
            **stats,
            "effective_rank": rank,
            "embedding_dim": dim,
            # a rank is at most the number of samples: fewer samples than dims bound it, not the width
            "collapsed": _collapse_flag(rank, min(dim, int(z.shape[0])), stats["embedding_std_mean"], self.collapse_rank_fraction,
                                        self.collapse_std_threshold),
        }

    # ------------------------------------------------------------------ public API
    def evaluate(self, loader: Iterable) -> dict[str, Any]:
        """Prediction and representation metrics over every batch of ``loader``.

        Returns ``loss`` (the mean over batches of the loss function, computed exactly as the
        trainer's training and validation steps do: :mod:`jepa.trainer.objective`), ``mse`` and
        ``cosine_similarity`` between the prediction and the layer-normed target (means over
        batches; for models whose outputs have a ``prediction`` and a ``target`` of one shape), and,
        from the context embeddings pooled over tokens (one row per sample, all batches; the
        encoder's embedding of the first batch item when the model returns no ``context``):
        ``embedding_std_mean``/``embedding_std_min`` (per-dimension std over samples),
        ``effective_rank`` (RankMe), ``embedding_dim`` and ``collapsed`` (see the constructor).
        """
        loss_sum, mse_sum, cos_sum, n, pairs = 0.0, 0.0, 0.0, 0, 0
        embeddings = []
        with self._eval_mode():
            for batch in loader:
                batch = move_to_device(batch, self.device)
                with self._autocast():
                    out = model_outputs(self.model, batch)
                    loss_sum += float(loss_terms(self.loss_fn, out)["loss"])
                n += 1
                pred, target = out.get("prediction"), out.get("target")
                if isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor) and pred.shape == target.shape:
                    pred, target = pred.float(), target.float()
                    tnorm = F.layer_norm(target, target.shape[-1:])
                    mse_sum += float(F.mse_loss(pred, tnorm))
                    cos_sum += float(F.cosine_similarity(pred, tnorm, dim=-1).mean())
                    pairs += 1
                context = out.get("context")
                if isinstance(out.get("pooled"), torch.Tensor):  # pooled over the valid tokens only (IJEPA)
                    embeddings.append(out["pooled"].detach().float().cpu())
                elif isinstance(context, torch.Tensor):
                    z = context.mean(dim=1) if context.dim() == 3 else context
                    embeddings.append(z.reshape(z.shape[0], -1).detach().float().cpu())
                else:
                    embeddings.append(self._embed(first_input(batch)))
        if n == 0:
            raise ValueError("JEPAEvaluator.evaluate: the loader yielded no batches")
        metrics: dict[str, Any] = {"loss": loss_sum / n}
        if pairs == n:  # every batch had a prediction and a target of one shape
            metrics.update(mse=mse_sum / n, cosine_similarity=cos_sum / n)
        metrics.update(self._rep_metrics(torch.cat(embeddings)))
        return metrics

    def encode(self, data: Any, batch_size: int = 256) -> torch.Tensor:
        """Context-encoder embeddings, one row per sample (``model.embed``: tokens averaged, or
        flattened with ``pool="flatten"``): an ``(N, D)`` CPU tensor.

        ``data`` is a tensor/array of samples (``(N, T, D)`` tokens or whatever the encoder
        takes), a :class:`~torch.utils.data.Dataset` (items are tensors, or tuples/dicts whose
        first item / ``state_t`` / ``x`` is the input), a DataLoader, or any iterable of batches
        (same rules per batch). Runs without gradients in eval mode, ``batch_size`` samples at a
        time for tensors and datasets; the model's train/eval mode is restored afterwards.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"encode: batch_size must be a positive int, got {batch_size!r}")
        if isinstance(data, np.ndarray):
            data = torch.as_tensor(data)
        if isinstance(data, torch.Tensor):
            if data.dim() == 0 or len(data) == 0:
                raise ValueError(f"encode: data must hold at least one sample, got shape {tuple(data.shape)}")
            chunks: Iterable = (data[i : i + batch_size] for i in range(0, len(data), batch_size))
        elif isinstance(data, Dataset):
            chunks = (first_input(b) for b in DataLoader(data, batch_size=batch_size, shuffle=False))
        elif isinstance(data, DataLoader) or (hasattr(data, "__iter__") and not isinstance(data, (str, bytes, Mapping))):
            chunks = (first_input(b) for b in data)
        else:
            raise TypeError(
                f"encode: data must be a tensor/array, a Dataset, a DataLoader or an iterable of batches, got {type(data).__name__}"
            )
        with self._eval_mode():
            outs = [self._embed(c) for c in chunks]
        if not outs:
            raise ValueError("encode: data yielded no samples")
        return torch.cat(outs)

    def _image_folder(self, path: str | os.PathLike, split: str, name: str) -> ImageFolderDataset:
        """The ``split`` of the image folder ``path`` at the model's image size (evaluation transform)."""
        image_size = getattr(getattr(self.model, "encoder", None), "image_size", None)
        if image_size is None:
            raise TypeError(f"{name}: a folder of images needs an image model (a ViT encoder); this one is a {type(self.model).__name__}")
        return ImageFolderDataset(path, image_size, split=split)

    def _features(self, data: Any, name: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Encoded features and targets of downstream ``data`` (``(X, y)``, Dataset, DataLoader or image folder)."""
        if isinstance(data, (str, os.PathLike)):
            data = self._image_folder(data, "train" if name == "train_data" else "val", name)
        if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, Dataset):
            x, y = data
            if isinstance(x, (torch.Tensor, np.ndarray)):
                y = _to_numpy(y)
                if len(y) != len(x):
                    raise ValueError(f"{name}: X and y must have the same length, got {len(x)} and {len(y)}")
                return self.encode(x, batch_size).numpy(), y
        if isinstance(data, Dataset):
            batches: Iterable = DataLoader(data, batch_size=batch_size, shuffle=False)
        elif isinstance(data, DataLoader):
            batches = data
        else:
            raise TypeError(f"{name}: expected an (X, y) tuple of tensors/arrays, a Dataset or a DataLoader yielding (x, y), got {type(data).__name__}")
        zs, ys = [], []
        with self._eval_mode():
            for batch in batches:
                x, y = _pair(batch, name)
                zs.append(self._embed(x))
                y = _to_numpy(y)
                y = y.reshape(1) if y.ndim == 0 else y
                if len(y) != len(zs[-1]):
                    raise ValueError(f"{name}: a batch has {len(zs[-1])} inputs but {len(y)} targets")
                ys.append(y)
        if not zs:
            raise ValueError(f"{name}: no samples")
        return torch.cat(zs).numpy(), np.concatenate(ys)

    def evaluate_downstream(
        self,
        task: str = "classification",
        train_data: Any = None,
        test_data: Any = None,
        method: str = "both",
        labels_per_class: int | None = None,
        k: int = 20,
        seed: int = 0,
        batch_size: int = 256,
    ) -> dict[str, dict[str, float]]:
        """Frozen-feature downstream evaluation of the encoder.

        ``train_data``/``test_data``: an ``(X, y)`` tuple of tensors/arrays, a Dataset yielding
        ``(x, y)`` (e.g. a :class:`~jepa.data.ImageFolderDataset`), a DataLoader yielding ``(x, y)``
        batches, or the path of a folder of labelled images (read at the model's image size with
        the evaluation transform: its train split for ``train_data``, its val split for
        ``test_data``, i.e. ``val/`` or the seeded 80/20 split); ``X`` goes through :meth:`encode`.

        ``task="classification"``: ``linear`` = logistic regression on standardized features,
        ``knn`` = k-nearest-neighbours with cosine distance (``k`` capped at the training-set
        size); each reports ``accuracy`` and ``macro_f1``. ``labels_per_class`` keeps that many
        random training samples per class (``seed``).
        ``task="regression"``: ``linear`` = ridge regression on standardized features, ``knn`` =
        cosine k-NN regressor; each reports ``r2`` and ``mse``.

        ``method``: ``"linear"``, ``"knn"`` or ``"both"``. Returns ``{"linear": {...}, "knn": {...}}``
        with only the requested methods.
        """
        if task not in _TASKS:
            raise ValueError(f"evaluate_downstream: task must be one of {_TASKS}, got {task!r}")
        if method not in _METHODS:
            raise ValueError(f"evaluate_downstream: method must be one of {_METHODS}, got {method!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"evaluate_downstream: k must be a positive int, got {k!r}")
        if labels_per_class is not None:
            if task == "regression":
                raise ValueError(f"evaluate_downstream: labels_per_class applies to task='classification' only, got labels_per_class={labels_per_class!r} with task='regression'")
            if isinstance(labels_per_class, bool) or not isinstance(labels_per_class, int) or labels_per_class < 1:
                raise ValueError(f"evaluate_downstream: labels_per_class must be a positive int or None, got {labels_per_class!r}")
        if train_data is None or test_data is None:
            raise ValueError("evaluate_downstream: train_data and test_data are required")
        methods = ("linear", "knn") if method == "both" else (method,)
        ztr, ytr = self._features(train_data, "train_data", batch_size)
        zte, yte = self._features(test_data, "test_data", batch_size)
        if ztr.shape[1] != zte.shape[1]:
            raise ValueError(f"evaluate_downstream: train and test embeddings differ in size ({ztr.shape[1]} vs {zte.shape[1]})")
        from sklearn.linear_model import LogisticRegression, Ridge  # noqa: PLC0415
        from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score  # noqa: PLC0415
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor  # noqa: PLC0415
        from sklearn.pipeline import make_pipeline  # noqa: PLC0415
        from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

        results: dict[str, dict[str, float]] = {}
        if task == "classification":
            if ytr.ndim != 1 or yte.ndim != 1:
                raise ValueError(f"evaluate_downstream: classification labels must be 1-D, got shapes {ytr.shape} (train) and {yte.shape} (test)")
            idx = sample_per_class(ytr, labels_per_class, seed)
            ztr, ytr = ztr[idx], ytr[idx]
            if len(np.unique(ytr)) < 2:
                raise ValueError(f"evaluate_downstream: train_data needs at least 2 classes, got {np.unique(ytr).tolist()}")
            for m in methods:
                if m == "linear":
                    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
                else:
                    clf = KNeighborsClassifier(n_neighbors=min(k, len(ztr)), metric="cosine")
                pred = clf.fit(ztr, ytr).predict(zte)
                results[m] = {"accuracy": float(accuracy_score(yte, pred)), "macro_f1": float(f1_score(yte, pred, average="macro"))}
        else:
            ytr, yte = ytr.astype(np.float64), yte.astype(np.float64)
            for m in methods:
                if m == "linear":
                    reg = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
                else:
                    reg = KNeighborsRegressor(n_neighbors=min(k, len(ztr)), metric="cosine")
                pred = reg.fit(ztr, ytr).predict(zte)
                results[m] = {"r2": float(r2_score(yte, pred)), "mse": float(mean_squared_error(yte, pred))}
        return results

    def representation_analysis(self, loader: Any, max_pairs_samples: int = 1024, n_components: int = 10, seed: int = 0) -> dict[str, Any]:
        """Representation-quality report of the pooled context embeddings of ``loader`` (anything
        :meth:`encode` takes; for pair loaders the ``state_t`` item).

        Returns ``effective_rank``, ``embedding_dim``, ``embedding_std_mean``/``embedding_std_min``,
        ``mean_cosine_similarity`` (mean over distinct pairs of up to ``max_pairs_samples``
        samples, a seeded random subset when there are more), ``explained_variance_ratio`` (list,
        top ``n_components`` PCA components) and ``collapsed``.
        """
        z = self.encode(loader)
        report = self._rep_metrics(z)
        zd = z.double()
        if len(zd) > max_pairs_samples:
            g = torch.Generator().manual_seed(seed)
            zd_sub = zd[torch.randperm(len(zd), generator=g)[:max_pairs_samples]]
        else:
            zd_sub = zd
        m = len(zd_sub)
        if m >= 2:
            u = torch.nn.functional.normalize(zd_sub, dim=1)
            sim = u @ u.T
            report["mean_cosine_similarity"] = float((sim.sum() - sim.diagonal().sum()) / (m * (m - 1)))
        else:
            report["mean_cosine_similarity"] = float("nan")
        s = torch.linalg.svdvals(zd - zd.mean(dim=0, keepdim=True))
        var = s**2
        total = var.sum()
        ratios = (var / total) if total > 0 else torch.zeros_like(var)
        report["explained_variance_ratio"] = [float(r) for r in ratios[:n_components]]
        return report

    def plot_embeddings(self, data: Any, labels: Any = None, path: str | os.PathLike = "embeddings.png", *, encoded: bool = False, title: str | None = None) -> Path:
        """2-D PCA scatter of the embeddings of ``data`` coloured by ``labels``, saved as PNG.

        ``data`` is anything :meth:`encode` takes (or, with ``encoded=True``, an ``(N, D)``
        embedding tensor used as is). ``labels``: ``N`` values (or None). Returns the path.
        Needs matplotlib (a dependency of jepa-torch); renders with the Agg backend, without
        touching pyplot's global state.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
            from matplotlib.figure import Figure  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError("plot_embeddings needs matplotlib (a dependency of jepa-torch): pip install matplotlib") from exc
        if encoded:
            z = torch.as_tensor(_to_numpy(data)).double()
            if z.dim() != 2:
                raise ValueError(f"plot_embeddings: with encoded=True, data must be an (N, D) matrix, got shape {tuple(z.shape)}")
        else:
            z = self.encode(data).double()
        n = len(z)
        if labels is not None:
            labels = _to_numpy(labels).reshape(-1)
            if len(labels) != n:
                raise ValueError(f"plot_embeddings: labels must have one value per sample ({n}), got {len(labels)}")
        zc = z - z.mean(dim=0, keepdim=True)
        if n >= 2 and z.shape[1] >= 1:
            _, s, vh = torch.linalg.svd(zc, full_matrices=False)
            comps = vh[:2]
            xy = zc @ comps.T
            var = s**2
            ratio = (var / var.sum()).tolist() if float(var.sum()) > 0 else [0.0] * len(var)
        else:
            xy, ratio = zc[:, :2], [0.0, 0.0]
        if xy.shape[1] < 2:
            xy = torch.cat([xy, torch.zeros(n, 2 - xy.shape[1], dtype=xy.dtype)], dim=1)
            ratio = list(ratio) + [0.0] * 2
        xy = xy.numpy()
        fig = Figure(figsize=(6, 5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        if labels is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=8)
        else:
            classes = np.unique(labels)
            if len(classes) <= 20:
                for c in classes:
                    sel = labels == c
                    ax.scatter(xy[sel, 0], xy[sel, 1], s=8, label=str(c))
                ax.legend(loc="best", fontsize="small", markerscale=2)
            else:
                sc = ax.scatter(xy[:, 0], xy[:, 1], s=8, c=labels.astype(float) if np.issubdtype(labels.dtype, np.number) else np.searchsorted(classes, labels), cmap="viridis")
                fig.colorbar(sc, ax=ax)
        ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% var)")
        ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% var)")
        ax.set_title(title or "embeddings (PCA)")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png", dpi=100)
        return out


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
        device = next(model.parameters()).device
        with evaluating(model):
            ztr, zte = model.embed(train_tokens.to(device)).cpu(), model.embed(test_tokens.to(device)).cpu()
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
