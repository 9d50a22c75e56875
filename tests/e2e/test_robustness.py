"""Robustness: a real process killed with SIGKILL resumes to the same result; the config loader never crashes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_TRAIN, teacher_cfg
from kdlab.config import DistillRunConfig, EvalConfig, StudyConfig, TeacherRunConfig, load_config
from kdlab.config.loader import apply_overrides
from kdlab.core.checkpoint import load_checkpoint
from kdlab.core.errors import ConfigError
from kdlab.runs.folder import RunFolder
from kdlab.runs.teacher import train_teacher


def _cfg(out):
    return teacher_cfg(out, data={"name": "mixed-feature", "num_train": 1024, "num_test": 64},
                       train={**TINY_TRAIN, "epochs": 5, "progress": "log"}, schedule={"milestones": [3]})


def test_sigkill_mid_training_then_resume_gives_the_same_weights(tmp_path):
    reference = train_teacher(_cfg(tmp_path / "ref"))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg(tmp_path / "killed")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "kdlab", "train-teacher", str(cfg_file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    time.sleep(0.1)  # into the third epoch
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not RunFolder(tmp_path / "killed").summary_file.exists()
    resumed = train_teacher(_cfg(tmp_path / "killed"), resume=True)
    a = load_checkpoint(reference.run_dir / "checkpoints" / "last.pt")["model_state"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["top1"] == reference.summary["top1"]
    lines = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert lines == [1, 2, 3, 4, 5]


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
keys = st.sampled_from(["data", "model", "student", "teacher", "method", "optim", "schedule", "train", "seed",
                        "name", "lr", "epochs", "milestones", "path", "seeds", "pairs", "methods", "T", "x",
                        "num_train", "hidden", "device", "holdout", "sweeps", "values", "role", "param", ""])
trees = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(keys, inner, max_size=5)), max_leaves=20)
SCHEMAS = [TeacherRunConfig, DistillRunConfig, StudyConfig, EvalConfig]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.sampled_from(SCHEMAS), data=st.dictionaries(keys, trees, max_size=6),
       overrides=st.lists(st.text(max_size=20), max_size=3))
def test_config_loader_gives_a_config_or_a_clear_error(schema, data, overrides):
    try:
        load_config(schema, data, overrides)
    except ConfigError as e:
        msg = str(e)
        assert msg and "\n" not in msg


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_yaml_files_of_any_content(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    p.write_text(text)
    try:
        load_config(TeacherRunConfig, p)
    except ConfigError as e:
        assert "\n" not in str(e)


def test_apply_overrides_type_clash_is_a_config_error():
    with pytest.raises(ConfigError, match="optim.lr: cannot set a sub-key of a float value"):
        apply_overrides({"optim": {"lr": 0.1}}, ["optim.lr.x=1"])
