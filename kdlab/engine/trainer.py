"""The one training loop, used for teachers and students alike.

``fit`` owns optimisation, evaluation, logging and checkpointing; everything method-specific lives in the
:class:`~kdlab.methods.base.Objective` (see its docstring for the events).  Each epoch's randomness (data order,
augmentation, dropout) is derived from ``(seed, epoch)``, so a run resumed from the checkpoint of epoch ``e``
repeats epoch ``e + 1`` exactly and ends with the same weights as an uninterrupted run.

The pieces, in the order ``fit`` runs them: :func:`place` (batch-norm synchronisation, device, memory format),
the loaders and the optimizer, :func:`_resume`, the objective's ``on_fit_start`` (initialisation stages run here,
before DistributedDataParallel exists: they average their own gradients), :func:`wrap` (``torch.compile`` and
DDP, whose construction gives every process rank 0's state), then per epoch :func:`_train_epoch`, the objective's
``on_epoch_end``, the buffer broadcast of a several-process job, :func:`_evaluate`, the log line, the checkpoint
and the hooks.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .. import __version__
from ..config.schema import OptimConfig, ScheduleConfig, TrainConfig
from ..data.base import DataBundle, batch_part
from ..errors import CheckpointError, ConfigError, DivergenceError
from ..methods.base import Objective
from . import distributed
from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .device import derive_seed, resolve_device, seed_everything, set_deterministic
from .distributed import DistEnv
from .metrics import topk_accuracy
from .predict import predict, predict_with_embeddings
from .progress import Progress
from .schedule import lr_at
from .state import LoopState
from .sync_bn import convert_sync_batchnorm

__all__ = ["FitResult", "OptimizerStep", "build_optimizer", "checkpoint_dir", "fit", "place", "predict", "wrap"]

EpochHook = Callable[[int, dict[str, Any]], None]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best: dict[str, Any]
    test_logits: Tensor
    train_time: float
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
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


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s bytes atomically (a hard link when the file system allows)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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
        schedule: ScheduleConfig, train: TrainConfig, seed: int, run_dir: str | os.PathLike | None = None,
        resume: bool = False, meta: dict[str, Any] | None = None, desc: str = "train",
        hooks: list[EpochHook] = ()) -> FitResult:
    """Train ``model`` by minimising ``objective`` on ``data.train``; evaluate on ``data.test``.

    Launched by torchrun with several processes, the step runs under DistributedDataParallel; every process
    returns the same result and only rank 0 writes to ``run_dir``.
    """
    device = resolve_device(train.device)
    world = distributed.env()
    if world.active and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    set_deterministic(train.deterministic)
    check_precision(device, train.precision)
    distributed.setup(device)
    model = place(model, objective, train, device, world)
    loader = data.train_loader(train.batch_size, device, seed, train.drop_last, train.num_workers, world.shard)
    test_loader = data.eval_loader("test", train.eval_batch_size, device, train.num_workers, world.shard)
    steps = len(loader)
    opt = build_optimizer(trained_parameters(model, objective), optim)
    optimizer_step = OptimizerStep(opt, torch.amp.GradScaler(device.type) if train.precision == "fp16" else None)
    run_dir = Path(run_dir) if run_dir is not None else None
    writes = run_dir is not None and world.main
    state = LoopState(epoch=0, epochs=train.epochs, step=0, steps_per_epoch=steps, num_train=len(data.train),
                      num_classes=data.num_classes, device=device, run_dir=run_dir, train_loader=loader, seed=seed)
    last_path = checkpoint_dir(run_dir) / "last.pt" if run_dir else None
    start_epoch, history, best = _resume(last_path if resume else None, model, objective, opt, device)
    state.step = start_epoch * steps
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        # drop log lines of an epoch that was interrupted before its checkpoint
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    writer = _tensorboard(run_dir) if (train.tensorboard and writes) else None

    state.epoch = start_epoch
    objective.on_fit_start(model, state)
    step_fn = wrap(model, objective, train, device, world)
    gathered = set(distributed.gathered_buffer_names(objective))
    progress = Progress(train.progress if world.main else "off", desc, train.epochs, steps, start_epoch)
    test_logits = test_emb = None
    t_start = time.perf_counter()
    try:
        for epoch in range(start_epoch, train.epochs):
            state.epoch = epoch
            rec = _train_epoch(step_fn, model, objective, optimizer_step, loader, state, schedule, optim, train,
                               progress, last_path, seed)
            objective.on_epoch_end(model, state)
            if world.active:  # each process updated the BN statistics on its part of the last batch
                distributed.broadcast_state(model, buffers_only=True)
                distributed.broadcast_state(objective, skip=gathered, buffers_only=True)
            if (epoch + 1) % train.eval_every == 0 or epoch + 1 == train.epochs:
                test_logits, test_emb = _evaluate(model, test_loader, final=epoch + 1 == train.epochs)
                rec["test_top1"] = topk_accuracy(test_logits, data.test.y, 1)
                rec["test_nll"] = torch.nn.functional.cross_entropy(test_logits, data.test.y).item()
            rec.update(objective.eval_metrics(model, state))
            is_best = rec.get("test_top1", -math.inf) > best["test_top1"]
            if is_best:
                best = {"epoch": epoch + 1, "test_top1": rec["test_top1"]}
            history.append(rec)
            if writes:
                _log(run_dir, rec, writer)
                _save(run_dir, model, objective, opt, epoch + 1, best, history, meta, seed, is_best,
                      train.save_every)
            distributed.barrier()
            progress.end_epoch(epoch + 1, rec)
            for hook in hooks:
                hook(epoch + 1, rec)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    if test_logits is None:  # resumed after the last epoch had finished
        test_logits, test_emb = _evaluate(model, test_loader, final=True)
    train_time = sum(h.get("train_time", 0.0) for h in history)
    return FitResult(history, best, test_logits, train_time, resumed_from=start_epoch,
                     extra={"wall_time": time.perf_counter() - t_start}, test_embeddings=test_emb)


def _resume(last_path: Path | None, model: nn.Module, objective: Objective, opt: torch.optim.Optimizer,
            device: torch.device) -> tuple[int, list, dict]:
    """(start epoch, history, best) of the checkpoint at ``last_path``, its state loaded; a fresh start without."""
    if last_path is None or not last_path.exists():
        return 0, [], {"epoch": 0, "test_top1": -math.inf}
    ck = _load_resumable(last_path, device)
    model.load_state_dict(ck["model_state"])
    objective.load_state_dict(ck["objective_state"])
    opt.load_state_dict(ck["optimizer_state"])
    return int(ck["epoch"]), list(ck["history"]), dict(ck["best"])


def _train_epoch(step_fn: Callable, model: nn.Module, objective: Objective, optimizer_step: OptimizerStep, loader,
                 state: LoopState, schedule: ScheduleConfig, optim: OptimConfig, train: TrainConfig,
                 progress: Progress, last_path: Path | None, seed: int) -> dict[str, Any]:
    """One pass over the training data; returns the epoch's log record (reduced over the processes)."""
    epoch, steps, device = state.epoch, state.steps_per_epoch, state.device
    seed_everything(derive_seed(seed, epoch, 3))
    warm = epoch < schedule.warmup_epochs
    lr = lr_at(schedule, optim.lr, epoch if not warm else epoch + 1 / steps, train.epochs)
    _set_lr(optimizer_step.opt, lr)
    model.train()
    objective.train()
    objective.on_epoch_start(model, state)
    check_every = 1 if device.type == "cpu" and not distributed.is_active() else 25
    t_epoch = time.perf_counter()
    totals = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, samples
    parts_sum: dict[str, Tensor] = {}
    bad = torch.zeros((), device=device)
    for i, batch in enumerate(loader.epoch(epoch)):
        if warm:
            _set_lr(optimizer_step.opt, lr_at(schedule, optim.lr, epoch + (i + 1) / steps, train.epochs))
        if train.channels_last and batch.x.dim() == 4:
            batch = batch._replace(x=batch.x.contiguous(memory_format=torch.channels_last))
        with _autocast(device, train.precision):
            out = step_fn(batch, state)
        bad += (~torch.isfinite(out.loss.detach())).float()
        if (i + 1) % check_every == 0 and _any(bad):
            _diverged(epoch, i, check_every, last_path)
        weight = distributed.shard_weight(batch_part(batch))
        optimizer_step(out.loss * weight if weight != 1.0 else out.loss)
        bs = batch.y.shape[0]
        totals[0] += out.loss.detach().double() * bs
        totals[1] += (out.logits.detach().argmax(1) == batch.y).sum()
        totals[2] += bs
        for k, v in out.parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + v.detach().double() * bs
        state.step += 1
        progress.step()
    if _any(bad):
        _diverged(epoch, steps - 1, check_every, last_path)
    names = sorted(parts_sum)
    reduced = distributed.all_reduce_sum(torch.stack([*totals, *(parts_sum[k] for k in names)]))
    n = max(float(reduced[2]), 1.0)
    rec: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "loss": float(reduced[0]) / n,
                           "acc": 100.0 * float(reduced[1]) / n}
    rec.update({k: float(v) / n for k, v in zip(names, reduced[3:])})
    rec["train_time"] = time.perf_counter() - t_epoch
    return rec


