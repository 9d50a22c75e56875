"""Resolving a run before it starts: its config (protocol applied, ``{seed}`` and the default folder filled in),
its teacher (a run folder, a checkpoint or a weights file) and the checkpoint files a run names; rebuilding a
model from a checkpoint; what the students of one group must share (:func:`group_key`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdlab.config import DistillRunConfig, TeacherRef, TeacherRunConfig, load_config
from kdlab.config.schema import InitWeights, TrainConfig, flagged_keys
from kdlab.core.checkpoint import checkpoint_names, epoch_checkpoint_files, load_metadata, load_weights
from kdlab.core.errors import CheckpointError, ConfigError
from kdlab.data import DataBundle
from kdlab.methods import needs_teacher
from kdlab.models import build_model
from kdlab.runs.folder import RunFolder, check_checkpoint_owner

# loop settings that members of one group may set differently (declared on the config: they change no member's
# computation)
GROUP_FREE_TRAIN_KEYS = tuple(sorted(flagged_keys(TrainConfig, "group_free")))


@dataclass
class TeacherRun:
    """A resolved teacher run: its config (``{seed}`` and the default folder filled in), folder and plain config."""

    cfg: TeacherRunConfig
    run_dir: Path
    plain: dict[str, Any]


def resolve_teacher_run(config: Any, overrides: list[str] = ()) -> TeacherRun:
    cfg = load_config(TeacherRunConfig, config, overrides)
    out_dir = with_seed(cfg.out_dir, cfg.seed) or default_out_dir("teacher", cfg.model.name, cfg.method.name,
                                                                    cfg.seed)
    cfg = cfg.model_copy(update={"out_dir": out_dir, "init": _init_of(cfg)})
    return TeacherRun(cfg, Path(out_dir), cfg.model_dump(mode="json"))


def _init_of(cfg: TeacherRunConfig | DistillRunConfig) -> InitWeights | None:
    """The run's ``init`` with its ``{seed}`` filled in."""
    if cfg.init is None:
        return None
    return cfg.init.model_copy(update={"weights": with_seed(cfg.init.weights, cfg.seed)})


def load_init(model: nn.Module, cfg: TeacherRunConfig | DistillRunConfig, role: str) -> None:
    """Start ``model`` from the run's ``init`` weights, if it has any (before its objective is built: methods that
    copy the model's layers copy these)."""
    if cfg.init is not None:
        from kdlab.models.native import load_pretrained

        load_pretrained(model, cfg.init.weights, f"init.weights ({role} {cfg.init.weights})",
                        cfg.init.weights_format)


@dataclass
class StudentRun:
    """A resolved student run: its config (protocol applied, ``{seed}`` filled in), folder and plain config."""

    cfg: DistillRunConfig
    run_dir: Path
    plain: dict[str, Any]

    @property
    def wants_teacher(self) -> bool:
        return self.cfg.teacher is not None and needs_teacher(self.cfg.method.name)


def _with_protocol(cfg: DistillRunConfig) -> DistillRunConfig:
    """The config with the protocol's weights, for the kind of teacher it distils from, in every method parameter
    it leaves open (the teacher's method comes from its checkpoint)."""
    from kdlab.methods.protocols import apply_protocol, teacher_kind

    t_method = None  # a pretrained teacher kdlab did not train counts as a standard one
    if cfg.teacher.path is not None:
        meta = load_metadata(resolve_checkpoint(cfg.teacher))
        t_method = ((meta.get("config") or {}).get("method") or {}).get("name")
    spec = apply_protocol(cfg.protocol, cfg.method.raw or cfg.method.model_dump(), teacher_kind(t_method))
    return load_config(DistillRunConfig, {**cfg.model_dump(mode="json"), "method": spec})


def resolve_student_run(config: Any, overrides: list[str] = ()) -> StudentRun:
    cfg = load_config(DistillRunConfig, config, overrides)
    wants_teacher = needs_teacher(cfg.method.name)
    if wants_teacher and cfg.teacher is None:
        raise ConfigError(f"teacher: method {cfg.method.name!r} needs a teacher; set teacher.path to a teacher run "
                          "folder or checkpoint, or teacher.model and teacher.weights to a pretrained model's "
                          "state dict")
    out_dir = with_seed(cfg.out_dir, cfg.seed) or default_out_dir("student", cfg.student.name, cfg.method.name,
                                                                    cfg.seed)
    update: dict[str, Any] = {"out_dir": out_dir, "init": _init_of(cfg)}
    if cfg.teacher is not None:  # the student of seed k learns from the teacher of seed k
        update["teacher"] = cfg.teacher.model_copy(update={"path": with_seed(cfg.teacher.path, cfg.seed),
                                                           "weights": with_seed(cfg.teacher.weights, cfg.seed)})
    cfg = cfg.model_copy(update=update)
    if cfg.protocol and wants_teacher:
        cfg = _with_protocol(cfg)
    return StudentRun(cfg, Path(out_dir), cfg.model_dump(mode="json"))


