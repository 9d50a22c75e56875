"""Logit standardisation (Sun et al. 2024) against values computed with the authors' code on fixed inputs
(tests/methods/reference/logit_standardisation.pt: sunshangquan/logit-standardization-KD @ f6e5aa5, its
``normalize``, ``kd_loss`` and ``dkd_loss``; float64, 8 samples, 100 classes; see reference/PROVENANCE.md).
Losses and gradients agree to a relative error of 1e-5 or better."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdlab.methods.distill.dkd import dkd_terms
from kdlab.methods.distiller import kd_loss, standardise_logits

REFERENCE = torch.load(Path(__file__).parent / "reference" / "logit_standardisation.pt", weights_only=False)
INPUTS, CASES = REFERENCE["inputs"], REFERENCE["cases"]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def loss_and_grad(fn):
    s = INPUTS["student_logits"].clone().requires_grad_(True)
    loss = fn(s)
    (grad,) = torch.autograd.grad(loss, s)
    return loss.detach(), grad


def test_standardised_logits_and_their_gradient():
    case = CASES["normalize"]
    out, grad = loss_and_grad(lambda s: (standardise_logits(s) * case["vjp_cotangent"]).sum())
    assert relative_error(standardise_logits(INPUTS["student_logits"]), case["out"]) < 1e-12
    assert relative_error(grad, case["vjp_grad"]) < 1e-10


def test_kd_with_standardised_logits():
    case, t = CASES["kd_ls_T2_w9"], INPUTS["teacher_logits"]
    h = case["hparams"]
    loss, grad = loss_and_grad(lambda s: kd_loss(s, t, h["T"], standardise=True))
    assert relative_error(loss, case["kd_loss_unweighted"]) < 1e-10
    assert relative_error(grad, case["grad_kd_loss_unweighted"]) < 1e-10
    # the authors' CIFAR weights: CE (raw logits) 0.1, KD 9
    total, grad = loss_and_grad(lambda s: h["ce_weight"] * F.cross_entropy(s, INPUTS["target"])
                                + h["kd_weight"] * kd_loss(s, t, h["T"], standardise=True))
    assert relative_error(total, case["total"]) < 1e-10 and relative_error(grad, case["grad_total"]) < 1e-10
    # off: plain KD, as the authors' code without --logit-stand (and mdistiller) computes it
    loss, grad = loss_and_grad(lambda s: kd_loss(s, t, 4.0))
    assert relative_error(loss, CASES["kd_plain_T4"]["kd_loss_unweighted"]) < 1e-10
    assert relative_error(grad, CASES["kd_plain_T4"]["grad"]) < 1e-10


@pytest.mark.parametrize("name, standardise", [("dkd_ls_res32x4_res8x4", True), ("dkd_ls_wrn40_2_wrn16_2", True),
                                               ("dkd_plain_a1_b8_T4", False)])
def test_dkd_with_standardised_logits(name, standardise):
    case = CASES[name]
    h = case.get("hparams", {"alpha": 1.0, "beta": 8.0, "T": 4.0})
    t, y = INPUTS["teacher_logits"], INPUTS["target"]

    def dkd(s):
        zs, zt = (standardise_logits(s), standardise_logits(t)) if standardise else (s, t)
        tckd, nckd = dkd_terms(zs, zt, y, h["T"])
        return h["alpha"] * tckd + h["beta"] * nckd

    loss, grad = loss_and_grad(dkd)
    # kdlab computes DKD's binary probabilities from log-sum-exps (the reference: sums of probabilities)
    assert relative_error(loss, case["dkd_loss_no_warmup"]) < 1e-5
    assert relative_error(grad, case["grad"]) < 1e-5


@pytest.mark.parametrize("method, part", [("kd", "kd"), ("dkd", "nckd"), ("dist", "intra"), ("sp", "kd")])
def test_the_option_reaches_every_kd_term_on_logits(method, part):
    from kdlab.config.components import Component
    from kdlab.core.registry import DISTILL_METHODS
    from kdlab.data.base import Batch
    from kdlab.methods import build_distill_objective
    from kdlab.models import build_model

    torch.manual_seed(0)
    teacher = build_model("mlp", {"hidden": [16]}, 10, (1, 8)).eval()
    student = build_model("mlp", {"hidden": [8]}, 10, (1, 8))
    batch = Batch(torch.randn(16, 1, 8), torch.randint(0, 10, (16,)), torch.arange(16))

    def parts(standardise: bool) -> dict:
        cls = DISTILL_METHODS.get(method).obj
        params = cls.Params(logit_standardise=standardise, **({"alpha": 1.0} if method == "sp" else {}))
        params = cls.resolve_params(params)
        spec = Component(name=method, params=params.model_dump())
        return build_distill_objective(spec, teacher, student, None)(student, batch, None).parts

    on, off = parts(True), parts(False)
    assert not torch.isclose(on[part], off[part])
    if method == "kd":
        with torch.no_grad():
            assert torch.isclose(on["kd"], kd_loss(student(batch.x), teacher(batch.x), 4.0, standardise=True))