def _evaluate(model: nn.Module, test_loader, final: bool) -> tuple[Tensor, Tensor | None]:
    """Test logits over all processes; at the end of training also the pooled embeddings (the run's summary
    reuses both instead of predicting the test set again)."""
    if not final:
        return distributed.all_gather_cat(predict(model, test_loader)), None
    logits, emb = predict_with_embeddings(model, test_loader)
    return distributed.all_gather_cat(logits), distributed.all_gather_cat(emb)


def _log(run_dir: Path, rec: dict[str, Any], writer) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    if writer is not None:
        for k, v in rec.items():
            if k != "epoch" and isinstance(v, int | float):
                writer.add_scalar(k, v, rec["epoch"])


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


def _load_resumable(last: Path, device: torch.device) -> dict[str, Any]:
    """``last.pt``, or the checkpoint before it when ``last.pt`` is truncated or corrupted."""
    try:
        return load_checkpoint(last, map_location=device)
    except CheckpointError as e:
        prev = last.with_name("prev.pt")
        if not prev.exists():
            raise
        ck = load_checkpoint(prev, map_location=device)
        print(f"kdlab: {e}; resuming from the previous checkpoint {prev} (epoch {ck['epoch']})", file=sys.stderr,
              flush=True)
        return ck


def _save(run_dir: Path, model: nn.Module, objective: Objective, opt: torch.optim.Optimizer, epoch: int,
          best: dict, history: list, meta: dict | None, seed: int, is_best: bool, save_every: int) -> None:
    ck_dir = checkpoint_dir(run_dir)
    payload = {
        "kdlab_version": __version__,
        "model": getattr(model, "kdlab_spec", None),
        "model_state": model.state_dict(),
        "objective_state": objective.state_dict(),
        "optimizer_state": opt.state_dict(),
        "epoch": epoch,
        "best": best,
        "history": history,
        "seed": seed,
        **(meta or {}),
    }
    last, staged = ck_dir / "last.pt", ck_dir / ".next.ckpt"  # not *.pt: never listed as a checkpoint
    save_checkpoint(staged, payload)
    # best / epoch_XXX before last.pt moves on: a kill in between leaves last.pt at the previous epoch, and the
    # resumed run redoes this epoch and writes them again (identically), so none is ever missing
    if is_best:
        _link_or_copy(staged, ck_dir / "best.pt")
    if save_every and epoch % save_every == 0:
        _link_or_copy(staged, ck_dir / f"epoch_{epoch:03d}.pt")
    if last.exists():  # keep the previous checkpoint: the fallback if the new one turns out corrupted
        _link_or_copy(last, ck_dir / "prev.pt")
    os.replace(staged, last)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
