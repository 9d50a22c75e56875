"""ReviewKD against values computed with the authors' code on fixed inputs (tests/methods/reference/reviewkd.pt:
megvii-research/mdistiller @ a08d46f ``ReviewKD.forward_train``, cross-checked with dvlab-research/ReviewKD @
cede6ea; float64; see reference/PROVENANCE.md): the loss at four epochs of the warm-up, the raw HCL value, the
number of fusion parameters, and the gradients of the student's features and of every fusion parameter, for
resnet32x4 -> resnet8x4 and wrn_40_2 -> wrn_16_2 shaped features.  The inputs are regenerated here from the same
seeded generator calls and checked against the stored sums; the fusion weights come from the stored formula."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from kdlab.core.errors import ConfigError
from kdlab.core.state import LoopState
from kdlab.methods.distill.reviewkd import ReviewKD, ReviewKDParams, hcl_loss, warmup_factor
from kdlab.models.contract import Features

REFERENCE = torch.load(Path(__file__).parent / "reference" / "reviewkd.pt", weights_only=False)
PAIRS = {"resnet8x4<-resnet32x4": ([32, 64, 128, 256], True), "wrn_16_2<-wrn_40_2": ([16, 32, 64, 128], False)}
SIZES, BATCH, CLASSES = [32, 32, 16, 8], 4, 100


def regenerate(channels: list[int], post_relu: bool) -> dict:
    """The reference script's inputs: the same generator calls in the same order (float32)."""
    gen = torch.Generator().manual_seed(0)
    s_feats = []
    for c, h in zip(channels, SIZES):
        x = torch.randn(BATCH, c, h, h, generator=gen)
        s_feats.append(x.relu() if post_relu else x)
    s_pooled = torch.rand(BATCH, channels[-1], generator=gen)
    t_pre = [torch.randn(BATCH, c, h, h, generator=gen) for c, h in zip(channels, SIZES)]
    t_pooled = torch.rand(BATCH, channels[-1], generator=gen)
    s_logits = 3.0 * torch.randn(BATCH, CLASSES, generator=gen)
    t_logits = 5.0 * torch.randn(BATCH, CLASSES, generator=gen)
    target = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    return {k: [t.double() for t in v] if isinstance(v, list) else (v.double() if v.is_floating_point() else v)
            for k, v in dict(s_feats=s_feats, s_pooled=s_pooled, t_preact_feats=t_pre, t_pooled=t_pooled,
                             s_logits=s_logits, t_logits=t_logits, target=target).items()}


class FixedFeatures(nn.Module):
    """Stands in for a model of the feature contract: returns the given features whatever the input."""

    def __init__(self, stages, preact, embedding, logits):
        super().__init__()
        self.out = Features(logits, stages, preact, embedding)
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x, features=False):
        return self.out if features else self.out.logits


def set_formula_weights(abfs: nn.ModuleList, names: list[str]) -> None:
    """The reference's storage-free weights (its provenance's ``param_formula``), in the authors' parameter order."""
    params = dict(abfs.named_parameters())
    assert sorted(params) == sorted(names), "the fusion modules' parameters differ from the authors'"
    with torch.no_grad():
        for i, name in enumerate(names):
            p = params[name]
            wave = torch.sin(0.7 * torch.arange(p.numel(), dtype=torch.float64) + 1.3 * i + 0.1)
            if p.dim() == 4:
                value = (3.0 / (p.shape[1] * p.shape[2] * p.shape[3])) ** 0.5 * wave
            elif name.endswith("weight"):
                value = 1.0 + 0.1 * wave
            else:
                value = 0.05 * wave
            p.copy_(value.view_as(p))


def build(name: str):
    channels, post_relu = PAIRS[name]
    ref, inp = REFERENCE["pairs"][name], regenerate(channels, post_relu)
    sums = ref["input_sums"]
    for key in ("s_pooled", "t_pooled", "s_logits", "t_logits"):
        assert inp[key].sum().item() == pytest.approx(sums[key], rel=1e-12), key
    maps = inp["s_feats"][1:] + inp["t_preact_feats"][1:]
    for got, want in zip(maps, sums["s_feats"][1:] + sums["t_preact_feats"][1:]):
        assert got.sum().item() == pytest.approx(want, rel=1e-12)
    assert inp["target"].tolist() == sums["target"]
    s_feats = [f.clone().requires_grad_(True) for f in inp["s_feats"]]
    s_pooled = inp["s_pooled"].clone().requires_grad_(True)
    student = FixedFeatures(s_feats, s_feats, s_pooled, inp["s_logits"])
    teacher = FixedFeatures(inp["t_preact_feats"], inp["t_preact_feats"], inp["t_pooled"], inp["t_logits"])
    ctx = SimpleNamespace(teacher=teacher, student=student, data=SimpleNamespace(input_shape=(3, 32, 32)))
    kd = ReviewKD(ReviewKDParams(), ctx).double().train()
    set_formula_weights(kd.abfs, ref["abf_param_names"])
    return kd, ref, student, teacher, s_feats, s_pooled


