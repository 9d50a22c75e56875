"""kdlab's import contract: the folders are layers, each imports only the layers below it, and no modules import
each other in a cycle.  Every import statement counts, lazy ones inside functions included.

Run as ``python tests/import_contract.py`` (``.ci/run`` does) or through ``tests/e2e/test_import_contract.py``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kdlab"

# lowest first; packages in one layer are independent of each other
LAYERS: list[tuple[str, ...]] = [
    ("kdlab.core",),
    ("kdlab.config",),
    ("kdlab.data", "kdlab.models", "kdlab.regularizers"),
    ("kdlab.methods",),
    ("kdlab.engine",),
    ("kdlab.runs",),
    ("kdlab.study",),
    ("kdlab.analysis",),
    ("kdlab.reproduce",),
    ("kdlab.api",),
    ("kdlab.cli",),
    ("kdlab", "kdlab.__main__"),  # the package's lazy front door
]


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _target(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, Path]) -> dict[str, set[tuple[str, int]]]:
    """module -> {(imported kdlab module, line)}; ``from a import b`` counts as importing ``a.b`` when that is a
    module, else ``a``."""
    edges: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _target(mod, path, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    edges[mod].add((t, node.lineno))
    return edges


def layer_of(module: str) -> tuple[int, str]:
    best = (-1, "")
    for i, layer in enumerate(LAYERS):
        for pkg in layer:
            if (module == pkg or module.startswith(pkg + ".")) and len(pkg) > len(best[1]):
                best = (i, pkg)
    return best


def upward_imports(mods: dict[str, Path]) -> list[str]:
    problems = []
    for mod, targets in sorted(imports(mods).items()):
        (lo, own) = layer_of(mod)
        for t, line in sorted(targets):
            (lt, other) = layer_of(t)
            if own == other:
                continue
            if lo < 0 or lt < 0:
                problems.append(f"{mods[mod]}:{line}: {mod} -> {t}: a module outside every layer")
            elif lt > lo:
                problems.append(f"{mods[mod]}:{line}: {mod} imports {t}, a layer above it ({other} over {own})")
            elif lt == lo:
                problems.append(f"{mods[mod]}:{line}: {mod} imports {t}: {own} and {other} are independent")
    return problems


def cycles(mods: dict[str, Path]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan)."""
    graph = {m: {t for t, _ in ts} for m, ts in imports(mods).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for m in sorted(mods):
        if m not in index:
            visit(m)
    return out


def private_imports(mods: dict[str, Path]) -> list[str]:
    """``from x import _name`` where x is another module of kdlab (not the importer's own package's helper module
    ``_x``, which is private to its package)."""
    out = []
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and _target(mod, path, node).startswith("kdlab"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        out.append(f"{path}:{node.lineno}: {mod} imports the private {a.name}")
    return out


def check(root: Path = PACKAGE) -> list[str]:
    mods = modules(root)
    return (upward_imports(mods) + [f"import cycle: {' <-> '.join(c)}" for c in cycles(mods)]
            + private_imports(mods))


if __name__ == "__main__":
    found = check()
    for p in found:
        print(p)
    print(f"import contract: {len(found)} problem(s) in {len(modules())} modules")
    sys.exit(1 if found else 0)
