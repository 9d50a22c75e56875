"""Each loss of CRD, SSKD, OFD, DKD, KD+, RCO, DML and KDCL against values worked out by hand (plain Python
arithmetic on small fixed tensors) or an independent formula."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import stats

from kdlab.core.checkpoint import save_checkpoint
from kdlab.core.errors import CheckpointError
from kdlab.core.registry import DISTILL_METHODS
from kdlab.methods.distill._contrast_memory import BankMemory, QueueMemory, sample_excluding
from kdlab.methods.distill.crd import contrast_scores, nce_loss
from kdlab.methods.distill.dkd import dkd_terms
from kdlab.methods.distill.dml import mutual_losses
from kdlab.methods.distill.kdcl import ensemble_logits
from kdlab.methods.distill.kdplus import mix_inputs, random_pairs
from kdlab.methods.distill.ofd import gaussian_margin, margin_relu, partial_l2
from kdlab.methods.distill.rco import anchor_index, find_anchors
from kdlab.methods.distill.sskd import keep_confident, similarity_rows, transform_batch
from kdlab.methods.distiller import kd_loss

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


# ---- DKD ----

def test_dkd_decomposition_by_hand():
    s, t, T = [2.0, 1.0, 0.0], [1.0, 3.0, 0.0], 2.0
    ps, pt = _softmax([v / T for v in s]), _softmax([v / T for v in t])
    tckd = _kl([pt[0], 1 - pt[0]], [ps[0], 1 - ps[0]]) * T * T
    nckd = _kl(_softmax([t[1] / T, t[2] / T]), _softmax([s[1] / T, s[2] / T])) * T * T
    got = dkd_terms(torch.tensor([s]), torch.tensor([t]), torch.tensor([0]), T)
    assert got[0].item() == pytest.approx(tckd, rel=1e-5)
    assert got[1].item() == pytest.approx(nckd, rel=1e-5)
    assert tckd > 0 and nckd > 0


def test_kd_is_tckd_plus_weighted_nckd():
    """DKD Eq. 7: KD = TCKD + (1 - p_gt(teacher)) * NCKD, per sample."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 3
    y = torch.tensor([0, 3, 6, 2, 2])
    for b in range(5):
        tckd, nckd = dkd_terms(s[b:b + 1], t[b:b + 1], y[b:b + 1], 4.0)
        p_gt = torch.softmax(t[b] / 4.0, 0)[y[b]]
        assert (tckd + (1 - p_gt) * nckd).item() == pytest.approx(kd_loss(s[b:b + 1], t[b:b + 1], 4.0).item(),
                                                                  rel=1e-4)


def test_dkd_zero_for_identical_logits_and_stable():
    z = torch.randn(4, 10) * 5
    tckd, nckd = dkd_terms(z, z.clone(), torch.tensor([1, 2, 3, 4]), 4.0)
    assert abs(tckd.item()) < 1e-6 and abs(nckd.item()) < 1e-6
    confident = torch.tensor([[200.0, 0.0, 0.0]])  # p_gt = 1 in float32: the naive log(1 - p_gt) is -inf
    tckd, nckd = dkd_terms(torch.tensor([[0.0, 1.0, 2.0]]), confident, torch.tensor([0]), 1.0)
    assert math.isfinite(tckd.item()) and math.isfinite(nckd.item())


def test_dkd_warmup_follows_reference_one_based_epochs():
    def DKD(teacher, **params):
        return DISTILL_METHODS.get("dkd").build(params, teacher=teacher)

    m = nn.Linear(2, 3)
    dkd = DKD(m, warmup=20)
    assert dkd.warm(0) == pytest.approx(1 / 20) and dkd.warm(9) == pytest.approx(0.5) and dkd.warm(19) == 1.0
    assert DKD(m, warmup=0).warm(0) == 1.0


# ---- CRD ----

