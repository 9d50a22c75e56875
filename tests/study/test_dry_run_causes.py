"""``kdlab study --dry-run`` builds every run's method against its data and lists what would stop runs, once per
cause with the number of runs it affects."""

import numpy as np

from kdlab.config import StudyConfig, load_config
from kdlab.data import load_dataset
from kdlab.study import dry_run
from study_configs import study_cfg


def _crd_study(out, seeds=(0, 1), crd="crd"):
    cfg = study_cfg(out, seeds)
    cfg["teacher"]["methods"] = {"standard": "standard"}
    cfg["student"]["methods"] = {"kd": "kd", "crd": crd}
    return cfg


def _other_class_limit(cfg) -> int:
    """The fewest samples of other classes any training sample has, counted here from the data itself."""
    data = load_dataset(load_config(StudyConfig, cfg).data, 0.0, 0)
    counts = np.bincount(np.asarray(data.train.y))
    return int(len(data.train) - counts.max())


def _notes(text):
    return [line[2:] for line in text.splitlines() if line.startswith("# ")]


def test_the_nce_k_problem_is_reported_once_with_the_runs_it_stops(tmp_path):
    cfg = _crd_study(tmp_path / "s")
    notes = _notes(dry_run.study(cfg, dry_run=True))
    problems = [n for n in notes if n.strip().startswith("problem")]
    limit = _other_class_limit(cfg)
    assert len(problems) == 1, notes  # two seeds' crd runs, one cause
    assert f"method.nce_k: 16384 negatives requested but some samples have only {limit} samples of other classes" \
        in problems[0] and f"set method.nce_k <= {limit} (2 runs, e.g. " in problems[0]
    assert "1 problem would stop 2 runs (the others train):" in notes
    crd_runs = [n for n in notes if "/crd/seed" in n and "problem 1:" not in n]
    assert len(crd_runs) == 2 and all(n.endswith("; fails: problem 1)") for n in crd_runs)
    assert not any("fails" in n for n in notes if "/kd/seed" in n or "teachers/" in n)
    assert not (tmp_path / "s").exists()  # nothing written


def test_a_fitting_nce_k_is_no_problem(tmp_path):
    cfg = _crd_study(tmp_path / "s", seeds=(0,))
    cfg["student"]["methods"]["crd"] = {"name": "crd", "nce_k": _other_class_limit(cfg)}
    notes = _notes(dry_run.study(cfg, dry_run=True))
    assert not any("problem" in n for n in notes), notes


def test_a_missing_data_folder_is_one_problem_for_every_run(tmp_path):
    cfg = _crd_study(tmp_path / "s", crd={"name": "crd", "nce_k": 8})
    cfg["data"] = {"name": "cifar10", "root": str(tmp_path / "nowhere")}
    notes = _notes(dry_run.study(cfg, dry_run=True))
    problems = [n for n in notes if n.strip().startswith("problem")]
    assert len(problems) == 1 and str(tmp_path / "nowhere") in problems[0] and "(6 runs, e.g. " in problems[0], notes
