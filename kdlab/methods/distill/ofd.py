"""A Comprehensive Overhaul of Feature Distillation (Heo, Kim, Yun, Park, Kwak & Choi, ICCV 2019; "OH" in the SFTN
tables).

The student's pre-ReLU feature at the end of each stage goes through a connector (1x1 convolution + batch norm) to
the teacher's width and is compared with the teacher's pre-ReLU feature, transformed by the margin ReLU
``sigma_m(T) = max(T, m)``, with the partial L2 distance (paper Eq. 2-4)::

    d_p(T, S) = sum_i  0                 if S_i <= T_i <= 0   (both "off": the student need not match)
                       (T_i - S_i)^2     otherwise

summed over channels and positions, averaged over the batch, and over stages weighted 1 / 2^(N - i) (the last
stage 1, the one before 1/2, ...).  The per-channel margin m is the expected value of the negative responses,
E[x | x < 0] = mu - sigma * phi(mu / sigma) / Phi(-mu / sigma) for x ~ N(mu, sigma^2), or -3 sigma when
Phi(-mu / sigma) <= 0.001 (paper Eq. 5 and the authors' code).

Defaults follow the authors' code (clovaai/overhaul-distillation, CIFAR-100 script) and mdistiller (CIFAR-100
config): the stages after the stem and the loss scaled by 1e-3 (beta = 1e-3, halved with a SoTeacher teacher;
mdistiller's ImageNet config uses 1e-4).  Both codes train CE + beta * L_OFD without logit KD; kdlab's default
adds KD (gamma = alpha = 1), as the SFTN paper says its feature methods, OH included, are trained (Sec. 4.1);
alpha = 0 gives the codes' loss.

The pre-ReLU features are ``Features.preact``, per model family (details in each model module's docstring):
CIFAR and torchvision ResNets: the residual sum of the stage's last block before its ReLU; WRNs: the residual sum
after the batch norm the network applies to it next (the next stage's first ``bn1``, the final BN for the last
stage), as in both codes; VGG, MobileNetV1: the stage's last BN output before its ReLU; MobileNetV2: the stage
output (a linear bottleneck); ShuffleNetV1 / V2: the last block's output before its final ReLU; ``cnn1d``,
``mlp``: the last BN output before the ReLU (``mlp`` without batch norm: the linear output); other adapted models
(``module``, ``timm``): the stage outputs themselves, post-ReLU where a stage ends in a ReLU (the margin ReLU then
leaves the non-negative teacher targets unchanged); ``torchvision`` non-ResNets (FX graph): the input of a stage's
final ReLU when it ends in one.

Where kdlab departs from the code, because it only sees the feature contract:

* Margins.  The code reads (mu, sigma) = (bias, |weight|) of the teacher's batch norm before the ReLU: the layer
  whose output is the pre-activation (WRN, VGG, MobileNetV1) or, for residual stages, the block's last BN, whose
  output *plus the shortcut* is the pre-ReLU feature, which the BN parameters do not describe.  With the teacher
  in train mode, as in the code (below), a BN output has per channel over the batch exactly mean = bias and std =
  |weight| (up to eps), so where the feature is a BN output the code's moments describe it exactly.  kdlab cannot
  name that layer for every model; it measures per-channel mean and std of the teacher's ``Features.preact``
  over one pass of the (augmented) training data in the initialisation stage (``margin: gaussian``, the paper's
  formula on measured moments), or the empirical mean of the negative responses directly (``margin:
  empirical``).  Margins are buffers, saved with the run.
* Teacher mode.  Both codes run the teacher in train mode while distilling: clovaai's CIFAR script calls
  ``train()`` on it, and mdistiller's ``OFD.train()`` replaces the base distiller's (which puts the teacher back
  in eval mode) and puts every child module, the teacher included, in train mode; the teacher's features then use
  each batch's statistics, and its running statistics are updated by every step (``no_grad`` does not stop
  that).  kdlab keeps every teacher in eval mode (running statistics): the targets of a sample do not depend on
  the rest of its batch, so they are identical with one or several processes and can be computed once and
  reused; the teacher's running statistics are never changed; and kdlab measures its margins on exactly these
  eval-mode features.
* Heterogeneous pairs: the connector maps student channels to teacher channels; when the spatial sizes differ the
  larger map is average-pooled to the smaller (mdistiller pools the teacher to the student's size); with fewer
  stages on one side the last ones are paired.

Works on images (1x1 Conv2d + BatchNorm2d), 1D sequences (Conv1d + BatchNorm1d) and vectors (Linear +
BatchNorm1d).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.distributed import all_reduce_sum
from kdlab.core.errors import ConfigError
from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import Distiller, DistillerParams

__all__ = ["OFD", "gaussian_margin", "margin_relu", "partial_l2"]


def gaussian_margin(mean: Tensor, std: Tensor) -> Tensor:
    """E[x | x < 0] for x ~ N(mean, std^2) per channel; -3 std where P(x < 0) <= 0.001 (authors' code)."""
    std = std.clamp_min(1e-12)
    z = mean / std
    p_neg = torch.special.ndtr(-z)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cond = mean - std * pdf / p_neg.clamp_min(1e-12)
    return torch.where(p_neg > 0.001, cond, -3 * std)


def _per_channel(v: Tensor, like: Tensor) -> Tensor:
    return v.view(1, -1, *([1] * (like.dim() - 2)))


def margin_relu(t: Tensor, margin: Tensor) -> Tensor:
    """max(t, m_c), the channel's margin broadcast over batch and positions."""
    return torch.maximum(t, _per_channel(margin, t))


def partial_l2(s: Tensor, t: Tensor, margin: Tensor) -> Tensor:
    """Partial L2 distance between the student's feature and the margin-ReLU'd teacher feature, summed over
    channels and positions and averaged over the batch."""
    s, target = s.float(), margin_relu(t.float(), margin.float())  # float32: the sum overflows half precision
    keep = (s > target) | (target > 0)
    return ((s - target).pow(2) * keep).sum() / s.shape[0]


def _connector(c_in: int, c_out: int, ndim: int) -> nn.Sequential:
    if ndim == 4:
        layers = [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
    elif ndim == 3:
        layers = [nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out)]
    else:
        layers = [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out)]
    conv = layers[0]
    fan_out = c_out * math.prod(getattr(conv, "kernel_size", (1,)))
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))  # the authors' initialisation
    return nn.Sequential(*layers)