def state(epoch: int) -> LoopState:
    return LoopState(epoch=epoch - 1, epochs=240, step=0, steps_per_epoch=1, num_train=4, num_classes=100,
                     device=torch.device("cpu"))


def close(a, b, rel):
    b = torch.as_tensor(b, dtype=torch.float64)
    return float((torch.as_tensor(a, dtype=torch.float64) - b).abs().max() / b.abs().max().clamp_min(1e-300)) < rel


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_the_review_loss_and_its_gradients_equal_the_authors(name):
    kd, ref, student, teacher, s_feats, s_pooled = build(name)
    assert sum(p.numel() for p in kd.abfs.parameters()) == ref["extra_params"]
    for n, p in kd.abfs.named_parameters():
        assert p.sum().item() == pytest.approx(ref["abf_param_checksums"][n]["sum"], rel=1e-9, abs=1e-9)
    s_out, t_out = student(None, features=True), teacher(None, features=True)
    for epoch in (1, 10, 20, 240):
        loss = kd.beta * kd.method_loss(s_out, t_out, None, state(epoch))
        assert close(loss.detach(), ref["outputs"][f"loss_kd_epoch{epoch}"], 1e-10), epoch
    outputs = kd.review(s_out.stages[1:], s_out.embedding)
    assert [o.sum().item() for o in outputs] == pytest.approx(ref["abf_output_sums"], rel=1e-5, abs=1e-3)
    assert close(hcl_loss(outputs, kd.targets(t_out)).detach(), ref["outputs"]["hcl_raw"], 1e-10)
    kd.zero_grad()
    loss = kd.beta * kd.method_loss(s_out, t_out, None, state(240))
    loss.backward()
    grads = {"s_feats": [None] + [f.grad for f in s_feats[1:]], "s_pooled": s_pooled.grad,
             "abfs": {n: p.grad for n, p in kd.abfs.named_parameters()}}
    assert s_feats[0].grad is None  # the stem's output is not reviewed (the authors' zip drops it)
    norms, samples = ref["grad_norms_f64"], ref["grad_samples"]
    pairs = [(grads["s_pooled"], norms["s_pooled"], samples["s_pooled"])]
    pairs += [(g, n, s) for g, n, s in zip(grads["s_feats"][1:], norms["s_feats"][1:], samples["s_feats"][1:])]
    pairs += [(grads["abfs"][k], norms["abfs"][k], samples["abfs"][k]) for k in ref["abf_param_names"]]
    for grad, norm, sample in pairs:
        assert grad.norm().item() == pytest.approx(norm, rel=1e-9)
        assert close(grad.flatten()[sample["index"]], sample["value"], 1e-6)  # the stored values: float32


def test_the_warm_up_counts_from_the_first_epoch_as_mdistiller_or_from_zero():
    assert warmup_factor(1, 20) == 1 / 20 and warmup_factor(25, 20) == 1.0 and warmup_factor(0, 0) == 1.0
    kd, _, student, teacher, *_ = build("wrn_16_2<-wrn_40_2")
    s_out, t_out = student(None, features=True), teacher(None, features=True)
    first = kd.method_loss(s_out, t_out, None, state(1))
    kd.counts_from = 0
    assert kd.method_loss(s_out, t_out, None, state(1)).item() == 0.0
    assert kd.method_loss(s_out, t_out, None, state(2)).item() == pytest.approx(first.item(), rel=1e-12)


def test_hcl_weights_each_pooled_size_smaller_than_the_map():
    fs, ft = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 3, 8, 8, dtype=torch.float64)

    def mse_at(size):
        pool = torch.nn.functional.adaptive_avg_pool2d
        return ((pool(fs, size) - pool(ft, size)) ** 2).mean()

    by_hand = (((fs - ft) ** 2).mean() + mse_at(4) / 2 + mse_at(2) / 4 + mse_at(1) / 8) / 1.875
    assert hcl_loss([fs], [ft]).item() == pytest.approx(by_hand.item(), rel=1e-14)
    small = fs[:, :, :2, :2], ft[:, :, :2, :2]  # 2x2: only the 1x1 pooling is smaller
    assert hcl_loss([small[0]], [small[1]]).item() == pytest.approx(
        ((((small[0] - small[1]) ** 2).mean() + mse_at_small(*small) / 2) / 1.5).item(), rel=1e-14)


def mse_at_small(a, b):
    return ((a.mean((2, 3)) - b.mean((2, 3))) ** 2).mean()


def test_a_pair_without_image_feature_maps_is_refused_in_one_line():
    vec = torch.zeros(2, 8)
    mlp = FixedFeatures([vec, vec], [vec, vec], vec, torch.zeros(2, 10))
    ctx = SimpleNamespace(teacher=mlp, student=mlp, data=SimpleNamespace(input_shape=(8,)))
    with pytest.raises(ConfigError, match="reviewkd: needs feature maps of images or sequences"):
        ReviewKD(ReviewKDParams(), ctx)
