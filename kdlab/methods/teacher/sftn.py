"""SFTN: student-friendly teacher networks (Park, Cha, Jeong, Kim & Han, 2021, Learning Student-Friendly Teacher
Networks for Knowledge Distillation).

The teacher is trained together with student branches: after teacher stage i (i < N) a branch applies a feature
transform T^i and then the student's stages j+1..N and head (j the student stage that teacher stage i feeds,
normally j = i).  The branches are dropped afterwards: the saved teacher is a plain model of its architecture.

    L_SFTN = lambda_T CE(q_T, y) + lambda_KL mean_i KL(q~_R^i || q~_T) + lambda_CE mean_i CE(q_R^i, y)   (3)-(6)

q~ are softmaxes at temperature tau~ (CIFAR defaults: lambda_T = 1, lambda_KL = 3, lambda_CE = 1, tau~ = 1;
ImageNet: lambda_KL = 1).  The KL term follows the paper's notation KL(q~_R || q~_T) by default; ``kl_direction:
teacher_branch`` gives KL(q~_T || q~_R), the direction of the usual KD loss.  Gradients of both branch terms reach
the teacher's stages (that is the method; ``detach_teacher_features`` exists only as an ablation).

T^i is a 3x3 convolution with stride 2 when the teacher's map is larger than the student stage expects, a 4x4
transposed convolution with stride 2 when it is smaller, a 1x1 convolution when equal (each followed by batch
norm and ReLU, kdlab's choice: the student stages expect post-activation inputs); it maps teacher channels to the
student stage's input channels.  Sizes are found by probing both models once.

Block mapping: with the same number of stages, teacher stage i feeds student stage i + 1.  When the counts differ
(or with ``block_map``), each teacher stage i < N_T is paired with the student boundary j (output of student stage
j, 1 <= j < N_S) of the same spatial size; teacher stages without such a boundary get no branch, and if no stage
pairs at all the error names both stage lists.  ``block_map: [[i, j], ...]`` sets the pairs explicitly.

Fine-tuning from a pretrained teacher (Sec. 4.6): ``pretrained`` (a teacher run folder or checkpoint) initialises
the teacher; for the first ``branch_only_epochs`` epochs only the branches train (teacher frozen, in eval mode),
then everything (paper: 30 + 30 epochs).  The branch architecture (``student``) may differ from the student that is
distilled later (the paper's Table 7).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor

from kdlab.config.components import ModelSpec
from kdlab.core.errors import ConfigError
from kdlab.core.registry import StrictParams, register_teacher_method
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.base import Objective, StepOutput
from kdlab.methods.context import TeacherContext
from kdlab.methods.distiller import probe_features
from kdlab.models import build_model


def transform_layer(c_in: int, c_out: int, size_in: tuple[int, ...], size_out: tuple[int, ...]) -> nn.Module:
    """T^i: 3x3 conv stride 2 (shrink), 4x4 transposed conv stride 2 (grow) or 1x1 conv (same size)."""
    dims = len(size_in)
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
    tconv = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}[dims]
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims]
    if size_in == size_out:
        layer, got = conv(c_in, c_out, 1, bias=False), tuple(size_in)
    elif all(a > b for a, b in zip(size_in, size_out)):
        layer, got = conv(c_in, c_out, 3, stride=2, padding=1, bias=False), tuple((a + 1) // 2 for a in size_in)
    elif all(a < b for a, b in zip(size_in, size_out)):
        layer, got = tconv(c_in, c_out, 4, stride=2, padding=1, bias=False), tuple(2 * a for a in size_in)
    else:
        got = None
    if got != tuple(size_out):  # the paper's transforms halve, double or keep the size, nothing else
        raise ConfigError(f"method: sftn cannot map a teacher feature of size {tuple(size_in)} to the student's "
                          f"{tuple(size_out)} (a transform halves, doubles or keeps the size); choose block_map "
                          "pairs whose sizes match that way")
    return nn.Sequential(layer, bn(c_out), nn.ReLU(inplace=False))


def block_pairs(t_sizes: list[tuple], s_sizes: list[tuple]) -> list[tuple[int, int]]:
    """Default (teacher stage, student boundary) pairs; sizes are spatial sizes of stages[0..N] outputs."""
    n_t, n_s = len(t_sizes) - 1, len(s_sizes) - 1
    if n_t == n_s:
        return [(i, i) for i in range(1, n_t)]
    pairs = []
    for i in range(1, n_t):
        same = [j for j in range(1, n_s) if s_sizes[j] == t_sizes[i]]
        if same:
            pairs.append((i, same[-1]))
    return pairs


class Branch(nn.Module):
    """T^i followed by the student's stages after boundary j and its head."""

    def __init__(self, transform: nn.Module, student: nn.Module, start: int):
        super().__init__()
        for k in range(start):  # stages before the entry point are never used
            student.stages[k] = nn.Identity()
        self.transform, self.student, self.start = transform, student, start

    def forward(self, h: Tensor) -> Tensor:
        return self.student.forward_from(self.start, self.transform(h))


