import numpy as np
import pytest
import torch

from jepa.data import TensorImageDataset


def test_uint8_channels_last_numpy_is_converted_to_float_chw():
    arr = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    ds = TensorImageDataset(arr, labels=[0, 1, 2, 3, 4])
    img, y = ds[2]
    assert img.shape == (3, 6, 7) and img.dtype == torch.float32 and y == 2
    assert torch.equal(img, torch.from_numpy(arr[2]).permute(2, 0, 1).float() / 255)


def test_float_chw_tensor_and_grayscale_and_default_labels():
    x = torch.rand(4, 3, 8, 8)
    ds = TensorImageDataset(x)
    assert torch.equal(ds[1][0], x[1]) and ds[1][1] == -1 and ds.targets == [-1] * 4
    g = TensorImageDataset(torch.rand(4, 8, 8))
    assert g[0][0].shape == (1, 8, 8)
    forced = TensorImageDataset(torch.rand(2, 3, 8, 3), channels_last=False)
    assert forced[0][0].shape == (3, 8, 3)


def test_image_size_resizes_and_transform_is_applied():
    ds = TensorImageDataset(torch.rand(2, 3, 20, 30), image_size=10)
    assert ds[0][0].shape == (3, 10, 10)
    flip = TensorImageDataset(torch.rand(2, 3, 4, 4), transform=lambda im: im.flip(-1))
    assert torch.equal(flip[0][0], flip.images[0].flip(-1))


def test_npy_and_npz_files(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", arr)
    ds = TensorImageDataset(tmp_path / "x.npy")
    assert len(ds) == 3 and ds[0][1] == -1
    np.savez(tmp_path / "d.npz", images=arr, labels=np.array([2, 0, 1]))
    dz = TensorImageDataset(str(tmp_path / "d.npz"))
    assert dz.targets == [2, 0, 1] and torch.equal(dz[1][0], ds[1][0])
    np.savez(tmp_path / "bad.npz", foo=arr)
    with pytest.raises(ValueError, match="expected the images under"):
        TensorImageDataset(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TensorImageDataset(tmp_path / "missing.npy")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match=".npy or .npz"):
        TensorImageDataset(tmp_path / "x.csv")


@pytest.mark.parametrize("images, labels, error, match", [
    (torch.rand(2, 2, 3, 4, 4), None, ValueError, "shape"),
    (torch.zeros(2, 3, 4, 4, dtype=torch.int32), None, TypeError, "uint8 or floating"),
    (torch.rand(0, 3, 4, 4), None, ValueError, "empty"),
    (torch.rand(3, 3, 4, 4), [0, 1], ValueError, "3 integers"),
    (torch.rand(2, 3, 4, 4), [0.5, 1.0], ValueError, "integers"),
    ([[1, 2]], None, TypeError, "images must be"),
])
def test_bad_arrays_are_refused(images, labels, error, match):
    with pytest.raises(error, match=match):
        TensorImageDataset(images, labels)
