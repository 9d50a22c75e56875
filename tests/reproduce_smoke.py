"""Every catalogue experiment with its real recipe shrunk: 1 seed, 1-2 epochs, tiny data sets written in the
exact on-disk formats, and tiny stand-ins of each architecture from the same family (a wide ResNet stays a wide
ResNet, a ShuffleNet a ShuffleNet), so every study runs end to end in seconds and fills the paper's table."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from image_data_files import make_cifar100, make_image_folder, make_tiny_imagenet

WRN = {"name": "wrn", "depth": 10, "width": 1}
RESNET = {"name": "resnet_cifar", "depth": 8, "filters": [8, 8, 16, 16]}
STAND_INS: dict[str, dict[str, Any]] = {
    **{f"wrn_{d}_{w}": WRN for d, w in ((16, 1), (16, 2), (40, 1), (40, 2), (16, 4), (28, 4))},
    **{k: RESNET for k in ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                          "resnet8x2", "resnet8x4", "resnet32x4")},
    "ResNet50": {"name": "resnet_cifar", "depth": 11, "filters": [8, 4, 4, 4], "block": "bottleneck"},
    "ShuffleV1": {"name": "shufflenet_v1", "widths": [48, 96, 192], "blocks": [1, 1, 1]},
    "ShuffleV2": {"name": "shufflenet_v2", "widths": [24, 48, 96], "blocks": [1, 1, 1], "head_width": 128},
    "vgg8": {"name": "vgg", "depth": 8, "width": 0.125},
    "vgg13": {"name": "vgg", "depth": 8, "width": 0.125},
    "MobileNetV2": {"name": "MobileNetV2", "width": 0.125},
    **{f"imagenet_resnet{d}": {"name": "imagenet_resnet18"} for d in (18, 34, 50, 152)},
}
NEGATIVES = {"cifar100": 16, "tinyimagenet": 4, "imagenet": 2}  # CRD's nce_k that the tiny sets can draw


def make_data(root: Path) -> dict[str, dict[str, Any]]:
    """The three paper data sets in their on-disk formats, and the data spec of each (CIFAR-100 twice: 64 images
    for one step per epoch, and 2 per class for the studies that hold out a stratified split)."""
    make_cifar100(root / "cifar", n_train=64, n_test=32)
    make_cifar100(root / "cifar-holdout", n_train=200, n_test=32)
    wnids = [f"n0{k}000000" for k in range(1, 7)]  # 6 classes: top-5 is defined
    make_tiny_imagenet(root / "tiny", per_class=4, wnids=wnids)
    make_image_folder(root / "imagenet", wnids=wnids, train_per_class=2, val_per_class=1, size=(40, 40))
    return {"cifar100": {"name": "cifar100", "root": str(root / "cifar")},
            "cifar100-holdout": {"name": "cifar100", "root": str(root / "cifar-holdout")},
            "tinyimagenet": {"name": "tinyimagenet", "root": str(root / "tiny" / "tiny-imagenet-200"),
                             "image_size": 32},
            "imagenet": {"name": "imagenet", "root": str(root / "imagenet"), "image_size": 64}}


def _model(spec: Any) -> Any:
    if isinstance(spec, dict) and spec.get("name") in STAND_INS:
        return dict(STAND_INS[spec["name"]])
    return spec


def _method(spec: Any, dataset: str) -> Any:
    if not isinstance(spec, dict):
        return spec
    out = dict(spec)
    name = out.get("name")
    if "student" in out and isinstance(out["student"], dict):  # SFTN's branches
        out["student"] = _model(out["student"])
    if name in ("ab", "fsp", "ft") or (name == "fitnet" and out.get("init_epochs")):
        out["init_epochs"] = 1
    if name == "sskd":
        out["ss_epochs"] = 1
    if name == "crd":
        out["nce_k"] = NEGATIVES[dataset]
    if name in ("dml", "kdcl") and out.get("peer") in STAND_INS:
        peer = dict(STAND_INS[out["peer"]])
        out["peer"], out["peer_params"] = peer.pop("name"), peer
    if "branch_only_epochs" in out:
        out["branch_only_epochs"] = 1
    return out


def _methods(methods: dict[str, Any], dataset: str) -> dict[str, Any]:
    return {k: _method(v if isinstance(v, dict) else ({"name": v} if v in ("crd", "ab", "fsp", "ft", "sskd") else v),
                       dataset) for k, v in methods.items()}


def shrink(study: dict[str, Any], data: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The study on the tiny data sets, with stand-in models, one seed and one epoch (two for a fine-tuned SFTN,
    one of branches only); teachers keep a checkpoint every epoch (RCO's anchors, the trajectory's checkpoints)."""
    s = copy.deepcopy(study)
    dataset = s["data"]["name"]
    s["data"] = dict(data[dataset])
    s["seeds"] = [0]
    if s.get("holdout"):
        s["holdout"] = 0.5  # a stratified split of 2 images per class
        s["data"] = dict(data.get(f"{dataset}-holdout", data[dataset]))
    for role in ("teacher", "student"):
        r = s[role]
        r["train"] = {**r["train"], "epochs": 1, "batch_size": 64, "num_workers": 0, "save_every": 1,
                      "progress": "off", "tensorboard": False, "eval_batch_size": 256}
        r["schedule"] = {**r["schedule"], "milestones": []}
        r["optim"] = {**r["optim"], "lr": 0.01}  # one step of a fresh network on a handful of images
        r["methods"] = _methods(r["methods"], dataset)
        for ov in r.get("overrides", {}).values():
            if "train" in ov:
                ov["train"] = {**ov["train"], "epochs": 2 if role == "teacher" else 1}
            if "schedule" in ov:
                ov["schedule"] = {**ov["schedule"], "milestones": []}
            if "optim" in ov and "lr" in ov["optim"]:
                ov["optim"] = {**ov["optim"], "lr": 0.01}
    s["pairs"] = [{**p, "teacher": _model(p["teacher"]), "student": _model(p["student"])} for p in s["pairs"]]
    if s.get("trajectory"):
        s["trajectory"] = {**s["trajectory"], "every": 1}
    return s
