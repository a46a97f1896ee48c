"""JEPAEvaluator: representation metrics, encode, downstream probes, analysis and plots."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from jepa.models import JEPA, Encoder
from jepa.trainer.eval import JEPAEvaluator, effective_rank, sample_per_class

D = 8


class LinearEncoder(nn.Module):
    """x @ W.T, W = identity by default (so embeddings == inputs for 2-D inputs)."""

    def __init__(self, dim=D, weight=None):
        super().__init__()
        self.lin = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(dim) if weight is None else weight)

    def forward(self, x):
        return self.lin(x)


class ConstantEncoder(nn.Module):
    """Ignores its input: zeros + a learned bias (a fully collapsed encoder)."""

    def __init__(self, dim=D):
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(-1.0, 1.0, dim))

    def forward(self, x):
        return torch.zeros(*x.shape[:-1], self.bias.numel()) + self.bias


def _evaluator(encoder, **kw):
    return JEPAEvaluator(JEPA(encoder=encoder, predictor=nn.Identity()), device="cpu", **kw)


def _pairs(n=40, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, t, D, generator=g)
    return DataLoader(TensorDataset(x, x + 0.1 * torch.randn(n, t, D, generator=g)), batch_size=16)


def _blobs(n_per=30, sep=6.0, seed=0, noise=1.0):
    g = torch.Generator().manual_seed(seed)
    x = noise * torch.randn(2 * n_per, D, generator=g)
    y = torch.arange(2).repeat_interleave(n_per)
    x[:, 0] += torch.where(y == 1, sep / 2, -sep / 2)
    return x, y


# ------------------------------------------------------------------ effective rank / collapse
@pytest.mark.parametrize("k", [1, 3, 5])
def test_effective_rank_of_k_equal_singular_values_is_k(k):
    q, _ = torch.linalg.qr(torch.randn(20, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64))
    m = 3.0 * q @ torch.linalg.qr(torch.randn(6, k, dtype=torch.float64))[0].T  # (20, 6), k singular values of 3
    assert effective_rank(m) == pytest.approx(k, rel=1e-6)


def test_effective_rank_of_rank_one_matrix_is_one():
    m = torch.outer(torch.arange(1.0, 11.0), torch.tensor([1.0, -2.0, 0.5, 3.0]))
    assert effective_rank(m) == pytest.approx(1.0, rel=1e-6)


def test_evaluate_flags_constant_encoder_as_collapsed_but_not_random_one():
    loader = _pairs()
    const = _evaluator(ConstantEncoder()).evaluate(loader)
    rand = _evaluator(LinearEncoder(weight=torch.randn(D, D, generator=torch.Generator().manual_seed(1)))).evaluate(loader)
    assert const["collapsed"] is True and rand["collapsed"] is False
    assert const["embedding_std_mean"] == pytest.approx(0.0, abs=1e-7) and const["effective_rank"] == pytest.approx(1.0, rel=1e-4)
    assert rand["effective_rank"] > 0.5 * D and const["embedding_dim"] == rand["embedding_dim"] == D
    assert {"loss", "mse", "cosine_similarity"} <= set(const) and all(math.isfinite(rand[k]) for k in ("loss", "mse", "cosine_similarity"))
    # the thresholds are constructor arguments: no std threshold -> only the rank criterion
    assert _evaluator(ConstantEncoder(), collapse_std_threshold=0.0).evaluate(loader)["collapsed"] is False  # rank 1 >= 0.1 * 8
    assert _evaluator(ConstantEncoder(), collapse_std_threshold=0.0, collapse_rank_fraction=0.5).evaluate(loader)["collapsed"] is True


def test_bad_collapse_thresholds_are_refused():
    with pytest.raises(ValueError, match="collapse_rank_fraction"):
        _evaluator(ConstantEncoder(), collapse_rank_fraction=1.5)
    with pytest.raises(ValueError, match="collapse_std_threshold"):
        _evaluator(ConstantEncoder(), collapse_std_threshold=-1)


def test_embedding_std_matches_torch_std_of_encoded_state_t():
    torch.manual_seed(0)
    ev = JEPAEvaluator(JEPA(encoder=Encoder(hidden_dim=D, num_layers=1, num_heads=2), predictor=nn.Identity()), device="cpu")
    loader = _pairs(n=37)
    metrics = ev.evaluate(loader)
    state_t = loader.dataset.tensors[0]
    z = ev.encode(state_t)
    with torch.no_grad():
        by_hand = ev.model.encoder(state_t).mean(dim=1)
    assert torch.allclose(z, by_hand, atol=1e-5)
    std = torch.std(z, dim=0)
    assert metrics["embedding_std_mean"] == pytest.approx(float(std.mean()), rel=1e-4)
    assert metrics["embedding_std_min"] == pytest.approx(float(std.min()), rel=1e-4)
    assert metrics["effective_rank"] == pytest.approx(effective_rank(z), rel=1e-4)


# ------------------------------------------------------------------ encode
class _TupleDataset(Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i


def test_encode_accepts_tensor_dataset_and_loader_and_restores_mode():
    x = torch.randn(11, 3, D, generator=torch.Generator().manual_seed(2))
    ev = _evaluator(LinearEncoder(weight=torch.randn(D, D, generator=torch.Generator().manual_seed(3))))
    ev.model.train()
    ref = ev.encode(x, batch_size=4)
    assert ev.model.training is True
    assert ref.shape == (11, D) and ref.device.type == "cpu" and not ref.requires_grad
    assert torch.allclose(ref, ev.model.encoder(x).mean(dim=1).detach(), atol=1e-6)
    assert torch.allclose(ev.encode(x.numpy()), ref, atol=1e-6)
    assert torch.allclose(ev.encode(_TupleDataset(x), batch_size=3), ref, atol=1e-6)
    assert torch.allclose(ev.encode(TensorDataset(x)), ref, atol=1e-6)
    assert torch.allclose(ev.encode(DataLoader(TensorDataset(x, x), batch_size=5)), ref, atol=1e-6)
    assert torch.allclose(ev.encode(DataLoader(_TupleDataset(x), batch_size=5)), ref, atol=1e-6)


def test_encode_errors():
    ev = _evaluator(LinearEncoder())
    with pytest.raises(ValueError, match="batch_size"):
        ev.encode(torch.randn(2, D), batch_size=0)
    with pytest.raises(TypeError, match="encode"):
        ev.encode(3.0)
    with pytest.raises(ValueError, match="no samples"):
        ev.encode(DataLoader(TensorDataset(torch.randn(0, D)), batch_size=2))


# ------------------------------------------------------------------ downstream
def test_linear_and_knn_classify_separable_blobs_perfectly():
    ev = _evaluator(LinearEncoder())
    res = ev.evaluate_downstream(task="classification", train_data=_blobs(seed=0), test_data=_blobs(seed=1), method="both")
    assert set(res) == {"linear", "knn"}
    for m in ("linear", "knn"):
        assert res[m] == {"accuracy": 1.0, "macro_f1": 1.0}
    only = ev.evaluate_downstream(task="classification", train_data=_blobs(seed=0), test_data=_blobs(seed=1), method="knn", k=500)
    assert set(only) == {"knn"} and only["knn"]["accuracy"] == 0.5  # k capped at the 60 train samples: majority vote of a tie


def test_regression_on_linear_target():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(D, generator=g)
    xtr, xte = torch.randn(80, D, generator=g), torch.randn(40, D, generator=g)
    res = _evaluator(LinearEncoder()).evaluate_downstream(task="regression", train_data=(xtr, xtr @ w + 1.0), test_data=(xte, xte @ w + 1.0))
    assert set(res) == {"linear", "knn"} and set(res["linear"]) == {"r2", "mse"}
    assert res["linear"]["r2"] > 0.99 and res["linear"]["mse"] < 0.05
    assert math.isfinite(res["knn"]["r2"]) and res["knn"]["mse"] > res["linear"]["mse"]


def test_tuple_dataset_and_loader_inputs_give_the_same_numbers():
    ev = _evaluator(LinearEncoder(weight=torch.randn(D, D, generator=torch.Generator().manual_seed(5))))
    (xtr, ytr), (xte, yte) = _blobs(sep=1.5, seed=2), _blobs(sep=1.5, seed=3)  # overlapping: accuracy < 1
    forms = [
        ((xtr, ytr), (xte.numpy(), yte.numpy())),
        (TensorDataset(xtr, ytr), TensorDataset(xte, yte)),
        (DataLoader(TensorDataset(xtr, ytr), batch_size=7), DataLoader(TensorDataset(xte, yte), batch_size=9)),
    ]
    results = [ev.evaluate_downstream("classification", tr, te, method="both", k=5) for tr, te in forms]
    assert results[0]["linear"]["accuracy"] < 1.0
    for r in results[1:]:
        for m in ("linear", "knn"):
            assert r[m] == pytest.approx(results[0][m])


def test_labels_per_class_subsamples_the_training_set():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 5)
    idx = sample_per_class(labels, 4, seed=0)
    assert np.bincount(labels[idx]).tolist() == [4, 4, 4] and len(set(idx.tolist())) == 12
    ev = _evaluator(LinearEncoder())
    (xtr, ytr), test = _blobs(sep=2.0, seed=6), _blobs(sep=2.0, seed=7)
    sub = sample_per_class(ytr.numpy(), 3, seed=11)
    got = ev.evaluate_downstream("classification", (xtr, ytr), test, method="both", labels_per_class=3, k=5, seed=11)
    by_hand = ev.evaluate_downstream("classification", (xtr[sub], ytr[sub]), test, method="both", k=5)
    assert got == by_hand
    # 1 per class with k=20: k is capped at 2 -> still a valid result
    assert set(ev.evaluate_downstream("classification", (xtr, ytr), test, method="knn", labels_per_class=1)) == {"knn"}
    with pytest.raises(ValueError, match="fewer than labels_per_class=31"):
        ev.evaluate_downstream("classification", (xtr, ytr), test, labels_per_class=31)


def test_downstream_errors_name_the_argument():
    ev = _evaluator(LinearEncoder())
    data = _blobs()
    with pytest.raises(ValueError, match=r"task must be one of \('classification', 'regression'\), got 'segmentation'"):
        ev.evaluate_downstream("segmentation", data, data)
    with pytest.raises(ValueError, match=r"method must be one of \('linear', 'knn', 'both'\), got 'svm'"):
        ev.evaluate_downstream("classification", data, data, method="svm")
    with pytest.raises(ValueError, match="labels_per_class.*regression"):
        ev.evaluate_downstream("regression", data, data, labels_per_class=5)
    with pytest.raises(ValueError, match="k must be a positive int"):
        ev.evaluate_downstream("classification", data, data, k=0)
    with pytest.raises(TypeError, match="train_data"):
        ev.evaluate_downstream("classification", "data.csv", data)
    with pytest.raises(ValueError, match="same length"):
        ev.evaluate_downstream("classification", (data[0], data[1][:5]), data)


# ------------------------------------------------------------------ analysis and plots
def test_representation_analysis_of_points_on_a_line():
    t = torch.linspace(-3, 3, 50).unsqueeze(1)
    direction = torch.randn(1, D, generator=torch.Generator().manual_seed(8))
    x = t * direction + 5.0  # every point on one line
    rep = _evaluator(LinearEncoder()).representation_analysis(DataLoader(TensorDataset(x), batch_size=16))
    evr = rep["explained_variance_ratio"]
    assert len(evr) == D and evr[0] == pytest.approx(1.0, abs=1e-6) and sum(evr[1:]) < 1e-6
    std = torch.std(x, dim=0)
    assert rep["embedding_std_mean"] == pytest.approx(float(std.mean()), rel=1e-5)
    assert rep["embedding_std_min"] == pytest.approx(float(std.min()), rel=1e-5)
    assert {"effective_rank", "collapsed", "mean_cosine_similarity", "embedding_dim"} <= set(rep)


def test_representation_analysis_mean_pairwise_cosine():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ev = _evaluator(LinearEncoder(dim=2))
    rep = ev.representation_analysis(x)
    assert rep["mean_cosine_similarity"] == pytest.approx((0.0 + 2 * 2**-0.5) / 3, rel=1e-6)
    assert len(rep["explained_variance_ratio"]) == 2 and sum(rep["explained_variance_ratio"]) == pytest.approx(1.0)
    # 1200 samples -> a random subset of 1024: about 1/3 of the pairs are copies (cosine 1), the rest as above
    expected = 1 / 3 + 2 / 3 * (0.0 + 2 * 2**-0.5) / 3
    assert ev.representation_analysis(x.repeat(400, 1))["mean_cosine_similarity"] == pytest.approx(expected, abs=0.02)


def test_plot_embeddings_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = _blobs(n_per=10)
    ev = _evaluator(LinearEncoder())
    out = ev.plot_embeddings(DataLoader(TensorDataset(x, y), batch_size=8), y, tmp_path / "plots" / "emb.png")
    assert out == tmp_path / "plots" / "emb.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out2 = ev.plot_embeddings(x, y.tolist(), str(tmp_path / "emb2.png"))
    assert out2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="labels"):
        ev.plot_embeddings(x, y[:3], tmp_path / "bad.png")


def test_plot_embeddings_without_matplotlib_says_what_to_install(monkeypatch, tmp_path):
    import sys  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # as where it is not installed
    x, y = _blobs(n_per=4)
    with pytest.raises(ImportError, match=r"matplotlib \(a dependency of jepa-torch\): pip install matplotlib$"):
        _evaluator(LinearEncoder()).plot_embeddings(x, y, tmp_path / "emb.png", encoded=True)
