"""Registries: one decorator makes a model, data set or method available by name in configs and the CLI.

Each entry carries a pydantic model of its parameters, taken from the entry's ``Params`` class when it has one,
otherwise derived from the signature of the function (or the class ``__init__``).  Parameters that kdlab injects
itself (e.g. ``num_classes`` for models) are excluded from the user-visible schema.

Methods (the teacher-method and distillation-method registries) declare every parameter once, in their ``Params``
class (none: no parameters), and are built as ``Method(params, ctx)``: the validated ``Params`` object and a frozen
context object (:mod:`kdlab.methods.context`) whose fields the method reads, so a misspelt context name is an
error instead of an argument silently never passed.  Registering a method whose ``__init__`` takes anything but
``params`` and ``ctx`` is an error.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from kdlab.core.builtins import BUILTINS
from kdlab.core.errors import ConfigError


def nearest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Closest candidates to ``name`` (by edit similarity), for 'did you mean' hints."""
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not close:
        low = name.lower()
        close = [c for c in candidates if low and (low in c.lower() or c.lower() in low)][:n]
    return close


def hint(name: str, candidates: Iterable[str]) -> str:
    close = nearest(name, candidates)
    return f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""


class StrictParams(BaseModel):
    """Base class for component parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        from kdlab.core.no_bool_numbers import reject_bool

        return reject_bool(cls, value, info.field_name)


def unbounded(reason: str) -> dict[str, str]:
    """``json_schema_extra`` of a number field that no bound applies to, with the reason (every other number field
    of a config or a component declares its bounds: ``kdlab.config.describe.unbounded_numbers``)."""
    return {"unbounded": reason}


class _NoParams(StrictParams):
    """A method without parameters."""


_NO_PARAMS = _NoParams


def _signature(obj: Callable) -> inspect.Signature:
    """Signature of a function, or of the nearest ``__init__`` a class defines itself (not torch's/object's)."""
    if not inspect.isclass(obj):
        return inspect.signature(obj)
    for klass in obj.__mro__:
        if "__init__" in klass.__dict__:
            if klass is object or klass.__module__.startswith("torch."):
                return inspect.Signature()
            return inspect.signature(klass.__init__)
    return inspect.Signature()


_PARAM_LINE = re.compile(r"^(\w+): (\S.*)$")


def param_docs(doc: str, names: set[str]) -> dict[str, str]:
    """Parameter descriptions from a docstring's lines ``name: what it is`` (a parameter's name at the start of a
    line; indented lines below continue it), for the parameters in ``names``."""
    out: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        m = _PARAM_LINE.match(line)
        if m and m.group(1) in names:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current is not None and line.startswith((" ", "\t")) and line.strip():
            out[current] += " " + line.strip()
        else:
            current = None
    return out


def _params_from_signature(obj: Callable, skip: set[str]) -> type[BaseModel]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = _signature(obj)
    docs = param_docs(inspect.getdoc(obj) or "", set(sig.parameters))
    fields: dict[str, Any] = {}
    for pname, p in sig.parameters.items():
        if pname in skip or pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if p.annotation is not inspect.Parameter.empty else Any
        if isinstance(ann, str):
            ann = _resolve_annotation(ann, target)
        default = p.default if p.default is not inspect.Parameter.empty else ...
        doc = docs.get(pname)
        fields[pname] = (ann, Field(default, description=doc) if doc else default)
    name = getattr(obj, "__name__", "Component") + "Params"
    return create_model(name, __base__=StrictParams, **fields)


def _resolve_annotation(ann: str, target: Callable) -> Any:
    # ``from __future__ import annotations`` turns annotations into strings; evaluate them in the defining module.
    module = inspect.getmodule(target)
    ns = dict(vars(module)) if module else {}
    try:
        return eval(ann, ns)  # noqa: S307 - annotation strings from kdlab's own source
    except Exception:
        return Any


@dataclass
class Entry:
    name: str
    obj: Any
    params: type[BaseModel]
    summary: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self, raw: dict[str, Any]) -> BaseModel:
        """The validated parameters; a component whose defaults depend on other parameters fills them in here
        (``resolve_params``), so a resolved config states every number a run uses."""
        params = self.params.model_validate(raw)
        resolve = getattr(self.obj, "resolve_params", None)
        return resolve(params) if callable(resolve) else params

    #: the context class of a method registry's entries (None: a model or data set, called with keywords)
    context: Any = None

    def build(self, params: dict[str, Any] | BaseModel, ctx: Any = None, /, **context: Any) -> Any:
        """A model or data set: called with its parameters plus whichever ``context`` values its signature accepts.
        A method: called as ``obj(params, ctx)`` with its validated ``Params`` object and the context object
        (``ctx``, or one made from the ``context`` keywords: an unknown name is an error)."""
        if self.context is None:
            accepted = _signature(self.obj).parameters
            extra = {k: v for k, v in context.items() if k in accepted}
            return self.obj(**params, **extra)
        if not isinstance(params, BaseModel):
            params = self.validate(params)
        if ctx is None:
            ctx = self.context(**context)
        elif context:
            raise TypeError(f"{self.name}: pass the context object or context keywords, not both")
        return self.obj(params, ctx)


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


class Registry:
    """Name -> component.  ``kind`` is used in messages (e.g. 'model', 'distillation method')."""

    def __init__(self, kind: str, inject: Iterable[str] = (), context: str | None = None):
        """``context``: for a registry of methods, ``module:Class`` of their context object (imported on first use,
        as :mod:`kdlab.core` does not import the methods layer)."""
        self.kind = kind
        self.inject = set(inject)
        self.context = context
        self._entries: dict[str, Entry] = {}
        self._builtins_loaded = False

    def _load_builtins(self) -> None:
        """Import the built-in modules of this registry (:data:`kdlab.core.builtins.BUILTINS`) on first lookup."""
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for module in BUILTINS.get(self.kind, ()):
            importlib.import_module(module)

    def _context_class(self) -> Any:
        if isinstance(self.context, str):
            module, _, cls = self.context.partition(":")
            self.context = getattr(importlib.import_module(module), cls)
        return self.context

    def _params_of(self, name: str, obj: Any, params: type[BaseModel] | None) -> type[BaseModel]:
        if self.context is None:
            return params or getattr(obj, "Params", None) or _params_from_signature(obj, self.inject)
        # a method: its Params class is the one declaration of its parameters; __init__ takes (params, ctx)
        taken = [p for p in _signature(obj).parameters if p != "self"]
        if taken != ["params", "ctx"]:
            raise ValueError(f"{self.kind} {name!r}: __init__ must take (params, ctx), not ({', '.join(taken)}); "
                             "declare the method's parameters in its Params class and read the context from ctx")
        return params or getattr(obj, "Params", None) or _NO_PARAMS

    def _add(self, name: str, obj: Any, params: type[BaseModel] | None, summary: str, meta: dict) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        params = self._params_of(name, obj, params)
        entry = Entry(name, obj, params, summary or (inspect.getdoc(obj) or "").split("\n")[0], dict(meta))
        if self.context is not None:
            entry.context = self._context_class()
        self._entries[name] = entry

    def register(self, name: str | None = None, **meta: Any) -> Callable:
        def deco(obj: Any) -> Any:
            self._add(name or obj.__name__, obj, None, "", meta)
            return obj

        return deco

    def add(self, name: str, obj: Any, params: type[BaseModel] | None = None, summary: str = "", **meta) -> None:
        """Register without a decorator (e.g. many presets of one architecture)."""
        self._add(name, obj, params, summary, meta)

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's own component, once the test is done)."""
        del self._entries[name]

    def get(self, name: str) -> Entry:
        self._load_builtins()
        try:
            return self._entries[name]
        except KeyError:
            h = hint(name, self._entries)
            raise ConfigError(f"unknown {self.kind} {name!r}" + (f"; {h}" if h else "")) from None

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._entries

    def describe(self, name: str, params: dict[str, Any]) -> str:
        """``name`` plus the parameters that differ from their defaults, e.g. ``kd(T=2.0)``."""
        fields = self.get(name).params.model_fields
        changed = []
        for k, v in params.items():
            f = fields.get(k)
            default = None if f is None or f.is_required() else f.default
            if f is None or f.is_required() or _norm(v) != _norm(default):
                changed.append(f"{k}={_norm(v)}")
        return f"{name}({', '.join(changed)})" if changed else name

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]


MODELS = Registry("model", inject=("num_classes", "in_channels", "input_shape"))
DATASETS = Registry("dataset")
TEACHER_METHODS = Registry("teacher method", context="kdlab.methods.context:TeacherContext")
DISTILL_METHODS = Registry("distillation method", context="kdlab.methods.context:DistillContext")

register_model = MODELS.register
register_dataset = DATASETS.register
register_teacher_method = TEACHER_METHODS.register
register_distill_method = DISTILL_METHODS.register
