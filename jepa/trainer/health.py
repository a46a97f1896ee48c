"""Run-health measures on embeddings, in torch (cheap enough to run at every validation):

* :func:`ridge_probe_accuracy`: a linear classifier (least squares on one-hot labels, L2-regularised,
  standardized features, closed form) fit on one set of embeddings and scored on another;
* :func:`knn_accuracy`: cosine k-nearest-neighbour accuracy;
* :func:`lidar`: LiDAR (Thilak et al., 2023), the effective rank of the linear-discriminant matrix
  of several augmented views of the same samples;
* :func:`~jepa.trainer.eval.effective_rank` (RankMe) lives in :mod:`jepa.trainer.eval`.

A leaf of :mod:`jepa.trainer`: it imports nothing else from it.
"""

from __future__ import annotations

import math

import torch

__all__ = ["knn_accuracy", "lidar", "ridge_probe_accuracy"]


def _check_pair(name: str, z: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(z, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name}: embeddings and labels must be tensors, got {type(z).__name__} and {type(y).__name__}")
    if z.dim() != 2 or y.dim() != 1 or len(z) != len(y) or len(z) == 0:
        raise ValueError(f"{name}: expected (N, D) embeddings and (N,) labels with N >= 1, got {tuple(z.shape)} and {tuple(y.shape)}")


def ridge_probe_accuracy(
    train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor, test_y: torch.Tensor, ridge: float = 1e-2
) -> float:
    """Accuracy on ``(test_z, test_y)`` of a linear classifier fit on ``(train_z, train_y)``.

    Features are standardized with the training statistics; the weights minimise
    ``||[Z 1] W - Y||^2 + ridge * N * ||W||^2`` (``Y`` one-hot, the bias not penalised), solved in
    float64; the predicted class is the arg-max score. Labels are integers (any values).

    Standardized training features have zero mean, so the bias is the mean of ``Y`` and the weights
    solve the centred problem; with more features than samples (a flattened token grid) the dual form
    ``W = Z^T (Z Z^T + ridge N I)^-1 (Y - mean Y)`` is solved (an N x N Cholesky, not D x D): the same
    weights, at a fraction of the cost. Standardizing and the Gram product run in the features' float
    precision (at least float32), the Cholesky solve in float64.
    """
    _check_pair("ridge_probe_accuracy", train_z, train_y)
    _check_pair("ridge_probe_accuracy", test_z, test_y)
    if train_z.shape[1] != test_z.shape[1]:
        raise ValueError(f"ridge_probe_accuracy: train and test embeddings differ in width ({train_z.shape[1]} vs {test_z.shape[1]})")
    if not ridge > 0:
        raise ValueError(f"ridge_probe_accuracy: ridge must be > 0, got {ridge!r}")
    classes, y = torch.unique(train_y.cpu(), return_inverse=True)
    dtype = torch.promote_types(train_z.dtype, torch.float32) if train_z.is_floating_point() else torch.float32
    z = train_z.detach().cpu().to(dtype)
    mean, std = z.mean(0), z.std(0, unbiased=False).clamp_min(1e-8)
    x = (z - mean) / std
    target = torch.nn.functional.one_hot(y, len(classes)).double()
    bias = target.mean(0)
    centred = target - bias
    n, d = x.shape
    if d > n:  # dual: N x N
        gram = (x @ x.T).double()
        gram.diagonal().add_(ridge * n)
        alpha = torch.cholesky_solve(centred, torch.linalg.cholesky(gram))  # column-major out of LAPACK
        w = (alpha.T @ x.double()).T  # row-major operands: x.T @ alpha is ~25x slower on CPU
    else:  # primal: D x D
        gram = (x.T @ x).double()
        gram.diagonal().add_(ridge * n)
        w = torch.cholesky_solve(x.T.double() @ centred, torch.linalg.cholesky(gram))
    scores = ((test_z.detach().cpu().to(dtype) - mean) / std).double() @ w + bias
    pred = classes[scores.argmax(1)]
    return float((pred == test_y.cpu()).double().mean())


def knn_accuracy(train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor, test_y: torch.Tensor, k: int = 20) -> float:
    """Accuracy on ``(test_z, test_y)`` of a cosine k-nearest-neighbour vote over ``(train_z, train_y)``
    (``k`` capped at the training-set size; ties go to the smallest label, as scikit-learn's)."""
    _check_pair("knn_accuracy", train_z, train_y)
    _check_pair("knn_accuracy", test_z, test_y)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"knn_accuracy: k must be an int >= 1, got {k!r}")
    classes, y = torch.unique(train_y.cpu(), return_inverse=True)
    a = torch.nn.functional.normalize(train_z.detach().double().cpu(), dim=1)
    b = torch.nn.functional.normalize(test_z.detach().double().cpu(), dim=1)
    nearest = (b @ a.T).topk(min(k, len(a)), dim=1).indices
    votes = torch.zeros(len(b), len(classes), dtype=torch.long).scatter_add_(1, y[nearest], torch.ones_like(nearest))
    pred = classes[votes.argmax(1)]  # argmax returns the first maximum: the smallest label among ties
    return float((pred == test_y.cpu()).double().mean())


def lidar(views: torch.Tensor, delta: float = 1e-4, eps: float = 1e-8) -> float:
    """LiDAR of ``views``: ``(n, q, D)`` embeddings of ``q`` augmented views of each of ``n`` samples.

    Each sample is a class: with class means ``m_i``, their mean ``m``, the between-class covariance
    ``S_b = mean_i (m_i - m)(m_i - m)^T`` and the within-class covariance
    ``S_w = mean_{i,j} (z_ij - m_i)(z_ij - m_i)^T + delta * I``, LiDAR is the effective rank
    (``exp`` of the entropy of the normalized eigenvalues, ``+ eps``) of ``S_w^{-1/2} S_b S_w^{-1/2}``:
    how many directions separate samples more than their own augmentations move them (high: rich,
    invariant features; near 1: collapse). Needs ``n >= 2`` and ``q >= 2``. Computed in float64.
    """
    if not isinstance(views, torch.Tensor) or views.dim() != 3 or views.shape[0] < 2 or views.shape[1] < 2:
        shape = tuple(views.shape) if isinstance(views, torch.Tensor) else type(views).__name__
        raise ValueError(f"lidar: views must be an (n, q, D) tensor with n >= 2 samples and q >= 2 views each, got {shape}")
    z = views.detach().double().cpu()
    n, q, d = z.shape
    means = z.mean(dim=1)
    centred = means - means.mean(dim=0)
    s_b = centred.T @ centred / n
    within = (z - means[:, None]).reshape(n * q, d)
    s_w = within.T @ within / (n * q) + delta * torch.eye(d, dtype=z.dtype)
    evals, evecs = torch.linalg.eigh(s_w)
    inv_sqrt = evecs @ torch.diag(evals.clamp_min(1e-30).rsqrt()) @ evecs.T
    lam = torch.linalg.eigvalsh(inv_sqrt @ s_b @ inv_sqrt).clamp_min(0.0)
    total = float(lam.sum())
    if not math.isfinite(total) or total <= 0:
        return 0.0
    p = lam / total + eps
    return float(torch.exp(-(p * p.log()).sum()))
