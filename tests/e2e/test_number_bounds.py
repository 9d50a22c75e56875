"""Every number a user sets, in a config or as a component's parameter (data sets, models, teacher and
distillation methods, built-in or registered), declares the bounds its meaning implies, or why none applies
(``json_schema_extra=unbounded(reason)``), and its default lies within them."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from kdlab.config.describe import unbounded_numbers
from kdlab.config.schema import DistillRunConfig, EvalConfig, StudyConfig, TeacherRunConfig
from kdlab.core.registry import DATASETS, DISTILL_METHODS, MODELS, TEACHER_METHODS

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

REGISTRIES = {"datasets": DATASETS, "models": MODELS, "teacher methods": TEACHER_METHODS,
              "distill methods": DISTILL_METHODS}
SCHEMAS = (TeacherRunConfig, DistillRunConfig, StudyConfig, EvalConfig)


@pytest.mark.parametrize("kind", REGISTRIES)
def test_every_number_parameter_of_a_component_is_bounded_or_declared_unbounded(kind):
    loose = {e.name: keys for e in REGISTRIES[kind].entries() if (keys := unbounded_numbers(e.params))}
    assert not loose, (
        f"{kind}: give these parameters the bounds their meaning implies (Field(ge=..., lt=...), PositiveInt, "
        f"Annotated[float, Field(gt=0, lt=1)] in a signature), or declare why none applies: "
        f"json_schema_extra=unbounded('reason') from kdlab.core.registry: {loose}")


def _exemptions(model: type[BaseModel]) -> dict[str, str]:
    return {name: f.json_schema_extra["unbounded"] for name, f in model.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and "unbounded" in f.json_schema_extra}


def test_each_exemption_says_why():
    found = {}
    for kind, registry in REGISTRIES.items():
        for e in registry.entries():
            found |= {f"{kind} {e.name}.{k}": why for k, why in _exemptions(e.params).items()}
    for schema in SCHEMAS:
        found |= {f"{schema.__name__}.{k}": why for k, why in _exemptions(schema).items()}
    assert found and all(isinstance(why, str) and len(why.split()) >= 3 for why in found.values()), found


def _defaults_outside(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        if f.is_required() or f.validate_default:  # the latter: pydantic validates it
            continue
        default = f.default_factory() if f.default_factory is not None else f.default
        try:
            TypeAdapter(Annotated[f.annotation, f]).validate_python(default)
        except ValidationError as e:
            out.append(f"{prefix}{name}={default!r}: {e.errors()[0]['msg']}")
        if isinstance(default, BaseModel):
            out += _defaults_outside(type(default), f"{prefix}{name}.")
    return out


def test_every_default_lies_within_its_bounds():
    # pydantic does not validate defaults: a bound that excludes its own default would go unnoticed
    bad = [d for schema in SCHEMAS for d in _defaults_outside(schema, f"{schema.__name__}.")]
    for kind, registry in REGISTRIES.items():
        bad += [d for e in registry.entries() for d in _defaults_outside(e.params, f"{kind} {e.name}.")]
    assert not bad, bad
