"""CIFAR, Tiny-ImageNet and ImageNet loading on tiny generated folders; batched CIFAR augmentation."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from conftest import teacher_cfg
from image_data_files import (
    COLOURS,
    TINY_WNIDS,
    make_cifar10,
    make_cifar100,
    make_image_folder,
    make_tiny_imagenet,
    py2_pickle,
)
from kdlab.config import TeacherRunConfig, load_config
from kdlab.core.errors import ConfigError, DataError
from kdlab.data import load_dataset
from kdlab.data.augment import apply_crop_flip, crop_flip_params, random_crop_flip
from kdlab.data.cifar import cifar10, cifar100
from kdlab.data.image_folders import imagenet, tinyimagenet
from kdlab.data.transforms import CIFAR100_STATS
from kdlab.runs.folder import RunFolder


def spec(**data):
    return load_config(TeacherRunConfig, {"data": data, "model": "mlp"}).data


def one_line_error(fn, match, **kw):
    with pytest.raises(DataError, match=match) as e:
        fn(**kw)
    assert "\n" not in str(e.value)
    return str(e.value)


# ---------------------------------------------------------------- CIFAR


def test_cifar100_reads_python_pickles(tmp_path):
    folder = make_cifar100(tmp_path)
    b = load_dataset(spec(name="cifar100", root=str(tmp_path)))
    raw = pickle.loads((folder / "train").read_bytes(), encoding="bytes")
    assert b.train.x.shape == (20, 3, 32, 32) and b.train.x.dtype == torch.uint8 and len(b.test) == 10
    assert b.input_shape == (3, 32, 32) and b.num_classes == 100 and b.class_names[:2] == ["fine0", "fine1"]
    assert b.train.y.tolist() == raw[b"fine_labels"]
    # channel-major rows: value k of a row is channel k // 1024, pixel (k % 1024) // 32, (k % 1024) % 32
    assert b.train.x[3, 2, 5, 7] == raw[b"data"][3, 2 * 1024 + 5 * 32 + 7]
    assert b.augment is not None and not load_dataset(spec(name="cifar100", root=str(tmp_path),
                                                           augment=False)).augment
    # root may also be the batches folder itself
    assert torch.equal(cifar100(root=str(folder)).test.x, b.test.x)
    with pytest.raises(ConfigError):
        spec(name="cifar100", root=str(tmp_path), pad=4)


def test_cifar_normalisation_values(tmp_path):
    make_cifar100(tmp_path)
    b = cifar100(root=str(tmp_path))
    assert b.meta["mean"] == (0.5071, 0.4867, 0.4408) and b.meta["std"] == (0.2675, 0.2565, 0.2761)
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    out = b.prepare(x)
    mean, std = torch.tensor(CIFAR100_STATS[0]), torch.tensor(CIFAR100_STATS[1])
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, :, 0, 0], -mean / std) and torch.allclose(out[1, :, 0, 0], (1 - mean) / std)
    make_cifar10(tmp_path / "c10")
    b10 = cifar10(root=str(tmp_path / "c10"))
    assert b10.meta["mean"] == (0.4914, 0.4822, 0.4465) and b10.meta["std"] == (0.2470, 0.2435, 0.2616)


def test_cifar10_concatenates_the_five_batches(tmp_path):
    folder = make_cifar10(tmp_path, per_batch=4)
    b = cifar10(root=str(tmp_path))
    assert len(b.train) == 20 and len(b.test) == 10 and b.num_classes == 10 and b.class_names[9] == "class9"
    labels = sum((pickle.loads((folder / f"data_batch_{i}").read_bytes(), encoding="bytes")[b"labels"]
                  for i in range(1, 6)), [])
    assert b.train.y.tolist() == labels


def test_cifar_errors_are_one_line_and_say_what_to_do(tmp_path):
    msg = one_line_error(cifar100, "cifar-100-python not found", root=str(tmp_path / "none"))
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and "data.download=true" in msg
    one_line_error(cifar10, "cifar-10-batches-py not found", root=str(tmp_path))

    folder = make_cifar100(tmp_path / "incomplete")
    (folder / "meta").unlink()
    one_line_error(cifar100, r"incomplete \(meta missing\)", root=str(tmp_path / "incomplete"))

    folder = make_cifar100(tmp_path / "truncated")
    data = (folder / "train").read_bytes()
    (folder / "train").write_bytes(data[: len(data) // 2])
    one_line_error(cifar100, "train: not a readable CIFAR pickle", root=str(tmp_path / "truncated"))

    folder = make_cifar100(tmp_path / "shape")
    (folder / "test").write_bytes(py2_pickle({b"data": np.zeros((4, 1024), np.uint8), b"fine_labels": [0] * 4}))
    one_line_error(cifar100, r"N x 3072 uint8 array, found uint8 array of shape \(4, 1024\)",
                   root=str(tmp_path / "shape"))

    folder = make_cifar100(tmp_path / "labels")
    (folder / "test").write_bytes(py2_pickle({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4}))
    one_line_error(cifar100, "b'fine_labels' with one label per image", root=str(tmp_path / "labels"))


def test_cifar_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    folder = make_cifar100(tmp_path)
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": Evil()}))
    one_line_error(cifar100, "unexpected object", root=str(tmp_path))
    assert not (tmp_path / "pwned").exists()


def test_cifar_download_uses_torchvision_archive_and_reports_failures(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, root, filename=None, md5=None):
        calls.append((url, filename, md5))
        make_cifar100(tmp_path / "dl")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    b = cifar100(root=str(tmp_path / "dl"), download=True)
    assert len(b.train) == 20 and calls[0][0].endswith("cifar-100-python.tar.gz") and calls[0][2]
    cifar100(root=str(tmp_path / "dl"), download=True)
    assert len(calls) == 1  # present: not fetched again

    def offline(url, root, filename=None, md5=None):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    one_line_error(cifar10, "data.download: could not fetch .*cifar-10-python.tar.gz", root=str(tmp_path / "x"),
                   download=True)


# ------------------------------------------------- batched crop + flip at CIFAR size


def _decode(out: np.ndarray, w: int, pad: int):
    """Offsets and flips of crops of images whose pixels hold 1000 + 100 * row + col (0 in the padding)."""
    inside = out >= 1000
    i = inside.any(2).argmax(1)  # first row holding image pixels
    j = inside.any(1).argmax(1)  # first such column
    n = np.arange(len(out))
    v = out[n, i, j] - 1000
    flipped = out[n, i, j + 1] == out[n, i, j] - 1
    oy = v // 100 - i + pad
    ox = np.where(flipped, v % 100 - (w - 1 - j) + pad, v % 100 - j + pad)
    return oy, ox, flipped


def test_random_crop_flip_cifar_size_uniform_offsets_and_flips():
    from scipy.stats import chisquare

    n, pad, size = 8100, 4, 32
    grid = torch.arange(size)[:, None] * 100 + torch.arange(size)[None, :] + 1000
    x = grid.short().expand(n, 1, size, size)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=pad)[:, 0].numpy()
    oy, ox, flipped = _decode(out, size, pad)
    joint = np.bincount(oy * (2 * pad + 1) + ox, minlength=(2 * pad + 1) ** 2)
    assert len(joint) == 81 and chisquare(joint).pvalue > 1e-4
    assert abs(flipped.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    params = crop_flip_params(n, pad, pad, torch.Generator().manual_seed(0))  # the same draws, in order
    assert np.array_equal(oy, params.top) and np.array_equal(ox, params.left)
    assert np.array_equal(flipped, params.flipped)


def test_batched_cifar_pipeline_equals_torchvision_per_image(tmp_path, monkeypatch):
    """augment then prepare == RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, bit for bit,
    given the same offsets and flip decisions."""
    make_cifar100(tmp_path)
    b = cifar100(root=str(tmp_path))
    x = b.train.x[:16]
    batched = b.prepare(b.augment(x, torch.Generator().manual_seed(7)))
    top, left, flipped = crop_flip_params(16, 4, 4, torch.Generator().manual_seed(7))
    decisions = iter(zip(top.tolist(), left.tolist()))
    monkeypatch.setattr(T.RandomCrop, "get_params", staticmethod(lambda img, size: (*next(decisions), 32, 32)))
    for k in range(16):
        pipeline = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(p=float(flipped[k])),
                              T.ToTensor(), T.Normalize(*CIFAR100_STATS)])
        ref = pipeline(Image.fromarray(x[k].permute(1, 2, 0).numpy()))
        assert torch.equal(batched[k], ref), k


def test_apply_crop_flip_without_flip_is_a_shifted_window():
    x = torch.arange(2 * 3 * 6 * 6).view(2, 3, 6, 6)
    params = crop_flip_params(2, 2, 2, torch.Generator().manual_seed(0), flip=False)
    out = apply_crop_flip(x, params, 2, 2)
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for k in range(2):
        t, lft = int(params.top[k]), int(params.left[k])
        assert torch.equal(out[k], xp[k, :, t:t + 6, lft:lft + 6])


# ---------------------------------------------------------------- Tiny-ImageNet


def _colour_class(img: torch.Tensor) -> int:
    """The class whose solid colour a (3, H, W) uint8 image has (its centre, away from rotation corners)."""
    h, w = img.shape[1:]
    c = img[:, h // 2 - 4:h // 2 + 4, w // 2 - 4:w // 2 + 4].float().mean((1, 2))
    return int(torch.stack([(c - torch.tensor(col)).abs().sum() for col in COLOURS]).argmin())


def test_tinyimagenet_layout_labels_and_names(tmp_path):
    make_tiny_imagenet(tmp_path, per_class=4)
    b = load_dataset(spec(name="tinyimagenet", root=str(tmp_path / "tiny-imagenet-200")))
    assert b.meta["wnids"] == sorted(TINY_WNIDS) and b.num_classes == 3
    assert b.class_names == ["name1", "name2", "name3"]  # first synonym of words.txt, in sorted-wnid order
    assert b.input_shape == (3, 64, 64) and b.augment is None
    assert torch.bincount(b.train.y).tolist() == [4, 4, 4] and len(b.test) == 6
    # val labels come from val_annotations.txt: val_i has wnid TINY_WNIDS[i % 3]
    assert b.test.y.tolist() == [sorted(TINY_WNIDS).index(TINY_WNIDS[i % 3]) for i in range(6)]
    for split in (b.train, b.test):
        for i in range(len(split)):
            img, y = split.dataset[i]
            assert img.shape == (3, 64, 64) and img.dtype == torch.uint8 and y == split.y[i]
            grey = torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
            assert grey == (split is b.train and i == 4)  # the greyscale JPEG is read as RGB
            assert grey or _colour_class(img) == y  # the label belongs to the image read
    batch = next(iter(b.eval_loader("test", batch_size=4)))
    assert batch.x.dtype == torch.float32 and batch.x.shape == (4, 3, 64, 64)
    mean, std = torch.tensor(b.meta["mean"]), torch.tensor(b.meta["std"])
    assert b.meta["mean"] == (0.4802, 0.4481, 0.3975) and b.meta["std"] == (0.2302, 0.2265, 0.2262)
    raw = b.test.dataset[batch.index[0].item()][0]
    assert torch.equal(batch.x[0], (raw.float() / 255 - mean[:, None, None]) / std[:, None, None])
    # root may be the parent folder; image_size resizes
    small = tinyimagenet(root=str(tmp_path), image_size=32)
    assert small.input_shape == (3, 32, 32) and small.train.dataset[0][0].shape == (3, 32, 32)


def test_tinyimagenet_training_transform_is_random_and_seeded(tmp_path):
    make_tiny_imagenet(tmp_path, per_class=2)
    b = tinyimagenet(root=str(tmp_path))
    loader = b.train_loader(6, torch.device("cpu"), seed=1)
    epoch0 = torch.cat([bt.x for bt in loader.epoch(0)])
    assert torch.equal(epoch0, torch.cat([bt.x for bt in loader.epoch(0)]))
    plain = tinyimagenet(root=str(tmp_path), augment=False)
    order = torch.cat([bt.index for bt in loader.epoch(0)])
    reference = plain.prepare(torch.stack([plain.train.dataset[int(i)][0] for i in order]))
    assert not torch.equal(epoch0, reference)  # rotated / cropped / flipped
    assert epoch0.shape == reference.shape


def test_folder_data_held_out_images_are_read_like_test_images(tmp_path):
    from kdlab.data.base import hold_out

    make_tiny_imagenet(tmp_path, per_class=4)
    b = tinyimagenet(root=str(tmp_path))
    h = hold_out(b, 0.5)
    assert len(h.holdout) == len(b.train) // 2
    ds = h.holdout.dataset  # a Subset of the training files through the test transform
    x0, _ = ds[0]
    assert torch.equal(x0, ds[0][0])  # deterministic: no random rotation / crop / flip
    files = ds.dataset
    with Image.open(files.path(ds.indices[0])) as img:
        assert torch.equal(x0, b.test.dataset.transform(img.convert("RGB")))
    assert ds.dataset.transform is b.test.dataset.transform
    assert h.train.dataset.dataset.transform is b.train.dataset.transform  # training keeps its augmentation


def test_folder_loader_leaves_the_training_random_state_alone(tmp_path):
    make_tiny_imagenet(tmp_path, per_class=2)
    loader = tinyimagenet(root=str(tmp_path)).train_loader(6, torch.device("cpu"), seed=1)
    expected = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        expected.append(torch.rand(3))
    for seed, want in zip((1, 2), expected):
        torch.manual_seed(seed)
        next(iter(loader.epoch(0)))
        assert torch.equal(torch.rand(3), want)


def test_folder_loader_drop_last_and_batch_smaller_than_the_processes(tmp_path):
    from kdlab.data.base import _loader

    make_tiny_imagenet(tmp_path, per_class=2)
    b = tinyimagenet(root=str(tmp_path))
    n = len(b.train)
    loader = b.train_loader(n + 5, torch.device("cpu"), seed=0, drop_last=True)
    assert len(loader) == 1 and sum(len(bt.y) for bt in loader.epoch(0)) == n  # like the in-memory loader
    with pytest.raises(ConfigError, match="train.batch_size: 1 is the global batch; it must be at least the number"):
        _loader(b.train, 1, torch.device("cpu"), True, False, None, None, 0, 0, shard=(0, 2))


def test_tinyimagenet_errors(tmp_path):
    msg = one_line_error(tinyimagenet, "not found; download Tiny-ImageNet-200", root=str(tmp_path / "none"))
    assert "val_annotations.txt" in msg
    folder = make_tiny_imagenet(tmp_path / "a")
    (folder / "wnids.txt").unlink()
    one_line_error(tinyimagenet, "wnids.txt not found", root=str(folder))

    folder = make_tiny_imagenet(tmp_path / "b")
    (folder / "val" / "val_annotations.txt").unlink()
    one_line_error(tinyimagenet, "val_annotations.txt not found", root=str(folder))

    folder = make_tiny_imagenet(tmp_path / "c")
    with open(folder / "val" / "val_annotations.txt", "a") as f:
        f.write("val_0.JPEG\tn04000000\t0\t0\t63\t63\n")
    one_line_error(tinyimagenet, "line 7: wnid n04000000 is not in wnids.txt", root=str(folder))

    folder = make_tiny_imagenet(tmp_path / "d")
    (folder / "val" / "images" / "val_3.JPEG").unlink()
    one_line_error(tinyimagenet, "line 4: image .*val_3.JPEG not found", root=str(folder))

    folder = make_tiny_imagenet(tmp_path / "e")
    (folder / "wnids.txt").write_text("n01000000\nn05000000\n")
    one_line_error(tinyimagenet, "n05000000/images not found \\(wnids.txt lists class n05000000\\)",
                   root=str(folder))

    folder = make_tiny_imagenet(tmp_path / "f")
    (folder / "train" / "n01000000" / "images" / "n01000000_1.JPEG").write_bytes(b"not a jpeg")
    b = tinyimagenet(root=str(folder))
    one_line_error(b.train.dataset.__getitem__, "cannot read image .*n01000000_1.JPEG", i=1)


# ---------------------------------------------------------------- ImageNet


def test_imagenet_image_folder(tmp_path):
    make_image_folder(tmp_path, train_per_class=3, val_per_class=2, size=(50, 40))
    b = load_dataset(spec(name="imagenet", root=str(tmp_path), image_size=32))
    assert b.class_names == ["n01000000", "n02000000"] and b.num_classes == 2 and b.input_shape == (3, 32, 32)
    assert b.train.y.tolist() == [0, 0, 0, 1, 1, 1] and b.test.y.tolist() == [0, 0, 1, 1]
    assert b.meta["mean"] == (0.485, 0.456, 0.406) and b.meta["std"] == (0.229, 0.224, 0.225)
    for split in (b.train, b.test):
        img, y = split.dataset[len(split) - 1]
        assert img.shape == (3, 32, 32) and img.dtype == torch.uint8 and _colour_class(img) == y
    # evaluation: Resize(32 / 0.875 = 37) + CenterCrop(32) + ToTensor + Normalize, bit for bit
    batch = next(iter(b.eval_loader("test", batch_size=4)))
    ref = T.Compose([T.Resize(37), T.CenterCrop(32), T.ToTensor(), T.Normalize(b.meta["mean"], b.meta["std"])])
    path = b.test.dataset.path(0)
    assert torch.equal(batch.x[0], ref(Image.open(path).convert("RGB")))


def test_imagenet_errors(tmp_path):
    with pytest.raises(ConfigError, match="crop_fraction"):
        imagenet(root=str(tmp_path), crop_fraction=1.5)
    msg = one_line_error(imagenet, "train not found; expected ImageNet in the ImageFolder layout",
                         root=str(tmp_path / "none"))
    assert "val/<wnid>" in msg
    make_image_folder(tmp_path / "a")
    (tmp_path / "a" / "val" / "n09000000").mkdir()
    one_line_error(imagenet, "val/n09000000 is not a class of", root=str(tmp_path / "a"))
    make_image_folder(tmp_path / "b")
    for f in (tmp_path / "b" / "train" / "n01000000").iterdir():
        f.unlink()
    one_line_error(imagenet, "n01000000 holds no images", root=str(tmp_path / "b"))


# ---------------------------------------------------------------- end to end


def _run(tmp_path, name, data, model, workers=0):
    from kdlab.runs.teacher import train_teacher

    out = tmp_path / name
    cfg = teacher_cfg(out, data=data, model=model, schedule={"milestones": []},
                      train={"epochs": 1, "batch_size": 8, "progress": "off", "num_workers": workers,
                             "eval_batch_size": 16, "tensorboard": False})
    res = train_teacher(cfg)
    summary = json.loads(RunFolder(out).summary_file.read_text())
    assert summary["dataset"] == data["name"] and summary["epochs"] == 1
    return res


def test_train_teacher_on_cifar100_folder(tmp_path):
    make_cifar100(tmp_path / "data")
    _run(tmp_path, "c100", {"name": "cifar100", "root": str(tmp_path / "data")}, "resnet8")


@pytest.mark.parametrize("workers", [0, 2])
def test_train_teacher_on_tinyimagenet_folder(tmp_path, workers):
    make_tiny_imagenet(tmp_path / "data", per_class=4)
    _run(tmp_path, f"tiny{workers}", {"name": "tinyimagenet", "root": str(tmp_path / "data")}, "mlp", workers)
