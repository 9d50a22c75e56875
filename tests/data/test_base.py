import numpy as np
import pytest
import torch

from kdlab.config import TeacherRunConfig, load_config
from kdlab.core.errors import DataError
from kdlab.data import ArrayLoader, load_dataset
from kdlab.data.augment import random_crop_flip
from kdlab.data.mixed_feature import mixed_feature


def spec(**data):
    return load_config(TeacherRunConfig, {"data": data, "model": "mlp"}).data


def test_mixed_feature_true_label_distribution_matches_direct_computation():
    b = mixed_feature(num_train=300, num_test=50, num_classes=5, num_features=12, grid=3, seed=7)
    p_y = b.meta["feature_label_dist"]  # (|Z|, K)
    feats = b.train.extras["features"].numpy()
    p_star = b.train.extras["p_star"].numpy()
    assert feats.shape == (300, 9) and p_star.shape == (300, 5)
    for i in range(0, 300, 17):
        direct = np.ones(5)
        for z in feats[i]:
            direct *= p_y[z]
        direct = direct ** (1 / 9)
        direct /= direct.sum()
        np.testing.assert_allclose(p_star[i], direct, rtol=1e-5, atol=1e-7)


def test_mixed_feature_labels_follow_p_star_and_patches_are_features():
    b = mixed_feature(num_train=4000, num_test=10, num_classes=4, num_features=8, grid=2, patch_size=3,
                      feature_noise=0.0, transforms="none", seed=1)
    p_star, y = b.train.extras["p_star"], b.train.y
    # labels are drawn from p*: the empirical class frequencies match the mean of p* (4000 samples)
    freq = torch.bincount(y, minlength=4).float() / len(y)
    assert torch.allclose(freq, p_star.mean(0), atol=0.03)
    # the same seed gives the same data; without noise or transforms each patch is exactly its prototype
    b2 = mixed_feature(num_train=4000, num_test=10, num_classes=4, num_features=8, grid=2, patch_size=3,
                       feature_noise=0.0, transforms="none", seed=1)
    assert torch.equal(b.train.x, b2.train.x)
    f = b.train.extras["features"]
    x = b.train.x
    assert x.shape == (4000, 1, 6, 6)
    same = (f[:, 0] == f[0, 0]).nonzero().flatten()[:5]
    for i in same:
        assert torch.equal(x[i, :, :3, :3], x[0, :, :3, :3])


def test_mixed_feature_transformations_are_dihedral():
    b = mixed_feature(num_train=500, num_test=10, num_features=10, grid=1, patch_size=4, feature_noise=0.0,
                      transforms="dihedral", seed=3)
    x, f = b.train.x[:, 0], b.train.extras["features"][:, 0]
    proto = x[(f == 0).nonzero()[0, 0]]
    group = [torch.rot90(p, k, (0, 1)) for p in (proto, proto.flip(1)) for k in range(4)]
    for i in (f == 0).nonzero().flatten()[:20]:
        assert any(torch.allclose(x[i], g) for g in group)


def test_digits_and_mnist1d_shapes_and_fixed_split():
    d = load_dataset(spec(name="digits"))
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.train) + len(d.test) == 1797 and len(d.test) == 450
    assert torch.equal(load_dataset(spec(name="digits", augment="shift")).test.x, d.test.x)
    counts = torch.bincount(d.test.y, minlength=10).float()
    total = counts + torch.bincount(d.train.y, minlength=10)
    assert (counts - 0.25 * total).abs().max() <= 1  # stratified
    state = np.random.get_state()
    m = load_dataset(spec(name="mnist1d", num_samples=500))
    assert np.array_equal(state[1], np.random.get_state()[1])  # the generator's global seeding is undone
    assert m.input_shape == (1, 40) and len(m.train) == 400 and len(m.test) == 100


def test_loader_visits_each_sample_once_with_its_index():
    b = mixed_feature(num_train=100, num_test=10, seed=0)
    loader = ArrayLoader(b.train, 32, torch.device("cpu"), shuffle=True, seed=5)
    assert len(loader) == 4
    seen = []
    for batch in loader.epoch(0):
        assert torch.equal(batch.x, b.train.x[batch.index]) and torch.equal(batch.y, b.train.y[batch.index])
        seen.append(batch.index)
    assert sorted(torch.cat(seen).tolist()) == list(range(100))
    order0 = torch.cat([bt.index for bt in loader.epoch(0)])
    order1 = torch.cat([bt.index for bt in loader.epoch(1)])
    assert torch.equal(order0, torch.cat(seen)) and not torch.equal(order0, order1)