def sftn_loss(teacher_logits: Tensor, branch_logits: list[Tensor], y: Tensor, lambda_t: float, lambda_kl: float,
              lambda_ce: float, tau: float, kl_direction: str = "branch_teacher") -> tuple[Tensor, dict[str, Tensor]]:
    """Equations (3)-(6): weighted teacher CE, mean branch KL at temperature tau, mean branch CE."""
    ce_t = F.cross_entropy(teacher_logits, y)
    log_t = F.log_softmax(teacher_logits / tau, dim=1)
    kls, ces = [], []
    for z in branch_logits:
        log_r = F.log_softmax(z / tau, dim=1)
        p, log_p, log_q = (log_r.exp(), log_r, log_t) if kl_direction == "branch_teacher" else \
            (log_t.exp(), log_t, log_r)
        kls.append((p * (log_p - log_q)).sum(1).mean())
        ces.append(F.cross_entropy(z, y))
    kl, ce_r = torch.stack(kls).mean(), torch.stack(ces).mean()
    loss = lambda_t * ce_t + lambda_kl * kl + lambda_ce * ce_r
    return loss, {"ce_teacher": ce_t.detach(), "kl_branches": kl.detach(), "ce_branches": ce_r.detach()}


@register_teacher_method("sftn", paper="Park et al. 2021 (SFTN)")
class SFTN(Objective):
    """SFTN: the teacher trained jointly with student branches attached after its stages."""

    class Params(StrictParams):
        student: ModelSpec | None = Field(None, description="architecture of the student branches (required; in a "
                                          "study it defaults to the pair's student)")
        lambda_t: float = Field(1.0, ge=0, description="weight of the teacher's own cross-entropy")
        lambda_kl: float = Field(3.0, ge=0, description="3 for CIFAR-100, 1 for ImageNet")
        lambda_ce: float = Field(1.0, ge=0, description="weight of the student branches' cross-entropy")
        tau: float = Field(1.0, gt=0, description="temperature of the branch KL term")
        kl_direction: Literal["branch_teacher", "teacher_branch"] = Field(
            "branch_teacher", description="branch_teacher: KL(branch || teacher) as the paper writes it; "
            "teacher_branch: the other direction")
        detach_teacher_features: bool = Field(False, description="ablation only: branch losses stop at T^i")
        block_map: list[tuple[PositiveInt, PositiveInt]] | None = Field(
            None, description="[[teacher stage, student boundary], ...] pairs of the branches (default: matched by "
            "feature size; stage 0, the stem, is never paired)")
        pretrained: str | None = Field(None, description="teacher run folder or checkpoint to fine-tune from")
        branch_only_epochs: int = Field(0, ge=0, description="fine-tuning: epochs training only the branches")

    def __init__(self, params: Params, ctx: TeacherContext):
        super().__init__()
        model, data = ctx.model, ctx.data
        student, block_map, pretrained = params.student, params.block_map, params.pretrained
        if student is None:
            raise ConfigError("method.student: sftn needs the architecture of its student branches, "
                              "e.g. method.student=resnet8")
        self.weights = dict(lambda_t=params.lambda_t, lambda_kl=params.lambda_kl, lambda_ce=params.lambda_ce,
                            tau=params.tau, kl_direction=params.kl_direction)
        self.detach = params.detach_teacher_features
        self.branch_only_epochs = params.branch_only_epochs
        self.__dict__["_data"] = data
        if pretrained is not None:
            if ctx.checkpoint_file is None:
                raise ConfigError("method.pretrained: this caller cannot resolve a teacher run's checkpoint")
            _load_pretrained(model, ctx.checkpoint_file(pretrained))
        spec = student if isinstance(student, dict) else student.model_dump()
        name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        probe_student = build_model(name, params, data.num_classes, data.input_shape, key="method.student")
        t_feats = probe_features(model, data.input_shape)
        s_feats = probe_features(probe_student, data.input_shape)
        t_sizes = [tuple(f.shape[2:]) for f in t_feats.stages]
        s_sizes = [tuple(f.shape[2:]) for f in s_feats.stages]
        pairs = [tuple(p) for p in block_map] if block_map is not None else block_pairs(t_sizes, s_sizes)
        if not pairs:
            raise ConfigError(f"method: sftn cannot attach student branches: teacher stage sizes {t_sizes[1:]} and "
                              f"student stage sizes {s_sizes[1:]} share no boundary; set method.block_map")
        for i, j in pairs:
            if not (1 <= i < len(t_sizes) - 1 and 1 <= j < len(s_sizes) - 1):
                raise ConfigError(f"method.block_map: pair {[i, j]} is out of range (teacher stages "
                                  f"1..{len(t_sizes) - 2}, student boundaries 1..{len(s_sizes) - 2})")
        self.pairs = pairs
        branches = []
        for i, j in pairs:
            t = transform_layer(t_feats.stages[i].shape[1], s_feats.stages[j].shape[1], t_sizes[i], s_sizes[j])
            student_copy = build_model(name, params, data.num_classes, data.input_shape, key="method.student")
            branches.append(Branch(t, student_copy, j + 1))
        self.branches = nn.ModuleList(branches)

    def may_skip_parameters(self) -> bool:
        return self.branch_only_epochs > 0  # the teacher's own parameters get no gradient in those epochs

    def on_epoch_start(self, model: nn.Module, state: LoopState) -> None:
        frozen = state.epoch < self.branch_only_epochs
        model.requires_grad_(not frozen)
        if frozen:
            model.eval()

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        f = model(batch.x, features=True)
        branch_logits = []
        for (i, _), branch in zip(self.pairs, self.branches):
            h = f.stages[i].detach() if self.detach else f.stages[i]
            branch_logits.append(branch(h))
        loss, parts = sftn_loss(f.logits, branch_logits, batch.y, **self.weights)
        return StepOutput(loss, f.logits, parts)

    @torch.no_grad()
    def eval_metrics(self, model: nn.Module, state: LoopState) -> dict[str, float]:
        """Test top-1 of each student branch (the paper's analysis of the branches)."""
        was = (model.training, self.training)
        model.eval()
        self.eval()
        correct = [0] * len(self.branches)
        n = 0
        for batch in self._data.eval_loader("test", 512, state.device).epoch(0):
            f = model(batch.x, features=True)
            for k, ((i, _), branch) in enumerate(zip(self.pairs, self.branches)):
                correct[k] += int((branch(f.stages[i]).argmax(1) == batch.y).sum())
            n += len(batch.y)
        model.train(was[0])
        self.train(was[1])
        return {f"branch{i}_top1": 100.0 * c / max(n, 1) for (i, _), c in zip(self.pairs, correct)}


def _load_pretrained(model: nn.Module, file: Path) -> None:
    """``file``: the checkpoint of ``method.pretrained`` (the context's ``checkpoint_file`` resolves a run folder to
    its last checkpoint)."""
    from kdlab.core.checkpoint import load_weights
    from kdlab.core.errors import CheckpointError

    ck = load_weights(file)  # the weights only: not the pretrained run's optimizer or objective state
    try:
        model.load_state_dict(ck["model_state"])
    except RuntimeError as e:
        raise CheckpointError(f"method.pretrained: {file} does not fit the teacher model: "
                              f"{str(e).strip().splitlines()[0]}") from None
