"""benchmarks/reference_runs.py: the parts a side-by-side with the reference scripts rests on.

The CIFAR-100-format writer (the bytes on disk, read back by kdlab's loader, by a plain pickle load and by
torchvision's CIFAR100 under the benchmark's shim), the parser of the reference scripts' printed epochs, Welch's
interval against scipy, and kdlab's side of a run on such data end to end.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdlab.runs.folder import RunFolder

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("reference_runs", ROOT / "benchmarks" / "reference_runs.py")
rr = importlib.util.module_from_spec(_spec)
sys.modules["reference_runs"] = rr  # dataclasses look their module up there
_spec.loader.exec_module(rr)


def _tiny_folder(root: Path, n_train: int = 40, n_test: int = 20, classes: int = 10) -> tuple:
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (n_train, 3072), dtype=np.uint8), np.arange(n_train) % classes)
    test = (rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), (np.arange(n_test) * 3) % classes)
    folder = rr.write_cifar100_folder(root, train, test, [f"class{i}" for i in range(classes)])
    return folder, train, test


# -- the CIFAR-100 python format ------------------------------------------------------------------------------


def test_writer_layout_matches_the_cifar100_python_files(tmp_path):
    folder, train, test = _tiny_folder(tmp_path)
    assert folder == tmp_path / "cifar-100-python"
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    for split, (rows, labels) in (("train", train), ("test", test)):
        with open(folder / split, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # the CIFAR site's recipe: byte keys
        assert set(d) == {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"}
        assert isinstance(d[b"data"], np.ndarray) and d[b"data"].dtype == np.uint8
        assert d[b"data"].shape == (len(rows), 3072) and np.array_equal(d[b"data"], rows)
        assert d[b"fine_labels"] == [int(v) for v in labels] and all(type(v) is int for v in d[b"fine_labels"])
        assert d[b"coarse_labels"] == d[b"fine_labels"]
        assert len(d[b"filenames"]) == len(rows) and all(isinstance(n, bytes) for n in d[b"filenames"])
        with open(folder / split, "rb") as f:
            d = pickle.load(f, encoding="latin1")  # torchvision's: str keys, the same array
        assert set(d) == {"data", "fine_labels", "coarse_labels", "filenames", "batch_label"}
        assert np.array_equal(d["data"], rows)
    with open(folder / "meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    names = meta[b"fine_label_names"]
    assert len(names) == 100 and names[:2] == [b"class0", b"class1"] and names[10] == b"unused_10"
    assert len(meta[b"coarse_label_names"]) == 20


def test_writer_emits_python2_strings_and_numpy_core_names(tmp_path):
    """Protocol 2 with SHORT_BINSTRING / BINSTRING records, no Python 3 bytes records, numpy.core's name for the
    array reconstructor: what the original files (pickled by Python 2) hold."""
    folder, _, _ = _tiny_folder(tmp_path)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops((folder / "train").read_bytes())]
    names = {n for n, _ in ops}
    assert ops[0] == ("PROTO", 2)
    assert {"SHORT_BINSTRING", "BINSTRING"} <= names  # the keys; the 40 x 3072 data bytes
    assert not names & {"SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BINUNICODE8", "FRAME"}
    globals_ = [arg for n, arg in ops if n == "GLOBAL"]
    assert "numpy.core.multiarray _reconstruct" in globals_ and "numpy ndarray" in globals_
    assert not any("_core" in g for g in globals_)


def test_kdlab_cifar100_loader_reads_the_folder(tmp_path):
    from kdlab.data.cifar import cifar100

    _, train, test = _tiny_folder(tmp_path)
    b = cifar100(root=str(tmp_path))
    assert b.num_classes == 100 and b.class_names[:3] == ["class0", "class1", "class2"]
    assert b.train.x.dtype.is_floating_point is False and tuple(b.train.x.shape) == (40, 3, 32, 32)
    assert np.array_equal(b.train.x.numpy().reshape(40, 3072), train[0])
    assert np.array_equal(b.test.x.numpy().reshape(20, 3072), test[0])
    assert np.array_equal(b.train.y.numpy(), train[1]) and np.array_equal(b.test.y.numpy(), test[1])


def test_torchvision_reads_the_folder_under_the_shim(tmp_path):
    """The reference scripts' reader: torchvision's CIFAR100 with download=True, in a process with the shim first
    on PYTHONPATH (md5 checks off, .cuda() a no-op without CUDA, a tensorboard_logger stand-in, lr printed)."""
    _, train, _ = _tiny_folder(tmp_path)
    shim = rr.write_shim(tmp_path / "shim")
    code = ("import torch\nprint('RNG', torch.rand(1).item())\n"  # the shim seeded torch at start-up
            "from torchvision.datasets import CIFAR100\n"
            f"d = CIFAR100({str(tmp_path)!r}, train=True, download=True)\n"
            "import numpy as np, torch, tensorboard_logger\n"
            "tensorboard_logger.Logger(logdir='x', flush_secs=2).log_value('a', 1.0, 1)\n"
            "t = torch.zeros(2).cuda(); m = torch.nn.Linear(2, 2).cuda()\n"
            "opt = torch.optim.SGD(m.parameters(), lr=0.05)\n"
            "m(t).sum().backward(); opt.step(); opt.step()\n"
            "opt.param_groups[0]['lr'] = np.float64(0.05) * 0.1; opt.step()\n"
            "print('N', len(d), len(d.classes), d.classes[0], d.targets[:3], d.data.shape, d.data[1, 0, 0].tolist())\n")
    env = {**os.environ, "PYTHONPATH": str(shim), "REFRUN_SHIM": "1", "REFRUN_SEED": "3", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[1:3] == ["[refrun] lr 0.05", "[refrun] lr 0.005000000000000001"]  # printed when it changes
    n = next(line for line in lines if line.startswith("N ")).split(" ", 1)[1]
    first = train[0][1].reshape(3, 32, 32)[:, 0, 0].tolist()  # torchvision holds HWC
    assert n == f"40 100 class0 [0, 1, 2] (40, 32, 32, 3) {first}"
    import torch

    torch.manual_seed(3)
    assert float(next(x for x in lines if x.startswith("RNG")).split()[1]) == pytest.approx(torch.rand(1).item())
    without = subprocess.run([sys.executable, "-c", "import torchvision.datasets as d\n"
                              f"d.CIFAR100({str(tmp_path)!r}, train=True)"],
                             env={**env, "REFRUN_SHIM": "0"}, capture_output=True, text=True, timeout=120)
    assert without.returncode != 0 and "corrupted" in without.stderr  # the md5 check the shim lifts


def test_fashion_mnist_rows_subset_and_idx(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28).astype(np.uint8)
    rows = rr.to_cifar_rows(images)
    assert rows.shape == (2, 3072) and rows.dtype == np.uint8
    img = rows.reshape(2, 3, 32, 32)
    assert np.array_equal(img[:, 0], img[:, 1]) and np.array_equal(img[:, 0], img[:, 2])
    assert np.array_equal(img[:, 0, 2:30, 2:30], images)
    assert img[:, :, :2].max() == 0 and img[:, :, 30:].max() == 0 and img[:, :, :, :2].max() == 0
    labels = np.repeat(np.arange(10), 50)
    idx = rr.balanced_subset(labels, 103, seed=1)
    assert len(idx) == 103 and len(set(idx.tolist())) == 103 and np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [11, 11, 11] + [10] * 7
    assert np.array_equal(rr.balanced_subset(labels, 0), np.arange(500))
    with pytest.raises(ValueError, match="class 0 has 5 samples, 10 asked for"):
        rr.balanced_subset(np.array([0] * 5 + [1] * 100), 20)
    path = tmp_path / "x-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBBIII", 0, 8, 3, 2, 28, 28) + images.tobytes())
    assert np.array_equal(rr.read_idx(path), images)
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 3) + bytes([1, 2]))
    with pytest.raises(ValueError):
        rr.read_idx(path)


def test_build_fashion_cifar_from_idx_files(tmp_path):
    src = tmp_path / "fm"
    src.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train", 60), ("t10k", 30)):
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10
        with gzip.open(src / f"{stem}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBBIII", 0, 8, 3, n, 28, 28) + x.tobytes())
        with gzip.open(src / f"{stem}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">HBBI", 0, 8, 1, n) + y.astype(np.uint8).tobytes())
    root = rr.build_fashion_cifar(tmp_path / "data", src, 20, 10)
    from kdlab.data.cifar import cifar100

    b = cifar100(root=str(root))
    assert len(b.train) == 20 and len(b.test) == 10
    assert np.bincount(b.train.y.numpy()).tolist() == [2] * 10 and b.class_names[9] == "ankle_boot"


# -- the reference scripts' printed epochs --------------------------------------------------------------------

REPDISTILLER_STUDENT = """\
==> loading teacher model
==> done
Test: [0/63]\tTime 0.061 (0.061)\tLoss 0.4497 (0.4497)\tAcc@1 87.500 (87.500)\tAcc@5 100.000 (100.000)
 * Acc@1 86.150 Acc@5 99.650
