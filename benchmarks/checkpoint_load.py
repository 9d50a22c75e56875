"""Loading a teacher from a SoTeacher checkpoint: format 1 (whole file read, hashed, deserialised) against
format 2 (memory-mapped, the model's section and the metadata read and verified).

A SoTeacher teacher's checkpoint holds, beside the weights, SGD momentum (one tensor per parameter) and the
consistency buffer (num_train x num_classes floats, and a visit count per sample).  Each case writes such a
checkpoint in both formats (save time includes fsync), then loads the teacher in a fresh process (so that peak
memory is the load's own): old = format 1 and the previous ``load_model`` (the full checkpoint deserialised,
the state loaded into the model built on the CPU); new = format 2 and ``kdlab.runs.checkpoint_model`` (weights only);
full = format 2's full load, as resume does.  "cold" evicts the file from the page cache first
(posix_fadvise DONTNEED on that file only), "warm" loads it again right after.  Peak memory is the
process's peak resident set (VmHWM) above what it held before the load, model included.

    python benchmarks/checkpoint_load.py [--imagenet-scale 0.03] [--repeats 1] [--dir DIR]

``--imagenet-scale 1`` is the full 1.28M x 1000 buffer (5.1 GB per file; needs about 12 GB of memory for the old
loader); 0 skips that case.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _write_format_1(path: Path, payload: dict) -> None:
    """kdlab's writer before format 2: a JSON header line with the body's SHA-256, then the torch.save body."""
    from kdlab.core.checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    header = json.dumps({"format": "kdlab-checkpoint-1", "sha256": hashlib.sha256(body).hexdigest(),
                         "size": len(body)})
    atomic_write_bytes(path, header.encode() + b"\n" + body)


def _payload(model_name: str, shape: tuple, classes: int, num_train: int) -> dict:
    from kdlab.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, {}, classes, shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()  # one momentum buffer per parameter
    return {"kdlab_version": "bench", "model": model.kdlab_spec, "model_state": model.state_dict(),
            "objective_state": {"consistency.visits": torch.full((num_train,), 3, dtype=torch.int32),
                                "consistency.average": torch.rand(num_train, classes)},
            "optimizer_state": opt.state_dict(), "epoch": 240, "best": {"epoch": 238, "test_top1": 77.0},
            "history": [{"epoch": e + 1, "loss": 1.0, "test_top1": 70.0} for e in range(240)], "seed": 0,
            "kind": "teacher", "config": {"model": {"name": model_name}, "method": {"name": "soteacher"}}}


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _child(mode: str, path: str) -> None:
    """In this fresh process: the file evicted from the page cache, one load (cold: seconds, seconds spent
    building the model, peak MB above the resident set before it), then the same load again (warm: seconds)."""
    import gc

    from kdlab import runs
    from kdlab.core.checkpoint import load_checkpoint, load_metadata
    from kdlab.models import build_model as build

    device = torch.device("cpu")
    built = [0.0]

    def build_model(*args, **kw):  # timed: building the model is part of both loads, and not the format's doing
        t0 = time.perf_counter()
        try:
            return build(*args, **kw)
        finally:
            built[0] += time.perf_counter() - t0

    runs.build_model = build_model

    def load():
        if mode == "old":  # the previous load_model: the whole checkpoint onto the device, then the model
            ck = load_checkpoint(path, map_location=device)
            spec = ck["model"]
            model = build_model(spec["name"], dict(spec.get("params", {})), spec["num_classes"],
                                tuple(spec["input_shape"]))
            model.load_state_dict(ck["model_state"])
            return model.to(device).eval()
        if mode == "new":
            return runs.checkpoint_model(Path(path), None, device)[0]
        return load_checkpoint(path, map_location=device)  # the full load of resume

    spec = load_metadata(path)["model"]  # build the model once first: imports and first-call costs are not the load's
    build(spec["name"], dict(spec.get("params", {})), spec["num_classes"], tuple(spec["input_shape"]))
    gc.collect()
    _evict(Path(path))
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    base = _status("VmRSS")
    t = time.perf_counter()
    out = load()
    cold = time.perf_counter() - t
    peak = _status("VmHWM") - base
    build_s = built[0]
    del out
    gc.collect()
    t = time.perf_counter()
    load()
    warm = time.perf_counter() - t
    print(json.dumps({"cold": cold, "warm": warm, "build_s": build_s, "peak_mb": peak}))


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _load(mode: str, path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def case(name: str, model_name: str, shape: tuple, classes: int, num_train: int, folder: Path, repeats: int
         ) -> list[list[str]]:
    from kdlab.core.checkpoint import save_checkpoint

    payload = _payload(model_name, shape, classes, num_train)
    params_mb = sum(t.numel() * t.element_size() for t in payload["model_state"].values()) / 2**20
    buffer_mb = num_train * classes * 4 / 2**20
    old, new = folder / f"{name}-v1.pt", folder / f"{name}-v2.pt"
    saves = {"old": [], "new": []}
    for _ in range(repeats):
        for key, path, write in (("old", old, _write_format_1), ("new", new, save_checkpoint)):
            t = time.perf_counter()
            write(path, payload)
            saves[key].append(time.perf_counter() - t)
    del payload
    rows = []
    for mode, path in (("old", old), ("new", new), ("full", new)):
        res = [_load(mode, path) for _ in range(repeats)]
        save = statistics.median(saves["new" if mode == "full" else mode])
        rows.append([f"{name} ({model_name} {params_mb:.0f} MB, buffer {buffer_mb:.0f} MB)" if mode == "old" else "",
                     {"old": "old: v1, full", "new": "new: v2, weights", "full": "v2, full (resume)"}[mode],
                     f"{path.stat().st_size / 2**20:.1f}", f"{save:.2f}" if mode != "full" else "",
                     *(f"{statistics.median(r[k] for r in res):.3f}" for k in ("cold", "warm")),
                     f"{statistics.median(r['build_s'] for r in res):.3f}" if mode != "full" else "",
                     f"{max(r['peak_mb'] for r in res):.0f}"])
    old.unlink()
    new.unlink()
    return rows


def _table(rows: list[list[str]]) -> str:
    head = ["case", "format / load", "file MB", "save s", "load s cold", "load s warm", "of which build s",
            "peak MB"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--imagenet-scale", type=float, default=0.03,
                   help="fraction of ImageNet's 1,281,167 training samples in the second case's buffer (0: skip)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--dir", default=None, help="where the checkpoints are written (default: a temporary folder)")
    p.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        _child(*a.child)
        return 0
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU, median of {a.repeats} (peak: max)", flush=True)
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        rows = case("CIFAR-100", "resnet32x4", (3, 32, 32), 100, 50000, Path(d), a.repeats)
        if a.imagenet_scale > 0:
            n = round(1_281_167 * a.imagenet_scale)
            rows += case(f"ImageNet x{a.imagenet_scale:g}", "imagenet_resnet18", (3, 224, 224), 1000, n, Path(d),
                         a.repeats)
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
