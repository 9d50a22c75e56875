"""``--print-config`` and ``--dry-run`` of train-teacher, distill, study and eval: a run's resolved config, and what
the command would do with it, without training or writing anything.

``--print-config`` prints the config the run would save (``config.yaml`` / ``study.yaml``: every default filled in,
``{seed}`` and the default ``out_dir`` resolved, a distillation protocol applied) as YAML.  ``--dry-run`` prints the
same and, as YAML comments (the output stays a valid config), what the command would do: train a new run, resume an
unfinished one or reuse a finished one, per run of a study; a run folder the command would refuse, a missing teacher
checkpoint or a study run trained with other settings is the command's own error.  The data set is not loaded
(some would be downloaded or generated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlab.config import dump_yaml
from kdlab.runs.folder import RunFolder


def run_state(run_dir: Path, plain: dict[str, Any] | None = None) -> str:
    """What running would do with the folder; with the run's resolved config, a finished run is checked as
    reuse checks it (:mod:`kdlab.runs.reuse`)."""
    if RunFolder(run_dir).is_finished():
        if plain is None:
            return "finished: reused"
        from kdlab.core.errors import RunFolderError
        from kdlab.runs.reuse import check_run_dir

        try:
            done = check_run_dir(run_dir, plain, resume=True)
        except RunFolderError as e:
            return f"finished: refused: {e}"
        return "finished: reused" if done is not None else "finished: results recomputed from its final checkpoint"
    if RunFolder(run_dir).has_run():
        return "unfinished: resumed"
    return "new: trained"


def single_run_notes(kind: str, run_dir: Path, plain: dict[str, Any], resume: bool, overwrite: bool,
            extra: list[str]) -> list[str]:
    from kdlab.runs.reuse import check_run_dir

    if overwrite and run_dir.exists():
        action = f"delete the run in {run_dir} (--overwrite) and train a {kind} anew"
    else:
        done = check_run_dir(run_dir, plain, resume)  # the command's own refusal, before anything is written
        if done is not None:
            action = f"reuse the finished {kind} in {run_dir}"
        elif RunFolder(run_dir).is_finished():
            action = f"recompute the results of the finished {kind} in {run_dir} from its final checkpoint"
        elif RunFolder(run_dir).has_run():
            action = f"resume the unfinished {kind} in {run_dir}"
        else:
            action = f"train a new {kind} in {run_dir}"
    return [f"dry run: would {action}", *extra]


def check_device(train) -> None:
    from kdlab.core.device import resolve_device
    from kdlab.engine.trainer import check_precision

    check_precision(resolve_device(train.device), train.precision)


def config_text(plain: dict[str, Any], notes: list[str] | None) -> str:
    body = dump_yaml(plain).rstrip()
    return body if notes is None else body + "\n" + "\n".join(f"# {n}" for n in notes)


def teacher(config: Any, overrides: list[str] = (), dry_run: bool = False, resume: bool = False,
            overwrite: bool = False) -> str:
    from kdlab.runs.resolve import resolve_teacher_run

    run = resolve_teacher_run(config, overrides)  # as train_teacher resolves it
    if not dry_run:
        return config_text(run.plain, None)
    check_device(run.cfg.train)
    return config_text(run.plain, single_run_notes("teacher", run.run_dir, run.plain, resume, overwrite, []))


def student(config: Any, overrides: list[str] = (), dry_run: bool = False, resume: bool = False,
            overwrite: bool = False) -> str:
    from kdlab.core.errors import CheckpointError
    from kdlab.models.hub import is_hub_location
    from kdlab.runs.resolve import resolve_checkpoint, resolve_student_run

    run = resolve_student_run(config, overrides)
    if not dry_run:
        return config_text(run.plain, None)
    check_device(run.cfg.train)
    extra = []
    ref = run.cfg.teacher
    if run.wants_teacher:
        if ref.path is not None:
            extra.append(f"teacher checkpoint: {resolve_checkpoint(ref)}")
        elif ref.library():
            extra.append(f"teacher: {ref.model.name} with the library's weights (pretrained: "
                         f"{ref.model.get('pretrained')}; a dry run fetches nothing)")
        elif is_hub_location(ref.weights):
            extra.append(f"teacher weights: {ref.weights} (the Hugging Face cache; a dry run fetches nothing)")
        elif not Path(ref.weights).is_file():
            raise CheckpointError(f"teacher.weights: file {ref.weights} not found")
        else:
            extra.append(f"teacher weights: {ref.weights} (format: {ref.weights_format})")
    return config_text(run.plain, single_run_notes("student", run.run_dir, run.plain, resume, overwrite, extra))


def evaluation(source: Any, overrides: list[str] = (), dry_run: bool = False) -> str:
    from kdlab.config import EvalConfig, load_config
    from kdlab.runs.resolve import resolve_checkpoint

    cfg = load_config(EvalConfig, source, overrides)
    plain = cfg.model_dump(mode="json")
    if not dry_run:
        return config_text(plain, None)
    notes = [f"dry run: would evaluate {resolve_checkpoint(cfg.path, cfg.checkpoint)}"]
    if cfg.teacher is not None and cfg.teacher.path is not None:
        notes.append(f"teacher checkpoint: {resolve_checkpoint(cfg.teacher)}")
    return config_text(plain, notes)
