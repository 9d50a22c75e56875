"""``kdlab tune``'s settings: a hyper-parameter search over the keys of one teacher or distill run config.

A tune file names the run config it starts from and the keys to search, each with its distribution::

    base: configs/digits/student.yaml        # a train-teacher or distill config (or the mapping itself)
    overrides: [train.epochs=20]             # optional: applied to base first
    search:
      method.T: {float: [1, 8]}
      optim.lr: {float: [0.01, 0.2], log: true}
      train.batch_size: {choice: [32, 64, 128]}
      train.epochs: {int: [10, 30]}
    trials: 20
    out_dir: runs/tune-kd

On the command line the same search is ``--search method.T=float:1:8 --search optim.lr=float:0.01:0.2:log
--search train.batch_size=choice:32,64,128`` (:func:`parse_search`).  Every key and every distribution's ends (and
each choice) are validated against the run config's schema before anything trains (:func:`check_search`): an
unknown key or a value the key does not take is a one-line error naming the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, NonNegativeInt, PositiveInt, ValidationError, model_serializer, model_validator
from pydantic_core import PydanticCustomError

from kdlab.config import DistillRunConfig, EvalConfig, StudyConfig, TeacherRunConfig, schema_for
from kdlab.config.components import describe_first_error
from kdlab.config.loader import apply_overrides, parse_value, read_yaml, validate
from kdlab.config.schema import Strict
from kdlab.core.errors import ConfigError

KINDS = ("float", "int", "choice")
# set by the search itself: each trial writes its own run folder
RESERVED_KEYS = ("out_dir",)
SCHEMAS: dict[str, type[BaseModel]] = {"teacher": TeacherRunConfig, "distill": DistillRunConfig}


def _invalid(msg: str, *subloc: str) -> PydanticCustomError:
    """A validation error whose message is ``msg`` alone, at ``subloc`` below the model being validated."""
    return PydanticCustomError("kdlab_component", "{msg}", {"msg": msg, "subloc": subloc})


class Distribution(Strict):
    """One key's search distribution: ``{float: [low, high], log: true}``, ``{int: [low, high]}`` or
    ``{choice: [a, b, ...]}`` (``step`` for float and int: a grid from low)."""

    kind: Literal["float", "int", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = Field(False, description="float / int: sample uniformly in log space (low > 0)")
    step: float | None = Field(None, gt=0, description="float / int: values low, low + step, ... only")
    choices: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _user_form(cls, v: Any) -> Any:
        if not isinstance(v, dict) or "kind" in v:
            return v
        kinds = [k for k in KINDS if k in v]
        if len(kinds) != 1:
            raise _invalid("give one of float: [low, high], int: [low, high] or choice: [a, b, ...]" +
                             (f" (not {' and '.join(kinds)})" if kinds else ""))
        kind = kinds[0]
        rest = {k: x for k, x in v.items() if k != kind}
        if kind == "choice":
            return {"kind": kind, "choices": v[kind], **rest}
        ends = v[kind]
        if not isinstance(ends, list | tuple) or len(ends) != 2:
            raise _invalid(f"{kind}: expected [low, high], got {ends!r}")
        return {"kind": kind, "low": ends[0], "high": ends[1], **rest}

    @model_validator(mode="after")
    def _consistent(self) -> Distribution:
        if self.kind == "choice":
            if self.choices is None or len(self.choices) < 2:
                raise _invalid("choice: give at least two values")
            if len({repr(c) for c in self.choices}) < len(self.choices):
                raise _invalid(f"choice: the values repeat ({self.choices})")
            if self.log or self.step is not None or self.low is not None or self.high is not None:
                raise _invalid("choice: takes no low, high, log or step")
            return self
        if self.low is None or self.high is None or self.choices is not None:
            raise _invalid(f"{self.kind}: give [low, high] (and no choices)")
        if not self.low < self.high:
            raise _invalid(f"{self.kind}: low must be below high, got [{self.low:g}, {self.high:g}]")
        if self.log and self.low <= 0:
            raise _invalid(f"{self.kind}: log needs low > 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise _invalid(f"{self.kind}: log and step do not go together")
        if self.kind == "int" and not all(float(x).is_integer() for x in (self.low, self.high, self.step or 1)):
            raise _invalid(f"int: low, high and step must be whole numbers, got [{self.low:g}, {self.high:g}]")
        return self

    @model_serializer
    def _as_written(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        num = int if self.kind == "int" else float
        out: dict[str, Any] = {self.kind: [num(self.low), num(self.high)]}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = num(self.step)
        return out

    def probes(self) -> list[Any]:
        """Values a key must take for the search to be valid: both ends, a value inside (a float range on an
        integer key fails there) and every choice."""
        if self.kind == "choice":
            return list(self.choices)
        lo, hi = self.low, self.high
        if self.kind == "int":
            return [int(lo), int(hi)]
        inner = math.sqrt(lo * hi) * 1.0123 if self.log else lo + (hi - lo) * 0.3731  # not a round number
        return [float(lo), float(hi), min(inner, hi)]

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice of " + ", ".join(map(str, self.choices))
        return f"{self.kind} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "") + \
            (f" step {self.step:g}" if self.step is not None else "")


class TuneConfig(Strict):
    """``kdlab tune``: search hyper-parameters of a train-teacher or distill run with Optuna (TPE sampler)."""

    base: str | dict[str, Any] = Field(description="the run config to tune: a train-teacher or distill YAML file "
                                       "(relative to the working directory, as every path of a run config), or the "
                                       "mapping itself")
    overrides: list[str] = Field([], description="dotted overrides applied to base first (key=value)")
    kind: Literal["teacher", "distill"] | None = Field(None, description="teacher or distill (default: detected "
                                                       "from base: a config with student is a distill config)")
    search: dict[str, Distribution] = Field({}, description="dotted config key -> {float: [low, high], log: true} "
                                            "| {int: [low, high]} | {choice: [a, b, ...]}")
    trials: PositiveInt = Field(20, description="trials of the search (finished, pruned or failed; a trial "
                                "interrupted by a kill is continued, not counted twice)")
    metric: str = Field("val_top1", description="what a trial scores: an epoch record's key (val_top1, val_nll, "
                        "...) or a summary key of the run; the last value the run reports counts")
    direction: Literal["maximize", "minimize"] | None = Field(None, description="default: minimize for metrics "
                                                              "that are losses (nll, loss, ece), else maximize")
    allow_test_metric: bool = Field(False, description="allow a metric measured on the test split (test_top1, "
                                    "top1, ...): selecting on the test set overfits it")
    seed: int = Field(0, description="seed of the TPE sampler (each trial's proposal derives from it and the "
                      "trials before it)")
    startup_trials: PositiveInt | None = Field(None, description="random trials before TPE models the results "
                                               "(default: trials // 4, between 2 and 10)")
    pruner: Literal["median", "none"] = Field("median", description="median: stop a trial whose metric at an "
                                              "epoch is worse than the median of the earlier trials' at that epoch")
    pruner_startup_trials: NonNegativeInt = Field(3, description="median: trials that finish before any is "
                                                  "pruned")
    pruner_warmup_epochs: NonNegativeInt = Field(1, description="median: epochs of a trial never pruned")
    storage: str | None = Field(None, description="Optuna storage: a journal file (default: out_dir/study.journal) "
                                "or an RDB URL (sqlite:///tune.db); workers given the same storage share the search")
    name: str = Field("tune", min_length=1, description="the study's name inside the storage")
    out_dir: str = Field("runs/tune", description="the search's folder: trials/trial-NNN (one run folder per "
                         "trial), trials.csv, search.png, best.yaml")

    @model_validator(mode="after")
    def _keys(self) -> TuneConfig:
        if not self.search:
            raise _invalid("give at least one key to search: KEY: {float: [LOW, HIGH]} in a tune file, or "
                           "--search KEY=float:LOW:HIGH", "search")
        for key in self.search:
            if key in RESERVED_KEYS:
                raise _invalid("set by the search itself (each trial has its own run folder)", "search", key)
        if not self.metric.strip():
            raise _invalid("empty", "metric")
        return self

    def resolved_direction(self) -> str:
        return self.direction or default_direction(self.metric)


def default_direction(metric: str) -> str:
    """Losses and calibration errors are minimised, everything else (accuracies, agreement) maximised."""
    return "minimize" if any(w in metric.split("_") for w in ("nll", "loss", "ece", "kl", "l1")) else "maximize"


def load_tune_config(source: str | Path | dict[str, Any] | TuneConfig) -> TuneConfig:
    """A validated tune config from a YAML file, a mapping or a config (then returned as it is)."""
    if isinstance(source, TuneConfig):
        return source
    data = dict(source) if isinstance(source, dict) else read_yaml(source)
    return validate(TuneConfig, data, "tune config" if isinstance(source, dict) else str(source))


def parse_search(text: str) -> tuple[str, dict[str, Any]]:
    """``KEY=float:LOW:HIGH[:log]``, ``KEY=int:LOW:HIGH[:log]`` or ``KEY=choice:A,B,...`` -> (key, the
    distribution as a tune file writes it); values are YAML (``choice:kd,dkd``, ``choice:true,false``)."""
    key, sep, spec = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--search {text!r}: expected KEY=float:LOW:HIGH[:log], KEY=int:LOW:HIGH[:log] or "
                          "KEY=choice:A,B,...")
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    if kind == "choice":
        values = [parse_value(v.strip()) for v in rest.split(",")] if rest.strip() else []
        return key, {"choice": values}
    if kind not in ("float", "int"):
        raise ConfigError(f"--search {key}: unknown distribution {kind!r} (float:LOW:HIGH[:log], "
                          "int:LOW:HIGH[:log] or choice:A,B,...)")
    parts = rest.split(":")
    flags = parts[2:]
    if len(parts) < 2 or any(f.strip() != "log" for f in flags) or len(flags) > 1:
        raise ConfigError(f"--search {key}: expected {kind}:LOW:HIGH or {kind}:LOW:HIGH:log, got {spec!r}")
    out: dict[str, Any] = {kind: [parse_value(parts[0].strip()), parse_value(parts[1].strip())]}
    if flags:
        out["log"] = True
    return key, out


def base_mapping(cfg: TuneConfig) -> dict[str, Any]:
    """The base run config as written (a file's mapping), with the tune's overrides applied: what each trial
    starts from (kept unresolved so that a protocol still fills what the trial leaves open)."""
    raw = read_yaml(cfg.base) if isinstance(cfg.base, str) else dict(cfg.base)
    return apply_overrides(raw, cfg.overrides)


def run_schema(cfg: TuneConfig, raw: dict[str, Any]) -> type[BaseModel]:
    """The base config's schema: the tune's kind, else detected from its keys."""
    if cfg.kind is not None:
        return SCHEMAS[cfg.kind]
    schema = schema_for(raw)
    if schema in (StudyConfig, EvalConfig):
        what = "a study" if schema is StudyConfig else "an eval"
        raise ConfigError(f"base: {what} config cannot be tuned; give a train-teacher or distill config (or set kind)")
    return schema


def kind_of(schema: type[BaseModel]) -> str:
    return next(k for k, s in SCHEMAS.items() if s is schema)


def check_search(cfg: TuneConfig, raw: dict[str, Any], schema: type[BaseModel]) -> None:
    """Every search key, at each of its distribution's probe values, gives a valid run config; else a
    ConfigError naming the key (and the value, when the key exists but refuses it)."""
    source = cfg.base if isinstance(cfg.base, str) else "base"
    validate(schema, raw, source)
    for key, dist in cfg.search.items():
        path = key.split(".")
        if any(not p for p in path):
            raise ConfigError(f"search.{key}: not a dotted config key")
        for value in dist.probes():
            try:
                schema.model_validate(apply_overrides(raw, [(path, value)]))
            except ConfigError as e:
                raise ConfigError(f"search.{key}: {e}") from None
            except ValidationError as e:
                loc, msg = describe_first_error(e, schema)
                where = ".".join(str(p) for p in loc)
                if msg.startswith("unknown key"):
                    what = f"{where} is not a key of a {kind_of(schema)} config"
                    raise ConfigError(f"search.{key}: {msg.replace('unknown key', what, 1)}") from None
                raise ConfigError(f"search.{key}: the value {value!r} is refused ({where}: {msg})") from None


def trial_mapping(raw: dict[str, Any], params: dict[str, Any], out_dir: str | None) -> dict[str, Any]:
    """The base mapping with a trial's values (and its run folder, unless None) set."""
    items = [(k.split("."), v) for k, v in params.items()]
    if out_dir is not None:
        items.append((["out_dir"], out_dir))
    return apply_overrides(raw, items)


__all__ = ["Distribution", "TuneConfig", "base_mapping", "check_search", "default_direction", "kind_of",
           "load_tune_config", "parse_search", "run_schema", "trial_mapping"]