def test_nce_loss_by_hand():
    p = torch.tensor([[0.5, 0.1, 0.2], [0.05, 0.3, 0.01]])
    n_data, k = 10, 2
    noise = k / n_data
    want = 0.0
    for row in p.tolist():
        want += math.log(row[0] / (row[0] + noise)) + sum(math.log(noise / (v + noise)) for v in row[1:])
    assert nce_loss(p, n_data).item() == pytest.approx(-want / 2, rel=1e-5)
    # a dropped negative removes exactly its term
    valid = torch.tensor([[True, False], [True, True]])
    dropped = math.log(noise / (0.2 + noise))
    assert nce_loss(p, n_data, valid).item() == pytest.approx((-want + dropped) / 2, rel=1e-5)


def test_contrast_scores_on_constructed_memory():
    anchor = torch.tensor([[1.0, 0.0]])
    rows = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # positive, orthogonal, opposite
    out = contrast_scores(anchor, rows, 0.5)
    assert out[0].tolist() == pytest.approx([math.exp(2.0), 1.0, math.exp(-2.0)], rel=1e-6)
    # a perfect positive against far negatives has lower NCE loss than the reverse
    good = nce_loss(out / out.mean(), 100)
    bad = nce_loss(out.flip(1) / out.mean(), 100)
    assert good < bad


def test_negatives_exclude_the_anchor_class_without_repeats():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    torch.manual_seed(0)
    pos, valid = sample_excluding(labels, torch.tensor([1, 2]), 4)
    assert valid.all()
    for row, c in zip(pos, (1, 2)):
        assert (labels[row] != c).all() and len(set(row.tolist())) == 4
    # more negatives than allowed positions: the excess is flagged, not silently reused
    pos, valid = sample_excluding(labels, torch.tensor([2]), 6)
    assert int(valid.sum()) == 5 and (labels[pos[0][valid[0]]] != 2).all()
    pos, valid = sample_excluding(labels, torch.tensor([0]), 50, replace=True)
    assert valid.all() and (labels[pos] != 0).all()


def test_bank_rows_and_momentum_update():
    labels = torch.tensor([0, 1, 0, 1])
    bank = BankMemory(4, 2, labels, momentum=0.75)
    bank.student.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    s_rows, t_rows, valid = bank.rows(torch.tensor([2]), torch.tensor([0]), 2)
    assert torch.equal(s_rows[0, 0], bank.student[2]) and valid.all()
    assert {tuple(r) for r in s_rows[0, 1:].tolist()} == {(0.0, 1.0)}  # only class-1 slots as negatives
    assert bank.max_negatives() == 2
    bank.update(torch.tensor([0]), torch.tensor([0]), torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]]))
    n = math.hypot(0.75, 0.25)
    assert bank.student[0].tolist() == pytest.approx([0.75 / n, 0.25 / n])  # normalise(0.75 old + 0.25 new)
    assert bank.teacher[0].norm().item() == pytest.approx(1.0)


def test_queue_positive_is_current_embedding_and_pointer_wraps():
    q = QueueMemory(3, 2)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s_rows, _, _ = q.rows(torch.tensor([5, 6]), torch.tensor([0, 1]), 2, v, v * 2)
    assert torch.equal(s_rows[:, 0], v)
    q.update(torch.tensor([5, 6]), torch.tensor([0, 1]), v, v)
    q.update(torch.tensor([7, 8]), torch.tensor([0, 1]), v, v)
    assert int(q.ptr) == 1 and q.indices.tolist() == [8, 6, 7] and q.labels.tolist() == [1, 1, 0]
    _, _, valid = q.rows(torch.tensor([9]), torch.tensor([1]), 3, v[:1], v[:1])
    assert int(valid.sum()) == 1  # two of three queue entries are class 1


# ---- OFD ----

def test_margin_relu_and_partial_l2_by_hand():
    margin = torch.tensor([-1.0, -0.5])
    t = torch.tensor([[[-3.0, 2.0], [-0.2, -0.1]]])  # (B=1, C=2, L=2)
    s = torch.tensor([[[-2.0, 1.0], [-0.7, 0.3]]])
    assert torch.equal(margin_relu(t, margin), torch.tensor([[[-1.0, 2.0], [-0.2, -0.1]]]))
    # element by element (target = max(t, m)):
    #   -1 vs s=-2: s <= target <= 0 -> 0;  2 vs 1: target > 0 -> 1;  -0.2 vs -0.7: 0;  -0.1 vs 0.3: s > target -> 0.16
    assert partial_l2(s, t, margin).item() == pytest.approx(1.0 + 0.16, rel=1e-6)
    assert partial_l2(torch.cat([s, s]), torch.cat([t, t]), margin).item() == pytest.approx(1.16, rel=1e-6)


