"""Factor transfer (Kim, Park & Kwak, NeurIPS 2018, "Paraphrasing Complex Network: Network Compression via
Factor Transfer").

Two stages.  First a paraphraser P (a convolutional auto-encoder with paraphrase rate k = 0.5) is trained on the
teacher's last feature map x alone, L_rec = ||x - P(x)||^2, the teacher frozen.  Then the student is trained
with a translator T on its last feature map, matching the paraphraser's encoding (the teacher factor F_T) with
its own (the student factor F_S = T(x_S)):

    L_FT = || F_T / ||F_T||_2 - F_S / ||F_S||_2 ||_p ,  p = 1                      (paper, Eq. 3)

Paper vs. code (CRD benchmark ``FactorTransfer`` + ``helper/pretrain.py``), default ``mode="code"``: the code
does not compare the factors themselves but their attention maps (channel mean of F^2, flattened,
L2-normalised, as in AT) by the mean absolute difference; ``mode="paper"`` flattens each whole factor,
L2-normalises it and takes the L1 norm of the difference per sample, averaged over the batch.  Both use the
code's modules: paraphraser conv3x3 x3 (C -> C -> kC -> kC) + LeakyReLU(0.1) and a mirrored transposed-conv
decoder, no BN; translator conv3x3 x3 (C_S -> C_S -> kC_T -> kC_T) with BN + LeakyReLU(0.1).  The paraphraser
is trained for ``init_epochs`` (30) by SGD at ``init_lr`` (0.01: the code picks it for CIFAR ResNet/WRN
students and the run's learning rate for the others), momentum 0.9, weight decay 5e-4, then frozen; the
translator trains with the student.

Features: the last stage's output (``Features.stages[-1]``, the reference's ``feat[-2]``).  Heterogeneous pairs:
the translator maps the student's channels to the teacher factor's; factor maps of different spatial size are
average-pooled to the smaller size.  Works on 1D sequences (Conv1d modules); an MLP has no spatial axis:
ConfigError.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import (
    CONV_LAYERS,
    CONV_TRANSPOSED,
    batch_norm,
    check_same_rank,
    pool_pair,
    require_shapes,
    run_init_stage,
)
from kdlab.methods.distiller import Distiller, DistillerParams
from kdlab.models.contract import Features

__all__ = ["FT", "Paraphraser", "Translator", "factor_loss"]


def _factor_map(f: Tensor) -> Tensor:
    return F.normalize(f.pow(2).mean(1).flatten(1), dim=1)


def factor_loss(factor_s: Tensor, factor_t: Tensor, mode: str = "code") -> Tensor:
    """FT loss between the student's (translated) and the teacher's (paraphrased) factors."""
    factor_s, factor_t = pool_pair(factor_s, factor_t)
    if mode == "code":
        return (_factor_map(factor_s) - _factor_map(factor_t)).abs().mean()
    diff = F.normalize(factor_s.flatten(1), dim=1) - F.normalize(factor_t.flatten(1), dim=1)
    return diff.abs().sum(1).mean()


def _block(conv: type[nn.Module], cin: int, cout: int, rank: int, bn: bool) -> list[nn.Module]:
    return [conv(cin, cout, 3, padding=1), batch_norm(cout, rank) if bn else nn.Identity(), nn.LeakyReLU(0.1)]


class Paraphraser(nn.Module):
    """Convolutional auto-encoder of a teacher feature map; ``encode`` gives the teacher factor."""

    def __init__(self, channels: int, rank: int, rate: float = 0.5, bn: bool = False):
        super().__init__()
        c, k = channels, max(1, int(channels * rate))
        conv, convt = CONV_LAYERS[rank], CONV_TRANSPOSED[rank]
        self.encoder = nn.Sequential(*_block(conv, c, c, rank, bn), *_block(conv, c, k, rank, bn),
                                     *_block(conv, k, k, rank, bn))
        self.decoder = nn.Sequential(*_block(convt, k, k, rank, bn), *_block(convt, k, c, rank, bn),
                                     *_block(convt, c, c, rank, bn))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        factor = self.encoder(x)
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """Convolutional encoder of a student feature map into the teacher factor's channel count."""

    def __init__(self, channels: int, factor_channels: int, rank: int, bn: bool = True):
        super().__init__()
        c, k = channels, factor_channels
        conv = CONV_LAYERS[rank]
        self.encoder = nn.Sequential(*_block(conv, c, c, rank, bn), *_block(conv, c, k, rank, bn),
                                     *_block(conv, k, k, rank, bn))

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


@register_distill_method("ft", needs_teacher=True, paper="Kim et al. 2018",
                         own_teacher_passes="initialisation stage (paraphraser)")
class FT(Distiller):
    """Factor transfer: a pre-trained paraphraser of the teacher's last map, a translator on the student's."""

    class Params(DistillerParams):
        rate: float = Field(0.5, gt=0, description="paraphrase rate k: factor channels / teacher channels")
        mode: Literal["code", "paper"] = Field("code", description="code: L1 of the factors' attention maps; "
                                                                   "paper: L1 of the normalised factors")
        init_epochs: int = Field(30, ge=0, description="epochs of paraphraser training before distillation")
        init_lr: float = Field(0.01, gt=0, description="SGD learning rate of the paraphraser stage")

    BETA = {"standard": 200.0, "soteacher": 100.0}

    PROTOCOLS = {"crd": "alone", "sftn": "with_kd", "soteacher": "with_kd"}

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        rate, mode, init_epochs, init_lr = params.rate, params.mode, params.init_epochs, params.init_lr
        require_shapes("ft", self)
        s_shape, t_shape = self.student_shapes[-1], self.teacher_shapes[-1]
        check_same_rank("ft", [(s_shape, t_shape)], spatial=True, what="last stage outputs")
        rank = len(t_shape) - 1
        self.paraphraser = Paraphraser(t_shape[0], rank, rate)
        factor_channels = max(1, int(t_shape[0] * rate))
        self.translator = Translator(s_shape[0], factor_channels, rank)
        # the paraphraser is trained only in the initialisation stage, then frozen: keep it out of the
        # student's optimiser
        self.paraphraser.requires_grad_(False)
        self.mode, self.init_epochs, self.init_lr = mode, init_epochs, init_lr
        self.init_history: list[float] = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.paraphraser.eval()  # a fixed function of the teacher during distillation (the reference's eval())
        return self

    def method_loss(self, s: Features, t: Features, batch, state) -> Tensor:
        with torch.no_grad():
            factor_t, _ = self.paraphraser(t.stages[-1])
        return factor_loss(self.translator(s.stages[-1]), factor_t, self.mode)

    def initialize(self, model: nn.Module, state) -> None:
        def reconstruction(s: Features | None, t: Features) -> Tensor:
            x = t.stages[-1]
            return F.mse_loss(self.paraphraser(x)[1], x)

        self.paraphraser.requires_grad_(True)
        try:
            self.init_history = run_init_stage("ft", self.teacher, model, state, reconstruction,
                                               self.paraphraser.parameters(), self.init_epochs, self.init_lr,
                                               trainables=[self.paraphraser], use_student=False)
        finally:
            self.paraphraser.requires_grad_(False)
