"""kdlab.core.builtins lists exactly the modules that register built-in components, and a registry loads only its
own list."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdlab.core.builtins import BUILTINS

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

PACKAGE = Path(__file__).resolve().parents[2] / "kdlab"
REGISTERS = re.compile(r"@register_(?:model|dataset|teacher_method|distill_method)\b|\bMODELS\.(?:add|register)\(")


def test_every_registering_module_is_listed_once():
    found = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
             if p.parts[-2] != "core" and REGISTERS.search(p.read_text())}
    listed = [m for mods in BUILTINS.values() for m in mods]
    assert sorted(listed) == sorted(set(listed)) and set(listed) == found


def test_a_registry_imports_its_own_modules_only():
    code = ("import sys\nfrom kdlab.core.registry import MODELS\nMODELS.get('resnet8')\n"
            "print(any(m.startswith('kdlab.methods.distill.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr
