import json

import pytest
import torch

from conftest import TINY_TRAIN, interrupt_training, student_cfg, teacher_cfg
from kdlab.config.schema import ScheduleConfig
from kdlab.core.checkpoint import load_checkpoint, save_checkpoint
from kdlab.core.errors import CheckpointError, DivergenceError
from kdlab.core.registry import TEACHER_METHODS
from kdlab.engine.schedule import lr_at
from kdlab.methods.base import CrossEntropy, StepOutput
from kdlab.runs.folder import CONFIG, METRICS, SUMMARY, TEST_LOGITS, RunFolder
from kdlab.runs.student import distill
from kdlab.runs.teacher import train_teacher


def _weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model_state"]


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch, trained_teacher, role):
    train = {**TINY_TRAIN, "epochs": 4}
    if role == "teacher":
        make = lambda d: teacher_cfg(d, train=train, schedule={"milestones": [2]})
        run = train_teacher
    else:
        make = lambda d: student_cfg(d, trained_teacher.run_dir, train=train, schedule={"milestones": [2]})
        run = distill
    full = run(make(tmp_path / "full"))
    restore = interrupt_training(monkeypatch, epoch=2, step=3)
    with pytest.raises(KeyboardInterrupt):
        run(make(tmp_path / "cut"))
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 2
    assert not RunFolder(tmp_path / "cut").summary_file.exists()
    restore()
    resumed = run(make(tmp_path / "cut"), resume=True)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.summary["top1"] == full.summary["top1"]
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    ref = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in lines] == [r["loss"] for r in ref]


def test_run_folder_contents_and_checkpoints(trained_teacher):
    d = trained_teacher.run_dir
    assert {p.name for p in d.iterdir()} >= {CONFIG, METRICS, SUMMARY, TEST_LOGITS,
                                           "checkpoints"}
    assert {p.name for p in (d / "checkpoints").iterdir()} == {"last.pt", "prev.pt", "best.pt", "epoch_001.pt",
                                                              "epoch_002.pt"}
    ck = load_checkpoint(d / "checkpoints" / "epoch_001.pt")
    assert ck["epoch"] == 1 and ck["model"]["name"] == "resnet8" and ck["model"]["num_classes"] == 10
    assert ck["config"]["model"]["name"] == "resnet8" and ck["kind"] == "teacher"
    s = trained_teacher.summary
    assert {"top1", "top5", "nll", "ece", "pstar_l1_train", "pstar_l1_test"} <= set(s)
    import numpy as np

    logits = np.load(d / "test_logits.npy")
    assert logits.shape == (96, 10)
    assert s["top1"] == pytest.approx(100 * (logits.argmax(1) == _test_labels()).mean(), abs=1e-4)


def _test_labels():
    from conftest import TINY_DATA
    from kdlab.data.mixed_feature import mixed_feature

    params = {k: v for k, v in TINY_DATA.items() if k != "name"}
    return mixed_feature(**params).test.y.numpy()


def test_corrupted_or_truncated_checkpoint_is_detected(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"model": {"name": "x"}, "w": torch.ones(3)})
    assert torch.equal(load_checkpoint(p)["w"], torch.ones(3))
    raw = p.read_bytes()
    p.write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(p)
    w = raw.index(torch.ones(3).numpy().tobytes())  # the tensor's bytes, stored as they are in the zip file
    p.write_bytes(raw[:w] + b"0123456789ab" + raw[w + 12:])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(p)
    p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a kdlab checkpoint"):
        load_checkpoint(p)


class _NaNAt(CrossEntropy):
    """Test method: cross-entropy that turns NaN at epoch 2 (1-based), step 3."""

    def forward(self, model, batch, state):
        out = super().forward(model, batch, state)
        if state.epoch == 1 and state.step % state.steps_per_epoch == 2:
            return StepOutput(out.loss * float("nan"), out.logits, out.parts)
        return out


