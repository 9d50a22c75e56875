"""The torchvision adapter says, in one log line, when the model it built differs from the stock torchvision model
(another class count, a stem for other channel counts), and says nothing when it does not."""


import pytest

from kdlab.core.log import logger
from kdlab.models import build_model

pytestmark = pytest.mark.fast


@pytest.fixture
def lines(monkeypatch):
    seen = []
    monkeypatch.setattr(logger, "info", lambda msg, *a, **k: seen.append(msg % a if a else msg))
    return seen


def test_a_changed_head_and_stem_are_one_line(lines):
    build_model("torchvision", {"arch": "resnet18"}, 10, (1, 32, 32))
    said = [s for s in lines if s.startswith("torchvision resnet18")]
    assert len(said) == 1 and "10-class head" in said[0] and "1-channel" in said[0]


def test_the_stock_model_is_built_silently(lines):
    build_model("torchvision", {"arch": "resnet18"}, 1000, (3, 32, 32))
    assert not [s for s in lines if s.startswith("torchvision")]
