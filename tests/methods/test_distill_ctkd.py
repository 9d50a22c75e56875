"""CTKD's global temperature against values computed with the authors' code on fixed inputs
(tests/methods/reference/ctkd.pt: zhengli97/CTKD @ 7d52522, ``Global_T``, ``DistillKL``, ``CosineDecay``; float64;
see reference/PROVENANCE.md): the temperature, the loss and the gradients of the student's logits and of the
temperature parameter (through the gradient reversal) at several epochs of the curriculum."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdlab.core.state import LoopState
from kdlab.methods.distill.ctkd import CTKD, CTKDParams, curriculum_lambda, instance_kd_loss
from kdlab.methods.distiller import kd_loss

REFERENCE = torch.load(Path(__file__).parent / "reference" / "ctkd.pt", weights_only=False)
INPUTS, CASES = REFERENCE["inputs"], REFERENCE["cases"]
KD_CASES = sorted(k for k in CASES if k.startswith("kd_global"))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    b = torch.as_tensor(b, dtype=torch.float64)
    return float((torch.as_tensor(a) - b).norm() / b.norm().clamp_min(1e-300))


class _Ctx:
    teacher = student = data = run_dir = teacher_path = device = teacher_checkpoints = None
    epochs = 240


def _state(epoch: int) -> LoopState:
    return LoopState(epoch=epoch - 1, epochs=240, step=0, steps_per_epoch=1, num_train=8, num_classes=100,
                     device=torch.device("cpu"))


@pytest.mark.parametrize("name", KD_CASES)
def test_the_learned_temperature_and_its_gradients_equal_the_authors(name):
    case = CASES[name]
    assert curriculum_lambda(case["epoch"]) == pytest.approx(case["lambda_decay_value"], abs=1e-15)
    ctkd = CTKD(CTKDParams(init=float(case["global_T_param"])), _Ctx()).double()
    with torch.no_grad():  # the parameter in float64 (built in float32)
        ctkd.raw_temperature.fill_(float(case["global_T_param"]))
    s = INPUTS["student_logits"].clone().requires_grad_(True)
    t = ctkd.temperature(_state(case["epoch"]))
    assert t.item() == pytest.approx(case["temperature"], rel=1e-12)
    div = kd_loss(s, INPUTS["teacher_logits"], t)
    total = 0.1 * F.cross_entropy(s, INPUTS["target"]) + 0.9 * div
    g_s, g_t = torch.autograd.grad(total, [s, ctkd.raw_temperature])
    assert relative_error(div.detach(), case["loss_div"]) < 1e-10
    assert relative_error(total.detach(), case["loss_total"]) < 1e-10
    assert relative_error(g_s, case["grad_student_logits"]) < 1e-10
    assert relative_error(g_t, case["grad_global_T"]) < 1e-8


def test_the_curriculum_reaches_its_full_reversal_after_its_epochs():
    assert curriculum_lambda(1) == pytest.approx(-0.02447174185242318)
    assert curriculum_lambda(10) == curriculum_lambda(240) == -1.0
    assert curriculum_lambda(3, lambda_max=0.5, epochs=0) == -0.5


def test_the_per_sample_loss_equals_the_readme_s_on_the_authors_values():
    case = CASES["instance_readme_kl"]
    s = INPUTS["student_logits"].clone().requires_grad_(True)
    t = case["T"].clone().double().requires_grad_(True)
    loss = instance_kd_loss(s, INPUTS["teacher_logits"], t)
    g_s, g_t = torch.autograd.grad(loss, [s, t])
    assert relative_error(loss.detach(), case["loss"]) < 1e-10
    assert relative_error(g_s, case["grad_student_logits"]) < 1e-10
    assert relative_error(g_t, case["grad_T"]) < 1e-10


def test_the_instance_variant_starts_at_the_global_temperature_and_learns_per_sample_through_the_reversal():
    ctx = _Ctx()
    ctx.data = type("Data", (), {"num_classes": 100, "input_shape": (3,), "augment": None})()
    ctkd = CTKD(CTKDParams(variant="instance"), ctx).double()
    s, t_logits = INPUTS["student_logits"].clone().requires_grad_(True), INPUTS["teacher_logits"]
    temps = ctkd.temperature(_state(5), s, t_logits)
    assert temps.shape == (8,) and torch.allclose(temps, torch.full_like(temps, 1 + 20 * torch.sigmoid(
        torch.tensor(1.0, dtype=torch.float64)).item()))
    loss = ctkd.kd_term(s, t_logits, _state(5))
    bias = ctkd.instance.net[2].bias
    g_bias, g_s = torch.autograd.grad(loss, [bias, s])
    # the same loss with the temperatures as leaves: the module's gradient is lambda times theirs, chained
    leaf = temps.detach().clone().requires_grad_(True)
    (g_temps,) = torch.autograd.grad(instance_kd_loss(s, t_logits, leaf), [leaf])
    sig = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64))
    expected = curriculum_lambda(5) * (g_temps * 20 * sig * (1 - sig)).sum()
    assert g_bias.item() == pytest.approx(expected.item(), rel=1e-10)
    assert g_s.abs().sum() > 0
    with pytest.raises(Exception, match="needs the data set"):
        CTKD(CTKDParams(variant="instance"), _Ctx())
