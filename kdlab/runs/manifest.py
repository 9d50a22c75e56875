"""A finished run's results are verified before anything reuses them: ``checksums.json`` holds the SHA-256 of
each result file (summary, test logits and labels, the epoch log), written once the run has finished.

A run whose results no longer match is not reused as it is: its damaged files are recomputed from its final
checkpoint (itself checksummed) where the run folder still has one, or reported by name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kdlab.core.checkpoint import atomic_write_json

MANIFEST = "checksums.json"
RESULT_FILES = ("summary.json", "test_logits.npy", "test_labels.npy", "metrics.jsonl")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(run_dir: Path) -> None:
    """Record the checksums of the run's result files (the last file a finishing run writes)."""
    sums = {name: _sha256(run_dir / name) for name in RESULT_FILES if (run_dir / name).is_file()}
    atomic_write_json(run_dir / MANIFEST, {"sha256": sums})


def damaged_files(run_dir: Path, names: tuple[str, ...] = RESULT_FILES) -> list[str]:
    """The result files among ``names`` that do not match the run's checksums (missing ones included).  A run
    finished before kdlab wrote checksums has none: only files that cannot be parsed are found damaged then."""
    path = run_dir / MANIFEST
    if not path.is_file():
        return _unparsable(run_dir, names)
    try:
        sums = json.loads(path.read_text())["sha256"]
        assert isinstance(sums, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return [MANIFEST]
    bad = []
    for name in names:
        if name not in sums:
            continue
        f = run_dir / name
        try:
            if _sha256(f) != sums[name]:
                bad.append(name)
        except OSError:
            bad.append(name)
    return bad


def _unparsable(run_dir: Path, names: tuple[str, ...]) -> list[str]:
    bad = []
    if "summary.json" in names and (run_dir / "summary.json").is_file():
        try:
            if not isinstance(json.loads((run_dir / "summary.json").read_text()), dict):
                bad.append("summary.json")
        except (OSError, ValueError):
            bad.append("summary.json")
    return bad


def discard_results(run_dir: Path) -> None:
    """Remove the result files and checksums, so that the run finishes again from its final checkpoint."""
    for name in (*RESULT_FILES[:-1], MANIFEST):  # metrics.jsonl is rewritten from the checkpoint on resume
        (run_dir / name).unlink(missing_ok=True)
