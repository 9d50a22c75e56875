"""Time ``kdlab quickstart`` from an empty folder: wall clock, CPU time of all its processes, peak memory.

    python benchmarks/quickstart_time.py [--lab] [--workers N] [--keep DIR] [-- key=value ...]

It runs the installed ``kdlab`` command in a new empty folder (removed afterwards unless ``--keep``), so nothing
is reused.  Peak memory is the largest sum of the resident memory of the command and its worker processes,
sampled every 0.1 s from /proc (Linux); the largest single process (getrusage) is printed too.  The last lines
of the command's output (the reading) are printed so that one run gives both the time and the numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        stack += _children(p)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, help="kdlab quickstart --workers (default: the command's own)")
    ap.add_argument("--lab", action="store_true", help="kdlab quickstart --lab (the mixed-feature lab)")
    ap.add_argument("--keep", type=Path, help="run in this (new, empty) folder and keep it")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the quickstart config")
    a = ap.parse_args()
    kdlab = shutil.which("kdlab") or sys.exit("benchmarks/quickstart_time.py: the kdlab command is not installed")
    folder = a.keep or Path(tempfile.mkdtemp(prefix="kdlab-quickstart-"))
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        sys.exit(f"benchmarks/quickstart_time.py: {folder} is not empty")
    cmd = [kdlab, "quickstart", *a.overrides] + (["--workers", str(a.workers)] if a.workers else []) + \
        (["--lab"] if a.lab else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    reading = [line for line in out.splitlines() if line.startswith("**Reading**")]
    print("\n".join(reading))
    print(f"command: {' '.join(cmd[1:])} (exit {proc.returncode}) in {folder}")
    print(f"wall {wall // 60:.0f} min {wall % 60:04.1f} s | CPU {cpu:.0f} s ({cpu / wall:.2f} cores) | peak memory "
          f"{peak[0] / 2**30:.2f} GiB (all processes), {after.ru_maxrss / 2**20:.2f} GiB (largest one) | "
          f"{os.cpu_count()} CPUs")
    if not a.keep:
        shutil.rmtree(folder, ignore_errors=True)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
