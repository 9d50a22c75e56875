import math

import pytest
import torch

from kdlab.regularizers import ConsistencyRegularizer, consistency_weight

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


def test_schedules():
    T = 9
    lin = [consistency_weight("linear", t, T, 2.0) for t in range(T)]
    assert lin == pytest.approx([2.0 * (t + 1) / T for t in range(T)])
    cos = [consistency_weight("cosine", t, T, 1.0) for t in range(T)]
    assert cos == pytest.approx([math.cos((1 - (t + 1) / T) * math.pi / 2) for t in range(T)])
    cyc = [consistency_weight("cyclic", t, T, 1.0) for t in range(T)]
    assert cyc == pytest.approx([math.sqrt(1 - (1 - (t + 1) / T) ** 2) for t in range(T)])
    assert [consistency_weight("piecewise", t, T, 1.0) for t in range(T)] == [0, 0, 0, .5, .5, .5, 1, 1, 1]
    assert [consistency_weight("step", t, T, 1.0, start_epoch=4) for t in range(T)] == [0] * 4 + [1] * 5
    assert lin[-1] / 2 == cos[-1] == cyc[-1] == 1.0


def _average(probs: list[torch.Tensor], rule: str) -> torch.Tensor:
    """The buffer row after the predictions ``probs`` (in visit order), written out as a formula."""
    if not probs:
        return None
    if rule == "mean":
        return torch.stack(probs).sum(0) / len(probs)
    return (probs[0] + torch.stack(probs).sum(0)) / (len(probs) + 1)  # the first one twice


@pytest.mark.parametrize("buffer", ["memory", "memmap"])
def test_consistency_buffer_code_rule_counts_the_first_epoch_twice(buffer, tmp_path):
    # the released code: tau = 1 in epoch 0, then 1 / (e + 2); after epoch e: (2 p_0 + p_1 + ... + p_e) / (e + 2)
    n, k, epochs = 6, 3, 4
    cr = ConsistencyRegularizer(n, k, epochs, lambda_max=1.0, buffer=buffer, folder=tmp_path)
    assert cr.rule == "code"  # the default
    torch.manual_seed(0)
    p = [torch.randn(n, k).softmax(1) for _ in range(epochs)]
    by_hand = [p[0], (2 * p[0] + p[1]) / 3, (2 * p[0] + p[1] + p[2]) / 4, (2 * p[0] + p[1] + p[2] + p[3]) / 5]
    for e in range(epochs):
        cr.on_epoch_start(e)
        for chunk in torch.randperm(n).split(4):
            loss = cr(p[e][chunk].log(), chunk, e)  # logits whose softmax is p[e]
            if e > 0:  # against the buffer of the epoch before, before this batch's update
                expected = consistency_weight("linear", e, epochs, 1.0) * \
                    (p[e][chunk] - by_hand[e - 1][chunk]).pow(2).sum(1).mean()
                assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        cr.on_epoch_end(e)
        assert torch.allclose(cr.buffer_snapshot(e), by_hand[e], atol=1e-6), e
    mean = torch.stack(p).mean(0)
    assert not torch.allclose(by_hand[-1], mean, atol=1e-3)  # the two rules really differ here


@pytest.mark.parametrize("rule", ["code", "mean"])
@pytest.mark.parametrize("buffer", ["memory", "memmap"])
def test_consistency_buffer_averages_per_epoch_predictions(buffer, rule, tmp_path):
    n, k, epochs = 10, 4, 5
    cr = ConsistencyRegularizer(n, k, epochs, lambda_max=1.0, buffer=buffer, folder=tmp_path, rule=rule)
    torch.manual_seed(0)
    preds = [torch.randn(n, k) for _ in range(3)]
    for e, logits in enumerate(preds):
        cr.on_epoch_start(e)
        order = torch.randperm(n)
        for chunk in order.split(3):  # shuffled mini-batches, each sample once per epoch
            loss = cr(logits[chunk], chunk, e)
            if e == 0:
                assert loss.item() == 0.0
            else:  # the loss uses the average of the previous epochs only, before the update
                prev = _average([p.softmax(1) for p in preds[:e]], rule)[chunk]
                expected = consistency_weight("linear", e, epochs, 1.0) * \
                    (logits[chunk].softmax(1) - prev).pow(2).sum(1).mean()
                assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        cr.on_epoch_end(e)
    explicit = _average([p.softmax(1) for p in preds], rule)
    assert torch.allclose(cr.buffer_snapshot(2), explicit, atol=1e-6)


@pytest.mark.parametrize("rule", ["code", "mean"])
@pytest.mark.parametrize("buffer", ["memory", "memmap"])
def test_consistency_buffer_with_skipped_samples_is_each_samples_own_average(buffer, rule, tmp_path):
    # drop_last-style epochs: each epoch leaves out other samples; sample 9 is never seen before epoch 2
    n, k, epochs = 10, 4, 4
    cr = ConsistencyRegularizer(n, k, epochs, lambda_max=1.0, buffer=buffer, folder=tmp_path, rule=rule)
    torch.manual_seed(0)
    visits = [torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([2, 3, 4, 5, 6, 7, 8]), torch.tensor([9, 0, 1, 6])]
    preds = [torch.randn(n, k) for _ in visits]

    def own(i, upto):
        return [p[i].softmax(0) for p, v in zip(preds[:upto], visits[:upto]) if i in v.tolist()]

    for e, (idx, logits) in enumerate(zip(visits, preds)):
        cr.on_epoch_start(e)
        loss = cr(logits[idx], idx, e)
        if e == 2:  # sample 9 has no history: no loss for it; the others against their own past averages
            seen = [i for i in idx.tolist() if i != 9]
            terms = [(logits[i].softmax(0) - _average(own(i, e), rule)).pow(2).sum() for i in seen]
            expected = consistency_weight("linear", e, epochs, 1.0) * torch.stack(terms).sum() / len(idx)
            assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        cr.on_epoch_end(e)
    buf = cr.buffer_snapshot(2)
    for i in range(n):
        mine = own(i, 3)
        if buffer == "memory" or mine:
            expected = _average(mine, rule) if mine else torch.zeros(k)
            assert torch.allclose(buf[i], expected, atol=1e-6), i
    assert cr.visits.tolist() == [2, 2, 2, 2, 2, 2, 2, 1, 1, 1]
