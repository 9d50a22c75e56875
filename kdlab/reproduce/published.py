"""The published numbers of the source papers, as validated data.

Each paper is one YAML document shipped in ``kdlab/reproduce/published/<paper>.yaml`` (read through
``importlib.resources``). A document holds the paper's tables and figures; a table declares its columns and rows
(keys and the paper's labels, in the paper's order) and ``values``: row key -> column key -> ``{mean, std}``, one
entry per cell the paper prints (cells printed empty or as '-' are absent, and say so in ``notes``).

Key conventions (shared by every paper):

- architectures use kdlab's model names (``wrn_40_2``, ``resnet32x4``, ``ShuffleV2``, ``imagenet_resnet18`` ...);
  a pair is ``<teacher>-<student>``;
- in tables that compare teacher trainings, a row is a distillation method (kdlab registry names: ``kd``,
  ``fitnet``, ``ofd`` ...; ``none`` = the student trained alone; ``teacher`` = the teacher's own accuracy;
  ``best`` / ``average`` = the paper's summary rows) and a column is ``<pair>.<teacher kind>`` (``standard``,
  ``sftn``, ``soteacher`` ...) or ``<pair>.delta``, optionally followed by a metric (``.top1``, ``.kl`` ...);
- in tables whose rows are teacher trainings, a column is ``<pair>.student`` / ``<pair>.teacher``.

Usage::

    from kdlab.reproduce.published import load_published, published_table
    cell = published_table("soteacher", "table1").value("soteacher", "wrn_40_2-wrn_40_1.student")
    cell.mean, cell.std        # 74.35, 0.23
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kdlab.core.errors import ConfigError

__all__ = [
    "Published",
    "PublishedColumn",
    "PublishedRow",
    "PublishedTable",
    "PublishedValue",
    "available_papers",
    "load_published",
    "published_table",
]

_ID = re.compile(r"^(table\d+|fig\d+|early_fig\d+)$")
_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublishedValue(_Strict):
    """One printed cell: the number as printed (percent stays percent) and its ± std when the paper prints one."""

    mean: float
    std: float | None = Field(default=None, ge=0)


class PublishedColumn(_Strict):
    key: str
    label: str

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _KEY.match(v):
            raise ValueError(f"column key {v!r}: use letters, digits, '_', '-', '.'")
        return v


class PublishedRow(_Strict):
    key: str
    label: str

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _KEY.match(v):
            raise ValueError(f"row key {v!r}: use letters, digits, '_', '-', '.'")
        return v


class PublishedTable(_Strict):
    """One table or figure of a paper."""

    id: str
    kind: Literal["table", "figure"]
    title: str
    caption: str
    dataset: Literal["cifar100", "tinyimagenet", "imagenet", "several"]
    reporting: Literal["last", "best", "not stated"]
    runs_per_cell: int | str | None
    setup: str
    columns: list[PublishedColumn]
    rows: list[PublishedRow]
    values: dict[str, dict[str, PublishedValue]]
    notes: str = ""

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"table id {v!r}: expected table<N>, fig<N> or early_fig<N>")
        return v

    @model_validator(mode="after")
    def _cells(self) -> PublishedTable:
        col_keys = [c.key for c in self.columns]
        row_keys = [r.key for r in self.rows]
        for name, keys in (("column", col_keys), ("row", row_keys)):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ValueError(f"{self.id}: duplicate {name} keys {dup}")
        cols, rows = set(col_keys), set(row_keys)
        for r, cells in self.values.items():
            if r not in rows:
                raise ValueError(f"{self.id}: values row {r!r} is not a declared row")
            unknown = sorted(set(cells) - cols)
            if unknown:
                raise ValueError(f"{self.id}: values row {r!r} names undeclared columns {unknown}")
            if not cells:
                raise ValueError(f"{self.id}: values row {r!r} is empty")
        if self.kind == "table" and not self.values:
            raise ValueError(f"{self.id}: a table needs values")
        if self.values or self.rows or self.columns:
            empty_rows = [r for r in row_keys if not self.values.get(r)]
            used = {c for cells in self.values.values() for c in cells}
            empty_cols = [c for c in col_keys if c not in used]
            if empty_rows or empty_cols:
                raise ValueError(f"{self.id}: rows {empty_rows} / columns {empty_cols} have no value")
        return self

    @property
    def row_keys(self) -> list[str]:
        return [r.key for r in self.rows]

    @property
    def column_keys(self) -> list[str]:
        return [c.key for c in self.columns]

    def value(self, row_key: str, col_key: str) -> PublishedValue | None:
        """The printed cell, or None where the paper prints nothing; KeyError for an undeclared row or column."""
        if row_key not in self.row_keys:
            raise KeyError(f"{self.id}: no row {row_key!r} (rows: {', '.join(self.row_keys)})")
        if col_key not in self.column_keys:
            raise KeyError(f"{self.id}: no column {col_key!r} (columns: {', '.join(self.column_keys)})")
        return self.values.get(row_key, {}).get(col_key)

    def cells(self) -> list[tuple[str, str, PublishedValue]]:
        """Every printed cell as (row key, column key, value), in row then column order."""
        return [(r, c, self.values[r][c]) for r in self.row_keys for c in self.column_keys
                if c in self.values.get(r, {})]


class Published(_Strict):
    """All transcribed tables and figures of one paper."""

    paper: str
    title: str
    source: str
    reporting: str
    tables: list[PublishedTable]

    @model_validator(mode="after")
    def _unique_ids(self) -> Published:
        ids = [t.id for t in self.tables]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"{self.paper}: duplicate table ids {dup}")
        return self

    @property
    def table_ids(self) -> list[str]:
        return [t.id for t in self.tables]

    def table(self, table_id: str) -> PublishedTable:
        for t in self.tables:
            if t.id == table_id:
                return t
        raise ConfigError(f"paper {self.paper!r} has no table {table_id!r} (has: {', '.join(self.table_ids)})")


def _data_dir():
    return resources.files("kdlab.reproduce").joinpath("published")


def available_papers() -> list[str]:
    """The papers with a published-numbers file, e.g. ['sftn', 'soteacher']."""
    return sorted(p.name[: -len(".yaml")] for p in _data_dir().iterdir() if p.name.endswith(".yaml"))


@functools.cache
def load_published(paper: str) -> Published:
    """Load and validate ``published/<paper>.yaml``; ConfigError for an unknown paper."""
    if paper not in available_papers():
        raise ConfigError(f"no published numbers for paper {paper!r} (known: {', '.join(available_papers())})")
    text = _data_dir().joinpath(f"{paper}.yaml").read_text(encoding="utf-8")
    doc = Published.model_validate(yaml.safe_load(text))
    if doc.paper != paper:
        raise ValueError(f"published/{paper}.yaml declares paper {doc.paper!r}")
    return doc


def published_table(paper: str, table_id: str) -> PublishedTable:
    """One table or figure of a paper, e.g. ``published_table('sftn', 'table1')``."""
    return load_published(paper).table(table_id)
