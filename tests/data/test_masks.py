import pytest
import torch
from torch.utils.data import DataLoader

from jepa.data import MultiBlockMaskCollator, MultiBlockMasks, TensorImageDataset


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _valid_context(m: MultiBlockMasks, b: int) -> list[int]:
    return m.context_idx[b][m.context_valid[b]].tolist()


def test_sample_shapes_dtypes_and_padding_layout():
    col = MultiBlockMaskCollator(grid=(14, 14))
    m = col.sample(8, _gen())
    b, lc = m.context_idx.shape
    assert b == 8 and m.context_idx.dtype == torch.long and m.context_valid.dtype == torch.bool
    assert m.context_valid.shape == (8, lc)
    assert m.target_idx.dtype == torch.long and m.target_idx.shape[:2] == (8, 4)
    assert m.target_valid.shape == m.target_idx.shape and m.target_valid.dtype == torch.bool
    counts = m.context_valid.sum(1)
    assert int(counts.max()) == lc  # padded to the longest, not truncated to the shortest
    assert int(counts.min()) >= 10
    for i in range(8):
        n = int(counts[i])
        assert m.context_valid[i, :n].all() and not m.context_valid[i, n:].any()  # padding at the end
        valid = m.context_idx[i, :n]
        assert torch.all(valid[1:] > valid[:-1])  # raster order, no repeats
        assert torch.all(m.context_idx[i, n:] == 0)
        assert int(valid.min()) >= 0 and int(valid.max()) < 196


def test_variable_context_lengths_are_padded_not_truncated():
    col = MultiBlockMaskCollator(grid=(14, 14))
    lengths = set()
    for seed in range(20):
        m = col.sample(16, _gen(seed))
        lengths.update(m.context_valid.sum(1).tolist())
        assert m.context_idx.shape[1] == max(m.context_valid.sum(1).tolist())
    assert len(lengths) > 5  # images of one batch really do keep different numbers of patches


def test_target_blocks_are_rectangles_of_one_size_per_batch():
    col = MultiBlockMaskCollator(grid=(10, 12), num_targets=3)
    for seed in range(10):
        m = col.sample(4, _gen(seed))
        assert m.target_valid.all()
        sizes = set()
        for i in range(4):
            for k in range(3):
                idx = m.target_idx[i, k]
                rows, cols = idx // 12, idx % 12
                h = int(rows.max() - rows.min() + 1)
                w = int(cols.max() - cols.min() + 1)
                assert h * w == len(idx) == len(set(idx.tolist()))  # a full h x w rectangle
                sizes.add((h, w))
        assert len(sizes) == 1


def test_context_and_targets_are_disjoint():
    col = MultiBlockMaskCollator(grid=(14, 14))
    for seed in range(10):
        m = col.sample(8, _gen(seed))
        for i in range(8):
            assert not set(_valid_context(m, i)) & set(m.target_idx[i].flatten().tolist())


def test_allow_overlap_keeps_targets_in_the_context_block():
    col = MultiBlockMaskCollator(grid=(8, 8), context_scale=(1.0, 1.0), allow_overlap=True)
    m = col.sample(4, _gen())
    assert m.context_valid.all() and m.context_idx.shape == (4, 64)  # the whole grid, targets included
    assert torch.equal(m.context_idx, torch.arange(64).expand(4, 64))


def test_block_may_span_the_whole_grid():
    # The reference shrank any block to height-1 x width-1 and could never place it at the last row.
    col = MultiBlockMaskCollator(grid=(4, 5), num_targets=1, target_scale=(1.0, 1.0), target_aspect=(0.8, 0.8),
                                 context_scale=(1.0, 1.0), min_keep=1, allow_overlap=True)
    m = col.sample(3, _gen())
    assert torch.equal(m.target_idx, torch.arange(20).expand(3, 1, 20))


