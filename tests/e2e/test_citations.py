"""User-facing text cites papers by authors and year, never by kdlab's internal file or issue names."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

ROOT = Path(__file__).resolve().parents[2]
INTERNAL = re.compile(r"[Ss]eeds? ?/?00[0-4]\b|\b[Ii]ssue \d+\b(?!.*kuangliu)|REFERENCE\.md|\.\./shared")


def _user_facing():
    yield from (ROOT / "kdlab").rglob("*.py")
    yield from (ROOT / "kdlab").rglob("*.yaml")
    yield from (ROOT / "configs").rglob("*.yaml")
    yield ROOT / "README.md"
    yield ROOT / "docs" / "figures.md"


def test_no_internal_names_in_user_facing_text():
    hits = []
    for path in _user_facing():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if INTERNAL.search(line) and "kuangliu/pytorch-cifar issue" not in line:
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:80]}")
    assert not hits, hits


def test_listing_cites_the_kd_plus_paper():
    from kdlab.cli.listing import listing

    text = listing("distill-methods")
    assert "Deng & Zhang 2021" in text and "seed 001" not in text