teacher accuracy:  tensor(86.1500)
==> training...
[refrun] lr 0.05
Epoch: [1][0/47]\tTime 0.345 (0.345)\tData 0.023 (0.023)\tLoss 4.1950 (4.1950)\tAcc@1 0.000 (0.000)\tAcc@5 4.688 (4.688)
 * Acc@1 61.433 Acc@5 90.333
epoch 1, total time 20.19
Test: [0/63]\tTime 0.024 (0.024)\tLoss 0.7126 (0.7126)\tAcc@1 75.000 (75.000)\tAcc@5 100.000 (100.000)
 * Acc@1 70.250 Acc@5 97.550
saving the best model!
==> training...
[refrun] lr 0.005000000000000001
Epoch: [2][0/47]\tTime 0.24 (0.24)\tData 0.021 (0.02)\tLoss 0.499 (0.499)\tAcc@1 79.375 (79.375)\tAcc@5 98.125 (98.125)
 * Acc@1 78.900 Acc@5 99.333
epoch 2, total time 19.96
Test: [0/63]\tTime 0.024 (0.024)\tLoss 0.4554 (0.4554)\tAcc@1 84.375 (84.375)\tAcc@5 100.000 (100.000)
 * Acc@1 81.500 Acc@5 99.700
saving the best model!
==> Saving...
best accuracy: tensor(81.5000)
"""

SOTEACHER_TEACHER = """\
Config file:  tmp/config.tmp

