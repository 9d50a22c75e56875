"""GPU time of an experiment, estimated from training FLOPs and the SFTN paper's measured times.

Basis: the forward FLOPs per image of every architecture at its input size, counted with
``torch.utils.flop_counter`` (``FORWARD_GFLOPS``; ``tests/reproduce/test_catalogue.py`` recounts some); a training
step costs 3x the forward (forward + backward) of each trained network plus the forward of a frozen teacher, with
the extra views some methods take (SSKD 4, KD+ 2, AugMix 3) and the initialisation stages (AB, FSP, FT 30 epochs,
SSKD's head 60 epochs of teacher forwards).  Seconds per FLOP: the median over SFTN Table 8's standard teachers and
KD students (six CIFAR-100 runs of 240 epochs, timed by the SFTN authors on their GPU) of paper seconds / training
FLOPs.  Those six ratios spread over a factor 3.5 (thin networks use a GPU less efficiently), so read an estimate
as within a factor 2 either way, on a GPU like theirs.  With groups (``group_size``), a group's members share the
teacher's forward on each batch, so the estimate counts it once per group (a GPU may not turn all of that into
time: small students leave it underused, see ``benchmarks/group_distill.py``).
"""

from __future__ import annotations

import statistics
from typing import Any

# GFLOPs of one forward pass of one image (100 classes at 32x32, 200 at 64x64 for the small-input ResNets of
# Tiny-ImageNet, 1000 at 224x224 for ImageNet)
FORWARD_GFLOPS: dict[tuple[str, bool], float] = {
    ("wrn_40_2", False): 0.6552, ("wrn_16_2", False): 0.2022, ("wrn_40_1", False): 0.1666,
    ("wrn_16_1", False): 0.0533, ("resnet32x4", False): 2.1661, ("resnet8x4", False): 0.3541,
    ("resnet8x2", False): 0.0890, ("ShuffleV1", False): 0.0774, ("ShuffleV2", False): 0.0890,
    ("ResNet50", False): 2.5960, ("vgg8", False): 0.1924, ("vgg13", False): 0.5699, ("MobileNetV2", False): 0.01305,
    ("resnet56", False): 0.2515, ("resnet20", False): 0.0816,
    ("imagenet_resnet34", True): 9.2754, ("imagenet_resnet18", True): 4.4435,
    ("imagenet_resnet152", False): 23.0273, ("imagenet_resnet50", False): 8.1784,
    ("imagenet_resnet34", False): 7.3275, ("imagenet_resnet18", False): 3.6281,
}
TRAIN_IMAGES = {"cifar100": 50_000, "tinyimagenet": 100_000, "imagenet": 1_281_167}
VIEWS = {"sskd": 4, "kdplus": 2}
INIT_EPOCHS = {"ab": 30, "fsp": 30, "ft": 30}


def forward_gflops(spec: dict[str, Any]) -> float | None:
    return FORWARD_GFLOPS.get((spec.get("name"), bool(spec.get("small_input", False))))


def run_flops(kind: str, cfg: dict[str, Any], teacher_spec: dict[str, Any] | None = None) -> float | None:
    """Training FLOPs of one planned run (its config as the study plans it), or None for an unknown model."""
    data = cfg["data"]["name"]
    images = TRAIN_IMAGES.get(data, 0) * (1 - cfg.get("holdout", 0.0)) * cfg["train"]["epochs"]
    method = cfg.get("method") or {}
    name = method.get("name", "standard") if isinstance(method, dict) else method
    if kind == "teacher":
        f = forward_gflops(cfg["model"])
        if f is None:
            return None
        per_image = 3 * f
        if name == "sftn":
            s = forward_gflops(method.get("student") or {}) or 0.0
            per_image += 3 * 2 * 0.6 * s  # two branches, each the student after its first stage(s)
        if name == "augmix":
            per_image *= 3
        return per_image * 1e9 * images
    s = forward_gflops(cfg["student"])
    t = forward_gflops(teacher_spec) if teacher_spec else 0.0
    if s is None or t is None:
        return None
    if name in ("dml", "kdcl"):
        peer = forward_gflops({"name": method.get("peer") or cfg["student"]["name"]}) or s
        return 3 * (s + peer) * 1e9 * images
    per_image = (3 * s + t) * VIEWS.get(name, 1)
    extra = INIT_EPOCHS.get(name, 0) * TRAIN_IMAGES.get(data, 0) * (3 * s + t)
    if name == "sskd":
        extra += 60 * TRAIN_IMAGES.get(data, 0) * 4 * t
    return per_image * 1e9 * images + extra * 1e9


def seconds_per_flop() -> float:
    """The median of paper seconds / training FLOPs over SFTN Table 8's standard teachers and KD students."""
    from kdlab.reproduce.published import published_table

    table = published_table("sftn", "table8")
    ratios = []
    for row in table.rows:
        t_name, s_name = row.key.split("-")
        t, s = FORWARD_GFLOPS[(t_name, False)], FORWARD_GFLOPS[(s_name, False)]
        images = TRAIN_IMAGES["cifar100"] * 240
        for col, flops in (("teacher", 3 * t), ("student", 3 * s + t)):
            v = table.value(row.key, col)
            if v is not None:
                ratios.append(v.mean / (flops * 1e9 * images))
    return statistics.median(ratios)


def _method_name(cfg: dict[str, Any]) -> str:
    method = cfg.get("method") or "kd"
    return method.get("name", "kd") if isinstance(method, dict) else method


def shared_pass_flops(plan: list[Any], teachers_by_dir: dict[str, dict[str, Any]], group_size: int) -> float:
    """Training FLOPs a study's groups of students save: per group, the teacher's forward on every batch for all
    but one of the members that take it from the shared pass (:func:`kdlab.methods.shares_batch_pass`)."""
    from kdlab.methods import shares_batch_pass
    from kdlab.study.execute import make_tasks

    saved = 0.0
    for task in make_tasks(plan, group_size):
        run = task.runs[0]
        if len(task.runs) < 2:
            continue
        sharing = [r for r in task.runs if shares_batch_pass(_method_name(r.config))]
        t = forward_gflops(teachers_by_dir.get(str(run.needs[0])) or {}) if run.needs else None
        if len(sharing) > 1 and t:
            cfg = run.config
            images = TRAIN_IMAGES.get(cfg["data"]["name"], 0) * (1 - cfg.get("holdout", 0.0)) * cfg["train"]["epochs"]
            saved += (len(sharing) - 1) * t * 1e9 * images
    return saved


def gpu_hours(plan: list[Any], teachers_by_dir: dict[str, dict[str, Any]], group_size: int = 1) -> float | None:
    """Estimated GPU hours of a plan (None when a model has no FLOP count); ``group_size`` > 1: with the students
    of one teacher trained in groups of up to that many (``kdlab study``'s default)."""
    total = -shared_pass_flops(plan, teachers_by_dir, group_size) if group_size > 1 else 0.0
    for run in plan:
        t_spec = None
        if run.kind != "teacher" and run.needs:
            t_spec = teachers_by_dir.get(str(run.needs[0]))
        f = run_flops("teacher" if run.kind == "teacher" else "student", run.config, t_spec)
        if f is None:
            return None
        total += f
    return total * seconds_per_flop() / 3600


__all__ = ["FORWARD_GFLOPS", "forward_gflops", "gpu_hours", "run_flops", "seconds_per_flop", "shared_pass_flops"]
