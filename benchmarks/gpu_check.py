"""One command that checks kdlab's GPU-only paths on one CUDA GPU, in under ten minutes.

    python benchmarks/gpu_check.py [--quick] [--out DIR]

On CIFAR-shaped data generated into a temporary folder (the ``arrays`` data set: 3x32x32 float images, 100
classes, 3072 training and 1024 test samples) it trains, for 2 epochs each (batch 128, cuDNN autotuning on):

* teachers (resnet8x4): ``standard``, ``soteacher``, ``sftn`` (student branches of resnet8);
* students (resnet8, from the fp32 standard teacher): ``kd``, ``crd``, ``dkd``, ``fitnet``;

each in fp32, bf16 and fp16 (autocast; fp16 with the gradient scaler), each of those also with channels-last;
``torch.compile`` for soteacher, sftn, crd, dkd and fitnet in fp32 and for standard and kd in bf16 and fp16 with
channels-last (every method and every precision compiled at least once); and it checks that an interrupted fp32
run (``train.deterministic=true``; a teacher and a CRD student, stopped in the middle of epoch 2 of 3, then
resumed) ends with weights (and CRD memory) bit-identical to an uninterrupted one's.  53 cases.  A case is
``ok`` when its run finishes with finite weights and a finite test accuracy.  It prints one row per case:
status (``ok`` / ``FAILED: one-line reason`` / ``skipped: reason``), images/s of the last training epoch (from
the run's ``metrics.jsonl`` ``train_time``; the first epoch includes compilation and cuDNN autotuning) and the
case's wall-clock seconds.  Exit code 1 if a case failed, else 0; without CUDA it prints one line and exits 0.
``--out DIR`` keeps the data, the run folders and the table (``DIR/gpu_check.md``); ``--quick`` runs 11 cases
(standard and kd in the three precisions and in bf16 with channels-last, both compiled in fp32, the teacher
resume check) in 2-3 minutes.

How long it takes, and why this subset (estimated for a mid-range GPU, e.g. an RTX 3060 / A4000 / T4 class
card, on a host with about 8 CPU cores; not measured on a GPU):

* an eager run is cheap: resnet8x4 costs 1.06 GFLOP per training image (forward + backward, counted with
  ``torch.utils.flop_counter``), so 2 epochs of 3072 images are 6.5 TFLOP, about 1.5 s at the 4-5 TFLOP/s such
  a card achieves in fp32 (less with tensor cores); a student step (resnet8, 0.074 GFLOP, plus the teacher's
  forward, 0.35 GFLOP) is launch-bound, ~5 ms for each of the 48 steps.  With model set-up, evaluation, the
  summary, 2 checkpoint writes and the first-call cuDNN autotuning of each new shape / precision / memory format,
  3-5 s per case: all methods x precisions x memory formats eagerly (42 cases) take 2-3.5 min;
* a compiled run pays for its compilation: TorchInductor generates and compiles the forward and backward kernels
  of the trained model (for students only the student: the frozen teacher runs eagerly), some 20-40 s per case
  with a cold cache (on this project's 2-core CPU machine the same models compile to C++ kernels in 20-37 s for
  the resnet8 teacher and 11-17 s for the resnet8 FitNets student; a GPU host compiles Triton kernels in
  parallel over its cores).  Compiling every eager case (42 compilations) would take 15-30 min; the 9 chosen
  compile every method once (its feature hooks, branches, memories under dynamo) and every precision (with the
  gradient scaler and channels-last): 3-6 min cold, well under a minute once the on-disk caches
  (``/tmp/torchinductor_$USER``) are warm;
* the two resume checks run 3 + 1.5 + 2 epochs each, about 0.5 min together.

Total: about 6-10 min the first time, 3-4 min after.  ``torch._dynamo.reset()`` before every compiled case
keeps one case's graphs (and dynamo's recompile limit) from affecting the next.  bf16 on a GPU without native
bfloat16 (before Ampere: T4, V100) runs emulated and slowly; the header line and its images/s say so.

Hidden: ``--device cpu`` runs the same table on tiny CPU data (64 training images of 3x16x16, 10 classes; fp16
cases are skipped, since kdlab refuses fp16 on the CPU), a smoke test of this script
(tests/engine/test_trainer_gpu_paths.py; ``--device cpu --quick``: 30-40 s on 2 CPU cores with a cold compile cache).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

TEACHER_MODEL = "resnet8x4"
STUDENT_MODEL = "resnet8"
TEACHER_METHODS: dict[str, Any] = {"standard": "standard", "soteacher": "soteacher",
                                   "sftn": {"name": "sftn", "student": STUDENT_MODEL}}
STUDENT_METHODS: dict[str, Any] = {"kd": "kd", "crd": {"name": "crd"}, "dkd": "dkd", "fitnet": "fitnet"}
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Size:
    """The generated data and the run length of one device kind."""

    num_train: int
    num_test: int
    shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    epochs: int
    resume_epochs: int
    nce_k: int  # CRD negatives (fewer than the training samples)


SIZES = {"cuda": Size(3072, 1024, (3, 32, 32), 100, 128, 2, 3, 1024),
         "cpu": Size(64, 32, (3, 16, 16), 10, 16, 2, 3, 16)}


@dataclass(frozen=True)
class Case:
    role: str  # "teacher" or "student"
    method: str
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    resume: bool = False

    @property
    def name(self) -> str:
        parts = [f"{self.role}/{self.method}", self.precision]
        if self.channels_last:
            parts.append("channels-last")
        if self.compile:
            parts.append("compile")
        if self.resume:
            parts.insert(0, "resume")
        return " ".join(parts)

    @property
    def slug(self) -> str:
        return self.name.replace("/", "-").replace(" ", "_")


BASE_TEACHER = Case("teacher", "standard")  # the students' teacher: the first case of every list


def cases(quick: bool = False) -> list[Case]:
    """The cases to run, the students' teacher first (see the module docstring for why these)."""
    if quick:
        out = [Case(r, m, p) for r, m in (("teacher", "standard"), ("student", "kd")) for p in PRECISIONS]
        out += [Case("teacher", "standard", "bf16", channels_last=True), Case("student", "kd", "bf16", True)]
        out += [Case("teacher", "standard", compile=True), Case("student", "kd", compile=True)]
        out += [Case("teacher", "standard", resume=True)]
        return out
    methods = [("teacher", m) for m in TEACHER_METHODS] + [("student", m) for m in STUDENT_METHODS]
    out = [Case(r, m, p, cl) for r, m in methods for cl in (False, True) for p in PRECISIONS]
    plain = (("teacher", "standard"), ("student", "kd"))
    out += [Case(r, m, compile=True) for r, m in methods if (r, m) not in plain]
    out += [Case(r, m, p, channels_last=True, compile=True) for r, m in plain for p in ("bf16", "fp16")]
    out += [Case("teacher", "standard", resume=True), Case("student", "crd", resume=True)]
    return out


