"""The step interface shared by teacher-training and distillation methods.

An :class:`Objective` is what the training loop minimises.  The loop (``kdlab.engine.trainer.fit``) runs::

    on_fit_start(model, state)                     # initialisation stages; before DDP wraps model + objective
    for epoch in range(start, epochs):
        on_epoch_start(model, state)
        for batch in loader.epoch(epoch):          # Batch(x, y, index, part)
            out = objective(model, batch, state)   # StepOutput(loss, logits, parts)
            out.loss.backward(); optimizer.step()  # (loss weighted by the process's share of the global batch)
        on_epoch_end(model, state)                 # then evaluation and checkpointing
        extra = eval_metrics(model, state)         # optional extra metrics, on the epochs the test set is evaluated

With several processes (torchrun) every process runs this loop on its part of each global batch; see
:mod:`kdlab.core.distributed` for what an objective must do to stay one run (average the gradients of an
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

from kdlab.core.state import LoopState
from kdlab.data.base import Batch


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

    def __init__(self, params: Any = None, ctx: Any = None):
        """A registered method is built as ``Method(params, ctx)``: its validated ``Params`` object and its
        context (:mod:`kdlab.methods.context`); a method without parameters or context needs neither."""
        super().__init__()

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


class SharedTeacher:
    """One pass of a frozen teacher over each batch, for every student of a group (:func:`fit_group`).

    The loop calls ``begin(x)`` before the members' steps on a batch and ``end()`` after them; a member's request
    for the teacher's outputs on that very ``x`` gets the one pass (computed on the first request, with the
    features if any member distils features: the logits of that pass are the logits a logits-only pass gives).
    Requests on other inputs (SSKD's rotated copies, KD+'s mixes, initialisation stages) are the member's own.
    The training-set logits of the teacher-logit cache are computed once for the group too.
    """

    def __init__(self, teacher: nn.Module, features: bool):
        self.teacher, self.features = teacher, features
        self._x: Tensor | None = None
        self._out: Any = None
        self._train_logits: Tensor | None = None
        self.passes = 0  # teacher passes made for the group, and requests they served (a test counts both)
        self.hits = 0

    def begin(self, x: Tensor) -> None:
        self._x, self._out = x, None

    def end(self) -> None:
        self._x = self._out = None

    def __call__(self, x: Tensor, features: bool) -> Any:
        """The teacher's outputs on the batch's inputs (None: ``x`` is not the current batch's)."""
        if self._x is None or not _same_tensor(x, self._x) or (features and not self.features):
            return None
        if self._out is None:
            self.passes += 1
            self._out = self.teacher(x, features=True) if self.features else self.teacher(x)
        self.hits += 1
        if features:
            return self._out
        return self._out.logits if hasattr(self._out, "logits") else self._out

    def training_logits(self, compute) -> Tensor:
        if self._train_logits is None:
            self._train_logits = compute()
        return self._train_logits

    def attach(self, objective: nn.Module) -> int:
        """Give this pass to every part of ``objective`` that distils from this teacher; returns how many."""
        n = 0
        for m in objective.modules():
            if isinstance(m, DistillObjective) and m.teacher is self.teacher:
                m.__dict__["_shared"] = self
                n += 1
        return n


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    """The same tensor, or a view of the same memory as it (a wrapper may rebuild the batch around its tensors)."""
    return a is b or (a.device == b.device and a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
                      and a.data_ptr() == b.data_ptr())


class DistillObjective(Objective):
    """Base of distillation methods: holds the frozen teacher outside the module tree."""

    def __init__(self, teacher: nn.Module | None):
        super().__init__()
        self.__dict__["_teacher"] = teacher  # not a submodule: neither trained nor saved with the student
        self.__dict__["_shared"] = None

    @property
    def teacher(self) -> nn.Module:
        return self.__dict__["_teacher"]

    def teacher_forward(self, x: Tensor, features: bool) -> Any:
        """The teacher's logits (or :class:`Features`) on ``x``, from the group's shared pass when there is one;
        call under ``torch.no_grad``."""
        shared = self.__dict__.get("_shared")
        out = shared(x, features) if shared is not None else None
        if out is None:
            out = self.teacher(x, features=True) if features else self.teacher(x)
        return out

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