def test_gaussian_margin_is_the_truncated_normal_mean():
    mean, std = torch.tensor([0.5, -1.0, 0.0, 4.0]), torch.tensor([1.0, 2.0, 0.3, 1.0])
    got = gaussian_margin(mean.double(), std.double())
    for m, s, g in zip(mean.tolist(), std.tolist(), got.tolist()):
        if stats.norm.cdf(-m / s) > 0.001:
            want = stats.truncnorm.mean(-math.inf, (0 - m) / s, loc=m, scale=s)
        else:
            want = -3 * s  # the authors' fallback for channels that are almost never negative
        assert g == pytest.approx(want, rel=1e-6)


# ---- SSKD ----

def test_rotated_batch_and_similarity_rows():
    x = torch.arange(8.0).view(2, 1, 2, 2)
    x4 = transform_batch(x)
    assert x4.shape == (8, 1, 2, 2)
    assert torch.equal(x4[0], x[0]) and torch.equal(x4[4], x[1])
    assert torch.equal(x4[1], torch.rot90(x[0], 1, (1, 2))) and torch.equal(x4[6], torch.rot90(x[1], 2, (1, 2)))
    seq = torch.tensor([[[1.0, 2.0, 3.0]]])
    assert transform_batch(seq)[:, 0].tolist() == [[1, 2, 3], [3, 2, 1], [-1, -2, -3], [-3, -2, -1]]
    rep = torch.tensor([[1.0, 0], [1, 0], [0, 1], [1, 1], [0, 1], [0, 1], [1, 0], [0, 1]])
    sim = similarity_rows(rep)  # rows: copies 1..3 of sample 0, then of sample 1; columns: originals 0, 1
    r = 1 / math.sqrt(2)
    assert torch.allclose(sim, torch.tensor([[1, 0], [0, 1], [r, r], [0, 1], [1, 0], [0, 1]]))


def test_keep_confident_ranks_like_the_reference():
    scores = torch.tensor([[3.0, 1, 0], [0, 3, 1], [1, 0, 3], [2, 0, 1]])
    target = torch.tensor([0, 0, 0, 0])  # ranks 0, 2, 1, 0
    assert keep_confident(scores, target, 1.0).tolist() == [0, 1, 2, 3]
    assert keep_confident(scores, target, 0.5).tolist() == [0, 2, 3]  # the better-ranked of the two wrong rows
    assert keep_confident(scores, target, 0.0).tolist() == [0, 3]
    three_wrong = torch.tensor([[0.0, 1], [0, 2], [0, 3], [1, 0]])
    assert keep_confident(three_wrong, torch.zeros(4).long(), 0.5).tolist() == [0, 3]  # int(1.5) = 1 wrong kept


# ---- DML, KDCL ----

def test_mutual_kl_by_hand():
    z1 = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    z2 = torch.tensor([[0.0, 2.0, 0.0]], requires_grad=True)
    l1, l2 = mutual_losses([z1, z2])
    p1, p2 = _softmax([1.0, 0.0, -1.0]), _softmax([0.0, 2.0, 0.0])
    assert l1.item() == pytest.approx(_kl(p2, p1), rel=1e-5)
    assert l2.item() == pytest.approx(_kl(p1, p2), rel=1e-5)
    z3 = torch.tensor([[0.5, 0.5, 0.5]])
    l1 = mutual_losses([z1, z2, z3])[0]
    assert l1.item() == pytest.approx((_kl(p2, p1) + _kl(_softmax([0.5] * 3), p1)) / 2, rel=1e-5)
    l2 = mutual_losses([z1, z2])[1]
    l2.backward()
    assert z1.grad is None and z2.grad is not None  # each network's target is a constant