def build_config(case: Case, data_root: str | os.PathLike, run_dir: str | os.PathLike,
                 teacher_dir: str | os.PathLike | None = None, device: str = "cuda") -> dict[str, Any]:
    """The kdlab run config (a ``TeacherRunConfig`` / ``DistillRunConfig`` mapping) of one case."""
    size = SIZES[device]
    train = {"epochs": size.resume_epochs if case.resume else size.epochs, "batch_size": size.batch_size,
             "eval_batch_size": 512, "device": device, "precision": case.precision,
             "channels_last": case.channels_last, "compile": case.compile,
             "deterministic": case.resume,  # resume: exact repeats; otherwise cuDNN autotuning, as users run
             "progress": "off", "tensorboard": False}
    cfg: dict[str, Any] = {"seed": 0, "out_dir": str(run_dir), "data": {"name": "arrays", "root": str(data_root),
                                                              "num_classes": size.num_classes},
                           "optim": {"lr": 0.05},
                           "schedule": {"milestones": [2] if case.resume else [1]}, "train": train}
    if case.role == "teacher":
        return {**cfg, "model": TEACHER_MODEL, "method": TEACHER_METHODS[case.method]}
    method = STUDENT_METHODS[case.method]
    if case.method == "crd":
        method = {**method, "nce_k": size.nce_k}
    return {**cfg, "student": STUDENT_MODEL, "method": method,
            "teacher": {"path": str(teacher_dir) if teacher_dir is not None else "teacher"}}