if "test-nan" not in TEACHER_METHODS:
    TEACHER_METHODS.add("test-nan", _NaNAt, summary="test only")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = teacher_cfg(tmp_path / "r", method="test-nan", train={**TINY_TRAIN, "epochs": 3})
    with pytest.raises(DivergenceError) as e:
        train_teacher(cfg)
    msg = str(e.value)
    assert "epoch 2, step 3" in msg and "last.pt" in msg and "\n" not in msg
    ck = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model_state"].values()
                                    if v.is_floating_point())
    assert not RunFolder(tmp_path / "r").summary_file.exists()


def test_schedules():
    ms = ScheduleConfig(name="multistep", milestones=[3, 6], gamma=0.1)
    assert [round(lr_at(ms, 1.0, e, 10), 6) for e in range(8)] == [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]
    cos = ScheduleConfig(name="cosine", min_lr=0.0)
    assert lr_at(cos, 1.0, 0, 10) == pytest.approx(1.0)
    assert lr_at(cos, 1.0, 5, 10) == pytest.approx(0.5)
    warm = ScheduleConfig(name="constant", warmup_epochs=2)
    assert lr_at(warm, 1.0, 0.5, 10) == pytest.approx(0.25) and lr_at(warm, 1.0, 2, 10) == 1.0


def test_finished_run_is_not_overwritten_and_changed_settings_are_refused(trained_teacher):
    from kdlab.core.errors import RunFolderError

    cfg = teacher_cfg(trained_teacher.run_dir, train={**TINY_TRAIN, "save_every": 1})
    with pytest.raises(RunFolderError, match="already holds a finished run"):
        train_teacher(cfg)
    again = train_teacher(cfg, resume=True)
    assert again.reused and again.summary == trained_teacher.summary
    with pytest.raises(RunFolderError, match=r"different settings \(optim.lr: 0.05 -> 0.1"):
        train_teacher(cfg, ["optim.lr=0.1"], resume=True)


def test_holdout_gives_temperature_scaled_calibration_and_students_report_similarity(tmp_path):
    from kdlab.config import TeacherRunConfig, load_config
    from kdlab.data import load_dataset

    t = train_teacher(teacher_cfg(tmp_path / "t", holdout=0.25))
    assert {"temperature", "ece_ts", "nll_ts"} <= set(t.summary) and t.summary["temperature"] > 0
    data = load_dataset(load_config(TeacherRunConfig, teacher_cfg(tmp_path / "x")).data, 0.25)
    assert len(data.train) == 144 and len(data.holdout) == 48
    full = load_dataset(load_config(TeacherRunConfig, teacher_cfg(tmp_path / "x")).data)
    assert torch.equal(torch.cat([data.train.y, data.holdout.y]).sort().values, full.train.y.sort().values)
    s = distill(student_cfg(tmp_path / "s", t.run_dir, holdout=0.25))
    assert 0 <= s.summary["cka_teacher_student"] <= 1 and s.summary["kl_teacher_student"] >= 0
    assert "ece_ts" in s.summary
    from kdlab.core.errors import ConfigError
    from kdlab.runs.evaluate import evaluate

    small = load_dataset(load_config(TeacherRunConfig, teacher_cfg(tmp_path / "x")).data, 0.1).holdout
    rows = lambda split: {tuple(r.flatten().tolist()) for r in split.x}
    assert rows(small) <= rows(data.holdout)  # held-out splits are nested: a smaller one was never trained on
    assert evaluate({"path": str(t.run_dir), "holdout": 0.1})["ece_ts"] >= 0  # nested inside the run's 0.25
    with pytest.raises(ConfigError, match="holdout: 0.5 is more than the 0.25 this run held out"):
        evaluate({"path": str(t.run_dir), "holdout": 0.5})


