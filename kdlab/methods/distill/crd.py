"""Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR 2020, "Contrastive Representation
Distillation").

Both networks' pooled embeddings go through a linear embedding head and L2 normalisation (``Embed``, dimension
``feat_dim``).  With the teacher's embedding as anchor, the student memory's entry for the same sample is the
positive and ``nce_k`` entries for other samples are negatives (and symmetrically with the student as anchor).
Scores are ``P(v, m) = exp(v . m / nce_t) / Z`` with ``Z`` fixed from the first batch (mean score x N), and the
NCE loss of the paper (Eq. 18; N = number of training samples, Pn = 1/N the uniform noise distribution)::

    L = -1/B sum_b [ log P_pos / (P_pos + k Pn) + sum_{j=1..k} log (k Pn) / (P_neg_j + k Pn) ]

summed over the two anchors.  After the scores, each sample's memory entries become
``normalise(m * memory + (1 - m) * embedding)`` (momentum ``nce_m``).

Where the paper and the reference code (HobbitLong/RepDistiller, crd/*; the code behind the seeds' tables)
differ, kdlab follows the code:

* negatives (``negatives: other_class``, the code's default ``mode: exact``): drawn uniformly, without
  replacement, from the training samples of *other classes* than the anchor's, not from all samples; with
  ``negatives: any`` they are drawn from every sample but the anchor itself;
* ``Z`` is estimated once, from the first batch, and then kept (a buffer, saved with the run);
* the memory is updated within the step, after the scores and before the gradient step.

With several processes (torchrun), Z is the mean over the whole first global batch, the negatives of a sample are
those one process would draw for it (drawn for the global batch from a generator seeded by the run's seed and
step), and the memory gathers every process's embeddings (every process holds the same memory); scores are
computed in float32 under mixed precision.

Options kdlab adds: ``memory: queue`` keeps only the last ``queue_size`` embeddings of both networks (the
positive is then the other network's current, detached embedding of the sample; entries of the anchor's class are
skipped), for data sets too large for a per-sample memory (e.g. ImageNet: 1.28 M x 128 x 2 floats);
``replace: true`` draws negatives with replacement (cheaper for very large memories).  The number of negatives
must not exceed what every sample can draw: with fewer samples of other classes than ``nce_k`` the method stops
with an error naming the largest valid ``nce_k`` (the reference silently switches to drawing with replacement).

Works with any pair of architectures (the embedding heads map both pooled embeddings, of any widths, to
``feat_dim``) and any input kind, 1D sequences included.  Defaults: CRD + KD, gamma = alpha = 1, beta = 0.8
(0.5 with a SoTeacher teacher), feat_dim 128, nce_k 16384, nce_t 0.07, nce_m 0.5.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdlab.core.distributed import all_reduce_sum
from kdlab.core.errors import ConfigError
from kdlab.core.registry import register_distill_method
from kdlab.data.base import batch_part
from kdlab.methods.context import DistillContext
from kdlab.methods.distill._contrast_memory import BankMemory, QueueMemory
from kdlab.methods.distiller import Distiller, DistillerParams

__all__ = ["CRD", "Embed", "contrast_scores", "nce_loss"]

EPS = 1e-7  # the reference's guard in the NCE ratios
_NEGATIVES = 0x43524420  # purpose of the step generator that draws the negatives


class Embed(nn.Module):
    """Linear map of a flattened feature to ``dim_out``, then L2 normalisation."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def contrast_scores(anchor: Tensor, rows: Tensor, temperature: float) -> Tensor:
    """exp(<anchor_b, rows_b,j> / T) for each of the (B, k+1) rows of the memory; not yet divided by Z.

    Always in float32: exp(1 / 0.07) overflows half precision, so mixed-precision autocast is switched off here.
    """
    with torch.autocast(anchor.device.type, enabled=False):
        dots = torch.bmm(rows.float(), anchor.float().unsqueeze(2)).squeeze(2)
    return torch.exp(dots / temperature)


def nce_loss(p: Tensor, num_data: int, valid: Tensor | None = None) -> Tensor:
    """NCE loss of normalised scores ``p`` (B, k+1), the positive in column 0 (CRD Eq. 18).

    ``valid`` (B, k) drops negatives that could not be drawn (a small queue); the noise term keeps k = p.shape[1]-1.
    """
    k = p.shape[1] - 1
    noise = k / num_data
    log_pos = torch.log(p[:, 0] / (p[:, 0] + noise + EPS))
    log_neg = torch.log(noise / (p[:, 1:] + noise + EPS))
    if valid is not None:
        log_neg = log_neg * valid
    return -(log_pos.sum() + log_neg.sum()) / p.shape[0]


