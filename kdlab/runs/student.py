"""Student runs: one student (``kdlab distill``) or a group of students of one teacher trained in lockstep.

A group's members share the teacher, seed, data and training-loop settings (:func:`group_key`), so they see the
same batches in the same order with the same augmentation.  The group loads the data and the teacher once, runs
the teacher once per batch for all of them (:class:`~kdlab.methods.base.SharedTeacher`) and predicts the
teacher's test and training sets once for the summaries (the teacher's own measures and the members' relations to
it); everything else is each member's own, and each member's run folder is exactly what its separate run writes
(weights, ``metrics.jsonl``, checkpoints, summary; only the measured ``train_time`` differs: a member's share of
the group's time).  ``distill`` is the group of one.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch

from kdlab.config import DistillRunConfig
from kdlab.core import distributed
from kdlab.core.checkpoint import atomic_write_text
from kdlab.core.device import resolve_device, seed_everything, set_deterministic
from kdlab.core.errors import ConfigError, RunFolderError
from kdlab.data import DataBundle, load_dataset
from kdlab.data.base import fingerprint
from kdlab.engine.trainer import Member, RandomState, check_precision, fit_group
from kdlab.methods import build_distill_objective
from kdlab.methods.base import SharedTeacher
from kdlab.models import build_model
from kdlab.runs.checkpoints import RunCheckpoints
from kdlab.runs.diagnostics import teacher_predictions
from kdlab.runs.folder import (
    RunFolder,
    exclusive,
    remove_run,
    save_predictions,
)
from kdlab.runs.resolve import (
    StudentRun,
    group_key,
    load_init,
    load_teacher,
    resolve_student_run,
    teacher_checkpoints,
)
from kdlab.runs.reuse import check_and_init, check_run_dir, vouch
from kdlab.runs.summary import RunResult, run_summary


def distill(config: Any, overrides: list[str] = (), resume: bool = False, hooks=(),
            overwrite: bool = False) -> RunResult:
    """Train a student (distilled from a teacher unless the method is ``none``); returns folder and summary."""
    run = resolve_student_run(config, overrides)
    if overwrite:
        distributed.on_main(lambda: remove_run(run.run_dir))
    (out,) = _distill_runs([run], resume, hooks)
    if isinstance(out, BaseException):
        raise out
    return out


def distill_group(configs: list[Any], resume: bool = False, hooks=()) -> list[RunResult | BaseException]:
    """Train the student runs of ``configs`` together (one teacher pass per batch); returns each member's result,
    or the error it ended with (a member's failure is its own: the others go on).

    Every config must share teacher, seed, data, holdout and training-loop settings (a ``ConfigError`` names the
    first difference).  Finished members are reused, unfinished ones resume (with ``resume``).
    """
    runs = [resolve_student_run(c) for c in configs]
    keys = [group_key(r.plain) for r in runs]
    for r, k in zip(runs[1:], keys[1:]):
        if k != keys[0]:
            field = next(name for name, a, b in zip(("seed", "data", "holdout", "teacher", "train"), keys[0], k)
                         if a != b)
            raise ConfigError(f"{field}: {r.run_dir} cannot train in one group with {runs[0].run_dir}: a group's "
                              "members share teacher, seed, data, holdout and train settings")
    if len({r.run_dir.resolve() for r in runs}) < len(runs):
        raise ConfigError("out_dir: two members of a group write the same run folder")
    return _distill_runs(runs, resume, hooks)


def _distill_runs(runs: list[StudentRun], resume: bool, hooks) -> list[RunResult | BaseException]:
    alone = len(runs) == 1
    first = runs[0].cfg
    set_deterministic(first.train.deterministic)  # before any CUDA work: the teacher is loaded next
    device = distributed.process_device(resolve_device(first.train.device))
    check_precision(device, first.train.precision)  # before any run folder is made
    results: list[RunResult | BaseException | None] = [None] * len(runs)

    def each(todo: list[int], fn) -> list[int]:
        """``fn(i)`` for each member; a member's error is its result (a single run raises it)."""
        kept = []
        for i in todo:
            try:
                fn(i)
                kept.append(i)
            except Exception as e:  # noqa: BLE001 - in a group one member's bad method must not stop the others
                if alone:
                    raise
                results[i] = e
        return kept

    def finished(i: int) -> None:
        r = runs[i]
        done = distributed.on_main(lambda: check_run_dir(r.run_dir, r.plain, resume))
        if done is not None:
            results[i] = RunResult(r.run_dir, done, reused=True)

    todo = [i for i in each(list(range(len(runs))), finished) if results[i] is None]
    if not todo:
        return results
    data = load_dataset(first.data, first.holdout, first.seed)
    teacher = teacher_path = None
    if any(runs[i].wants_teacher for i in todo):
        teacher, teacher_path = load_teacher(first.teacher, data, device)
    # methods that read the teacher run's other checkpoints (rco) find none beside a pretrained weights file
    run_checkpoint = teacher_path if first.teacher is not None and first.teacher.path is not None else None
    members: dict[int, Member] = {}

    def build(i: int) -> None:
        r = runs[i]
        seed_everything(r.cfg.seed)
        student = build_model(r.cfg.student.name, r.cfg.student.params, data.num_classes, data.input_shape,
                              key="student")
        load_init(student, r.cfg, "student")
        t = teacher if r.wants_teacher else None
        t_path = run_checkpoint if t is not None else None
        objective = build_distill_objective(
            r.cfg.method, t, student, data, r.run_dir, r.cfg.train.epochs, teacher_path=t_path, device=device,
            teacher_checkpoints=None if t_path is None else functools.partial(teacher_checkpoints, t_path))
        members[i] = Member(student, objective, r.cfg.optim, r.cfg.schedule, RunCheckpoints(r.run_dir),
                            {"kind": "student", "config": r.plain, "data_fingerprint": fingerprint(data)},
                            _desc(r.cfg), list(hooks),
                            rng=None if alone else RandomState())

    todo = each(todo, build)
    with contextlib.ExitStack() as locks:
        def claim(i: int) -> None:
            r = runs[i]
            locks.enter_context(exclusive(r.run_dir))
            done = distributed.on_main(lambda: check_and_init(r.run_dir, r.plain, resume))
            if done is not None:  # another process finished it meanwhile
                results[i] = RunResult(r.run_dir, done, reused=True)
            elif distributed.env().main:
                RunFolder(r.run_dir).error_file.unlink(missing_ok=True)

        # in one order of folders for every process: two groups waiting on each other's folders cannot deadlock
        claimed = each(sorted(todo, key=lambda i: str(runs[i].run_dir.resolve())), claim)
        todo = [i for i in todo if i in claimed and results[i] is None]
        if not todo:
            return results
        shared = None
        if teacher is not None and len(todo) > 1:
            shared = SharedTeacher(teacher, features=any(_distills_features(members[i].objective) for i in todo))
            for i in todo:
                shared.attach(members[i].objective)
        fit_group([members[i] for i in todo], data, train=first.train, seed=first.seed, resume=resume,
                  shared=shared)
        teacher_test = None
        for i in todo:
            m, r = members[i], runs[i]
            if m.error is not None:
                results[i] = _failed(r, m.error, alone)
                continue
            if not distributed.env().main:
                results[i] = RunResult(r.run_dir, {})
                continue
            t = teacher if r.wants_teacher else None
            if t is not None and teacher_test is None:
                teacher_test = teacher_predictions(t, data, device, first.train.eval_batch_size,
                                                   first.train.num_workers)
            try:
                results[i] = _write_summary(r, m, data, device, t, teacher_path,
                                            teacher_test if t is not None else None, len(todo))
            except RunFolderError as e:  # one member's damaged checkpoint fails that member alone
                results[i] = _failed(r, e, alone)
    return results


def _desc(cfg: DistillRunConfig) -> str:
    return f"student {cfg.student.name}/{cfg.method.name} s{cfg.seed}"


def _distills_features(objective: torch.nn.Module) -> bool:
    return any(bool(getattr(m, "needs_features", False)) for m in objective.modules())


def _failed(r: StudentRun, error: BaseException, alone: bool) -> BaseException:
    if alone:
        raise error
    if distributed.env().main:
        atomic_write_text(RunFolder(r.run_dir).error_file,  # a member's failure, removed when it starts again
                           f"{type(error).__name__}: {error}\n")
    return error


def _write_summary(r: StudentRun, m: Member, data: DataBundle, device: torch.device, teacher, teacher_path,
                   teacher_test, group_size: int) -> RunResult:
    # train_time is the member's share of its group's time: how many shared it says how to read it
    summary, logits = run_summary("student", r.cfg, m.model, m.result, data, device, teacher, teacher_test,
                                  model=r.cfg.student.name, method=r.cfg.method.name, group_size=group_size,
                                  teacher_path=str(teacher_path) if teacher is not None else None)
    save_predictions(r.run_dir, logits, data)
    RunFolder(r.run_dir).write_summary(summary)
    vouch(r.run_dir, r.plain)
    return RunResult(r.run_dir, summary)
