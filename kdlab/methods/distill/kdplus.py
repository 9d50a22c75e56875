"""KD+: distillation beyond the training distribution (Deng & Zhang, 2021, "Can Students Outperform Teachers in
Knowledge Distillation based Model Compression?").

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
kinds (each x~ picks one kind uniformly when several are listed).  The draws come from a generator seeded by the
run's seed and step (exact on resume); with several processes the pairs span the global batch and each process
mixes its share of the rows, so the run equals one process's (``mix_across: process`` pairs within each process's
part instead, without gathering the inputs):

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

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from pydantic import Field, ValidationError
from torch import Tensor

from kdlab.config.components import DistillMethodOrKD
from kdlab.core.device import derive_seed
from kdlab.core.distributed import all_gather_cat, is_active
from kdlab.core.errors import ConfigError
from kdlab.core.registry import DISTILL_METHODS, StrictParams, register_distill_method
from kdlab.data.base import batch_part
from kdlab.methods.base import DistillObjective, StepOutput
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import kd_loss

__all__ = ["KDPlus", "mix_inputs", "random_pairs"]

MIXES = ("mixup", "cutmix", "noise")
_PURPOSE = 0x4B442B  # of the random draws of the mixes


def get_rank() -> int:
    return dist.get_rank() if is_active() else 0


def random_pairs(batch_size: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n pairs (i, j) of batch positions, uniform over ordered pairs with j != i (j = i only when B = 1)."""
    i = rng.integers(0, batch_size, n)
    if batch_size == 1:
        return i, i
    return i, (i + rng.integers(1, batch_size, n)) % batch_size


def _cut_mask(shape: tuple[int, ...], lam: Tensor, starts: Tensor) -> Tensor:
    """(n, 1, *spatial) masks, 1 inside a box of relative area 1 - lam (per row), else 0; ``starts`` (n, axes) in
    [0, 1) place the box uniformly among the positions where it fits."""
    n, spatial = lam.shape[0], shape[2:]
    dev = lam.device
    side = (1 - lam).clamp(0, 1) ** (1 / len(spatial))
    mask = torch.ones(n, 1, *spatial, device=dev, dtype=torch.bool)
    for d, size in enumerate(spatial):
        length = (side * size).round().long()
        start = (starts[:, d] * (size - length + 1)).floor().long()
        pos = torch.arange(size, device=dev).view(1, -1)
        inside = (pos >= start.view(-1, 1)) & (pos < (start + length).view(-1, 1))  # (n, size)
        view = [n, 1] + [1] * len(spatial)
        view[2 + d] = size
        mask &= inside.view(view)
    return mask


def mix_inputs(x: Tensor, i: Tensor, j: Tensor, lam: Tensor, kinds: Tensor, starts: Tensor | None = None,
               noise: Tensor | None = None, present: set[int] | None = None) -> Tensor:
    """The out-of-distribution inputs: row r mixes x[i_r] with x[j_r] (or noise) by lam_r, by ``MIXES[kinds_r]``.

    ``starts`` place the cutmix boxes (uniform in [0, 1) per row and axis; default: drawn here), ``noise`` is the
    standard normal noise of each row (default: drawn here), ``present`` the kinds that occur (default: read from
    ``kinds``, which waits for the device)."""
    if present is None:
        present = set(kinds.cpu().tolist())
    xi, xj = x[i], x[j]
    shape = (-1,) + (1,) * (x.dim() - 1)
    lam_b = lam.view(shape).to(x.dtype)
    out = lam_b * xi + (1 - lam_b) * xj
    if 1 in present:
        if x.dim() < 3:
            raise ConfigError("kdplus: cutmix needs images or sequences")
        if starts is None:
            starts = torch.rand(lam.shape[0], x.dim() - 2, device=x.device)
        cut = torch.where(_cut_mask(tuple(x.shape), lam, starts), xj, xi)
        out = torch.where((kinds == 1).view(shape), cut, out)
    if 2 in present:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims, keepdim=True)
        std = x.std(dims, keepdim=True) if x.shape[0] > 1 else torch.ones_like(mean)
        noise = (torch.randn_like(xi) if noise is None else noise) * std + mean
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
    mix_across: Literal["batch", "process"] = Field(
        "batch", description="several processes: pair samples across the global batch (gathers the inputs; the "
                             "mixes of one process) or within each process's part (no communication)")


@register_distill_method("kdplus", needs_teacher=True, paper="Deng & Zhang 2021",
                         own_teacher_passes="the mixed inputs of every batch")