def write_data(root: str | os.PathLike, device: str = "cuda", seed: int = 0) -> Path:
    """``root/train.npz`` and ``root/test.npz``: class prototypes (coarse 4x4-pixel blocks) plus Gaussian noise."""
    size = SIZES[device]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    c, h, w = size.shape
    protos = rng.standard_normal((size.num_classes, c, h // 4, w // 4)).astype(np.float32)
    protos = protos.repeat(4, axis=2).repeat(4, axis=3)
    for name, n in (("train", size.num_train), ("test", size.num_test)):
        y = (np.arange(n) % size.num_classes).astype(np.int64)
        rng.shuffle(y)
        x = protos[y] + rng.standard_normal((n, c, h, w)).astype(np.float32)
        np.savez(root / f"{name}.npz", x=x, y=y)
    return root


class _Cut(KeyboardInterrupt):
    """The simulated kill of the resume check (a user's own Ctrl-C still stops the script)."""


@contextlib.contextmanager
def _interrupted(epoch: int, step: int):
    """Training epoch ``epoch`` (0-based) stops before batch ``step``, as a kill would stop it."""
    from kdlab.data.base import ArrayLoader

    original = ArrayLoader.epoch

    def cut(self, e=0):
        for i, b in enumerate(original(self, e)):
            if self.shuffle and e == epoch and i == step:
                raise _Cut
            yield b

    ArrayLoader.epoch = cut
    try:
        yield
    finally:
        ArrayLoader.epoch = original


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")
    return text if len(text) <= 160 else text[:157] + "..."


def _last_state(run_dir: Path) -> dict[str, Any]:
    from kdlab.core.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location="cpu")


def _finite_status(run_dir: Path, summary: dict[str, Any]) -> str:
    for k, v in _last_state(run_dir)["model_state"].items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            return f"FAILED: non-finite weights in {k}"
    top1 = summary.get("top1")
    if not isinstance(top1, int | float) or not math.isfinite(top1):
        return f"FAILED: test top-1 is {top1!r}"
    return "ok"


def _resume_status(run, cfg: dict[str, Any], run_dir: Path, epochs: int) -> str:
    full, cut = run_dir / "full", run_dir / "cut"
    run({**cfg, "out_dir": str(full)})
    with _interrupted(epoch=epochs - 2, step=2):
        try:
            run({**cfg, "out_dir": str(cut)})
        except _Cut:
            pass
        else:
            return "FAILED: the simulated interruption did not happen"
    res = run({**cfg, "out_dir": str(cut)}, resume=True)
    a, b = _last_state(full), _last_state(cut)
    for part in ("model_state", "objective_state"):
        for k, v in a[part].items():
            w = b[part].get(k)
            if isinstance(v, torch.Tensor) and not (isinstance(w, torch.Tensor) and torch.equal(v, w)):
                delta = (v.double() - w.double()).abs().max().item() if isinstance(w, torch.Tensor) and \
                    w.shape == v.shape else float("nan")
                return f"FAILED: resumed {part} {k} differs (max |diff| {delta:.3g})"
    return _finite_status(cut, res.summary)


def _images_per_second(run_dir: Path, num_train: int) -> float | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    t = lines[-1].get("train_time") if lines else None
    return num_train / t if t else None


@dataclass
class Row:
    case: str
    status: str
    images_per_s: float | None
    seconds: float


def run_case(case: Case, data_root: Path, runs: Path, device: str, teacher_dir: Path | None,
             teacher_ok: bool) -> Row:
    from kdlab.runs.student import distill
    from kdlab.runs.teacher import train_teacher

    size = SIZES[device]
    run_dir = runs / case.slug
    t0 = time.perf_counter()
    if device != "cuda" and case.precision == "fp16":
        return Row(case.name, "skipped: fp16 needs CUDA", None, 0.0)
    if case.role == "student" and not teacher_ok:
        return Row(case.name, f"FAILED: its teacher ({BASE_TEACHER.name}) failed", None, 0.0)
    run = train_teacher if case.role == "teacher" else distill
    cfg = build_config(case, data_root, run_dir, teacher_dir, device)
    if case.compile:
        torch._dynamo.reset()
    try:
        if case.resume:
            status = _resume_status(run, cfg, run_dir, size.resume_epochs)
        else:
            status = _finite_status(run_dir, run(cfg).summary)
    except _Cut:
        status = "FAILED: the simulated interruption escaped"
    except Exception as e:  # noqa: BLE001 - every failure becomes one row of the table
        status = f"FAILED: {_one_line(e)}"
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    ips = _images_per_second(run_dir / "full" if case.resume else run_dir, size.num_train)
    return Row(case.name, status, ips, time.perf_counter() - t0)


def format_table(rows: list[Row]) -> str:
    width = max(len("case"), *(len(r.case) for r in rows))
    status_w = max(len("status"), *(len(r.status) for r in rows))
    lines = [f"| {'case':<{width}} | {'status':<{status_w}} | {'images/s':>9} | {'wall s':>7} |",
             f"|{'-' * (width + 2)}|{'-' * (status_w + 2)}|{'-' * 11}|{'-' * 9}|"]
    for r in rows:
        ips = f"{r.images_per_s:9.0f}" if r.images_per_s else f"{'-':>9}"
        lines.append(f"| {r.case:<{width}} | {r.status:<{status_w}} | {ips} | {r.seconds:7.1f} |")
    return "\n".join(lines)


def _describe(device: str) -> str:
    if device != "cuda":
        return f"torch {torch.__version__}, CPU ({torch.get_num_threads()} threads), tiny data (smoke test)"
    p = torch.cuda.get_device_properties(0)
    try:
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4
        bf16 = torch.cuda.is_bf16_supported()
    return (f"torch {torch.__version__}, CUDA {torch.version.cuda}, {p.name} (sm_{p.major}{p.minor}, "
            f"{p.total_memory / 2**30:.0f} GiB), native bf16: {'yes' if bf16 else 'no (emulated)'}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer cases (about two minutes)")
    p.add_argument("--out", type=Path, default=None, help="keep data, runs and the table here (default: a "
                   "temporary folder, removed at the end)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available (torch {torch.__version__}); nothing to check, run it on a machine "
              "with a CUDA GPU")
        return 0
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before any CUDA work: deterministic cuBLAS
    out = a.out if a.out is not None else Path(tempfile.mkdtemp(prefix="kdlab-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        data_root = write_data(out / "data", a.device)
        runs = out / "runs"
        if runs.exists():  # a previous check's runs: start afresh (finished runs would be reused, not rerun)
            shutil.rmtree(runs)
        todo = cases(a.quick)
        print(f"gpu_check: {len(todo)} cases; {_describe(a.device)}", flush=True)
        rows: list[Row] = []
        teacher_dir, teacher_ok = runs / BASE_TEACHER.slug, False
        for i, case in enumerate(todo):
            print(f"[{i + 1}/{len(todo)}] {case.name} ...", end=" ", flush=True)
            row = run_case(case, data_root, runs, a.device, teacher_dir, teacher_ok)
            if case == BASE_TEACHER:
                teacher_ok = row.status == "ok"
            rows.append(row)
            print(f"{row.status} ({row.seconds:.1f} s)", flush=True)
        table = format_table(rows)
        print(table)
        if a.out is not None:
            (out / "gpu_check.md").write_text(f"{_describe(a.device)}\n\n{table}\n")
        failed = sum(r.status.startswith("FAILED") for r in rows)
        print(f"gpu_check: {len(rows) - failed} of {len(rows)} cases ok or skipped, {failed} failed", flush=True)
        return 1 if failed else 0
    finally:
        if a.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
