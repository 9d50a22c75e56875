"""``kdlab study --launcher ray``: one Ray task per run, on a local Ray instance (with two GPUs it believes it
has: the runs themselves train on the CPU)."""

from pathlib import Path

import pytest

from conftest import TINY_DATA
from kdlab.analysis.study_command import run_study
from kdlab.cli.main import main
from kdlab.runs.folder import SUMMARY
from study_configs import study_cfg

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Path:
    """Where :class:`user_nets.RankNet` records the processes of a job (the Ray workers' environment)."""
    return tmp_path_factory.mktemp("ranks")


@pytest.fixture(scope="module")
def local_ray(ranks):
    import ray

    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"KDLAB_TEST_RANKS": str(ranks), "PYTHONPATH": str(TESTS)}})
    yield
    ray.shutdown()


def test_ray_launcher_gives_the_same_study_as_local_runs(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative out_dir: the tasks must write where the driver looks
    local = run_study(study_cfg("local", seeds=[0]), log=lambda s: None)
    remote = run_study(study_cfg("remote", seeds=[0]), log=lambda s: None, launcher="ray", workers=2)
    assert not remote.failed and remote.ran == 7
    key = lambda r: (r["kind"], r["teacher_label"], r["method_label"])
    assert {key(r): r["top1"] for r in local.records} == {key(r): r["top1"] for r in remote.records}
    assert len(list((tmp_path / "remote").rglob(SUMMARY))) == 7
    # the two KD students of a teacher were one task, trained as a group
    assert {r["group_size"] for r in remote.records if r["kind"] == "student" and r["teacher_label"]} == {2}
    again = run_study(study_cfg("remote", seeds=[0]), log=lambda s: None, launcher="ray")
    assert again.reused == 7 and again.ran == 0


def test_a_task_of_two_gpus_trains_its_run_as_two_processes_on_them(tmp_path, local_ray, ranks):
    # Ray gives the task both GPUs (CUDA_VISIBLE_DEVICES, ray.get_gpu_ids()): one process of the run on each
    cfg = {"name": "ddp", "out_dir": str(tmp_path / "ray"), "seeds": [0], "data": dict(TINY_DATA),
           "teacher": {"model": "resnet8", "methods": {}},
           "student": {"model": {"name": "module", "target": "user_nets:RankNet"}, "methods": {"alone": "none"},
                       "train": {"epochs": 1, "batch_size": 64, "progress": "off", "device": "cpu"}}}
    res = run_study(cfg, log=lambda s: None, launcher="ray", gpus_per_run=2, report=False)
    assert not res.failed and res.ran == 1
    assert {p.name: p.read_text() for p in ranks.iterdir()} == {"rank0": "2 0 2 0,1", "rank1": "2 1 2 0,1"}


def test_unreachable_ray_cluster_is_a_one_line_error(tmp_path, capsys):
    import ray
    import yaml

    ray.shutdown()  # no instance left by the test above: the address given must be the one tried
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(study_cfg(tmp_path / "s", seeds=[0])))
    code = main(["study", str(cfg), "--launcher", "ray", "--ray-address", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach the Ray cluster 127.0.0.1:1" in err and err.count("\n") == 1
