import pickle

import pytest
import torch
import torch.nn.functional as F

from jepa.data import eval_transform, train_transform
from jepa.data.transforms import CenterCrop, ColorJitter, Normalize, RandomHorizontalFlip, RandomResizedCrop, Resize


def _image(c=3, h=12, w=20, seed=0):
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))


def test_resize_keeps_aspect_of_shorter_side_and_centre_crop_takes_the_middle():
    img = _image(h=12, w=20)
    assert Resize(6)(img).shape == (3, 6, 10)
    assert Resize((5, 7))(img).shape == (3, 5, 7)
    assert torch.equal(CenterCrop(8)(img), img[:, 2:10, 6:14])


def test_eval_transform_matches_resize_then_centre_crop_by_hand():
    img = _image(h=24, w=40)
    out = eval_transform(12)(img)
    by_hand = F.interpolate(img[None], size=(12, 20), mode="bilinear", align_corners=False, antialias=True)[0]
    assert torch.allclose(out, by_hand[:, :, 4:16].clamp(0, 1))
    assert eval_transform(12, crop_fraction=0.75)(img).shape == (3, 12, 12)


def test_random_resized_crop_size_range_and_reproducibility():
    t = RandomResizedCrop(8, scale=(0.3, 1.0))
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = t.crop_box(30, 50, g)
        assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 50
        assert 0.3 * 1500 * 0.8 <= h * w <= 1500
    img = _image(h=30, w=50)
    a = t(img, torch.Generator().manual_seed(3))
    b = t(img, torch.Generator().manual_seed(3))
    assert a.shape == (3, 8, 8) and torch.equal(a, b)
    # full-scale square crop of a square image = a plain resize
    full = RandomResizedCrop(6, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    sq = _image(h=12, w=12)
    assert torch.allclose(full(sq), F.interpolate(sq[None], size=(6, 6), mode="bilinear", antialias=True)[0].clamp(0, 1))


def test_flip_and_colour_jitter():
    img = _image()
    assert torch.equal(RandomHorizontalFlip(p=1.0)(img), img.flip(-1))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(img), img)
    assert torch.equal(ColorJitter(0, 0, 0, p=1.0)(img), img)
    out = ColorJitter(0.8, 0.8, 0.8, p=1.0)(img, torch.Generator().manual_seed(1))
    assert out.shape == img.shape and 0 <= float(out.min()) and float(out.max()) <= 1 and not torch.equal(out, img)
    bright = ColorJitter(brightness=0.5, contrast=0, saturation=0, p=1.0)(torch.full((3, 2, 2), 0.5), torch.Generator().manual_seed(2))
    assert torch.allclose(bright, bright.flatten()[0].expand(3, 2, 2))  # brightness scales every pixel alike


def test_normalize_and_train_transform_are_picklable():
    img = _image()
    n = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert torch.allclose(n(img), (img - 0.5) / 0.25)
    t = train_transform(8, color_jitter=0.4)
    clone = pickle.loads(pickle.dumps(t))
    torch.manual_seed(0)
    a = t(img)
    torch.manual_seed(0)
    assert torch.equal(a, clone(img)) and a.shape == (3, 8, 8)


@pytest.mark.parametrize("build, match", [
    (lambda: RandomResizedCrop(0), "size"),
    (lambda: RandomResizedCrop(8, scale=(0.5, 0.2)), "scale"),
    (lambda: RandomHorizontalFlip(p=2), "p"),
    (lambda: ColorJitter(brightness=-1), "brightness"),
    (lambda: eval_transform(8, crop_fraction=0), "crop_fraction"),
    (lambda: Normalize((0.5,), (0.0,)), "std"),
])
def test_bad_transform_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_transforms_refuse_non_image_input():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        Resize(4)(torch.rand(4, 4))
    with pytest.raises(TypeError, match="image tensor"):
        CenterCrop(4)([1, 2])
