"""``kdlab study --print-config`` / ``--dry-run``: the study's resolved config and, per planned run, whether it
would be trained, resumed or reused (see :mod:`kdlab.runs.dry_run` for the single runs)."""

from __future__ import annotations

from typing import Any

from kdlab.runs.dry_run import config_text, run_state


def study(config: Any, overrides: list[str] = (), dry_run: bool = False) -> str:
    from kdlab.config import StudyConfig, load_config
    from kdlab.core.errors import ConfigError
    from kdlab.study import plan_study
    from kdlab.study.runner import changed_runs

    cfg = load_config(StudyConfig, config, overrides)
    plain = cfg.model_dump(mode="json")
    if not dry_run:
        return config_text(plain, None)
    plan = plan_study(cfg)
    changed = changed_runs(plan)
    if changed:  # as kdlab study refuses them
        raise ConfigError(f"{len(changed)} run(s) in {cfg.out_dir} were trained with other settings, e.g. "
                          f"{changed[0]}; choose another out_dir, or move those runs away to train them anew")
    states = [run_state(r.run_dir, _resolved(r)) for r in plan]
    kinds = [s.split(":")[0] for s in states]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
    notes = [f"dry run: {len(plan)} runs ({counts}); results in {cfg.out_dir}"]
    notes += [f"  {r.kind:<9} {r.run_dir}  ({s})" for r, s in zip(plan, states)]
    return config_text(plain, notes)


def _resolved(run) -> dict[str, Any]:
    from kdlab.config import DistillRunConfig, TeacherRunConfig, load_config

    schema = TeacherRunConfig if run.kind == "teacher" else DistillRunConfig
    return load_config(schema, run.config).model_dump(mode="json")
