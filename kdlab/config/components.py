"""Config fields that name a registered component: ``{name: kd, T: 4}`` or just ``kd``.

The parameters are validated against the registry entry's parameter model, so an unknown or ill-typed parameter
is reported with its full dotted key (``student.method.T``), like every other config error.  A data set also
takes the keys of :class:`DataSplitParams` (``val_fraction``), which belong to the run rather than to the data
set: they are validated here and kept beside its parameters.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_serializer
from pydantic_core import PydanticCustomError

from kdlab.core.errors import ConfigError
from kdlab.core.registry import DATASETS, DISTILL_METHODS, MODELS, TEACHER_METHODS, Registry, StrictParams, hint


class DataSplitParams(StrictParams):
    """Keys every data set accepts beside its own parameters: how a run splits the data set's training split."""

    val_fraction: float = Field(
        0.0, ge=0, lt=1,
        description="fraction of the training split set aside for validation (stratified, drawn from the run's "
                    "seed: a seed's teachers and students share it; before holdout); the best epoch (best.pt) is "
                    "then chosen on its top-1 and the test split only reported. 0: none (chosen on test)")


class Component(BaseModel):
    """A registry name with validated parameters (defaults filled in); ``raw`` keeps what the user wrote (the name
    and the parameters set explicitly), for presets that fill only what was left open (distillation protocols)."""

    model_config = ConfigDict(frozen=True)
    name: str
    params: dict[str, Any] = {}
    raw: dict[str, Any] = Field(default_factory=dict, repr=False, exclude=True)
    label: str | None = None  # models: the short name tables, figures and folders use (a study's own setting)
    val_fraction: float = 0.0  # data sets: DataSplitParams.val_fraction (written out only when set)

    @model_serializer
    def _flat(self) -> dict[str, Any]:
        return ({"name": self.name, **self.params} | ({"label": self.label} if self.label is not None else {})
                | ({"val_fraction": self.val_fraction} if self.val_fraction else {}))

    def without_label(self) -> dict[str, Any]:
        """The spec as a run's config holds it: a label names the model in a study, it does not change the run."""
        return {"name": self.name, **self.params}

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


def _component_validator(registry: Registry, default: str | None = None):
    """``default``: the name used when only parameters are given (e.g. ``method.T=2`` with the default method)."""

    def validate(value: Any) -> Any:
        kept_raw = None
        if isinstance(value, Component):
            kept_raw = value.raw or None
            value = value.model_dump()
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "kdlab_component", "{msg}", {"msg": f"expected a {registry.kind} name or mapping, got {value!r}",
                                            "subloc": ()})
        raw = dict(value)
        name = raw.pop("name", default)
        label = raw.pop("label", None) if registry is MODELS else None
        split = {k: raw.pop(k) for k in DataSplitParams.model_fields if k in raw} if registry is DATASETS else {}
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise PydanticCustomError("kdlab_component", "{msg}",
                                      {"msg": f"a model's label must be a non-empty string, got {label!r}",
                                       "subloc": ("label",)})
        if not isinstance(name, str):
            raise PydanticCustomError("kdlab_component", "{msg}",
                                      {"msg": f"a {registry.kind} needs a 'name'", "subloc": ("name",)})
        try:
            entry = registry.get(name)
        except ConfigError as e:
            raise PydanticCustomError("kdlab_component", "{msg}", {"msg": str(e), "subloc": ("name",)}) from None
        params = _validated(entry.validate, raw, entry.params)
        splits = _validated(DataSplitParams.model_validate, split, DataSplitParams)
        return Component(name=name, params=params.model_dump(mode="json"),
                         raw=kept_raw or {"name": name, **raw, **split}, label=label,
                         val_fraction=splits.val_fraction)

    return validate


def _validated(check, raw: dict[str, Any], model: type[BaseModel]) -> BaseModel:
    try:
        return check(raw)
    except ValidationError as e:
        loc, msg = describe_first_error(e, model)
        raise PydanticCustomError("kdlab_component", "{msg}", {"msg": msg, "subloc": loc}) from None


DataSpec = Annotated[Component, BeforeValidator(_component_validator(DATASETS))]
ModelSpec = Annotated[Component, BeforeValidator(_component_validator(MODELS))]
TeacherMethodSpec = Annotated[Component, BeforeValidator(_component_validator(TEACHER_METHODS))]
DistillMethodSpec = Annotated[Component, BeforeValidator(_component_validator(DISTILL_METHODS))]
TeacherMethodOrStandard = Annotated[Component, BeforeValidator(_component_validator(TEACHER_METHODS, "standard"))]
DistillMethodOrKD = Annotated[Component, BeforeValidator(_component_validator(DISTILL_METHODS, "kd"))]


def _strip(ann: Any) -> Any:
    """Unwrap Optional / Union / Annotated to the first model or container type."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _strip(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(ann):
            if a is not type(None):
                return _strip(a)
    return ann


def _fields_at(model_cls: Any, loc: tuple) -> list[str]:
    """Field names of the (sub)model that contains ``loc`` (used to suggest the nearest valid key)."""
    cur = model_cls
    for part in loc[:-1]:
        cur = _strip(cur)
        if typing.get_origin(cur) in (list, dict):
            cur = typing.get_args(cur)[-1]
        elif isinstance(cur, type) and issubclass(cur, BaseModel) and part in cur.model_fields:
            cur = cur.model_fields[part].annotation
        else:
            return []
    cur = _strip(cur)
    return list(cur.model_fields) if isinstance(cur, type) and issubclass(cur, BaseModel) else []


def describe_first_error(exc: ValidationError, model_cls: type[BaseModel]) -> tuple[tuple, str]:
    """(location, one-line description) of the first error, with the nearest valid key for unknown keys."""
    errors = exc.errors()
    err = errors[0]
    loc = tuple(err["loc"])
    etype = err["type"]
    if etype == "kdlab_component":
        ctx = err.get("ctx", {})
        loc = loc + tuple(ctx.get("subloc", ()))
        msg = ctx.get("msg", err["msg"])
    elif etype == "extra_forbidden":
        h = hint(str(loc[-1]), _fields_at(model_cls, loc))
        msg = "unknown key" + (f"; {h}" if h else "")
    elif etype == "missing":
        msg = "required key is missing"
    else:
        msg = err["msg"]
        if "input" in err and not isinstance(err["input"], dict | list):
            got = repr(err["input"])
            msg += f" (got {got if len(got) <= 80 else got[:77] + '...'})"
    more = len(errors) - 1
    inner = re.search(r" \(and (\d+) more errors?\)$", msg)  # a component's own errors, counted once
    if inner:
        more += int(inner.group(1))
        msg = msg[:inner.start()]
    if more:
        msg += f" (and {more} more error{'s' if more > 1 else ''})"
    return loc, msg
