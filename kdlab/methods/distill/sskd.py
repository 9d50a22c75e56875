"""Self-supervised knowledge distillation (Xu, Liu, Li & Loy, ECCV 2020, "Knowledge Distillation Meets
Self-Supervision").

Every batch is expanded with transformed copies of each input (images: rotations by 90, 180, 270 degrees), so the
networks see 4B inputs.  Both networks carry a self-supervision head (Linear-ReLU-Linear on the pooled
embedding); the rows of ``A = cos(head(x~_i), head(x_j))`` compare each transformed copy with every original of
the batch (a 3B x B matrix whose "correct" column is the copy's own original).  The student's loss (paper Eq. 7)::

    lambda1 * CE(s(x), y) + lambda2 * KD_T(s(x), t(x))
      + lambda3 * KD_tf_T(s(x~), t(x~))          on the transformed copies  ("tf", label-level knowledge)
      + lambda4 * KL_ss_T(softmax(A_t) || softmax(A_s))                         ("ss", self-supervision)

with KD at T = 4, the tf term at T = 4 and the ss term at T = 0.5 (each KL scaled by T^2, averaged over the kept
rows).  Noisy teacher knowledge is dropped: on the transformed copies, rows where the teacher ranks the true
class (tf) or the own original (ss) first are kept, plus the ``ratio_tf`` (1.0) / ``ratio_ss`` (0.75) fraction of
the other rows that it ranks best.  With several processes the similarity rows and the transformed copies'
terms are computed over the global batch (every process's samples gathered), as one process computes them.

The teacher's head is trained first, in the initialisation stage, with the teacher frozen (eval mode): ``ss_epochs``
(60) epochs of cross-entropy over the rows of A_t (no temperature), SGD lr 0.05 (x0.1 at epochs 30 and 45),
momentum 0.9, weight decay 5e-4, exactly as the authors' code (xuguodong03/SSKD, student.py) does before training
the student; the head is then frozen and saved with the run's objective.  The student's head is trained with the
student.

Defaults: lambda1..4 = 1.0, 1.0, 2.7, 10.0 (standard teacher) or 1.0, 1.0, 1.0, 10.0 (``beta_preset:
soteacher``), the settings of the SoTeacher paper; ``gamma`` / ``alpha`` are lambda1 / lambda2 and ``tf_weight``
/ ``ss_weight`` are lambda3 / lambda4 (``beta`` scales both and defaults to 1).  The authors' code defaults to
lambda1 = 0.1, lambda2 = 0.9 instead.  Where kdlab differs from that code: the code draws an independent random
crop for each rotated copy (rotating the flipped image first); kdlab rotates the batch as augmented by the data
set, so the four copies share one crop.  The running accuracy is the student's on the untransformed inputs.

Works for any pair (each network has its own head; only the B x 3B similarity matrices are compared).  Inputs:
square images (rotations) and 1D sequences, where kdlab uses the four transforms identity, time reversal, sign
flip and both (kdlab's choice: the paper is image-only); vector inputs are rejected.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt
from torch import Tensor

from kdlab.core.distributed import all_gather_cat, gather_with_grad
from kdlab.core.errors import ConfigError
from kdlab.core.registry import register_distill_method
from kdlab.methods.base import StepOutput
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._feature_tools import run_init_stage
from kdlab.methods.distiller import Distiller, DistillerParams, kd_loss

__all__ = ["SSKD", "keep_confident", "similarity_rows", "transform_batch"]

TF_WEIGHT = {"standard": 2.7, "soteacher": 1.0}


def transform_batch(x: Tensor) -> Tensor:
    """(B, ...) -> (4B, ...): each input followed by its three transformed copies (rotations for images)."""
    if x.dim() == 4:
        if x.shape[2] != x.shape[3]:
            raise ConfigError(f"sskd: rotations need square images, got {tuple(x.shape[2:])}")
        views = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    elif x.dim() == 3:
        rev = x.flip(2)
        views = [x, rev, -x, -rev]
    else:
        raise ConfigError("sskd: needs image or sequence inputs (vectors have no natural transformations)")
    return torch.stack(views, dim=1).flatten(0, 1)


def similarity_rows(rep: Tensor) -> Tensor:
    """Cosine similarity of every transformed copy (3B rows) with every original (B columns)."""
    rep = F.normalize(rep.view(-1, 4, rep.shape[1]), dim=2)
    return rep[:, 1:].flatten(0, 1) @ rep[:, 0].t()


def keep_confident(scores: Tensor, target: Tensor, ratio: float) -> Tensor:
    """Rows where ``scores`` rank ``target`` first, plus the ``ratio`` of the others where it ranks best."""
    rank = (scores > scores.gather(1, target.unsqueeze(1))).sum(1)
    wrong = int((rank > 0).sum())
    n_keep = scores.shape[0] - wrong + int(wrong * ratio)
    return torch.sort(torch.argsort(rank, stable=True)[:n_keep]).values


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


class SSKDParams(DistillerParams):
    beta: float | None = Field(None, ge=0, description="scale of both self-supervised terms (default 1)")
    tf_weight: float | None = Field(None, ge=0, description="lambda3 (default: 2.7 standard, 1.0 soteacher)")
    ss_weight: float = Field(10.0, ge=0, description="lambda4")
    tf_T: float = Field(4.0, gt=0, description="temperature of the transformed-copy KD")
    ss_T: float = Field(0.5, gt=0, description="temperature of the similarity KL")
    ratio_tf: float = Field(1.0, ge=0, le=1, description="share of teacher-misranked copies kept (tf)")
    ratio_ss: float = Field(0.75, ge=0, le=1, description="share of teacher-misranked rows kept (ss)")
    ss_epochs: int = Field(60, ge=0, description="epochs of training the teacher's head before distillation")
    ss_lr: float = Field(0.05, gt=0, description="learning rate of the teacher's head")
    ss_milestones: list[NonNegativeInt] = Field([30, 45], description="epochs where the head's learning rate "
                                                "drops x0.1")


@register_distill_method("sskd", needs_teacher=True, paper="Xu et al. 2020",
                         own_teacher_passes="rotated copies of every batch, and the head's initialisation stage",
                         shares_batch_pass=False)
class SSKD(Distiller):
    """SSKD: CE + KD + KD on rotated copies + KL of self-supervised similarity distributions."""

    Params = SSKDParams
    BETA = {"standard": 1.0, "soteacher": 1.0}
    PROTOCOLS = {"sftn": "own", "soteacher": "own"}
    # protocol -> teacher kind -> weights (lambda_1..4 = gamma, alpha, tf_weight, ss_weight): SFTN ran "the
    # implementations provided by the authors", whose defaults these are; SoTeacher App. G.2 gives its own
    PROTOCOL_WEIGHTS = {
        "sftn": {"standard": {"gamma": 0.1, "alpha": 0.9, "tf_weight": 2.7, "ss_weight": 10.0, "beta": 1.0,
                              "T": 4.0}},
        "soteacher": {"standard": {"gamma": 1.0, "alpha": 1.0, "tf_weight": 2.7, "ss_weight": 10.0, "beta": 1.0,
                                   "T": 4.0},
                      "soteacher": {"gamma": 1.0, "alpha": 1.0, "tf_weight": 1.0, "ss_weight": 10.0, "beta": 1.0,
                                    "T": 4.0}}}

    def __init__(self, params: Params, ctx: DistillContext):
        super().__init__(params, ctx)
        student, data = ctx.student, ctx.data
        tf_weight, ss_weight, tf_T, ss_T = params.tf_weight, params.ss_weight, params.tf_T, params.ss_T
        ratio_tf, ratio_ss, ss_epochs, ss_lr = params.ratio_tf, params.ratio_ss, params.ss_epochs, params.ss_lr
        ss_milestones, beta_preset = params.ss_milestones, params.beta_preset
        if student is None or data is None:
            raise ConfigError("sskd: needs the student and the data set (to size its heads)")
        transform_batch(torch.zeros(1, *data.input_shape))  # fail now on unsupported inputs
        self.tf_weight = TF_WEIGHT[beta_preset] if tf_weight is None else tf_weight
        self.ss_weight, self.tf_T, self.ss_T = ss_weight, tf_T, ss_T
        self.ratio_tf, self.ratio_ss = ratio_tf, ratio_ss
        self.ss_epochs, self.ss_lr, self.ss_milestones = ss_epochs, ss_lr, list(ss_milestones)
        self.head_s = _head(self.student_dim)
        self.head_t = _head(self.teacher_dim)
        self.head_t.requires_grad_(False)  # trained in the initialisation stage only, never by the loop's optimizer

    def initialize(self, model: nn.Module, state) -> None:
        """Train the teacher's self-supervision head on the frozen teacher (authors' first stage)."""
        def head_loss(_, t) -> Tensor:
            sim = similarity_rows(gather_with_grad(self.head_t(t.embedding)))  # the global batch's rows
            target = torch.arange(sim.shape[1], device=sim.device).repeat_interleave(3)
            return F.cross_entropy(sim, target)

        self.head_t.requires_grad_(True)
        try:
            run_init_stage("sskd", self.teacher, model, state, head_loss, self.head_t.parameters(), self.ss_epochs,
                           self.ss_lr, trainables=[self.head_t], use_student=False, inputs=transform_batch,
                           lr_at=lambda e: self.ss_lr * 0.1 ** sum(e >= m for m in self.ss_milestones))
        finally:
            self.head_t.requires_grad_(False)

    def forward(self, model: nn.Module, batch, state) -> StepOutput:
        if state is not None and state.epoch < self.switch_epoch:
            return super().forward(model, batch, state)
        x4 = transform_batch(batch.x)
        s = model(x4, features=True)
        with torch.no_grad():
            t = self.teacher(x4, features=True)
            t_sim = similarity_rows(all_gather_cat(self.head_t(t.embedding)))
        # the relations of the self-supervised terms span the global batch (all processes' samples)
        s_sim = similarity_rows(gather_with_grad(self.head_s(s.embedding)))
        orig = torch.arange(x4.shape[0], device=x4.device) % 4 == 0
        s_out, t_out = s.logits[orig], t.logits[orig]
        s_aug, t_aug = gather_with_grad(s.logits[~orig]), all_gather_cat(t.logits[~orig])
        y = all_gather_cat(batch.y)

        ce = F.cross_entropy(s_out, batch.y)
        kd = kd_loss(s_out, t_out, self.T, self.standardise)
        keep = keep_confident(t_aug, y.repeat_interleave(3), self.ratio_tf)
        tf = kd_loss(s_aug[keep], t_aug[keep], self.tf_T, self.standardise) if keep.numel() else s_aug.sum() * 0
        own = torch.arange(y.shape[0], device=x4.device).repeat_interleave(3)
        keep = keep_confident(t_sim, own, self.ratio_ss)
        ss = kd_loss(s_sim[keep], t_sim[keep], self.ss_T) if keep.numel() else s_sim.sum() * 0
        loss = self.gamma * ce + self.alpha * kd + self.beta * (self.tf_weight * tf + self.ss_weight * ss)
        parts = {"ce": ce.detach(), "kd": kd.detach(), "tf": tf.detach(), "ss": ss.detach()}
        return StepOutput(loss, s_out, parts)