def _decode_crop(out: torch.Tensor, h: int, w: int, pad: int):
    """Offsets and flips of crops of images whose pixels encode 1000 + 100 * row + col."""
    oys, oxs, flips = [], [], []
    for img in out[:, 0].numpy():
        rows, cols = np.nonzero(img >= 1000)
        i, j = rows[0], cols[0]
        v = int(img[i, j]) - 1000
        r, c = v // 100, v % 100
        right = img[i, j + 1] if j + 1 < w else 0
        flipped = right >= 1000 and int(right) - 1000 == v - 1
        oys.append(r - i + pad)
        oxs.append((c - (w - 1 - j) + pad) if flipped else (c - j + pad))
        flips.append(flipped)
    return np.array(oys), np.array(oxs), np.array(flips)


def test_random_crop_flip_offsets_uniform_and_flip_rate_half():
    from scipy.stats import chisquare

    n, pad, h, w = 9000, 4, 8, 8
    grid = (torch.arange(h)[:, None] * 100 + torch.arange(w)[None, :]).float() + 1000
    x = grid.expand(n, 1, h, w).clone()
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=pad, flip=True)
    assert out.shape == x.shape
    oy, ox, flips = _decode_crop(out, h, w, pad)
    assert oy.min() == 0 and oy.max() == 2 * pad and ox.min() == 0 and ox.max() == 2 * pad
    joint = np.bincount(oy * (2 * pad + 1) + ox, minlength=(2 * pad + 1) ** 2)
    assert chisquare(joint).pvalue > 1e-4  # uniform over the 81 positions
    assert abs(flips.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    # each output is exactly the crop of the padded input at the decoded offset (flipped when decoded so)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for k in range(0, n, 997):
        crop = xp[k, :, oy[k]:oy[k] + h, ox[k]:ox[k] + w]
        assert torch.equal(out[k], crop.flip(-1) if flips[k] else crop)


def test_random_crop_on_sequences_shifts_without_flip():
    x = torch.arange(10).float().add(1).expand(500, 1, 10).clone()
    out = random_crop_flip(x, torch.Generator().manual_seed(1), pad=2, flip=False)
    first = out[:, 0, 2]  # element 2 comes from original index 0..4
    assert set(first.long().tolist()) == {1, 2, 3, 4, 5}


def test_arrays_dataset_reads_npz_and_reports_missing(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("train", 40), ("test", 10)):
        np.savez(tmp_path / f"{name}.npz", x=rng.normal(size=(n, 3, 4, 4)).astype(np.float32),
                 y=rng.integers(0, 3, n), p_star=np.full((n, 3), 1 / 3))
    b = load_dataset(spec(name="arrays", root=str(tmp_path)))
    assert b.input_shape == (3, 4, 4) and b.num_classes == 3 and "p_star" in b.train.extras
    with pytest.raises(DataError, match="not found"):
        load_dataset(spec(name="arrays", root=str(tmp_path / "missing")))
    (tmp_path / "bad").mkdir()
    np.savez(tmp_path / "bad" / "train.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 5]))
    np.savez(tmp_path / "bad" / "test.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 1]))
    with pytest.raises(DataError, match="labels span"):
        load_dataset(spec(name="arrays", root=str(tmp_path / "bad"), num_classes=2))
    np.savez(tmp_path / "bad" / "train.npz", x=np.array([[0.0, np.nan]] * 3), y=np.array([0, 1, 1]))
    with pytest.raises(DataError, match="NaN or Inf"):
        load_dataset(spec(name="arrays", root=str(tmp_path / "bad")))


class _NoisyDataset(torch.utils.data.Dataset):
    """Items with a random per-item transform, like torchvision's per-image augmentation."""

    def __init__(self, n):
        self.x = torch.arange(n, dtype=torch.float32)[:, None]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] + torch.rand(1), int(i) % 3


@pytest.mark.parametrize("workers", [0, 2])
def test_dataset_loader_is_reproducible_per_epoch_and_carries_indices(workers):
    from kdlab.data import DatasetLoader, DatasetSplit

    split = DatasetSplit(_NoisyDataset(40), torch.arange(40) % 3)
    loader = DatasetLoader(split, 8, torch.device("cpu"), shuffle=True, seed=3, num_workers=workers)
    assert len(loader) == 5

    def run(epoch):
        return [(b.x.clone(), b.y.clone(), b.index.clone()) for b in loader.epoch(epoch)]

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[2], q[2]) for p, q in zip(a, b))
    assert not all(torch.equal(p[2], q[2]) for p, q in zip(a, c))
    idx = torch.cat([p[2] for p in a])
    assert sorted(idx.tolist()) == list(range(40))
    for x, y, i in a:
        assert torch.equal(y, i % 3) and ((x[:, 0] - i.float()) >= 0).all() and ((x[:, 0] - i.float()) < 1).all()


