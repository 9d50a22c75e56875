"""Every experiment of the catalogue runs end to end (its recipe shrunk, on tiny data in the exact on-disk formats)
and fills the paper's table: every row and column the paper has, a kdlab value wherever the paper prints one."""

import pytest
import yaml

from kdlab.analysis.document import Compare
from kdlab.reproduce.catalogue import EXPERIMENTS
from kdlab.reproduce.command import reproduce
from kdlab.reproduce.published import published_table
from kdlab.runs.folder import RunFolder
from reproduce_smoke import make_data, shrink

# cells kdlab leaves empty on purpose (see the experiments' notes)
NOT_REPRODUCIBLE = {("sftn/table4", "sftn_4")}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    return root, make_data(root / "data")


@pytest.mark.parametrize("exp_id", list(EXPERIMENTS))
def test_experiment_runs_and_fills_the_papers_table(smoke, exp_id, monkeypatch):
    root, data = smoke
    exp = EXPERIMENTS[exp_id]
    res = reproduce(exp_id, root=str(root / "runs"), transform=lambda s: shrink(s, data), log=lambda s: None,
                    report=False)
    assert not res.failed, res.failed[:3]
    if exp.cell is None:  # a figure: its study wrote the figure
        for part in exp.parts:
            folder = root / "runs" / part.study["out_dir"].split("runs/reproduce/", 1)[1]
            assert (folder / "figures" / f"{exp.figure}.png").is_file()
        return
    paper = published_table(exp.paper, exp.table_id)
    table = res.tables[0]
    assert table.header == [""] + [c.label for c in paper.columns]
    assert [r[0] for r in table.rows] == [r.label for r in paper.rows]
    for row, line in zip(paper.rows, table.rows):
        for col, cell in zip(paper.columns, line[1:]):
            if paper.value(row.key, col.key) is None:
                continue
            assert isinstance(cell, Compare), (row.key, col.key)
            if (exp_id, row.key) in NOT_REPRODUCIBLE:
                assert cell.ours.n == 0
            else:
                assert cell.ours.n >= 1, (exp_id, row.key, col.key)  # kdlab found the run(s) behind the cell
    assert (res.out_dir / "paper_table.md").is_file() and (res.out_dir / "paper_table.csv").is_file()


def test_as_written_trains_only_the_runs_the_text_changes(smoke):
    """The text's variant of a table: SoTeacher teachers (and their students) train again under
    <label>-as-written, the standard teacher's runs are the code variant's (reused, not retrained), and the table
    is filled from the right runs."""
    root, data = smoke
    kw = dict(root=str(root / "runs"), transform=lambda s: shrink(s, data), report=False)
    reproduce("soteacher/table1", log=lambda s: None, **kw)
    teachers = next((root / "runs" / "soteacher" / "cifar100" / "teachers").glob("wrn*"))  # the stand-in WRN
    shared = teachers / "standard" / "seed0" / "checkpoints" / "last.pt"
    before = shared.stat().st_mtime_ns
    res = reproduce("soteacher/table1", log=lambda s: None, written=True, **kw)
    assert not res.failed and res.out_dir.name == "soteacher-table1-as-written"
    assert shared.stat().st_mtime_ns == before  # the standard teacher is the code variant's run, not retrained
    assert RunFolder(teachers / "soteacher-as-written" / "seed0").summary_file.is_file()
    cfg = yaml.safe_load((teachers / "soteacher-as-written" / "seed0" / "config.yaml").read_text())["method"]
    assert (cfg["average"], cfg["lipschitz"]) == ("mean", "exact")
    assert not (teachers / "standard-as-written").exists()
    table = res.tables[0]
    assert all(c.ours.n >= 1 for line in table.rows for c in line[1:] if isinstance(c, Compare))
    assert "resolved here as written: average: mean" in table.to_markdown()
