"""Library messages go through the ``kdlab`` logger: a library user silences or routes them."""

import ast
import logging
from pathlib import Path

from conftest import TINY_TRAIN, teacher_cfg
from kdlab.core import log
from kdlab.runs.teacher import train_teacher

LOG_TRAIN = {**TINY_TRAIN, "progress": "log"}


def test_progress_lines_are_on_stderr_by_default_and_can_be_silenced(tmp_path, capsys):
    train_teacher(teacher_cfg(tmp_path / "a", train=LOG_TRAIN))
    assert "epoch 2/2" in capsys.readouterr().err
    logger = logging.getLogger("kdlab")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        train_teacher(teacher_cfg(tmp_path / "b", train=LOG_TRAIN))
    finally:
        logger.setLevel(old)
    assert "epoch" not in capsys.readouterr().err


def test_messages_can_be_routed_to_the_applications_logging(tmp_path, capsys, caplog):
    try:
        log.propagate_to_root()
        with caplog.at_level(logging.INFO, logger="kdlab"):
            train_teacher(teacher_cfg(tmp_path / "a", train=LOG_TRAIN))
    finally:
        log._install_default_handler()
    assert any("epoch 2/2" in r.getMessage() and r.name == "kdlab" for r in caplog.records)
    assert "epoch" not in capsys.readouterr().err  # routed, not printed twice


def test_the_library_neither_prints_nor_imports_fcntl():
    """print() bypasses the logger; fcntl does not exist on Windows (the run lock uses filelock)."""
    root = Path(__file__).resolve().parents[2] / "kdlab"
    offenders = []
    for path in root.rglob("*.py"):
        if path.relative_to(root).as_posix() in ("cli/main.py", "__main__.py"):  # the command line's own output
            continue
        tree = ast.parse(path.read_text())
        script = [range(n.lineno, n.end_lineno + 1) for n in ast.walk(tree)  # a module's own script block
                  if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        for node in ast.walk(tree):
            if any(getattr(node, "lineno", 0) in r for r in script):
                continue
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                kw = {k.arg: k.value for k in node.keywords}
                if "file" not in kw or getattr(kw["file"], "attr", None) == "stderr":
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if "fcntl" in names:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} imports fcntl")
    assert not offenders, offenders