def group_key(plain: dict[str, Any]) -> tuple:
    """What the members of one group must share: teacher, seed, data, held-out share and loop settings."""
    train = {k: v for k, v in plain["train"].items() if k not in GROUP_FREE_TRAIN_KEYS}
    teacher = plain.get("teacher")
    if not teacher:
        teacher_key = None
    elif teacher.get("weights") is not None:
        teacher_key = (str(Path(teacher["weights"]).resolve()), repr(teacher["model"]))
    else:
        teacher_key = (str(Path(teacher["path"]).resolve()), teacher.get("checkpoint"))
    return (plain["seed"], repr(plain["data"]), plain["holdout"], teacher_key, repr(sorted(train.items())))


def with_seed(path: str | None, seed: int) -> str | None:
    """``{seed}`` in a path stands for the run's seed (one config file serves every seed)."""
    return path.replace("{seed}", str(seed)) if path else path


def default_out_dir(kind: str, model: str, method: str, seed: int) -> str:
    return str(Path("runs") / f"{kind}-{model}-{method}-s{seed}")


def resolve_checkpoint(ref: TeacherRef | str, checkpoint: str = "last") -> Path:
    """A run folder + checkpoint name (last / best / epoch_XXX), or a checkpoint file, -> the file's path."""
    if isinstance(ref, TeacherRef):
        if ref.path is None:
            raise CheckpointError(f"teacher weights {ref.weights} are not a kdlab checkpoint")
        path, checkpoint = Path(ref.path), ref.checkpoint
    else:
        path = Path(ref)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"checkpoint or run folder not found: {path}")
    file = RunFolder(path).checkpoint(checkpoint)
    if not file.exists():
        avail = checkpoint_names(RunFolder(path).checkpoint_dir)
        listing = ", ".join(avail) if avail else "none"
        raise CheckpointError(f"{path} has no checkpoint {checkpoint!r} (available: {listing})")
    check_checkpoint_owner(path, file)
    return file


def teacher_checkpoints(teacher_path: Path | str) -> dict[int, Path]:
    """Epoch -> file of every epoch checkpoint (``epoch_XXX.pt``) of the run whose checkpoint is ``teacher_path``,
    by epoch (RCO's anchors: the checkpoints beside the teacher's)."""
    return epoch_checkpoint_files(Path(teacher_path).parent)


def checkpoint_model(path: Path, data: DataBundle | None, device: torch.device, role: str = "teacher"
                     ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint and check it fits ``data``: built on the CPU from the checkpoint's
    weights and metadata only (its optimizer and objective state, a SoTeacher buffer, are never read), then moved
    to ``device``.  Returns the model and the checkpoint's weights and metadata."""
    ck = load_weights(path)
    spec = ck.get("model")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{path} does not describe its model (not written by kdlab?)")
    if data is not None:
        if spec["num_classes"] != data.num_classes:
            raise CheckpointError(f"{role} checkpoint {path} predicts {spec['num_classes']} classes but data set "
                                  f"{data.name!r} has {data.num_classes}")
        if tuple(spec["input_shape"]) != tuple(data.input_shape):
            raise CheckpointError(f"{role} checkpoint {path} takes inputs of shape {tuple(spec['input_shape'])} "
                                  f"but data set {data.name!r} has {tuple(data.input_shape)}")
    params = dict(spec.get("params", {}))
    for key in ("weights", "pretrained"):  # weights the model started from: the checkpoint's own state replaces them
        if params.get(key):
            params[key] = None
    try:
        model = build_model(spec["name"], params, spec["num_classes"], tuple(spec["input_shape"]))
    except ConfigError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    try:
        model.load_state_dict(ck["model_state"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "state mismatch"
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), "")
        raise CheckpointError(f"checkpoint {path} does not match model {spec['name']!r}: "
                              f"{first} {detail}".strip()) from None
    model.to(device).eval()
    return model, ck


def load_teacher(ref: TeacherRef, data: DataBundle, device: torch.device) -> tuple[nn.Module, Path]:
    """The frozen teacher of ``ref`` on ``device`` and the file its weights came from."""
    if ref.weights is not None:
        model, path = pretrained_teacher(ref, data), Path(ref.weights)
        model.to(device).eval()
    elif ref.library():  # the adapter loads the library's released weights as it builds the model
        model = build_model(ref.model.name, ref.model.params, data.num_classes, data.input_shape, key="teacher.model")
        path = Path(f"{ref.model.name}:{ref.model.get('arch') or ''}:pretrained={ref.model.get('pretrained')}")
        model.to(device).eval()
    else:
        path = resolve_checkpoint(ref)
        model, _ = checkpoint_model(path, data, device, role="teacher")
    model.requires_grad_(False)
    return model, path


def pretrained_teacher(ref: TeacherRef, data: DataBundle) -> nn.Module:
    """A teacher kdlab did not train: ``ref.model`` built for ``data``, its weights from the file ``ref.weights``
    (in the key names of the model's own code, kdlab's, or those of another distillation code: ``weights_format``)."""
    from kdlab.models.native import load_pretrained

    model = build_model(ref.model.name, ref.model.params, data.num_classes, data.input_shape, key="teacher.model")
    detail = ref.model.get("arch") or ref.model.get("target")
    load_pretrained(model, ref.weights, f"teacher {ref.model.name}" + (f" {detail!r}" if detail else ""),
                    ref.weights_format)
    return model
