"""ReviewKD: distilling knowledge via knowledge review (Chen, Liu, Zhao & Jia, CVPR 2021).

Each teacher stage is the target of a student representation that *reviews* the student's deeper stages: going
from the deepest level to the shallowest, an attention-based fusion (ABF) module maps the student's feature of that
level (1x1 convolution + BN to ``mid`` channels), fuses it with the residual passed on from the level below
(nearest-upsampled; two sigmoid attention maps from a 1x1 convolution of both weigh the two) and maps the result to
the teacher's channels (3x3 convolution + BN).  The levels are the stages after the stem and the pooled embedding,
a 1x1 map, which starts the chain without fusion.  Each output is compared with its teacher feature by the
hierarchical context loss (HCL): the mean squared error of the maps plus those of their average-pooled 4x4, 2x2 and
1x1 versions (each only where smaller than the map), weighted 1, 1/2, 1/4, 1/8 and normalised by the weights used;
the levels are summed::

    loss = gamma * CE + beta * min(e / warmup_epochs, 1) * sum_levels HCL(ABF_level(...), teacher_level)

Defaults are those of the code behind the paper's CIFAR-100 tables and of mdistiller (dvlab-research/ReviewKD @
cede6ea, ``CIFAR-100/model/reviewkd.py``, ``script/reviewKD.sh``; megvii-research/mdistiller @ a08d46f,
``mdistiller/distillers/ReviewKD.py``, ``configs/cifar100/reviewkd.yaml``): beta 5 (the script's weight for most
CIFAR pairs; it uses 8 for ShuffleNetV2, 0.6 for resnet20 and 1 for resnet32 students), CE weight 1, no logit KD,
20 warm-up epochs, ``mid = min(512, student's embedding width)``, nearest interpolation, kaiming-uniform (a = 1)
convolutions.  Both codes take the teacher's *pre-activation* features (``Features.preact``) and the student's
post-activation ones (``Features.stages``), and the pooled embeddings of both; kdlab does the same.

Where the two codes differ, kdlab follows mdistiller and says so: mdistiller counts epochs from 1 (the first
epoch's factor is 1/20), the authors' script from 0 (factor 0: ``warmup_counts_from: 0``); the authors' script
never puts the teacher in eval mode (its batch norms use each batch's statistics), mdistiller and kdlab keep the
teacher in eval mode.  The authors' code also reads a ``MAX_MID_CHANNEL`` setting that it never uses (512 is
written in the code): kdlab's ``max_mid_channels`` does take effect.

Heterogeneous pairs: the stages after the stem are paired from the deepest backwards; each ABF output takes the
teacher's channels and, where the spatial sizes differ, the teacher's size (nearest interpolation before the 3x3
convolution, as the code's ``out_shape``).  Works on images and on 1D sequences (the same modules with 1D
convolutions); not on MLPs (no feature maps).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.errors import ConfigError
from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import (
    ADAPTIVE_POOLS,
    BATCH_NORMS,
    CONV_LAYERS,
    describe,
    pair_last,
    require_shapes,
)
from kdlab.methods.distiller import Distiller, DistillerParams
from kdlab.models.contract import Features

__all__ = ["ABF", "ReviewKD", "hcl_loss", "warmup_factor"]

PYRAMID = (4, 2, 1)


def hcl_loss(student: list[Tensor], teacher: list[Tensor], pyramid: tuple[int, ...] = PYRAMID) -> Tensor:
    """Hierarchical context loss summed over levels: per level the MSE of the maps and of their average-pooled
    ``l x l`` versions for each ``l`` of ``pyramid`` smaller than the map's height, weighted 1, 1/2, 1/4, ...
    (halving for each size used) and divided by the sum of the weights used."""
    total = student[0].new_zeros(())
    for fs, ft in zip(student, teacher):
        loss, weight, weights = F.mse_loss(fs, ft), 1.0, 1.0
        pool = ADAPTIVE_POOLS[fs.dim() - 2]
        for size in pyramid:
            if size >= fs.shape[2]:
                continue
            weight /= 2
            loss = loss + weight * F.mse_loss(pool(fs, size), pool(ft, size))
            weights += weight
        total = total + loss / weights
    return total


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """``min(epoch / warmup_epochs, 1)``; no warm-up at 0 epochs."""
    return 1.0 if warmup_epochs <= 0 else min(epoch / warmup_epochs, 1.0)


def _conv_bn(c_in: int, c_out: int, kernel: int, dims: int) -> nn.Sequential:
    conv = CONV_LAYERS[dims](c_in, c_out, kernel, padding=kernel // 2, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)  # the authors' initialisation
    return nn.Sequential(conv, BATCH_NORMS[dims](c_out))


class ABF(nn.Module):
    """Attention-based fusion of one level: ``(output for the teacher's level, residual for the next level)``;
    ``dims`` spatial axes (2: images, 1: sequences)."""

    def __init__(self, c_in: int, mid: int, c_out: int, fuse: bool, dims: int = 2):
        super().__init__()
        self.conv1 = _conv_bn(c_in, mid, 1, dims)
        self.conv2 = _conv_bn(mid, c_out, 3, dims)
        self.att_conv = nn.Sequential(CONV_LAYERS[dims](2 * mid, 2, 1), nn.Sigmoid()) if fuse else None

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            y = F.interpolate(residual, size=tuple(x.shape[2:]), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, :1] + y * z[:, 1:2]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _as_map(embedding: Tensor, dims: int) -> Tensor:
    return embedding.view(*embedding.shape, *([1] * dims))


class ReviewKDParams(DistillerParams):
    alpha: float = Field(0.0, ge=0, description="weight of an extra logit KD term (the authors' runs: none)")
    warmup_epochs: int = Field(20, ge=0, description="epochs over which the review loss's weight rises "
                                                     "linearly to beta")
    warmup_counts_from: Literal[0, 1] = Field(
        1, description="1: the first epoch's factor is 1/warmup_epochs (mdistiller); 0: it is 0 (the authors' "
                       "CIFAR script)")
    max_mid_channels: int = Field(512, gt=0, description="the fusion width: min(this, the student's embedding "
                                                         "width)")


@register_distill_method("reviewkd", needs_teacher=True, paper="Chen et al. 2021")
class ReviewKD(Distiller):
    """ReviewKD: student stages fused deep-to-shallow (ABF) match the teacher's pre-activations (HCL)."""

    Params = ReviewKDParams
    # the authors' weight; ReviewKD is not in SoTeacher's table of halved feature-loss weights
    BETA = {"standard": 5.0, "soteacher": 5.0}

    def __init__(self, params: ReviewKDParams, ctx: DistillContext):
        super().__init__(params, ctx)
        require_shapes("reviewkd", self)
        s_shapes, t_shapes = pair_last(self.student_shapes[1:], self.teacher_shapes[1:])
        if not s_shapes:
            raise ConfigError("reviewkd: both networks need at least one stage after the stem")
        self.dims = len(s_shapes[0]) - 1
        for s, t in zip(s_shapes, t_shapes):
            if len(s) != len(t) or self.dims not in (1, 2) or len(s) != self.dims + 1:
                raise ConfigError(f"reviewkd: needs feature maps of images or sequences of the same kind after the "
                                  f"stem, got student {describe(s)}, teacher {describe(t)}")
        self.levels = len(s_shapes)
        self.out_sizes = [tuple(t[1:]) for t in t_shapes] + [(1,) * self.dims]
        self.warmup_epochs, self.counts_from = params.warmup_epochs, params.warmup_counts_from
        mid = min(params.max_mid_channels, self.student_dim)
        # deepest first: the pooled embedding (no fusion), then the stages from the last to the first
        ins = [self.student_dim] + [s[0] for s in reversed(s_shapes)]
        outs = [self.teacher_dim] + [t[0] for t in reversed(t_shapes)]
        self.abfs = nn.ModuleList(ABF(c_in, mid, c_out, i > 0, self.dims)
                                  for i, (c_in, c_out) in enumerate(zip(ins, outs)))

    def review(self, stages: list[Tensor], embedding: Tensor) -> list[Tensor]:
        """The ABF outputs, shallowest level first and the pooled level last (the teacher targets' order)."""
        xs = [_as_map(embedding, self.dims), *reversed(stages[len(stages) - self.levels:])]
        sizes = list(reversed(self.out_sizes))
        outputs, residual = [], None
        for abf, x, size in zip(self.abfs, xs, sizes):
            out, residual = abf(x, residual, size)
            outputs.append(out)
        return outputs[::-1]

    def targets(self, t: Features) -> list[Tensor]:
        return [*t.preact[len(t.preact) - self.levels:], _as_map(t.embedding, self.dims)]

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        epoch = 1 if state is None else state.epoch + self.counts_from
        return warmup_factor(epoch, self.warmup_epochs) * hcl_loss(self.review(s.stages[1:], s.embedding),
                                                                  self.targets(t))
