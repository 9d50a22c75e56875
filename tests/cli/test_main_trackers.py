"""Trackers are set like any other setting: in a run's config, by dotted overrides, in a study's roles and for
an experiment of ``kdlab reproduce``; a tracker kdlab does not know is an error naming the key."""

from cli_run import run


def test_reproduce_takes_the_trackers_of_each_role(capsys):
    code, out, err = run(capsys, "reproduce", "soteacher/table1", "--dry-run", "student.train.trackers=[wandb]",
                         "teacher.train.trackers=[mlflow]", "teacher.train.tracker_project=mine")
    assert code == 0, err
    assert "trackers: [wandb]" in out and "trackers: [mlflow]" in out
    assert "tracker_project: mine" in out and "tracker_project: soteacher-table1" in out


def test_an_unknown_tracker_is_a_one_line_error(tmp_path, capsys):
    code, out, err = run(capsys, "train-teacher", "--dry-run", "data.name=digits", "model=mlp", f"out_dir={tmp_path}/t",
                         "train.trackers=[neptune]")
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "train.trackers.0" in err and "'tensorboard', 'wandb' or 'mlflow'" in err