def test_dataset_loader_same_batches_with_or_without_workers():
    from kdlab.data import DatasetLoader, DatasetSplit

    split = DatasetSplit(_NoisyDataset(30), torch.arange(30) % 3)
    outs = []
    for workers in (0, 2):
        loader = DatasetLoader(split, 8, torch.device("cpu"), shuffle=True, seed=9, num_workers=workers)
        outs.append(torch.cat([b.x for b in loader.epoch(4)]))
    assert torch.equal(outs[0], outs[1])


class _BrokenDataset(_NoisyDataset):
    def __getitem__(self, i):
        from kdlab.core.errors import DataError

        if i == 5:
            raise DataError("cannot read image 5.JPEG: truncated file")
        return super().__getitem__(i)


def test_worker_errors_stay_one_line():
    from kdlab.core.errors import DataError
    from kdlab.data import DatasetLoader, DatasetSplit

    loader = DatasetLoader(DatasetSplit(_BrokenDataset(12), torch.arange(12) % 3), 4, torch.device("cpu"),
                           num_workers=2)
    with pytest.raises(DataError) as e:
        list(loader.epoch(0))
    assert str(e.value) == "cannot read image 5.JPEG: truncated file"


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_loaders_reassemble_the_single_process_batches(world):
    from kdlab.data import DatasetLoader, DatasetSplit
    from kdlab.data.augment import make_crop_flip

    b = mixed_feature(num_train=50, num_test=20, seed=0)
    aug = make_crop_flip(pad=1, flip=True)
    single = ArrayLoader(b.train, 16, torch.device("cpu"), shuffle=True, augment=aug, seed=4)
    parts = [ArrayLoader(b.train, 16, torch.device("cpu"), shuffle=True, augment=aug, seed=4, shard=(r, world))
             for r in range(world)]
    whole = list(single.epoch(2))
    pieces = [list(p.epoch(2)) for p in parts]
    # 50 = 3 x 16 + 2: one process trains on the last batch of 2; several drop it (a process would get one sample
    # or none, and batch norm cannot train on one)
    assert len(whole) == 4 and all(len(p) == len(whole) - 1 for p in pieces)
    for k, batch in enumerate(whole[:len(pieces[0])]):
        joined = [pieces[r][k] for r in range(world)]
        assert torch.equal(torch.cat([j.index for j in joined]), batch.index)
        assert torch.equal(torch.cat([j.x for j in joined]), batch.x)  # same augmentation as one process
    # evaluation: contiguous shards that cover the split once
    ev = [b.eval_loader("test", 8, "cpu", shard=(r, world)) for r in range(world)]
    assert torch.equal(torch.cat([bt.index for e in ev for bt in e.epoch(0)]), torch.arange(20))
    ds = DatasetSplit(_NoisyDataset(30), torch.arange(30) % 3)
    one = torch.cat([bt.x for bt in DatasetLoader(ds, 8, torch.device("cpu"), shuffle=True, seed=1).epoch(3)])
    many = [list(DatasetLoader(ds, 8, torch.device("cpu"), shuffle=True, seed=1, shard=(r, world)).epoch(3))
            for r in range(world)]
    assert torch.equal(torch.cat([torch.cat([m[k].x for m in many]) for k in range(len(many[0]))]), one)
