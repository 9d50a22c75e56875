"""A component registered from a function takes its parameters' descriptions from the docstring's
``name: what it is`` lines (``kdlab list`` shows them), and every built-in component parameter has one."""

from typing import Annotated

import pytest
from pydantic import Field

from kdlab.config.describe import param_rows
from kdlab.core.registry import DATASETS, DISTILL_METHODS, MODELS, TEACHER_METHODS, Registry, param_docs

pytestmark = pytest.mark.fast


def test_descriptions_come_from_the_docstrings_parameter_lines():
    doc = "A model.\n\ndepth: layers\n  (6n+2)\nwidth: channels\nunrelated: not a parameter\n\nMore text."
    assert param_docs(doc, {"depth", "width"}) == {"depth": "layers (6n+2)", "width": "channels"}


def test_a_registered_function_keeps_its_bounds_and_gains_the_descriptions():
    reg = Registry("model")

    @reg.register("toy")
    def toy(num_classes: int, depth: Annotated[int, Field(ge=2)] = 4, width: int = 8):
        """A toy.

        depth: layers
        """

    fields = reg.get("toy").params.model_fields
    assert fields["depth"].description == "layers" and fields["depth"].default == 4
    assert fields["width"].description is None
    with pytest.raises(ValueError):
        reg.get("toy").validate({"depth": 1})


def test_every_built_in_component_parameter_has_a_description():
    import kdlab.api  # noqa: F401 - every built-in component registered

    missing = [f"{e.name}.{r.key}" for reg in (MODELS, DATASETS, TEACHER_METHODS, DISTILL_METHODS)
               for e in reg.entries() for r in param_rows(e.params) if not r.description]
    assert not missing, f"describe these parameters (a Field description or a 'name: ...' docstring line): {missing}"
