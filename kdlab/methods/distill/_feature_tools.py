"""Shared pieces of the feature-based distillation methods (FitNets, AT, SP, CC, VID, RKD, PKT, NST, FT, AB, FSP).

* Feature shapes are those of :class:`~kdlab.models.contract.Features` without the batch axis: ``(C, H, W)`` for
  images, ``(C, L)`` for 1D sequences, ``(D,)`` for MLP layers.  A method states what it needs; a pair its
  definition does not cover is a :class:`~kdlab.core.errors.ConfigError` naming the method and the shapes.
* Lists of stages of two networks of different depth are paired from the deepest stage backwards.
* Maps of different spatial size are average-pooled to the smaller size per axis (the reference code's rule).
* Connectors are rank-aware: Linear for vectors, Conv1d for sequences, Conv2d for images.
* :func:`run_init_stage` is the initialisation stage of AB, FT, FSP (and FitNets' optional hint stage): a few
  epochs of SGD on the method's own loss before the student is distilled, the teacher frozen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kdlab.core.distributed import all_reduce_sum, average_gradients, shard_weight
from kdlab.core.errors import ConfigError, DivergenceError
from kdlab.core.progress import Progress
from kdlab.data.base import batch_part
from kdlab.models.contract import Features

Shape = tuple[int, ...]

CONV_LAYERS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSED = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BATCH_NORMS = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
ADAPTIVE_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def describe(shape: Sequence[int]) -> str:
    kind = {1: "vector", 2: "sequence", 3: "image"}.get(len(shape), "tensor")
    return f"{kind} {tuple(shape)}"


def require_shapes(method: str, owner: object) -> None:
    if not hasattr(owner, "student_shapes"):
        raise ConfigError(f"{method}: needs the student and the data set to size its connectors")


def pair_last(student: Sequence, teacher: Sequence) -> tuple[list, list]:
    """The last ``min(len)`` entries of each: networks of different depth pair their deepest stages."""
    k = min(len(student), len(teacher))
    return list(student[len(student) - k:]), list(teacher[len(teacher) - k:])


def check_same_rank(method: str, pairs: Iterable[tuple[Shape, Shape]], spatial: bool, what: str) -> None:
    """Raise unless each (student, teacher) pair has the same rank (and spatial axes, if ``spatial``)."""
    for s, t in pairs:
        if spatial and (len(s) < 2 or len(t) < 2):
            raise ConfigError(f"{method}: needs spatial feature maps ({what}) but got student {describe(s)}, "
                              f"teacher {describe(t)}; use a method on embeddings (rkd, pkt, sp, cc) for MLPs")
        if len(s) != len(t):
            raise ConfigError(f"{method}: {what} of student {describe(s)} and teacher {describe(t)} have "
                              "different ranks; pair networks of the same input kind")


def pool_to(x: Tensor, size: Sequence[int]) -> Tensor:
    size = tuple(size)
    if tuple(x.shape[2:]) == size:
        return x
    return ADAPTIVE_POOLS[len(size)](x, size)


def pool_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool two maps to their smaller spatial size, per axis."""
    size = tuple(min(p, q) for p, q in zip(a.shape[2:], b.shape[2:]))
    return pool_to(a, size), pool_to(b, size)


def projection(cin: int, cout: int, rank: int, bias: bool = False) -> nn.Module:
    """A 1x1 convolution (or Linear for vectors, rank 0) from ``cin`` to ``cout`` channels."""
    if rank == 0:
        return nn.Linear(cin, cout, bias=bias)
    return CONV_LAYERS[rank](cin, cout, 1, bias=bias)


def conv3(cin: int, cout: int, rank: int) -> nn.Module:
    """A size-preserving 3-wide convolution of the given spatial rank."""
    return CONV_LAYERS[rank](cin, cout, 3, padding=1)


def batch_norm(channels: int, rank: int) -> nn.Module:
    return BATCH_NORMS[rank](channels)


class Regressor(nn.Module):
    """Maps a student feature to a teacher feature's shape: layer -> BN (-> ReLU).

    The layer follows the CRD benchmark's ``ConvReg`` where it is defined: a 3x3 stride-2 convolution when the
    student map is twice the teacher's size, a 4x4 stride-2 transposed convolution when it is half, a valid
    convolution of kernel ``1 + s - t`` when it is larger or equal (1x1 at equal size).  For a student map smaller
    than the teacher's by another factor (the reference raises) a 1x1 convolution is followed by adaptive average
    pooling up to the teacher's size.  Vectors use a Linear layer.
    """

    def __init__(self, method: str, s_shape: Shape, t_shape: Shape, relu: bool = True):
        super().__init__()
        check_same_rank(method, [(s_shape, t_shape)], spatial=False, what="the paired features")
        rank = len(s_shape) - 1
        cs, ct = s_shape[0], t_shape[0]
        s_sp, t_sp = s_shape[1:], t_shape[1:]
        self.resize: tuple[int, ...] | None = None
        if rank == 0:
            self.layer: nn.Module = nn.Linear(cs, ct)
        elif all(s == 2 * t for s, t in zip(s_sp, t_sp)):
            self.layer = CONV_LAYERS[rank](cs, ct, 3, stride=2, padding=1)
        elif all(2 * s == t for s, t in zip(s_sp, t_sp)):
            self.layer = CONV_TRANSPOSED[rank](cs, ct, 4, stride=2, padding=1)
        elif all(s >= t for s, t in zip(s_sp, t_sp)):
            self.layer = CONV_LAYERS[rank](cs, ct, tuple(1 + s - t for s, t in zip(s_sp, t_sp)))
        else:
            self.layer = CONV_LAYERS[rank](cs, ct, 1)
            self.resize = tuple(t_sp)
        self.bn = batch_norm(ct, rank)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer(x)
        if self.resize is not None:
            x = pool_to(x, self.resize)
        x = self.bn(x)
        return x.relu() if self.relu else x


