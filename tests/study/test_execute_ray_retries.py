"""The Ray launcher retries a task whose worker died, and the retried run resumes from its checkpoint to the
weights of an uninterrupted run."""

from pathlib import Path

import pytest
import torch

from conftest import TINY_DATA
from kdlab.analysis.study_command import run_study

TESTS = Path(__file__).resolve().parents[1]


def _cfg(out, die_at):
    # a student trained alone; 192 training samples in batches of 64: 3 steps an epoch, so step 5 is in the second
    # epoch, after the first epoch's checkpoint
    model = {"name": "module", "target": "user_nets:DieOnceNet", "kwargs": {"die_at": die_at}}
    return {"name": "retry", "out_dir": str(out), "seeds": [0], "data": dict(TINY_DATA),
            "teacher": {"model": "resnet8", "methods": {}},
            "student": {"model": model, "methods": {"alone": "none"},
                        "train": {"epochs": 3, "batch_size": 64, "progress": "off"}}}


@pytest.fixture
def ray_with_marker(tmp_path):
    ray = pytest.importorskip("ray")
    marker = tmp_path / "died"
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"KDLAB_TEST_DIE_ONCE": str(marker), "PYTHONPATH": str(TESTS)}})
    yield marker
    ray.shutdown()


def test_a_ray_task_killed_once_is_retried_and_ends_as_an_uninterrupted_run(tmp_path, ray_with_marker, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = run_study(_cfg(tmp_path / "plain", die_at=5), log=lambda s: None)  # here: no marker variable
    assert not plain.failed and not ray_with_marker.exists()
    retried = run_study(_cfg(tmp_path / "ray", die_at=5), log=lambda s: None, launcher="ray",
                        ray_options={"retries": 2})
    assert ray_with_marker.exists()  # the first attempt's worker died in its second epoch
    assert not retried.failed and retried.ran == 1
    a, b = (torch.load(next((tmp_path / d).rglob("checkpoints/last.pt")), weights_only=False)["model_state"]
            for d in ("plain", "ray"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
