"""Which split chose a checkpoint: a run's best.pt records it, and a student's summary says it of its teacher's."""

import shutil

from kdlab.core.checkpoint import load_checkpoint, save_checkpoint
from kdlab.runs.folder import RunFolder
from kdlab.runs.summary import RunSummary, checkpoint_selected_on


def test_the_split_that_chose_a_teacher_checkpoint(tmp_path, trained_teacher):
    folder = RunFolder(trained_teacher.run_dir)
    assert checkpoint_selected_on(folder.checkpoint("best")) == "test"  # no validation split: test chose
    assert checkpoint_selected_on(folder.checkpoint("last")) is None  # the last epoch is nobody's choice
    assert checkpoint_selected_on(None) is None
    old = tmp_path / "old" / "best.pt"  # a best.pt written before kdlab recorded the split: test chose it
    old.parent.mkdir()
    shutil.copy(folder.checkpoint("best"), old)
    ck = load_checkpoint(old)
    ck["best"] = {"epoch": ck["best"]["epoch"], "test_top1": ck["best"]["test_top1"]}
    save_checkpoint(old, ck)
    assert checkpoint_selected_on(old) == "test"
    ck["best"]["selected_on"] = "val"
    save_checkpoint(old, ck)
    assert checkpoint_selected_on(old) == "val"


def test_the_selection_keys_are_declared_columns():
    columns = RunSummary.keys("column")
    assert {"best_top1", "best_epoch", "val_top1", "selected_on"} <= set(columns)
    assert columns.index("best_epoch") < columns.index("val_top1") < columns.index("selected_on")
    assert "teacher_selected_on" not in columns  # in the student's summary.json
