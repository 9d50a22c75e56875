"""N students of one teacher: N separate runs against one group of N (one teacher pass per batch).

For each pair (wrn_40_2 -> wrn_16_2, resnet32x4 -> ShuffleV2; 3x32x32 CIFAR-100 files in their on-disk format,
random crops and flips) and each N (4 and 12 of SFTN Table 1's methods), trains the methods one run after another
and then as one group (``kdlab.runs.distill_group``), in one process, alternating over ``--trials``, and prints:

* ``loop``: the training loop's time (the epochs' ``train_time``: what a 240-epoch run is made of) and the ratio
  group / separate;
* ``run``: the whole runs' wall time (data and teacher loading, the methods' initialisation stages, evaluation,
  summaries) and its ratio;
* the limit its own step times allow, ``(T + sum S_i) / sum (T + S_i)``: T the teacher's forward over a batch
  (with the features the group needs, timed inside the group's steps), T + S_i method i's step in its separate
  run; and the gap to it.  Per member, the step times alone and in the group show where a gap comes from.

Each member's weights are checked bit-identical to its separate run.  Initialisation stages are shortened to one
epoch (AB, FT, SSKD's head; they run the teacher on their own, in both arms).

    python benchmarks/group_distill.py [--trials 1] [--images 512] [--batch 64] [--pair T-S] [--n 4|12] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from image_data_files import make_cifar100  # noqa: E402
from kdlab.methods import shares_batch_pass
from kdlab.runs.student import distill, distill_group
from kdlab.runs.teacher import train_teacher

SFTN_TABLE1 = ("kd", "fitnet", "at", "sp", "vid", "rkd", "pkt", "ab", "ft", "crd", "sskd", "ofd")
FOUR = ("kd", "fitnet", "at", "crd")
PARAMS = {"ab": {"init_epochs": 1}, "ft": {"init_epochs": 1}, "sskd": {"ss_epochs": 1}}
PAIRS = (("wrn_40_2", "wrn_16_2"), ("resnet32x4", "ShuffleV2"))


def _train(args, epochs: int) -> dict:
    return {"epochs": epochs, "batch_size": args.batch, "eval_batch_size": 256, "num_workers": 0, "progress": "off",
            "tensorboard": False}


def _student(root: Path, folder: str, teacher: str, student: str, method: str, args) -> dict:
    return {"seed": 0, "out_dir": str(root / folder), "data": {"name": "cifar100", "root": str(root / "data")},
            "teacher": {"path": str(root / f"teacher-{teacher}")}, "student": student,
            "method": {"name": method, **PARAMS.get(method, {}), **({"nce_k": args.images // 2} if method == "crd"
                                                                    else {})}, "optim": {"lr": 0.05},
            "schedule": {"milestones": []}, "train": _train(args, args.epochs)}


def _loop_time(run_dir: Path) -> float:
    return sum(json.loads(line)["train_time"] for line in (run_dir / "metrics.jsonl").read_text().splitlines())


class SharedPassTimes:
    """Wall time of each shared teacher pass of the groups (T, measured where it runs: inside the group's step)."""

    def __init__(self):
        import kdlab.student_runs as student_runs
        from kdlab.methods.base import SharedTeacher

        self.module, self.original, self.seconds = student_runs, student_runs.SharedTeacher, []
        timings = self.seconds

        class Timed(SharedTeacher):
            def __call__(self, x, features):
                before, t = self.passes, time.perf_counter()
                out = super().__call__(x, features)
                if self.passes > before:
                    timings.append(time.perf_counter() - t)
                return out

        student_runs.SharedTeacher = Timed

    def close(self):
        self.module.SharedTeacher = self.original


def _same_weights(a: Path, b: Path) -> bool:
    x, y = (torch.load(p / "checkpoints" / "last.pt", weights_only=False)["model_state"] for p in (a, b))
    return all(torch.equal(x[k], y[k]) for k in x)


class StepTimes:
    """Wall time of each member's steps (the trainer's per-member step), by run folder: the profile of the gap."""

    def __init__(self):
        from kdlab.engine import trainer

        self.trainer, self.original, self.seconds = trainer, trainer._Run.step, {}

        def timed(run, *a, **kw):
            t = time.perf_counter()
            try:
                return self.original(run, *a, **kw)
            finally:
                key = str(run.member.run_dir)
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t

        trainer._Run.step = timed

    def close(self):
        self.trainer._Run.step = self.original


def measure(root: Path, teacher: str, student: str, methods: tuple[str, ...], args, trial: int) -> dict:
    steps = -(-args.images // args.batch) * args.epochs
    tag = f"{teacher}-{student}-{len(methods)}-t{trial}"

    def separate() -> float:
        t = time.perf_counter()
        for m in methods:
            distill(_student(root, f"sep-{tag}/{m}", teacher, student, m, args))
        return time.perf_counter() - t

    def group() -> float:
        t = time.perf_counter()
        results = distill_group([_student(root, f"grp-{tag}/{m}", teacher, student, m, args) for m in methods])
        bad = [r for r in results if isinstance(r, BaseException)]
        if bad:
            raise bad[0]
        return time.perf_counter() - t

    # alternate which arm goes first, so a drift of the machine's speed hits both alike
    first, second = (separate, group) if trial % 2 == 0 else (group, separate)
    steps_timer, pass_timer = StepTimes(), SharedPassTimes()
    try:
        walls = {first.__name__: first(), second.__name__: second()}
    finally:
        steps_timer.close()
        pass_timer.close()
    member = {m: (steps_timer.seconds[str(root / f"sep-{tag}" / m)], steps_timer.seconds[str(root / f"grp-{tag}" / m)])
              for m in methods}
    sep_loop = {m: _loop_time(root / f"sep-{tag}" / m) for m in methods}
    grp_loop = sum(_loop_time(root / f"grp-{tag}" / m) for m in methods)  # the members' shares add up
    identical = all(_same_weights(root / f"sep-{tag}" / m, root / f"grp-{tag}" / m) for m in methods)
    return {"sep_wall": walls["separate"], "grp_wall": walls["group"], "sep_loop": sep_loop, "grp_loop": grp_loop,
            "steps": steps, "identical": identical, "member": member, "passes": pass_timer.seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--images", type=int, default=512, help="training images (CIFAR-100 files, random pixels)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--pair", choices=[f"{t}-{s}" for t, s in PAIRS], help="one pair only")
    p.add_argument("--n", type=int, choices=[4, 12], help="one group size only")
    p.add_argument("--quick", action="store_true", help="the smaller pair and N = 4 only (a smoke run)")
    args = p.parse_args(argv)
    pairs = PAIRS[:1] if args.quick else [ts for ts in PAIRS if args.pair in (None, "-".join(ts))]
    sizes = (FOUR,) if args.quick else [m for m in (FOUR, SFTN_TABLE1) if args.n in (None, len(m))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.images} images 3x32x32, batch "
          f"{args.batch}, {args.epochs} epoch(s), {args.trials} trial(s)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_cifar100(root / "data", n_train=args.images, n_test=256)
        for teacher, student in pairs:
            train_teacher({"seed": 0, "out_dir": str(root / f"teacher-{teacher}"), "model": teacher,
                           "data": {"name": "cifar100", "root": str(root / "data")}, "optim": {"lr": 0.05},
                           "train": _train(args, 1)})
            for methods in sizes:
                rs = [measure(root, teacher, student, methods, args, k) for k in range(args.trials)]
                report(teacher, student, methods, rs)
    return 0


def report(teacher: str, student: str, methods: tuple[str, ...], rs: list[dict]) -> None:
    n, steps = len(methods), rs[0]["steps"]
    t_fwd = statistics.median(t for r in rs for t in r["passes"])
    sep_loop = statistics.median(sum(r["sep_loop"].values()) for r in rs)
    grp_loop = statistics.median(r["grp_loop"] for r in rs)
    sep_wall = statistics.median(r["sep_wall"] for r in rs)
    grp_wall = statistics.median(r["grp_wall"] for r in rs)
    step = {m: statistics.median(r["sep_loop"][m] for r in rs) / steps for m in methods}  # T + S_i
    # the limit (T + N S) / (N (T + S)), with each method's own step; a method that makes every teacher
    # pass itself (SSKD, RCO: shares_batch_pass False) saves nothing, so the attainable limit keeps its T
    limit = (t_fwd + sum(s - t_fwd for s in step.values())) / sum(step.values())
    own = [m for m in methods if not shares_batch_pass(m)]
    attainable = limit + len(own) * t_fwd / sum(step.values())
    ratio = grp_loop / sep_loop
    print(f"\n{teacher} -> {student}, N = {n} ({', '.join(methods)})")
    print(f"  shared teacher pass T = {1000 * t_fwd:.1f} ms/batch; step T + S_i = "
          + ", ".join(f"{m} {1000 * s:.0f}" for m, s in step.items()) + " ms")
    print(f"  loop: separate {sep_loop:7.1f}s  group {grp_loop:7.1f}s  ratio {ratio:.3f}  limit {limit:.3f}  "
          f"gap {100 * (ratio / limit - 1):+.1f}%")
    if own:
        print(f"        attainable with {', '.join(own)} making every teacher pass itself: {attainable:.3f}, gap "
              f"{100 * (ratio / attainable - 1):+.1f}%")
    print(f"  run:  separate {sep_wall:7.1f}s  group {grp_wall:7.1f}s  ratio {grp_wall / sep_wall:.3f}")
    print("  per member, ms per step alone / in the group (the first member's includes the shared pass): "
          + ", ".join(f"{m} {1000 * statistics.median(r['member'][m][0] for r in rs) / steps:.0f}/"
                      f"{1000 * statistics.median(r['member'][m][1] for r in rs) / steps:.0f}" for m in methods))
    print(f"  members bit-identical to their separate runs: {all(r['identical'] for r in rs)}")


if __name__ == "__main__":
    sys.exit(main())
