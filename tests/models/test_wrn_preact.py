"""WRN pre-activations as the reference code defines them (RepDistiller / SoTeacher ``models/wrn.py`` with
``preact=True``, mdistiller's ``preact_feats``): the next block's bn1 of a stage's residual sum, the final BN for
the last stage, the raw stem output for the stem; logits as a plain forward pass through the same modules."""

import copy

import pytest
import torch
import torch.nn as nn

from kdlab.models import build_model

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

SHAPE = (3, 32, 32)


def make(name: str = "wrn_16_2", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, {}, 10, SHAPE)
    with torch.no_grad():  # BN layers that are not close to the identity, in eval mode too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def manual_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A straightforward forward pass through the model's modules (pre-activation blocks, final BN + ReLU)."""
    h = model.stages[0].conv(x)
    for stage in model.stages[1:]:
        for b in stage:
            act = b.bn1(h).relu()
            out = b.conv2(b.drop(b.bn2(b.conv1(act)).relu()))
            h = out + (h if b.shortcut is None else b.shortcut(act))
    return model.classifier(model.bn(h).relu().flatten(2).mean(-1))


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", ["wrn_16_1", "wrn_16_2", "wrn_40_1"])
def test_preact_is_the_next_batch_norm_of_the_stage_output(name, mode):
    model = make(name).train(mode == "train")
    x = torch.randn(4, *SHAPE)
    out = model(x, features=True)
    # recompute the reference's way on a copy (in train mode a second BN call would move the running statistics)
    again = copy.deepcopy(model).train(mode == "train")
    with torch.no_grad():
        assert torch.equal(out.preact[0], out.stages[0])  # the stem: its raw convolution output
        for i in (1, 2):
            expected = again.stages[i + 1][0].bn1(out.stages[i])
            assert close(out.preact[i], expected)
            assert not close(out.preact[i], out.stages[i])
        assert close(out.preact[-1], again.bn(out.stages[-1]))
        assert not close(out.preact[-1], out.stages[-1])
        # the head sees exactly the last pre-activation
        assert close(out.embedding, out.preact[-1].relu().mean((2, 3)))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_logits_and_running_statistics_are_those_of_a_plain_forward(mode):
    model = make()
    plain = copy.deepcopy(model)
    model.train(mode == "train"), plain.train(mode == "train")
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        ref = manual_logits(plain, x)
        with_features = model(x, features=True)
    assert torch.equal(with_features.logits, ref)
    # every batch norm ran once per pass, with features requested: the running statistics match the plain pass
    for (k, a), b in zip(model.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), k
    if mode == "train":
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(int(m.num_batches_tracked) == 1 for m in bns)
    with torch.no_grad():
        assert torch.equal(model(x), manual_logits(plain, x))


def test_forward_from_reproduces_the_logits_and_sftn_branches_work():
    model = make().eval()
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        ref = model(x, features=True)
        for i in range(1, len(model.stages)):
            assert close(model.forward_from(i, ref.stages[i - 1]), ref.logits)
            outs, pres = model.forward_stages(ref.stages[i - 1], i)
            assert all(close(a, b) for a, b in zip(pres, ref.preact[i:], strict=True))
            assert all(close(a, b) for a, b in zip(outs, ref.stages[i:], strict=True))
        # an SFTN branch replaces the stages before its entry point by identities
        branch = copy.deepcopy(model)
        branch.stages[0], branch.stages[1] = nn.Identity(), nn.Identity()
        assert close(branch.forward_from(2, ref.stages[1]), ref.logits)


def test_gradients_flow_through_the_preactivations():
    model = make().train()
    out = model(torch.randn(4, *SHAPE), features=True)
    out.preact[1].pow(2).mean().backward()
    # preact[1] is stage 2's first bn1 of stage 1's output: the loss reaches that BN and the layers before it
    assert model.stages[2][0].bn1.weight.grad is not None and model.stages[2][0].bn1.weight.grad.abs().sum() > 0
    assert model.stages[1][0].conv1.weight.grad.abs().sum() > 0
    assert model.stages[2][0].conv1.weight.grad is None and model.bn.weight.grad is None
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(4, *SHAPE), features=True)
    (out.logits.sum() + sum(p.mean() for p in out.preact)).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.bn.weight.grad.abs().sum() > 0


def test_parameter_names_are_unchanged():
    keys = set(make("wrn_16_1").state_dict())
    expected = {"stages.0.conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                "bn.num_batches_tracked", "classifier.weight", "classifier.bias"}
    for i, (cin, cout) in enumerate([(16, 16), (16, 32), (32, 64)], start=1):
        for j in range(2):
            p = f"stages.{i}.{j}."
            for bn in ("bn1", "bn2"):
                expected |= {p + bn + s for s in (".weight", ".bias", ".running_mean", ".running_var",
                                                  ".num_batches_tracked")}
            expected |= {p + "conv1.weight", p + "conv2.weight"}
            if j == 0 and cin != cout:
                expected.add(p + "shortcut.weight")
    assert keys == expected
