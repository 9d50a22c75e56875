"""Key maps from the weights files of other distillation codes to kdlab's models.

kdlab's CIFAR zoo is the CRD benchmark's (RepDistiller ``models/``), layer for layer, under other names
(``stages.i...`` / ``classifier``).  A checkpoint saved by one of these codes loads into the kdlab model of the same
architecture through an explicit map of its key names, rule by rule per model family (:data:`RULES`), checked
strictly: every key of the file has a place in the model with the same shape, and every tensor of the model comes
from the file (:func:`convert`; :func:`key_map` shows the map).

* ``repdistiller``: RepDistiller (the CRD benchmark, ``train_teacher.py``: ``{'epoch', 'model', 'accuracy',
  'optimizer'}``; the published ``ckpt_epoch_240.pth`` teachers, which mdistiller's ``cifar_teachers.tar`` holds too),
  all 22 architectures of its ``model_dict``; SoTeacher's and other CRD-derived codes use the same model code.
* ``mdistiller``: the same model code (and key names) as RepDistiller, its ResNet18 too (kdlab's
  ``imagenet_resnet18`` with ``small_input: true``); its trainer's ``student_*`` files hold the student alone, its
  ``latest`` / ``best`` / ``epoch_N`` files the whole distiller, of which the ``student.`` part is taken.
* ``torchdistill``: its CIFAR ResNets (``resnet20`` ... ``resnet110``, ``ResNet4Cifar`` of any depth 6n+2), which are
  kdlab's ``resnet*``.  Its CIFAR Wide ResNets are not kdlab's ``wrn``: their projection shortcut takes the block's
  raw input, RepDistiller's and kdlab's the batch-normed and activated one, so the same weights compute other
  logits; its DenseNets have no kdlab counterpart.

mdistiller's models are RepDistiller's code, and torchdistill's CIFAR ResNets have RepDistiller's ResNet key names:
detecting the format of such a file from its key names (``weights_format: auto``) may name either format, whose maps
are the same (the keys a trainer saves beside the model tell torchdistill's files and mdistiller's distiller
checkpoints apart; see :func:`kdlab.models.native.load_pretrained`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import get_args

import torch
import torch.nn as nn

from kdlab.config.schema import WeightsFormat
from kdlab.models.mobilenetv2 import MobileNetV2Cifar
from kdlab.models.resnet_cifar import CifarResNet
from kdlab.models.shufflenet import ShuffleNetV1, ShuffleNetV2
from kdlab.models.torchvision_resnet import TorchvisionResNet
from kdlab.models.vgg import VGG
from kdlab.models.wrn import WideResNet

FOREIGN_FORMATS = ("repdistiller", "mdistiller", "torchdistill")
WEIGHTS_FORMATS: tuple[str, ...] = get_args(WeightsFormat)  # the config's choices (weights_format)

# a rule: a regular expression matched at the start of a key, and what replaces the matched part (a re template,
# or a function of the match and the kdlab model; None: the key has no place in the model)
Rule = tuple[str, "str | Callable[[re.Match, nn.Module], str | None]"]


def _vgg_layer(m: re.Match, model: nn.Module) -> str | None:
    # the reference's block i is a Sequential conv, BN, ReLU, conv, BN, ..., conv, BN; kdlab's stage i is the max
    # pool before the block (stages 1-3; stage 4 too at inputs of 64 pixels or more), then conv -> BN -> ReLU units
    i, layer = int(m[1]), int(m[2])
    unit, part = divmod(layer, 3)
    if i >= len(model.stages) or part == 2:
        return None
    pool = int(not any(True for _ in model.stages[i][0].parameters()))  # a leading max pool holds no tensors
    return f"stages.{i}.{unit + pool}.{('conv', 'bn')[part]}."


# kdlab merges the reference's seven inverted-residual groups (0, 1), (2,), (3, 4), (5, 6) into its stages 1-4;
# group -> (stage, blocks of the stage's earlier groups)
_MOBILENETV2_GROUPS = {0: (1, 0), 1: (1, 1), 2: (2, 0), 3: (3, 0), 4: (3, 4), 5: (4, 0), 6: (4, 3)}


def _mobilenetv2_block(m: re.Match, model: nn.Module) -> str | None:
    group, block = int(m[1]), int(m[2])
    if group not in _MOBILENETV2_GROUPS:
        return None
    stage, offset = _MOBILENETV2_GROUPS[group]
    return f"stages.{stage}.{offset + block}.conv."


# ShuffleNetV2's down-sampling unit: the reference's convN / bnN -> kdlab's branch modules (a conv, BN pair each)
_SHUFFLEV2_DOWN = {"1": "left.0", "2": "left.1", "3": "right1", "4": "right2.0", "5": "right2.1"}


def _shufflev2_down(m: re.Match, model: nn.Module) -> str:
    return f"stages.{m[1]}.0.{_SHUFFLEV2_DOWN[m[3]]}.{0 if m[2] == 'conv' else 1}."


RULES: dict[str, list[Rule]] = {
    # RepDistiller models/resnet.py (resnet8 ... resnet110, resnet8x4, resnet32x4); torchdistill's ResNet4Cifar
    "resnet_cifar": [
        (r"conv1\.", "stages.0.conv."),
        (r"bn1\.", "stages.0.bn."),
        (r"layer(\d+)\.", r"stages.\1."),  # blocks keep their names: conv1, bn1, conv2, bn2 (conv3, bn3), downsample
        (r"fc\.", "classifier."),
    ],
    # RepDistiller models/resnetv2.py (ResNet50; mdistiller's ResNet18): kdlab builds it as a torchvision ResNet
    "resnet_v2": [
        (r"conv1\.", "stages.0.conv."),
        (r"bn1\.", "stages.0.bn."),
        (r"layer(\d+)\.(\d+)\.shortcut\.", r"stages.\1.blocks.\2.downsample."),
        (r"layer(\d+)\.", r"stages.\1.blocks."),
        (r"linear\.", "classifier."),
    ],
    # RepDistiller models/wrn.py (wrn_16_1 ... wrn_40_2)
    "wrn": [
        (r"conv1\.", "stages.0.conv."),
        (r"block(\d)\.layer\.(\d+)\.convShortcut\.", r"stages.\1.\2.shortcut."),
        (r"block(\d)\.layer\.", r"stages.\1."),  # bn1, conv1, bn2, conv2 keep their names
        (r"bn1\.", "bn."),  # the final BN
        (r"fc\.", "classifier."),
    ],
    # RepDistiller models/vgg.py (vgg8_bn ... vgg19_bn)
    "vgg": [
        (r"block(\d)\.(\d+)\.", _vgg_layer),
        (r"classifier\.", "classifier."),
    ],
    # RepDistiller models/mobilenetv2.py (mobile_half)
    "mobilenetv2": [
        (r"conv1\.0\.", "stages.0.conv."),
        (r"conv1\.1\.", "stages.0.bn."),
        (r"blocks\.(\d+)\.(\d+)\.conv\.", _mobilenetv2_block),  # the block's Sequential keeps its indices
        (r"conv2\.0\.", "head.conv."),
        (r"conv2\.1\.", "head.bn."),
        (r"classifier\.0\.", "classifier."),
    ],
    # RepDistiller models/ShuffleNetv1.py (ShuffleV1)
    "shufflev1": [
        (r"conv1\.", "stages.0.conv."),
        (r"bn1\.", "stages.0.bn."),
        (r"layer(\d+)\.(\d+)\.conv(\d)\.", r"stages.\1.\2.conv\3.0."),
        (r"layer(\d+)\.(\d+)\.bn(\d)\.", r"stages.\1.\2.conv\3.1."),
        (r"linear\.", "classifier."),
    ],
    # RepDistiller models/ShuffleNetv2.py (ShuffleV2)
    "shufflev2": [
        (r"conv1\.", "stages.0.conv."),
        (r"bn1\.", "stages.0.bn."),
        (r"layer(\d+)\.0\.(conv|bn)([1-5])\.", _shufflev2_down),  # each stage's first unit: the DownBlock
        (r"layer(\d+)\.(\d+)\.conv(\d)\.", r"stages.\1.\2.conv\3.0."),
        (r"layer(\d+)\.(\d+)\.bn(\d)\.", r"stages.\1.\2.conv\3.1."),
        (r"conv2\.", "head.conv."),
        (r"bn2\.", "head.bn."),
        (r"linear\.", "classifier."),
    ],
}

# torchdistill's CIFAR Wide ResNet: its key names map onto kdlab's wrn, but it is another network (see REFUSED)
_TORCHDISTILL_WRN: list[Rule] = [
    (r"conv1\.", "stages.0.conv."),
    (r"layer(\d)\.(\d+)\.shortcut\.0\.", r"stages.\1.\2.shortcut."),
    (r"layer(\d)\.", r"stages.\1."),
    (r"bn1\.", "bn."),
    (r"fc\.", "classifier."),
]

# format -> model family -> its rules
MAPS: dict[str, dict[str, list[Rule]]] = {
    "repdistiller": RULES,
    "mdistiller": RULES,
    "torchdistill": {"resnet_cifar": RULES["resnet_cifar"], "wrn": _TORCHDISTILL_WRN},
}

# (format, family) whose files are recognised but refused: the format's model computes something else than
# kdlab's model of the same name (the value is the reason)
REFUSED: dict[tuple[str, str], str] = {
    ("torchdistill", "wrn"): "torchdistill's CIFAR Wide ResNet is not kdlab's wrn: its projection shortcut takes the "
                             "block's raw input, kdlab's (and RepDistiller's) the batch-normed, activated one, so "
                             "the same weights compute other logits",
}

_FAMILIES: tuple[tuple[type, str], ...] = (
    (CifarResNet, "resnet_cifar"), (TorchvisionResNet, "resnet_v2"), (WideResNet, "wrn"), (VGG, "vgg"),
    (MobileNetV2Cifar, "mobilenetv2"), (ShuffleNetV1, "shufflev1"), (ShuffleNetV2, "shufflev2"),
)
_FAMILY_NAMES = {"resnet_cifar": "CIFAR ResNets", "resnet_v2": "ResNet50 / ResNet18", "wrn": "WRNs", "vgg": "VGGs",
                 "mobilenetv2": "MobileNetV2", "shufflev1": "ShuffleV1", "shufflev2": "ShuffleV2"}

MDISTILLER_STUDENT = "student."  # the student's keys in a checkpoint of mdistiller's whole distiller


class KeyMapError(ValueError):
    """A file's keys do not map onto a model; the message names the first offending key."""