FeatureLoss = Callable[[Features | None, Features], Tensor]


def run_init_stage(method: str, teacher: nn.Module, model: nn.Module, state, loss_fn: FeatureLoss,
                   params: Iterable[nn.Parameter], epochs: int, lr: float, momentum: float = 0.9,
                   weight_decay: float = 5e-4, trainables: Iterable[nn.Module] = (),
                   use_student: bool = True, lr_at: Callable[[int], float] | None = None,
                   inputs: Callable[[Tensor], Tensor] | None = None) -> list[float]:
    """Minimise ``loss_fn(student features, teacher features)`` over ``params`` for ``epochs`` passes of
    ``state.train_loader`` with SGD (the CRD benchmark's ``helper/pretrain.py`` recipe); returns the mean loss of
    each epoch.  The teacher runs frozen in eval mode, ``trainables`` in train mode.  The student's stages run in
    train mode and its head (the classifier and anything outside ``model.stages``, e.g. a wide ResNet's final BN)
    in eval mode, as the reference sets ``model_s.eval()`` and then its feature modules to train mode; callers
    pass the stages' parameters (``model.stages.parameters()``), the reference's ``get_feat_modules()``.  With
    ``use_student=False`` the student does not run (loss_fn gets None; its BN statistics stay put).
    ``lr_at(epoch)`` overrides the constant rate; ``inputs`` maps a batch's inputs first (SSKD's rotations).

    With several processes each runs this on its part of every global batch, weights its loss by that share and
    averages the gradients before each step (as DDP does in the main loop), so every process takes the step of
    the global batch and ends the stage with the same parameters.
    """
    params = [p for p in params if p.requires_grad]
    if epochs <= 0 or not params:
        return []
    loader = getattr(state, "train_loader", None)
    if loader is None:
        raise ConfigError(f"{method}: the initialisation stage needs the training data (state.train_loader)")
    trainables = list(trainables)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    if use_student:
        for stage in model.stages:
            stage.train()
    was = [m.training for m in trainables]
    for m in trainables:
        m.train()
    teacher.eval()
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    history = []
    # a stage can take longer than the run it prepares (SSKD's 60 epochs): it shows progress like the loop
    name = f"{getattr(state, 'desc', '')} {method} initialisation stage".strip()
    progress = Progress(getattr(state, "display", "off"), name, epochs, len(loader))
    try:
        _stage_epochs(method, teacher, model, loader, loss_fn, params, opt, epochs, use_student, lr_at, inputs,
                      history, progress)
    finally:
        progress.close()
    # gradients of the stage must not leak into the first step of distillation
    for p in params:
        p.grad = None
    for m, w in modes.items():
        m.training = w
    for m, w in zip(trainables, was):
        m.train(w)
    return history


def _stage_epochs(method: str, teacher: nn.Module, model: nn.Module, loader, loss_fn: FeatureLoss,
                  params: list[nn.Parameter], opt: torch.optim.Optimizer, epochs: int, use_student: bool,
                  lr_at: Callable[[int], float] | None, inputs: Callable[[Tensor], Tensor] | None,
                  history: list[float], progress: Progress) -> None:
    for epoch in range(epochs):
        if lr_at is not None:
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch)
        sums = None
        for batch in loader.epoch(epoch):
            x = batch.x if inputs is None else inputs(batch.x)
            with torch.no_grad():
                t = teacher(x, features=True)
            loss = loss_fn(model(x, features=True) if use_student else None, t)
            opt.zero_grad(set_to_none=True)
            (loss * shard_weight(batch_part(batch))).backward()
            average_gradients(params)
            opt.step()
            bs = batch.y.shape[0]
            step = torch.stack([loss.detach().double() * bs, torch.tensor(float(bs), dtype=torch.float64,
                                                                          device=loss.device)])
            sums = step if sums is None else sums + step
            progress.step()
        total, n = (float(v) for v in all_reduce_sum(sums)) if sums is not None else (0.0, 0.0)
        if not math.isfinite(total):
            raise DivergenceError(f"{method}: the initialisation-stage loss became NaN/Inf in epoch {epoch + 1}"
                                  " (try a lower init_lr)")
        history.append(total / max(n, 1.0))
        progress.end_epoch(epoch + 1, {"loss": history[-1]})


def softplus_inverse(y: float) -> float:
    """x such that softplus(x) = y (y > 0)."""
    return y + math.log(-math.expm1(-y))
