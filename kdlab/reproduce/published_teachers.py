"""``kdlab reproduce ID teacher_weights=DIR``: an experiment's standard teachers taken from a folder of published
teachers instead of trained, e.g. the CRD benchmark's (RepDistiller's ``fetch_pretrained_teachers.sh``:
``DIR/resnet32x4_vanilla/ckpt_epoch_240.pth``) or mdistiller's ``cifar_teachers.tar`` (the same layout).

A teacher architecture ``A`` is looked up as ``DIR/A_vanilla/ckpt_epoch_240.pth``, then ``DIR/A_vanilla/`` holding
one weights file, then ``DIR/A.pth`` / ``.pt`` / ``.pth.tar`` / ``.safetensors``; the file's format (RepDistiller,
mdistiller, torchdistill, kdlab or plain key names) is detected from its keys.  Architectures without a file keep
their trained teachers; the other teacher labels (SoTeacher, SFTN, ...) are always trained.  What was used is
stated with the table.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.config import StudyConfig
from kdlab.core.errors import ConfigError

#: the teacher label that published teachers stand for (they are standard teachers)
LABEL = "standard"
SUFFIXES = (".pth", ".pt", ".pth.tar", ".safetensors")


@dataclass
class Used:
    """Which teachers of an experiment came from the folder (architecture -> file) and which are trained."""

    files: dict[str, str] = field(default_factory=dict)
    trained: set[str] = field(default_factory=set)

    def statement(self) -> str | None:
        if not self.files and not self.trained:
            return None
        used = ", ".join(f"{a} ({f})" for a, f in sorted(self.files.items())) or "none"
        line = f"Published standard teachers used instead of training them (teacher_weights): {used}"
        if self.trained:
            line += f"; trained here, no file found: {', '.join(sorted(self.trained))}"
        return line + "."


def find_file(folder: Path, arch: str) -> Path | None:
    """The published teacher of architecture ``arch`` in ``folder`` (None: there is none)."""
    crd = folder / f"{arch}_vanilla"
    if (crd / "ckpt_epoch_240.pth").is_file():
        return crd / "ckpt_epoch_240.pth"
    if crd.is_dir():
        files = sorted(p for p in crd.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
        if len(files) == 1:
            return files[0]
        if files:
            raise ConfigError(f"teacher_weights: {crd} holds {len(files)} weights files "
                              f"({', '.join(p.name for p in files[:3])}, ...); keep the one to use")
    return next((folder / f"{arch}{s}" for s in SUFFIXES if (folder / f"{arch}{s}").is_file()), None)


def with_published(study: dict[str, Any], cfg: StudyConfig, folder: str | Path, used: Used) -> dict[str, Any]:
    """The plain study config ``study`` (loaded as ``cfg``) with its standard teachers taken from ``folder`` where
    a file is there; ``used`` collects what was taken and what is still trained."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"teacher_weights: {root} is not a folder (give the folder of published teachers, "
                          "e.g. RepDistiller's save/models)")
    if LABEL not in cfg.teacher.methods or cfg.teacher.methods[LABEL].name != "standard":
        return study
    if cfg.trajectory is not None or cfg.student.teacher_checkpoint != "last" or any(
            spec.get("pretrained") == LABEL for spec in cfg.teacher.methods.values()):
        # students of checkpoints along training, or teachers fine-tuned from the standard one: it trains here
        used.trained.update(p.teacher.name for p in cfg.pair_list())
        return study
    files = {}
    for pair in cfg.pair_list():
        arch = pair.teacher.name
        if pair.teacher_methods is not None and LABEL not in pair.teacher_methods:
            continue
        file = find_file(root, arch)
        if file is None:
            used.trained.add(arch)
        else:
            files[arch] = str(file.resolve())
    if not files:
        return study
    used.files.update(files)
    out = copy.deepcopy(study)
    out.setdefault("teacher", {})["published"] = {"label": LABEL, "weights": files}
    return out
