"""YAML reads ``true`` as a boolean, and pydantic would take it for the number 1: a number field refuses it."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic_core import PydanticCustomError


def _types(annotation: Any) -> set[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_types(a) for a in typing.get_args(annotation)))
    return {annotation}


def is_number_field(annotation: Any) -> bool:
    kinds = _types(annotation)
    return bool(kinds & {int, float}) and not kinds & {bool, str, Any}


def reject_bool(model_cls: type, value: Any, field_name: str | None) -> Any:
    if isinstance(value, bool) and field_name is not None:
        field = model_cls.model_fields.get(field_name)
        if field is not None and is_number_field(field.annotation):
            raise PydanticCustomError("bool_not_number", "expected a number, not a boolean")
    return value
