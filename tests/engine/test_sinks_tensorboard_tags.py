"""TensorBoard scalars are grouped (``train/``, ``test/``, ``time/``) and, with ``train.log_every_step``, also
logged per optimisation step (``step/``).  The fake writer stands in for torch's SummaryWriter to see the calls;
the event files themselves are read back at the end."""

import json

import pytest

from conftest import TINY_DATA, TINY_TRAIN, interrupt_training, teacher_cfg
from kdlab.engine.sinks import MetricSink, tensorboard_tag
from kdlab.runs.teacher import train_teacher

STEPS_PER_EPOCH = TINY_DATA["num_train"] // TINY_TRAIN["batch_size"]  # 192 / 32, no partial batch


class FakeWriter:
    def __init__(self, logged, log_dir, purge_step):
        self.logged, self.where = logged, "steps" if log_dir.endswith("steps") else "epochs"
        logged.append(("open", self.where, purge_step))

    def add_scalar(self, tag, value, step):
        self.logged.append((self.where, tag, step, value))

    def flush(self):
        pass

    def close(self):
        self.logged.append(("closed", self.where, None))


@pytest.fixture
def logged(monkeypatch):
    import torch.utils.tensorboard

    out = []
    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", lambda log_dir, purge_step=None:
                        FakeWriter(out, log_dir, purge_step))
    return out


def scalars(logged, where):
    return [(tag, step, v) for w, tag, step, v in (x for x in logged if len(x) == 4) if w == where]


def test_record_keys_get_their_group():
    assert [tensorboard_tag(k) for k in ("loss", "acc", "lr", "ce", "kd", "test_top1", "test_nll", "train_time",
                                         "branch1_top1", "rco_anchor_epoch")] == [
        "train/loss", "train/top1", "train/lr", "train/ce", "train/kd", "test/top1", "test/nll",
        "time/train_seconds", "test/branch1_top1", "train/rco_anchor_epoch"]


def test_epoch_scalars_are_grouped_and_equal_the_log(tmp_path, logged):
    res = train_teacher(teacher_cfg(tmp_path / "tb"))
    got = scalars(logged, "epochs")
    log = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    want = [(tensorboard_tag(k), rec["epoch"], v) for rec in log for k, v in rec.items() if k != "epoch"]
    assert sorted(got) == sorted(want)
    assert {t for t, _, _ in got} >= {"train/loss", "train/top1", "train/ce", "train/lr", "test/top1", "test/nll"}
    assert all("/" in t for t, _, _ in got)
    assert ("open", "epochs", 1) in logged and logged[-1] == ("closed", "epochs", None)
    assert json.loads((res.run_dir / "trackers.json").read_text()) == {"tensorboard": {"logged": 2, "run_id": None}}
    assert not scalars(logged, "steps")  # per step only when asked


def test_every_step_logs_each_optimisation_step(tmp_path, logged):
    train_teacher(teacher_cfg(tmp_path / "steps", train={**TINY_TRAIN, "log_every_step": True}))
    steps = scalars(logged, "steps")
    loss = [(step, v) for t, step, v in steps if t == "step/loss"]
    assert [s for s, _ in loss] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert {t for t, _, _ in steps} == {"step/loss", "step/ce", "step/lr"}
    assert ("open", "steps", 1) in logged and ("closed", "steps", None) in logged
    # the epoch's logged loss is the mean of its steps' (the batches are all full)
    log = [json.loads(x) for x in (tmp_path / "steps" / "metrics.jsonl").read_text().splitlines()]
    first = [v for s, v in loss if s <= STEPS_PER_EPOCH]
    assert sum(first) / len(first) == pytest.approx(log[0]["loss"], rel=1e-5)


def test_a_resumed_run_purges_what_the_interrupted_one_logged_after_its_checkpoint(tmp_path, logged, monkeypatch):
    cfg = teacher_cfg(tmp_path / "resume", train={**TINY_TRAIN, "log_every_step": True})
    undo = interrupt_training(monkeypatch, epoch=1, step=2)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(cfg)
    undo()
    logged.clear()
    train_teacher(cfg, resume=True)
    # epoch 1 was checkpointed: the epoch writer hides epochs >= 2, the step writer steps past epoch 1's
    assert ("open", "epochs", 2) in logged and ("open", "steps", STEPS_PER_EPOCH + 1) in logged
    assert [s for t, s, _ in scalars(logged, "steps") if t == "step/loss"][0] == STEPS_PER_EPOCH + 1


def test_nothing_per_step_without_a_tracker():
    sink = MetricSink(None, writes=False, history=[], trackers=["tensorboard"], every_step=True)
    assert not sink.logs_steps
    sink.write_step(1, 0.5, {}, 0.1)  # no writer, no folder: nothing happens


def test_event_files_hold_the_grouped_tags(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = train_teacher(teacher_cfg(tmp_path / "real", train={**TINY_TRAIN, "log_every_step": True}))
    epochs = EventAccumulator(str(res.run_dir / "tensorboard"))
    epochs.Reload()
    tags = set(epochs.Tags()["scalars"])
    assert {"train/loss", "train/top1", "test/top1", "test/nll", "train/lr", "time/train_seconds"} <= tags
    log = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    events = epochs.Scalars("test/top1")
    assert [e.step for e in events] == [rec["epoch"] for rec in log]
    assert [e.value for e in events] == pytest.approx([rec["test_top1"] for rec in log], rel=1e-6)
    steps = EventAccumulator(str(res.run_dir / "tensorboard" / "steps"))
    steps.Reload()
    assert [e.step for e in steps.Scalars("step/loss")] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
