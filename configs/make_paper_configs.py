"""Write the paper-scale configs under configs/cifar100, configs/tinyimagenet and configs/imagenet.

One file per teacher (standard and SoTeacher training), per teacher/student pair (SFTN training, KD), with the
papers' recipes (the CRD benchmark's, SoTeacher App. G.1).  Run from the repository root:
python configs/make_paper_configs.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
SMALL_LR_STUDENTS = {"ShuffleV1", "ShuffleV2", "MobileNetV2"}  # lr 0.01 in the papers
# the distillation protocol of the paper a pair comes from: SoTeacher alone has the Tiny-ImageNet pair and ResNet152 ->
# ResNet18 on ImageNet (KD at 0.5 / 0.5); SFTN has the other pairs (KD at the CRD benchmark's 0.1 / 0.9), three
# of them shared with SoTeacher (protocol=soteacher gives its weights); resnet56 -> resnet20 is the CRD benchmark's
PROTOCOL = {("imagenet_resnet34", "imagenet_resnet18"): "soteacher", ("imagenet_resnet152", "imagenet_resnet18"):
            "soteacher", ("resnet56", "resnet20"): "crd"}
PAPER = {"soteacher": "SoTeacher's KD, CE 0.5 + KD 0.5 at T 4", "sftn": "SFTN's KD, the CRD benchmark's CE 0.1 + "
         "KD 0.9 at T 4", "crd": "the CRD benchmark's KD, CE 0.1 + KD 0.9 at T 4"}

RECIPES = {
    "cifar100": {
        "data": {"name": "cifar100", "root": "data"},
        "pairs": [("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("wrn_40_2", "ShuffleV2"),
                  ("resnet32x4", "resnet8x4"), ("resnet32x4", "resnet8x2"), ("resnet32x4", "ShuffleV1"),
                  ("resnet32x4", "ShuffleV2"), ("ResNet50", "vgg8"), ("resnet56", "resnet20")],
        "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4},
        "teacher": {"epochs": 240, "milestones": [150, 180, 210], "batch_size": 64},
        "student": {"epochs": 240, "milestones": [150, 180, 210], "batch_size": 64},
        "lambda_lr": 1.0e-5, "lambda_kl": 3.0, "num_workers": 4,
    },
    "tinyimagenet": {
        "data": {"name": "tinyimagenet", "root": "data/tiny-imagenet-200"},
        "pairs": [("imagenet_resnet34", "imagenet_resnet18")],
        "model_params": {"small_input": True},
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4},
        "teacher": {"epochs": 90, "milestones": [30, 60], "batch_size": 128},
        "student": {"epochs": 100, "milestones": [30, 60, 90], "batch_size": 128},
        "lambda_lr": 1.0e-6, "lambda_kl": 3.0, "num_workers": 8,
    },
    "imagenet": {
        "data": {"name": "imagenet", "root": "data/imagenet"},
        "pairs": [("imagenet_resnet50", "imagenet_resnet34"), ("imagenet_resnet152", "imagenet_resnet18")],
        "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1.0e-4},
        "teacher": {"epochs": 90, "milestones": [30, 60], "batch_size": 256},
        "student": {"epochs": 90, "milestones": [30, 60], "batch_size": 256},
        "lambda_lr": 1.0e-6, "lambda_kl": 1.0, "num_workers": 16,
        # 1.28 M x 1000 floats (5.1 GB): the consistency buffer in memory-mapped files, not in RAM and checkpoints
        "soteacher": {"buffer": "memmap"},
    },
}


def model(name: str, r: dict) -> dict | str:
    params = r.get("model_params", {})
    return {"name": name, **params} if params else name


def run_cfg(r: dict, role: str, out_dir: str, lr: float | None = None) -> dict:
    optim = dict(r["optim"])
    if lr is not None:
        optim["lr"] = lr
    t = r[role]
    return {"seed": 0, "out_dir": out_dir, "data": r["data"], "optim": optim,
            "schedule": {"name": "multistep", "milestones": t["milestones"], "gamma": 0.1},
            "train": {"epochs": t["epochs"], "batch_size": t["batch_size"], "num_workers": r["num_workers"],
                      "save_every": 10}}


def write(path: Path, cfg: dict, header: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {header}\n" + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))


def main() -> None:
    for ds, r in RECIPES.items():
        teachers = sorted({t for t, _ in r["pairs"]})
        for t in teachers:
            for method in ("standard", "soteacher"):
                spec = method if method == "standard" else \
                    {"name": "soteacher", "lambda_lr": r["lambda_lr"], **r.get("soteacher", {})}
                out = f"runs/{ds}/teacher-{method}-{t}-s{{seed}}"
                cfg = run_cfg(r, "teacher", out) | {"model": model(t, r), "method": spec}
                write(ROOT / ds / "teacher" / method / f"{t}.yaml", cfg,
                      f"kdlab train-teacher configs/{ds}/teacher/{method}/{t}.yaml  (seed=1, seed=2: more runs)")
        for t, s in r["pairs"]:
            out = f"runs/{ds}/teacher-sftn-{t}-{s}-s{{seed}}"
            spec = {"name": "sftn", "student": model(s, r), "lambda_kl": r["lambda_kl"]}
            cfg = run_cfg(r, "teacher", out) | {"model": model(t, r), "method": spec}
            write(ROOT / ds / "teacher" / "sftn" / f"{t}_{s}.yaml", cfg,
                  f"kdlab train-teacher configs/{ds}/teacher/sftn/{t}_{s}.yaml")
            lr = 0.01 if s in SMALL_LR_STUDENTS else None
            out = f"runs/{ds}/student-kd-{t}-{s}-s{{seed}}"
            protocol = PROTOCOL.get((t, s), "sftn")
            cfg = run_cfg(r, "student", out, lr) | {
                "teacher": {"path": f"runs/{ds}/teacher-standard-{t}-s{{seed}}", "checkpoint": "last"},
                "student": model(s, r), "method": {"name": "kd"}, "protocol": protocol}
            write(ROOT / ds / "kd" / f"{t}_{s}.yaml", cfg,
                  f"kdlab distill configs/{ds}/kd/{t}_{s}.yaml  (protocol {protocol}: {PAPER[protocol]}; other "
                  f"teachers: teacher.path=runs/{ds}/teacher-soteacher-{t}-s{{seed}} or runs/{ds}/teacher-sftn-{t}-"
                  f"{s}-s{{seed}}, with out_dir changed too; method=none for the student alone; whole tables: kdlab "
                  f"reproduce --list)")


if __name__ == "__main__":
    main()
