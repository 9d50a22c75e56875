"""Route-Constrained Optimisation (Jin, Peng, Wu, Liu, Liu, Liang, Yan & Hu, ICCV 2019, "Knowledge Distillation
via Route Constrained Optimization"), one-stage equal-epoch-interval (EEI) variant.

Instead of the converged teacher alone, the student is distilled from a sequence of "anchor" checkpoints along the
teacher's training route, easiest (earliest) first.  With N anchors and E student epochs, epoch e (0-based) uses
anchor ``min(e * N // E, N - 1)``: equal intervals, e.g. 24 anchors saved every 10 epochs of a 240-epoch teacher
run, each teaching the student for 10 of its 240 epochs (the setting of the SoTeacher and SFTN tables).  The loss
against the current anchor is kdlab's KD (gamma = 0.1 CE + alpha = 0.9 T^2 KL at T = 4, or 0.5 / 0.5 with
``beta_preset: soteacher``, as for ``kd``).

Anchors are read from the teacher run's checkpoint folder, beside ``teacher_path``:

* by default every ``epoch_XXX.pt`` up to the epoch of the teacher checkpoint, then the teacher checkpoint itself
  if its epoch is not among them (the teacher run needs ``train.save_every``, e.g. 10); a missing folder or no
  such checkpoints is an error that says so;
* ``num_anchors: n`` keeps n of those, equally spaced and always ending with the last;
* ``anchors: [epoch_030, epoch_060, best, last]`` names them explicitly (any checkpoint of the folder, in order).

One anchor is held in memory at a time (a copy of the teacher network, reloaded when the anchor changes), so the
run's teacher stays the converged one (used for the run's summary).  The paper's other variants (greedy anchor
selection, multi-stage schedules) are not implemented.

Logits only: works for any pair and any input kind, 1D sequences included.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch.nn as nn
from pydantic import Field

from kdlab.core.checkpoint import checkpoint_file, checkpoint_names, epoch_checkpoint_files, load_metadata, load_weights
from kdlab.core.errors import CheckpointError, ConfigError
from kdlab.core.registry import register_distill_method
from kdlab.methods.context import DistillContext
from kdlab.methods.distiller import Distiller, LogitParams

__all__ = ["RCO", "anchor_index", "find_anchors"]

def anchor_index(epoch: int, epochs: int, num_anchors: int) -> int:
    """The anchor of 0-based ``epoch`` under the equal-epoch-interval schedule."""
    return min(epoch * num_anchors // max(epochs, 1), num_anchors - 1)


def _spaced(items: list, n: int) -> list:
    """n items equally spaced over ``items``, the last always included."""
    if n >= len(items):
        return items
    step = len(items) / n
    return [items[round((k + 1) * step) - 1] for k in range(n)]


def find_anchors(teacher_path: Path, names: list[str] | None = None, num_anchors: int | None = None,
                 checkpoints: dict[int, Path] | None = None) -> list[tuple[Path, int]]:
    """(checkpoint path, teacher epoch) of each anchor, in order; ``checkpoints``: epoch -> checkpoint file of the
    teacher run's epoch checkpoints (the context's ``teacher_checkpoints``; default: the ``epoch_XXX.pt`` files
    beside ``teacher_path``)."""
    folder = teacher_path.parent
    if names:
        out = []
        for name in names:
            path = checkpoint_file(folder, name)
            if not path.is_file():
                avail = ", ".join(checkpoint_names(folder)) or "none"
                raise CheckpointError(f"rco: anchor {name!r} not found in {folder} (available: {avail})")
            out.append((path, int(load_metadata(path).get("epoch", 0))))
        return _spaced(out, num_anchors) if num_anchors else out
    final_epoch = int(load_metadata(teacher_path).get("epoch", 0))
    if checkpoints is None:
        checkpoints = epoch_checkpoint_files(folder)
    found = sorted(checkpoints.items())
    out = [(p, e) for e, p in found if e <= final_epoch]
    if not out:
        raise CheckpointError(
            f"rco: no anchor checkpoints (epoch_XXX.pt) in {folder}; train the teacher with train.save_every "
            "(e.g. 10: one anchor every 10 epochs) or name anchors with method.anchors")
    if out[-1][1] != final_epoch:
        out.append((teacher_path, final_epoch))
    return _spaced(out, num_anchors) if num_anchors else out


class RCOParams(LogitParams):
    anchors: list[str] | None = Field(None, description="checkpoint names in the teacher run folder, in order "
                                      "(default: every epoch_XXX.pt, then the teacher checkpoint)")
    num_anchors: int | None = Field(None, gt=0, description="keep this many anchors, equally spaced")


@register_distill_method("rco", needs_teacher=True, paper="Jin et al. 2019",
                         own_teacher_passes="every step: the anchors are other networks than the teacher",
                         shares_batch_pass=False)
class RCO(Distiller):
    """RCO (one-stage EEI): KD from the teacher's checkpoints in order, switching at equal epoch intervals."""

    Params = RCOParams
    needs_features = False
    PROTOCOLS = {"crd": "logit", "sftn": "logit", "soteacher": "logit"}

    def __init__(self, params: RCOParams, ctx: DistillContext):
        super().__init__(params, ctx)
        teacher = ctx.teacher
        if ctx.teacher_path is None or ctx.teacher_checkpoints is None:
            raise ConfigError("rco: needs the teacher's checkpoint file (its run folder holds the anchors)")
        self.anchors = find_anchors(Path(ctx.teacher_path), params.anchors, params.num_anchors,
                                    ctx.teacher_checkpoints())
        self.spec = getattr(teacher, "kdlab_spec", None)
        self.current = -1
        # the anchor network: a copy of the teacher, so the run's converged teacher is left as it is
        anchor = copy.deepcopy(teacher).eval().requires_grad_(False)
        self.__dict__["_teacher"] = anchor

    fixed_teacher = False  # the anchors change during the run

    def load_anchor(self, k: int) -> None:
        if k == self.current:
            return
        path = self.anchors[k][0]
        ck = load_weights(path)  # on the CPU; load_state_dict copies it onto the anchor network's device
        if self.spec is not None and ck.get("model") != self.spec:
            raise CheckpointError(f"rco: anchor {path} holds a different model than the teacher "
                                  f"({ck.get('model')} vs {self.spec})")
        self.teacher.load_state_dict(ck["model_state"])
        self.current = k

    def on_fit_start(self, model: nn.Module, state) -> None:
        self.load_anchor(anchor_index(state.epoch, state.epochs, len(self.anchors)))
        super().on_fit_start(model, state)

    def on_epoch_start(self, model: nn.Module, state) -> None:
        self.load_anchor(anchor_index(state.epoch, state.epochs, len(self.anchors)))

    def eval_metrics(self, model: nn.Module, state) -> dict[str, float]:
        return {"rco_anchor_epoch": float(self.anchors[self.current][1])}

    def describe(self) -> dict:
        return {"anchors": [p.name for p, _ in self.anchors]}
