"""Base class of distillation methods: student loss = gamma * CE + alpha * KD + beta * method loss.

Two conventions for the weights (the CRD benchmark: Tian, Krishnan & Isola, 2020, Contrastive Representation
Distillation; SoTeacher App. G.2).  The CRD benchmark's scripts (``scripts/run_cifar_distill.sh``) train every
feature method *without* KD (gamma = 1, alpha = 0, the method's beta) and KD alone with gamma = 0.1, alpha = 0.9
(T = 4).  Training feature methods jointly with logit KD (gamma = alpha = 1, T = 4, plus beta * the method's term) is
SoTeacher's convention (App. G.2; SFTN's Sec. 4.1 also describes its feature-method runs as joint with KD).  kdlab's
feature methods default to the joint convention (gamma = alpha = 1); a reproduction of a CRD-protocol table sets
alpha = 0.  The logit-only methods (kd, rco) default to the CRD weights, or SoTeacher's 0.5 / 0.5 with
``beta_preset: soteacher``.  A method subclasses :class:`Distiller`, declares its parameters (``Params``, inheriting
the shared ones), its default beta for standard and for SoTeacher teachers (``BETA``), and implements
:meth:`Distiller.method_loss`.  Trainable connectors (regressors, embeddings, paraphrasers) are submodules built in
``__init__`` from ``self.student_shapes`` / ``self.teacher_shapes``, so the loop optimises them with the student and
checkpoints save them.

Shared options:

* ``switch_epoch`` (late distillation, Nagarajan et al. 2023, Sec. 3.2): before this epoch the student trains on
  the one-hot labels alone (cross-entropy), from it on with the full distillation loss;
* ``beta_preset``: ``standard`` or ``soteacher`` (SoTeacher App. G halves every feature-loss weight), used when
  ``beta`` is not given;
* ``cache_teacher``: for logit-only methods on training data without random augmentation, the frozen teacher's
  logits are computed once per sample and looked up by the batch's indices (``auto``), instead of a teacher
  forward pass every step.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor

from kdlab.core.distributed import gather_with_grad
from kdlab.core.errors import ConfigError
from kdlab.core.registry import StrictParams
from kdlab.core.state import LoopState
from kdlab.data.base import Batch
from kdlab.methods.base import DistillObjective, StepOutput
from kdlab.methods.context import DistillContext
from kdlab.models.contract import Features

STANDARDISE_EPS = 1e-7


def standardise_logits(z: Tensor) -> Tensor:
    """Each sample's logits z-scored over the classes, as logit standardisation's code computes it (Sun et al.
    2024, sunshangquan/logit-standardization-KD @ f6e5aa5, ``normalize``): ``(z - mean) / (1e-7 + std)`` with the
    unbiased (N - 1) standard deviation and the 1e-7 added to the deviation, not inside a square root (the
    code made the paper's tables; its values are the reference of kdlab's tests)."""
    return (z - z.mean(dim=-1, keepdim=True)) / (STANDARDISE_EPS + z.std(dim=-1, keepdim=True))


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0,
            standardise: bool = False) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, mean over the batch (Hinton et al. 2015);
    with ``standardise`` both logits are first z-scored per sample (:func:`standardise_logits`), T then being
    logit standardisation's base temperature."""
    if standardise:
        student_logits, teacher_logits = standardise_logits(student_logits), standardise_logits(teacher_logits)
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


LOGIT_STANDARDISE = Field(
    False, description="logit standardisation (Sun et al. 2024): z-score each sample's logits (mean, unbiased std "
    "over the classes, as the authors' code) before the temperature, in every KD term on class logits; T is then "
    "the base temperature (the authors' CIFAR runs: T 2, KD weight 9, CE 0.1)")


class DistillerParams(StrictParams):
    gamma: float = Field(1.0, ge=0, description="weight of the cross-entropy with the labels")
    alpha: float = Field(1.0, ge=0, description="weight of logit KD")
    beta: float | None = Field(None, ge=0, description="weight of the method's own loss (default: BETA[preset])")
    T: float = Field(4.0, gt=0, description="KD temperature")
    beta_preset: Literal["standard", "soteacher"] = Field(
        "standard", description="the default beta: standard (BETA, the CRD benchmark's) or soteacher (SoTeacher "
        "App. G: halved)")
    switch_epoch: int = Field(0, ge=0, description="late distillation: cross-entropy only before this epoch")
    logit_standardise: bool = LOGIT_STANDARDISE
    cache_teacher: Literal["auto", "on", "off"] = Field(
        "auto", description="compute the teacher's logits once per training sample (auto: when the method uses "
                            "logits only and the training inputs are not augmented)")

    def ineffective(self, epochs: int) -> list[str]:
        """Settings that cannot take effect in a run of ``epochs`` epochs, each as 'key: why' (warned about)."""
        if self.switch_epoch >= epochs > 0:
            return [f"switch_epoch {self.switch_epoch} >= train.epochs {epochs}: the run never distils (cross-"
                    "entropy only)"]
        return []


