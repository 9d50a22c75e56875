"""Whether a study's runs had converged: runs whose training loss still fell markedly over their last epochs are
counted, so that a reader of the tables knows they describe short runs (a smoke test), not converged results.

A run is *still improving* when its training loss fell by more than :data:`THRESHOLD` (relative) over the last
quarter of its epochs (at least :data:`MIN_WINDOW` epochs; runs shorter than that are not judged).  The loss is
the epoch's mean training loss of ``metrics.jsonl``, the objective the run minimised.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

THRESHOLD = 0.05  # relative fall of the training loss over the window that counts as still improving
MIN_WINDOW = 2  # epochs


def losses(run_dir: Path) -> list[float]:
    """The run's mean training loss per epoch (empty when its log is missing or unreadable)."""
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "epoch" in rec and isinstance(rec.get("loss"), int | float):
            out.append(float(rec["loss"]))
    return out


def still_improving(loss: list[float]) -> float | None:
    """The relative fall of the training loss over the last quarter of the epochs when it exceeds
    :data:`THRESHOLD` (None: it does not, or the run is too short to judge)."""
    window = max(MIN_WINDOW, len(loss) // 4)
    if len(loss) <= window:
        return None
    before, last = loss[-1 - window], loss[-1]
    if before <= 0:
        return None
    fall = (before - last) / before
    return fall if fall > THRESHOLD else None


def convergence_note(run_dirs: Iterable[Path]) -> str | None:
    """One line for the tables when some finished runs were still improving, else None."""
    judged, improving = 0, []
    for d in run_dirs:
        loss = losses(d)
        if len(loss) <= MIN_WINDOW:
            continue
        judged += 1
        fall = still_improving(loss)
        if fall is not None:
            improving.append(fall)
    if not improving:
        return None
    return (f"Not converged: {len(improving)} of {judged} runs still lowered their training loss by more than "
            f"{THRESHOLD:.0%} over their last quarter of epochs (up to {max(improving):.0%}); the tables describe "
            "short runs, not converged results.")
