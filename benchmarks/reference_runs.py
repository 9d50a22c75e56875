"""kdlab beside the reference scripts: the same data, the same recipe, per-epoch curves and final accuracies.

The reference code is the user's own checkout (never shipped with kdlab): the CRD benchmark's RepDistiller
(``--repdistiller``: its ``train_teacher.py`` and ``train_student.py --distill kd``) and, optionally, SoTeacher's
release (``--soteacher``: its ``config_teacher.py`` + ``train_teacher.py`` with the Lipschitz and consistency
flags of its ``run_teacher.sh``).  Three comparisons, each over ``--seeds``:

* ``teacher``: a standard teacher, RepDistiller ``train_teacher.py`` vs ``kdlab train-teacher`` (method standard);
* ``kd``: a KD student (CE x 0.1 + KD x 0.9, T = 4: the CRD weights), RepDistiller ``train_student.py --distill kd
  -r 0.1 -a 0.9 -b 0`` vs ``kdlab distill`` (method kd, gamma 0.1, alpha 0.9, T 4).  With ``--kd-teacher
  reference`` (the default) both students of a seed distil from the same file, the reference teacher of that seed:
  RepDistiller loads its checkpoint, kdlab the same tensors under its own key names (``teacher: {model, weights}``;
  the conversion is checked by comparing both networks' logits); ``--kd-teacher own``: each side its own teacher;
* ``soteacher``: SoTeacher's ``train_teacher.py`` (``--lip --lip_alpha 1e-5 --consist --consist_alpha 1.0
  --consist_scheduler linear``, as its run_teacher.sh) vs ``kdlab train-teacher`` (method soteacher, its defaults:
  lambda_LR 1e-5, lambda_CR max 1, linear schedule).

Initial weights: with the shim's seeding (below) a teacher of seed s starts from the same weights on both sides
(each seeds torch with s, then builds the network, and both codes draw the same numbers for it); a KD student does
not (RepDistiller's script builds the teacher first, kdlab seeds right before the student).  Data order and the
crop/flip draws differ between the sides.

Recipe on both sides: SGD momentum 0.9, weight decay 5e-4, batch 64, lr 0.05 multiplied by 0.1 at each milestone
(RepDistiller's ``--lr_decay_epochs``: epoch e, counted from 1, trains at the decayed rate when e > milestone;
kdlab's ``schedule.milestones``: epoch index e - 1 >= milestone, the same epochs), random crop 32 with zero padding
4 + horizontal flip, CIFAR-100 normalisation, last-epoch test top-1.  Every flag left at its default is the paper's
CIFAR-100 value (240 epochs, milestones 150,180,210, resnet32x4 -> resnet8x4): that is the full recipe, for a GPU.

Data: any folder holding ``cifar-100-python`` (``--data``, e.g. the real CIFAR-100), or, by default,
Fashion-MNIST written in CIFAR-100's python format (``--fashion-mnist``, torchvision's raw IDX files, e.g.
Debian's dataset-fashion-mnist in /usr/share/datasets/fashion-mnist): 28x28 grey images padded with zeros to 32x32,
repeated to 3 channels, labels 0..9 as ``fine_labels`` (and ``coarse_labels``), 100 ``fine_label_names`` (the 10
classes, then ``unused_10`` ... ``unused_99``: both sides build 100-way models, as the CIFAR-100 scripts
hard-code), a class-balanced subset of ``--train-size`` training and ``--test-size`` test images.  The files are
protocol-2 pickles whose byte strings are Python 2 ``str`` records, as the original files are: read with
``encoding='bytes'`` (the CIFAR site's recipe, kdlab) the keys are bytes (b'data'), with ``encoding='latin1'``
(torchvision) they are str.

The reference scripts run unmodified, as subprocesses, each in a scratch folder of its own under ``--work`` (a
``data`` link there is the folder their ``get_data_folder()`` returns for an unknown host name; their
``./save/...`` outputs stay there).  What they cannot do here is done by a runtime shim, a folder put first on the
subprocess's ``PYTHONPATH`` (written by this script into ``WORK/shim``), and by flags of their own:

* ``sitecustomize.py`` (active only with ``REFRUN_SHIM=1``):
  - torchvision's ``CIFAR100`` checks the files' md5 sums against the original archive and, with the scripts'
    ``download=True``, tries to download it when they differ: the shim sets the expected sums to None, so
    torchvision checks that the files exist (it still reads them with its own reader);
  - the scripts seed nothing: the shim seeds Python, NumPy and torch with ``REFRUN_SEED`` (the seed; with
    ``--num_workers 0`` data order and augmentation then repeat too);
  - without CUDA, ``Tensor.cuda`` and ``Module.cuda`` return the object itself (SoTeacher's ``lip1Loss`` and
    ``ConsistencyRegularizer`` call ``.cuda()`` unconditionally; the training loops guard theirs);
  - ``torch.optim.SGD.step`` prints ``[refrun] lr <value>`` whenever the learning rate it steps with changes (a
    measurement: the schedule the reference actually ran, shown beside kdlab's);
* ``tensorboard_logger.py``: a stand-in whose ``Logger.log_value`` does nothing (the package is not installed);
* ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the student script: torch >= 2.6 loads with ``weights_only=True`` by
  default, and the teacher checkpoint holds NumPy scalars (after a decay, ``adjust_learning_rate`` sets the rate to
  a ``numpy.float64``, saved with the optimizer's state), which that loader refuses;
* flags: ``--num_workers 0`` (no data-loading processes on a small CPU; ``--ref-workers``), ``--save_freq EPOCHS``
  (the teacher file the student loads is ``ckpt_epoch_<E>.pth``, the last epoch's, as the CRD scripts'
  ``ckpt_epoch_240.pth``); SoTeacher's ``config_teacher.py`` writes ``tmp/config.tmp`` in the scratch folder and
  ``train_teacher.py --config_file`` reads it, as its run_teacher.sh does.

Their per-epoch lines are parsed (helper/loops.py: ``' * Acc@1 X Acc@5 Y'`` after each training pass and after
each validation, ``'epoch E, total time ...'`` between them; ``'teacher accuracy: ...'`` before a student's
first epoch); kdlab's from its run folder's ``metrics.jsonl`` (``epoch`` from 1, ``acc`` = training top-1 over the
epoch's batches, ``test_top1``, ``lr``).  Both training accuracies are the same measure: top-1 of the batches as
the model saw them (train mode, augmented, before each step), averaged over the epoch's samples.

Printed: per comparison and epoch, the learning rate each side trained with, train and test top-1 of both (mean
over seeds) and reference - kdlab with its Welch 95 % interval (the two sides are independent runs); then the
final test top-1 of both (mean +- std, n) with the same difference and interval; the wall time of each kind of
run.  Everything per seed goes to ``WORK/results.json``.  Runs whose folder holds a ``DONE`` file are reused, so
an interrupted command continues.

    python benchmarks/reference_runs.py --repdistiller ~/src/RepDistiller --soteacher ~/src/SoTeacher \\
        --work /tmp/refruns --model resnet20 --student resnet8 --epochs 8 --milestones 6 \\
        --train-size 3000 --test-size 2000 --seeds 0,1,2,3,4,5 --jobs 2

``--jobs N`` runs N trainings at once, each with ``--threads`` threads (default: CPU cores / N; OMP_NUM_THREADS
and torch's thread count).  ``--kdlab-src DIR`` runs kdlab from another source tree (e.g. ``git archive`` of a
commit) instead of the installed package.

``align`` drives RepDistiller's own loop functions (helper/loops.py ``train_vanilla`` / ``train_distill`` with
their ``AverageMeter`` accuracy, ``validate``, helper/util.py ``adjust_learning_rate``, imported from the checkout)
with kdlab's batches and initial weights for each seed, and prints their per-epoch accuracies beside the kdlab run's
``metrics.jsonl`` in WORK: with kdlab's network (``--model-code kdlab``) the two agree exactly, so any difference
between the sides comes from the draws (initial weights, order, crops) or the network code's rounding
(``--model-code reference``); ``--what kd --student-init kdlab|reference`` starts the student from either side's
initial draw, with the reference teacher checkpoint of the main run:

    python benchmarks/reference_runs.py align --repdistiller ~/src/RepDistiller --work /tmp/refruns \
        --what teacher --model resnet20 --milestones 6 --teacher-epochs 8 --seeds 0-3 --epochs 3
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import math
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NUM_CLASSES = 100  # the CIFAR-100 scripts build 100-way models whatever the labels
FASHION_NAMES = ["t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle_boot"]
COMPARISONS = ("teacher", "kd", "soteacher")

# ---------------------------------------------------------------------------------------------------------------
# Data: Fashion-MNIST in CIFAR-100's python format
# ---------------------------------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes: images (N, rows, cols) or labels (N,)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise ValueError(f"{path}: {data.size} values for shape {shape}")
    return data.reshape(shape)


def load_fashion_mnist(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) from torchvision's raw file names."""
    f = Path(folder)

    def one(stem: str) -> np.ndarray:
        for name in (stem + ".gz", stem):
            if (f / name).is_file():
                return read_idx(f / name)
        raise FileNotFoundError(f"{f / stem}(.gz) not found")

    return (one("train-images-idx3-ubyte"), one("train-labels-idx1-ubyte"), one("t10k-images-idx3-ubyte"),
            one("t10k-labels-idx1-ubyte"))


