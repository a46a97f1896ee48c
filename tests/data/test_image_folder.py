import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from jepa.data import ImageDecodeError, ImageFolderDataset, read_image, train_val_split


def _rgb(seed, h=8, w=8):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, array, fmt=None, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, format=fmt)
    return array


def _classes_layout(root, classes=("cat", "dog"), per_class=5, size=8):
    pixels = {}
    for c in classes:
        for i in range(per_class):
            pixels[str(root / c / f"{i}.png")] = _save(root / c / f"{i}.png", _rgb(hash((c, i)) % 1000, size, size))
    return pixels


def test_class_folders_give_sorted_classes_labels_and_exact_pixels(tmp_path):
    pixels = _classes_layout(tmp_path, classes=("zebra", "ant", "moth"), per_class=3)
    ds = ImageFolderDataset(tmp_path, image_size=8)
    assert ds.layout == "classes" and ds.classes == ["ant", "moth", "zebra"]
    assert len(ds) == 9 and sorted(ds.targets) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i, (path, label) in enumerate(ds.samples):
        image, y = ds[i]
        assert y == label == ds.classes.index(path.split("/")[-2])
        assert image.dtype == torch.float32 and image.shape == (3, 8, 8)
        expected = torch.from_numpy(pixels[path]).permute(2, 0, 1).float() / 255
        assert torch.equal(image, expected)  # PNG is lossless and no resize happens at the stored size


def test_imagenet_layout_uses_train_and_val_folders(tmp_path):
    _classes_layout(tmp_path / "train", per_class=4)
    _classes_layout(tmp_path / "val", per_class=2)
    train = ImageFolderDataset(tmp_path, 8, split="train")
    val = ImageFolderDataset(tmp_path, 8, split="val")
    everything = ImageFolderDataset(tmp_path, 8)
    assert train.layout == "split" and train.classes == val.classes == ["cat", "dog"]
    assert len(train) == 8 and len(val) == 4 and len(everything) == 12
    assert all("/train/" in p for p, _ in train.samples) and all("/val/" in p for p, _ in val.samples)


def test_val_class_unknown_to_train_is_refused(tmp_path):
    _classes_layout(tmp_path / "train", classes=("a", "b"), per_class=1)
    _classes_layout(tmp_path / "val", classes=("a", "c"), per_class=1)
    with pytest.raises(ValueError, match="not one of the training classes"):
        ImageFolderDataset(tmp_path, 8, split="val")


def test_labelled_folder_without_val_gets_a_seeded_stratified_80_20_split(tmp_path):
    _classes_layout(tmp_path, classes=("a", "b"), per_class=10)
    train = ImageFolderDataset(tmp_path, 8, split="train")
    val = ImageFolderDataset(tmp_path, 8, split="val")
    assert len(train) == 16 and len(val) == 4
    assert sorted(val.targets) == [0, 0, 1, 1]  # 20% of each class
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    again = ImageFolderDataset(tmp_path, 8, split="val")
    other = ImageFolderDataset(tmp_path, 8, split="val", split_seed=1)
    assert again.samples == val.samples and other.samples != val.samples


def test_train_val_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    tr, va = train_val_split(labels, 0.2, seed=4)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(60))
    assert np.bincount(labels[va]).tolist() == [2, 4, 6]
    assert np.array_equal(va, train_val_split(labels, 0.2, seed=4)[1])
    assert not np.array_equal(va, train_val_split(labels, 0.2, seed=5)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(labels, 1.0)


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(3):
        _save(tmp_path / f"img{i}.png", _rgb(i))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, 8)
    assert ds.layout == "flat" and ds.classes == [] and len(ds) == 3
    assert ds.targets == [-1, -1, -1] and ds[0][1] == -1


