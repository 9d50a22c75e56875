"""Tiny copies of the paper-scale data sets, written in their exact on-disk formats."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING opcodes) and names numpy's ``numpy.core`` module, as the
    cPickle files of the CIFAR site do (Python 3 would write bytes as ``_codecs.encode`` calls)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _batch(rng, n: int, num_classes: int, label_key: bytes) -> dict:
    return {b"batch_label": b"training batch 1 of 1", label_key: rng.integers(0, num_classes, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def make_cifar100(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """``root/cifar-100-python`` with train, test and meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        d = _batch(rng, n, 100, b"fine_labels")
        d[b"coarse_labels"] = [y // 5 for y in d[b"fine_labels"]]
        (folder / name).write_bytes(py2_pickle(d))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(py2_pickle(meta))
    return folder


def make_cifar10(root: Path, per_batch: int = 4, n_test: int = 10, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with data_batch_1..5, test_batch and batches.meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(py2_pickle(_batch(rng, per_batch, 10, b"labels")))
    (folder / "test_batch").write_bytes(py2_pickle(_batch(rng, n_test, 10, b"labels")))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_cases_per_batch": per_batch,
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return folder


# a distinct solid colour per class, so a decoded JPEG still shows which class it belongs to
COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30)]


def _jpeg(path: Path, colour, size=(64, 64), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    (img.convert(mode) if mode != "RGB" else img).save(path, "JPEG", quality=95)


TINY_WNIDS = ["n03000000", "n01000000", "n02000000"]  # wnids.txt order; classes are sorted


def _colour(k: int) -> tuple[int, int, int]:
    return COLOURS[k] if k < len(COLOURS) else ((60 * k) % 256, (110 * k) % 256, (170 * k) % 256)


def make_tiny_imagenet(root: Path, per_class: int = 4, wnids: list[str] = TINY_WNIDS) -> Path:
    """``root/tiny-imagenet-200``: the wnids (default 3), ``per_class`` train images each, 2 val images per class
    (interleaved) listed in val/val_annotations.txt; one train image is greyscale, as some real ones are."""
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    words = [f"{w}\tname{w[-7]}, synonym" for w in wnids] + ["n09999999\tunused class"]
    (folder / "words.txt").write_text("\n".join(words) + "\n")
    for w in wnids:
        k = sorted(wnids).index(w)
        for i in range(per_class):
            grey = (k, i) == (1, 0)
            _jpeg(folder / "train" / w / "images" / f"{w}_{i}.JPEG", _colour(k), mode="L" if grey else "RGB")
        (folder / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t63\t63\n")
    lines = []
    for i in range(2 * len(wnids)):
        w = wnids[i % len(wnids)]
        _jpeg(folder / "val" / "images" / f"val_{i}.JPEG", _colour(sorted(wnids).index(w)))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _jpeg(folder / "test" / "images" / "test_0.JPEG", (0, 0, 0))
    return folder


def make_image_folder(root: Path, wnids=("n02000000", "n01000000"), train_per_class: int = 3,
                      val_per_class: int = 2, size=(50, 40)) -> Path:
    """An ImageNet-style tree ``root/{train,val}/<wnid>/*.JPEG`` with non-square images."""
    for part, n in (("train", train_per_class), ("val", val_per_class)):
        for w in wnids:
            k = sorted(wnids).index(w)
            for i in range(n):
                _jpeg(root / part / w / f"{w}_{i}.JPEG", _colour(k), size=size)
    return root


IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 0, 0, type 0x08, ndim, then each dimension as a big-endian uint32."""
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def make_idx(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = False, seed: int = 0,
             size: int = 28) -> dict:
    """The four MNIST-layout IDX files in ``folder`` (gzipped when ``gz``), labels cycling 0..9 so every
    class has n / 10 samples; returns the arrays written, {'train': (images, labels), 'test': ...}."""
    import gzip

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        for name, arr in zip(IDX_FILES[split], (images, labels)):
            data = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        written[split] = (images, labels)
    return written


def make_class_folders(root: Path, per_class: dict[str, int], size=(20, 12), fmt: str = "PNG") -> Path:
    """``root/<class>/img_<i>.png``: solid images whose colour encodes the class, of ``size`` (w, h)."""
    for k, (name, n) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size, _colour(k)).save(root / name / f"img_{i}.{fmt.lower()}", fmt)
    return root
