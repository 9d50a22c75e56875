"""What kdlab hands a method besides its parameters: the networks, the data and the run it trains in.

A method is built as ``Method(params, ctx)``: ``params`` is its validated ``Params`` object (the one declaration of
every parameter, with its default, type and description), ``ctx`` one of the frozen context objects below.  A
method reads the context fields it needs as attributes, so a misspelt name is an ``AttributeError`` when the
method is built, not a value that is silently never passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DistillContext", "TeacherContext"]


@dataclass(frozen=True)
class TeacherContext:
    """Context of a teacher-training method."""

    model: Any = None  #: the network being trained
    data: Any = None  #: the data set (:class:`kdlab.data.base.DataBundle`)
    run_dir: Path | None = None  #: the run folder (None: a check that builds the method without a run)
    epochs: int = 1  #: the run's epochs
    #: a teacher run folder or checkpoint file -> its checkpoint file (its ``last`` one for a folder); None where
    #: the caller provides no run layer
    checkpoint_file: Callable[[str], Path] | None = None


@dataclass(frozen=True)
class DistillContext:
    """Context of a distillation method."""

    teacher: Any = None  #: the frozen teacher (None for teacher-free methods)
    student: Any = None  #: the student network
    data: Any = None  #: the data set
    run_dir: Path | None = None
    epochs: int = 1
    #: the teacher's checkpoint file (None: a pretrained teacher kdlab did not train)
    teacher_path: Path | None = None
    device: Any = None  #: where the teacher lives
    #: epoch -> checkpoint file of every epoch checkpoint of the teacher run (None: not a kdlab teacher run)
    teacher_checkpoints: Callable[[], dict[int, Path]] | None = None
