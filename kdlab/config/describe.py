"""Readable descriptions of config schemas and component parameters: key, type, default and meaning of each field,
generated from the pydantic models (their ``Field`` descriptions and class docstrings are the only source).

Used by ``kdlab schema`` (the run configs) and ``kdlab list`` (each component's parameters).  Nothing here imports
torch or the registered components: describing a schema needs only its classes.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types as at
from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from kdlab.config import components
from kdlab.config.components import Component
from kdlab.core.errors import ConfigError
from kdlab.core.registry import hint


@dataclass(frozen=True)
class FieldRow:
    key: str
    type: str
    default: str
    description: str

    def cells(self) -> list[str]:
        return [self.key, self.type, self.default, self.description]


def _component_labels() -> dict[int, str]:
    """The component annotations of :mod:`kdlab.config.components`, keyed by their validator (pydantic keeps the
    validator object in a field's metadata, so it identifies the annotation a field was declared with)."""
    kinds = {"datasets": "data set", "models": "model", "teacher-methods": "teacher method",
             "distill-methods": "distillation method"}
    specs = ((components.DataSpec, "datasets"), (components.ModelSpec, "models"),
             (components.TeacherMethodSpec, "teacher-methods"), (components.TeacherMethodOrStandard, "teacher-methods"),
             (components.DistillMethodSpec, "distill-methods"), (components.DistillMethodOrKD, "distill-methods"))
    return {id(typing.get_args(spec)[1]): f"{kinds[what]} (kdlab list {what})" for spec, what in specs}


def _constraint(m: Any) -> str | None:
    for cls, op, attr in ((at.Gt, ">", "gt"), (at.Ge, ">=", "ge"), (at.Lt, "<", "lt"), (at.Le, "<=", "le")):
        if isinstance(m, cls):
            return f"{op} {getattr(m, attr)}"
    if isinstance(m, at.MinLen):
        return f"at least {m.min_length} item{'s' if m.min_length != 1 else ''}"
    if isinstance(m, at.MaxLen):
        return f"at most {m.max_length} items"
    # pydantic folds several bounds into one object (Field(ge=0, lt=1) on an Annotated type)
    if hasattr(m, "metadata") and isinstance(getattr(m, "metadata", None), list | tuple):
        parts = [c for c in map(_constraint, m.metadata) if c]
        return ", ".join(parts) or None
    return None


def type_label(annotation: Any, metadata: typing.Sequence[Any] = ()) -> str:
    """``float >= 0 or null``, ``sgd/adam/adamw``, ``list[int >= 0]``, ``model (kdlab list models)`` (no ``|``:
    the labels are cells of markdown tables)."""
    labels = _component_labels()
    for m in metadata:
        if isinstance(m, BeforeValidator) and id(m) in labels:
            return labels[id(m)]
    constraints = ", ".join(c for c in map(_constraint, metadata) if c)
    return _label(annotation, constraints, labels)


def _label(ann: Any, constraints: str, labels: dict[int, str]) -> str:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        for m in args[1:]:
            if isinstance(m, BeforeValidator) and id(m) in labels:
                return labels[id(m)]
        inner = ", ".join(c for c in map(_constraint, args[1:]) if c)
        return _label(args[0], ", ".join(c for c in (inner, constraints) if c), labels)
    if origin in (typing.Union, types.UnionType):
        parts = [_label(a, constraints, labels) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "/".join(json.dumps(a) if not isinstance(a, str) else a for a in args)
    if origin in (list, tuple, dict, set):
        inner = ", ".join("..." if a is Ellipsis else _label(a, "", labels) for a in args)
        base = f"{origin.__name__}[{inner}]" if args else origin.__name__
        return f"{base} ({constraints})" if constraints else base
    if ann is Any or ann is None:
        base = "any"
    elif isinstance(ann, type) and issubclass(ann, BaseModel):
        base = "mapping"
    elif isinstance(ann, type):
        base = ann.__name__
    else:
        base = str(ann).replace("typing.", "")
    return f"{base} {constraints}" if constraints else base


def value_text(value: Any) -> str:
    """A default as it is written in YAML (``null``, ``true``, ``[150, 180, 210]``, ``1e-05``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, BaseModel):
        return value_text(value.model_dump(mode="json"))
    return repr(value)


def default_value(f: FieldInfo) -> Any:
    """The field's default (``PydanticUndefined`` when it is required)."""
    if f.default_factory is not None:
        return f.default_factory()
    return f.default


def _doc(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _models_in(ann: Any) -> tuple[str, type[BaseModel]] | None:
    """``("", M)`` for a field of model type ``M`` (or ``M | None``), ``("[]", M)`` for a list of them and
    ``(".<label>", M)`` for a mapping of names to them."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin in (typing.Union, types.UnionType):
        found = [m for m in (_models_in(a) for a in args if a is not type(None)) if m]
        return found[0] if len(found) == 1 else None
    if origin is list and args:
        inner = _models_in(args[0])
        return ("[]" + inner[0], inner[1]) if inner else None
    if origin is dict and len(args) == 2:
        inner = _models_in(args[1])
        return (".<label>" + inner[0], inner[1]) if inner else None
    if isinstance(ann, type) and issubclass(ann, BaseModel) and ann is not Component:  # a component is one value
        return "", ann
    return None


def field_rows(model: type[BaseModel], prefix: str = "") -> Iterator[FieldRow]:
    """One row per field of ``model``, and below a field of model type (or a list / mapping of them) the rows of
    that model with dotted keys (``optim.lr``, ``pairs[].student``, ``teacher.overrides.<label>.optim``)."""
    for name, f in model.model_fields.items():
        key = prefix + name
        nested = _models_in(f.annotation)
        default = default_value(f)
        if default is PydanticUndefined:
            default_txt = "required"
        elif nested and isinstance(default, BaseModel):
            default_txt = "(its keys' defaults)"
        else:
            default_txt = value_text(default)
        description = " ".join((f.description or "").split())
        if not description and nested:
            description = _doc(nested[1])
        yield FieldRow(key, type_label(f.annotation, f.metadata), default_txt, description)
        if nested:
            yield from field_rows(nested[1], f"{key}{nested[0]}.")


def _has_bound(metadata: typing.Iterable[Any]) -> bool:
    for m in metadata:
        if isinstance(m, at.Gt | at.Ge | at.Lt | at.Le):
            return True
        if isinstance(m, at.GroupedMetadata) and _has_bound(list(m)):
            return True
        if isinstance(getattr(m, "metadata", None), list | tuple) and _has_bound(m.metadata):  # a FieldInfo
            return True
    return False


def _unbounded_number(ann: Any, metadata: tuple = ()) -> bool:
    """Whether ``ann`` holds an int or float (itself, in a union, or as the items of a list, tuple or mapping)
    without a bound; a container's items carry their own bounds (``list[NonNegativeInt]``)."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _unbounded_number(args[0], (*metadata, *args[1:]))
    if origin in (typing.Union, types.UnionType):
        return any(_unbounded_number(a, metadata) for a in args)
    if origin in (list, tuple, set, frozenset, dict):
        return any(_unbounded_number(a) for a in args if a is not Ellipsis)
    return ann in (int, float) and not _has_bound(metadata)


def unbounded_numbers(model: type[BaseModel], prefix: str = "") -> list[str]:
    """The dotted keys of ``model``'s number fields (nested config models included) that declare neither a bound
    (``Field(ge=0)``, ``PositiveInt``, ``list[NonNegativeInt]``) nor why none applies
    (``json_schema_extra=unbounded(reason)``, :func:`kdlab.core.registry.unbounded`).  A field typed ``Any`` with a
    number default counts too: a parameter whose annotation could not be read is not validated at all."""
    out = []
    for name, f in model.model_fields.items():
        key = prefix + name
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        default = default_value(f)
        untyped = f.annotation is Any and isinstance(default, int | float) and not isinstance(default, bool)
        if not extra.get("unbounded") and (untyped or _unbounded_number(f.annotation, tuple(f.metadata))):
            out.append(key)
        nested = _models_in(f.annotation)
        if nested:
            out += unbounded_numbers(nested[1], f"{key}{nested[0]}.")
    return out


def param_rows(params: type[BaseModel]) -> list[FieldRow]:
    """A component's parameters (its ``Params`` model), one level deep."""
    return [r for r in field_rows(params) if "." not in r.key]


def _schemas() -> dict[str, type[BaseModel]]:
    from kdlab.config.schema import DistillRunConfig, EvalConfig, StudyConfig, TeacherRunConfig

    return {"teacher": TeacherRunConfig, "distill": DistillRunConfig, "study": StudyConfig, "eval": EvalConfig}


SCHEMA_KINDS = ("teacher", "distill", "study", "eval")


def schema_rows(kind: str, key: str | None = None) -> list[FieldRow]:
    """The rows of a run config's schema (``kind``: teacher, distill, study or eval); ``key``: only that key and the
    keys below it."""
    model = _schemas()[kind]
    rows = list(field_rows(model))
    if key is None:
        return rows
    picked = [r for r in rows if r.key == key or r.key.startswith((key + ".", key + "["))]
    if not picked:
        h = hint(key, [r.key for r in rows])
        raise ConfigError(f"schema {kind}: no key {key!r}" + (f"; {h}" if h else ""))
    return picked


def schema_text(kind: str, key: str | None = None) -> str:
    from kdlab.core.text import markdown_table

    model = _schemas()[kind]
    head = (f"{_doc(model).replace('``', '')}\nKeys of the config file (dotted for overrides: optim.lr=0.1); "
            "a component (data set, model, method) is a name or {name: ..., its parameters}: kdlab list shows them.")
    return head + "\n\n" + markdown_table(["key", "type", "default", "description"],
                                           [r.cells() for r in schema_rows(kind, key)])
