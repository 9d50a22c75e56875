"""``kdlab reproduce ID teacher_weights=DIR``: a table's students distil from a folder of published standard
teachers (the CRD benchmark's layout), those teachers are not trained, the table's teacher cells hold the files'
accuracies and the table says which files it used."""

import pytest
import torch

from kdlab.analysis.document import Compare
from kdlab.models import build_model
from kdlab.reproduce.catalogue import get_experiment
from kdlab.reproduce.command import dry_run, reproduce
from kdlab.reproduce.published import published_table
from kdlab.reproduce.published_teachers import find_file
from reproduce_smoke import STAND_INS, make_data, shrink

EXP = "sftn/table1"  # pairs wrn_40_2 -> ..., resnet32x4 -> ... (stand-ins: wrn, resnet_cifar)


def publish(folder, name: str, params: dict, seed: int) -> None:
    """A standard teacher as the CRD benchmark published it: <arch>_vanilla/ckpt_epoch_240.pth, {'model': ...}."""
    torch.manual_seed(seed)
    file = folder / f"{name}_vanilla" / "ckpt_epoch_240.pth"
    file.parent.mkdir(parents=True)
    torch.save({"epoch": 240, "model": build_model(name, params, 100, (3, 32, 32)).state_dict(),
                "accuracy": 0.5}, file)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    data = make_data(root / "data")
    folder = root / "teachers"
    for seed, arch in enumerate(("wrn_40_2", "resnet32x4")):
        spec = dict(STAND_INS[arch])
        publish(folder, spec.pop("name"), spec, seed)
    return root, data, folder


def test_files_are_found_in_the_crd_layout_and_by_name(tmp_path):
    (tmp_path / "vgg13_vanilla").mkdir()
    (tmp_path / "vgg13_vanilla" / "ckpt_epoch_240.pth").write_bytes(b"")
    (tmp_path / "wrn_40_2.pth").write_bytes(b"")
    assert find_file(tmp_path, "vgg13") == tmp_path / "vgg13_vanilla" / "ckpt_epoch_240.pth"
    assert find_file(tmp_path, "wrn_40_2") == tmp_path / "wrn_40_2.pth"
    assert find_file(tmp_path, "ResNet50") is None


def test_a_table_from_published_teachers_trains_no_standard_teacher(published):
    root, data, folder = published
    runs = root / "runs"
    lines = []
    res = reproduce(EXP, root=str(runs), transform=lambda s: shrink(s, data), log=lines.append, report=False,
                    teacher_weights=folder)
    assert not res.failed, res.failed[:3]
    teachers = {p.parent.name for p in runs.rglob("teachers/*/*/seed0")}
    assert teachers and all(t.startswith("sftn") for t in teachers)  # the standard teachers were not trained
    used = [s for s in lines if s.startswith("Published standard teachers used")]
    assert used and "wrn" in used[0] and "resnet_cifar" in used[0] and "ckpt_epoch_240.pth" in used[0]
    table = res.tables[0]
    assert "Published standard teachers used" in table.note
    # every cell the paper prints is filled, the standard teacher's own accuracy too (measured by its students)
    paper = published_table(get_experiment(EXP).paper, get_experiment(EXP).table_id)
    for row, line in zip(paper.rows, table.rows):
        for col, cell in zip(paper.columns, line[1:]):
            if paper.value(row.key, col.key) is not None:
                assert isinstance(cell, Compare) and cell.ours.n >= 1, (row.key, col.key)


def test_the_dry_run_says_which_teachers_are_published_and_which_are_trained(tmp_path):
    folder = tmp_path / "teachers"
    (folder / "wrn_40_2_vanilla").mkdir(parents=True)
    (folder / "wrn_40_2_vanilla" / "ckpt_epoch_240.pth").write_bytes(b"checked when a student loads it")
    text = dry_run(get_experiment(EXP), [], str(tmp_path / "runs"), teacher_weights=folder)
    line = next(s for s in text.splitlines() if s.startswith("Published standard teachers used"))
    assert "wrn_40_2 (" in line and "trained here, no file found: resnet32x4" in line
    assert "teachers/wrn_40_2/standard/" not in text and "teachers/resnet32x4/standard/" in text
