import math

import pytest
import torch
import torch.nn as nn

from kdlab.regularizers import LipschitzRegularizer

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


def tiny_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 2, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 2 * 2, 4), nn.Conv1d(1, 2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(24, dtype=torch.float32).reshape(3, 2, 2, 2) - 11.5)
        net[1].weight.copy_(torch.tensor([0.5, -2.0, 1.0]))
        net[1].running_var.copy_(torch.tensor([1.0, 3.0, 0.25]))
        net[4].weight.copy_(torch.randn(4, 12, generator=torch.Generator().manual_seed(1)))  # no tied columns
        net[5].weight.copy_(torch.tensor([[[2.0]], [[-3.0]]]))
    return net


def hand_values(net, mode):
    w = net[0].weight.detach()
    # reference: entry-wise; exact: max over the 2 input channels of the sum over outputs and taps
    per_input = max(w[:, c].abs().sum().item() for c in range(2))
    conv = w.abs().sum().item() if mode == "reference" else per_input
    conv1d = 5.0  # one input channel: |2| + |-3| in both modes
    eps = net[1].eps
    bn = max(0.5 / math.sqrt(1 + eps), 2.0 / math.sqrt(3 + eps), 1.0 / math.sqrt(0.25 + eps))
    lin_w = net[4].weight.detach()
    lin = max(lin_w[:, j].abs().sum().item() for j in range(12))
    return conv + conv1d + bn + lin


@pytest.mark.parametrize("mode", ["reference", "exact"])
def test_lipschitz_equals_hand_computed_value(mode):
    net = tiny_net()
    reg = LipschitzRegularizer(net, mode)
    assert reg().item() == pytest.approx(hand_values(net, mode), rel=1e-6)
    assert reg.ignored_layers() == []


def test_lipschitz_exact_is_smaller_and_handles_groups():
    conv = nn.Conv2d(4, 6, 3, groups=2, bias=False)
    net = nn.Sequential(conv)
    ref, exact = LipschitzRegularizer(net, "reference")(), LipschitzRegularizer(net, "exact")()
    w = conv.weight.detach().abs()  # (6, 2, 3, 3): group 0 = outputs 0-2 on inputs 0-1, group 1 = 3-5 on 2-3
    per_input = [w[0:3, 0].sum(), w[0:3, 1].sum(), w[3:6, 0].sum(), w[3:6, 1].sum()]
    assert exact.item() == pytest.approx(max(per_input).item(), rel=1e-6)
    assert exact < ref


def test_lipschitz_gradients_flow_as_described():
    net = tiny_net()
    LipschitzRegularizer(net, "reference")().backward()
    assert torch.equal(net[0].weight.grad, torch.sign(net[0].weight.detach()))
    # batch norm: only gamma of the arg-max channel (channel 2: 1/sqrt(0.25) = 2 > 2/sqrt(3) > 0.5) gets
    # gradient, sign(gamma)/sqrt(var + eps)
    g = net[1].weight.grad
    assert g[0] == 0 and g[1] == 0 and g[2].item() == pytest.approx(1 / math.sqrt(0.25 + net[1].eps), rel=1e-5)
    assert net[1].bias.grad is None and not net[1].running_var.requires_grad
    # linear: only the arg-max column
    lg = net[4].weight.grad
    col = net[4].weight.detach().abs().sum(0).argmax()
    assert torch.equal(lg[:, col], torch.sign(net[4].weight.detach()[:, col]))
    assert (lg.abs().sum(0) > 0).sum() == 1


def test_lipschitz_lists_ignored_layers():
    net = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.GroupNorm(1, 3))
    reg = LipschitzRegularizer(net)
    assert [type(m) for m in reg.ignored_layers()] == [nn.LayerNorm, nn.GroupNorm]


def test_lipschitz_follows_the_layers_after_syncbn_conversion():
    # torchrun with train.sync_bn replaces every batch norm: the regulariser must read the new modules
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2))
    reg = LipschitzRegularizer(model)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    reg.bind(model)
    before = reg().item()
    with torch.no_grad():
        model[1].running_var.fill_(0.25)  # BN term: max |gamma| / sqrt(var + eps) grows about 2x
    assert reg().item() > before + 0.5
    assert isinstance(reg._bns[0], nn.SyncBatchNorm)
