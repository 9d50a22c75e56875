"""README's Python API snippet, run as a user runs it: a script without a ``__main__`` guard, with workers, twice."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _shrink(path: Path, **top) -> None:
    """Same config, smaller: few samples and epochs, so the test measures the workflow, not the training."""
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(num_train=200, num_test=100)
    for part in [cfg, cfg.get("teacher"), cfg.get("student")]:
        if isinstance(part, dict) and "train" in part:
            part["train"]["epochs"] = 1
            part.pop("schedule", None)
    cfg.update(top)
    path.write_text(yaml.safe_dump(cfg))


def test_readme_python_snippet_runs_as_a_script_with_workers_and_again(tmp_path):
    snippet = readme_snippet()
    assert "workers=2" in snippet and "__main__" not in snippet
    small = snippet.replace('"train": {"epochs": 20}', '"train": {"epochs": 1}, "data": {"name": "mixed-feature", '
                            '"num_train": 200, "num_test": 100}').replace('{"data": "mixed-feature", ', "{")
    assert small.count("num_train") == 1, "README's distill call changed: update the test's shrinking"
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    _shrink(tmp_path / "configs" / "mixed-feature" / "teacher.yaml")
    study = tmp_path / "configs" / "studies" / "sftn-embedded.yaml"
    _shrink(study, seeds=[0])
    cfg = yaml.safe_load(study.read_text())
    cfg["pairs"] = cfg["pairs"][1:]
    study.write_text(yaml.safe_dump(cfg))
    (tmp_path / "snippet.py").write_text(small)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in ("first", "again"):
        r = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, (attempt, r.stderr[-3000:])
        assert "Traceback" not in r.stderr and "FAILED" not in r.stderr, (attempt, r.stderr[-3000:])
        assert "| Teacher" in r.stdout and "top1" in r.stdout, r.stdout
        assert "| -" not in r.stdout  # a table of failed runs shows dashes
    assert "0 runs trained" in r.stderr  # the second time everything is reused
    # in a notebook there is no script file: the same code from stdin
    r = subprocess.run([sys.executable, "-"], input=small, cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
