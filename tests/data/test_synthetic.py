import numpy as np
import pytest
import torch

from jepa.data import SHAPE_CLASSES, ImageFolderDataset, make_shapes, write_shapes_folder
from jepa.data.synthetic import _shape_mask


def test_make_shapes_is_seeded_balanced_and_split_specific():
    x, y = make_shapes(40, 16, seed=3)
    assert x.shape == (40, 3, 16, 16) and x.dtype == torch.uint8 and y.dtype == torch.long
    assert torch.bincount(y, minlength=10).tolist() == [4] * 10
    x2, y2 = make_shapes(40, 16, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xv, _ = make_shapes(40, 16, seed=3, split="val")
    xs, _ = make_shapes(40, 16, seed=4)
    assert not torch.equal(x, xv) and not torch.equal(x, xs)
    _, y4 = make_shapes(12, 16, num_classes=4)
    assert set(y4.tolist()) == {0, 1, 2, 3}


def test_every_class_is_a_different_silhouette():
    c = np.linspace(-1.2, 1.2, 97)
    u, v = np.meshgrid(c, c)
    masks = [_shape_mask(k, u, v) for k in range(len(SHAPE_CLASSES))]
    for i in range(len(masks)):
        assert 0.05 < masks[i].mean() < 0.8  # a visible shape, not empty nor everything
        for j in range(i):
            assert (masks[i] != masks[j]).mean() > 0.05, (SHAPE_CLASSES[i], SHAPE_CLASSES[j])


def _ridge_probe_accuracy(xtr, ytr, xva, yva, lam=10.0):
    """Linear least-squares classifier on standardized features (closed form)."""
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    a = torch.cat([(xtr - mean) / std, torch.ones(len(xtr), 1)], 1).double()
    b = torch.cat([(xva - mean) / std, torch.ones(len(xva), 1)], 1).double()
    onehot = torch.nn.functional.one_hot(ytr, 10).double()
    w = torch.linalg.solve(a.T @ a + lam * torch.eye(a.shape[1], dtype=torch.float64), a.T @ onehot)
    return float(((b @ w).argmax(1) == yva).double().mean())


def test_raw_pixels_probe_near_chance():
    # colour, position and size are random: a linear probe on pixels barely beats 10 classes' chance
    xtr, ytr = make_shapes(600, 12, seed=0)
    xva, yva = make_shapes(300, 12, seed=0, split="val")
    acc = _ridge_probe_accuracy(xtr.float().flatten(1) / 255, ytr, xva.float().flatten(1) / 255, yva)
    assert acc < 0.25
    # the same probe does separate the classes once colour is out of the way (the silhouettes
    # alone, centred): the task is about shape, not about a broken probe
    c = np.linspace(-1.3, 1.3, 12)
    u, v = np.meshgrid(c, c)
    rng = np.random.default_rng(0)
    sil = torch.tensor(np.stack([_shape_mask(int(k), u * s, v * s) for k, s in zip(ytr % 10, rng.uniform(0.9, 1.1, 600))]), dtype=torch.float32)
    sil_va = torch.tensor(np.stack([_shape_mask(int(k), u * s, v * s) for k, s in zip(yva % 10, rng.uniform(0.9, 1.1, 300))]), dtype=torch.float32)
    assert _ridge_probe_accuracy(sil.flatten(1), ytr, sil_va.flatten(1), yva) > 0.9


def test_folder_round_trip_through_image_folder_dataset(tmp_path):
    root = write_shapes_folder(tmp_path / "shapes", num_train=20, num_val=10, image_size=16, seed=1)
    train = ImageFolderDataset(root, 16, split="train")
    val = ImageFolderDataset(root, 16, split="val")
    assert train.classes == sorted(SHAPE_CLASSES) and len(train) == 20 and len(val) == 10
    x, y = make_shapes(20, 16, seed=1)
    by_file = {int(p.split("/")[-1][:-4]): (img, label) for (p, _), (img, label) in zip(train.samples, (train[i] for i in range(20)))}
    for i in range(20):
        img, label = by_file[i]
        assert train.classes[label] == SHAPE_CLASSES[int(y[i])]
        assert torch.equal(img, x[i].float() / 255)  # PNG is lossless


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        make_shapes(10, num_classes=11)
    with pytest.raises(ValueError, match="split"):
        make_shapes(10, split="dev")
    with pytest.raises(ValueError, match="image_size"):
        make_shapes(10, image_size=4)
