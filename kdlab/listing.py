"""``kdlab list``: the registered components, with parameter counts, papers and default settings."""

from __future__ import annotations

import torch

from .methods.distiller import LOGIT_WEIGHTS
from .registry import DATASETS, DISTILL_METHODS, MODELS, TEACHER_METHODS, Entry
from .study.table import markdown_table

_SAMPLE_SHAPES = {"image": (3, 32, 32), "sequence": (1, 40), "any": (3, 32, 32)}


def _defaults(entry: Entry) -> str:
    fields = entry.params.model_fields
    parts = [f"{k}={f.default!r}" for k, f in fields.items() if not f.is_required()]
    return ", ".join(parts) if parts else "-"


def _parameter_count(entry: Entry) -> str:
    from .models import build_model, count_parameters

    shape = _SAMPLE_SHAPES[entry.meta.get("input", "any")]
    # on the meta device nothing is allocated or initialised, so even ResNet-152 costs milliseconds
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                return f"{count_parameters(build_model(entry.name, {}, 100, shape)) / 1e6:.2f}M"
        except Exception:  # noqa: BLE001 - a model that needs parameters has no default count
            continue
    return "-"


_WEIGHTS = ("gamma", "alpha", "beta", "T", "beta_preset")


def _distill_row(entry: Entry) -> list[str]:
    fields = entry.params.model_fields

    def default(name: str) -> str:
        f = fields.get(name)
        if f is not None and f.default is None and name in ("gamma", "alpha"):  # filled in from the preset
            std, so = (w[0 if name == "gamma" else 1] for w in (LOGIT_WEIGHTS["standard"], LOGIT_WEIGHTS["soteacher"]))
            return f"{std:g} / {so:g}"
        return "-" if f is None or f.is_required() else f"{f.default:g}" if isinstance(f.default, float) else \
            str(f.default)

    beta = getattr(entry.obj, "BETA", None)
    if "beta" in fields and beta and any(beta.values()) and fields["beta"].default is None:
        beta_txt = f"{beta['standard']:g} / {beta['soteacher']:g}"
    else:
        beta_txt = default("beta")
    others = ", ".join(f"{k}={f.default!r}" for k, f in fields.items()
                       if k not in _WEIGHTS and k != "switch_epoch" and not f.is_required()) or "-"
    return [entry.name, entry.meta.get("paper", ""), default("gamma"), default("alpha"), beta_txt, default("T"),
            others, entry.summary]


def _model_rows() -> list[list[str]]:
    return [[e.name, e.meta.get("input", "any"), _parameter_count(e), e.summary] for e in MODELS.entries()]


def listing(what: str = "all") -> str:
    blocks = []
    if what in ("all", "models"):
        blocks.append("Models (parameters at 100 classes, 3x32x32 images / 1x40 sequences)\n\n" +
                      markdown_table(["name", "input", "params", "description"], _model_rows()))
    if what in ("all", "teacher-methods", "methods"):
        rows = [[e.name, e.meta.get("paper", ""), _defaults(e), e.summary] for e in TEACHER_METHODS.entries()]
        blocks.append("Teacher methods\n\n" + markdown_table(["name", "paper", "defaults", "description"], rows))
    if what in ("all", "distill-methods", "methods"):
        blocks.append("Distillation methods (student loss = gamma CE + alpha KD + beta method loss; a / b: the "
                      "value with beta_preset standard / soteacher)\n\n" +
                      markdown_table(["name", "paper", "gamma", "alpha", "beta", "T", "other defaults", "description"],
                                     [_distill_row(e) for e in DISTILL_METHODS.entries()]))
        own = [f"  {e.name}: {e.meta['own_teacher_passes']}" for e in DISTILL_METHODS.entries()
               if e.meta.get("own_teacher_passes")]
        blocks.append("In a group of students of one teacher (kdlab study) every method takes the batch's teacher "
                      "outputs from one shared pass; these also run the teacher themselves on:\n" + "\n".join(own))
    if what in ("all", "datasets"):
        rows = [[e.name, str(e.meta.get("input_shape", "")), str(e.meta.get("classes", "")), e.summary]
                for e in DATASETS.entries()]
        blocks.append("Data sets\n\n" +
                      markdown_table(["name", "input", "classes", "description"], rows))
    return "\n\n".join(blocks)
