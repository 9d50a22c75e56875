"""Runs a list of kdlab runs and saves every process's model and objective state after each epoch.

Under torchrun (``python -m torch.distributed.run --nproc_per_node=N tests/ddp_replicas.py PLAN DUMP``) each
process writes ``DUMP/<label>/rank<r>_epoch<e>.pt``; ``run_plan`` does the same in the calling process (rank
"one"), for the 1-process reference.  PLAN is a JSON list of ``{"label", "kind": "teacher" | "distill", "cfg"}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import kdlab.runs as runs


def run_plan(plan: list[dict], dump: Path, rank: str) -> None:
    original = runs.fit
    label = {}

    def fit(model, objective, data, **kw):
        def save_state(epoch, rec):
            folder = dump / label["name"]
            folder.mkdir(parents=True, exist_ok=True)
            state = {"model": model.state_dict(), "objective": objective.state_dict()}
            torch.save(state, folder / f"rank{rank}_epoch{epoch}.pt")

        kw["hooks"] = [*kw.get("hooks", ()), save_state]
        return original(model, objective, data, **kw)

    runs.fit = fit
    try:
        for item in plan:
            label["name"] = item["label"]
            (runs.train_teacher if item["kind"] == "teacher" else runs.distill)(item["cfg"])
    finally:
        runs.fit = original


def main() -> None:
    torch.set_num_threads(1)
    plan = json.loads(Path(sys.argv[1]).read_text())
    run_plan(plan, Path(sys.argv[2]), os.environ.get("RANK", "0"))
    from kdlab.engine import distributed

    distributed.shutdown()


if __name__ == "__main__":
    main()
