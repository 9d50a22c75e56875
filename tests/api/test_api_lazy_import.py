"""``import kdlab``, ``kdlab --help`` and ``kdlab list`` without torch: the API and the components load on first use."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


def python(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_kdlab_does_not_import_torch():
    out = python("import kdlab, sys; print('torch' in sys.modules)")
    assert out.stdout.strip() == "False", out.stderr


def test_help_of_kdlab_and_of_every_subcommand_does_not_import_torch():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "kdlab", "--help"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "usage: kdlab" in out.stdout
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in out.stderr.splitlines() if ln.startswith("import time:")}
    assert "kdlab.cli" in imported and "torch" not in imported and "pydantic" not in imported
    code = """
import sys
from kdlab.cli import build_parser, main
for cmd in build_parser()._subparsers._group_actions[0].choices:
    try:
        main([cmd, '--help'])
    except SystemExit as e:
        assert e.code == 0, cmd
print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))
"""
    out = python(code)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "[]", out.stderr


def test_kdlab_list_does_not_import_torch():
    # holds while kdlab/_catalogue.py is current (tests/cli/test_main_discovery.py checks that)
    out = python("import sys\nfrom kdlab.cli import main\nmain(['list'])\nprint('torch' in sys.modules)")
    assert out.returncode == 0 and "resnet32x4" in out.stdout, out.stderr
    assert out.stdout.split()[-1] == "False", "stale: run `python -m kdlab.cli.listing --write-catalogue`"


def test_the_api_is_there_on_first_use():
    import kdlab
    import kdlab.api
    import kdlab.runs.export

    for name in ("distill", "evaluate", "run_study", "train_teacher"):
        assert getattr(kdlab, name) is getattr(kdlab.api, name)
    assert kdlab.load_model is kdlab.runs.export.load_model
    assert set(kdlab.__all__) <= set(dir(kdlab))
    assert kdlab.regularizers.LipschitzRegularizer  # subpackages, as when kdlab imported everything
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        kdlab.no_such_thing  # noqa: B018


def test_study_package_names_load_on_first_use():
    out = python("import sys\nimport kdlab.analysis.figure_names\nprint('torch' in sys.modules)\n"
                 "from kdlab.study import plan_study, PlannedRun\nfrom kdlab.analysis import curves\n"
                 "from kdlab.analysis.study_command import run_study, StudyResult\nprint(run_study)")
    assert out.returncode == 0 and out.stdout.split()[0] == "False" and "function run_study" in out.stdout, out.stderr
