"""The trackers against the real things: an MLflow tracking server (sqlite, on 127.0.0.1) and W&B's offline run
files.  A 2-epoch run is killed (SIGKILL) and resumed: the tracker holds one run whose metrics equal
metrics.jsonl, each epoch once.  A tracker whose server is down warns and the run trains on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY_TRAIN, teacher_cfg
from kdlab.engine.sinks import tensorboard_tag
from kdlab.runs.teacher import train_teacher

# the child trains the run and is killed with SIGKILL at a chosen point (see KILL_AT)
CHILD = """
import json, os, signal, sys
from kdlab.engine import trackers
from kdlab.runs.teacher import train_teacher
where = os.environ["KILL_AT"]
if where == "before-log":  # epoch 1 checkpointed, not yet in the tracker
    original = trackers.Trackers.log_epoch
    def log_epoch(self, rec, tag):
        if rec["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, rec, tag)
    trackers.Trackers.log_epoch = log_epoch
hook = (lambda e, rec: os.kill(os.getpid(), signal.SIGKILL) if e == 1 else None) if where == "after-log" else None
train_teacher(json.loads(sys.argv[1]), hooks=[hook] if hook else ())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _killed_then_resumed(cfg: dict, kill_at: str, env: dict[str, str]) -> list[dict]:
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], env={**os.environ, **env,
                           "KILL_AT": kill_at}, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    run_dir = Path(cfg["out_dir"])
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1  # killed after epoch 1
    for k, v in env.items():
        os.environ[k] = v
    try:
        res = train_teacher(cfg, resume=True)
    finally:
        for k in env:
            os.environ.pop(k, None)
    assert not res.reused
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _expected(log: list[dict]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for rec in log:
        for k, v in rec.items():
            if k != "epoch" and isinstance(v, int | float):
                out.setdefault(tensorboard_tag(k), []).append((rec["epoch"], float(v)))
    return out


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    with open(root / "server.log", "w") as server_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=server_log, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("the MLflow server did not start:\n" + (root / "server.log").read_text()[-2000:])
            time.sleep(0.5)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def test_mlflow_server_holds_one_run_equal_to_the_metrics_file(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    cfg = teacher_cfg(str(tmp_path / "run"), train={**TINY_TRAIN, "trackers": ["mlflow"], "log_every_step": True,
                                                    "tracker_project": "resumed", "mlflow_uri": mlflow_server})
    log = _killed_then_resumed(cfg, "before-log", {})
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("resumed")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # resumed, not started again
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"] == {
        "logged": 2, "run_id": run.info.run_id}
    for tag, points in _expected(log).items():
        history = client.get_metric_history(run.info.run_id, tag)
        got = sorted((m.step, m.value) for m in history)
        assert [s for s, _ in got] == [s for s, _ in points], tag  # each epoch once
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-12), tag
    # each step once: epoch 1's before the kill, epoch 2's after the resume (192 samples in batches of 32)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "step/loss")) == list(range(1, 13))
    assert run.data.params["train.epochs"] == "2" and run.data.params["train.trackers"] == "['mlflow']"
    assert run.data.metrics["summary/best_test_top1"] == pytest.approx(max(r["test_top1"] for r in log))


def _wandb_records(path: Path):
    """The protobuf records of a W&B run file (a leveldb-style log of 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's trailer
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec
            buf = b""


def test_wandb_offline_files_hold_one_run_equal_to_the_metrics_file(tmp_path):
    pytest.importorskip("wandb")
    cfg = teacher_cfg(str(tmp_path / "run"), train={**TINY_TRAIN, "trackers": ["wandb"], "tracker_project": "p"})
    log = _killed_then_resumed(cfg, "after-log", {"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    files = sorted((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2  # the killed process's and the resumed one's
    ids, got = set(), []
    for f in files:
        rows = {}
        for rec in _wandb_records(f):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                ids.add(rec.run.run_id)
                assert rec.run.display_name == "run" and rec.run.run_group == "p"
            elif kind == "history":
                item = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                for k, v in item.items():
                    if "/" in k:
                        rows.setdefault(k, []).append((item["epoch"], v))
        got.append(rows)
    assert ids == {json.loads((tmp_path / "run" / "trackers.json").read_text())["wandb"]["run_id"]}  # one run
    # the killed process's W&B service lost what it had not written; the resumed process logged every epoch
    # since it started, the values exactly those of metrics.jsonl
    assert {k: sorted(v) for k, v in got[-1].items()} == _expected(log)
    for rows in got[:-1]:
        assert all(set(v) <= set(_expected(log)[k]) for k, v in rows.items())


def test_a_tracker_whose_server_is_down_warns_and_the_run_trains_on(tmp_path, capsys):
    pytest.importorskip("mlflow")
    cfg = teacher_cfg(str(tmp_path / "run"), train={**TINY_TRAIN, "trackers": ["mlflow", "tensorboard"],
                                                    "mlflow_uri": f"http://127.0.0.1:{_free_port()}"})
    res = train_teacher(cfg)
    err = capsys.readouterr().err
    assert err.count("tracker mlflow:") == 1 and "the run goes on without it" in err
    assert len((res.run_dir / "metrics.jsonl").read_text().splitlines()) == 2 and res.summary["top1"] > 0
    state = json.loads((res.run_dir / "trackers.json").read_text())
    assert "mlflow" not in state and state["tensorboard"]["logged"] == 2  # the next resume tries it again
