"""``kdlab list``: the registered components, with parameter counts, papers, default weights and every parameter's
type, default and meaning.

What it prints is gathered first into a catalogue of plain data (names, summaries, table cells, parameter rows).
Gathering it imports torch and every component and builds each model once, seconds of work, so the catalogue of
kdlab's own components is stored as package data, ``kdlab/cli/catalogue.json``, with a fingerprint of the source
files it came from; ``kdlab list`` prints the stored one while the fingerprint matches and gathers anew otherwise (a
component file was added or edited), so it is never stale, only slower.
``python -m kdlab.cli.listing --write-catalogue`` rewrites it;
``tests/cli/test_main_discovery.py`` checks that the stored catalogue is current and equals the registries'.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from kdlab.core.errors import ConfigError

KINDS = ("models", "teacher-methods", "distill-methods", "datasets")
_SAMPLE_SHAPES = {"image": (3, 32, 32), "sequence": (1, 40), "any": (3, 32, 32)}
_ROOT = Path(__file__).resolve().parents[1]  # the kdlab package
# the files a catalogue is derived from: the components, their parameter models and how both are described
_SOURCES = ("core/registry.py", "core/builtins.py", "cli/listing.py", "config/describe.py", "config/components.py",
            "data", "methods", "models", "regularizers")
CATALOGUE_FILE = _ROOT / "cli" / "catalogue.json"


def source_fingerprint() -> str:
    h = hashlib.sha256()
    for src in _SOURCES:
        path = _ROOT / src
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.relative_to(_ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:32]


# -- gathering (imports torch and every component) ---------------------------------------------------------------

def _parameter_count(entry) -> str:
    import torch

    from kdlab.models import build_model, count_parameters

    shape = _SAMPLE_SHAPES[entry.meta.get("input", "any")]
    # on the meta device nothing is allocated or initialised, so even ResNet-152 costs milliseconds
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                return f"{count_parameters(build_model(entry.name, {}, 100, shape)) / 1e6:.2f}M"
        except Exception:  # noqa: BLE001 - a model that needs parameters has no default count
            continue
    return "-"


_WEIGHTS = ("gamma", "alpha", "beta", "T")


def _weight_cells(entry) -> dict[str, str]:
    """gamma / alpha / beta / T as the method uses them by default; ``a / b``: with beta_preset standard / soteacher
    (the preset fills a weight left at null)."""
    from kdlab.methods.distiller import LOGIT_WEIGHTS

    fields = entry.params.model_fields

    def cell(name: str) -> str:
        f = fields.get(name)
        if f is not None and f.default is None and name in ("gamma", "alpha"):
            std, so = (w[0 if name == "gamma" else 1] for w in (LOGIT_WEIGHTS["standard"], LOGIT_WEIGHTS["soteacher"]))
            return f"{std:g} / {so:g}"
        if name == "beta":
            beta = getattr(entry.obj, "BETA", None)
            if f is not None and beta and any(beta.values()) and f.default is None:
                return f"{beta['standard']:g} / {beta['soteacher']:g}"
        if f is None or f.is_required():
            return "-"
        return f"{f.default:g}" if isinstance(f.default, float) else str(f.default)

    return {w: cell(w) for w in _WEIGHTS}


def catalogue_from_registry() -> dict[str, list[dict[str, Any]]]:
    """The catalogue of every registered component, gathered from the registries."""
    from kdlab.config.components import DataSplitParams
    from kdlab.config.describe import param_rows
    from kdlab.core.registry import DATASETS, DISTILL_METHODS, MODELS, TEACHER_METHODS

    def base(e) -> dict[str, Any]:
        return {"name": e.name, "summary": e.summary, "params": [r.cells() for r in param_rows(e.params)]}

    return {
        "models": [{**base(e), "input": e.meta.get("input", "any"), "count": _parameter_count(e)}
                   for e in MODELS.entries()],
        "teacher-methods": [{**base(e), "paper": e.meta.get("paper", "")} for e in TEACHER_METHODS.entries()],
        "distill-methods": [{**base(e), "paper": e.meta.get("paper", ""), **_weight_cells(e),
                             "own_teacher_passes": e.meta.get("own_teacher_passes", "")}
                            for e in DISTILL_METHODS.entries()],
        "datasets": [{**base(e), "input_shape": str(e.meta.get("input_shape", "")),
                      "classes": str(e.meta.get("classes", "")),  # and the keys every data set takes (val_fraction)
                      "params": [r.cells() for r in param_rows(e.params) + param_rows(DataSplitParams)]}
                     for e in DATASETS.entries()],
    }


def catalogue() -> dict[str, list[dict[str, Any]]]:
    """The stored catalogue when it is current, else one gathered now."""
    # components registered in this process (a user's, or the built-ins already imported) are the registries' own
    registry = sys.modules.get("kdlab.core.registry")
    live = registry is not None and any(r._entries for r in (registry.MODELS, registry.DATASETS,
                                                             registry.TEACHER_METHODS, registry.DISTILL_METHODS))
    if not live:
        stored = read_catalogue()
        if stored is not None and stored["fingerprint"] == source_fingerprint():
            return stored["catalogue"]
    return catalogue_from_registry()


def read_catalogue(path: Path = CATALOGUE_FILE) -> dict[str, Any] | None:
    """The stored catalogue, ``{"fingerprint": ..., "catalogue": ...}``, or None when it is missing or unreadable."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) and {"fingerprint", "catalogue"} <= set(stored) else None


