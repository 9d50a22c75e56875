"""The checks before a study trains anything: every run's config validates and its pair-dependent teacher
builds, no planned folder holds a run with other settings, and the study folder is this study's; and
:func:`build_problems`, what would stop single runs (reported once per cause, the study trains the others)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Problem:
    """One cause that stops planned runs before they train (the error's first line) and the runs it stops."""

    message: str
    runs: tuple[Path, ...]

    def line(self) -> str:
        n = len(self.runs)
        return f"{self.message} ({n} run{'s' * (n != 1)}, e.g. {self.runs[0]})"


def build_problems(plan: list[PlannedRun]) -> list[Problem]:
    """Build every unfinished run's model and method against its data set's shapes and sizes, untrained (no
    teacher checkpoint is read), and return the errors that would stop them, once per cause with the runs it
    affects: a missing data folder, a model that does not fit the data's input, CRD's ``nce_k`` beyond the samples
    of other classes, ...  A data set configured with ``download: true`` is not loaded (it would be downloaded)."""
    from kdlab.config.schema import DistillRunConfig, TeacherRunConfig
    from kdlab.core.errors import KdlabError
    from kdlab.data import load_dataset
    from kdlab.methods import build_distill_objective, build_teacher_objective, needs_teacher
    from kdlab.models import build_model

    found: dict[str, list[Path]] = {}
    datasets: dict[str, Any] = {}
    by_dir = {r.run_dir: r for r in plan}

    def data_of(cfg) -> Any:
        key = repr((cfg.data.model_dump(mode="json"), cfg.holdout, cfg.seed))
        if key not in datasets:
            try:
                datasets[key] = load_dataset(cfg.data, cfg.holdout, cfg.seed)
            except KdlabError as e:
                datasets[key] = e
        if isinstance(datasets[key], KdlabError):
            raise datasets[key]
        return datasets[key]

    for run in plan:
        if RunFolder(run.run_dir).is_finished():
            continue
        teacher_run = run.kind == "teacher"
        cfg = load_config(TeacherRunConfig if teacher_run else DistillRunConfig, run.config)
        models = [cfg.model] if teacher_run else [cfg.student]
        if getattr(cfg.data, "download", False) or any(_fetches(m.params) for m in models):
            continue
        try:
            data = data_of(cfg)
            if teacher_run:
                model = build_model(cfg.model.name, cfg.model.params, data.num_classes, data.input_shape)
                if cfg.method.name != "sftn":  # check_buildable builds SFTN's branches and refuses the study
                    build_teacher_objective(cfg.method, model, data, None, cfg.train.epochs)
                continue
            student = build_model(cfg.student.name, cfg.student.params, data.num_classes, data.input_shape,
                                  key="student")
            teacher = None
            if needs_teacher(cfg.method.name):
                source = by_dir.get(run.needs[0]) if run.needs else None
                if source is None or source.kind != "teacher":
                    continue  # a teacher from outside the plan (or an assistant): its checkpoint is read in training
                t_cfg = load_config(TeacherRunConfig, source.config)
                if _fetches(t_cfg.model.params):
                    continue
                teacher = build_model(t_cfg.model.name, t_cfg.model.params, data.num_classes, data.input_shape)
            build_distill_objective(cfg.method, teacher, student, data, None, cfg.train.epochs)
        except KdlabError as e:
            found.setdefault(first_line(e), []).append(run.run_dir)
        except Exception:  # noqa: BLE001, S112 - not a user error the checks know: the run itself reports it
            continue
    return [Problem(m, tuple(runs)) for m, runs in found.items()]


def _fetches(params: dict[str, Any]) -> bool:
    """A model the checks leave to its run: built with released weights (downloaded, or read from a hub), or by
    the user's own code (``target``), which may crash or hold resources and runs in the run's worker only."""
    return any(params.get(k) for k in ("pretrained", "weights", "hub", "repo_id", "target"))


def first_line(error: BaseException | str) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
