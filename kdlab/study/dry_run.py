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
    states = [run_state(r.run_dir) for r in plan]
    counts = ", ".join(f"{states.count(s)} {s.split(':')[0]}" for s in dict.fromkeys(states))
    notes = [f"dry run: {len(plan)} runs ({counts}); results in {cfg.out_dir}"]
    notes += [f"  {r.kind:<9} {r.run_dir}  ({s})" for r, s in zip(plan, states)]
    return config_text(plain, notes)
