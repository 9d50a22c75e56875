"""Typed configuration: the single source of truth for everything a user sets.

YAML files and dotted command-line overrides are only serialised forms of these models; unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kdlab.config.components import (
    Component,
    DataSpec,
    DistillMethodOrKD,
    DistillMethodSpec,
    ModelSpec,
    TeacherMethodOrStandard,
    TeacherMethodSpec,
    describe_first_error,
)
from kdlab.core.no_bool_numbers import reject_bool
from kdlab.core.registry import DATASETS, DISTILL_METHODS, TEACHER_METHODS, unbounded


def _check_device(d: str) -> str:
    if not (d in ("auto", "cpu", "cuda", "mps") or (d.startswith("cuda:") and d[5:].isdigit())):
        raise ValueError("device must be auto, cpu, cuda, cuda:N or mps")
    return d


Device = Annotated[str, AfterValidator(_check_device)]


# What a setting means for a run, declared once on its field (``json_schema_extra``): a ``volatile`` setting does not
# change what a run computes, so it may differ when a finished run is reused or an interrupted one resumes; a
# ``group_free`` loop setting may differ between the students of one group (it changes no member's computation).
VOLATILE = {"volatile": True}
GROUP_FREE = {"group_free": True}
VOLATILE_GROUP_FREE = {**VOLATILE, **GROUP_FREE}


def flagged_keys(model: type[BaseModel], flag: str, prefix: str = "") -> set[str]:
    """The dotted keys of ``model``'s fields (nested config models included) whose declaration sets ``flag``."""
    out = set()
    for name, info in model.model_fields.items():
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(flag):
            out.add(prefix + name)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= flagged_keys(ann, flag, prefix + name + ".")
    return out


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return reject_bool(cls, value, info.field_name)

    @field_validator("out_dir", "runs_dir", check_fields=False)
    @classmethod
    def _usable_folder(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "\0" in value:
            raise PydanticCustomError("bad_path", "a folder name cannot contain a NUL character")
        if not value.strip():
            raise PydanticCustomError("bad_path", "empty folder name")
        long = next((part for part in Path(value).parts if len(part.encode()) > 255), None)
        if long is not None:
            raise PydanticCustomError("bad_path", "the folder name {name}... is longer than 255 bytes, the file "
                                      "system limit", {"name": long[:30]})
        return value


class OptimConfig(Strict):
    """Optimizer.  Defaults: the CIFAR-100 recipe of the papers (SGD, momentum 0.9, wd 5e-4, lr 0.05)."""

    name: Literal["sgd", "adam", "adamw"] = Field("sgd", description="SGD (with momentum), Adam or AdamW")
    lr: PositiveFloat = Field(0.05, description="base learning rate, scaled by the schedule")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (not used by adam / adamw)")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay of the optimizer (adamw: decoupled)")
    nesterov: bool = Field(False, description="SGD: Nesterov momentum (when momentum > 0)")


class ScheduleConfig(Strict):
    """Learning-rate schedule, evaluated per epoch (with an optional per-step linear warm-up)."""

    name: Literal["multistep", "cosine", "constant"] = Field(
        "multistep", description="multistep: lr x gamma at each milestone; cosine: from lr down to min_lr over "
                                 "the epochs after the warm-up; constant: lr throughout")
    milestones: list[NonNegativeInt] = Field([150, 180, 210], description="multistep: the epochs (increasing) "
                                             "at which the learning rate is multiplied by gamma")
    gamma: PositiveFloat = Field(0.1, description="multistep: factor applied at each milestone")
    warmup_epochs: NonNegativeInt = Field(0, description="epochs of linear warm-up from 0 to lr, per step")
    min_lr: float = Field(0.0, ge=0, description="cosine: the learning rate at the last epoch")

    @model_validator(mode="after")
    def _sorted(self) -> ScheduleConfig:
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")
        return self