def _pool_to(x: Tensor, size: tuple[int, ...]) -> Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.adaptive_avg_pool2d(x, size) if x.dim() == 4 else F.adaptive_avg_pool1d(x, size)


class OFDParams(DistillerParams):
    margin: Literal["gaussian", "empirical"] = Field(
        "gaussian", description="gaussian: E[x|x<0] of a normal with the measured moments; empirical: measured")
    margin_batches: int | None = Field(None, gt=0, description="training batches used to measure the teacher's "
                                       "pre-activations (default: one epoch)")


@register_distill_method("ofd", needs_teacher=True, paper="Heo et al. 2019",
                         own_teacher_passes="initialisation stage (margins)")
class OFD(Distiller):
    """Overhaul of feature distillation: margin-ReLU'd teacher pre-activations, partial L2, conv+BN connectors."""

    Params = OFDParams
    BETA = {"standard": 1e-3, "soteacher": 5e-4}
    PROTOCOLS = {"sftn": "with_kd"}  # "OH" [19] in SFTN Sec. 4.1's list of methods run with KD

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        if ctx.student is None or ctx.data is None:
            raise ConfigError("ofd: needs the student and the data set (to size its connectors)")
        self.margin_kind, self.margin_batches = params.margin, params.margin_batches
        n = min(len(self.student_shapes), len(self.teacher_shapes)) - 1  # the stages after the stem
        if n < 1:
            raise ConfigError("ofd: both models need at least one stage after the stem")
        self.s_shapes, self.t_shapes = self.student_shapes[-n:], self.teacher_shapes[-n:]
        self.connectors = nn.ModuleList(
            _connector(s[0], t[0], len(s) + 1) for s, t in zip(self.s_shapes, self.t_shapes))
        for i, t in enumerate(self.t_shapes):
            self.register_buffer(f"margin{i}", torch.zeros(t[0]))

    def margins(self) -> list[Tensor]:
        return [getattr(self, f"margin{i}") for i in range(len(self.connectors))]

    @torch.no_grad()
    def initialize(self, model: nn.Module, state) -> None:
        """Measure the teacher's pre-activation statistics on the training data and set the margins."""
        n = len(self.connectors)
        # per stage and channel: count, sum, sum of squares, sum of the negative values, count of the negatives
        acc = [torch.zeros(5, t[0], dtype=torch.float64, device=self.margin0.device) for t in self.t_shapes]
        for b, batch in enumerate(state.train_loader.epoch(0)):
            if self.margin_batches is not None and b >= self.margin_batches:
                break
            for a, f in zip(acc, self.teacher(batch.x, features=True).preact[-n:]):
                f = f.transpose(0, 1).reshape(f.shape[1], -1).double()
                a += torch.stack([torch.full_like(f[:, 0], f.shape[1]), f.sum(1), f.pow(2).sum(1),
                                  f.clamp_max(0).sum(1), (f < 0).sum(1).double()])
        acc = [all_reduce_sum(a) for a in acc]  # several processes: the statistics of the whole training set
        for i, (count, s1, s2, s_neg, n_neg) in enumerate(acc):
            mean = s1 / count
            std = (s2 / count - mean * mean).clamp_min(0).sqrt()
            m = gaussian_margin(mean, std) if self.margin_kind == "gaussian" else s_neg / n_neg.clamp_min(1)
            getattr(self, f"margin{i}").copy_(m.float())

    def method_loss(self, s, t, batch, state) -> Tensor:
        n = len(self.connectors)
        loss = 0.0
        for i, (conn, fs, ft, m) in enumerate(zip(self.connectors, s.preact[-n:], t.preact[-n:], self.margins())):
            fs = conn(fs)
            if fs.dim() > 2 and fs.shape[2:] != ft.shape[2:]:
                size = tuple(min(a, b) for a, b in zip(fs.shape[2:], ft.shape[2:]))
                fs, ft = _pool_to(fs, size), _pool_to(ft, size)
            loss = loss + partial_l2(fs, ft, m) / 2 ** (n - 1 - i)
        return loss
