"""MNIST-family data sets read from IDX files written byte for byte by the test."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_run import run
from image_data_files import IDX_FILES, idx_bytes, make_idx
from kdlab.core.errors import ConfigError, DataError
from kdlab.data.idx import FASHION_CLASSES, fashion_mnist, kmnist, mnist, read_idx

REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_idx_header_is_big_endian_and_parsed(tmp_path):
    arr = np.arange(2 * 3 * 300, dtype=np.int64).reshape(2, 3, 300) % 256
    data = idx_bytes(arr)
    # header: 00 00 08 03 then 2, 3, 300 as big-endian uint32
    assert data[:4] == b"\x00\x00\x08\x03" and data[4:16] == bytes([0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 1, 44])
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "a.gz").write_bytes(gzip.compress(data))
    for name in ("a", "a.gz"):
        got = read_idx(tmp_path / name)
        assert got.shape == (2, 3, 300) and np.array_equal(got, arr)


@pytest.mark.parametrize("gz, layout", [(False, "raw"), (True, "raw"), (False, "flat"), (True, "flat")])
def test_reads_torchvision_and_flat_layouts(tmp_path, gz, layout):
    folder = tmp_path / "KMNIST" / "raw" if layout == "raw" else tmp_path
    written = make_idx(folder, gz=gz)
    b = kmnist(root=str(tmp_path), augment=False)
    assert b.train.x.dtype == torch.uint8 and b.train.x.shape == (40, 1, 28, 28) and b.test.x.shape == (20, 1, 28, 28)
    assert np.array_equal(b.train.x[:, 0].numpy(), written["train"][0])
    assert np.array_equal(b.test.y.numpy(), written["test"][1].astype(np.int64))
    assert b.num_classes == 10 and b.input_shape == (1, 28, 28) and b.augment is None


def test_subsets_are_balanced_seeded_and_deterministic(tmp_path):
    written = make_idx(tmp_path, n_train=200, n_test=100)
    a = mnist(root=str(tmp_path), num_train=50, num_test=30, subset_seed=3)
    again = mnist(root=str(tmp_path), num_train=50, num_test=30, subset_seed=3)
    other = mnist(root=str(tmp_path), num_train=50, num_test=30, subset_seed=4)
    assert np.bincount(a.train.y.numpy(), minlength=10).tolist() == [5] * 10
    assert np.bincount(a.test.y.numpy(), minlength=10).tolist() == [3] * 10
    assert torch.equal(a.train.x, again.train.x) and not torch.equal(a.train.x, other.train.x)
    # every kept image is one of the written ones, with its own label
    images, labels = written["train"]
    flat = {img.tobytes(): int(lab) for img, lab in zip(images, labels)}
    assert all(flat[x[0].numpy().tobytes()] == int(y) for x, y in zip(a.train.x, a.train.y))
    with pytest.raises(ConfigError, match="data.num_train: 300 asked for but the split holds 200"):
        mnist(root=str(tmp_path), num_train=300)


def test_image_size_average_pools(tmp_path):
    written = make_idx(tmp_path)
    b = fashion_mnist(root=str(tmp_path), image_size=14)
    assert b.train.x.shape == (40, 1, 14, 14) and b.input_shape == (1, 14, 14)
    img = written["train"][0][0].astype(np.float64)
    expect = np.rint((img[0::2, 0::2] + img[1::2, 0::2] + img[0::2, 1::2] + img[1::2, 1::2]) / 4)
    assert np.abs(b.train.x[0, 0].numpy().astype(np.float64) - expect).max() <= 1  # float32 rounding at .5
    with pytest.raises(ConfigError, match="data.image_size: 12 must divide 28"):
        fashion_mnist(root=str(tmp_path), image_size=12)


def test_normalisation_and_augmentation(tmp_path):
    make_idx(tmp_path)
    b = fashion_mnist(root=str(tmp_path))
    x = b.train.x[:8]
    assert torch.allclose(b.prepare(x), (x.float() / 255 - 0.2860) / 0.3530)
    assert b.class_names == FASHION_CLASSES
    gen = torch.Generator().manual_seed(0)
    out = b.augment(x, gen)
    assert out.shape == x.shape and out.dtype == torch.uint8 and not torch.equal(out, x)
    # a crop with padding 2 shifts by at most 2 pixels: each output equals the input shifted by some (dy, dx)
    pad = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(8):
        assert any(torch.equal(out[i], pad[i, :, dy:dy + 28, dx:dx + 28]) for dy in range(5) for dx in range(5))


def test_missing_truncated_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match=r"data.root: the mnist IDX files .* are not in .*MNIST/raw"):
        mnist(root=str(tmp_path))
    make_idx(tmp_path)
    images = tmp_path / IDX_FILES["train"][0]
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: the header announces 40x28x28 = 31360 bytes "
                                        r"of data but the file holds 31355") as e:
        mnist(root=str(tmp_path))
    assert "\n" not in str(e.value)
    images.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="not an IDX file"):
        mnist(root=str(tmp_path))
    images.unlink()
    (tmp_path / (IDX_FILES["train"][0] + ".gz")).write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: not a readable IDX file"):
        mnist(root=str(tmp_path))


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got URLError")

    monkeypatch.setattr(torchvision.datasets, "KMNIST", offline)
    with pytest.raises(DataError, match=r"data.download: could not fetch KMNIST into .*KMNIST/raw") as e:
        kmnist(root=str(tmp_path), download=True)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian_package():
    b = fashion_mnist(root=str(REAL_FASHION), augment=False)
    assert b.train.x.shape == (60000, 1, 28, 28) and b.test.x.shape == (10000, 1, 28, 28)
    assert np.bincount(b.train.y.numpy()).tolist() == [6000] * 10
    assert np.bincount(b.test.y.numpy()).tolist() == [1000] * 10
    pixels = b.train.x.float().div(255)
    assert pixels.mean().item() == pytest.approx(0.2860, abs=1e-4) and pixels.std().item() == pytest.approx(
        0.3530, abs=1e-4)


def test_train_teacher_on_fashion_mnist_via_cli(tmp_path, capsys):
    make_idx(tmp_path / "FashionMNIST" / "raw", n_train=300, n_test=100, gz=True)
    out_dir = tmp_path / "run"
    code, out, err = run(capsys, "train-teacher", "data=fashion-mnist", f"data.root={tmp_path}", "data.num_train=200",
                         "data.image_size=14", "model=mlp", "train.epochs=1", "train.progress=off",
                         f"out_dir={out_dir}")
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert 0 <= summary["top1"] <= 100


def test_fashion_default_root_falls_back_to_debian_folder(tmp_path, monkeypatch):
    import kdlab.data.idx as idx

    written = make_idx(tmp_path / "debian", gz=True)
    monkeypatch.setattr(idx, "DEBIAN_FASHION", str(tmp_path / "debian"))
    monkeypatch.chdir(tmp_path)  # no data/ folder here
    b = fashion_mnist()
    assert np.array_equal(b.train.x[:, 0].numpy(), written["train"][0])
    with pytest.raises(DataError, match="are not in"):  # only the default root falls back
        fashion_mnist(root=str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="are not in"):
        mnist()
