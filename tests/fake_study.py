"""A synthetic study with long labels: the real planner lays out the runs of a study config with long method
labels and architecture names (with sweeps and a trajectory, so that every figure has data), and each run folder
gets made-up results (summary, per-epoch log, test predictions) instead of training. Shared by the figure-layout
and table tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import yaml

from kdlab.config import StudyConfig, load_config
from kdlab.runs.folder import RunFolder, write_manifest
from kdlab.study.plan import plan_study
from kdlab.study.records import write_runs_file

STANDARD = "standard-cross-entropy-teacher-without-any-regularisation"
SOTEACHER = "soteacher-with-lipschitz-and-consistency-regularisation"
KD_LONG = "kd-at-temperature-eight-with-a-long-descriptive-label"
ALONE = "alone-student-trained-on-the-labels-without-a-teacher"
TEACHER_MODEL = {"name": "resnet_cifar", "depth": 8, "filters": [32, 32, 64, 128]}
STUDENT_MODEL = {"name": "resnet_cifar", "depth": 8, "filters": [16, 16, 32, 64]}
LONG_ARCH = {"teacher": "resnet_cifar(depth=8, filters=[32, 32, 64, 128], stem=wide-3x3-stem-without-pooling)",
             "student": "my_package.models:tiny_convolutional_student(width=16, depth=4)"}
NUM_TEST, CLASSES, EPOCHS = 300, 10, 4


def long_config(out: Path) -> dict:
    return {
        "name": "long-labels", "out_dir": str(out), "seeds": [0, 1, 2],
        "data": {"name": "mixed-feature", "num_train": 192, "num_test": NUM_TEST},
        "teacher": {"model": TEACHER_MODEL, "methods": {STANDARD: "standard", SOTEACHER: "soteacher", "sftn": "sftn"},
                    "train": {"epochs": EPOCHS, "save_every": 2}},
        "student": {"model": STUDENT_MODEL,
                    "methods": {ALONE: "none", "kd": "kd", KD_LONG: {"name": "kd", "T": 8}}},
        "sweeps": [{"role": "teacher", "method": SOTEACHER, "param": "lambda_cr_max", "values": [0.5, 1.0]},
                   {"role": "student", "method": "kd", "param": "switch_epoch", "values": [0, 2]}],
        "trajectory": {"every": 2, "method": "kd"},
    }


def scaling_config(out: Path) -> dict:
    return {"name": "long-scaling", "out_dir": str(out), "seeds": [0, 1],
            "data": {"name": "mixed-feature", "num_train": 192, "num_test": NUM_TEST},
            "sweeps": [{"role": "data", "param": "num_train", "values": [125, 250, 500, 1000]}],
            "teacher": {"model": TEACHER_MODEL, "methods": {STANDARD: "standard", SOTEACHER: "soteacher"},
                        "train": {"epochs": 2}},
            "student": {"model": STUDENT_MODEL, "methods": {ALONE: "none"}}}


def _predictions(rng: np.random.Generator, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.random.default_rng(100 + seed).integers(0, CLASSES, NUM_TEST)  # a seed's runs share a test set
    logits = rng.normal(0, 1, (NUM_TEST, CLASSES))
    right = rng.random(NUM_TEST) < accuracy
    logits[np.arange(NUM_TEST), np.where(right, labels, (labels + 1) % CLASSES)] += rng.uniform(0.5, 5, NUM_TEST)
    return logits.astype(np.float32), labels


def fake_study(out: Path, cfg: dict, nan_cka: tuple[str, int] | None = None, long_arch: bool = True) -> Path:
    """The planned study's folders with made-up results; ``nan_cka``: (teacher label, seed) of the kd students
    whose linear CKA is NaN; ``long_arch``: architecture labels longer than the config's models give (for the
    figures: the tables match their pairs by the config's labels)."""
    out.mkdir(parents=True)
    (out / "study.yaml").write_text(yaml.safe_dump(cfg))
    plan = plan_study(load_config(StudyConfig, cfg))
    for run in plan if long_arch else ():  # the architectures' labels as long as a user's own model's can be
        run.arch = LONG_ARCH["teacher" if run.kind == "teacher" else "student"]
    write_runs_file(plan, out)
    rng = np.random.default_rng(0)
    labels = list(cfg["teacher"]["methods"])
    for run in plan:
        d = Path(run.run_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(run.config, default=str))))
        t_idx = next((i for i, t in enumerate(labels) if run.teacher_label and run.teacher_label.startswith(t)), 0)
        n_train = int(run.info.get("value", 1000)) if run.info.get("param") == "data.num_train" else 1000
        teacher_top1 = 76 + 1.5 * t_idx + rng.normal(0, 0.6)
        top1 = teacher_top1 if run.kind == "teacher" else 73 + t_idx + rng.normal(0, 0.7)
        summary = {"top1": top1, "ece": 10 - 2 * t_idx + rng.normal(0, 0.5), "nll": 1.2,
                   "epochs": run.config["train"]["epochs"],
                   "pstar_l1_train": 0.5 * (n_train / 125) ** -0.4 + rng.normal(0, 0.01),
                   "pstar_l1_test": 0.45 * (n_train / 125) ** -0.3 + rng.normal(0, 0.01)}
        if run.kind == "student" and run.teacher_label is not None:
            cka = math.nan if nan_cka == (run.teacher_label, run.seed) and run.method_label == "kd" else 0.8
            summary |= {"agreement": 80.0, "kl_teacher_student": 0.3, "cka_teacher_student": cka,
                        "teacher_top1": teacher_top1, "teacher_ece": 9.0 + rng.normal(0, 0.5),
                        "teacher_pstar_l1_train": 0.5 - 0.03 * t_idx + rng.normal(0, 0.01),
                        "teacher_pstar_l1_test": 0.4 + rng.normal(0, 0.01)}
        RunFolder(d).summary_file.write_text(json.dumps(summary))
        if run.kind == "teacher":
            log = [{"epoch": e, "loss": 2.0 / e, "ce": 1.9 / e, "test_top1": 50 + 6 * e + rng.normal(0, 1)}
                   for e in range(1, EPOCHS + 1)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        logits, y = _predictions(rng, top1 / 100, run.seed)
        np.save(d / "test_logits.npy", logits)
        np.save(d / "test_labels.npy", y)
        write_manifest(d)  # what a finished run writes last: a study reads only results its checksums vouch for
    return out
