"""CTKD's global temperature against values computed with the authors' code on fixed inputs
(tests/methods/reference/ctkd.pt: zhengli97/CTKD @ 7d52522, ``Global_T``, ``DistillKL``, ``CosineDecay``; float64;
see reference/PROVENANCE.md): the temperature, the loss and the gradients of the student's logits and of the
temperature parameter (through the gradient reversal) at several epochs of the curriculum."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdlab.core.state import LoopState
from kdlab.methods.distill.ctkd import CTKD, CTKDParams, curriculum_lambda
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
    t = ctkd.kd_temperature(_state(case["epoch"]))
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
