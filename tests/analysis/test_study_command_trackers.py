"""A study's runs log to its trackers under the study's name, and the study's tables, figures and report become
artifacts of a tracker run of its own (MLflow with a sqlite store, no server needed)."""

import json

import pytest

from kdlab.analysis.study_command import run_study
from study_configs import study_cfg


def test_a_study_groups_its_runs_and_logs_its_figures(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = study_cfg(tmp_path / "study", seeds=[0])
    cfg["teacher"]["methods"] = {"standard": "standard"}
    cfg["student"]["methods"] = {"alone": "none", "kd": "kd"}
    for role in ("teacher", "student"):
        cfg[role]["train"] = {**cfg[role]["train"], "epochs": 1, "trackers": ["mlflow"], "mlflow_uri": uri}
    run_study(cfg)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")  # the study's name
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"study", "study/teachers/resnet8/standard/seed0",
                         "study/students/resnet8--mlp-hidden=16/standard/kd/seed0",
                         "study/students/mlp-hidden=16/alone/seed0"}, set(runs)
    assert all(r.info.status == "FINISHED" for r in runs.values())
    report = runs["study"]
    names = {a.path for a in client.list_artifacts(report.info.run_id)}
    assert {"results.md", "results.csv", "report.html", "figures"} <= names
    assert any(a.path.endswith(".png") for a in client.list_artifacts(report.info.run_id, "figures"))
    assert json.loads((tmp_path / "study" / "trackers.json").read_text())["mlflow"]["run_id"] == report.info.run_id
    # run again: the finished runs are reused, and the study's tracker run is the same one
    run_study(cfg)
    assert len(client.search_runs([exp.experiment_id])) == len(runs)