class RefusedModel(KeyMapError):
    """The file is a model of its format that kdlab's model of that name is not (:data:`REFUSED`)."""


def family(model: nn.Module) -> str | None:
    """The model family of :data:`RULES` that ``model`` belongs to (None: no foreign format has it)."""
    return next((name for cls, name in _FAMILIES if isinstance(model, cls)), None)


def rules_for(fmt: str, model: nn.Module) -> list[Rule]:
    """The rules of format ``fmt`` for ``model``; a :class:`KeyMapError` says why there are none."""
    fam = family(model)
    if fam is None or fam not in MAPS[fmt]:
        covered = ", ".join(_FAMILY_NAMES[f] for f in MAPS[fmt] if (fmt, f) not in REFUSED)
        raise KeyMapError(f"kdlab has no {fmt} key map for {type(model).__name__} (it has for {covered})")
    return MAPS[fmt][fam]


def rename(key: str, rules: list[Rule], model: nn.Module) -> str | None:
    """``key`` in kdlab's names by the first rule that matches it (None: no rule gives it a place)."""
    for pattern, new in rules:
        m = re.match(pattern, key)
        if m is None:
            continue
        head = m.expand(new) if isinstance(new, str) else new(m, model)
        return None if head is None else head + key[m.end():]
    return None