def write_catalogue(path: Path = CATALOGUE_FILE) -> Path:
    """Store the catalogue of the built-in components (``python -m kdlab.cli.listing --write-catalogue``)."""
    stored = {"note": "kdlab list's catalogue of the built-in components (kdlab/cli/listing.py); generated by "
                      "`python -m kdlab.cli.listing --write-catalogue`: do not edit",
              "fingerprint": source_fingerprint(), "catalogue": catalogue_from_registry()}
    path.write_text(json.dumps(stored, indent=1) + "\n")
    return path


# -- rendering (plain data only) -----------------------------------------------------------------------------------

_PARAM_HEADER = ["parameter", "type", "default", "description"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    from kdlab.core.text import markdown_table

    return markdown_table(header, rows)


def _parameter_blocks(entries: list[dict[str, Any]], what: str) -> str:
    """Each component's parameter table.  Rows that more than half of the components share word for word (the
    distillation methods' loss weights, say) are shown once, above the others."""
    counts: dict[tuple, int] = {}
    for e in entries:
        for row in e["params"]:
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    common = [list(r) for r, n in counts.items() if n > len(entries) / 2] if len(entries) > 2 else []
    common_set = {tuple(r) for r in common}
    blocks = []
    if common:
        blocks.append(f"Parameters of most {what} (below: which take them, and each one's own)\n\n"
                      + _table(_PARAM_HEADER, common))
    for e in entries:
        own = [r for r in e["params"] if tuple(r) not in common_set]
        shared = [r[0] for r in e["params"] if tuple(r) in common_set]
        title = e["name"] + (f" ({e['paper']})" if e.get("paper") else "")
        if common:
            title += (": and the common parameters above" if len(shared) == len(common)
                      else f": and the common {', '.join(shared)}" if shared else ": none of the common parameters")
        blocks.append(title + ("\n\n" + _table(_PARAM_HEADER, own) if own else ("" if common else ": no parameters")))
    return "\n\n".join(blocks)


def _models(entries: list[dict[str, Any]]) -> str:
    return ("Models (parameters at 100 classes, 3x32x32 images / 1x40 sequences; kdlab list models NAME: its "
            "parameters)\n\n" + _table(["name", "input", "params", "description"],
                                       [[e["name"], e["input"], e["count"], e["summary"]] for e in entries]))


def _teacher_methods(entries: list[dict[str, Any]]) -> str:
    rows = [[e["name"], e["paper"] or "-", e["summary"]] for e in entries]
    return ("Teacher methods\n\n" + _table(["name", "paper", "description"], rows) + "\n\n"
            + _parameter_blocks(entries, "teacher methods"))


def _distill_methods(entries: list[dict[str, Any]]) -> str:
    rows = [[e["name"], e["paper"] or "-", *(e[w] for w in _WEIGHTS), e["summary"]] for e in entries]
    own = [f"  {e['name']}: {e['own_teacher_passes']}" for e in entries if e["own_teacher_passes"]]
    return ("Distillation methods (student loss = gamma CE + alpha KD + beta method loss; a / b: the value with "
            "beta_preset standard / soteacher)\n\n"
            + _table(["name", "paper", *_WEIGHTS, "description"], rows) + "\n\n"
            + "In a group of students of one teacher (kdlab study) every method takes the batch's teacher outputs "
              "from one shared pass; these also run the teacher themselves on:\n" + "\n".join(own) + "\n\n"
            + _parameter_blocks(entries, "distillation methods"))


def _datasets(entries: list[dict[str, Any]]) -> str:
    rows = [[e["name"], e["input_shape"], e["classes"], e["summary"]] for e in entries]
    return ("Data sets (kdlab list datasets NAME: its parameters)\n\n"
            + _table(["name", "input", "classes", "description"], rows))


_RENDER = {"models": _models, "teacher-methods": _teacher_methods, "distill-methods": _distill_methods,
           "datasets": _datasets}


def names(what: str, cat: dict[str, list[dict[str, Any]]] | None = None) -> list[str]:
    return [e["name"] for e in (cat or catalogue())[what]]


def _one(what: str, name: str, cat: dict[str, list[dict[str, Any]]]) -> str:
    from kdlab.core.registry import hint

    entry = next((e for e in cat[what] if e["name"] == name), None)
    if entry is None:
        h = hint(name, names(what, cat))
        raise ConfigError(f"list {what}: no {what.rstrip('s').replace('-', ' ')} {name!r}" + (f"; {h}" if h else ""))
    head = name + (f" ({entry['paper']})" if entry.get("paper") else "") + f": {entry['summary']}"
    return head + ("\n\n" + _table(_PARAM_HEADER, entry["params"]) if entry["params"] else "\n\nno parameters")


_GROUPS = {"all": KINDS, "methods": ("teacher-methods", "distill-methods")}


def listing(what: str = "all", name: str | None = None) -> str:
    """``what``: all, models, teacher-methods, distill-methods, methods (both) or datasets, or the name of a
    component (of any kind); ``name``: one component of kind ``what``.  One component comes with its parameters."""
    from kdlab.core.registry import hint

    if name is not None and what not in KINDS:
        raise ConfigError(f"list: {what!r} is not a kind of component ({', '.join(KINDS)})")
    cat = catalogue()
    if name is not None:
        return _one(what, name, cat)
    if what in KINDS or what in _GROUPS:
        return "\n\n".join(_RENDER[k](cat[k]) for k in _GROUPS.get(what, (what,)))
    found = [k for k in KINDS if what in names(k, cat)]  # e.g. `kdlab list kd`
    if not found:
        h = hint(what, [*_GROUPS, *KINDS, *(n for k in KINDS for n in names(k, cat))])
        raise ConfigError(f"list: {what!r} is neither a kind of component nor a component's name"
                          + (f"; {h}" if h else ""))
    return "\n\n".join(_one(k, what, cat) for k in found)  # a name of two kinds (none is): both


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    if sys.argv[1:] != ["--write-catalogue"]:
        sys.exit("usage: python -m kdlab.cli.listing --write-catalogue")
    print(f"wrote {write_catalogue()}")
