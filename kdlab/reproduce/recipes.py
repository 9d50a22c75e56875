"""The papers' training recipes and teacher methods, as study-config fragments (the CRD benchmark: Tian,
Krishnan & Isola, 2020, Contrastive Representation Distillation; SoTeacher App. G.1; SFTN Sec. 4.2, "identical
to the one performed in CRD").

CIFAR-100: SGD, momentum 0.9, weight decay 5e-4, batch 64, lr 0.05 (0.01 for ShuffleNet / MobileNet students),
240 epochs, decayed x0.1 at 150, 180, 210; random crop 32 (pad 4) + flip.  Tiny-ImageNet (SoTeacher): teacher 90
epochs decayed at 30, 60; student 100 epochs decayed at 30, 60, 90; batch 128, lr 0.1, weight decay 5e-4;
rotation 20 + crop + flip; ResNets with the small-input stem.  ImageNet: the standard PyTorch recipe, 90 epochs
decayed at 30, 60, batch 256, lr 0.1, weight decay 1e-4.  Teachers keep a checkpoint every 10 epochs (RCO's
anchors, the trajectory's checkpoints).
"""

from __future__ import annotations

from typing import Any

SMALL_LR_STUDENTS = ("ShuffleV1", "ShuffleV2", "MobileNetV2")  # lr 0.01 (CRD benchmark, SoTeacher App. G.1)


def role(epochs: int, batch: int, lr: float, milestones: list[int], weight_decay: float, workers: int = 4,
         save_every: int = 0) -> dict[str, Any]:
    return {"optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": weight_decay},
            "schedule": {"name": "multistep", "milestones": milestones, "gamma": 0.1},
            "train": {"epochs": epochs, "batch_size": batch, "num_workers": workers, "save_every": save_every}}


DATASETS: dict[str, dict[str, Any]] = {
    "cifar100": {
        "data": {"name": "cifar100", "root": "data"},
        "teacher": role(240, 64, 0.05, [150, 180, 210], 5e-4, save_every=10),
        "student": role(240, 64, 0.05, [150, 180, 210], 5e-4),
    },
    "tinyimagenet": {
        "data": {"name": "tinyimagenet", "root": "data/tiny-imagenet-200"},
        "teacher": role(90, 128, 0.1, [30, 60], 5e-4, workers=8, save_every=10),
        "student": role(100, 128, 0.1, [30, 60, 90], 5e-4, workers=8),
    },
    "imagenet": {
        "data": {"name": "imagenet", "root": "data/imagenet"},
        "teacher": role(90, 256, 0.1, [30, 60], 1e-4, workers=16, save_every=10),
        "student": role(90, 256, 0.1, [30, 60], 1e-4, workers=16),
    },
}

#: the architectures the tables name, as kdlab model specs (ImageNet-family ResNets on Tiny-ImageNet take the
#: small-input stem, as SoTeacher's code trains them)
MODELS: dict[str, dict[str, Any]] = {
    "tiny_resnet34": {"name": "imagenet_resnet34", "small_input": True},
    "tiny_resnet18": {"name": "imagenet_resnet18", "small_input": True},
}


def model(key: str) -> dict[str, Any]:
    return dict(MODELS.get(key, {"name": key}))


def pair(teacher: str, student: str) -> dict[str, Any]:
    out: dict[str, Any] = {"teacher": model(teacher), "student": model(student)}
    if student in SMALL_LR_STUDENTS:
        out["student_lr"] = 0.01
    return out


def soteacher(lambda_lr: float = 1e-5, **kw: Any) -> dict[str, Any]:
    """SoTeacher at the paper's settings (lambda_CR_max 1, linear schedule; lambda_LR 1e-5 CIFAR-100, 1e-6
    Tiny-ImageNet)."""
    return {"name": "soteacher", "lambda_lr": lambda_lr, "lambda_cr_max": 1.0, **kw}


def soteacher_teachers(lambda_lr: float = 1e-5, ablations: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"standard": "standard", "soteacher": soteacher(lambda_lr)}
    if ablations:
        out["no_cr"] = soteacher(lambda_lr, no_cr=True)
        out["no_lr"] = soteacher(lambda_lr, no_lr=True)
    return out


def sftn(lambda_kl: float = 3.0, tau: float = 1.0, **kw: Any) -> dict[str, Any]:
    """SFTN at the paper's settings (lambda_T 1, lambda_CE 1, lambda_KL 3 on CIFAR-100 / 1 on ImageNet, tau~ 1);
    the branches are the pair's student unless ``student`` is given."""
    return {"name": "sftn", "lambda_t": 1.0, "lambda_ce": 1.0, "lambda_kl": lambda_kl, "tau": tau, **kw}


def study(name: str, dataset: str, pairs: list[dict[str, Any]], teachers: dict[str, Any],
          students: dict[str, Any], protocol: str, runs: str, seeds: list[int] = (0, 1, 2),
          **extra: Any) -> dict[str, Any]:
    """A study config at the paper's scale; ``runs`` names the shared run folder (one per paper and data set,
    so tables that need the same runs train them once)."""
    d = DATASETS[dataset]
    return {"name": name, "out_dir": f"runs/reproduce/{name}", "runs_dir": f"runs/reproduce/{runs}",
            "seeds": list(seeds), "data": dict(d["data"]), "pairs": pairs,
            "teacher": {"methods": teachers, **d["teacher"]},
            "student": {"methods": students, "protocol": protocol, **d["student"]}, **extra}
