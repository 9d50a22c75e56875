"""The step interface shared by teacher-training and distillation methods.

An :class:`Objective` is what the training loop minimises.  The loop (``kdlab.engine.trainer.fit``) runs::

    on_fit_start(model, state)                     # initialisation stages; before DDP wraps model + objective
    for epoch in range(start, epochs):
        on_epoch_start(model, state)
        for batch in loader.epoch(epoch):          # Batch(x, y, index, part)
            out = objective(model, batch, state)   # StepOutput(loss, logits, parts)
            out.loss.backward(); optimizer.step()  # (loss weighted by the process's share of the global batch)
        on_epoch_end(model, state)                 # then evaluation and checkpointing
        extra = eval_metrics(model, state)         # optional extra metrics for the epoch log

With several processes (torchrun) every process runs this loop on its part of each global batch; see
:mod:`kdlab.engine.distributed` for what an objective must do to stay one run (average the gradients of an
initialisation stage, gather per-sample state and list it in ``gathered_buffers``, compute terms that relate the
samples of a batch on the gathered global batch).

The objective owns every trainable part besides the model (regressors, embeddings, branches: its submodules) and
every piece of state that must survive a resume (its buffers, or ``extra_state``).  A frozen teacher is held
outside the module tree (see :meth:`DistillObjective.teacher`) so it is neither trained nor saved with the student.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..data.base import Batch
from ..engine.state import LoopState


class StepOutput(NamedTuple):
    loss: Tensor
    logits: Tensor  # the trained model's logits for the batch (for the running accuracy)
    parts: dict[str, Tensor]  # loss components, logged as running means


class Objective(nn.Module):
    """Base class of every method.  Subclasses implement :meth:`forward`; hooks are optional."""

    #: the loop passes sample indices in every batch anyway; methods that key state by index say so here
    needs_index: bool = False
    #: names of this module's buffers that it keeps equal on every process itself, by gathering (per-sample state):
    #: DistributedDataParallel must not broadcast them (submodules declare their own)
    gathered_buffers: tuple[str, ...] = ()

    def may_skip_parameters(self) -> bool:
        """Whether a step may leave some of the objective's trainable parameters without a gradient (DDP must then
        look for unused parameters, which costs a graph traversal per step)."""
        return False

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def on_fit_start(self, model: nn.Module, state: LoopState) -> None:
        pass

    def on_epoch_start(self, model: nn.Module, state: LoopState) -> None:
        pass

    def on_epoch_end(self, model: nn.Module, state: LoopState) -> None:
        pass

    def eval_metrics(self, model: nn.Module, state: LoopState) -> dict[str, float]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {}


class CrossEntropy(Objective):
    """Plain empirical risk: cross-entropy with the one-hot labels."""

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        logits = model(batch.x)
        loss = F.cross_entropy(logits, batch.y)
        return StepOutput(loss, logits, {"ce": loss.detach()})


class DistillObjective(Objective):
    """Base of distillation methods: holds the frozen teacher outside the module tree."""

    def __init__(self, teacher: nn.Module | None):
        super().__init__()
        self.__dict__["_teacher"] = teacher  # not a submodule: neither trained nor saved with the student

    @property
    def teacher(self) -> nn.Module:
        return self.__dict__["_teacher"]

    def _apply(self, fn, *args, **kwargs):  # keep the teacher on the student's device
        out = super()._apply(fn, *args, **kwargs)
        if self.__dict__.get("_teacher") is not None:
            self.__dict__["_teacher"]._apply(fn, *args, **kwargs)
        return out

    def train(self, mode: bool = True):
        super().train(mode)
        if self.__dict__.get("_teacher") is not None:
            self.__dict__["_teacher"].eval()  # the teacher always runs with its running BN statistics
        return self
