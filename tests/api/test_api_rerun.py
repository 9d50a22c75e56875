"""Running the same Python code twice: an existing run is an error naming the ways out, reused with resume=True,
trained anew with overwrite=True (and only a kdlab run folder is ever deleted)."""

import pytest

from conftest import teacher_cfg
from kdlab.cli.main import main
from kdlab.core.errors import RunFolderError
from kdlab.runs.folder import RunFolder
from kdlab.runs.teacher import train_teacher


def test_reuse_or_overwrite_an_existing_run(tmp_path):
    cfg = teacher_cfg(tmp_path / "t")
    first = train_teacher(cfg)
    with pytest.raises(RunFolderError, match=r"resume=True.*overwrite=True"):
        train_teacher(cfg)
    again = train_teacher(cfg, resume=True)
    assert again.reused and again.summary == first.summary
    marker = tmp_path / "t" / "stale.txt"
    marker.write_text("from the old run")
    fresh = train_teacher(cfg, overwrite=True)
    assert not fresh.reused and not marker.exists() and RunFolder(tmp_path / "t").summary_file.exists()
    assert fresh.summary["top1"] == first.summary["top1"]  # same seed, same settings: the same run again


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("do not delete")
    with pytest.raises(RunFolderError, match="not a kdlab run folder"):
        train_teacher(teacher_cfg(tmp_path / "mine"), overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_cli_overwrite(tmp_path, capsys):
    args = ["train-teacher", f"out_dir={tmp_path / 't'}", "data.name=mixed-feature", "data.num_train=64",
            "data.num_test=32", "model=resnet8", "train.epochs=1", "train.progress=off"]
    assert main(args) == 0
    assert main(args) == 1 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