class TrainConfig(Strict):
    """The training loop: length, batching, device, logging and checkpointing."""

    epochs: PositiveInt = Field(240, description="training epochs")
    batch_size: PositiveInt = Field(64, description="training batch (the global batch under torchrun)")
    eval_batch_size: PositiveInt = Field(512, description="batch size of evaluation and prediction (memory only: "
                                         "results do not depend on it)", json_schema_extra=VOLATILE)
    device: Device = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ...",
                           json_schema_extra=VOLATILE)
    eval_every: PositiveInt = Field(1, description="test the model every k epochs (and after the last)")
    save_every: NonNegativeInt = Field(0, description="also keep checkpoints/epoch_XXX.pt every k epochs (0: never)",
                                       json_schema_extra=GROUP_FREE)
    progress: Literal["auto", "bar", "log", "off"] = Field(
        "auto", description="bar: a progress bar; log: a line per epoch (at most every 10 s); auto: bar on a "
                            "terminal, else log; off: quiet", json_schema_extra=VOLATILE_GROUP_FREE)
    trackers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        ["tensorboard"], description="experiment trackers the run logs to (rank 0): tensorboard (when the package "
        "is installed), wandb, mlflow; [] for none.  A resumed run continues its tracker runs (ids in "
        "trackers.json); a tracker that fails warns and the run goes on", json_schema_extra=VOLATILE)
    tracker_project: str | None = Field(None, description="W&B project and group, MLflow experiment (default: "
                                        "the study's name, else kdlab)", json_schema_extra=VOLATILE)
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI, e.g. http://host:5000 (default: "
                                   "MLFLOW_TRACKING_URI, else mlruns/ in the working folder)",
                                   json_schema_extra=VOLATILE)
    log_every_step: bool = Field(False, description="trackers: also each step's loss, loss parts and lr under "
                                 "step/ (a device synchronisation per step)", json_schema_extra=VOLATILE)
    deterministic: bool = Field(True, description="true: deterministic kernels, exact repeats and resumes; false: "
                                "cuDNN autotuning (faster on GPUs), runs may differ in the last bits")
    drop_last: bool = Field(False, description="skip the last, smaller training batch of each epoch")
    num_workers: NonNegativeInt = Field(4, description="DataLoader worker processes for data sets read from "
                                        "image folders (in-memory data sets need none)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision of the step "
                                                       "(fp16 needs CUDA and uses a gradient scaler)")
    channels_last: bool = Field(False, description="channels-last memory format for image models and batches")
    compile: bool = Field(False, description="torch.compile the trained model")
    sync_bn: bool = Field(False, description="torchrun: batch norm over the global batch, for the model and the "
                          "method's connectors (nn.SyncBatchNorm on CUDA, kdlab's own elsewhere)")

    @model_validator(mode="before")
    @classmethod
    def _earlier_names(cls, v):
        # run folders of earlier versions say tensorboard: true|false and tensorboard_every_step
        if isinstance(v, dict) and ("tensorboard" in v or "tensorboard_every_step" in v):
            v = dict(v)
            if v.pop("tensorboard", True) is False and "trackers" not in v:
                v["trackers"] = []
            if "tensorboard_every_step" in v:
                v.setdefault("log_every_step", v.pop("tensorboard_every_step"))
        return v

    @field_validator("progress", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads a bare ``off`` / ``on`` as a boolean
        return {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v


Protocol = Literal["crd", "sftn", "soteacher"]
PROTOCOL = Field(None, description="loss weights as a paper's tables used them (kdlab.methods.protocols): crd, "
                                   "sftn or soteacher; fills gamma/alpha/beta/T the method config leaves open, "
                                   "per teacher kind")

# seed_everything and derive_seed reduce any integer to a valid generator seed
ANY_SEED = unbounded("a run's seed may be any integer")

HOLDOUT = Field(0.0, ge=0, lt=1, description="fraction of the training data held out (stratified, fixed) to fit "
                "the temperature of temperature scaling; the model trains on the rest (without it, the temperature "
                "is fitted on the validation split of data.val_fraction, if any)")


#: the key names a weights file may use (kdlab.models.foreign maps the foreign ones onto kdlab's models)
WeightsFormat = Literal["auto", "repdistiller", "mdistiller", "torchdistill", "kdlab", "plain"]


class InitWeights(Strict):
    """Weights a run's model starts from instead of its random initialisation (fine-tuning a published teacher, a
    student from a pretrained one): any file ``teacher.weights`` reads, in any of its formats.  A resumed run
    continues from its own checkpoint."""

    weights: str = Field(description="weights file (torch.save or safetensors; a state dict or a RepDistiller / "
                         "mdistiller / torchdistill checkpoint) or hf-hub:ORG/REPO/FILE[@REV]; {seed} stands for "
                         "the run's seed")
    weights_format: WeightsFormat = Field("auto", description="the file's key names, as teacher.weights_format")


class _Initialisable(Strict):
    """A run config with an optional ``init`` (left out of the saved config when not given, so that run folders
    written before the key existed keep their settings)."""

    init: InitWeights | None = Field(None, description="weights the model starts from (default: its random "
                                     "initialisation)")

    @model_serializer(mode="wrap")
    def _init_when_given(self, handler):
        out = handler(self)
        if out.get("init") is None:
            out.pop("init", None)
        return out


class TeacherRunConfig(_Initialisable):
    """``kdlab train-teacher``: train one teacher."""

    seed: int = Field(0, description="seeds initialisation, data order and augmentation",
                      json_schema_extra=ANY_SEED)
    holdout: float = HOLDOUT
    out_dir: str | None = Field(None, description="run folder; {seed} stands for the seed (default: "
                                "runs/teacher-<model>-<method>-s<seed>)", json_schema_extra=VOLATILE)
    data: DataSpec = Field(description="the data set")
    model: ModelSpec = Field(description="the teacher's architecture")
    method: TeacherMethodOrStandard = Field("standard", validate_default=True, description="how the teacher is "
                                            "trained")
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()

    @field_validator("train", mode="before")
    @classmethod
    def _trains(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("epochs") == 0:
            _key_error(("epochs",), "must be at least 1: a teacher run trains; to distil from a pretrained model as "
                                    "it is, give the distill config teacher: {model: ..., weights: FILE}")
        return v

    @model_validator(mode="after")
    def _one_weight_decay(self) -> TeacherRunConfig:
        check_l2(self.method, self.optim, "method")
        return self


def check_l2(method: Component, optim: OptimConfig, where: str) -> None:
    """The ``l2`` baseline writes weight decay into the loss: with the optimizer's as well it would count twice."""
    if method.name == "l2" and method.get("weight", 0) > 0 and optim.weight_decay > 0:
        raise ValueError(f"{where}: l2 adds weight decay to the loss; set optim.weight_decay=0 so it is not "
                         f"applied twice (or use standard training with optim.weight_decay={method['weight']:g})")


def _key_error(subloc: tuple[str, ...], msg: str) -> None:
    """Fail validation at a key below the current model (a plain ValueError would point at the model itself)."""
    raise PydanticCustomError("kdlab_component", "{msg}", {"msg": msg, "subloc": subloc})


class TeacherRef(Strict):
    """Which teacher to distil from: a kdlab teacher run folder (or checkpoint file) and which of its checkpoints,
    or a pretrained model kdlab did not train: a model spec and a weights file (a state dict)."""

    path: str | None = Field(None, description="teacher run folder or checkpoint file; {seed} stands for the "
                             "student's seed")
    checkpoint: str = Field("last", description="last | best | epoch_XXX (ignored when path is a file)")
    model: ModelSpec | None = Field(None, description="with weights: the pretrained teacher's architecture")
    weights: str | None = Field(None, description="instead of path: a weights file of model (torch.save or "
                                "safetensors; a state dict, also nested under 'state_dict' / 'model', 'module.' "
                                "prefixes, or a RepDistiller / mdistiller / torchdistill checkpoint) or "
                                "hf-hub:ORG/REPO/FILE[@REV] (the Hugging Face cache); {seed} stands for the student's "
                                "seed")
    weights_format: WeightsFormat = Field(
        "auto", description="with weights: the key names of the file: plain (the model's own code's), kdlab (a "
        "kdlab model's state dict), repdistiller / mdistiller / torchdistill (a checkpoint of that code, e.g. the "
        "CRD benchmark's teachers; kdlab maps its keys onto the model), auto (the one that fits)")

    @model_validator(mode="after")
    def _one_source(self) -> TeacherRef:
        if self.library():
            if "weights_format" in self.model_fields_set or "checkpoint" in self.model_fields_set:
                key = "weights_format" if "weights_format" in self.model_fields_set else "checkpoint"
                _key_error((key,), "goes with a weights file or a teacher run; model.pretrained loads the "
                                   "library's released weights")
            return self
        if (self.path is None) == (self.weights is None):
            _key_error((), "give path or weights, not both" if self.path is not None else
                       "give path (a kdlab teacher run or checkpoint), model + weights (a pretrained state dict) or "
                       "a model with the library's weights (model.pretrained, timm / torchvision adapters)")
        if self.weights is not None:
            if self.model is None:
                _key_error(("model",), "required with weights: the architecture the state dict is for")
            if self.model.get("weights"):
                _key_error(("model", "weights"), "give the weights file once, as teacher.weights")
            if "checkpoint" in self.model_fields_set:
                _key_error(("checkpoint",), "names a checkpoint of a teacher run (teacher.path), not of a weights "
                                            "file")
        elif self.model is not None:
            _key_error(("model",), "goes with weights; a kdlab checkpoint (teacher.path) describes its own model")
        elif "weights_format" in self.model_fields_set:
            _key_error(("weights_format",), "goes with weights; a kdlab checkpoint (teacher.path) is read as such")
        return self

    def library(self) -> bool:
        """A library model with its released weights (``model: {..., pretrained: ...}``, no file, no run)."""
        return self.path is None and self.weights is None and self.model is not None \
            and bool(self.model.params.get("pretrained"))

    @model_serializer(mode="wrap")
    def _own_keys(self, handler):
        # only the keys of the kind of teacher given: a run teacher's saved config stays what it always was
        out = handler(self)
        drop = ("model", "weights", "weights_format") if self.path is not None else ("path", "checkpoint")
        if self.weights_format == "auto":
            drop += ("weights_format",)  # the default: configs saved before the key existed stay as they were
        return {k: v for k, v in out.items() if k not in drop}


class DistillRunConfig(_Initialisable):
    """``kdlab distill``: train a student, with a teacher unless the method is ``none``."""

    seed: int = Field(0, description="seeds initialisation, data order and augmentation",
                      json_schema_extra=ANY_SEED)
    holdout: float = HOLDOUT
    out_dir: str | None = Field(None, description="run folder; {seed} stands for the seed (default: "
                                "runs/student-<model>-<method>-s<seed>)", json_schema_extra=VOLATILE)
    data: DataSpec = Field(description="the data set (the teacher's classes and input shape)")
    teacher: TeacherRef | None = None
    student: ModelSpec = Field(description="the student's architecture")
    method: DistillMethodOrKD = Field("kd", validate_default=True, description="the distillation method "
                                      "(none: the student alone)")
    protocol: Protocol | None = PROTOCOL
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()


class MethodSettings(Strict):
    """Training settings one method label of a study takes instead of its role's (only the keys given)."""

    optim: dict[str, Any] = Field({}, description="optim keys of this method's runs")
    schedule: dict[str, Any] = Field({}, description="schedule keys of this method's runs")
    train: dict[str, Any] = Field({}, description="train keys of this method's runs")


class StudyRole(Strict):
    """Shared training settings of one side of a study (the teachers or the students)."""

    model: ModelSpec | None = Field(None, description="the architecture (or give study.pairs)")
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    overrides: dict[str, MethodSettings] = Field(
        default_factory=dict, description="method label -> optim / schedule / train keys that this method's runs "
                                          "take instead of the shared ones (e.g. a fine-tuning schedule)")

    def settings(self, label: str | None) -> tuple[OptimConfig, ScheduleConfig, TrainConfig]:
        """The optim, schedule and train configs of a method label's runs."""
        ov = self.overrides.get(label) if label is not None else None
        if ov is None:
            return self.optim, self.schedule, self.train
        return (OptimConfig(**{**self.optim.model_dump(), **ov.optim}),
                ScheduleConfig(**{**self.schedule.model_dump(), **ov.schedule}),
                TrainConfig(**{**self.train.model_dump(), **ov.train}))


class PublishedTeachers(Strict):
    """Teachers a study does not train: published weights files (the CRD benchmark's ``ckpt_epoch_240.pth``,
    mdistiller's, torchdistill's or a plain state dict) standing for one standard-teacher label, per teacher
    architecture.  Every seed's students of that label distil from the same file, as the benchmarks' did."""

    label: str = Field("standard", min_length=1, description="the teacher label the files stand for (a label of "
                       "teacher.methods whose method is standard)")
    weights: dict[str, str] = Field(description="teacher architecture (its name or pair label) -> weights file")
    weights_format: WeightsFormat = Field("auto", description="the files' key names: auto (detected from the "
                                          "keys), repdistiller, mdistiller, torchdistill, kdlab or plain (as "
                                          "teacher.weights_format of kdlab distill)")


class StudyTeachers(StudyRole):
    methods: dict[str, TeacherMethodSpec] = Field(
        default_factory=lambda: {"standard": "standard"}, validate_default=True,
        description="label -> teacher method; each is trained once per (teacher architecture, seed); the first "
                    "label is the baseline the tables compare against")
    published: PublishedTeachers | None = Field(None, description="teachers not trained here: published weights "
                                                "files standing for one standard teacher label")


class StudyStudents(StudyRole):
    methods: dict[str, DistillMethodSpec] = Field(
        default_factory=lambda: {"alone": "none", "kd": "kd"}, validate_default=True,
        description="label -> distillation method; methods without a teacher ('none', online methods) run once "
                    "per (student architecture, seed), the others once per teacher")
    teacher_checkpoint: str = Field("last", description="the teacher checkpoint the students distil from: last, "
                                    "best or epoch_XXX")
    protocol: Protocol | None = PROTOCOL
    by_teacher: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="method label -> teacher label -> parameters that the method takes when "
                                          "it distils from that teacher (over the protocol's and its own)")


class PairConfig(Strict):
    """One teacher/student architecture pair of a study."""

    teacher: ModelSpec = Field(description="the teacher's architecture")
    student: ModelSpec = Field(description="the student's architecture")
    student_lr: PositiveFloat | None = Field(None, description="student learning rate for this pair (the papers "
                                             "use 0.01 for ShuffleNet / MobileNet students)")
    assistant: ModelSpec | None = Field(None, description="TAKD: a teacher assistant distilled from the teacher "
                                        "(with assistant_method); the students learn from it")
    assistant_method: DistillMethodOrKD = Field("kd", validate_default=True, description="how the assistant is "
                                                "distilled from the teacher")
    teacher_methods: list[str] | None = Field(None, description="the teacher method labels this pair trains "
                                              "(default: all); e.g. a method for one architecture only")
    label: str | None = Field(None, min_length=1, description="the pair's name in tables and its students' "
                              "folder (default: <teacher label>--<student label>)")


class SweepConfig(Strict):
    """Variants of one method with one parameter swept (hyper-parameter effect figures), or (``role: data``) the
    whole study repeated for each value of a data set parameter (e.g. ``num_train``: learning curves)."""

    role: Literal["teacher", "student", "data"] = Field(description="what is swept: a teacher method, a "
                                                        "student method or the data set")
    method: str | None = Field(None, description="a label of teacher.methods or student.methods (not for data)")
    param: str = Field(description="the swept parameter of the method (or of the data set)")
    values: list[float | int | str | bool] = Field(
        min_length=1, description="the values, one variant each",
        json_schema_extra=unbounded("each value is checked against the bounds of the parameter it sets"))
    same_steps: bool = Field(False, description="data sweeps over a size: the epochs (and milestones, warm-up, "
                             "eval_every, save_every) given are for the largest value; smaller ones are scaled up so "
                             "that every run takes about as many steps")


class TrajectoryConfig(Strict):
    """Students distilled from teacher checkpoints every ``every`` epochs (Fig. 1 of SoTeacher's first version:
    Dong, Liu & Shang, 2022)."""

    every: PositiveInt = Field(description="distil from the teacher checkpoint of every k-th epoch")
    teachers: list[str] | None = Field(None, description="teacher method labels (default: all)")
    method: str = Field("kd", description="the student method label distilled from each checkpoint")


def _check_sweep(i: int, sw: SweepConfig, spec: Component, registry) -> None:
    """Every variant of a sweep is a valid method config, checked now rather than when its run starts."""
    entry = registry.get(spec.name)
    for v in sw.values:
        try:
            entry.validate({**spec.params, sw.param: v})
        except ValidationError as e:
            _, msg = describe_first_error(e, entry.params)
            raise ValueError(f"sweeps[{i}] ({spec.name}.{sw.param}={v!r}): {msg}") from None


class StudyConfig(Strict):
    """``kdlab study``: teacher methods x teacher/student pairs x distillation methods x seeds (+ sweeps)."""

    name: str = Field("study", description="the study's name in tables and reports")
    out_dir: str = Field("runs/study", description="folder of the study's results (study.yaml, results.md, "
                         "figures/, report.html)")
    runs_dir: str | None = Field(None, description="where the run folders live (default: out_dir); studies that "
                                 "share it share their identical runs, e.g. the tables of one paper")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1, description="every run is "
                             "trained once per seed (distinct)", json_schema_extra=ANY_SEED)
    holdout: float = HOLDOUT
    data: DataSpec = Field(description="the data set of every run")
    teacher: StudyTeachers = Field(description="the teachers: methods and training settings")
    student: StudyStudents = Field(description="the students: methods and training settings")
    pairs: list[PairConfig] | None = Field(None, description="default: [teacher.model -> student.model]")
    sweeps: list[SweepConfig] = Field([], description="method variants with one parameter swept, or the study "
                                      "repeated over a data set parameter")
    trajectory: TrajectoryConfig | None = Field(None, description="students distilled from teacher checkpoints "
                                                "along training")
    group_size: PositiveInt = Field(8, description="train up to this many students of one teacher together, one "
                                    "teacher pass per batch (bit-identical to separate runs; 1: one at a time)")

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.pairs is None and (self.teacher.model is None or self.student.model is None):
            raise ValueError("give teacher.model and student.model, or a list of pairs")
        for role_name, role in (("teacher", self.teacher), ("student", self.student)):
            for label in role.overrides:
                if label not in role.methods:
                    raise ValueError(f"{role_name}.overrides: {label!r} is not a {role_name} method label "
                                     f"({', '.join(role.methods)})")
                try:
                    role.settings(label)
                except ValidationError as e:
                    err = e.errors()[0]
                    key = ".".join(str(x) for x in err["loc"])
                    raise ValueError(f"{role_name}.overrides.{label}.{key}: {err['msg']}") from None
        for label, spec in self.teacher.methods.items():
            check_l2(spec, self.teacher.settings(label)[0], f"teacher.methods.{label}")
            ref = spec.get("pretrained")
            if ref == label:
                raise ValueError(f"teacher.methods.{label}.pretrained: a teacher cannot start from itself")
        data_sweeps = [sw for sw in self.sweeps if sw.role == "data"]
        if data_sweeps:
            if len(self.sweeps) > 1 or self.trajectory is not None:
                raise ValueError("sweeps: a data sweep is the study's only sweep (no method sweep, no trajectory)")
            sw = data_sweeps[0]
            if sw.method is not None:
                raise ValueError("sweeps: a data sweep repeats every method; drop its 'method'")
            if sw.same_steps and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                         for v in sw.values):
                raise ValueError("sweeps: same_steps needs positive integer values (a size such as num_train)")
            entry = DATASETS.get(self.data.name)
            if sw.param == "name" or sw.param not in entry.params.model_fields:
                raise ValueError(f"sweeps: {sw.param!r} is not a parameter of data set {self.data.name!r} "
                                 f"({', '.join(entry.params.model_fields)})")
            for v in sw.values:
                try:
                    entry.validate({**self.data.params, sw.param: v})
                except ValidationError as e:
                    _, msg = describe_first_error(e, entry.params)
                    raise ValueError(f"sweeps[0] (data.{sw.param}={v!r}): {msg}") from None
        for i, sw in enumerate(self.sweeps):
            if sw.role == "data":
                continue
            if sw.method is None:
                raise ValueError(f"sweeps[{i}]: a {sw.role} sweep needs 'method' (a {sw.role} method label)")
            if sw.same_steps:
                raise ValueError(f"sweeps[{i}]: same_steps applies to data sweeps only")
            labels = self.teacher.methods if sw.role == "teacher" else self.student.methods
            if sw.method not in labels:
                raise ValueError(f"sweeps: {sw.role} method label {sw.method!r} is not one of {sorted(labels)}")
            _check_sweep(i, sw, labels[sw.method], TEACHER_METHODS if sw.role == "teacher" else DISTILL_METHODS)
        for mlabel, per in self.student.by_teacher.items():
            if mlabel not in self.student.methods:
                raise ValueError(f"student.by_teacher: {mlabel!r} is not a student method label "
                                 f"({', '.join(self.student.methods)})")
            spec = self.student.methods[mlabel]
            for tlabel, params in per.items():
                if tlabel not in self.teacher.methods:
                    raise ValueError(f"student.by_teacher.{mlabel}: {tlabel!r} is not a teacher method label "
                                     f"({', '.join(self.teacher.methods)})")
                entry = DISTILL_METHODS.get(spec.name)
                try:
                    entry.validate({**spec.params, **params})
                except ValidationError as e:
                    loc, msg = describe_first_error(e, entry.params)
                    key = ".".join(str(x) for x in loc)
                    raise ValueError(f"student.by_teacher.{mlabel}.{tlabel}.{key}: {msg}") from None
        for i, pair in enumerate(self.pairs or []):
            for lbl in pair.teacher_methods or []:
                if lbl not in self.teacher.methods:
                    raise ValueError(f"pairs[{i}].teacher_methods: {lbl!r} is not a teacher method label "
                                     f"({', '.join(self.teacher.methods)})")
        if self.trajectory is not None:
            tr = self.trajectory
            every = self.teacher.train.save_every
            if every == 0 or tr.every % every:
                raise ValueError(f"trajectory.every={tr.every} needs teacher.train.save_every dividing it "
                                 f"(got {every})")
            for lbl in tr.teachers or []:
                if lbl not in self.teacher.methods:
                    raise ValueError(f"trajectory.teachers: {lbl!r} is not a teacher method label")
            if tr.method not in self.student.methods:
                raise ValueError(f"trajectory.method: {tr.method!r} is not a student method label")
        return self

    def pair_list(self) -> list[PairConfig]:
        if self.pairs is not None:
            return list(self.pairs)
        return [PairConfig(teacher=self.teacher.model, student=self.student.model)]


class EvalConfig(Strict):
    """``kdlab eval``: evaluate a checkpoint on a data set's test split."""

    path: str = Field(description="run folder or checkpoint file")
    checkpoint: str = Field("last", description="last, best or epoch_XXX (ignored when path is a file)")
    data: DataSpec | None = Field(None, description="default: the data set the run was trained on")
    teacher: TeacherRef | None = Field(None, description="also report agreement and KL with this teacher")
    batch_size: PositiveInt = Field(512, description="evaluation batch size (memory only)")
    device: Device = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    holdout: float | None = Field(None, ge=0, lt=1, description="held-out fraction of the training data for "
                                  "temperature scaling (default: the run's own)")
