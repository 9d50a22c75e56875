"""Start-up time of the command line: median of 5 runs of each command, for this tree and optionally another.

    python benchmarks/cli_startup.py [--against PATH_TO_OTHER_CHECKOUT]

(e.g. ``git worktree add /tmp/before <commit>`` for the other checkout).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = [["--help"], ["train-teacher", "--help"], ["list"], ["list", "distill-methods"]]


def median_seconds(cmd: list[str], env: dict[str, str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, cwd="/", capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(root: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    cells = [f"{median_seconds([sys.executable, '-m', 'kdlab', *c], env):.3f}" for c in COMMANDS]
    return cells + [f"{median_seconds([sys.executable, '-c', 'import kdlab'], env):.3f}"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", type=Path)
    a = ap.parse_args()
    heads = [" ".join(["kdlab", *c]) for c in COMMANDS] + ["import kdlab"]
    print("| tree | " + " | ".join(heads) + " |")
    print("|---" * (len(heads) + 1) + "|")
    trees = ([("other", a.against)] if a.against else []) + [("this", Path(__file__).resolve().parents[1])]
    for name, root in trees:
        print(f"| {name} | " + " | ".join(f"{s} s" for s in row(root)) + " |")


if __name__ == "__main__":
    main()