def test_every_row_and_column_including_the_last_is_covered():
    gh, gw = 7, 9
    col = MultiBlockMaskCollator(grid=(gh, gw), num_targets=4, min_keep=4)
    target_hits = torch.zeros(gh * gw)
    context_hits = torch.zeros(gh * gw)
    g = _gen(3)
    for _ in range(100):
        m = col.sample(8, g)
        target_hits += torch.bincount(m.target_idx.flatten(), minlength=gh * gw)
        context_hits += torch.bincount(m.context_idx[m.context_valid], minlength=gh * gw)
    for hits in (target_hits.view(gh, gw), context_hits.view(gh, gw)):
        assert (hits > 0).all()
        assert hits[-1].sum() > 0 and hits[:, -1].sum() > 0
    # far edge as likely as the near edge (symmetric placement): last row vs first row within 15%
    t = target_hits.view(gh, gw)
    assert abs(float(t[-1].sum() / t[0].sum()) - 1) < 0.15
    assert abs(float(t[:, -1].sum() / t[:, 0].sum()) - 1) < 0.15


def test_top_left_corners_are_uniform_over_the_valid_range():
    gh, gw = 8, 8
    # degenerate ranges: every target block is exactly 3x3 (area 9/64 of the grid, aspect 1)
    col = MultiBlockMaskCollator(grid=(gh, gw), num_targets=4, target_scale=(9 / 64, 9 / 64), target_aspect=(1.0, 1.0),
                                 context_scale=(1.0, 1.0), min_keep=1, allow_overlap=True)
    g = _gen(11)
    corners = torch.cat([col.sample(250, g).target_idx[:, :, 0].flatten() for _ in range(10)])  # 10,000 blocks
    rows, cols = corners // gw, corners % gw
    assert int(rows.min()) == 0 and int(rows.max()) == gh - 3 and int(cols.max()) == gw - 3
    counts = torch.bincount(rows * 6 + cols, minlength=36).double()
    assert counts.numel() == 36
    expected = len(corners) / 36
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 66.6  # 35 degrees of freedom: p = 0.001 critical value


def test_block_size_follows_scale_and_aspect():
    col = MultiBlockMaskCollator(grid=(20, 20))
    g = _gen(5)
    areas, ratios = [], []
    for _ in range(400):
        h, w = col.block_size((0.15, 0.2), (0.75, 1.5), g)
        areas.append(h * w / 400)
        ratios.append(h / w)
    assert 0.12 <= min(areas) and max(areas) <= 0.24
    assert min(ratios) < 0.85 and max(ratios) > 1.35  # both ends of the aspect range are reached
    # scale and aspect are drawn independently (the reference used one number for both)
    a, r = torch.tensor(areas), torch.tensor(ratios)
    corr = float(torch.corrcoef(torch.stack([a, r]))[0, 1])
    assert abs(corr) < 0.2


