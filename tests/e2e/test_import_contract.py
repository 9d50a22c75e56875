"""The import contract (tests/import_contract.py) holds, and it does fail on an upward import and on a cycle."""

from __future__ import annotations

import shutil

import pytest

import import_contract as contract

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


def test_kdlab_keeps_its_import_contract():
    assert contract.check() == []


def test_an_upward_import_is_found(tmp_path):
    root = tmp_path / "kdlab"
    shutil.copytree(contract.PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    target = root / "core" / "errors.py"
    target.write_text(target.read_text() + "\n\ndef _late():\n    from kdlab.runs.folder import RunFolder  # lazy\n"
                      "    return RunFolder\n")
    found = contract.check(root)
    assert any("kdlab.core.errors imports kdlab.runs.folder, a layer above it" in p for p in found), found


def test_a_cycle_within_a_layer_is_found(tmp_path):
    root = tmp_path / "kdlab"
    shutil.copytree(contract.PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "core" / "a_mod.py").write_text("from kdlab.core import b_mod\n")
    (root / "core" / "b_mod.py").write_text("def f():\n    from kdlab.core import a_mod\n")
    assert "import cycle: kdlab.core.a_mod <-> kdlab.core.b_mod" in contract.check(root)


def test_independent_packages_of_one_layer_may_not_import_each_other(tmp_path):
    root = tmp_path / "kdlab"
    shutil.copytree(contract.PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    target = root / "models" / "contract.py"
    target.write_text(target.read_text() + "\nfrom kdlab.data.base import Batch  # noqa\n")
    assert any("kdlab.data and kdlab.models are independent" in p or "are independent" in p
               for p in contract.check(root))
