"""Run-health measures (jepa.trainer.health) against independent computations: scikit-learn for the
probes, a numpy/scipy float64 re-statement of LiDAR, and hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from jepa.trainer.health import knn_accuracy, lidar, ridge_probe_accuracy


def _blobs(n_per_class=30, classes=4, dim=6, spread=1.0, seed=0):
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 3  # the same classes in every draw
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    z = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return z, y


def _numpy_ridge_scores(ztr, ytr, zte, ridge):
    """Primal ridge on ``[standardized Z, 1]`` with the bias unpenalised: the independent oracle."""
    x = ztr.double().numpy()
    mean, std = x.mean(0), x.std(0)
    a = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    classes = np.unique(ytr.numpy())
    onehot = (ytr.numpy()[:, None] == classes[None]).astype(np.float64)
    penalty = np.eye(a.shape[1]) * ridge * len(x)
    penalty[-1, -1] = 0
    w = np.linalg.solve(a.T @ a + penalty, a.T @ onehot)
    at = np.hstack([(zte.double().numpy() - mean) / std, np.ones((len(zte), 1))])
    return classes, at @ w


@pytest.mark.parametrize("dim", [8, 203])  # 203 > 120 training samples: the dual (N x N) solve
def test_ridge_probe_matches_a_numpy_least_squares_classifier(dim):
    ztr, ytr = _blobs(seed=1, spread=2.5 * (dim / 6) ** 0.5, dim=dim)
    zte, yte = _blobs(seed=2, spread=2.5 * (dim / 6) ** 0.5, dim=dim)
    assert (len(ztr) < dim) == (dim == 203)
    ytr, yte = ytr * 3 + 7, yte * 3 + 7  # labels need not be 0..C-1
    ridge = 0.05
    classes, scores = _numpy_ridge_scores(ztr, ytr, zte, ridge)
    expected = float((classes[scores.argmax(1)] == yte.numpy()).mean())
    got = ridge_probe_accuracy(ztr, ytr, zte, yte, ridge=ridge)
    assert got == pytest.approx(expected, abs=1e-12) and 0.4 < got < 1.0  # overlapping blobs: not trivial


def test_ridge_probe_separates_separable_classes_and_is_at_chance_on_noise():
    ztr, ytr = _blobs(spread=0.1)
    zte, yte = _blobs(seed=3, spread=0.1)
    assert ridge_probe_accuracy(ztr, ytr, zte, yte) == 1.0
    g = torch.Generator().manual_seed(5)
    noise_tr, noise_te = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    y_tr, y_te = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (400,), generator=g)
    assert abs(ridge_probe_accuracy(noise_tr, y_tr, noise_te, y_te) - 0.25) < 0.1


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_matches_scikit_learn_cosine_neighbours(k):
    from sklearn.neighbors import KNeighborsClassifier

    ztr, ytr = _blobs(seed=4, spread=3.0)
    zte, yte = _blobs(seed=5, spread=3.0)
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(ztr.numpy().astype(np.float64), ytr.numpy())
    expected = float((clf.predict(zte.numpy().astype(np.float64)) == yte.numpy()).mean())
    assert knn_accuracy(ztr, ytr, zte, yte, k=k) == pytest.approx(expected)


def test_knn_caps_k_and_breaks_ties_towards_the_smallest_label():
    ztr = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ytr = torch.tensor([5, 2])
    # one test point equally voted for both labels (k capped at 2): the smaller label wins
    assert knn_accuracy(ztr, ytr, torch.tensor([[1.0, 1.0]]), torch.tensor([2]), k=50) == 1.0


def _lidar_reference(views: np.ndarray, delta: float = 1e-4, eps: float = 1e-8) -> float:
    """LiDAR re-stated with numpy/scipy in float64 (scipy's matrix square root)."""
    from scipy.linalg import sqrtm

    n, q, d = views.shape
    m = views.mean(1)
    sb = np.cov((m - m.mean(0)).T, bias=True)
    within = (views - m[:, None]).reshape(-1, d)
    sw = within.T @ within / (n * q) + delta * np.eye(d)
    inv = np.linalg.inv(np.real(sqrtm(sw)))
    lam = np.clip(np.linalg.eigvalsh(inv @ sb @ inv), 0, None)
    p = lam / lam.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def test_lidar_matches_a_numpy_reference_on_odd_sizes():
    g = torch.Generator().manual_seed(7)
    centres = torch.randn(13, 1, 5, generator=g) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1])
    views = centres + 0.3 * torch.randn(13, 7, 5, generator=g)
    assert lidar(views) == pytest.approx(_lidar_reference(views.double().numpy()), rel=1e-8)


def test_lidar_on_a_hand_computed_case():
    """4 samples x 2 views in 2-D, worked out by hand: the sample means (+-1, 0), (0, +-2) give
    S_b = diag(0.5, 2); views at mean +- (1, 0) for the first two samples and mean +- (0, t) for the
    others give S_w = diag(0.5, t^2 / 2) (+ delta). The eigenvalues of S_w^-1/2 S_b S_w^-1/2 are
    0.5 / (0.5 + delta) and 2 / (t^2 / 2 + delta): t = 1 -> proportions (0.2, 0.8), LiDAR =
    exp(H(0.2, 0.8)) = 1.6494; t = 2 -> (0.5, 0.5), LiDAR = 2 (the within-sample spread whitens the
    between-sample one)."""
    means = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]], dtype=torch.float64)

    def views(t):
        w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, t], [0.0, t]], dtype=torch.float64)
        return torch.stack([means + w, means - w], dim=1)

    assert lidar(views(1.0)) == pytest.approx(math.exp(-(0.2 * math.log(0.2) + 0.8 * math.log(0.8))), rel=1e-7)
    assert lidar(views(2.0)) == pytest.approx(2.0, rel=1e-7)
    assert lidar(views(1.0).float()) == pytest.approx(1.6493849, rel=1e-6)  # float32 input: computed in float64


def test_lidar_is_high_for_isotropic_spread_and_near_one_for_collapse():
    g = torch.Generator().manual_seed(8)
    d = 8
    rich = torch.randn(200, 1, d, generator=g) * 3 + 0.1 * torch.randn(200, 4, d, generator=g)
    assert lidar(rich) > 0.8 * d  # every direction separates samples far more than views move them
    line = torch.randn(200, 1, 1, generator=g) * torch.ones(1, 1, d)  # samples differ along one direction only
    collapsed = line + 0.1 * torch.randn(200, 4, d, generator=g)
    assert lidar(collapsed) < 1.5


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ridge_probe_accuracy(torch.randn(4, 3), torch.zeros(5, dtype=torch.long), torch.randn(2, 3), torch.zeros(2, dtype=torch.long)), r"\(4, 3\) and \(5,\)"),
        (lambda: ridge_probe_accuracy(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.randn(2, 2), torch.zeros(2, dtype=torch.long)), "differ in width"),
        (lambda: ridge_probe_accuracy(torch.randn(4, 3), torch.arange(4), torch.randn(2, 3), torch.arange(2), ridge=0), "ridge must be > 0"),
        (lambda: knn_accuracy(torch.randn(4, 3), torch.arange(4), torch.randn(2, 3), torch.arange(2), k=0), "k must be an int >= 1, got 0"),
        (lambda: lidar(torch.randn(5, 1, 3)), r"q >= 2 views each, got \(5, 1, 3\)"),
        (lambda: lidar(torch.randn(5, 3)), r"got \(5, 3\)"),
    ],
)
def test_bad_inputs_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()