def to_cifar_rows(images: np.ndarray, size: int = 32) -> np.ndarray:
    """Grey (N, h, w) uint8 images -> (N, 3 * size * size) rows, channel-major: zero-padded to the centre of a
    size x size canvas, the grey plane repeated as R, G and B."""
    n, h, w = images.shape
    top, left = (size - h) // 2, (size - w) // 2
    canvas = np.zeros((n, size, size), dtype=np.uint8)
    canvas[:, top:top + h, left:left + w] = images
    return np.repeat(canvas[:, None], 3, axis=1).reshape(n, 3 * size * size)


def balanced_subset(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``size`` samples, as equal a number per class as ``size`` allows (the first
    ``size % classes`` classes one more), drawn without replacement; ``size`` 0 or >= len: all samples."""
    if size <= 0 or size >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    per, extra = divmod(size, len(classes))
    rng = np.random.default_rng(seed)
    chosen = []
    for i, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        k = per + (i < extra)
        if k > len(members):
            raise ValueError(f"class {c} has {len(members)} samples, {k} asked for")
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


class _Py2Pickler(pickle._Pickler):
    """Protocol 2, byte strings written as Python 2 ``str`` records (SHORT_BINSTRING / BINSTRING) and numpy's
    array reconstructor under its long-standing name ``numpy.core.multiarray``: the layout of the original
    CIFAR files, which ``encoding='bytes'`` reads with bytes keys and ``encoding='latin1'`` with str keys."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct" and "multiarray" in getattr(obj, "__module__", ""):
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dump_py2(obj, path: str | os.PathLike) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar100_folder(root: str | os.PathLike, train: tuple[np.ndarray, np.ndarray],
                          test: tuple[np.ndarray, np.ndarray], class_names: list[str]) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` from (rows (N, 3072) uint8, labels) pairs; ``class_names``
    (at most 100) are padded with ``unused_<i>`` to 100 fine label names."""
    if len(class_names) > NUM_CLASSES:
        raise ValueError(f"at most {NUM_CLASSES} classes")
    names = list(class_names) + [f"unused_{i}" for i in range(len(class_names), NUM_CLASSES)]
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, (rows, labels) in (("train", train), ("test", test)):
        rows = np.ascontiguousarray(rows, dtype=np.uint8)
        if rows.ndim != 2 or rows.shape[1] != 3072 or len(rows) != len(labels):
            raise ValueError(f"{split}: expected N x 3072 rows with one label each, got {rows.shape}")
        fine = [int(v) for v in labels]
        dump_py2({b"batch_label": f"{split}ing batch 1 of 1".encode(),
                  b"filenames": [f"{split}_{i:05d}.png".encode() for i in range(len(rows))],
                  b"fine_labels": fine, b"coarse_labels": list(fine), b"data": rows}, folder / split)
    dump_py2({b"fine_label_names": [n.encode() for n in names],
              b"coarse_label_names": [n.encode() for n in names[:20]]}, folder / "meta")
    return folder


def build_fashion_cifar(root: Path, source: Path, train_size: int, test_size: int, seed: int = 0) -> Path:
    """Fashion-MNIST in CIFAR-100 format under ``root`` (reused when it was built with the same settings)."""
    desc = {"source": str(source), "train_size": train_size, "test_size": test_size, "seed": seed}
    stamp = root / "fashion_mnist.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == desc:
        return root
    xtr, ytr, xte, yte = load_fashion_mnist(source)
    itr, ite = balanced_subset(ytr, train_size, seed), balanced_subset(yte, test_size, seed + 1)
    write_cifar100_folder(root, (to_cifar_rows(xtr[itr]), ytr[itr]), (to_cifar_rows(xte[ite]), yte[ite]),
                          FASHION_NAMES)
    stamp.write_text(json.dumps(desc))
    return root


# ---------------------------------------------------------------------------------------------------------------
# The runtime shim of the reference scripts
# ---------------------------------------------------------------------------------------------------------------

SITECUSTOMIZE = '''\
"""Runtime shim for reference scripts, written by kdlab's benchmarks/reference_runs.py (see its docstring)."""
import os

if os.environ.get("REFRUN_SHIM") == "1":
    import random

    import numpy as np
    import torch

    _seed = os.environ.get("REFRUN_SEED")
    if _seed is not None:  # the scripts seed nothing: each trial repeats
        random.seed(int(_seed))
        np.random.seed(int(_seed))
        torch.manual_seed(int(_seed))
    if not torch.cuda.is_available():  # helpers that call .cuda() unconditionally
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
        torch.nn.Module.cuda = lambda self, *args, **kwargs: self

    _step, _last = torch.optim.SGD.step, [None]

    def _step_printing_lr(self, *args, **kwargs):
        lr = self.param_groups[0]["lr"]
        if lr != _last[0]:
            _last[0] = lr
            print(f"[refrun] lr {float(lr)!r}", flush=True)
        return _step(self, *args, **kwargs)

    torch.optim.SGD.step = _step_printing_lr

    from torchvision.datasets import CIFAR100

    # files in CIFAR-100's format that are not the original bytes: check that they exist, not their md5 sums
    CIFAR100.train_list = [[name, None] for name, _ in CIFAR100.train_list]
    CIFAR100.test_list = [[name, None] for name, _ in CIFAR100.test_list]
    CIFAR100.meta = dict(CIFAR100.meta, md5=None)
'''

TENSORBOARD_LOGGER = '''\
"""Stand-in for the tensorboard_logger package (benchmarks/reference_runs.py): logs nothing."""


class Logger:
    def __init__(self, logdir=None, flush_secs=2, **kwargs):
        self.logdir = logdir

    def log_value(self, name, value, step=None):
        pass
'''


def write_shim(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (folder / "tensorboard_logger.py").write_text(TENSORBOARD_LOGGER)
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Parsing what the reference scripts print
# ---------------------------------------------------------------------------------------------------------------

_NUM = r"(?:tensor\()?\s*([-+0-9.eEnaif]+)\)?"
_STAR = re.compile(r"^\s*\*\s+Acc@1\s+" + _NUM + r"\s+Acc@5\s+" + _NUM)
_EPOCH_DONE = re.compile(r"^epoch\s+(\d+),\s+total\s+(?:training\s+)?time")
_EPOCH_LINE = re.compile(r"^Epoch:\s*\[(\d+)\]\[(\d+)/(\d+)\]")
_TEACHER = re.compile(r"^\s*teacher accuracy:\s*" + _NUM)
_LR = re.compile(r"^\[refrun\] lr\s+([-+0-9.eE]+)")


def parse_reference_log(text: str) -> dict:
    """Per-epoch records of a RepDistiller / SoTeacher training log.

    helper/loops.py prints, per epoch, ``==> training...``, progress lines ``Epoch: [E][i/N] ...``, the training
    summary `` * Acc@1 A Acc@5 B`` (top-1 of the epoch's batches, weighted by batch size), ``epoch E, total
    (training) time T``, then the validation's progress lines and summary `` * Acc@1 ...``.  A student log starts
    with the teacher's validation and ``teacher accuracy: X``.  Returns ``{"epochs": [{"epoch", "train_top1",
    "test_top1", "lr"}], "teacher_top1": X or None, "steps": N or None}``; ``lr`` is the last ``[refrun] lr``
    printed before the epoch's training summary (the shim's measurement), None without the shim.
    """
    epochs: list[dict] = []
    teacher = steps = lr = None
    state, cur = "before", None
    for line in text.splitlines():
        if line.strip() == "==> training...":
            cur, state = {"epoch": None, "train_top1": None, "test_top1": None, "lr": None}, "train"
            continue
        m = _LR.match(line)
        if m:
            lr = float(m.group(1))
            continue
        m = _TEACHER.match(line)
        if m:
            teacher = float(m.group(1))
            continue
        m = _EPOCH_LINE.match(line)
        if m and state == "train":
            cur["epoch"] = int(m.group(1))
            steps = int(m.group(3))
            continue
        m = _STAR.match(line)
        if m:
            if state == "train":
                cur["train_top1"], cur["lr"], state = float(m.group(1)), lr, "trained"
            elif state == "test":
                cur["test_top1"], state = float(m.group(1)), "between"
                epochs.append(cur)
            continue
        m = _EPOCH_DONE.match(line)
        if m and state == "trained":
            e = int(m.group(1))
            if cur["epoch"] is not None and cur["epoch"] != e:
                raise ValueError(f"epoch {cur['epoch']} trained, epoch {e} reported")
            cur["epoch"], state = e, "test"
    return {"epochs": epochs, "teacher_top1": teacher, "steps": steps}


def read_kdlab_metrics(run_dir: Path) -> dict:
    """kdlab's per-epoch records (``metrics.jsonl``) in the form :func:`parse_reference_log` returns."""
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    from kdlab.runs.folder import RunFolder

    file = RunFolder(run_dir).summary_file
    summary = json.loads(file.read_text()) if file.is_file() else {}
    return {"epochs": [{"epoch": r["epoch"], "train_top1": r["acc"], "test_top1": r.get("test_top1"),
                        "lr": r["lr"]} for r in recs],
            "teacher_top1": summary.get("teacher_top1"), "steps": None}


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------


def welch_interval(a, b, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean(a) - mean(b), lower, upper, degrees of freedom): Welch's interval for the difference of the means
    of two independent samples with unequal variances (Welch-Satterthwaite degrees of freedom)."""
    from scipy.stats import t as student_t

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    if se2 == 0:
        return diff, diff, diff, math.inf
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(student_t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    return diff, diff - half, diff + half, float(df)


def fmt_diff(a, b) -> str:
    d, lo, hi, _ = welch_interval(a, b)
    if math.isnan(lo):
        return f"{d:+.2f}"
    mark = "" if lo > 0 or hi < 0 else " n.s."
    return f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]{mark}"


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Task:
    name: str  # comparison/side-s<seed>
    comparison: str
    side: str  # reference | kdlab | convert
    seed: int
    folder: Path
    commands: list[list[str]]
    env: dict[str, str] = field(default_factory=dict)
    deps: list[str] = field(default_factory=list)
    status: str = "pending"  # pending | running | done | failed | skipped
    wall: float = 0.0

    @property
    def done_file(self) -> Path:
        return self.folder.parent / f"{self.folder.name}.done"

    @property
    def log_file(self) -> Path:
        return self.folder.parent / f"{self.folder.name}.log"

    @property
    def cwd(self) -> Path:
        # a reference script runs in its own scratch folder; kdlab makes its run folder itself
        return self.folder if self.side == "reference" else self.folder.parent


def _ref_common(a) -> list[str]:
    return ["--epochs", str(a.epochs), "--lr_decay_epochs", ",".join(map(str, a.milestones)),
            "--learning_rate", str(a.lr), "--batch_size", str(a.batch_size), "--num_workers", str(a.ref_workers)]


def _kdlab_config(a, seed: int, out_dir: Path, data_root: Path) -> dict:
    return {"seed": seed, "out_dir": str(out_dir), "data": {"name": "cifar100", "root": str(data_root)},
            "optim": {"name": "sgd", "lr": a.lr, "momentum": 0.9, "weight_decay": 5e-4},
            "schedule": {"name": "multistep", "milestones": list(a.milestones), "gamma": 0.1},
            "train": {"epochs": a.epochs, "batch_size": a.batch_size, "progress": "off", "tensorboard": False,
                      "device": a.device}}


def use_kdlab_src(src: str | None) -> None:
    """Import kdlab from the source tree ``src`` in this process (an editable install's finder would take
    precedence over ``sys.path``, so it is removed first)."""
    if src:
        sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
        sys.path.insert(0, str(Path(src).resolve()))


def _kdlab_command(a, sub: str, config: Path) -> list[str]:
    if a.kdlab_src:  # another source tree than the installed package
        launcher = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
                    f"import reference_runs; reference_runs.use_kdlab_src({a.kdlab_src!r}); "
                    "from kdlab.cli import entry; sys.argv[0] = 'kdlab'; entry()")
        return [sys.executable, "-c", launcher, sub, str(config), "--overwrite"]
    return [sys.executable, "-m", "kdlab", sub, str(config), "--overwrite"]


def _write_yaml(path: Path, cfg: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _ref_teacher_ckpt(folder: Path, model: str, seed: int, epochs: int) -> Path:
    # RepDistiller train_teacher.py: ./save/models/<model>_<dataset>_lr_<lr>_decay_<wd>_trial_<t>/ckpt_epoch_<E>.pth
    matches = sorted((folder / "save" / "models").glob(f"{model}_cifar100_*_trial_{seed}/ckpt_epoch_{epochs}.pth"))
    if not matches:
        raise FileNotFoundError(f"no ckpt_epoch_{epochs}.pth of trial {seed} under {folder / 'save' / 'models'}")
    return matches[0]


def plan(a, work: Path, data_root: Path, shim: Path) -> list[Task]:
    tasks: list[Task] = []
    ref_env = {"REFRUN_SHIM": "1", "PYTHONPATH": str(shim)}
    rep, sot = Path(a.repdistiller).resolve(), Path(a.soteacher).resolve() if a.soteacher else None
    for seed in a.seeds:
        def folder(comp, side, seed=seed):
            return work / "runs" / comp / f"{side}-s{seed}"

        if "teacher" in a.compare or "kd" in a.compare:
            f = folder("teacher", "reference")
            tasks.append(Task(f"teacher/reference-s{seed}", "teacher", "reference", seed, f,
                              [[sys.executable, str(rep / "train_teacher.py"), "--model", a.model, "--trial", str(seed),
                                "--save_freq", str(a.epochs), *_ref_common(a)]], {**ref_env, "REFRUN_SEED": str(seed)}))
        if "teacher" in a.compare or ("kd" in a.compare and a.kd_teacher == "own"):
            f = folder("teacher", "kdlab")
            cfg = _kdlab_config(a, seed, f, data_root) | {"model": a.model, "method": "standard"}
            tasks.append(Task(f"teacher/kdlab-s{seed}", "teacher", "kdlab", seed, f,
                              [_kdlab_command(a, "train-teacher", _write_yaml(f.parent / f"kdlab-s{seed}.yaml", cfg))]))
        if "soteacher" in a.compare and sot is not None:
            f = folder("soteacher", "reference")
            tasks.append(Task(f"soteacher/reference-s{seed}", "soteacher", "reference", seed, f, [
                [sys.executable, str(sot / "config_teacher.py"), "--model", a.model, "--lip", "--lip_alpha", "1e-5",
                 "--consist", "--consist_alpha", "1.0", "--consist_scheduler", "linear", "--trial", str(seed),
                 "--gpu", "0", *_ref_common(a)],
                [sys.executable, str(sot / "train_teacher.py"), "--config_file", "tmp/config.tmp"]],
                {**ref_env, "REFRUN_SEED": str(seed)}))
            f = folder("soteacher", "kdlab")
            cfg = _kdlab_config(a, seed, f, data_root) | {"model": a.model, "method": {"name": "soteacher"}}
            tasks.append(Task(f"soteacher/kdlab-s{seed}", "soteacher", "kdlab", seed, f,
                              [_kdlab_command(a, "train-teacher", _write_yaml(f.parent / f"kdlab-s{seed}.yaml", cfg))]))
        if "kd" in a.compare:
            f = folder("kd", "reference")
            path_t = "{REF_TEACHER}"  # filled in when the teacher has run (its folder name is the script's choice)
            tasks.append(Task(f"kd/reference-s{seed}", "kd", "reference", seed, f,
                              [[sys.executable, str(rep / "train_student.py"), "--path_t", path_t, "--distill", "kd",
                                "--model_s", a.student, "-r", "0.1", "-a", "0.9", "-b", "0", "--kd_T", "4",
                                "--trial", str(seed), "--save_freq", str(a.epochs), *_ref_common(a)]],
                              {**ref_env, "REFRUN_SEED": str(seed), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
                              deps=[f"teacher/reference-s{seed}"]))
            f = folder("kd", "kdlab")
            method = {"name": "kd", "T": 4.0, "gamma": 0.1, "alpha": 0.9}
            cfg = _kdlab_config(a, seed, f, data_root) | {"student": a.student, "method": method}
            if a.kd_teacher == "reference":
                weights = work / "runs" / "kd" / f"teacher-s{seed}.pt"
                cfg["teacher"] = {"model": a.model, "weights": str(weights)}
                conv = Task(f"kd/convert-s{seed}", "kd", "convert", seed, work / "runs" / "kd" / f"convert-s{seed}",
                            [[sys.executable, str(Path(__file__).resolve()), "convert-teacher", "{REF_TEACHER}",
                              str(weights), "--model", a.model, "--repdistiller", str(rep)]
                             + (["--kdlab-src", str(Path(a.kdlab_src).resolve())] if a.kdlab_src else [])],
                            deps=[f"teacher/reference-s{seed}"])
                tasks.append(conv)
                deps = [conv.name]
            else:
                cfg["teacher"] = {"path": str(folder("teacher", "kdlab"))}
                deps = [f"teacher/kdlab-s{seed}"]
            tasks.append(Task(f"kd/kdlab-s{seed}", "kd", "kdlab", seed, f,
                              [_kdlab_command(a, "distill", _write_yaml(f.parent / f"kdlab-s{seed}.yaml", cfg))],
                              deps=deps))
    return tasks


def _link_data(folder: Path, data_root: Path) -> None:
    link = folder / "data"  # get_data_folder() of RepDistiller / SoTeacher on an unknown host: ./data/
    if not link.exists():
        link.symlink_to(data_root.resolve(), target_is_directory=True)


def run_tasks(tasks: list[Task], a, data_root: Path, log=print) -> None:
    """Run the tasks, ``a.jobs`` at once, each after its dependencies; a finished one (DONE file) is reused."""
    by_name = {t.name: t for t in tasks}
    threads = str(a.threads)
    for t in tasks:
        if t.done_file.is_file():
            t.status, t.wall = "done", json.loads(t.done_file.read_text()).get("wall", 0.0)
    running: dict[str, tuple[subprocess.Popen, int, float, object]] = {}
    try:
        _loop(tasks, by_name, running, a, data_root, threads, log)
    finally:  # interrupted (Ctrl-C, SIGTERM): stop the trainings this process started
        for proc, *_ in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, *_ in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _loop(tasks, by_name, running, a, data_root, threads, log) -> None:
    while True:
        for t in tasks:
            if t.status == "pending" and any(by_name[d].status in ("failed", "skipped") for d in t.deps):
                t.status = "skipped"
                log(f"skip   {t.name} (a run it needs failed)")
        ready = [t for t in tasks if t.status == "pending" and all(by_name[d].status == "done" for d in t.deps)]
        while ready and len(running) < a.jobs:
            t = ready.pop(0)
            if t.side == "reference" and t.folder.exists():
                shutil.rmtree(t.folder)  # an interrupted reference run starts again in a clean folder
            t.cwd.mkdir(parents=True, exist_ok=True)
            if t.side == "reference":
                _link_data(t.folder, data_root)
                (t.folder / "tmp").mkdir(exist_ok=True)  # SoTeacher's config_teacher.py writes tmp/config.tmp
            t.status = "running"
            running[t.name] = _start(t, 0, threads, by_name)
            log(f"start  {t.name}")
        if not running:
            break
        time.sleep(0.5)
        for name, (proc, i, t0, fh) in list(running.items()):
            if proc.poll() is None:
                continue
            t = by_name[name]
            fh.close()
            del running[name]
            t.wall += time.time() - t0
            if proc.returncode != 0:
                t.status = "failed"
                tail = t.log_file.read_text(errors="replace").splitlines()[-15:]
                log(f"FAILED {name} (exit {proc.returncode}); the end of {t.log_file}:\n  "
                    + "\n  ".join(tail))
            elif i + 1 < len(t.commands):
                running[name] = _start(t, i + 1, threads, by_name)
            else:
                t.status = "done"
                t.done_file.write_text(json.dumps({"wall": t.wall}))
                log(f"done   {name} ({t.wall:.0f} s)")


def _start(t: Task, i: int, threads: str, by_name: dict[str, Task]):
    cmd = list(t.commands[i])
    if "{REF_TEACHER}" in cmd:
        teacher = by_name[f"teacher/reference-s{t.seed}"]
        ckpt = _ref_teacher_ckpt(teacher.folder, _model_of(teacher), t.seed, _epochs_of(teacher))
        cmd = [str(ckpt.resolve()) if c == "{REF_TEACHER}" else c for c in cmd]
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **t.env}
    if "PYTHONPATH" in t.env and os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = t.env["PYTHONPATH"] + os.pathsep + os.environ["PYTHONPATH"]
    fh = open(t.log_file, "a" if i else "w")  # noqa: SIM115 - closed when the process ends
    fh.write(f"$ {' '.join(cmd)}\n")
    fh.flush()
    proc = subprocess.Popen(cmd, cwd=t.cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, i, time.time(), fh


def _model_of(t: Task) -> str:
    cmd = t.commands[0]
    return cmd[cmd.index("--model") + 1]


def _epochs_of(t: Task) -> int:
    cmd = t.commands[0]
    return int(cmd[cmd.index("--epochs") + 1])


def convert_teacher(src: str, dst: str, model: str, repdistiller: str) -> float:
    """RepDistiller's checkpoint ``src`` -> a state dict of kdlab's ``model`` in ``dst``.

    The two codes register the same layers in the same order under other names, so the tensors are matched by
    position (each pair's shape checked); then both networks (the reference's class with its weights, kdlab's with
    the matched ones) predict one random batch in eval mode, and the largest logit difference is returned.
    """
    import torch

    from kdlab.models import build_model

    # the reference's checkpoint holds NumPy scalars (its learning rate after a decay is a numpy.float64), which
    # torch's weights-only loader refuses: this file was written by the reference run just made
    state = torch.load(src, map_location="cpu", weights_only=False)["model"]
    ours = build_model(model, {}, NUM_CLASSES, (3, 32, 32))
    own = ours.state_dict()
    if len(own) != len(state):
        raise SystemExit(f"{model}: kdlab has {len(own)} tensors, the reference checkpoint {len(state)}")
    mapped = {}
    for (k, v), (rk, rv) in zip(own.items(), state.items()):
        if v.shape != rv.shape:
            raise SystemExit(f"{model}: kdlab's {k} {tuple(v.shape)} against the reference's {rk} {tuple(rv.shape)}")
        mapped[k] = rv.clone()
    ours.load_state_dict(mapped)
    sys.path.insert(0, str(Path(repdistiller).resolve()))
    from models import model_dict  # the reference checkout's own model code, to check the conversion

    ref = model_dict[model](num_classes=NUM_CLASSES)
    ref.load_state_dict(state)
    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref.eval()
    ours.eval()
    with torch.no_grad():
        diff = float((ref(x) - ours(x)).abs().max())
    if not diff < 1e-4:
        raise SystemExit(f"{model}: converted teacher's logits differ by up to {diff:.3g}")
    torch.save(mapped, dst)
    print(f"converted {src} -> {dst}: {len(mapped)} tensors, largest logit difference {diff:.2e}")
    return diff


# ---------------------------------------------------------------------------------------------------------------
# Collecting and printing
# ---------------------------------------------------------------------------------------------------------------

TITLES = {"teacher": "standard teacher ({model}): RepDistiller train_teacher.py vs kdlab train-teacher",
          "kd": "KD student ({student} from {model}): RepDistiller train_student.py --distill kd vs kdlab distill kd",
          "soteacher": "SoTeacher teacher ({model}): SoTeacher train_teacher.py (lip + consist) vs kdlab soteacher"}


def collect(tasks: list[Task]) -> dict:
    out: dict = {}
    for t in tasks:
        if t.side == "convert" or t.status != "done":
            continue
        if t.side == "reference":
            rec = parse_reference_log(t.log_file.read_text(errors="replace"))
        else:
            rec = read_kdlab_metrics(t.folder)
        rec["wall"] = t.wall
        out.setdefault(t.comparison, {}).setdefault(t.side, {})[t.seed] = rec
    return out


def report(results: dict, a, log=print) -> None:
    for comp in COMPARISONS:
        sides = results.get(comp, {})
        ref, ours = sides.get("reference", {}), sides.get("kdlab", {})
        if not ref or not ours:
            continue
        log("")
        log("### " + TITLES[comp].format(model=a.model, student=a.student)
            + f" (reference n={len(ref)}, kdlab n={len(ours)})")
        log("")
        n_ep = min(min(len(r["epochs"]) for r in ref.values()), min(len(r["epochs"]) for r in ours.values()))
        log("| epoch | lr ref / kdlab | train ref | train kdlab | train ref - kdlab [95 %] | test ref | test kdlab "
            "| test ref - kdlab [95 %] |")
        log("|---|---|---|---|---|---|---|---|")
        for e in range(n_ep):
            def col(side, key, e=e):
                return [r["epochs"][e][key] for r in side.values()]

            lr_r = {x for x in col(ref, "lr") if x is not None}
            lr_k = set(col(ours, "lr"))
            lrs = f"{'/'.join(f'{x:g}' for x in sorted(lr_r)) or '?'} / {'/'.join(f'{x:g}' for x in sorted(lr_k))}"
            tr_r, tr_k, te_r, te_k = col(ref, "train_top1"), col(ours, "train_top1"), col(ref, "test_top1"), \
                col(ours, "test_top1")
            log(f"| {e + 1} | {lrs} | {np.mean(tr_r):.2f} | {np.mean(tr_k):.2f} | {fmt_diff(tr_r, tr_k)} "
                f"| {np.mean(te_r):.2f} | {np.mean(te_k):.2f} | {fmt_diff(te_r, te_k)} |")
        fin_r = [r["epochs"][-1]["test_top1"] for r in ref.values()]
        fin_k = [r["epochs"][-1]["test_top1"] for r in ours.values()]
        log("")
        log(f"final test top-1: reference {np.mean(fin_r):.2f} +- {np.std(fin_r, ddof=1) if len(fin_r) > 1 else 0:.2f}"
            f" (n={len(fin_r)}), kdlab {np.mean(fin_k):.2f} +- {np.std(fin_k, ddof=1) if len(fin_k) > 1 else 0:.2f}"
            f" (n={len(fin_k)}); reference - kdlab {fmt_diff(fin_r, fin_k)} (Welch 95 %)")
        if comp == "kd":
            tr = [r["teacher_top1"] for r in ref.values() if r["teacher_top1"] is not None]
            tk = [r["teacher_top1"] for r in ours.values() if r["teacher_top1"] is not None]
            if tr and tk:
                log(f"teacher test top-1 as each side evaluated it: reference {np.mean(tr):.2f}, kdlab "
                    f"{np.mean(tk):.2f} (largest per-seed difference {max(abs(x - y) for x, y in zip(tr, tk)):.3f})")
        w_r, w_k = [r["wall"] for r in ref.values()], [r["wall"] for r in ours.values()]
        log(f"wall time per run: reference {np.mean(w_r):.0f} s, kdlab {np.mean(w_k):.0f} s (mean)")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _seeds(text: str) -> list[int]:
    if "," not in text and "-" not in text:
        return list(range(int(text)))  # a count
    if "-" in text and "," not in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return _ints(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repdistiller", required=True, help="a checkout of RepDistiller (the CRD benchmark code)")
    p.add_argument("--soteacher", help="a checkout of SoTeacher's release (the soteacher comparison needs it)")
    p.add_argument("--work", default="runs/reference", help="scratch folder: data, shim, run folders, results")
    p.add_argument("--data", help="a folder holding cifar-100-python (default: Fashion-MNIST written into WORK/data)")
    p.add_argument("--fashion-mnist", default="/usr/share/datasets/fashion-mnist",
                   help="folder of Fashion-MNIST's IDX files (train-images-idx3-ubyte.gz, ...)")
    p.add_argument("--train-size", type=int, default=0, help="class-balanced training subset (0: all 60,000)")
    p.add_argument("--test-size", type=int, default=0, help="class-balanced test subset (0: all 10,000)")
    p.add_argument("--model", default="resnet32x4", help="teacher architecture (a name both codes know)")
    p.add_argument("--student", default="resnet8x4", help="KD student architecture")
    p.add_argument("--epochs", type=int, default=240)
    p.add_argument("--milestones", type=_ints, default=[150, 180, 210], help="lr x 0.1 after these epochs")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seeds", type=_seeds, default=list(range(5)), help="a count (5), a range (0-4) or a list")
    p.add_argument("--compare", default=",".join(COMPARISONS), help="any of teacher,kd,soteacher")
    p.add_argument("--kd-teacher", choices=["reference", "own"], default="reference",
                   help="reference: both KD students distil from the reference teacher of their seed; own: each "
                        "side from its own teacher")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once")
    p.add_argument("--threads", type=int, default=0, help="threads per training (default: CPU cores / jobs)")
    p.add_argument("--ref-workers", type=int, default=0, help="the reference scripts' --num_workers")
    p.add_argument("--device", default="auto", help="kdlab's train.device")
    p.add_argument("--kdlab-src", help="run kdlab from this source tree instead of the installed package")
    a = p.parse_args(argv)
    a.compare = [c for c in a.compare.split(",") if c]
    bad = [c for c in a.compare if c not in COMPARISONS]
    if bad:
        p.error(f"--compare: unknown {bad}; choose from {','.join(COMPARISONS)}")
    if "soteacher" in a.compare and not a.soteacher:
        a.compare.remove("soteacher")
    if a.threads <= 0:
        a.threads = max(1, (os.cpu_count() or 1) // a.jobs)
    return a


# ---------------------------------------------------------------------------------------------------------------
# Alignment: the reference's own loop functions driven by kdlab's initial weights and batches
# ---------------------------------------------------------------------------------------------------------------


def align(a) -> list[dict]:
    """Train with RepDistiller's own ``helper/loops.py`` (``train_vanilla`` / ``train_distill``, their
    ``AverageMeter`` training accuracy, ``validate``) and ``helper/util.py`` (``adjust_learning_rate``), imported
    from the checkout, fed with kdlab's batches for the seed (kdlab's ``ArrayLoader``: kdlab's order and crop/flip
    draws, epoch by epoch) and, by default, kdlab's initial weights (the seed set right before the model is built,
    as kdlab does).  Differences to kdlab's ``metrics.jsonl`` then come from the loop and the measurement alone.

    ``--model-code kdlab`` trains kdlab's network class, ``reference`` the checkout's (the same initial weights,
    other floating-point rounding); for ``kd`` the student starts from kdlab's draw (``--student-init kdlab``:
    teacher built, seed set, student built) or from the reference student script's (``reference``: seed set,
    teacher built, student built).  The KD teacher is the reference teacher checkpoint of ``--teacher-seed``
    (default: the seed) under ``WORK/runs/teacher``.
    """
    import torch
    import torch.nn as nn

    use_kdlab_src(a.kdlab_src)
    from kdlab.core.device import seed_everything
    from kdlab.data.cifar import cifar100
    from kdlab.models import build_model

    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(Path(a.repdistiller).resolve()))
    from distiller_zoo import DistillKL
    from helper.loops import train_distill, train_vanilla, validate
    from helper.util import adjust_learning_rate
    from models import model_dict

    work = Path(a.work).resolve()
    data = cifar100(root=str(Path(a.data).resolve() if a.data else work / "data"))
    test = [(b.x, b.y) for b in data.eval_loader("test", 512, "cpu").epoch(0)]
    opt = argparse.Namespace(print_freq=10 ** 9, learning_rate=a.lr, lr_decay_epochs=list(a.milestones),
                             lr_decay_rate=0.1, gamma=0.1, alpha=0.9, beta=0.0, distill="kd")

    def net(name):
        if a.model_code == "kdlab":
            return build_model(name, {}, NUM_CLASSES, (3, 32, 32))
        return model_dict[name](num_classes=NUM_CLASSES)

    rows = []
    for seed in a.seeds:
        loader = data.train_loader(a.batch_size, torch.device("cpu"), seed, False)
        if a.what == "teacher":
            seed_everything(seed)
            model, teacher = net(a.model), None
        else:
            if a.student_init == "kdlab":  # kdlab: the teacher is loaded, then the seed is set, then the student
                teacher = model_dict[a.model](num_classes=NUM_CLASSES)
                seed_everything(seed)
                model = net(a.student)
            else:  # RepDistiller train_student.py (seeded by the shim): teacher built, then student
                seed_everything(seed)
                teacher = model_dict[a.model](num_classes=NUM_CLASSES)
                model = net(a.student)
            tseed = seed if a.teacher_seed is None else a.teacher_seed
            folder = work / "runs" / "teacher" / f"reference-s{tseed}"
            ckpt = _ref_teacher_ckpt(folder, a.model, tseed, a.teacher_epochs)
            teacher.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
        optimizer = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
        ce = nn.CrossEntropyLoss()
        ours = work / "runs" / ("teacher" if a.what == "teacher" else "kd") / f"kdlab-s{seed}" / "metrics.jsonl"
        kd_recs = [json.loads(x) for x in ours.read_text().splitlines()] if ours.is_file() else []
        for epoch in range(1, a.epochs + 1):
            adjust_learning_rate(epoch, opt, optimizer)
            batches = [(b.x, b.y, b.index) for b in loader.epoch(epoch - 1)]
            with contextlib.redirect_stdout(io.StringIO()):  # their progress lines
                if a.what == "teacher":
                    acc, _ = train_vanilla(epoch, [(x, y) for x, y, _ in batches], model, ce, optimizer, opt)
                else:
                    acc, _ = train_distill(epoch, batches, nn.ModuleList([model, teacher]),
                                           nn.ModuleList([ce, DistillKL(4), DistillKL(4)]), optimizer, opt)
                test_acc, _, _ = validate(test, model, ce, opt)
            row = {"seed": seed, "epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"]),
                   "train_top1": float(acc), "test_top1": float(test_acc)}
            k = kd_recs[epoch - 1] if len(kd_recs) >= epoch else None
            extra = f" | kdlab's metrics.jsonl: train {k['acc']:.3f} test {k['test_top1']:.3f}" if k else ""
            print(f"seed {seed} epoch {epoch} lr {row['lr']:g}: reference loop train {row['train_top1']:.3f} "
                  f"test {row['test_top1']:.3f}{extra}", flush=True)
            rows.append(row)
    return rows


def align_main(argv) -> int:
    p = argparse.ArgumentParser(prog="reference_runs.py align", description=align.__doc__.split("\n\n")[0])
    p.add_argument("--repdistiller", required=True)
    p.add_argument("--work", default="runs/reference")
    p.add_argument("--data")
    p.add_argument("--what", choices=["teacher", "kd"], default="teacher")
    p.add_argument("--model", default="resnet32x4")
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--seeds", type=_seeds, default=[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--milestones", type=_ints, default=[150, 180, 210])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model-code", choices=["kdlab", "reference"],
                   help="whose network class is trained (default: kdlab's for teacher, the checkout's for kd)")
    p.add_argument("--student-init", choices=["kdlab", "reference"], default="kdlab")
    p.add_argument("--teacher-seed", type=int)
    p.add_argument("--teacher-epochs", type=int, default=240, help="the teacher runs' --epochs (its file name)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--kdlab-src")
    a = p.parse_args(argv)
    if a.model_code is None:
        a.model_code = "kdlab" if a.what == "teacher" else "reference"
    if a.what == "kd" and a.model_code == "kdlab":
        p.error("--what kd trains the checkout's student class (train_distill asks it for features): "
                "use --model-code reference")
    align(a)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through run_tasks' clean-up
    if argv[:1] == ["align"]:
        return align_main(argv[1:])
    if argv[:1] == ["convert-teacher"]:
        q = argparse.ArgumentParser(prog="reference_runs.py convert-teacher")
        q.add_argument("src")
        q.add_argument("dst")
        q.add_argument("--model", required=True)
        q.add_argument("--repdistiller", required=True)
        q.add_argument("--kdlab-src")
        c = q.parse_args(argv[1:])
        use_kdlab_src(c.kdlab_src)
        convert_teacher(c.src, c.dst, c.model, c.repdistiller)
        return 0
    a = parse_args(argv)
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if a.data:
        data_root = Path(a.data).resolve()
    else:
        data_root = build_fashion_cifar(work / "data", Path(a.fashion_mnist), a.train_size, a.test_size)
    shim = write_shim(work / "shim")
    print(f"data: {data_root}; reference: {a.repdistiller}" + (f", {a.soteacher}" if a.soteacher else "")
          + f"; {a.jobs} job(s) x {a.threads} thread(s)", flush=True)
    tasks = plan(a, work, data_root, shim)
    run_tasks(tasks, a, data_root, log=lambda s: print(s, flush=True))
    results = collect(tasks)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    report(results, a)
    print(f"\ntotal wall time {time.time() - t0:.0f} s; per-seed records in {work / 'results.json'}")
    return 0 if all(t.status == "done" for t in tasks) else 1


if __name__ == "__main__":
    sys.exit(main())
