"""Load YAML configs, apply ``a.b.c=value`` overrides and validate, turning every failure into one line."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from kdlab.config.components import describe_first_error
from kdlab.core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A mapping that names a key twice is an error, not 'the last one wins' (a silently lost setting)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                dup = key in seen
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it
            if dup:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    if not p.is_file():
        raise ConfigError(f"config file {p} is not a regular file (a YAML file is expected)")
    try:
        data = load_yaml_text(p.read_text())
    except RecursionError:
        raise ConfigError(f"cannot parse {p}: nested too deeply") from None
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
        return load_yaml_text(text) if text.strip() else ""
    except RecursionError:
        raise ConfigError(f"override value nested too deeply: {text[:40]}...") from None
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"override value {text[:60]!r}: {e.problem}") from None
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
