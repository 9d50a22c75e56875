"""Activation boundaries (Heo, Lee, Yun & Choi, AAAI 2019, "Knowledge Transfer via Distillation of Activation
Boundaries Formed by Hidden Neurons").

The student learns where the teacher's hidden neurons switch on: with pre-activations T of the teacher, r(S) of
the student (through a connector r), the indicator rho(T) = 1[T > 0], margin mu = 1 and sigma = ReLU,

    L_AB = || rho(T) * sigma(mu - r(S)) + (1 - rho(T)) * sigma(mu + r(S)) ||_2^2        (paper, Eq. 6)

i.e. a squared hinge pushing r(S) above +mu where the teacher neuron is active and below -mu where it is not.
AB is an initialisation method: the student's feature layers and the connectors are first trained on L_AB alone
for ``init_epochs`` (30, SGD at ``init_lr`` 0.05, momentum 0.9, weight decay 5e-4), then the student is trained
with CE (+ KD).

Paper vs. code (CRD benchmark ``ABLoss`` + ``Connector`` + ``helper/pretrain.py``, after the authors' code),
default ``mode="code"``: the code weights the loss of layer i of n by 2^(i - n + 1) (the deepest layer 1, each
shallower one half the next), sums over elements, divides by the batch size and scales by 3/1000;
``mode="paper"`` sums the layers unweighted and averages over the batch.  After the initialisation stage the
reference code adds no AB term (beta has no effect there: the published beta of 1 is passed but multiplied by
0); ``joint=True`` also adds beta * L_AB during distillation.

Features: the pre-activations of stages 1..N (``Features.preact[1:]``, the reference's ``preact=True``
``feat[1:-1]``), paired from the deepest stage.  What ``preact`` is, per model family (details in each model
module's docstring):

* CIFAR ResNets (``resnet8`` .. ``resnet110``, ``resnet8x2``, ``resnet8x4``, ``resnet32x4``) and the torchvision ResNets
  (``imagenet_resnet*``, ``ResNet50``, and ResNets wrapped by the ``torchvision`` adapter): the residual sum of the
  stage's last block before its ReLU;
* WRNs: the residual sum after the batch norm the network applies to it next (the next stage's first ``bn1``,
  the final BN for the last stage), as in the reference code; ``Features.stages`` hold the raw sums;
* VGG: the stage's last BN output before its ReLU;
* MobileNetV2: the stage output itself (a linear bottleneck, no ReLU), as in the reference;
* MobileNetV1: the stage's last pointwise BN output before its ReLU;
* ShuffleNetV1 / V2: the last block's output before its final ReLU (V2: channel-shuffled like the output);
* ``cnn1d`` and ``mlp``: the last BN output before the ReLU (``mlp`` without batch norm: the linear output);
* torchvision non-ResNets (through their FX graph): the input of a stage's final ReLU when it ends in one, else
  the stage output; other adapted models (``module``, ``timm``): the stage outputs themselves (hooks see module
  outputs only), post-ReLU where a stage ends in a ReLU; the teacher's indicator rho(T) is the same for T and
  ReLU(T), the student's side is then non-negative.

Heterogeneous pairs: a connector (the code's: identity when the shapes agree, else a convolution chosen from the
spatial sizes + BN, see ``Regressor``) maps each student pre-activation onto the teacher's shape.  Works on 1D
sequences and on MLPs (Linear + BN connectors on the hidden units' pre-activations); a pair of different kinds (a
CNN and an MLP) is a ConfigError.
"""

from __future__ import annotations

from typing import Literal

import torch.nn as nn
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import Regressor, check_same_rank, pair_last, require_shapes, run_init_stage
from kdlab.methods.distiller import Distiller, DistillerParams
from kdlab.models.contract import Features

__all__ = ["AB", "ab_layer_loss", "ab_loss"]


def ab_layer_loss(source: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """Summed squared hinge of one layer: ``source`` (connected student) vs the teacher's pre-activation."""
    on = target > 0
    below = (source - margin).pow(2) * (on & (source <= margin))
    above = (source + margin).pow(2) * (~on & (source > -margin))
    return (below + above).sum()


def ab_loss(sources: list[Tensor], targets: list[Tensor], margin: float = 1.0, mode: str = "code") -> Tensor:
    """AB loss over layers (shallow to deep), per sample of the batch."""
    n, b = len(sources), sources[0].shape[0]
    if mode == "code":
        weights = [2.0 ** (i - n + 1) for i in range(n)]
        return sum(w * ab_layer_loss(s, t, margin) for w, s, t in zip(weights, sources, targets)) / b * 3e-3
    return sum(ab_layer_loss(s, t, margin) for s, t in zip(sources, targets)) / b


@register_distill_method("ab", needs_teacher=True, paper="Heo et al. 2019",
                         own_teacher_passes="initialisation stage")
class AB(Distiller):
    """Activation-boundary transfer as an initialisation stage of the student, then CE + KD."""

    class Params(DistillerParams):
        margin: float = Field(1.0, gt=0, description="margin mu of the squared hinge")
        mode: Literal["code", "paper"] = Field("code", description="code: layers weighted 2^(i-n+1), x3/1000; "
                                                                   "paper: unweighted sum")
        init_epochs: int = Field(30, ge=0, description="epochs of the AB initialisation stage")
        init_lr: float = Field(0.05, gt=0, description="SGD learning rate of the initialisation stage")
        joint: bool = Field(False, description="also add beta * L_AB during distillation (the code adds nothing)")

    BETA = {"standard": 1.0, "soteacher": 0.5}

    PROTOCOLS = {"crd": "alone", "sftn": "with_kd", "soteacher": "with_kd"}

    def __init__(self, params: Params, ctx: DistillContext):
        margin, mode, init_epochs, init_lr = params.margin, params.mode, params.init_epochs, params.init_lr
        joint = params.joint
        self.__dict__["joint"] = joint  # read by distills_features() while the base class decides on caching
        super().__init__(params, ctx)
        require_shapes("ab", self)
        pairs = list(zip(*pair_last(self.student_shapes[1:], self.teacher_shapes[1:])))
        check_same_rank("ab", pairs, spatial=False, what="stage pre-activations")
        self.connectors = nn.ModuleList(nn.Identity() if s == t else Regressor("ab", s, t, relu=False)
                                        for s, t in pairs)
        self.margin, self.mode, self.joint = margin, mode, joint
        self.init_epochs, self.init_lr = init_epochs, init_lr
        self.init_history: list[float] = []
        if not joint:
            # distillation is plain CE + KD: skip the feature pass and the beta term
            self.beta, self.needs_features = 0.0, False

    def distills_features(self) -> bool:
        return self.joint  # the initialisation stage uses features; plain distillation only logits

    def ab(self, s: Features, t: Features) -> Tensor:
        g_s, g_t = pair_last(s.preact[1:], t.preact[1:])
        return ab_loss([c(f) for c, f in zip(self.connectors, g_s)], g_t, self.margin, self.mode)

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        return self.ab(s, t)

    def initialize(self, model: nn.Module, state) -> None:
        self.init_history = run_init_stage("ab", self.teacher, model, state, self.ab,
                                           [*model.stages.parameters(), *self.connectors.parameters()],
                                           self.init_epochs, self.init_lr, trainables=[self.connectors])
