"""``unbounded_numbers``: the number fields that declare neither a bound nor why none applies."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, NonNegativeInt, PositiveFloat, create_model

from kdlab.config.describe import unbounded_numbers
from kdlab.config.schema import DistillRunConfig, EvalConfig, OptimConfig, StudyConfig, TeacherRunConfig
from kdlab.core.registry import Registry, StrictParams, unbounded

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


class Inner(BaseModel):
    fine: PositiveFloat = 1.0
    loose: float = 0.5


class Toy(BaseModel):
    bounded: int = Field(1, ge=1)
    interval: float = Field(0.5, ge=0, lt=1)
    exempt: int = Field(0, json_schema_extra=unbounded("a seed"))
    label: str = "x"
    flag: bool = True
    plain_int: int = 3
    plain_float: float = 0.1
    optional: float | None = None
    bounded_optional: PositiveFloat | None = None
    items: list[int] = []
    bounded_items: list[NonNegativeInt] = []
    pair: tuple[int, Annotated[int, Field(ge=0)]] = (1, 2)
    by_name: dict[str, float] = {}
    untyped: Any = 4
    untyped_text: Any = "a"
    inner: Inner = Inner()
    inners: list[Inner] = []


def test_it_names_every_unbounded_number_and_nothing_else():
    assert unbounded_numbers(Toy) == ["plain_int", "plain_float", "optional", "items", "pair", "by_name", "untyped",
                                      "inner.loose", "inners[].loose"]


def test_a_parameter_read_from_a_signature_keeps_its_bounds():
    def component(size: Annotated[int, Field(ge=1)] = 2, ratio: float = 0.5, name: str = "a"):
        return size, ratio, name

    registry = Registry("toy component")
    registry.add("c", component)
    assert unbounded_numbers(registry.get("c").params) == ["ratio"]


@pytest.mark.parametrize("schema", [TeacherRunConfig, DistillRunConfig, StudyConfig, EvalConfig])
def test_every_number_of_the_run_and_study_configs_is_bounded_or_declared_unbounded(schema):
    assert unbounded_numbers(schema) == [], (
        "give these fields the bounds their meaning implies (Field(ge=..., lt=...), PositiveInt, list[...] of "
        "bounded items), or declare why none applies: json_schema_extra=unbounded('reason')")


def test_a_new_unbounded_field_is_caught():
    # what the walk above sees when someone adds a number without a bound to a nested config
    loose_optim = create_model("LooseOptim", __base__=OptimConfig, dampening=(float, 0.0))
    loose_run = create_model("LooseRun", __base__=TeacherRunConfig, optim=(loose_optim, loose_optim()))
    assert unbounded_numbers(loose_run) == ["optim.dampening"]
    strict_params = create_model("Params", __base__=StrictParams, rate=(float, 0.1))
    assert unbounded_numbers(strict_params) == ["rate"]