def test_corrupted_last_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, capsys):
    train = {**TINY_TRAIN, "epochs": 4}
    make = lambda d: teacher_cfg(d, train=train, schedule={"milestones": [2]})
    train_teacher(make(tmp_path / "full"))
    interrupt_training(monkeypatch, epoch=3, step=1)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(make(tmp_path / "cut"))
    monkeypatch.undo()
    ck_dir = tmp_path / "cut" / "checkpoints"
    assert load_checkpoint(ck_dir / "prev.pt")["epoch"] == 2 and load_checkpoint(ck_dir / "last.pt")["epoch"] == 3
    raw = (ck_dir / "last.pt").read_bytes()
    (ck_dir / "last.pt").write_bytes(raw[: len(raw) // 2])  # truncated, as by a crash of the storage layer
    train_teacher(make(tmp_path / "cut"), resume=True)
    assert "resuming from the previous checkpoint" in capsys.readouterr().err
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kill_between_checkpoint_files_loses_no_epoch_checkpoint(tmp_path, monkeypatch):
    from kdlab.runs import checkpoints as run_checkpoints

    train = {**TINY_TRAIN, "epochs": 3, "save_every": 1}
    make = lambda d: teacher_cfg(d, train=train, schedule={"milestones": [2]})
    train_teacher(make(tmp_path / "full"))
    original = run_checkpoints.copy_atomic

    def killed_at_epoch_2(src, dst):
        original(src, dst)
        if dst.name == "epoch_002.pt":
            raise KeyboardInterrupt  # the process dies after epoch 2's copies, before last.pt moves on

    monkeypatch.setattr(run_checkpoints, "copy_atomic", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(make(tmp_path / "cut"))
    monkeypatch.undo()
    ck = tmp_path / "cut" / "checkpoints"
    assert load_checkpoint(ck / "last.pt")["epoch"] == 1
    train_teacher(make(tmp_path / "cut"), resume=True)
    names = {p.name for p in ck.glob("*.pt")}
    assert {"epoch_001.pt", "epoch_002.pt", "epoch_003.pt", "best.pt", "last.pt", "prev.pt"} == names
    for name in ("epoch_002.pt", "last.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "full" / "checkpoints" / name)
        b = load_checkpoint(ck / name)
        assert a["epoch"] == b["epoch"] and all(torch.equal(a["model_state"][k], b["model_state"][k])
                                                for k in a["model_state"]), name


def test_cached_teacher_logits_train_like_a_teacher_forward_each_step(tmp_path, trained_teacher):
    runs = {}
    for mode in ("on", "off"):
        runs[mode] = distill(student_cfg(tmp_path / mode, trained_teacher.run_dir,
                                         method={"name": "kd", "cache_teacher": mode}))
    a, b = _weights(tmp_path / "on"), _weights(tmp_path / "off")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    from kdlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="cache_teacher: on needs a method that uses logits only"):
        distill(student_cfg(tmp_path / "at", trained_teacher.run_dir, method={"name": "at", "cache_teacher": "on"}))


def test_ab_caches_teacher_logits_after_its_feature_initialisation(tmp_path, trained_teacher):
    # AB's initialisation stage matches features; the distillation after it is CE + KD on logits only
    runs = {}
    for mode in ("on", "off"):
        method = {"name": "ab", "cache_teacher": mode, "init_epochs": 1}
        runs[mode] = distill(student_cfg(tmp_path / mode, trained_teacher.run_dir, method=method))
    a, b = _weights(tmp_path / "on"), _weights(tmp_path / "off")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_seed_placeholder_in_run_and_teacher_paths(tmp_path):
    t = train_teacher(teacher_cfg(str(tmp_path / "t-s{seed}"), seed=1))
    assert t.run_dir == tmp_path / "t-s1"
    s = distill(student_cfg(str(tmp_path / "s-s{seed}"), str(tmp_path / "t-s{seed}"), seed=1))
    assert s.run_dir == tmp_path / "s-s1" and s.summary["teacher_path"].startswith(str(tmp_path / "t-s1"))


def test_trackers_off(tmp_path):
    res = train_teacher(teacher_cfg(tmp_path / "off", train={**TINY_TRAIN, "trackers": []}))
    assert not (res.run_dir / "tensorboard").exists() and not (res.run_dir / "trackers.json").exists()
    # the earlier name of the setting still means the same
    res = train_teacher(teacher_cfg(tmp_path / "old", train={**TINY_TRAIN, "tensorboard": False}))
    assert not (res.run_dir / "tensorboard").exists()
