"""Runs a list of kdlab runs and saves every process's model and objective state after each epoch.

Under torchrun (``python -m torch.distributed.run --nproc_per_node=N tests/ddp_replicas.py PLAN DUMP``) each
process writes ``DUMP/<label>/rank<r>_epoch<e>.pt``; ``run_plan`` does the same in the calling process (rank
"one"), for the 1-process reference.  PLAN is a JSON list of ``{"label", "kind": "teacher" | "distill", "cfg"}``
and ``{"label", "kind": "group", "cfgs", "labels"}`` (students trained together in one group).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import kdlab.engine.trainer as trainer
import kdlab.runs.student as student_runs
import kdlab.runs.teacher as teacher_runs


def run_plan(plan: list[dict], dump: Path, rank: str) -> None:
    """``kind: group`` items train ``cfgs`` (labelled ``labels``) together as one group of students."""
    labels = {}
    for item in plan:
        for cfg, label in zip(item.get("cfgs", [item.get("cfg")]), item.get("labels", [item["label"]])):
            labels[str(Path(cfg["out_dir"]))] = label
    original = trainer.fit_group

    def saver(member):
        def save_state(epoch, rec):
            folder = dump / labels[str(member.run_dir)]
            folder.mkdir(parents=True, exist_ok=True)
            state = {"model": member.model.state_dict(), "objective": member.objective.state_dict()}
            torch.save(state, folder / f"rank{rank}_epoch{epoch}.pt")
        return save_state

    def fit_group(members, data, **kw):
        for m in members:
            m.hooks.append(saver(m))
        return original(members, data, **kw)

    trainer.fit_group = student_runs.fit_group = fit_group
    try:
        for item in plan:
            if item["kind"] == "group":
                results = student_runs.distill_group(item["cfgs"])
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    raise errors[0]
            else:
                (teacher_runs.train_teacher if item["kind"] == "teacher" else student_runs.distill)(item["cfg"])
    finally:
        trainer.fit_group = student_runs.fit_group = original


def main() -> None:
    torch.set_num_threads(1)
    plan = json.loads(Path(sys.argv[1]).read_text())
    run_plan(plan, Path(sys.argv[2]), os.environ.get("RANK", "0"))
    from kdlab.core import distributed

    distributed.shutdown()


if __name__ == "__main__":
    main()
