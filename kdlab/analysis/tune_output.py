"""What a search writes into its folder: ``trials.csv`` (one row per trial), ``search.png`` (the metric of each
trial and the best so far) and ``best.yaml`` (the base run config with the best trial's values)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kdlab.analysis.tune_storage import CONTINUES, RUN_DIR, continued_numbers
from kdlab.config import dump_yaml
from kdlab.core.checkpoint import atomic_write_text
from kdlab.core.text import to_csv

TRIALS_CSV, SEARCH_PNG, BEST_YAML = "trials.csv", "search.png", "best.yaml"
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def trial_rows(trials, search_keys: list[str], out_dir: Path) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, the epochs it reported, each searched key, seconds, its run folder
    (relative to ``out_dir``) and a note (a continued trial, an error)."""
    continued = continued_numbers(trials)
    rows = []
    for t in trials:
        state = STATES.get(t.state.name, t.state.name.lower())
        note = t.user_attrs.get("kdlab_error", "")
        if t.number in continued:
            state, note = "interrupted", "continued by trial " + str(
                next(u.number for u in trials if u.user_attrs.get(CONTINUES) == t.number))
        elif CONTINUES in t.user_attrs:
            note = f"continues trial {t.user_attrs[CONTINUES]}" + (f"; {note}" if note else "")
        value = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.state.name == "PRUNED" and t.intermediate_values
            else None)
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete is not None and t.datetime_start is not None else None
        run_dir = t.user_attrs.get(RUN_DIR, "")
        rows.append({"trial": t.number, "state": state, "value": value, "epochs": len(t.intermediate_values),
                     **{k: t.params.get(k, "") for k in search_keys},
                     "seconds": None if seconds is None else round(seconds, 3),
                     "run_dir": _relative(run_dir, out_dir), "note": note})
    return rows


def _relative(path: str, root: Path) -> str:
    if not path:
        return ""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


def write_trials_csv(rows: list[dict[str, Any]], search_keys: list[str], out_dir: Path) -> Path:
    path = out_dir / TRIALS_CSV
    columns = ["trial", "state", "value", "epochs", *search_keys, "seconds", "run_dir", "note"]
    atomic_write_text(path, to_csv(rows, columns))
    return path


def write_best_yaml(config: dict[str, Any], header: str, out_dir: Path) -> Path:
    path = out_dir / BEST_YAML
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write_text(path, comment + dump_yaml(config))
    return path


def plot_search(rows: list[dict[str, Any]], metric: str, direction: str, title: str, out_dir: Path) -> Path:
    """The value of each complete trial (dots), the last reported value of each pruned one (crosses) and the
    best value so far (a step line), against the trial number."""
    from kdlab.analysis import plotting

    fig, axes = plotting.new_figure(1, 1, width=6.4, height=3.6)
    ax = axes[0][0]
    done = [(r["trial"], r["value"]) for r in rows if r["state"] == "complete" and _finite(r["value"])]
    pruned = [(r["trial"], r["value"]) for r in rows if r["state"] == "pruned" and _finite(r["value"])]
    if done:
        ax.scatter(*zip(*done), color=plotting.colour(0), s=22, zorder=3, label="complete")
    if pruned:
        ax.scatter(*zip(*pruned), color=plotting.colour(1), marker="x", s=26, zorder=3,
                   label="pruned (at its last epoch)")
    if done:
        best, xs, ys = None, [], []
        for n, v in sorted(done):
            if best is None or (v > best if direction == "maximize" else v < best):
                best = v
            xs.append(n)
            ys.append(best)
        ax.step(xs, ys, where="post", color=plotting.colour(2), linewidth=1.4, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    plotting.integer_x(ax)
    plotting.title(ax, title)
    ax.grid(alpha=0.3)
    plotting.legend(ax)
    return plotting.save(fig, out_dir / SEARCH_PNG)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)
