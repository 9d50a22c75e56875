"""Distillation protocols: the loss weights a paper's tables were made with, as named presets.

Student loss = gamma * CE + alpha * KD(T) + beta * method loss (the code behind the papers' tables).  A protocol
fills gamma, alpha, beta and T (and SSKD's four lambdas) of every method it covers, for the kind of teacher a run
distils from; a value the user sets explicitly always wins.  The resolved run config (``config.yaml``) holds the
numbers that were used, and ``protocol`` names where they came from.

* ``crd`` - the CRD benchmark's scripts (Tian et al. 2020, scripts/run_cifar_distill.sh; the CRD paper's tables):
  KD alone with gamma 0.1, alpha 0.9, T 4; every feature method *without* KD (gamma 1, alpha 0) and its beta from
  the standard column below.
* ``sftn`` - SFTN's tables (Park et al. 2021, Sec. 4.1: "the feature distillation methods [18, 20, 37, 38, 22, 39,
  40, 21, 19] conduct joint distillation with conventional KD", i.e. FitNets, AT, SP, VID, RKD, PKT, AB, FT and OH
  (OFD); the setup otherwise "identical to the one performed in CRD"): KD alone as in ``crd``; those nine methods
  jointly with KD, gamma 1, alpha 1 (the paper gives no weights: the CRD code's own joint variant, CRD+KD, uses
  these) and the standard beta (OFD: its default).  CRD [23] and SSKD [26] are not in the list and the paper says
  it ran "the implementations provided by the authors": CRD as its authors' scripts run it (gamma 1, alpha 0, beta
  0.8), SSKD with its authors' code defaults (lambda 0.1, 0.9, 2.7, 10.0).  (An earlier kdlab ran CRD with KD
  here; the text does not say so.)
* ``soteacher`` - SoTeacher App. G.2: KD alone CE * 0.5 + KD * 0.5 at T 4; every feature method jointly with KD,
  gamma 1, alpha 1, beta from the column of the teacher it distils from: the published beta with a standard
  teacher, half of it with a SoTeacher teacher (App. Table 5; FSP, which the table lacks, is halved too); SSKD
  lambda 1, 1, 2.7, 10 (standard) or 1, 1, 1, 10 (SoTeacher).

| method | beta, standard teacher | beta, SoTeacher teacher |
|---|---|---|
| FitNets | 100 | 50 |
| AT | 1000 | 500 |
| SP | 3000 | 1500 |
| CC | 0.02 | 0.01 |
| VID | 1.0 | 0.5 |
| RKD | 1.0 | 0.5 |
| PKT | 30000 | 15000 |
| AB | 1.0 | 0.5 |
| FT | 200 | 100 |
| NST | 50 | 25 |
| FSP | 50 | (25) |
| CRD | 0.8 | 0.5 |

Which protocol weighs a method how is the method's own declaration, beside its betas: ``PROTOCOLS`` (protocol ->
"logit", "alone", "with_kd" or "own") and ``BETA`` on its class (one source of truth; ``PROTOCOL_WEIGHTS`` for
"own").  KD+ applies the protocol to its base method; a method a protocol does not name (DKD, and the
teacher-free DML / KDCL) keeps its own parameters.  A teacher's kind is ``soteacher`` for the SoTeacher method
(and its no_lr / no_cr ablations), ``standard`` for every other teacher method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdlab.core.errors import ConfigError

ROLES = ("logit", "alone", "with_kd", "own")
# gamma, alpha, T of a feature method without KD and jointly with KD (the same numbers in every protocol)
ALONE = {"gamma": 1.0, "alpha": 0.0, "T": 4.0}
WITH_KD = {"gamma": 1.0, "alpha": 1.0, "T": 4.0}


@dataclass(frozen=True)
class Protocol:
    name: str
    source: str
    kd: dict[str, float]  # gamma, alpha, T of the logit-only methods
    per_teacher: bool  # whether the betas follow the teacher's kind (else always the standard column)


PROTOCOLS: dict[str, Protocol] = {
    "crd": Protocol("crd", "CRD benchmark scripts (Tian et al. 2020)", {"gamma": 0.1, "alpha": 0.9, "T": 4.0},
                    per_teacher=False),
    "sftn": Protocol("sftn", "SFTN Sec. 4.1 (Park et al. 2021), on the CRD benchmark's weights",
                     {"gamma": 0.1, "alpha": 0.9, "T": 4.0}, per_teacher=False),
    "soteacher": Protocol("soteacher", "SoTeacher App. G.2 (Dong et al. 2023)", {"gamma": 0.5, "alpha": 0.5, "T": 4.0},
                          per_teacher=True),
}
TEACHER_KINDS = ("standard", "soteacher")


def teacher_kind(teacher_method: str | None) -> str:
    """The column of a protocol's weights that a teacher trained by ``teacher_method`` takes."""
    return "soteacher" if teacher_method == "soteacher" else "standard"


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        from kdlab.core.registry import hint

        h = hint(name, PROTOCOLS)
        raise ConfigError(f"protocol: unknown protocol {name!r}" + (f"; {h}" if h else "")
                          + f" (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]


def protocol_role(protocol: str, method: str) -> str | None:
    """How ``protocol`` weighs ``method`` (one of :data:`ROLES`), or None where it leaves the method as it is."""
    from kdlab.core.registry import DISTILL_METHODS

    get_protocol(protocol)
    return getattr(DISTILL_METHODS.get(method).obj, "PROTOCOLS", {}).get(protocol)


def protocol_weights(protocol: str, method: str, kind: str = "standard") -> dict[str, Any]:
    """The parameters ``protocol`` sets for ``method`` distilled from a teacher of ``kind`` (empty: not covered)."""
    from kdlab.core.registry import DISTILL_METHODS

    p = get_protocol(protocol)
    col = kind if p.per_teacher else "standard"
    role = protocol_role(protocol, method)
    cls = DISTILL_METHODS.get(method).obj
    if role == "logit":
        return {**p.kd, "beta_preset": col}
    if role == "own":
        weights = cls.PROTOCOL_WEIGHTS[protocol]
        return {**weights.get(col, weights["standard"]), "beta_preset": col}
    if role in ("alone", "with_kd"):
        return {**(ALONE if role == "alone" else WITH_KD), "beta": cls.BETA[col], "beta_preset": col}
    return {}


def apply_protocol(protocol: str | None, spec: dict[str, Any], kind: str = "standard") -> dict[str, Any]:
    """``spec`` (a method config as the user wrote it: ``name`` and the parameters set explicitly) with the
    protocol's weights in every parameter it does not set; KD+'s base method is resolved the same way."""
    out = dict(spec)
    if not protocol:
        return out
    name = out.get("name", "kd")
    if name == "kdplus":
        base = out.get("base", "kd")
        out["base"] = apply_protocol(protocol, {"name": base} if isinstance(base, str) else dict(base), kind)
        return out
    for key, value in protocol_weights(protocol, name, kind).items():
        out.setdefault(key, value)
    return out


__all__ = ["PROTOCOLS", "ROLES", "Protocol", "apply_protocol", "get_protocol", "protocol_role", "protocol_weights",
           "teacher_kind"]
