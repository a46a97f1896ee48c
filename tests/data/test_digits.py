import pytest
import torch

from jepa.data import DigitsPairs, load_digits_split, patchify, random_shift


def test_split_is_fixed_disjoint_and_stratified():
    tr, te = load_digits_split("train"), load_digits_split("test")
    assert len(tr) + len(te) == 1797
    assert len(load_digits_split("test").labels) == len(te)
    assert torch.equal(load_digits_split("train").images, tr.images)
    # no test image appears in train
    trs = {bytes(x.numpy().tobytes()) for x in tr.images}
    assert sum(bytes(x.numpy().tobytes()) in trs for x in te.images) <= 5  # the digits hold a few exact duplicates
    counts = torch.bincount(te.labels, minlength=10).float()
    assert counts.min() >= 34 and counts.max() <= 38


def test_patchify_by_hand():
    img = torch.arange(16.0).reshape(1, 4, 4)
    tokens = patchify(img, 2)
    assert tokens.shape == (1, 4, 4)
    assert tokens[0, 0].tolist() == [0, 1, 4, 5] and tokens[0, 3].tolist() == [10, 11, 14, 15]


def test_random_shift_moves_pixels_with_zero_fill():
    img = torch.zeros(1, 8, 8)
    img[0, 4, 4] = 1.0
    torch.manual_seed(0)
    out = random_shift(img.repeat(50, 1, 1), 1)
    assert torch.all(out.sum(dim=(1, 2)) == 1.0)
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert rows.min() >= 3 and rows.max() <= 5 and cols.min() >= 3 and cols.max() <= 5
    assert len(set(pos.tolist())) > 3


def test_pairs_are_two_views_of_one_image():
    ds = DigitsPairs("train", max_shift=0, noise=0.0, context_mask_ratio=0.25)
    s_t, s_t1 = ds[3]
    assert s_t.shape == s_t1.shape == (16, 4)
    assert torch.equal(s_t1, ds.data.tokens[3])
    hidden = (s_t == 0).all(dim=1) & ~(s_t1 == 0).all(dim=1)
    kept = ~(s_t == 0).all(dim=1)
    assert torch.equal(s_t[kept], s_t1[kept]) and hidden.sum() <= 4
    clean = DigitsPairs("test", augment=False)
    a, b = clean[0]
    assert torch.equal(a, b) and torch.equal(a, clean.data.tokens[0])


def test_clean_target_and_block_mask():
    from jepa.data.digits import token_mask

    ds = DigitsPairs("train", clean_target=True, max_rotation=8.0)
    _, target = ds[5]
    assert torch.equal(target, ds.data.tokens[5])
    torch.manual_seed(0)
    for _ in range(20):
        m = token_mask(16, 0.25, "block").view(4, 4)
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        # one filled rectangle of about 4 tokens
        assert m.sum() == len(rows) * len(cols) and 2 <= m.sum() <= 6
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()


def test_random_affine_identity_and_rotation():
    from jepa.data.digits import random_affine

    img = torch.rand(3, 8, 8)
    assert torch.equal(random_affine(img, 0.0, 0.0), img)
    out = random_affine(img, 10.0, 0.1)
    assert out.shape == img.shape and not torch.equal(out, img)
    # mass is roughly preserved by a small rotation/zoom of a centred blob
    blob = torch.zeros(1, 8, 8)
    blob[0, 3:5, 3:5] = 1.0
    assert random_affine(blob, 8.0, 0.0).sum().item() == pytest.approx(4.0, rel=0.25)


def test_batched_views_follow_the_per_item_rules():
    """DigitsPairs.__getitems__ (what the DataLoader calls): the same kinds of views as __getitem__."""
    from torch.utils.data import DataLoader

    idx = [3, 0, 7, 7, 11]
    plain = DigitsPairs("train", max_shift=0, noise=0.0, context_mask_ratio=0.25)
    for (s_t, s_t1), i in zip(plain.__getitems__(idx), idx):
        assert torch.equal(s_t1, plain.data.tokens[i])  # the clean target
        hidden = (s_t == 0).all(dim=1) & ~(plain.data.tokens[i] == 0).all(dim=1)
        kept = ~(s_t == 0).all(dim=1)
        assert torch.equal(s_t[kept], plain.data.tokens[i][kept]) and hidden.sum() <= 4
    rows = torch.stack([s for s, _ in DigitsPairs("train", max_shift=0, noise=0.0, context_mask_ratio=0.5).__getitems__(list(range(40)))])
    masked = torch.stack([s for s, _ in DigitsPairs("train", max_shift=0, noise=0.0, context_mask_ratio=0.5, augment=False).__getitems__(list(range(40)))])
    assert ((rows == 0).all(-1).sum(1) >= 8).all() and torch.equal(masked, load_digits_split("train").tokens[:40])  # 8 of 16 hidden per row
    block = DigitsPairs("train", max_shift=0, noise=0.0, mask_mode="block", clean_target=True)
    for s_t, s_t1 in block.__getitems__(list(range(10))):
        gone = ((s_t == 0).all(-1) & ~(s_t1 == 0).all(-1)).view(4, 4)
        r, c = gone.any(1).nonzero().flatten(), gone.any(0).nonzero().flatten()
        assert gone.sum() <= len(r) * len(c) <= 6  # inside one rectangle
    aug = DigitsPairs("train", max_rotation=15.0, max_scale=0.15, noise=0.1)
    torch.manual_seed(4)
    first = aug.__getitems__(idx)
    torch.manual_seed(4)
    again = aug.__getitems__(idx)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))  # seeded: reproducible
    assert not torch.equal(first[2][0], first[3][0])  # the same image twice: two different views
    calls = []

    class Counted(DigitsPairs):
        def __getitems__(self, indices):
            calls.append(list(indices))
            return super().__getitems__(indices)

    (batch,) = DataLoader(Counted("train"), batch_size=5, sampler=idx)  # the loader fetches through __getitems__
    assert calls == [idx] and batch[0].shape == (5, 16, 4)
