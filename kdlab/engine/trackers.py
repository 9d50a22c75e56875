"""Experiment trackers a run logs to (``train.trackers``): TensorBoard, Weights & Biases, MLflow.

Only the process that writes the run folder logs (rank 0).  Each tracker gets:

* at the start, the run's resolved config (W&B config, MLflow params plus ``config.json``), its name (the run
  folder, relative to the working folder when inside it: ``runs/study/teachers/resnet8/standard/seed0``) and
  its project (``train.tracker_project``: W&B project and group, MLflow experiment; a study fills in
  its own name);
* per epoch, once the epoch's checkpoint is written, the epoch's record under the tags of
  :func:`~kdlab.engine.sinks.tensorboard_tag` (``train/loss``, ``test/top1``, ...) at step = epoch; with
  ``train.log_every_step`` also each step's loss, parts and learning rate under ``step/`` at the global step;
* at the end, a summary (best epoch, best and final test top-1, training time).

A resumed run continues the same tracker run: ``trackers.json`` in the run folder keeps each tracker's run id and
the last epoch it holds for sure; on resuming, the epochs the checkpoint holds but the tracker may have missed
are logged first.  TensorBoard (flushed each epoch) and MLflow (a synchronous call to its server) hold an epoch
once it is logged: every epoch reaches them once (a kill between a log and the file's update may log one epoch
twice, with the same values).  W&B's service writes and uploads in the background and loses what it had not
written when the process is killed, so W&B holds an epoch for sure only once its run ended cleanly (``finish``):
after a kill, the epochs since the process started are logged again, some perhaps twice with the same values.
Step values of an interrupted epoch are logged again when it is repeated: TensorBoard purges the first ones, W&B
and MLflow keep both.

A tracker that cannot start or log (not installed, server down, no credentials) is dropped for the rest of the
process with one warning; training goes on, and the next resume catches up on what it missed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdlab.core import log
from kdlab.core.checkpoint import atomic_write_text

TRACKERS = ("tensorboard", "wandb", "mlflow")
DEFAULT_PROJECT = "kdlab"
STATE_FILE = "trackers.json"

# MLflow retries an unreachable server for minutes by default (a run's tracker must give up quickly) and prints
# a link on stdout when a run ends (kdlab's progress owns the terminal); a user's own setting wins
MLFLOW_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class Tracker:
    """One tracker run.  Subclasses implement the ``_``-methods; failures are handled by :class:`Trackers`."""

    name = ""
    run_id: str | None = None
    durable = True  # an epoch is held for sure once log_epoch returns (else: once close returns)

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def log_step(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def summary(self, values: dict[str, Any]) -> None:
        raise NotImplementedError

    def artifacts(self, files: list[Path], base: Path) -> None:
        pass

    def close(self, finished: bool) -> None:
        pass


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, folder: Path, first_epoch: int):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self._writer_class = SummaryWriter
        self.folder = folder
        # a resumed run hides the events an interrupted process logged past its last checkpoint
        self.epochs = SummaryWriter(log_dir=str(folder), purge_step=first_epoch)
        self.steps = None

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.epochs.add_scalar(k, v, epoch)
        self.epochs.flush()

    def log_step(self, step: int, values: dict[str, float]) -> None:
        if self.steps is None:  # its first step is where the run (re)started: what an interrupted process logged
            self.steps = self._writer_class(log_dir=str(self.folder / "steps"), purge_step=step)  # after it goes
        for k, v in values.items():
            self.steps.add_scalar(k, v, step)

    def summary(self, values: dict[str, Any]) -> None:
        pass  # the epoch curves are TensorBoard's summary

    def close(self, finished: bool) -> None:
        for w in (self.epochs, self.steps):
            if w is not None:
                w.close()


class WandbTracker(Tracker):
    name = "wandb"
    durable = False

    def __init__(self, run_dir: Path, config: dict[str, Any], project: str, run_id: str | None):
        import wandb

        self.run = wandb.init(project=project, group=project, name=run_name(run_dir), id=run_id, resume="allow",
                              config=config, dir=str(run_dir), reinit="create_new")
        self.run_id = self.run.id
        for axis, tags in (("epoch", ("train/*", "test/*", "val/*", "time/*")), ("global_step", ("step/*",))):
            self.run.define_metric(axis)
            for tag in tags:
                self.run.define_metric(tag, step_metric=axis)

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log({"epoch": epoch, **values})

    def log_step(self, step: int, values: dict[str, float]) -> None:
        self.run.log({"global_step": step, **values})

    def summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def artifacts(self, files: list[Path], base: Path) -> None:
        for f in files:
            self.run.save(str(f), base_path=str(base), policy="now")

    def close(self, finished: bool) -> None:
        self.run.finish(exit_code=0 if finished else 1)


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, run_dir: Path, config: dict[str, Any], project: str, run_id: str | None, uri: str | None):
        for k, v in MLFLOW_DEFAULTS.items():
            os.environ.setdefault(k, v)
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._metric = Metric
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            exp = self.client.get_experiment_by_name(project)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(project)
            run_id = self.client.create_run(exp_id, run_name=run_name(run_dir),
                                            tags={"kdlab.run_dir": str(run_dir.resolve())}).info.run_id
            flat = _flatten(config)
            params = [Param(k, str(v)[:6000]) for k, v in sorted(flat.items())]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                self.client.log_batch(run_id, params=params[i:i + 100])
            self.client.log_dict(run_id, config, "config.json")
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def _log(self, step: int, values: dict[str, float]) -> None:
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k, float(v), now, step) for k, v in values.items()])

    log_epoch = _log
    log_step = _log

    def summary(self, values: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, metrics=[self._metric(f"summary/{k}", float(v), 0, 0)
                                                    for k, v in values.items() if _number(v)])

    def artifacts(self, files: list[Path], base: Path) -> None:
        for f in files:
            sub = f.parent.relative_to(base).as_posix()
            self.client.log_artifact(self.run_id, str(f), artifact_path=None if sub == "." else sub)

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if finished else "KILLED")


def run_name(run_dir: Path) -> str:
    """The tracker's name of a run: its folder, relative to the working folder when inside it (unique in a study,
    where every run folder's last part is its seed)."""
    path = run_dir.resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Trackers:
    """The trackers of one run (rank 0), their state file, and what happens when one fails."""

    def __init__(self, names: list[str], run_dir: Path, config: dict[str, Any], project: str | None,
                 mlflow_uri: str | None = None, tensorboard_dir: Path | None = None):
        self.run_dir, self.state_file = run_dir, run_dir / STATE_FILE
        self.state: dict[str, dict[str, Any]] = _read_state(self.state_file)
        self.project = project or DEFAULT_PROJECT
        self.config, self.mlflow_uri = config, mlflow_uri
        self.tensorboard_dir = tensorboard_dir or run_dir / "tensorboard"
        self.names = list(dict.fromkeys(names))
        self.live: list[Tracker] = []
        self.last: dict[str, int] = {}  # per tracker, the last epoch it was given

    def start(self, history: list[dict[str, Any]], tag: Callable[[str], str]) -> None:
        """Open every tracker (resuming its run) and log the epochs of ``history`` it has not logged yet."""
        for name in self.names:
            saved = self.state.get(name, {})
            logged = min(int(saved.get("logged", 0)), len(history))
            tracker = self._guard(name, lambda n=name, s=saved, e=logged + 1: self._open(n, s.get("run_id"), e))
            if tracker is None:
                continue
            self.live.append(tracker)
            self.state[name] = {"run_id": tracker.run_id, "logged": logged}
            for rec in history[logged:]:
                self._epoch(tracker, rec, tag)
        self._save()

    def _open(self, name: str, run_id: str | None, first_epoch: int) -> Tracker | None:
        if name == "tensorboard":
            try:
                import tensorboard  # noqa: F401 - torch's SummaryWriter needs it; without it, no TensorBoard logs
            except ImportError:
                return None
            return TensorBoardTracker(self.tensorboard_dir, first_epoch)
        if name == "wandb":
            return WandbTracker(self.run_dir, self.config, self.project, run_id)
        if name == "mlflow":
            return MlflowTracker(self.run_dir, self.config, self.project, run_id, self.mlflow_uri)
        raise ValueError(f"unknown tracker {name!r}")

    def log_epoch(self, rec: dict[str, Any], tag: Callable[[str], str]) -> None:
        """``rec`` (an epoch record whose checkpoint is written) to every live tracker."""
        for tracker in list(self.live):
            self._epoch(tracker, rec, tag)
        self._save()

    def _epoch(self, tracker: Tracker, rec: dict[str, Any], tag: Callable[[str], str]) -> None:
        values = {tag(k): float(v) for k, v in rec.items() if k != "epoch" and _number(v)}
        if self._guard(tracker.name, lambda: tracker.log_epoch(rec["epoch"], values) or True, tracker):
            self.last[tracker.name] = rec["epoch"]
            if tracker.durable:
                self.state[tracker.name]["logged"] = rec["epoch"]

    def log_step(self, step: int, values: dict[str, float]) -> None:
        for tracker in list(self.live):
            self._guard(tracker.name, lambda t=tracker: t.log_step(step, values), t=tracker)

    def summary(self, values: dict[str, Any]) -> None:
        for tracker in list(self.live):
            self._guard(tracker.name, lambda t=tracker: t.summary(values), t=tracker)

    def artifacts(self, files: list[Path], base: Path) -> None:
        for tracker in list(self.live):
            self._guard(tracker.name, lambda t=tracker: t.artifacts(files, base), t=tracker)

    def close(self, finished: bool) -> None:
        for tracker in self.live:
            if self._guard(tracker.name, lambda t=tracker: t.close(finished) or True) and tracker.name in self.last:
                self.state[tracker.name]["logged"] = self.last[tracker.name]
        self.live = []
        self._save()

    @property
    def logs(self) -> bool:
        return bool(self.live)

    def _guard(self, name: str, fn: Callable[[], Any], t: Tracker | None = None) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - a tracker never stops training
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            log.warning(f"tracker {name}: {type(e).__name__}: {first_line[:300]}; the run goes on without it "
                        "(resuming the run logs what it missed)")
            if t is not None and t in self.live:
                self.live.remove(t)
                with contextlib.suppress(Exception):
                    t.close(False)
            return None

    def _save(self) -> None:
        if self.state:
            atomic_write_text(self.state_file, json.dumps(self.state, indent=1, sort_keys=True) + "\n")


def _read_state(path: Path) -> dict[str, dict[str, Any]]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


__all__ = ["DEFAULT_PROJECT", "STATE_FILE", "TRACKERS", "Tracker", "Trackers"]
