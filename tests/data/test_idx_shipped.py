"""The Fashion-MNIST subset inside kdlab (the quickstart's data): what it holds, its licence notice, and that it is
exactly the full set's class-balanced subset (rebuilt from Debian's files when they are installed)."""

from pathlib import Path

import numpy as np
import pytest
import tomllib

from kdlab.core.errors import ConfigError
from kdlab.data.idx import FASHION_CLASSES, fashion_mnist, mnist, shipped_folder, write_subset

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")
ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_subset_holds_200_images_of_each_class_per_split_with_its_licence():
    b = fashion_mnist(root="shipped", augment=False)
    assert b.train.x.shape == (2000, 1, 28, 28) and b.test.x.shape == (2000, 1, 28, 28)
    assert np.bincount(b.train.y.numpy()).tolist() == [200] * 10 == np.bincount(b.test.y.numpy()).tolist()
    assert b.class_names == FASHION_CLASSES and b.meta["root"] == str(shipped_folder())
    notice = (shipped_folder() / "NOTICE").read_text()
    assert "Zalando SE" in notice and "MIT License" in notice and "Permission is hereby granted" in notice
    size = sum(f.stat().st_size for f in shipped_folder().iterdir())
    assert size < 2.5e6  # a few MB at most in the install
    small = fashion_mnist(root="shipped", num_train=100, image_size=14)  # the options apply on top
    assert small.train.x.shape == (100, 1, 14, 14) and np.bincount(small.train.y.numpy()).tolist() == [10] * 10


def test_the_subset_files_are_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["kdlab"]
    assert "data/fashion_mnist_subset/*" in data


def test_only_fashion_mnist_ships():
    with pytest.raises(ConfigError, match="data.root: only fashion-mnist ships with kdlab") as e:
        mnist(root="shipped")
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_shipped_files_are_the_full_sets_balanced_subset(tmp_path):
    write_subset(REAL_FASHION, tmp_path)
    for f in sorted(shipped_folder().glob("*.gz")):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f.name
    full = fashion_mnist(root=str(REAL_FASHION), num_train=2000, num_test=2000, subset_seed=0, augment=False)
    mine = fashion_mnist(root="shipped", augment=False)
    for split in ("train", "test"):
        a, b = getattr(full, split), getattr(mine, split)
        assert np.array_equal(a.x.numpy(), b.x.numpy()) and np.array_equal(a.y.numpy(), b.y.numpy())