def student_part(fmt: str, state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """The tensors of ``state`` that make the model of a ``fmt`` file: an mdistiller distiller's student."""
    if fmt == "mdistiller" and any(k.startswith(MDISTILLER_STUDENT) for k in state):
        n = len(MDISTILLER_STUDENT)
        return {k[n:]: v for k, v in state.items() if k.startswith(MDISTILLER_STUDENT)}
    return state


def _optional(key: str) -> bool:
    return key.endswith("num_batches_tracked")  # batch norm fills in a missing counter (files of old PyTorch)


def convert(fmt: str, model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state``, a file of format ``fmt``, in the key names of ``model`` (kdlab's), checked strictly: a
    :class:`KeyMapError` names the first key of the file that has no place in the model (no rule gives it one,
    the model has no such tensor, or it has another shape), else the first tensor of the model the file lacks."""
    rules = rules_for(fmt, model)
    state = student_part(fmt, state)
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = rename(key, rules, model)
        if new is None or new not in own:
            where = "matches no rule" if new is None else f"-> {new}: the model has no such tensor"
            raise KeyMapError(f"{key} {where} ({len(out)} keys of the file before it fit)")
        if tuple(value.shape) != tuple(own[new].shape):
            raise KeyMapError(f"{key} -> {new} has shape {tuple(value.shape)} in the file, {tuple(own[new].shape)} "
                              "in the model")
        if new in out:
            raise KeyMapError(f"{key} -> {new}: an earlier key of the file has that place")
        out[new] = value
    missing = [k for k in own if k not in out and not _optional(k)]
    if missing:
        raise KeyMapError(f"the file has no tensor for {missing[0]} ({len(missing)} of the model's are missing)")
    if (fmt, family(model)) in REFUSED:
        raise RefusedModel(REFUSED[fmt, family(model)])
    return out


def placed(fmt: str, model: nn.Module, state: Mapping[str, torch.Tensor]) -> int:
    """How many tensors of ``model`` (batch-norm counters aside) the map of ``fmt`` fills from ``state`` with a
    tensor of their shape (0 when the format has no map for the model): how close a file that does not fit comes
    to being a ``fmt`` file of this model."""
    try:
        rules = rules_for(fmt, model)
    except KeyMapError:
        return 0
    own = model.state_dict()
    part = student_part(fmt, state)
    places = {rename(k, rules, model): v for k, v in part.items()}
    return sum(1 for k, v in own.items() if not _optional(k) and k in places and places[k].shape == v.shape)


def key_map(fmt: str, model: nn.Module, keys: list[str]) -> dict[str, str | None]:
    """Each of ``keys`` (a ``fmt`` file's, in the model's part of the file) -> its kdlab key in ``model`` (None
    where no rule gives it one): the map :func:`convert` applies, to inspect."""
    rules = rules_for(fmt, model)
    return {k: rename(k, rules, model) for k in keys}
