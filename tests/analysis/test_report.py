import base64
import html
import re
from pathlib import Path

import pytest

from figure_study import summaries, tiny_study
from kdlab.analysis.document import Document, Heading, Paragraph, Strong, Table, fmt_cell
from kdlab.analysis.figures import FIGURES
from kdlab.analysis.report import write_report
from kdlab.cli.main import main
from kdlab.study.records import StudyDataError


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str, str]:
    study = tiny_study(tmp_path_factory)
    md_path, html_path = write_report(study)
    return study, md_path.read_text(), html_path.read_text()


def html_tables(page: str) -> list[list[list[str]]]:
    tables = []
    for t in re.findall(r"<table>(.*?)</table>", page, re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", t, re.S)
        tables.append([[html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                        for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", r, re.S)] for r in rows])
    return tables


def md_tables(md: str) -> list[list[list[str]]]:
    tables, cur = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                cur.append([c.strip().replace("**", "") for c in line.strip("|").split(" | ")])
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def test_the_study_wrote_its_report(tmp_path_factory):
    study = tiny_study(tmp_path_factory)
    assert (study / "report.html").stat().st_size > 10_000 and (study / "report.md").exists()


def test_html_is_self_contained_with_one_image_per_figure(report):
    study, _, page = report
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, re.I)
    assert refs and all(r.startswith("data:") for r in refs)
    assert "<script" not in page and "<link" not in page and "url(" not in page
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [a for a, _ in imgs] == ["headline", "trajectory", "sweeps", "late-distillation", "teacher-quality",
                                      "reliability", "deviation"]
    assert len(imgs) == len(FIGURES) - 1 == page.count("<img")  # all but scaling (a data sweep's own study)
    for name, data in imgs:
        assert base64.b64decode(data) == (study / "figures" / f"{name}.png").read_bytes()


def test_markdown_links_the_figures_and_html_holds_every_table(report):
    _, md, page = report
    for name in set(FIGURES) - {"scaling"}:
        assert f"](figures/{name}.png)" in md
    mdt, ht = md_tables(md), html_tables(page)
    assert len(mdt) == len(ht) >= 8  # 3 study tables, trajectory, sweep + its references, late + references
    assert mdt == ht
    assert any(row[0] == "KL(teacher ‖ student)" or "KL(teacher ‖ student)" in row for t in ht for row in t)


def test_report_numbers_equal_the_run_folders(report):
    study, _, page = report
    runs = summaries(study)
    table = {row[0]: row[1:] for row in html_tables(page)[0]}
    assert html_tables(page)[0][0][1:] == ["standard", "soteacher"]  # sweep variants have their own tables

    def cell(*parts, root=None):
        vals = [s["top1"] for d, s in runs.items() if d.parts[-len(parts) - 1:-1] == parts
                and (root is None or d.parts[0] == root)]
        return fmt_cell(vals)

    assert table["Teacher mlp(hidden=[32])"][0] == cell("standard", root="teachers")
    assert table["Teacher mlp(hidden=[32])"][1].startswith(cell("soteacher", root="teachers"))
    assert table["Student mlp(hidden=[16]) (alone)"][0] == cell("alone")
    for m in ("kd", "kdT2"):
        assert table[m][0] == cell("standard", m)
        assert table[m][1].startswith(cell("soteacher", m))
    assert "kd[switch_epoch=1]" not in table
    sweep = next(t for t in html_tables(page) if t[0][0] == "lambda_cr_max")
    row = next(r for r in sweep if r[0] == "0.5")
    assert row[1] == cell("soteacher[lambda_cr_max=0.5]", root="teachers")
    late = next(t for t in html_tables(page) if t[0][0] == "switch_epoch")
    assert any(cell("standard", "kd[switch_epoch=1]") in r for r in late)
    traj = next(t for t in html_tables(page) if t[0][0] == "teacher epoch")
    assert traj[2][2] == cell("standard", "kd") and traj[1][4] == cell("soteacher", "kd@1")  # kd: the last point


def test_report_cli_and_its_errors(report, tmp_path, capsys):
    study, _, _ = report
    assert main(["report", str(study)]) == 0
    out = capsys.readouterr().out
    assert f"report: {study / 'report.html'}" in out
    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0 and "usage: kdlab report" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "study.yaml").write_text((study / "study.yaml").read_text())
    for folder, fragment in [(tmp_path / "missing", "study folder not found"),
                             (tmp_path / "empty", "is not a study folder (no study.yaml)"),
                             (tmp_path / "unfinished", "holds no finished runs yet")]:
        code = main(["report", str(folder)])
        err = capsys.readouterr().err
        assert code == 1 and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "unfinished" / "report.html").exists()
    with pytest.raises(StudyDataError):
        write_report(tmp_path / "empty")


def test_report_blocks_render_their_cells_and_escape():
    doc = Document([Heading("a -> b"), Table(["x", "KL(p || q)"], [[Strong("Best"), "<1>"]]),
                    Paragraph("text `code`")])
    page = doc.to_html()
    assert "<h3>a -&gt; b</h3>" in page
    assert "<th>KL(p || q)</th>" in page and "<td><strong>Best</strong></td><td>&lt;1&gt;</td>" in page
    assert "<p>text <code>code</code></p>" in page
    assert doc.to_markdown().startswith("### a -> b\n\n| x        | KL(p || q) |")
