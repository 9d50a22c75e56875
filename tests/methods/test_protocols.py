"""Distillation protocols: the weights of REFERENCE.md section 2 in the resolved configs of runs and studies."""

import pytest
import yaml

from conftest import TINY_TRAIN, student_cfg, teacher_cfg
from kdlab.config import DistillRunConfig, StudyConfig, load_config
from kdlab.core.errors import ConfigError
from kdlab.methods.protocols import protocol_weights
from kdlab.runs.student import distill
from kdlab.runs.teacher import train_teacher
from kdlab.study import plan_study

# REFERENCE.md section 2, written out: (gamma, alpha, beta) per protocol, method and teacher kind
EXPECTED = {
    ("soteacher", "kd", "standard"): (0.5, 0.5, None),
    ("soteacher", "kd", "soteacher"): (0.5, 0.5, None),
    ("soteacher", "fitnet", "standard"): (1.0, 1.0, 100.0),
    ("soteacher", "fitnet", "soteacher"): (1.0, 1.0, 50.0),
    ("soteacher", "crd", "soteacher"): (1.0, 1.0, 0.5),
    ("soteacher", "pkt", "soteacher"): (1.0, 1.0, 15000.0),
    ("crd", "kd", "soteacher"): (0.1, 0.9, None),
    ("crd", "fitnet", "soteacher"): (1.0, 0.0, 100.0),  # one column: the CRD scripts know one kind of teacher
    ("crd", "crd", "standard"): (1.0, 0.0, 0.8),
    ("sftn", "kd", "standard"): (0.1, 0.9, None),
    ("sftn", "at", "standard"): (1.0, 1.0, 1000.0),
}


@pytest.mark.parametrize("key", list(EXPECTED))
def test_protocol_weights_are_reference_section_2(key):
    protocol, method, kind = key
    gamma, alpha, beta = EXPECTED[key]
    w = protocol_weights(protocol, method, kind)
    assert (w["gamma"], w["alpha"], w["T"]) == (gamma, alpha, 4.0)
    if beta is not None:
        assert w["beta"] == beta


def test_sskd_lambdas_follow_the_teacher_kind():
    assert protocol_weights("soteacher", "sskd", "standard")["tf_weight"] == 2.7
    assert protocol_weights("soteacher", "sskd", "soteacher")["tf_weight"] == 1.0
    assert protocol_weights("sftn", "sskd")["gamma"] == 0.1  # the SSKD authors' code defaults
    assert protocol_weights("crd", "sskd") == {} and protocol_weights("soteacher", "dkd") == {}


def _study(**student):
    return {"name": "p", "out_dir": "runs/p", "seeds": [0], "data": {"name": "digits"},
            "teacher": {"model": "mlp", "methods": {"standard": "standard", "soteacher": "soteacher"}},
            "student": {"model": "mlp", "methods": {"alone": "none", "kd": "kd", "fitnet": {"name": "fitnet"},
                                                    "fixed": {"name": "fitnet", "beta": 7.0}}, **student}}


def _method(plan, teacher, method):
    run = next(r for r in plan if r.kind == "student" and r.teacher_label == teacher and r.method_label == method)
    return load_config(DistillRunConfig, run.config).method


@pytest.mark.fast
def test_a_study_row_pairs_each_teacher_with_its_weights():
    plan = plan_study(load_config(StudyConfig, _study(protocol="soteacher",
                                                      by_teacher={"kd": {"soteacher": {"T": 2.0}}})))
    for teacher in ("standard", "soteacher"):
        kd = _method(plan, teacher, "kd")
        assert (kd["gamma"], kd["alpha"]) == (0.5, 0.5)
        assert kd["T"] == (2.0 if teacher == "soteacher" else 4.0)  # the study's per-teacher parameter
        fit = _method(plan, teacher, "fitnet")
        assert (fit["gamma"], fit["alpha"], fit["beta"]) == (1.0, 1.0, 100.0 if teacher == "standard" else 50.0)
        assert _method(plan, teacher, "fixed")["beta"] == 7.0  # a value the user set wins over the protocol
        run = next(r for r in plan if r.teacher_label == teacher and r.method_label == "fitnet")
        assert run.config["protocol"] == "soteacher"
    alone = next(r for r in plan if r.method_label == "alone")
    assert "protocol" not in alone.config


@pytest.mark.fast
def test_without_a_protocol_methods_keep_their_defaults():
    plan = plan_study(load_config(StudyConfig, _study()))
    assert _method(plan, "soteacher", "fitnet")["beta"] == 100.0  # the method's own default (standard preset)
    assert (_method(plan, "soteacher", "kd")["gamma"], _method(plan, "soteacher", "kd")["alpha"]) == (0.1, 0.9)


def test_by_teacher_is_validated_at_load():
    with pytest.raises(ConfigError, match="by_teacher.fitnet: 'sotea' is not a teacher method label"):
        load_config(StudyConfig, _study(by_teacher={"fitnet": {"sotea": {"beta": 1}}}))
    with pytest.raises(ConfigError, match=r"by_teacher.fitnet.soteacher.bta: unknown key; did you mean 'beta'"):
        load_config(StudyConfig, _study(by_teacher={"fitnet": {"soteacher": {"bta": 1}}}))
    with pytest.raises(ConfigError, match="protocol"):
        load_config(StudyConfig, _study(protocol="hinton"))


def test_a_single_run_resolves_the_protocol_from_its_teachers_method(tmp_path):
    so = train_teacher(teacher_cfg(tmp_path / "so", method={"name": "soteacher"}, train={**TINY_TRAIN, "epochs": 1}))
    res = distill(student_cfg(tmp_path / "s", so.run_dir, method={"name": "fitnet"}, protocol="soteacher",
                              train={**TINY_TRAIN, "epochs": 1}))
    cfg = yaml.safe_load((res.run_dir / "config.yaml").read_text())
    assert cfg["protocol"] == "soteacher"
    assert {k: cfg["method"][k] for k in ("gamma", "alpha", "beta", "T")} == \
        {"gamma": 1.0, "alpha": 1.0, "beta": 50.0, "T": 4.0}
    plus = distill(student_cfg(tmp_path / "p", so.run_dir, method={"name": "kdplus", "base": {"name": "crd",
                                                                                           "nce_k": 16}},
                               protocol="crd", train={**TINY_TRAIN, "epochs": 1}))
    base = yaml.safe_load((plus.run_dir / "config.yaml").read_text())["method"]["base"]
    assert (base["alpha"], base["beta"], base["nce_k"]) == (0.0, 0.8, 16)
