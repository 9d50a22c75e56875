"""``kdlab study --print-config`` / ``--dry-run``: the study's resolved config and, per planned run, whether it
would be trained, resumed or reused (see :mod:`kdlab.runs.dry_run` for the single runs).

The dry run also builds every unfinished run's model and method, untrained, against its data set (which it loads,
unless configured with ``download: true``) and lists what would stop runs, once per cause with the number of runs
it affects: a missing data folder, a model that does not fit the data's input, CRD's ``nce_k`` beyond the samples
of other classes, ...  ``kdlab study`` prints the same lines when it starts, trains the other runs and reports
those as failed."""

from __future__ import annotations

from typing import Any

from kdlab.runs.dry_run import config_text, run_state


def study(config: Any, overrides: list[str] = (), dry_run: bool = False) -> str:
    from kdlab.config import StudyConfig, load_config
    from kdlab.core.errors import ConfigError
    from kdlab.study import plan_study
    from kdlab.study.runner import build_problems, changed_runs, check_buildable

    cfg = load_config(StudyConfig, config, overrides)
    plain = cfg.model_dump(mode="json")
    if not dry_run:
        return config_text(plain, None)
    plan = plan_study(cfg)
    check_buildable(plan)  # as kdlab study refuses a run config that does not validate
    changed = changed_runs(plan)
    if changed:  # as kdlab study refuses them
        raise ConfigError(f"{len(changed)} run(s) in {cfg.out_dir} were trained with other settings, e.g. "
                          f"{changed[0]}; choose another out_dir, or move those runs away to train them anew")
    states = [run_state(r.run_dir, _resolved(r)) for r in plan]
    kinds = [s.split(":")[0] for s in states]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
    problems = build_problems(plan)
    notes = [f"dry run: {len(plan)} runs ({counts}); results in {cfg.out_dir}"]
    if problems:
        stopped = len({d for p in problems for d in p.runs})
        notes.append(f"{len(problems)} problem{'s' * (len(problems) != 1)} would stop {stopped} run"
                     f"{'s' * (stopped != 1)} (the others train):")
        notes += [f"  problem {i}: {p.line()}" for i, p in enumerate(problems, start=1)]
    stops = {d: i for i, p in enumerate(problems, start=1) for d in p.runs}
    notes += [f"  {r.kind:<9} {r.run_dir}  ({s}" + (f"; fails: problem {stops[r.run_dir]}" if r.run_dir in stops
                                                   else "") + ")" for r, s in zip(plan, states)]
    return config_text(plain, notes)


def _resolved(run) -> dict[str, Any]:
    from kdlab.config import DistillRunConfig, TeacherRunConfig, load_config

    schema = TeacherRunConfig if run.kind == "teacher" else DistillRunConfig
    return load_config(schema, run.config).model_dump(mode="json")
