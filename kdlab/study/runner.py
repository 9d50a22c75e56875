"""The checks before a study trains anything: every run's config validates and its pair-dependent teacher
builds, no planned folder holds a run with other settings, and the study folder is this study's."""

from __future__ import annotations

from pathlib import Path

import yaml

from kdlab.config import load_config
from kdlab.core.errors import ConfigError
from kdlab.runs.folder import RunFolder
from kdlab.study.plan import PlannedRun


def check_buildable(plan: list[PlannedRun]) -> None:
    """Validate every run's config, and build the teachers whose method depends on the pair (SFTN's student
    branches), before anything trains: a run that cannot start is a config error now, not after every other run
    of the study has trained."""
    from kdlab.config.schema import DistillRunConfig, TeacherRunConfig
    from kdlab.data import load_dataset
    from kdlab.methods import build_teacher_objective
    from kdlab.models import build_model

    for run in plan:  # every run's own config validates (its schema's cross-field checks included)
        load_config(TeacherRunConfig if run.kind == "teacher" else DistillRunConfig, run.config)
    seen = set()
    for run in plan:
        method = run.config.get("method") or {}
        if run.kind != "teacher" or method.get("name") != "sftn" or method.get("pretrained"):
            continue
        key = repr((run.config["model"], method, run.config["data"]))
        if key in seen or RunFolder(run.run_dir).is_finished():
            continue
        seen.add(key)
        cfg = load_config(TeacherRunConfig, run.config)
        data = load_dataset(cfg.data, cfg.holdout, cfg.seed)
        model = build_model(cfg.model.name, cfg.model.params, data.num_classes, data.input_shape)
        try:
            build_teacher_objective(cfg.method, model, data, None, cfg.train.epochs)
        except ConfigError as e:
            raise ConfigError(f"teacher {run.teacher_label} of pair {run.pair or run.arch}: {e}") from None


def check_same_study(out: Path, name: str) -> None:
    """One study's files (study.yaml, results, report) per folder: a second study there would overwrite them.
    The same study again (more seeds, other methods) is its continuation; studies share runs through runs_dir."""
    path = out / "study.yaml"
    if not path.is_file():
        return
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        old = {}  # a damaged study.yaml is rewritten: it is a copy of the config, not a result
    other = old.get("name") if isinstance(old, dict) else None
    if other is not None and other != name:
        raise ConfigError(f"{out} holds the study {other!r}, this is {name!r}: its study.yaml, results and report "
                          "would be overwritten; choose another out_dir (runs_dir: <folder> shares runs between "
                          "studies)")


def changed_runs(plan: list[PlannedRun]) -> list[str]:
    """Planned runs whose folder already holds a run with other settings, each as 'folder (first difference)'."""
    from kdlab.config.schema import DistillRunConfig, TeacherRunConfig
    from kdlab.core.errors import RunFolderError
    from kdlab.runs.folder import settings_differences

    out = []
    for run in plan:
        if not RunFolder(run.run_dir).has_run():
            continue
        schema = TeacherRunConfig if run.kind == "teacher" else DistillRunConfig
        try:
            diff = settings_differences(run.run_dir, load_config(schema, run.config).model_dump(mode="json"))
        except RunFolderError:
            continue  # the run itself reports an unreadable folder
        if diff:
            out.append(f"{run.run_dir} ({diff[0]})")
    return out
