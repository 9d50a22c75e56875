"""No wasted runs: every run an experiment plans at the paper's scale is read by its table (or figure), or is the
teacher of a run that is.  The records are fakes whose metrics note each read, so nothing is trained."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kdlab.analysis import curves
from kdlab.config import DistillRunConfig, TeacherRunConfig, load_config
from kdlab.reproduce.catalogue import EXPERIMENTS
from kdlab.reproduce.command import part_configs, render
from kdlab.reproduce.layouts import PartResult
from kdlab.reproduce.published import published_table
from kdlab.study import plan_study
from kdlab.study.records import RunRecord, plan_labels

FIGURE_DATA = {"trajectory": curves.trajectories, "sweeps": curves.sweeps}  # what each figure reads


class ReadMetrics(dict):
    """A run's summary that answers every metric (a number) and notes the run as read."""

    def __init__(self, run_dir: Path, read: set[Path]):
        super().__init__()
        self._run_dir, self._read = run_dir, read

    def get(self, key, default=None):
        self._read.add(self._run_dir)
        return 50.0 + (hash((str(self._run_dir), key)) % 1000) / 100

    __getitem__ = get

    def __contains__(self, key) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())


def _write_config(run) -> None:
    """The run folder's config.yaml, which the sweep figure reads for the base configuration's value."""
    schema = TeacherRunConfig if run.kind == "teacher" else DistillRunConfig
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(load_config(schema, run.config).model_dump(mode="json")))


def fake_parts(exp_id: str, root: Path, read: set[Path]) -> tuple[dict[str, PartResult], dict[Path, object]]:
    """The experiment's parts as if every planned run had finished (its metrics noting reads into ``read``), and
    every distinct planned run by folder; a figure's reader has read them."""
    exp = EXPERIMENTS[exp_id]
    planned: dict[Path, object] = {}
    parts = {}
    for part, cfg in zip(exp.parts, part_configs(exp, root=str(root))):
        plan = plan_study(cfg)
        for run in plan:
            planned.setdefault(run.run_dir, run)
            if exp.cell is None:
                _write_config(run)
        records = [RunRecord(**plan_labels(r), run_dir=r.run_dir, teacher_run_dir=r.needs[0] if r.needs else None,
                             metrics=ReadMetrics(r.run_dir, read)) for r in plan]
        parts[part.name] = PartResult(cfg, records, part.paper_pairs)
        if exp.cell is None:
            FIGURE_DATA[exp.figure](records)
    return parts, planned


def coverage(exp_id: str, root: Path) -> tuple[dict[Path, object], set[Path]]:
    """(every distinct planned run by folder, the folders read by the table or figure and the runs they need)."""
    exp = EXPERIMENTS[exp_id]
    read: set[Path] = set()
    parts, planned = fake_parts(exp_id, root, read)
    if exp.cell is not None:
        render(exp, parts)
        render(exp, parts, best=True)
    used, todo = set(), list(read)
    while todo:  # a read run's teacher (and the teacher's own source) is used too
        d = todo.pop()
        if d in used or d not in planned:
            continue
        used.add(d)
        todo += planned[d].needs
    return planned, used


@pytest.mark.parametrize("exp_id", list(EXPERIMENTS))
def test_every_planned_run_is_read_by_its_table_or_figure(exp_id, tmp_path):
    planned, used = coverage(exp_id, tmp_path)
    unread = sorted(str(d.relative_to(tmp_path)) for d in set(planned) - used)
    assert not unread, f"{len(unread)} of {len(planned)} planned runs are never read, e.g. {unread[:4]}"


def test_every_figure_of_the_catalogue_has_its_reader():
    assert {e.figure for e in EXPERIMENTS.values() if e.cell is None} <= set(FIGURE_DATA)


def test_soteacher_table7_l2_row_is_the_standard_teacher(tmp_path):
    """The paper's l2 (5e-4) row equals Standard: it is the standard teacher (SGD weight decay 5e-4), not a
    separately trained penalty teacher."""
    parts, planned = fake_parts("soteacher/table7", tmp_path, set())
    assert not any(r.kind == "teacher" and r.teacher_label == "l2" for r in planned.values())
    table = render(EXPERIMENTS["soteacher/table7"], parts)
    keys = [r.key for r in published_table("soteacher", "table7").rows]
    ours = {k: [str(c.ours) for c in line[1:]] for k, line in zip(keys, table.rows)}
    assert ours["l2"] == ours["standard"] and ours["l2"] != ours["l1"] and "n=3" in ours["l2"][0]


def test_the_paper_table_lists_the_experiments_choices(tmp_path):
    parts, _ = fake_parts("sftn/table1", tmp_path, set())
    table = render(EXPERIMENTS["sftn/table1"], parts)
    text = table.to_markdown()
    assert "CRD runs without KD" in text and "Follows the released code, not the text:" in text
    assert "The paper is silent: kdlab's choice:" in text
    assert "<p>- CRD runs without KD" in table.to_html()
