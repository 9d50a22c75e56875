"""One declaration per figure (kdlab.analysis.figure_names.SPECS): complete, its functions resolve, and no other
module of kdlab spells a figure's name, caption or section."""

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from kdlab.analysis.figure_names import FIGURE_HELP, FIGURE_SPECS, RESULTS_RANK, SPECS, FigureSpec

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

PACKAGE = Path(__file__).resolve().parents[2] / "kdlab"
DECLARATIONS = PACKAGE / "analysis" / "figure_names.py"
# the study config's keys `sweeps:` and `trajectory:` are spelled like two figures: as a subscript, a dict key or
# the key of .get/.pop/.setdefault a string is a config key, not a figure
KEY_METHODS = {"get", "pop", "setdefault"}
# (file, keyword): a figure named by reference (the paper experiment that is a figure), checked to be declared
REFERENCES = {("reproduce/catalogue.py", "figure")}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_each_figure_is_declared_whole_and_its_functions_resolve(spec: FigureSpec):
    for f in dataclasses.fields(FigureSpec):
        value = getattr(spec, f.name)
        if f.name in ("name", "help", "needs", "caption", "section", "plot"):
            assert isinstance(value, str) and value.strip() == value and value, (spec.name, f.name)
    assert isinstance(spec.rank, int) and spec.rank != RESULTS_RANK
    plot = spec.plot_function()
    assert callable(plot) and spec.plot.endswith(":" + plot.__name__)
    params = inspect.signature(plot).parameters
    assert list(params)[:2] == ["records", "out_path"]
    assert all(o in params for o in spec.options), spec.options
    tables = spec.tables_function()
    assert tables is None or (callable(tables) and list(inspect.signature(tables).parameters) == ["records"])


def test_the_table_is_the_one_source():
    from kdlab.analysis.figures import FIGURES

    names = [s.name for s in SPECS]
    assert len(set(names)) == len(names) and list(FIGURE_SPECS) == names == list(FIGURE_HELP) == list(FIGURES)
    assert all(FIGURES[s.name] is s.plot_function() for s in SPECS)
    ranks = [s.rank for s in SPECS] + [RESULTS_RANK]
    sections = [s.section for s in SPECS] + ["Results"]
    assert len(set(ranks)) == len(ranks) and len(set(sections)) == len(sections)


def _is_key(node: ast.Constant, parents: dict) -> bool:
    parent = parents.get(node)
    if isinstance(parent, ast.Subscript) and parent.slice is node:
        return True
    if isinstance(parent, ast.Dict) and any(k is node for k in parent.keys):
        return True
    return (isinstance(parent, ast.Call) and parent.args[:1] == [node] and isinstance(parent.func, ast.Attribute)
            and parent.func.attr in KEY_METHODS)


def test_no_other_module_spells_a_figure():
    words = {s.name for s in SPECS}
    texts = {t for s in SPECS for t in (s.help, s.needs, s.caption, s.section)}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == DECLARATIONS:
            continue
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        referenced = {id(kw.value) for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords
                      if (rel, kw.arg) in REFERENCES}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if node.value in texts:
                found.append(f"{rel}:{node.lineno}: {node.value[:40]!r}...")
            elif node.value in words and id(node) not in referenced and not _is_key(node, parents):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "declare figures in kdlab/analysis/figure_names.py only:\n" + "\n".join(found)


def test_figure_references_name_declared_figures():
    from kdlab.reproduce.catalogue import EXPERIMENTS

    figures = [e.figure for e in EXPERIMENTS.values() if e.figure is not None]
    assert figures and set(figures) <= set(FIGURE_SPECS)
