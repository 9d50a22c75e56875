"""The tables say when runs had not converged: a run whose training loss still fell by more than 5 % over its last
quarter of epochs counts as still improving; short runs are not judged."""

import json

import pytest

from kdlab.analysis.convergence import convergence_note, losses, still_improving

pytestmark = pytest.mark.fast


def write(folder, loss):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": i + 1, "loss": v, "acc": 50.0}) + "\n"
                                                  for i, v in enumerate(loss)))
    return folder


def test_the_fall_over_the_last_quarter_is_measured_against_the_threshold():
    assert still_improving([2.0, 1.5, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6]) == pytest.approx((0.8 - 0.6) / 0.8)
    assert still_improving([2.0, 1.0, 0.5, 0.40, 0.40, 0.39, 0.39, 0.39]) is None  # 2.5 %: converged enough
    assert still_improving([2.0, 1.0]) is None  # too short to judge


def test_the_note_counts_the_runs_still_improving(tmp_path):
    flat = write(tmp_path / "a", [1.0, 0.5, 0.4, 0.4, 0.4, 0.4])
    falling = write(tmp_path / "b", [1.0, 0.8, 0.6, 0.4, 0.3, 0.2])
    short = write(tmp_path / "c", [1.0, 0.5])
    assert losses(falling) == [1.0, 0.8, 0.6, 0.4, 0.3, 0.2]
    note = convergence_note([flat, falling, short, tmp_path / "missing"])
    assert note.startswith("Not converged: 1 of 2 runs still lowered their training loss by more than 5%")
    assert "up to 50%" in note  # (0.4 - 0.2) / 0.4 over the last 2 epochs
    assert convergence_note([flat, short]) is None