-------- Lipschitz regularization!
-------- Consistency regularization!
==> training...
[refrun] lr 0.05
Epoch: [1][0/5]\tTime 0.243 (0.243)\tData 0.024 (0.024)\tLoss 4.7898 (4.7898)\tAcc@1 0.000 (0.000)\tAcc@5 0.000 (0.000)
 * Acc@1 5.333 Acc@5 16.000
crl weight: 1.000
epoch 1, total training time 0.87
Test: [0/7]\tTime 0.027 (0.027)\tLoss 4.0243 (4.0243)\tAcc@1 12.500 (12.500)\tAcc@5 46.875 (46.875)
 * Acc@1 13.000 Acc@5 45.500 Loss 4.0508
epoch 1, total test time 0.16
Best acc 13.000 at epoch 1
Best loss 4.051 at epoch 1
==> training...
Epoch: [2][0/5]\tTime 0.201 (0.201)\tData 0.020 (0.02)\tLoss 3.71 (3.71)\tAcc@1 9.375 (9.375)\tAcc@5 59.375 (59.375)
 * Acc@1 16.000 Acc@5 58.000
crl weight: 1.500
epoch 2, total training time 0.89
Test: [0/7]\tTime 0.023 (0.023)\tLoss 3.8035 (3.8035)\tAcc@1 15.625 (15.625)\tAcc@5 50.000 (50.000)
 * Acc@1 16.000 Acc@5 48.000 Loss 3.8439
