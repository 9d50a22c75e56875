import math

import pytest
import torch

from kdlab.core import metrics
from kdlab.methods.distill.kd import kd_loss

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


def test_kd_loss_zero_for_identical_logits():
    z = torch.randn(5, 7)
    assert kd_loss(z, z.clone(), 4.0).abs().item() < 1e-6


def test_kd_loss_equals_hand_computed_value():
    # two classes, one sample: s = (0, 0), t = (ln 3, 0), T = 1 -> p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(s, t, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # T = 2 scales logits by 1/2 and the loss by T^2 = 4: t/2 = (ln sqrt(3), 0) -> p_t = (sqrt3/(1+sqrt3), ...)
    a = math.sqrt(3) / (1 + math.sqrt(3))
    expected2 = 4 * (a * math.log(a / 0.5) + (1 - a) * math.log((1 - a) / 0.5))
    assert kd_loss(s, t, 2.0).item() == pytest.approx(expected2, rel=1e-6)


def test_kd_loss_is_batch_mean_of_per_sample_kl():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    per = [kd_loss(s[i:i + 1], t[i:i + 1], 3.0) for i in range(6)]
    assert kd_loss(s, t, 3.0).item() == pytest.approx(sum(per).item() / 6, rel=1e-5)


def test_kd_method_combines_ce_and_kd():
    import torch.nn as nn
    import torch.nn.functional as F

    from kdlab.core.registry import DISTILL_METHODS
    from kdlab.data.base import Batch

    def KD(teacher, **params):
        return DISTILL_METHODS.get("kd").build(params, teacher=teacher)

    torch.manual_seed(0)
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    batch = Batch(torch.randn(8, 4), torch.randint(0, 3, (8,)), torch.arange(8))
    out = KD(teacher, T=2.0, alpha=0.7, gamma=0.3)(student, batch, None)
    s, t = student(batch.x), teacher(batch.x)
    expected = 0.3 * F.cross_entropy(s, batch.y) + 0.7 * kd_loss(s, t, 2.0)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out.loss.backward()
    assert teacher.weight.grad is None and student.weight.grad is not None


def test_kd_weights_follow_the_preset_unless_given():
    import torch.nn as nn

    from kdlab.core.registry import DISTILL_METHODS

    def KD(teacher, **params):
        return DISTILL_METHODS.get("kd").build(params, teacher=teacher)

    teacher = nn.Linear(4, 3)
    assert (KD(teacher).gamma, KD(teacher).alpha) == (0.1, 0.9)  # the CRD benchmark's
    so = KD(teacher, beta_preset="soteacher")
    assert (so.gamma, so.alpha) == (0.5, 0.5)  # SoTeacher's logit-KD runs
    mixed = KD(teacher, beta_preset="soteacher", alpha=0.8)
    assert (mixed.gamma, mixed.alpha) == (0.5, 0.8)
    from kdlab.config import load_config
    from kdlab.config.schema import DistillRunConfig

    cfg = load_config(DistillRunConfig, {"data": "digits", "student": "mlp", "teacher": {"path": "t"},
                                         "method": {"name": "rco", "beta_preset": "soteacher", "gamma": 0.2}})
    assert (cfg.method["gamma"], cfg.method["alpha"]) == (0.2, 0.5)  # the resolved config states the weights


def test_topk_and_nll():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([0, 2, 0])
    assert metrics.topk_accuracy(logits, labels, 1) == pytest.approx(100 / 3)
    assert metrics.topk_accuracy(logits, labels, 2) == pytest.approx(200 / 3)
    lp = torch.log_softmax(logits, 1)
    assert metrics.nll(logits, labels) == pytest.approx(-(lp[0, 0] + lp[1, 2] + lp[2, 0]).item() / 3, rel=1e-6)


def test_ece_hand_computed():
    # four samples with confidences 0.9, 0.9 (bin 14), 0.6 (bin 9), 0.6 (bin 9); correctness 1, 0, 1, 1
    def logits_for(conf):  # two classes: softmax = (conf, 1 - conf)
        return [math.log(conf), math.log(1 - conf)]

    logits = torch.tensor([logits_for(0.9), logits_for(0.9), logits_for(0.6), logits_for(0.6)])
    labels = torch.tensor([0, 1, 0, 0])
    # bin 0.9: |0.9 - 0.5| * 2/4 ; bin 0.6: |0.6 - 1.0| * 2/4  -> 0.2 + 0.2 = 0.4 -> 40 %
    assert metrics.ece(logits, labels) == pytest.approx(40.0, abs=1e-4)


def test_ece_perfectly_calibrated_is_zero_and_agreement_kl():
    logits = torch.tensor([[0.0, 0.0]] * 4)
    labels = torch.tensor([0, 1, 0, 1])  # confidence 0.5, accuracy 0.5 (argmax picks class 0)
    assert metrics.ece(logits, labels) == pytest.approx(0.0, abs=1e-6)
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    assert metrics.agreement(a, b) == 50.0
    assert metrics.kl_divergence(a, a) == pytest.approx(0.0, abs=1e-7)
    assert metrics.kl_divergence(a, b) > 0


def test_l1_to_distribution():
    logits = torch.tensor([[0.0, 0.0]])
    assert metrics.l1_to_distribution(logits, torch.tensor([[1.0, 0.0]])) == pytest.approx(1.0)


def test_temperature_scaling_reduces_nll_of_an_overconfident_model():
    torch.manual_seed(0)
    n, k = 2000, 5
    true_logits = torch.randn(n, k)
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    overconfident = 4.0 * true_logits  # right ranking, far too sharp
    t = metrics.fit_temperature(overconfident[:1000], labels[:1000])
    assert t == pytest.approx(4.0, rel=0.15)
    before = metrics.calibration_metrics(overconfident[1000:], labels[1000:], t)
    assert before["nll_ts"] < before["nll"] and before["ece_ts"] < before["ece"]


def test_linear_cka():
    torch.manual_seed(0)
    x = torch.randn(50, 8)
    assert metrics.linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    assert metrics.linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-9)  # orthogonal + isotropic scaling
    assert metrics.linear_cka(x, torch.randn(50, 4)) < 0.5
    # hand case: one-dimensional representations: CKA = squared correlation
    a = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    b = torch.tensor([[1.0], [3.0], [2.0], [5.0]])
    r = torch.corrcoef(torch.cat([a, b], 1).T.double())[0, 1].item()
    assert metrics.linear_cka(a, b) == pytest.approx(r * r, rel=1e-9)


def test_reliability_bins():
    logits = torch.tensor([[math.log(0.9), math.log(0.1)], [math.log(0.6), math.log(0.4)]])
    bins = metrics.reliability_bins(logits, torch.tensor([0, 1]))
    assert bins["count"][13] == 1 and bins["count"][8] == 1  # 0.9 -> bin (13/15, 14/15], 0.6 -> (8/15, 9/15]
    assert bins["accuracy"][13] == 1.0 and bins["accuracy"][8] == 0.0
    assert bins["confidence"][13] == pytest.approx(0.9)