def test_kdcl_naive_picks_the_lowest_ce_member_per_sample():
    a = torch.tensor([[5.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    y = torch.tensor([0, 1])
    assert ensemble_logits([a, b], y).tolist() == [[5.0, 0.0], [0.0, 4.0]]
    assert ensemble_logits([a, b], torch.tensor([1, 0])).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert ensemble_logits([a, b], y, "mean").tolist() == [[3.0, 0.0], [0.0, 2.5]]


# ---- KD+ ----

def test_mixup_inputs_are_convex_combinations():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 4, 4)
    i, j = (torch.from_numpy(a) for a in random_pairs(6, 50, np.random.default_rng(0)))
    assert (i != j).all()
    lam = torch.rand(50)
    out = mix_inputs(x, i, j, lam, torch.zeros(50, dtype=torch.long))
    for r in range(50):
        assert torch.allclose(out[r], lam[r] * x[i[r]] + (1 - lam[r]) * x[j[r]], atol=1e-6)


def test_cutmix_pastes_a_box_of_the_partner():
    x = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    lam = torch.tensor([0.75, 0.0, 1.0])
    out = mix_inputs(x, torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1]), lam, torch.ones(3, dtype=torch.long))
    assert out[0].sum().item() == 16  # a 4x4 box: relative area 1 - 0.75
    assert out[1].sum().item() == 64 and out[2].sum().item() == 0
    box = out[0, 0].nonzero()
    assert box[:, 0].max() - box[:, 0].min() == 3 and box[:, 1].max() - box[:, 1].min() == 3
    seq = mix_inputs(x[:, :, 0], torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5]), torch.ones(1).long())
    assert seq.sum().item() == 4 and seq[0, 0].nonzero().flatten().diff().eq(1).all()  # one segment of half


def test_ood_term_vanishes_when_student_is_teacher():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    obj = DISTILL_METHODS.get("kdplus").build({"mix": ["mixup", "cutmix", "noise"]}, teacher=net, student=net)
    x = torch.randn(8, 1, 4, 4)
    assert obj.ood_loss(net, x).item() == pytest.approx(0.0, abs=1e-6)
    other = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    assert obj.ood_loss(other, x).item() > 1e-4


# ---- RCO ----

def test_rco_anchor_per_epoch():
    assert [anchor_index(e, 240, 24) for e in (0, 9, 10, 19, 120, 230, 239)] == [0, 0, 1, 1, 12, 23, 23]
    assert [anchor_index(e, 4, 2) for e in range(4)] == [0, 0, 1, 1]
    assert [anchor_index(e, 5, 3) for e in range(5)] == [0, 0, 1, 1, 2]


def _fake_run(folder, epochs, final):
    folder.mkdir(parents=True)
    for e in epochs:
        save_checkpoint(folder / f"epoch_{e:03d}.pt", {"model": {"name": "x"}, "epoch": e})
    save_checkpoint(folder / "last.pt", {"model": {"name": "x"}, "epoch": final})
    save_checkpoint(folder / "best.pt", {"model": {"name": "x"}, "epoch": 7})
    return folder / "last.pt"


def test_rco_finds_anchors_beside_the_teacher(tmp_path):
    last = _fake_run(tmp_path / "a", range(10, 241, 10), 240)
    anchors = find_anchors(last)
    assert [e for _, e in anchors] == list(range(10, 241, 10)) and anchors[-1][0].name == "epoch_240.pt"
    assert [e for _, e in find_anchors(last, num_anchors=4)] == [60, 120, 180, 240]
    assert [e for _, e in find_anchors(last, ["epoch_030", "best"])] == [30, 7]
    # a teacher checkpoint between saves ends the route; later epoch checkpoints are not used
    best = _fake_run(tmp_path / "b", (3, 6, 9), 9).with_name("best.pt")
    assert [(p.name, e) for p, e in find_anchors(best)] == [("epoch_003.pt", 3), ("epoch_006.pt", 6),
                                                              ("best.pt", 7)]
    with pytest.raises(CheckpointError, match="save_every"):
        find_anchors(_fake_run(tmp_path / "c", (), 5))
    with pytest.raises(CheckpointError, match="not found"):
        find_anchors(last, ["epoch_999"])