epoch 2, total test time 0.14
Best accuracy: 16.000
Final accuracy: 16.000
"""


def test_parser_repdistiller_student_log():
    rec = rr.parse_reference_log(REPDISTILLER_STUDENT)
    assert rec["teacher_top1"] == pytest.approx(86.15)  # the pre-training validation is not an epoch
    assert rec["steps"] == 47
    assert rec["epochs"] == [
        {"epoch": 1, "train_top1": 61.433, "test_top1": 70.25, "lr": 0.05},
        {"epoch": 2, "train_top1": 78.9, "test_top1": 81.5, "lr": 0.005000000000000001},
    ]


def test_parser_soteacher_teacher_log():
    rec = rr.parse_reference_log(SOTEACHER_TEACHER)
    assert rec["teacher_top1"] is None
    # "epoch E, total test time" is not the end of training; the lr carries over an epoch that did not change it
    assert [(e["epoch"], e["train_top1"], e["test_top1"], e["lr"]) for e in rec["epochs"]] == [
        (1, 5.333, 13.0, 0.05), (2, 16.0, 16.0, 0.05)]


def test_parser_incomplete_and_inconsistent_logs():
    cut = SOTEACHER_TEACHER[:SOTEACHER_TEACHER.index("Test: [0/7]\tTime 0.023")]
    assert [e["epoch"] for e in rr.parse_reference_log(cut)["epochs"]] == [1]  # epoch 2 was never tested
    with pytest.raises(ValueError, match="epoch 2 trained, epoch 3 reported"):
        rr.parse_reference_log(SOTEACHER_TEACHER.replace("epoch 2, total training", "epoch 3, total training"))


def test_read_kdlab_metrics(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "lr": 0.05, "loss": 1.0, "acc": 50.0, "test_top1": 60.0}) + "\n"
        + json.dumps({"epoch": 2, "lr": 0.005, "loss": 0.5, "acc": 70.0, "test_top1": 75.0}) + "\n")
    RunFolder(tmp_path).summary_file.write_text(json.dumps({"top1": 75.0, "teacher_top1": 80.0}))
    rec = rr.read_kdlab_metrics(tmp_path)
    assert rec["teacher_top1"] == 80.0
    assert rec["epochs"] == [{"epoch": 1, "train_top1": 50.0, "test_top1": 60.0, "lr": 0.05},
                             {"epoch": 2, "train_top1": 70.0, "test_top1": 75.0, "lr": 0.005}]


# -- Welch's interval -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(6, 6), (4, 8), (2, 3), (5, 30)])
def test_welch_interval_matches_scipy(sizes):
    from scipy import stats

    rng = np.random.default_rng(sum(sizes))
    a, b = rng.normal(70, 0.5, sizes[0]), rng.normal(69, 2.0, sizes[1])
    d, lo, hi, df = rr.welch_interval(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert d == pytest.approx(a.mean() - b.mean())
    assert (lo, hi) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    assert df == pytest.approx(res.df, rel=1e-10)
    _, lo90, hi90, _ = rr.welch_interval(a, b, 0.90)
    ci90 = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.90)
    assert (lo90, hi90) == (pytest.approx(ci90.low, rel=1e-10), pytest.approx(ci90.high, rel=1e-10))


def test_welch_edge_cases_and_format():
    d, lo, hi, _ = rr.welch_interval([1.0], [2.0, 3.0])
    assert d == -1.5 and np.isnan(lo) and np.isnan(hi)
    assert rr.welch_interval([1.0, 1.0], [0.0, 0.0])[:3] == (1.0, 1.0, 1.0)
    assert rr.fmt_diff([70.0, 70.2, 69.9], [70.1, 69.8, 70.0]).endswith("n.s.")
    assert not rr.fmt_diff([75.0, 75.2, 74.9], [70.1, 69.8, 70.0]).endswith("n.s.")


# -- kdlab's side, end to end ---------------------------------------------------------------------------------


def test_kdlab_side_end_to_end(tmp_path):
    """kdlab trains on a folder the writer made, with the config the benchmark writes, and the records the
    benchmark reads are the epochs it trained (epoch counted from 1, the lr of each epoch, top-1 in percent)."""
    import kdlab

    _tiny_folder(tmp_path / "data", n_train=48, n_test=24)
    a = rr.parse_args(["--repdistiller", str(tmp_path), "--epochs", "2", "--milestones", "1", "--device", "cpu",
                       "--batch-size", "16", "--model", "resnet8"])
    cfg = rr._kdlab_config(a, 0, tmp_path / "run", tmp_path / "data") | {"model": "resnet8", "method": "standard"}
    kdlab.train_teacher(cfg)
    rec = rr.read_kdlab_metrics(tmp_path / "run")
    assert [e["epoch"] for e in rec["epochs"]] == [1, 2]
    assert [e["lr"] for e in rec["epochs"]] == [pytest.approx(0.05), pytest.approx(0.005)]
    for e in rec["epochs"]:
        assert 0 <= e["train_top1"] <= 100 and 0 <= e["test_top1"] <= 100
        assert (e["test_top1"] * 24 / 100) == pytest.approx(round(e["test_top1"] * 24 / 100), abs=1e-3)
