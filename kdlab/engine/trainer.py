"""The one training loop, used for teachers and students alike, for one run or a group of runs in lockstep.

``fit_group`` trains a list of :class:`Member` runs (model, objective, optimizer settings, run folder) that
share their data, training settings and seed: every batch is built once and each member takes its step on it in
turn (a group of students of one teacher also shares the teacher's pass over the batch, see
:class:`~kdlab.methods.base.SharedTeacher`).  ``fit`` is the group of one.  Everything method-specific lives in
the :class:`~kdlab.methods.base.Objective` (see its docstring for the events).

Each epoch's randomness (data order, augmentation, dropout) derives from ``(seed, epoch)``, so a run resumed from
the checkpoint of epoch ``e`` repeats epoch ``e + 1`` exactly.  In a group each member keeps its own random
state (restored before its step, saved after it), so it draws exactly what it draws when it runs alone: a
member's weights, log and checkpoints are bit-identical to its separate run.  A member that fails (a loss that
turns NaN, an error of its method) stops with its own error; the others go on.

The pieces, in the order ``fit_group`` runs them: :func:`place` (batch-norm synchronisation, device, memory
format), the shared loaders, per member its optimizer and :func:`~kdlab.runs.checkpoints.resume`, the
objective's ``on_fit_start`` (initialisation stages run here, before DistributedDataParallel exists: they average
their own gradients), :func:`wrap` (``torch.compile`` and DDP, whose construction gives every process rank 0's
state), then per epoch :func:`_train_epoch`, and per member the objective's ``on_epoch_end``, the buffer broadcast
of a several-process job, :func:`_evaluate`, the log line (:class:`~kdlab.engine.sinks.MetricSink`), the
checkpoint (:func:`~kdlab.runs.checkpoints.save_epoch`) and the hooks.

Model selection: every ``train.eval_every`` epochs (and after the last) the model is evaluated; with a validation
split (``data.val_fraction``, ``DataBundle.val``) the record gets ``val_top1`` / ``val_nll`` and the best epoch
(``best.pt``, the result's ``best``) is the one of highest validation top-1, the test split being read for
reporting only; without one it is the epoch of highest test top-1 (:func:`selection_split`).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from kdlab.config.schema import OptimConfig, ScheduleConfig, TrainConfig
from kdlab.core import distributed
from kdlab.core.device import compile_deterministic, derive_seed, resolve_device, seed_everything, set_deterministic
from kdlab.core.distributed import DistEnv
from kdlab.core.errors import ConfigError, DivergenceError
from kdlab.core.metrics import topk_accuracy
from kdlab.core.progress import Progress
from kdlab.core.state import LoopState
from kdlab.core.sync_bn import convert_sync_batchnorm
from kdlab.data.base import MIN_TRAIN_BATCH, DataBundle, batch_part
from kdlab.engine.predict import predict, predict_with_embeddings
from kdlab.engine.schedule import lr_at
from kdlab.engine.sinks import EpochHook, MetricSink
from kdlab.engine.store import RunStore
from kdlab.methods.base import Objective

__all__ = ["FitResult", "Member", "OptimizerStep", "RandomState", "build_optimizer", "fit",
           "fit_group", "place", "predict", "selection_split", "wrap"]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    #: the selected epoch: ``{"epoch", "test_top1", "selected_on": "val" | "test"}`` and, selected on a
    #: validation split, ``"val_top1"`` (epoch 0 with top-1 -inf: no epoch was evaluated)
    best: dict[str, Any]
    test_logits: Tensor
    train_time: float
    test_embeddings: Tensor | None = None  # the final model's pooled test embeddings (same order as the logits)


def build_optimizer(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def trained_parameters(model: nn.Module, objective: Objective) -> list[nn.Parameter]:
    """The model's trainable parameters, then the objective's own (connectors, heads, branches, peers)."""
    params = [p for p in model.parameters() if p.requires_grad]
    seen = {id(p) for p in params}
    return params + [p for p in objective.parameters() if p.requires_grad and id(p) not in seen]


class OptimizerStep:
    """One optimisation step from a loss: zero the gradients, backward, step.  With a gradient scaler (fp16) the
    loss is scaled, a step whose gradients hold Inf/NaN is skipped and the scale adapts (``torch.amp``)."""

    def __init__(self, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None):
        self.opt, self.scaler = opt, scaler

    def __call__(self, loss: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()


class RandomState:
    """The random streams a step may draw from (Python, NumPy, torch on the CPU and the current CUDA device)."""

    def __init__(self):
        self.py, self.np, self.cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() \
            else None

    def restore(self) -> None:
        random.setstate(self.py)
        np.random.set_state(self.np)
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda)


@dataclass
class Member:
    """One run of a group: what it trains, with which optimizer and schedule, and where it writes."""

    model: nn.Module
    objective: Objective
    optim: OptimConfig
    schedule: ScheduleConfig
    store: RunStore | None = None  # where it writes (None: nothing is written)
    meta: dict[str, Any] | None = None
    desc: str = "train"
    hooks: list[EpochHook] = field(default_factory=list)
    rng: RandomState | None = None  # the random state right after it was built (restored for its initialisation)
    result: FitResult | None = None  # filled by fit_group
    error: BaseException | None = None  # filled by fit_group when the member failed

    @property
    def run_dir(self) -> Path | None:
        """The folder its store writes into (None: nothing is written)."""
        return self.store.path if self.store is not None else None


class _Step(nn.Module):
    """The model and the objective as one module, so DistributedDataParallel sees every trained parameter."""

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch, state):
        return self.objective(self.model, batch, state)


def check_precision(device: torch.device, precision: str) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 needs CUDA; use bf16 or fp32 on the CPU")


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def place(model: nn.Module, objective: Objective, train: TrainConfig, device: torch.device,
          world: DistEnv) -> nn.Module:
    """Batch-norm synchronisation (``train.sync_bn`` in a several-process job: the model's and the objective's
    layers), device and memory format; returns the model (replaced if it was a BN layer itself)."""
    if train.sync_bn and world.active:
        model = convert_sync_batchnorm(model, device)
        convert_sync_batchnorm(objective, device)
        for m in objective.modules():  # regularisers that hold the model's (now replaced) layers
            if hasattr(m, "bind") and callable(m.bind):
                m.bind(model)
    fmt = torch.channels_last if train.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    objective.to(device, memory_format=fmt)
    return model


def wrap(model: nn.Module, objective: Objective, train: TrainConfig, device: torch.device,
         world: DistEnv) -> Callable:
    """The step to call: the (compiled) model and the objective, under DDP in a several-process job.

    DDP averages the gradients, broadcasts rank 0's state when it is built and the model's buffers (batch-norm
    statistics) before every step; per-sample state the objective gathers itself is kept out of both, and
    unused-parameter detection is on only where the model or the method says a step may leave parameters without
    a gradient.
    """
    if train.compile:
        compile_deterministic()
    run_model = torch.compile(model) if train.compile else model
    step: nn.Module = _Step(run_model, objective)
    if not world.active:
        return step
    from torch.nn.parallel import DistributedDataParallel as DDP

    step._ddp_params_and_buffers_to_ignore = distributed.gathered_buffer_names(objective, "objective")
    unused = bool(getattr(model, "may_skip_parameters", False)) or objective.may_skip_parameters()
    ids = [device.index] if device.type == "cuda" else None
    return DDP(step, device_ids=ids, find_unused_parameters=unused)


def fit(model: nn.Module, objective: Objective, data: DataBundle, *, optim: OptimConfig,
        schedule: ScheduleConfig, train: TrainConfig, seed: int, store: RunStore | None = None,
        resume: bool = False, meta: dict[str, Any] | None = None, desc: str = "train",
        hooks: list[EpochHook] = ()) -> FitResult:
    """Train ``model`` by minimising ``objective`` on ``data.train``; evaluate on ``data.test`` (a group of one).

    Launched by torchrun with several processes, the step runs under DistributedDataParallel; every process
    returns the same result and only rank 0 writes to ``store``.
    """
    member = Member(model, objective, optim, schedule, store, meta, desc, list(hooks))
    fit_group([member], data, train=train, seed=seed, resume=resume)
    if member.error is not None:
        raise member.error
    return member.result


def fit_group(members: list[Member], data: DataBundle, *, train: TrainConfig, seed: int, resume: bool = False,
              shared: Any = None) -> list[Member]:
    """Train every member on the same batches in lockstep; fills each member's ``result`` or ``error``.

    ``shared``: an object whose ``begin(x)`` / ``end()`` bracket each batch (the group's shared teacher pass).
    A group of one raises its member's error at once (a single run stops where it failed); in a larger group a
    failing member is set aside and the others continue.
    """
    device = resolve_device(train.device)
    world = distributed.env()
    if world.active and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    set_deterministic(train.deterministic)
    check_precision(device, train.precision)
    distributed.setup(device)
    alone = len(members) == 1
    for m in members:
        m.model = place(m.model, m.objective, train, device, world)
    _check_batch_norm_batches(members, train.batch_size // max(world.world, 1))
    loader = data.train_loader(train.batch_size, device, seed, train.drop_last, train.num_workers, world.shard)
    test_loader = data.eval_loader("test", train.eval_batch_size, device, train.num_workers, world.shard)
    val_loader = None if data.val is None else data.eval_loader("val", train.eval_batch_size, device,
                                                                train.num_workers, world.shard)
    steps = len(loader)
    runs = []
    for m in members:
        try:
            runs.append(_Run(m, data, loader, steps, train, seed, device, world, resume, alone))
        except Exception as e:  # noqa: BLE001 - one member's bad checkpoint or method must not stop the group
            if alone:
                raise
            m.error = e
    for r in runs:
        r.start()
    runs = [r for r in runs if r.member.error is None]
    start = min((r.start_epoch for r in runs), default=train.epochs)
    names = ", ".join(r.member.desc for r in runs)
    progress = Progress(train.progress if world.main else "off", names if alone else f"{len(runs)} runs: {names}",
                        train.epochs, steps, start)
    try:
        for epoch in range(start, train.epochs):
            live = [r for r in runs if r.member.error is None and epoch >= r.start_epoch]
            if not live:
                break
            _train_epoch(live, loader, epoch, train, seed, shared, progress)
            for r in live:
                if r.member.error is None:
                    r.guard(r.finish_epoch, epoch, test_loader, val_loader, data, progress)
    finally:
        progress.close()
        for r in runs:
            r.sink.close(r.summary())
    for r in runs:
        if r.member.error is None:
            r.guard(r.conclude, test_loader)
    return members


def _check_batch_norm_batches(members: list, per_process: int) -> None:
    """Batch norm cannot train on one sample per batch (PyTorch raises deep inside the first step)."""
    if per_process >= MIN_TRAIN_BATCH:
        return
    for m in members:
        if any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.model.modules()):
            raise ConfigError(f"train.batch_size: {per_process} sample(s) per batch and process, but the model has "
                              f"batch norm, which needs at least {MIN_TRAIN_BATCH} to train; use a larger batch")


class _Run:
    """The loop's state of one member: optimizer, resume point, log, the epoch's running sums.  ``alone``: the
    group has this member only (a failure then stops the run; in a larger group it stops this member only)."""

    def __init__(self, member: Member, data: DataBundle, loader, steps: int, train: TrainConfig, seed: int,
                 device: torch.device, world: DistEnv, resume_run: bool, alone: bool):
        self.member, self.train, self.seed, self.device, self.world = member, train, seed, device, world
        self.alone = alone
        m = member
        self.opt = build_optimizer(trained_parameters(m.model, m.objective), m.optim)
        scaler = torch.amp.GradScaler(device.type) if train.precision == "fp16" else None
        self.optimizer_step = OptimizerStep(self.opt, scaler)
        self.state = LoopState(epoch=0, epochs=train.epochs, step=0, steps_per_epoch=steps,
                               num_train=len(data.train), num_classes=data.num_classes, device=device,
                               run_dir=m.store.path if m.store else None, train_loader=loader, seed=seed,
                               display=train.progress if world.main else "off", desc=m.desc)
        self.last_path = m.store.last_checkpoint() if m.store else None
        self.start_epoch, self.history, best = (
            m.store.resume(m.model, m.objective, self.opt, device, m.meta) if m.store and resume_run
            else (0, [], {}))
        self.best = _best_of(best, selection_split(data))
        self.state.step = self.start_epoch * steps
        self.sink = MetricSink(m.store, world.main, self.history, m.hooks, train.trackers, train.log_every_step,
                               config=(m.meta or {}).get("config"), project=train.tracker_project,
                               mlflow_uri=train.mlflow_uri)
        self.rng: RandomState | None = None
        self.test_logits: Tensor | None = None
        self.test_emb: Tensor | None = None
        self.step_fn: Callable | None = None
        # the current epoch's (set by begin_epoch): warm-up, learning rate, start time, running sums
        self.warm = False
        self.lr = m.optim.lr
        self.t_epoch = 0.0
        self.totals = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, samples
        self.parts_sum: dict[str, Tensor] = {}
        self.bad = torch.zeros((), device=device)
        self.record: dict[str, Any] | None = None  # the epoch's log record (set by epoch_record)

    def guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; in a group, a failure is this member's alone (it stops, the others go on)."""
        if self.alone:
            return fn(*args)
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001
            self.member.error = e
            return None

    def start(self) -> None:
        """The objective's ``on_fit_start`` (under the random state the member was built with), then DDP."""
        def go():
            m = self.member
            self.state.epoch = self.start_epoch
            with self.random_state(m.rng):
                m.objective.on_fit_start(m.model, self.state)
            self.step_fn = wrap(m.model, m.objective, self.train, self.device, self.world)
        self.guard(go)

    @contextlib.contextmanager
    def random_state(self, state: RandomState | None) -> Iterator[None]:
        """This member's random streams while it runs (none: the process's streams as they are)."""
        if state is None:
            yield
            return
        state.restore()
        try:
            yield
        finally:
            self.rng = RandomState()

    # -- one epoch ------------------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int, base: RandomState | None) -> None:
        m, train = self.member, self.train
        self.state.epoch = epoch
        self.warm = epoch < m.schedule.warmup_epochs
        steps = self.state.steps_per_epoch
        self.lr = lr_at(m.schedule, m.optim.lr, epoch if not self.warm else epoch + 1 / steps, train.epochs)
        _set_lr(self.opt, self.lr)
        self.rng = base
        with self.random_state(self.rng):
            m.model.train()
            m.objective.train()
            m.objective.on_epoch_start(m.model, self.state)
        self.t_epoch = time.perf_counter()
        self.totals = torch.zeros(3, device=self.device, dtype=torch.float64)  # loss sum, correct, samples
        self.parts_sum = {}
        self.bad = torch.zeros((), device=self.device)

    def step(self, batch, i: int, check_every: int) -> None:
        m, train, epoch = self.member, self.train, self.state.epoch
        if self.warm:
            _set_lr(self.opt, lr_at(m.schedule, m.optim.lr, epoch + (i + 1) / self.state.steps_per_epoch,
                                    train.epochs))
        with self.random_state(self.rng), _autocast(self.device, train.precision):
            out = self.step_fn(batch, self.state)
            self.bad += (~torch.isfinite(out.loss.detach())).float()
            if (i + 1) % check_every == 0 and _any(self.bad):
                _diverged(epoch, i, check_every, self.last_path)
            weight = distributed.shard_weight(batch_part(batch))
            self.optimizer_step(out.loss * weight if weight != 1.0 else out.loss)
        bs = batch.y.shape[0]
        self.totals[0] += out.loss.detach().double() * bs
        self.totals[1] += (out.logits.detach().argmax(1) == batch.y).sum()
        self.totals[2] += bs
        for k, v in out.parts.items():
            self.parts_sum[k] = self.parts_sum.get(k, 0.0) + v.detach().double() * bs
        self.state.step += 1
        if self.sink.logs_steps:  # reading the loss waits for the device: only when asked for
            self.sink.write_step(self.state.step, out.loss.detach(), {k: v.detach() for k, v in out.parts.items()},
                                 self.opt.param_groups[0]["lr"])

    def epoch_record(self, check_every: int, share: int = 1) -> dict[str, Any]:
        """The epoch's log record; ``train_time`` is this member's share of the epoch (the group's time over the
        ``share`` members that trained in it)."""
        epoch = self.state.epoch
        if _any(self.bad):
            _diverged(epoch, self.state.steps_per_epoch - 1, check_every, self.last_path)
        names = sorted(self.parts_sum)
        reduced = distributed.all_reduce_sum(torch.stack([*self.totals, *(self.parts_sum[k] for k in names)]))
        n = max(float(reduced[2]), 1.0)
        rec: dict[str, Any] = {"epoch": epoch + 1, "lr": self.lr, "loss": float(reduced[0]) / n,
                               "acc": 100.0 * float(reduced[1]) / n}
        rec.update({k: float(v) / n for k, v in zip(names, reduced[3:])})
        rec["train_time"] = (time.perf_counter() - self.t_epoch) / share
        return rec

    def finish_epoch(self, epoch: int, test_loader, val_loader, data: DataBundle, progress: Progress) -> None:
        """The epoch's record, evaluation (``val_loader``: the validation split's, None without one), the best
        epoch so far, log line, checkpoint and hooks."""
        m, train = self.member, self.train
        rec = self.record
        with self.random_state(self.rng):
            m.objective.on_epoch_end(m.model, self.state)
        if self.world.active:  # each process updated the BN statistics on its part of the last batch
            distributed.broadcast_state(m.model, buffers_only=True)
            distributed.broadcast_state(m.objective, skip=set(distributed.gathered_buffer_names(m.objective)),
                                        buffers_only=True)
        if (epoch + 1) % train.eval_every == 0 or epoch + 1 == train.epochs:
            if val_loader is not None:
                val_logits = distributed.all_gather_cat(predict(m.model, val_loader))
                rec["val_top1"] = topk_accuracy(val_logits, data.val.y, 1)
                rec["val_nll"] = torch.nn.functional.cross_entropy(val_logits, data.val.y).item()
            self.test_logits, self.test_emb = _evaluate(m.model, test_loader, final=epoch + 1 == train.epochs)
            rec["test_top1"] = topk_accuracy(self.test_logits, data.test.y, 1)
            rec["test_nll"] = torch.nn.functional.cross_entropy(self.test_logits, data.test.y).item()
            rec.update(m.objective.eval_metrics(m.model, self.state))  # on the same epochs as the test top-1
        on = self.best["selected_on"]
        is_best = rec.get(f"{on}_top1", -math.inf) > self.best[f"{on}_top1"]
        if is_best:
            self.best = {"epoch": epoch + 1, "test_top1": rec["test_top1"], "selected_on": on}
            if on == "val":
                self.best["val_top1"] = rec["val_top1"]
        self.history.append(rec)
        if self.sink.writes:
            self.sink.write(rec)
            m.store.save_epoch(m.model, m.objective, self.opt, epoch + 1, self.best, self.history, m.meta,
                       self.seed, is_best, train.save_every)
            self.sink.commit(rec)
        distributed.barrier()
        if self.alone:
            progress.end_epoch(epoch + 1, rec)
        else:
            progress.end_epoch_of(m.desc, epoch + 1, rec)
        self.sink.notify(rec)

    def summary(self) -> dict[str, Any] | None:
        """What the trackers keep of a finished run (None: it stopped before its last epoch)."""
        if self.member.error is not None or len(self.history) < self.train.epochs:
            return None
        last = self.history[-1]
        return {"best_epoch": self.best.get("epoch"), "best_test_top1": self.best.get("test_top1"),
                "test_top1": last.get("test_top1"), "train_time": sum(h.get("train_time", 0.0) for h in self.history)}

    def conclude(self, test_loader) -> None:
        if self.test_logits is None:  # resumed after the last epoch had finished
            self.test_logits, self.test_emb = _evaluate(self.member.model, test_loader, final=True)
        train_time = sum(h.get("train_time", 0.0) for h in self.history)
        self.member.result = FitResult(self.history, self.best, self.test_logits, train_time,
                                       test_embeddings=self.test_emb)


def selection_split(data: DataBundle) -> str:
    """The split the best epoch is chosen on: ``"val"`` when the data have a validation split, else ``"test"``."""
    return "test" if data.val is None else "val"


def _best_of(saved: dict[str, Any], on: str) -> dict[str, Any]:
    """The best epoch to go on from: a resumed checkpoint's (one written before the record named its split was
    selected on test), else none yet."""
    best = {"epoch": 0, "test_top1": -math.inf, "selected_on": on, **({"val_top1": -math.inf} if on == "val" else {})}
    saved = {"selected_on": "test", **saved} if saved else {}
    if saved.get("selected_on") != on:  # nothing selected yet, or a checkpoint's choice on another split
        return best
    return {**best, **saved}


def _train_epoch(runs: list[_Run], loader, epoch: int, train: TrainConfig, seed: int, shared: Any,
                 progress: Progress) -> None:
    """One pass over the training batches, each member taking its step on every batch; leaves each member's
    epoch record in ``run.record`` (or its error)."""
    seed_everything(derive_seed(seed, epoch, 3))
    base = None if runs[0].alone else RandomState()  # every member starts the epoch from the same streams
    for r in runs:
        r.guard(r.begin_epoch, epoch, base)
    check_every = 1 if runs[0].device.type == "cpu" and not distributed.is_active() else 25
    for i, batch in enumerate(loader.epoch(epoch)):
        if train.channels_last and batch.x.dim() == 4:
            batch = batch._replace(x=batch.x.contiguous(memory_format=torch.channels_last))
        if shared is not None:
            shared.begin(batch.x)
        for r in runs:
            if r.member.error is None:
                r.guard(r.step, batch, i, check_every)
        if shared is not None:
            shared.end()
        progress.step()
    for r in runs:
        if r.member.error is None:
            r.record = r.guard(r.epoch_record, check_every, len(runs))


def _evaluate(model: nn.Module, test_loader, final: bool) -> tuple[Tensor, Tensor | None]:
    """Test logits over all processes; at the end of training also the pooled embeddings (the run's summary
    reuses both instead of predicting the test set again)."""
    if not final:
        return distributed.all_gather_cat(predict(model, test_loader)), None
    logits, emb = predict_with_embeddings(model, test_loader)
    return distributed.all_gather_cat(logits), distributed.all_gather_cat(emb)


def _any(flag: Tensor) -> bool:
    """Whether any process saw a non-finite loss (all processes stop together, none waits for the others)."""
    return bool(distributed.all_reduce_sum(flag.clone()) > 0)


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def _diverged(epoch: int, step: int, window: int, last_path: Path | None) -> None:
    where = f"epoch {epoch + 1}, step {step + 1}" if window == 1 else \
        f"epoch {epoch + 1}, within steps {max(step + 2 - window, 1)}-{step + 1}"
    keep = ""
    if last_path is not None and last_path.exists():
        keep = f"; the last good checkpoint is kept at {last_path}"
    raise DivergenceError(f"loss became NaN/Inf at {where}{keep} (try a lower optim.lr)")
