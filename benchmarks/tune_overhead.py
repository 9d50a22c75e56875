"""kdlab tune's overhead: a trial's time inside the search against the same run trained on its own.

Inside the search, a trial's time is the interval between the starts of two consecutive trials' runs: the run
itself plus what the search adds per trial (taking the trial under the search's lock, the recovery check, drawing
its values, the per-epoch reports to Optuna, telling the result, rewriting trials.csv; the journal storage fsyncs
each write).  Outside, the same config (the values the search draws are all the same learning rate) is trained by
``kdlab.runs.teacher.train_teacher`` into a fresh folder.  Searches and single runs alternate, so machine noise hits
both alike; the ratio of medians is printed, then what the search adds around each trial's run (its cycle minus
the run: no training in it, so little noise) and the search's one-off costs (checking the config, opening the
storage, the final trials.csv / best.yaml / search.png).

    OMP_NUM_THREADS=1 python benchmarks/tune_overhead.py [--repeats 3] [--trials 4] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdlab.analysis.tune import tune
from kdlab.runs.teacher import train_teacher

LR = 0.05


def base(quick: bool) -> dict:
    n = 256 if quick else 1024
    return {"seed": 0, "data": {"name": "mixed-feature", "num_train": n, "num_test": n // 2, "val_fraction": 0.1},
            "model": "resnet8", "optim": {"lr": LR}, "schedule": {"name": "constant"},
            "train": {"epochs": 2, "batch_size": 64, "progress": "off", "tensorboard": False, "device": "cpu"}}


def single(cfg: dict, out: Path) -> float:
    t0 = time.perf_counter()
    train_teacher({**cfg, "out_dir": str(out)})
    return time.perf_counter() - t0


def search(cfg: dict, out: Path, trials: int) -> tuple[list[float], list[float], float]:
    """Seconds per trial (start of one run to the start of the next), seconds of each of those trials' runs, and
    the search's one-off seconds."""
    starts, runs = [], []

    def run(mapping, overrides, resume, hooks):
        assert mapping["optim"]["lr"] == LR
        starts.append(time.perf_counter())
        res = train_teacher(mapping, overrides, resume=resume, hooks=hooks)
        runs.append(time.perf_counter() - starts[-1])
        return res

    t0 = time.perf_counter()
    # two choices of the same value: every trial trains exactly the single run's config
    tune({"base": cfg, "search": {"optim.lr": {"choice": [LR, str(LR)]}}, "trials": trials + 1,
          "pruner": "none", "out_dir": str(out)}, run=_as_float(run))
    end = time.perf_counter()
    cycles = [b - a for a, b in zip(starts, starts[1:])]
    # one-off: before the first trial's run (checks, storage, the first trial taken) and after the last one's
    # (its result told, the final trials.csv, best.yaml and search.png)
    return cycles, runs[:len(cycles)], (starts[0] - t0) + (end - starts[-1] - runs[-1])


def _as_float(run):
    """The string choice "0.05" is the same learning rate: the config takes it as the float."""
    def wrapped(mapping, overrides, resume, hooks):
        mapping["optim"]["lr"] = float(mapping["optim"]["lr"])
        return run(mapping, overrides, resume, hooks)

    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="searches (and as many rounds of single runs)")
    ap.add_argument("--trials", type=int, default=4, help="trials timed per search")
    ap.add_argument("--quick", action="store_true", help="a smaller data set (a smoke test of the benchmark)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("kdlab").setLevel(logging.WARNING)
    cfg = base(a.quick)
    inside, inside_runs, outside, one_off = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        single(cfg, root / "warm-up")  # data set, allocator, kernels
        search(cfg, root / "warm-up-search", 1)  # the search's lazy imports (Optuna's sampler, matplotlib)
        for r in range(a.repeats):
            for i in range(a.trials):
                outside.append(single(cfg, root / f"single-{r}-{i}"))
            cycles, runs, fixed = search(cfg, root / f"search-{r}", a.trials)
            inside.extend(cycles)
            inside_runs.extend(runs)
            one_off.append(fixed)
    m_in, m_out = statistics.median(inside), statistics.median(outside)
    print(f"runs: {len(outside)} single, {len(inside)} trials in {a.repeats} searches; torch threads "
          f"{torch.get_num_threads()}")
    print(f"single run     median {m_out:.3f} s  (min {min(outside):.3f}, max {max(outside):.3f})")
    print(f"trial (search) median {m_in:.3f} s  (min {min(inside):.3f}, max {max(inside):.3f})")
    print(f"ratio trial / single run: {m_in / m_out:.3f}  (overhead {100 * (m_in / m_out - 1):+.1f} %)")
    # noise-free parts: what the search adds around a trial's run, and the run's time inside against outside
    book = statistics.median(c - r for c, r in zip(inside, inside_runs))
    print(f"search bookkeeping per trial (trial minus its run): median {1000 * book:.0f} ms "
          f"({100 * book / m_out:.1f} % of a single run)")
    print(f"a trial's run (epoch hook included) / single run: {statistics.median(inside_runs) / m_out:.3f}")
    print(f"one-off per search (config check, storage, first trial taken; last result told, final outputs and "
          f"plot): median "
          f"{statistics.median(one_off):.2f} s")


if __name__ == "__main__":
    main()
