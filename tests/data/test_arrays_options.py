"""arrays: normalize, num_train subsets and the channel-axis hint."""

import numpy as np
import pytest
import torch

from kdlab.core.errors import ConfigError
from kdlab.data.arrays import arrays


def _write(folder, x_train, y_train, x_test, y_test, **extra):
    folder.mkdir(exist_ok=True)
    np.savez(folder / "train.npz", x=x_train, y=y_train, **extra)
    np.savez(folder / "test.npz", x=x_test, y=y_test)
    return str(folder)


def test_normalize_uses_training_statistics_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.normal([1.0, -5.0], [2.0, 0.5], size=(60, 4, 4, 2)).transpose(0, 3, 1, 2).astype(np.float32)
    x_test = rng.normal(0, 1, size=(20, 2, 4, 4)).astype(np.float32)
    y_train, y_test = np.arange(60) % 3, np.arange(20) % 3
    b = arrays(_write(tmp_path, x_train, y_train, x_test, y_test), normalize=True)
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), ddof=1, keepdims=True)
    assert torch.allclose(b.train.x, torch.from_numpy((x_train - mean) / std), atol=1e-5)
    assert torch.allclose(b.test.x, torch.from_numpy((x_test - mean) / std), atol=1e-5)  # train stats on test
    assert b.meta["mean"] == pytest.approx(mean.ravel(), rel=1e-5)
    plain = arrays(str(tmp_path))
    assert torch.equal(plain.train.x, torch.from_numpy(x_train)) and plain.meta == {}


def test_normalize_vectors_per_feature(tmp_path):
    x = np.stack([np.arange(30.0), np.full(30, 7.0)], axis=1).astype(np.float32)
    b = arrays(_write(tmp_path, x, np.arange(30) % 2, x[:4], np.array([0, 1, 0, 1])), normalize=True)
    assert b.train.x[:, 0].mean().abs() < 1e-5 and b.train.x[:, 0].std().item() == pytest.approx(1, abs=1e-5)
    assert torch.isfinite(b.train.x).all()  # a constant feature does not divide by zero


def test_num_train_is_class_balanced_and_keeps_extras(tmp_path):
    y = np.array([0] * 50 + [1] * 30 + [2] * 4)
    x = np.arange(len(y), dtype=np.float32)[:, None]
    root = _write(tmp_path, x, y, x[:6], np.array([0, 1, 2, 0, 1, 2]), p_star=np.arange(len(y)) * 10)
    b = arrays(root, num_train=24, subset_seed=1)
    assert np.bincount(b.train.y.numpy()).tolist() == [10, 10, 4]  # class 2 gives its 4, the rest is shared
    kept = b.train.x[:, 0].long()
    assert torch.equal(b.train.y, torch.from_numpy(y)[kept]) and torch.equal(b.train.extras["p_star"], kept * 10)
    assert torch.equal(arrays(root, num_train=24, subset_seed=1).train.x, b.train.x)
    assert not torch.equal(arrays(root, num_train=24, subset_seed=2).train.x, b.train.x)
    assert len(b.test) == 6
    with pytest.raises(ConfigError, match="data.num_train: 100 asked for but the split holds 84"):
        arrays(root, num_train=100)


def test_images_without_channel_axis_get_a_hint(tmp_path):
    x = np.zeros((20, 28, 28), dtype=np.float32)
    root = _write(tmp_path, x, np.arange(20) % 2, x[:4], np.array([0, 1, 0, 1]))
    with pytest.warns(UserWarning, match=r"add a channel axis: x\[:, None\]"):
        arrays(root)
