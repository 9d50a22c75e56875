"""One process against ``torchrun --nproc_per_node=2`` (gloo, CPU) with the same global batch.

For each case, train the same config both ways and print the largest weight difference, the final training loss
and the test top-1 of each.  Without batch norm the two differ only by the order of float sums; with batch norm
each process normalises with its own half-batch statistics, unless ``train.sync_bn`` makes every BN layer use the
global batch's (kdlab's own synchronised batch norm on gloo; nn.SyncBatchNorm on CUDA).

    python benchmarks/ddp_equivalence.py [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from kdlab.core.checkpoint import load_checkpoint
from kdlab.runs.folder import RunFolder
from kdlab.runs.teacher import train_teacher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cfg: dict, command: str, nproc: int, cwd: Path) -> None:
    f = cwd / f"{Path(cfg['out_dir']).name}.yaml"
    f.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "kdlab", command, str(f)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "kdlab", command, str(f)]
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True, text=True)


def _base(out: Path, epochs: int) -> dict:
    return {"seed": 0, "out_dir": str(out), "data": {"name": "digits", "augment": "shift"},
            "optim": {"lr": 0.05}, "schedule": {"milestones": [max(1, epochs - 1)]},
            "train": {"epochs": epochs, "batch_size": 64, "progress": "off", "drop_last": True}}


def _cases(root: Path, epochs: int):
    mlp = {"name": "mlp", "hidden": [64, 32], "batch_norm": False}
    yield "standard teacher, mlp", "train-teacher", lambda o: {**_base(o, epochs), "model": mlp, "method": "standard"}
    yield "soteacher teacher, mlp", "train-teacher", lambda o: {**_base(o, epochs), "model": mlp,
                                                                "method": "soteacher"}
    yield ("standard teacher, mlp with batch norm", "train-teacher",
           lambda o: {**_base(o, epochs), "model": {**mlp, "batch_norm": True}, "method": "standard"})

    def synced(o):
        cfg = _base(o, epochs)
        return {**cfg, "model": {**mlp, "batch_norm": True}, "method": "standard",
                "train": {**cfg["train"], "sync_bn": True}}

    yield "standard teacher, mlp with batch norm, sync_bn", "train-teacher", synced
    teacher = root / "kd-teacher"
    train_teacher({**_base(teacher, epochs), "model": mlp, "method": "standard"})
    student = {"name": "mlp", "hidden": [32], "batch_norm": False}
    yield "kd student, mlp -> mlp", "distill", lambda o: {**_base(o, epochs), "teacher": {"path": str(teacher)},
                                                          "student": student, "method": "kd"}


def _outcome(out: Path) -> tuple[dict, float, float]:
    state = load_checkpoint(out / "checkpoints" / "last.pt")["model_state"]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return state, last["loss"], json.loads(RunFolder(out).summary_file.read_text())["top1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"digits, global batch 64, {args.epochs} epochs, gloo on CPU\n")
    print("| case | max abs weight diff | loss 1 proc | loss 2 procs | top-1 1 proc | top-1 2 procs |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, (name, command, make) in enumerate(_cases(root, args.epochs)):
            results = []
            for nproc in (1, 2):
                out = root / f"case{i}-{nproc}"
                _run(make(out), command, nproc, root)
                results.append(_outcome(out))
            (wa, la, ta), (wb, lb, tb) = results
            diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if wa[k].is_floating_point())
            print(f"| {name} | {diff:.2e} | {la:.5f} | {lb:.5f} | {ta:.2f} | {tb:.2f} |", flush=True)


if __name__ == "__main__":
    main()