class KDPlus(DistillObjective):
    """KD+: a base distillation method on the clean batch plus KD on inputs mixed between training samples."""

    Params = KDPlusParams

    def __init__(self, params: KDPlusParams, ctx: DistillContext):
        super().__init__(ctx.teacher)
        base = params.base
        spec = base.model_dump() if hasattr(base, "model_dump") else ({"name": base} if isinstance(base, str)
                                                                       else dict(base))
        name = spec.pop("name", "kd")
        entry = DISTILL_METHODS.get(name)
        try:
            base_params = entry.validate(spec)
        except ValidationError as e:
            raise ConfigError(f"method.base: invalid parameters for {name!r}: {e.errors()[0]['msg']}") from None
        self.base = entry.build(base_params, ctx)  # the base method gets the same context
        self.needs_index = self.base.needs_index
        self.weight, self.T, self.mix_alpha = params.weight, params.T, params.mix_alpha
        # the OOD term's logits as the base method treats its own (logit standardisation)
        self.standardise = bool(getattr(self.base, "standardise", False))
        self.ratio, self.mix_across = params.ratio, params.mix_across
        self.mix_ids = [MIXES.index(m) for m in params.mix]

    def current_teacher(self) -> nn.Module:
        # a base method may swap its teacher during training (RCO's anchors)
        t = getattr(self.base, "teacher", None)
        return self.teacher if t is None else t

    def ood_inputs(self, x: Tensor, state=None, part: tuple[int, int, int] | None = None) -> tuple[Tensor, float]:
        """This process's out-of-distribution inputs and the weight that makes the processes' KD terms the mean
        over the whole global set of them.

        ``mix_across: batch``: the pairs are drawn over the global batch (gathered) from a generator seeded by the
        run's seed and step, the same in every process, and each process mixes its contiguous share of the rows,
        so the mixes are those one process draws; ``process``: over this process's part only."""
        across = self.mix_across == "batch" and is_active()
        x_all = all_gather_cat(x) if across else x
        size = x_all.shape[0]
        rank, world = (dist.get_rank(), dist.get_world_size()) if across else (0, 1)
        n = max(world, round(self.ratio * size))
        step = state.step if state is not None else 0
        seed = derive_seed(state.seed if state is not None else 0, step, _PURPOSE, 0 if across else get_rank())
        rng = np.random.default_rng(seed)
        i, j = random_pairs(size, n, rng)
        lam = rng.beta(self.mix_alpha, self.mix_alpha, n)
        kinds = np.asarray(self.mix_ids)[rng.integers(0, len(self.mix_ids), n)]
        lo, hi = n * rank // world, n * (rank + 1) // world
        dev = x.device

        def mine(a: np.ndarray, dtype=None) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(a[lo:hi])).to(dev, dtype=dtype, non_blocking=True)

        starts = noise = None
        if 1 in self.mix_ids and x.dim() >= 3:
            starts = mine(rng.random((n, x.dim() - 2)), torch.float32)
        if 2 in self.mix_ids:
            gen = torch.Generator(device=dev).manual_seed(seed)
            noise = torch.randn((n, *x.shape[1:]), generator=gen, device=dev, dtype=x.dtype)[lo:hi]
        out = mix_inputs(x_all, mine(i), mine(j), mine(lam, torch.float32), mine(kinds), starts, noise,
                         present=set(kinds[lo:hi].tolist()))
        # the loop weights this process's loss by its share of the batch; this makes each row weigh 1 / n
        start, stop, total = part if (part is not None and across) else (0, 1, 1)
        return out, (hi - lo) / n * (total / max(stop - start, 1))

    def ood_loss(self, model: nn.Module, x: Tensor, state=None, part: tuple[int, int, int] | None = None) -> Tensor:
        x_ood, weight = self.ood_inputs(x, state, part)
        with torch.no_grad():
            t = self.current_teacher()(x_ood)
        return kd_loss(model(x_ood), t, self.T, self.standardise) * weight

    def forward(self, model: nn.Module, batch, state) -> StepOutput:
        out = self.base(model, batch, state)
        if state is not None and state.epoch < getattr(self.base, "switch_epoch", 0):
            return out
        ood = self.ood_loss(model, batch.x, state, batch_part(batch))
        return StepOutput(out.loss + self.weight * ood, out.logits, {**out.parts, "ood": ood.detach()})

    def may_skip_parameters(self) -> bool:
        return self.base.may_skip_parameters()

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
