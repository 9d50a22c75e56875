"""Load YAML configs, apply ``a.b.c=value`` overrides and validate, turning every failure into one line."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .components import describe_first_error

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"cannot parse {p}{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level of a config must be a mapping, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """YAML scalar/flow syntax: ``0.01`` -> float, ``[1,2]`` -> list, ``true`` -> bool, else the string."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def parse_overrides(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"bad override {item!r}: expected key.path=value, e.g. optim.lr=0.01")
        out.append((key.split("."), parse_value(value)))
    return out


def apply_overrides(data: dict[str, Any], overrides: Iterable[str] | Iterable[tuple[list[str], Any]]) -> dict:
    """Return a copy of ``data`` with the dotted overrides set (intermediate mappings are created)."""
    data = copy.deepcopy(data)
    items = list(overrides)
    if items and isinstance(items[0], str):
        items = parse_overrides(items)
    for path, value in items:
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if isinstance(child, str):
                child = {"name": child}  # ``method: kd`` refined by ``method.T=2``
            elif child is None:
                child = {}
            elif not isinstance(child, dict):
                dotted = ".".join(path[: i + 1])
                raise ConfigError(f"{dotted}: cannot set a sub-key of a {type(child).__name__} value")
            node[part] = child
            node = child
        node[path[-1]] = value
    return data


def validate(schema: type[M], data: Mapping[str, Any], source: str = "config") -> M:
    try:
        return schema.model_validate(dict(data))
    except ValidationError as e:
        loc, msg = describe_first_error(e, schema)
        key = ".".join(str(p) for p in loc) or "(top level)"
        raise ConfigError(f"{source}: {key}: {msg}") from None


def load_config(schema: type[M], source: str | os.PathLike | Mapping[str, Any] | BaseModel | None = None,
                overrides: Iterable[str] = ()) -> M:
    """Build a validated ``schema`` instance from a YAML path, a mapping or an existing config, plus overrides."""
    if isinstance(source, BaseModel):
        data = source.model_dump(mode="json")
        label = "config"
    elif isinstance(source, Mapping):
        data = dict(source)
        label = "config"
    elif source is None:
        data, label = {}, "config"
    else:
        data = read_yaml(source)
        label = str(source)
    data = apply_overrides(data, list(overrides))
    return validate(schema, data, label)


def to_plain(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: BaseModel | Mapping[str, Any]) -> str:
    data = to_plain(cfg) if isinstance(cfg, BaseModel) else dict(cfg)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