def test_reproducible_from_generator_and_global_seed():
    col = MultiBlockMaskCollator(grid=(14, 14))
    a, b, c = col.sample(6, _gen(1)), col.sample(6, _gen(1)), col.sample(6, _gen(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.target_idx, c.target_idx)
    torch.manual_seed(7)
    d = col.sample(6)
    torch.manual_seed(7)
    e = col.sample(6)
    assert all(torch.equal(x, y) for x, y in zip(d, e))


def test_min_keep_retry_redraws_positions_and_then_raises():
    # two 3x3 targets on a 6x6 grid: keeping >= 22 of the 36 patches needs the targets to overlap
    col = MultiBlockMaskCollator(grid=(6, 6), num_targets=2, target_scale=(0.25, 0.25), target_aspect=(1.0, 1.0),
                                 context_scale=(1.0, 1.0), min_keep=22, max_tries=200)
    m = col.sample(16, _gen(0))
    assert int(m.context_valid.sum(1).min()) >= 22
    impossible = MultiBlockMaskCollator(grid=(4, 4), num_targets=4, target_scale=(0.5, 0.5), context_scale=(1.0, 1.0),
                                        min_keep=10, max_tries=3)
    with pytest.raises(ValueError, match="min_keep=10"):
        impossible.sample(2, _gen())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid": (0, 4)}, "grid"),
        ({"grid": 14}, "grid"),
        ({"num_targets": 0}, "num_targets"),
        ({"target_scale": (0.3, 0.2)}, "target_scale"),
        ({"context_scale": (0.5, 1.5)}, "context_scale"),
        ({"target_aspect": (0.0, 1.0)}, "target_aspect"),
        ({"min_keep": 0}, "min_keep"),
        ({"grid": (3, 3), "min_keep": 10}, "min_keep=10"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiBlockMaskCollator(**kwargs)


def test_collate_fn_returns_images_labels_and_masks():
    images = torch.rand(10, 3, 16, 16)
    ds = TensorImageDataset(images, torch.arange(10))
    col = MultiBlockMaskCollator(grid=(4, 4), min_keep=2, generator=_gen())
    batch = next(iter(DataLoader(ds, batch_size=5, collate_fn=col)))
    assert set(batch) == {"images", "labels", "context_idx", "context_valid", "target_idx", "target_valid"}
    assert torch.equal(batch["images"], images[:5]) and torch.equal(batch["labels"], torch.arange(5))
    assert batch["context_idx"].shape[0] == 5 and batch["target_idx"].shape[:2] == (5, 4)
    # unlabelled items (plain tensors) give no labels
    out = col([torch.rand(3, 16, 16) for _ in range(3)])
    assert "labels" not in out and out["images"].shape == (3, 3, 16, 16)


def test_collate_fn_in_workers_draws_different_masks_per_worker():
    ds = TensorImageDataset(torch.rand(8, 3, 8, 8))
    col = MultiBlockMaskCollator(grid=(4, 4), num_targets=2, min_keep=2)
    torch.manual_seed(0)
    batches = list(DataLoader(ds, batch_size=2, collate_fn=col, num_workers=2))
    assert len(batches) == 4
    torch.manual_seed(0)
    again = list(DataLoader(ds, batch_size=2, collate_fn=col, num_workers=2))
    assert all(torch.equal(a["target_idx"], b["target_idx"]) for a, b in zip(batches, again))  # seeded by the loader
    assert not torch.equal(batches[0]["target_idx"], batches[1]["target_idx"])  # workers 0 and 1 differ


def _worker_masks(loader):
    return [b["target_idx"] for b in loader]


def test_collate_fn_in_workers_ignores_a_shared_generator_and_follows_the_loader_generator():
    """A generator set on the collator is copied into every worker, so workers use their own seeds
    instead; those follow the loader's generator: another loader seed gives other masks, the same
    seed the same masks, whatever was drawn from the global RNG in between."""
    ds = TensorImageDataset(torch.rand(8, 3, 8, 8))
    col = MultiBlockMaskCollator(grid=(4, 4), num_targets=2, min_keep=2, generator=_gen())

    def loader(seed):
        return DataLoader(ds, batch_size=2, collate_fn=col, num_workers=2, generator=torch.Generator().manual_seed(seed))

    a = _worker_masks(loader(0))
    torch.rand(100)  # the global RNG moves: irrelevant with a loader generator
    b = _worker_masks(loader(0))
    c = _worker_masks(loader(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))  # e.g. another rank's seed
    assert not torch.equal(a[0], a[1])  # workers 0 and 1 differ, though both copied one generator
    # the main process (num_workers=0) draws from the collator's generator
    main = [b["target_idx"] for b in DataLoader(ds, batch_size=2, collate_fn=MultiBlockMaskCollator(
        grid=(4, 4), num_targets=2, min_keep=2, generator=_gen(5)))]
    again = [b["target_idx"] for b in DataLoader(ds, batch_size=2, collate_fn=MultiBlockMaskCollator(
        grid=(4, 4), num_targets=2, min_keep=2, generator=_gen(5)))]
    assert all(torch.equal(x, y) for x, y in zip(main, again))


def test_worker_masks_are_not_the_worker_global_rng_stream():
    """Transforms draw from the worker's global RNG (seeded with the worker seed); the masks come from
    a stream of their own, so a transform that draws more or fewer numbers does not change them."""
    images = torch.rand(6, 3, 8, 8)

    class Drawing(TensorImageDataset):
        def __init__(self, draws):
            super().__init__(images)
            self.draws = draws

        def __getitem__(self, i):
            torch.rand(self.draws)  # a transform's random draws
            return super().__getitem__(i)

    col = MultiBlockMaskCollator(grid=(4, 4), num_targets=2, min_keep=2)
    runs = [
        _worker_masks(DataLoader(Drawing(n), batch_size=2, collate_fn=col, num_workers=1, generator=_gen(3)))
        for n in (1, 7)
    ]
    assert all(torch.equal(x, y) for x, y in zip(*runs))


def test_collate_fn_checks_image_size_against_grid():
    col = MultiBlockMaskCollator(grid=(4, 4), min_keep=2)
    with pytest.raises(ValueError, match="patch grid"):
        col([torch.rand(3, 10, 10)])