def test_jpeg_webp_grayscale_rgba_and_palette_are_read_as_rgb(tmp_path):
    ramp = np.linspace(0, 255, 8)
    rgb = np.stack([ramp[None, :].repeat(8, 0), ramp[:, None].repeat(8, 1), np.full((8, 8), 90.0)], -1).astype(np.uint8)
    _save(tmp_path / "a.jpg", rgb, fmt="JPEG")
    _save(tmp_path / "b.webp", rgb, fmt="WEBP")
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    _save(tmp_path / "c.png", gray, mode="L")
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 10
    rgba[:4, :, 3] = 255  # top half opaque dark grey, bottom half fully transparent
    _save(tmp_path / "d.png", rgba, mode="RGBA")
    Image.fromarray(rgb).convert("P").save(tmp_path / "e.png")
    ds = ImageFolderDataset(tmp_path, 8)
    images = {p.split("/")[-1]: ds[i][0] for i, (p, _) in enumerate(ds.samples)}
    assert all(img.shape == (3, 8, 8) for img in images.values())
    ref = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    assert (images["a.jpg"] - ref).abs().mean() < 0.05  # lossy formats: close to the (smooth) source
    assert (images["b.webp"] - ref).abs().mean() < 0.05
    g = torch.from_numpy(gray).float() / 255
    assert torch.equal(images["c.png"], g.expand(3, 8, 8))  # grey copied into every channel
    assert torch.allclose(images["d.png"][:, :4], torch.full((3, 4, 8), 10 / 255))
    assert torch.equal(images["d.png"][:, 4:], torch.ones(3, 4, 8))  # transparent -> white background
    with Image.open(tmp_path / "e.png") as pal:
        assert pal.mode == "P"
        expected = torch.from_numpy(np.array(pal.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.equal(images["e.png"], expected)  # palette indices looked up


def test_grayscale_output_with_channels_1(tmp_path):
    _save(tmp_path / "a.png", _rgb(1))
    image, _ = ImageFolderDataset(tmp_path, 8, channels=1)[0]
    assert image.shape == (1, 8, 8)


def test_mixed_sizes_are_resized_to_image_size(tmp_path):
    _save(tmp_path / "small.png", _rgb(0, 5, 7))
    _save(tmp_path / "wide.png", _rgb(1, 20, 60))
    _save(tmp_path / "tall.png", _rgb(2, 50, 16))
    ds = ImageFolderDataset(tmp_path, image_size=16)
    assert all(ds[i][0].shape == (3, 16, 16) for i in range(3))
    one = torch.full((12, 30, 3), 200, dtype=torch.uint8).numpy()
    _save(tmp_path / "flat" / "const.png", one)
    image, _ = ImageFolderDataset(tmp_path / "flat", image_size=10)[0]
    assert torch.allclose(image, torch.full((3, 10, 10), 200 / 255), atol=1e-6)  # resizing keeps a constant image constant


def _truncated_png(path):
    _save(path, _rgb(3, 32, 32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_file_raises_naming_the_file(tmp_path):
    _save(tmp_path / "good.png", _rgb(0))
    _truncated_png(tmp_path / "broken.png")
    ds = ImageFolderDataset(tmp_path, 8)
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.png")][0]
    with pytest.raises(ImageDecodeError, match="broken.png"):
        ds[bad]
    # also through a DataLoader worker: the error reaches the main process with the file name
    with pytest.raises(ImageDecodeError, match="broken.png"):
        list(DataLoader(ds, batch_size=1, num_workers=1))


def test_unreadable_files_skipped_with_a_count_by_option(tmp_path):
    for i in range(3):
        _save(tmp_path / f"ok{i}.png", _rgb(i))
    _truncated_png(tmp_path / "broken.png")
    (tmp_path / "fake.jpg").write_bytes(b"this is not a jpeg")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        ds = ImageFolderDataset(tmp_path, 8, on_error="skip")
    assert len(ds) == 3 and {p.split("/")[-1] for p, _ in ds.skipped} == {"broken.png", "fake.jpg"}
    assert all(ds[i][0].shape == (3, 8, 8) for i in range(3))


def test_read_image_error_names_the_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_bad_folders_each_get_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope", 8)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        ImageFolderDataset(tmp_path / "file.png", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty folder"):
        ImageFolderDataset(tmp_path / "empty", 8)
    (tmp_path / "texts").mkdir()
    for i in range(3):
        (tmp_path / "texts" / f"{i}.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no image files .* \(3 other file"):
        ImageFolderDataset(tmp_path / "texts", 8)
    (tmp_path / "classes" / "a").mkdir(parents=True)
    (tmp_path / "classes" / "a" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class folder\(s\) \['a'\]"):
        ImageFolderDataset(tmp_path / "classes", 8)
    _classes_layout(tmp_path / "mixed", per_class=1)
    _save(tmp_path / "mixed" / "loose.png", _rgb(0))
    with pytest.raises(ValueError, match="loose images"):
        ImageFolderDataset(tmp_path / "mixed", 8)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"split": "test"}, ValueError, "split"),
    ({"on_error": "ignore"}, ValueError, "on_error"),
    ({"channels": 4}, ValueError, "channels"),
    ({"transform": 3}, TypeError, "transform"),
    ({"image_size": 0}, ValueError, "image_size"),
])
def test_bad_arguments_are_refused(tmp_path, kwargs, error, match):
    _save(tmp_path / "a.png", _rgb(0))
    args = {"image_size": 8, **kwargs}
    with pytest.raises(error, match=match):
        ImageFolderDataset(tmp_path, **args)


def test_dataset_pickles_and_decodes_in_workers(tmp_path):
    _classes_layout(tmp_path, per_class=4)
    ds = ImageFolderDataset(tmp_path, 8)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.samples == ds.samples and torch.equal(clone[3][0], ds[3][0])
    serial = list(DataLoader(ds, batch_size=3))
    parallel = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(serial, parallel))
