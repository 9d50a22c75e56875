"""KD+: distillation beyond the training distribution (seed 001, "Can Students Outperform Teachers in Knowledge
Distillation based Model Compression?").

The paper's finding: a student that only matches the teacher at the sparse training points does not capture the
teacher function's local shape around them; matching it also on inputs *between* training samples does (only the
paper's introduction is available, so the construction below is kdlab's design from it, documented here).

Each step, on top of a base distillation method (``base``, default ``kd``; any registered method that trains a
student, e.g. ``{name: crd}``, ``{name: dkd}``, ``{name: rco}``), whose loss is computed on the clean batch as
usual, KD+ builds ``round(ratio * B)`` extra inputs and adds::

    weight * T^2 * KL(softmax(t(x~) / T) || softmax(s(x~) / T))      (batch mean over the x~)

with the teacher's outputs on the x~ as the only targets (no labels are mixed: the teacher says what x~ is).
Each x~ comes from a random pair (i, j != i) of the batch (uniformly drawn, with replacement across pairs) and a
mixing weight lambda ~ Beta(mix_alpha, mix_alpha) (``mix_alpha: 1``: uniform on [0, 1]), by one of the ``mix``
kinds (each x~ picks one kind uniformly when several are listed):

* ``mixup`` (default): ``x~ = lambda * x_i + (1 - lambda) * x_j``, a convex combination of two inputs (on the
  model's input scale; normalisation is affine, so this is the normalised mix of the raw inputs);
* ``cutmix``: x_i with a box (images) or segment (sequences) of relative area ``1 - lambda`` taken from x_j,
  placed uniformly at random;
* ``noise``: ``x~ = lambda * x_i + (1 - lambda) * eps``, eps Gaussian with the batch's per-channel mean and std
  (an input off the data manifold: the paper notes that some, not all, out-of-distribution inputs help).

The student and the teacher see the x~ in a separate forward pass (the student's batch-norm statistics see them
too).  Late distillation is respected: no OOD term before the base method's ``switch_epoch``.  Everything the
base method keeps (connectors, memories, peers) lives inside this objective, under ``base.``, and is saved with
the run.  Pairs of architectures: whatever the base method supports (its own adapters); the OOD term needs only
the logits.  ``mixup`` and ``noise`` work on any input kind, 1D sequences included; ``cutmix`` on images and 1D
sequences.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field, ValidationError
from torch import Tensor

from ...config.components import DistillMethodOrKD
from ...errors import ConfigError
from ...registry import DISTILL_METHODS, StrictParams, register_distill_method
from ..base import DistillObjective, StepOutput
from ..distiller import kd_loss

__all__ = ["KDPlus", "mix_inputs", "random_pairs"]

MIXES = ("mixup", "cutmix", "noise")


def random_pairs(batch_size: int, n: int, device) -> tuple[Tensor, Tensor]:
    """n pairs (i, j) of batch positions, uniform over ordered pairs with j != i (j = i only when B = 1)."""
    i = torch.randint(0, batch_size, (n,), device=device)
    if batch_size == 1:
        return i, i
    j = (i + torch.randint(1, batch_size, (n,), device=device)) % batch_size
    return i, j


def _cut_mask(shape: tuple[int, ...], lam: Tensor) -> Tensor:
    """(n, 1, *spatial) masks, 1 inside a random box of relative area 1 - lam (per row), else 0."""
    n, spatial = lam.shape[0], shape[2:]
    dev = lam.device
    side = (1 - lam).clamp(0, 1) ** (1 / len(spatial))
    mask = torch.ones(n, 1, *spatial, device=dev, dtype=torch.bool)
    for d, size in enumerate(spatial):
        length = (side * size).round().long()
        start = (torch.rand(n, device=dev) * (size - length + 1)).floor().long()
        pos = torch.arange(size, device=dev).view(1, -1)
        inside = (pos >= start.view(-1, 1)) & (pos < (start + length).view(-1, 1))  # (n, size)
        view = [n, 1] + [1] * len(spatial)
        view[2 + d] = size
        mask &= inside.view(view)
    return mask


def mix_inputs(x: Tensor, i: Tensor, j: Tensor, lam: Tensor, kinds: Tensor) -> Tensor:
    """The out-of-distribution inputs: row r mixes x[i_r] with x[j_r] (or noise) by lam_r, by ``MIXES[kinds_r]``."""
    xi, xj = x[i], x[j]
    shape = (-1,) + (1,) * (x.dim() - 1)
    lam_b = lam.view(shape).to(x.dtype)
    out = lam_b * xi + (1 - lam_b) * xj
    if bool((kinds == 1).any()):
        if x.dim() < 3:
            raise ConfigError("kdplus: cutmix needs images or sequences")
        cut = torch.where(_cut_mask(tuple(x.shape), lam), xj, xi)
        out = torch.where((kinds == 1).view(shape), cut, out)
    if bool((kinds == 2).any()):
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        std = x.std(dims, keepdim=True) if x.shape[0] > 1 else torch.ones_like(mean)
        noise = torch.randn_like(xi) * std + mean
        out = torch.where((kinds == 2).view(shape), lam_b * xi + (1 - lam_b) * noise, out)
    return out


class KDPlusParams(StrictParams):
    base: DistillMethodOrKD = Field("kd", validate_default=True,
                                    description="the distillation method KD+ adds its out-of-distribution term to")
    weight: float = Field(1.0, ge=0, description="weight of the out-of-distribution KD term")
    T: float = Field(4.0, gt=0, description="temperature of the out-of-distribution KD term")
    mix: list[Literal["mixup", "cutmix", "noise"]] = Field(["mixup"], min_length=1,
                                                           description="how inputs between samples are made")
    mix_alpha: float = Field(1.0, gt=0, description="lambda ~ Beta(mix_alpha, mix_alpha); 1: uniform")
    ratio: float = Field(1.0, gt=0, description="out-of-distribution inputs per sample of the batch")


@register_distill_method("kdplus", needs_teacher=True, paper="seed 001 (KD+)")
class KDPlus(DistillObjective):
    """KD+: a base distillation method on the clean batch plus KD on inputs mixed between training samples."""

    Params = KDPlusParams

    def __init__(self, teacher: nn.Module, student: nn.Module | None = None, data=None, run_dir=None,
                 epochs: int = 1, teacher_path=None, device=None, base: Any = "kd", weight: float = 1.0,
                 T: float = 4.0, mix: list[str] = ("mixup",), mix_alpha: float = 1.0, ratio: float = 1.0):
        super().__init__(teacher)
        spec = base.model_dump() if hasattr(base, "model_dump") else ({"name": base} if isinstance(base, str)
                                                                       else dict(base))
        name = spec.pop("name", "kd")
        entry = DISTILL_METHODS.get(name)
        try:
            params = entry.validate(spec).model_dump()
        except ValidationError as e:
            raise ConfigError(f"method.base: invalid parameters for {name!r}: {e.errors()[0]['msg']}") from None
        self.base = entry.build(params, teacher=teacher, student=student, data=data, run_dir=run_dir,
                                epochs=epochs, teacher_path=teacher_path, device=device)
        self.needs_index = self.base.needs_index
        self.weight, self.T, self.mix_alpha, self.ratio = weight, T, mix_alpha, ratio
        self.mix_ids = [MIXES.index(m) for m in mix]

    def current_teacher(self) -> nn.Module:
        # a base method may swap its teacher during training (RCO's anchors)
        t = getattr(self.base, "teacher", None)
        return self.teacher if t is None else t

    def ood_inputs(self, x: Tensor) -> Tensor:
        n = max(1, round(self.ratio * x.shape[0]))
        i, j = random_pairs(x.shape[0], n, x.device)
        a = torch.tensor(self.mix_alpha, device=x.device)
        lam = torch.distributions.Beta(a, a).sample((n,))
        choice = torch.randint(0, len(self.mix_ids), (n,), device=x.device)
        kinds = torch.tensor(self.mix_ids, device=x.device)[choice]
        return mix_inputs(x, i, j, lam, kinds)

    def ood_loss(self, model: nn.Module, x: Tensor) -> Tensor:
        x_ood = self.ood_inputs(x)
        with torch.no_grad():
            t = self.current_teacher()(x_ood)
        return kd_loss(model(x_ood), t, self.T)

    def forward(self, model: nn.Module, batch, state) -> StepOutput:
        out = self.base(model, batch, state)
        if state is not None and state.epoch < getattr(self.base, "switch_epoch", 0):
            return out
        ood = self.ood_loss(model, batch.x)
        return StepOutput(out.loss + self.weight * ood, out.logits, {**out.parts, "ood": ood.detach()})

    def on_fit_start(self, model: nn.Module, state) -> None:
        self.base.on_fit_start(model, state)

    def on_epoch_start(self, model: nn.Module, state) -> None:
        self.base.on_epoch_start(model, state)

    def on_epoch_end(self, model: nn.Module, state) -> None:
        self.base.on_epoch_end(model, state)

    def eval_metrics(self, model: nn.Module, state) -> dict[str, float]:
        return self.base.eval_metrics(model, state)

    def describe(self) -> dict[str, Any]:
        return {"base": self.base.describe()}
