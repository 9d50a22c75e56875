"""``kdlab study`` with a method whose runs fail prints, before its tables, the line naming that method and why
(as results.md opens), and exits non-zero."""

import yaml

from cli_run import run
from study_configs import study_cfg


def test_the_printed_tables_open_with_the_incomplete_methods(tmp_path, capsys):
    cfg = study_cfg(tmp_path / "s", seeds=(0,))
    cfg["teacher"]["methods"] = {"standard": "standard"}
    cfg["student"]["methods"] = {"alone": "none", "crd": "crd"}  # crd's default nce_k: too many for 192 samples
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code, out, err = run(capsys, "study", str(path))
    assert code == 1
    first = out.lstrip().splitlines()[0]
    assert first.startswith("Incomplete: crd (1 of 1 runs failed: method.nce_k:"), first
    assert "1 of 3 run(s) of the study failed" in err