class CRDParams(DistillerParams):
    feat_dim: int = Field(128, gt=0, description="dimension of the contrastive embedding")
    nce_k: int = Field(16384, gt=0, description="negatives per anchor")
    nce_t: float = Field(0.07, gt=0, description="temperature of the scores")
    nce_m: float = Field(0.5, ge=0, le=1, description="momentum of the per-sample memory")
    memory: Literal["bank", "queue"] = Field("bank", description="bank: one slot per training sample; queue: the "
                                             "last queue_size embeddings")
    queue_size: int = Field(16384, gt=0, description="length of the queue (memory: queue)")
    negatives: Literal["other_class", "any"] = Field(
        "other_class", description="other_class: negatives from other classes (reference code); any: any other sample")
    replace: bool = Field(False, description="draw negatives with replacement")


@register_distill_method("crd", needs_teacher=True, paper="Tian et al. 2020")
class CRD(Distiller):
    """CRD: NCE between embedding heads of both networks against a memory of negatives, plus KD."""

    Params = CRDParams
    BETA = {"standard": 0.8, "soteacher": 0.5}
    # SFTN Sec. 4.1 lists CRD [23] apart from the feature methods it runs jointly with KD: CRD as its own scripts run it
    PROTOCOLS = {"crd": "alone", "sftn": "alone", "soteacher": "with_kd"}
    needs_index = True

    def __init__(self, params: CRDParams, ctx: DistillContext):
        super().__init__(params, ctx)
        student, data = ctx.student, ctx.data
        feat_dim, nce_k, nce_t, nce_m = params.feat_dim, params.nce_k, params.nce_t, params.nce_m
        memory, queue_size, negatives, replace = params.memory, params.queue_size, params.negatives, params.replace
        if data is None or student is None:
            raise ConfigError("crd: needs the student and the data set (to size its heads and memory)")
        self.nce_k, self.nce_t = nce_k, nce_t
        self.num_data = len(data.train)
        self.embed_s = Embed(self.student_dim, feat_dim)
        self.embed_t = Embed(self.teacher_dim, feat_dim)
        if memory == "bank":
            self.memory = BankMemory(self.num_data, feat_dim, data.train.y, nce_m, negatives, replace)
        else:
            if nce_k > queue_size:
                raise ConfigError(f"method.nce_k: {nce_k} negatives do not fit in a queue of {queue_size}")
            self.memory = QueueMemory(queue_size, feat_dim, negatives, replace)
        limit = self.memory.max_negatives()
        if memory == "bank" and not replace and nce_k > limit:
            raise ConfigError(f"method.nce_k: {nce_k} negatives requested but some samples have only {limit} "
                              f"{'samples of other classes' if negatives == 'other_class' else 'other samples'} "
                              f"in this training set; set method.nce_k <= {limit}")
        # normalisation constants of the two score sets, fixed from the first batch (-1: not yet)
        self.register_buffer("z", torch.full((2,), -1.0))
        self._z_ready = False

    def method_loss(self, s, t, batch, state) -> Tensor:
        v_s, v_t = self.embed_s(s.embedding), self.embed_t(t.embedding)
        gen = state.generator(_NEGATIVES, v_s.device) if state is not None else None
        part = batch_part(batch)
        if isinstance(self.memory, BankMemory):
            mem_s, mem_t, valid = self.memory.rows(batch.index, batch.y, self.nce_k, gen, part)
        else:
            mem_s, mem_t, valid = self.memory.rows(batch.index, batch.y, self.nce_k, v_s, v_t, gen, part)
        out_s = contrast_scores(v_s, mem_t, self.nce_t)  # student anchor against the teacher memory
        out_t = contrast_scores(v_t, mem_s, self.nce_t)
        if not self._z_ready:  # checked once per process: the first batch of a fresh run sets Z
            with torch.no_grad():
                if bool((self.z < 0).any()):  # the mean score of the whole first global batch, times N
                    sums = all_reduce_sum(torch.stack([out_s.sum(), out_t.sum(), out_s.new_tensor(out_s.numel())]))
                    first = sums[:2] / sums[2] * self.num_data
                    self.z.copy_(torch.where(self.z < 0, first, self.z))
            self._z_ready = True
        loss = nce_loss(out_s / self.z[0], self.num_data, valid) + nce_loss(out_t / self.z[1], self.num_data, valid)
        self.memory.update(batch.index, batch.y, v_s, v_t)
        return loss