# cross-entropy / KD weights of the logit-only methods (kd, rco) when not given, per beta_preset: the CRD benchmark
# code's, and SoTeacher's own logit-KD runs (SoTeacher App. G.2)
LOGIT_WEIGHTS = {"standard": (0.1, 0.9), "soteacher": (0.5, 0.5)}


class LogitParams(DistillerParams):
    gamma: float | None = Field(None, ge=0, description="weight of the cross-entropy term (default 0.1; 0.5 with "
                                                        "beta_preset soteacher)")
    alpha: float | None = Field(None, ge=0, description="weight of the KD term (default 0.9; 0.5 with beta_preset "
                                                        "soteacher)")

    @field_validator("beta")
    @classmethod
    def _no_own_term(cls, v: float | None) -> float | None:
        if v:  # 0 (what protocols write) weighs nothing either
            raise PydanticCustomError("no_beta", "a logit-only method has no loss term of its own for beta to weigh "
                                      "(alpha weighs its KD term)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _preset_weights(cls, data: Any) -> Any:
        # filled in here, so a resolved config (config.yaml) states the weights the run used
        if isinstance(data, dict) and data.get("beta_preset", "standard") in LOGIT_WEIGHTS:
            data = {**data, **logit_weights(data.get("beta_preset", "standard"), data.get("gamma"),
                                            data.get("alpha"))}
        return data


class RelationalParams(DistillerParams):
    relations: Literal["global", "process"] = Field(
        "global", description="several processes: relate the samples of the whole global batch (gathered; as one "
                              "process does) or of each process's part only")


def logit_weights(preset: str, gamma: float | None, alpha: float | None) -> dict[str, float]:
    """``gamma`` and ``alpha`` of a logit-only method, filled in from the preset where not given."""
    g, a = LOGIT_WEIGHTS[preset]
    return {"gamma": g if gamma is None else gamma, "alpha": a if alpha is None else alpha}


@torch.no_grad()
def probe_features(model: nn.Module, input_shape: tuple[int, ...]) -> Features:
    """Features of ``model`` on a zero batch of 2 (eval mode), to size connectors before training."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = model(torch.zeros(2, *input_shape, device=dev), features=True)
    model.train(was)
    return out


class Distiller(DistillObjective):
    """gamma * CE(s, y) + alpha * KD(s, t) + beta * method_loss(student features, teacher features)."""

    Params = DistillerParams
    BETA: dict[str, float] = {"standard": 0.0, "soteacher": 0.0}
    #: how each distillation protocol (kdlab.methods.protocols) weighs this method: "logit" (its CE / KD weights),
    #: "alone" (the method's term without KD), "with_kd" (jointly with KD), "own" (PROTOCOL_WEIGHTS); a protocol
    #: not named here leaves the method's parameters as they are
    PROTOCOLS: dict[str, str] = {}
    #: protocol -> teacher kind -> parameters, for the protocols where the role is "own"
    PROTOCOL_WEIGHTS: dict[str, dict[str, dict[str, float]]] = {}
    #: whether method_loss needs the Features of both networks (False: logits only)
    needs_features: bool = True
    #: whether the teacher stays the same network for the whole run (RCO swaps it: no cached outputs)
    fixed_teacher: bool = True

    def __init__(self, params: DistillerParams, ctx: DistillContext):
        super().__init__(ctx.teacher)
        teacher, student, data = ctx.teacher, ctx.student, ctx.data
        self.gamma, self.alpha, self.T, self.switch_epoch = params.gamma, params.alpha, params.T, params.switch_epoch
        self.standardise = params.logit_standardise
        self.relations = getattr(params, "relations", "global")  # RelationalParams only
        self.__dict__["_data"] = data
        self._cached_logits: Tensor | None = None
        self.cache = self._cache_decision(params.cache_teacher, data)
        self.beta = self.BETA[params.beta_preset] if params.beta is None else params.beta
        self.input_shape = tuple(data.input_shape) if data is not None else None
        if self.needs_features and student is not None and self.input_shape is not None:
            t, s = probe_features(teacher, self.input_shape), probe_features(student, self.input_shape)
            self.teacher_shapes = [tuple(f.shape[1:]) for f in t.stages]
            self.student_shapes = [tuple(f.shape[1:]) for f in s.stages]
            self.teacher_dim, self.student_dim = t.embedding.shape[1], s.embedding.shape[1]

    @classmethod
    def resolve_params(cls, params):
        """``beta`` left open takes the method's ``BETA`` for its preset, written into the config."""
        if getattr(params, "beta", 0) is None and hasattr(params, "beta_preset"):
            params = params.model_copy(update={"beta": cls.BETA[params.beta_preset]})
        return params

    def distills_features(self) -> bool:
        """Whether the distillation steps (after any initialisation stage) need features, not just logits."""
        return self.needs_features

    def global_batch(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """The tensors over the whole global batch (every process's rows, in order, gradients flowing back to each
        process's own), for terms that relate the samples of a batch to each other (SP, CC, RKD, PKT), so that
        several processes compute what one does; ``relations: process`` keeps each process's part."""
        if self.relations == "process":
            return tensors
        return tuple(gather_with_grad(t) for t in tensors)

    def may_skip_parameters(self) -> bool:
        # cross-entropy only before switch_epoch, and no method term at beta 0: connectors then get no gradient
        trainable = any(p.requires_grad for p in self.parameters())
        return trainable and (self.switch_epoch > 0 or not self.beta)

    def _cache_decision(self, mode: str, data) -> bool:
        from kdlab.data.base import Split

        suitable = (not self.distills_features() and self.fixed_teacher and data is not None
                    and getattr(data, "augment", None) is None and isinstance(getattr(data, "train", None), Split))
        if mode == "on" and not suitable:
            raise ConfigError(f"method.cache_teacher: on needs a method that uses logits only, a fixed teacher and "
                              f"training inputs without random augmentation ({type(self).__name__} / "
                              f"{getattr(data, 'name', '?')})")
        return suitable and mode != "off"

    def on_fit_start(self, model: nn.Module, state: LoopState) -> None:
        if self.cache:
            self._cached_logits = self._teacher_logits_of_training_set(state.device)
        # a resumed run restores the initialised connectors from its checkpoint instead of initialising again
        if state.epoch == 0:
            self.initialize(model, state)

    def _teacher_logits_of_training_set(self, device: torch.device) -> Tensor:
        """The teacher's logits for every training sample, in dataset order (the teacher runs in eval mode, so
        a sample's logits do not depend on the rest of its batch)."""
        def compute() -> Tensor:
            logits = []
            with torch.no_grad():
                for b in self._data.eval_loader("train", 512, device).epoch(0):
                    logits.append(self.teacher(b.x).float())
            return torch.cat(logits)

        shared = self.__dict__.get("_shared")
        return shared.training_logits(compute) if shared is not None else compute()

    def initialize(self, model: nn.Module, state: LoopState) -> None:
        """Initialisation stage before distillation (AB, FT, FSP); ``state.train_loader`` gives the data."""

    def kd_term(self, s_logits: Tensor, t_logits: Tensor, state: LoopState | None) -> Tensor:
        """The KD term on class logits (CTKD overrides it: a learned temperature)."""
        return kd_loss(s_logits, t_logits, self.T, self.standardise)

    def method_loss(self, s: Features, t: Features, batch: Batch, state: LoopState) -> Tensor | dict[str, Tensor]:
        """The method's own term (weighted by beta); a dict of named terms is summed."""
        raise NotImplementedError

    def teacher_outputs(self, batch: Batch) -> Features | Tensor:
        if self._cached_logits is not None:
            return self._cached_logits[batch.index]
        # no_grad, not inference_mode: inference tensors may not be saved for the student's backward, so they would
        # have to be copied first
        with torch.no_grad():
            return self.teacher_forward(batch.x, self.needs_features)

    def forward(self, model: nn.Module, batch: Batch, state: LoopState) -> StepOutput:
        if state is not None and state.epoch < self.switch_epoch:
            logits = model(batch.x)
            ce = F.cross_entropy(logits, batch.y)
            return StepOutput(ce, logits, {"ce": ce.detach()})
        t = self.teacher_outputs(batch)
        s = model(batch.x, features=True) if self.needs_features else model(batch.x)
        s_logits = s.logits if self.needs_features else s
        t_logits = t.logits if self.needs_features else t
        ce = F.cross_entropy(s_logits, batch.y)
        parts = {"ce": ce.detach()}
        loss = self.gamma * ce
        if self.alpha:
            kd = self.kd_term(s_logits, t_logits, state)
            loss = loss + self.alpha * kd
            parts["kd"] = kd.detach()
        if self.beta:
            m = self.method_loss(s, t, batch, state)
            if isinstance(m, dict):
                parts.update({k: v.detach() for k, v in m.items()})
                m = sum(m.values())
            else:
                parts["method"] = m.detach()
            loss = loss + self.beta * m
        return StepOutput(loss, s_logits, parts)
