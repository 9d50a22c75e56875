"""The tests mirror the package: a module's tests are found from its name.

``tests/<package>/test_<module>.py`` (or ``test_<module>_<topic>.py``) tests ``kdlab/<package>/<module>.py``, a
module of a subpackage of it (``tests/methods/test_sftn.py``: ``kdlab/methods/teacher/sftn.py``) or the subpackage
itself (``tests/methods/test_distill_methods.py``: ``kdlab/methods/distill/``); ``tests/api/test_api_*.py`` tests
``kdlab/api.py``. ``tests/e2e/`` holds the tests across layers: runs through the command line or the API that go
through every layer, and checks over the whole package. Only shared helpers (and this file) live in ``tests/``.
"""

from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "kdlab"
ACROSS_LAYERS = "e2e"
# modules the tests import by name (tests/ is on sys.path through conftest.py), and this file
HELPERS = {"conftest.py", "user_nets.py", "image_data_files.py", "ddp_replicas.py", "reproduce_smoke.py",
           "figure_study.py", "import_contract.py", "cli_run.py", "free_port.py", "study_configs.py", "fake_study.py",
           "processes.py", "hub_cache.py", "test_layout.py"}


def _test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts)


def _modules(package: str) -> set[str] | None:
    """The names a test file of ``tests/<package>/`` may start with; None when kdlab has no such package."""
    if (PACKAGE / f"{package}.py").is_file():
        return {package}
    folder = PACKAGE / package
    if not (folder / "__init__.py").is_file():
        return None
    names = {p.stem.lstrip("_") for p in folder.rglob("*.py") if p.stem not in ("__init__", "__main__")}
    return names | {p.parent.name for p in folder.rglob("__init__.py") if p.parent != folder}


def module_of(test_file: Path) -> str | None:
    """The kdlab module a test file names (``kdlab/<package>/...<module>.py``), or None."""
    package = test_file.relative_to(TESTS).parts[0]
    modules = _modules(package) or set()
    name = test_file.stem.removeprefix("test_")
    found = [m for m in modules if name == m or name.startswith(m + "_")]
    if not found:
        return None
    module = max(found, key=len)
    return package if module == package and (PACKAGE / f"{package}.py").is_file() else f"{package}/{module}"


def test_every_test_file_names_a_kdlab_module():
    wrong = [str(p.relative_to(TESTS)) for p in _test_files()
             if p.parent != TESTS and p.relative_to(TESTS).parts[0] != ACROSS_LAYERS and module_of(p) is None]
    assert not wrong, ("these test files name no kdlab module (tests/<package>/test_<module>[_<topic>].py for "
                       f"kdlab/<package>/<module>.py; tests/{ACROSS_LAYERS}/ for tests across layers): {wrong}")


def test_no_test_file_is_loose_in_the_tests_folder():
    loose = sorted(p.name for p in TESTS.glob("*.py") if p.name not in HELPERS)
    assert not loose, f"move these into tests/<package>/ (or list a shared helper in HELPERS): {loose}"


def test_test_file_names_are_unique():
    # without __init__.py files pytest imports each test file by its name alone
    names = [p.name for p in _test_files()]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_the_mapping_finds_modules_and_subpackages():
    assert module_of(TESTS / "core" / "test_checkpoint_format.py") == "core/checkpoint"
    assert module_of(TESTS / "methods" / "test_sftn.py") == "methods/sftn"  # kdlab/methods/teacher/sftn.py
    assert module_of(TESTS / "methods" / "test_distill_methods.py") == "methods/distill"  # the subpackage
    assert module_of(TESTS / "analysis" / "test_figure_names_declarations.py") == "analysis/figure_names"
    assert module_of(TESTS / "api" / "test_api_rerun.py") == "api"
    assert module_of(TESTS / "core" / "test_nothing_of_that_name.py") is None
    assert module_of(TESTS / "nopackage" / "test_checkpoint.py") is None
