"""Feature-based distillation losses against hand-computed values and independent formulas on small tensors;
their connectors, initialisation stages and shape rules."""

import math
import types

import pytest
import torch
import torch.nn.functional as F

from kdlab.core.errors import ConfigError
from kdlab.core.registry import DISTILL_METHODS
from kdlab.data.base import Batch
from kdlab.methods.distill._feature_tools import Regressor, pair_last
from kdlab.methods.distill.ab import ab_layer_loss, ab_loss
from kdlab.methods.distill.at import at_loss, attention_map
from kdlab.methods.distill.cc import cc_loss, taylor_rbf_correlation
from kdlab.methods.distill.fsp import fsp_loss, fsp_matrix
from kdlab.methods.distill.ft import Paraphraser, Translator, factor_loss
from kdlab.methods.distill.nst import nst_loss
from kdlab.methods.distill.pkt import pkt_loss
from kdlab.methods.distill.rkd import angle_cosines, pairwise_distances, rkd_angle_loss, rkd_distance_loss
from kdlab.methods.distill.sp import sp_loss
from kdlab.methods.distill.vid import VIDHead, vid_nll
from kdlab.models import build_model

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)

FEATURE_METHODS = ["fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "nst", "ft", "ab", "fsp"]


def _map(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------- AT


def test_at_zero_for_identical_and_hand_value():
    f = torch.randn(3, 4, 5, 5)
    assert at_loss(f, f.clone()).item() == pytest.approx(0.0, abs=1e-12)
    # student map: mass on one position -> attention (1, 0, 0, 0); teacher: uniform 4x4 ones, pooled to 2x2 ->
    # (1/2, 1/2, 1/2, 1/2); the difference (1/2, -1/2, -1/2, -1/2)
    s = torch.zeros(1, 2, 2, 2)
    s[0, :, 0, 0] = torch.tensor([1.0, -1.0])  # |f|^2: the sign does not matter
    t = torch.ones(1, 3, 4, 4)
    assert attention_map(s).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert at_loss(s, t, mode="code").item() == pytest.approx(0.25)  # mean of squares
    assert at_loss(s, t, mode="paper").item() == pytest.approx(1.0)  # L2 norm of the difference
    assert at_loss(t, s, mode="code").item() == pytest.approx(0.25)  # pooling applies to whichever is larger


def test_at_on_sequences():
    s, t = torch.zeros(1, 1, 2), torch.ones(1, 2, 2)
    s[0, 0, 1] = 3.0  # attention (0, 1) vs (1/sqrt2, 1/sqrt2)
    d = 1 / math.sqrt(2)
    assert at_loss(s, t).item() == pytest.approx((d ** 2 + (1 - d) ** 2) / 2, rel=1e-6)


# ---------------------------------------------------------------- SP


def test_sp_hand_value_and_invariance():
    s = _map([1, 0], [0, 1])  # G = I
    t = _map([1, 0], [1, 0])  # G = all ones -> rows (1/sqrt2, 1/sqrt2)
    assert sp_loss(s, t).item() == pytest.approx(1 - math.sqrt(2) / 2, rel=1e-6)
    # only similarities matter: an orthogonal map into more dimensions leaves the loss at 0
    f = torch.randn(6, 3, 2, 2)
    q, _ = torch.linalg.qr(torch.randn(12, 12))
    g = (f.flatten(1) @ q[:, :12]).view(6, 12)
    assert sp_loss(f, g).item() == pytest.approx(0.0, abs=1e-10)


# ---------------------------------------------------------------- PKT


def _pkt_reference(s, t, exclude_self, eps=1e-7):
    """Independent double loop over the formula."""
    def probs(e):
        n = len(e)
        k = [[(F.cosine_similarity(e[i], e[j], dim=0).item() + 1) / 2 for j in range(n)] for i in range(n)]
        if exclude_self:
            for i in range(n):
                k[i][i] = 0.0
        return [[k[i][j] / sum(k[i]) for j in range(n)] for i in range(n)]
    p, q = probs(t), probs(s)
    n = len(s)
    terms = [p[i][j] * math.log((p[i][j] + eps) / (q[i][j] + eps)) for i in range(n) for j in range(n)]
    return sum(terms) if exclude_self else sum(terms) / n ** 2


def test_pkt_hand_value_and_reference():
    s = _map([1, 0], [0, 1])  # kernel [[1, 1/2], [1/2, 1]] -> rows (2/3, 1/3)
    t = _map([1, 0], [2, 0])  # kernel all 1 -> rows (1/2, 1/2)
    expected = 0.25 * (math.log(0.5 / (2 / 3)) + math.log(0.5 / (1 / 3)))
    assert pkt_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert pkt_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    torch.manual_seed(1)
    s, t = torch.randn(5, 4), torch.randn(5, 3)
    assert pkt_loss(s, t, mode="code").item() == pytest.approx(_pkt_reference(s, t, False), rel=1e-4)
    assert pkt_loss(s, t, mode="paper").item() == pytest.approx(_pkt_reference(s, t, True), rel=1e-4)


# ---------------------------------------------------------------- RKD


def test_rkd_distance_hand_value():
    line = _map([0.0], [1.0], [2.0])  # distances 1, 2, 1: mean 4/3 -> normalised 3/4, 3/2, 3/4
    tri = _map([0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2])  # all distances 1
    d = pairwise_distances(line)
    assert torch.allclose(d, _map([0, 1, 2], [1, 0, 1], [2, 1, 0]))
    # huber (delta 1): four entries off by 1/4, two by 1/2, mean over 9
    expected = (4 * 0.5 * 0.25 ** 2 + 2 * 0.5 * 0.5 ** 2) / 9
    assert rkd_distance_loss(line, tri).item() == pytest.approx(expected, rel=1e-5)
    assert rkd_distance_loss(line, 5 * line).item() == pytest.approx(0.0, abs=1e-7)  # scale invariant


def test_rkd_angle_hand_value_and_reference():
    line = _map([0.0], [1.0], [2.0])
    tri = _map([0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2])  # every angle 60 degrees, cosine 1/2
    # line: the middle vertex sees its neighbours at cosine -1, the end vertices at cosine 1; off by 1.5 (x2) and
    # 0.5 (x4) from the triangle's 1/2; huber: 1.5 -> 1.0, 0.5 -> 0.125; mean over 27 triplets
    assert rkd_angle_loss(line, tri).item() == pytest.approx((2 * 1.0 + 4 * 0.125) / 27, rel=1e-5)
    torch.manual_seed(0)
    e = torch.randn(4, 3)
    cos = angle_cosines(e)
    for j in range(4):
        for i in range(4):
            for k in range(4):
                degenerate = i == j or k == j  # a zero difference vector: the code's cosine is 0
                ref = 0.0 if degenerate else F.cosine_similarity(e[i] - e[j], e[k] - e[j], dim=0).item()
                assert cos[j, i, k].item() == pytest.approx(ref, abs=1e-5)


def test_rkd_gradients_finite_with_duplicate_samples():
    s = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    t = torch.randn(3, 4)
    (rkd_distance_loss(s, t) + rkd_angle_loss(s, t)).backward()
    assert torch.isfinite(s.grad).all()


# ---------------------------------------------------------------- NST


def test_nst_hand_value_and_invariances():
    s = torch.tensor([[[1.0, 0.0]]])  # one channel (1, 0)
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # channels (1, 0), (0, 1)
    # k_tt mean = 1/2, k_ss = 1, k_st mean = 1/2 -> MMD^2 = 1/2 + 1 - 1
    assert nst_loss(s, t).item() == pytest.approx(0.5)
    f = torch.rand(2, 5, 3, 3)
    assert nst_loss(f, f[:, torch.randperm(5)]).item() == pytest.approx(0.0, abs=1e-6)  # channel order: a set
    assert nst_loss(f, 3 * f).item() == pytest.approx(0.0, abs=1e-6)  # maps are normalised


def test_nst_matches_explicit_mmd():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 4, 4, 4)
    tp = F.adaptive_avg_pool2d(t, 2)
    total = 0.0
    for n in range(2):
        a = [F.normalize(s[n, i].flatten(), dim=0) for i in range(3)]
        b = [F.normalize(tp[n, i].flatten(), dim=0) for i in range(4)]
        k = lambda x, y: float(x @ y) ** 2  # noqa: E731
        mmd = (sum(k(x, y) for x in b for y in b) / 16 + sum(k(x, y) for x in a for y in a) / 9
               - 2 * sum(k(x, y) for x in a for y in b) / 12)
        total += mmd / 2
    assert nst_loss(s, t).item() == pytest.approx(total, rel=1e-5)


# ---------------------------------------------------------------- CC


def test_cc_code_hand_value():
    e_s, e_t = _map([1, 2], [3, 4], [0, 0]), torch.zeros(3, 2)
    # |delta| rows (1,2), (3,4), (0,0): neighbour products sum to 3 + 8 = 11 and 0
    assert cc_loss(e_s, e_t).item() == pytest.approx(5.5)
    assert cc_loss(e_s, e_s.clone()).item() == 0.0


def test_cc_paper_matches_exact_rbf_at_high_order():
    torch.manual_seed(0)
    e = F.normalize(torch.randn(5, 4), dim=1).double()
    exact = torch.exp(-0.4 * torch.cdist(e, e).pow(2))
    assert torch.allclose(taylor_rbf_correlation(e, 0.4, 25), exact, atol=1e-10)
    s, t = torch.randn(5, 4).double(), torch.randn(5, 4).double()
    ks = torch.exp(-0.4 * torch.cdist(F.normalize(s), F.normalize(s)).pow(2))
    kt = torch.exp(-0.4 * torch.cdist(F.normalize(t), F.normalize(t)).pow(2))
    expected = ((ks - kt) ** 2).sum() / 25
    assert cc_loss(s, t, mode="paper", gamma=0.4, order=25).item() == pytest.approx(expected.item(), rel=1e-8)


# ---------------------------------------------------------------- VID


def test_vid_nll_matches_gaussian_log_prob():
    torch.manual_seed(0)
    mean, target = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    var = torch.tensor([0.5, 2.0, 5.0])
    normal = torch.distributions.Normal(mean, var.sqrt().view(1, 3, 1, 1))
    nll = -normal.log_prob(target) - 0.5 * math.log(2 * math.pi)
    assert vid_nll(mean, target, var, "code").item() == pytest.approx(nll.mean().item(), rel=1e-5)
    assert vid_nll(mean, target, var, "paper").item() == pytest.approx(nll.sum().item() / 2, rel=1e-5)


def test_vid_head_initial_variance_and_pooling():
    head = VIDHead((4, 8, 8), (6, 4, 4), init_var=5.0, eps=1e-5)
    assert torch.allclose(head.variance(), torch.full((6,), 5.0), atol=1e-5)
    out = head(torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4))
    out.backward()
    assert head.log_scale.grad is not None and torch.isfinite(out)
    vec = VIDHead((5,), (7,))
    assert torch.isfinite(vec(torch.randn(3, 5), torch.randn(3, 7)))


# ---------------------------------------------------------------- FT


def test_factor_loss_hand_values():
    s = torch.zeros(1, 2, 2, 2)
    s[0, :, 0, 0] = 1.0  # attention (1, 0, 0, 0)
    t = torch.ones(1, 2, 2, 2)  # attention (1/2, 1/2, 1/2, 1/2)
    assert factor_loss(s, t, "code").item() == pytest.approx((0.5 + 3 * 0.5) / 4)
    # paper: whole factors normalised: s -> (1,0,0,0, 1,0,0,0)/sqrt2, t -> all 1/sqrt8; L1 of the difference
    a, b = 1 / math.sqrt(2), 1 / math.sqrt(8)
    assert factor_loss(s, t, "paper").item() == pytest.approx(2 * (a - b) + 6 * b, rel=1e-6)
    assert factor_loss(t, t.clone(), "paper").item() == pytest.approx(0.0, abs=1e-7)


def test_paraphraser_and_translator_shapes():
    p = Paraphraser(8, rank=2, rate=0.5)
    x = torch.randn(2, 8, 4, 4)
    factor, rec = p(x)
    assert factor.shape == (2, 4, 4, 4) and rec.shape == x.shape
    assert Translator(6, 4, rank=1)(torch.randn(2, 6, 10)).shape == (2, 4, 10)


# ---------------------------------------------------------------- AB


def test_ab_layer_loss_hand_value_and_hinge_formula():
    s = torch.tensor([2.0, 0.5, -0.5, -2.0])
    t = torch.tensor([1.0, 1.0, -1.0, -1.0])
    # active teacher: 0.5 is below the margin (0.25), 2 is past it; inactive: -0.5 is above -margin (0.25)
    assert ab_layer_loss(s, t).item() == pytest.approx(0.5)
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    on = (t > 0).float()
    hinge = (on * F.relu(1 - s) ** 2 + (1 - on) * F.relu(1 + s) ** 2).sum()
    assert ab_layer_loss(s, t).item() == pytest.approx(hinge.item(), rel=1e-6)
    s2, t2 = torch.randn(3, 2, 2), torch.randn(3, 2, 2)
    l1, l2 = ab_layer_loss(s, t), ab_layer_loss(s2, t2)
    assert ab_loss([s, s2], [t, t2], mode="code").item() == pytest.approx((0.5 * l1 + l2).item() / 3 * 3e-3)
    assert ab_loss([s, s2], [t, t2], mode="paper").item() == pytest.approx((l1 + l2).item() / 3, rel=1e-6)


# ---------------------------------------------------------------- FSP


def test_fsp_matrix_hand_value_and_einsum():
    a, b = torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[3.0, 4.0]]]])
    assert fsp_matrix(a, b).item() == pytest.approx(5.5)  # (1*3 + 2*4) / 2 positions
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)
    ap = F.adaptive_avg_pool2d(a, 2)
    ref = torch.einsum("nahw,nbhw->nab", ap, b) / 4
    assert torch.allclose(fsp_matrix(a, b), ref, atol=1e-6)


def test_fsp_loss_values():
    torch.manual_seed(0)
    g = [torch.randn(2, 3, 4, 4), torch.randn(2, 4, 2, 2), torch.randn(2, 2, 2, 2)]
    assert fsp_loss(g, [x.clone() for x in g]).item() == 0.0
    h = [torch.randn_like(x) for x in g]
    d = [fsp_matrix(g[i], g[i + 1]) - fsp_matrix(h[i], h[i + 1]) for i in range(2)]
    assert fsp_loss(g, h, "code").item() == pytest.approx(sum((x ** 2).mean() for x in d).item(), rel=1e-6)
    assert fsp_loss(g, h, "paper").item() == pytest.approx(sum((x ** 2).sum() / 2 for x in d).item(), rel=1e-6)


# ---------------------------------------------------------------- connectors, methods, shapes


@pytest.mark.parametrize("s_shape, t_shape", [
    ((4, 8, 8), (6, 4, 4)), ((4, 4, 4), (6, 8, 8)), ((4, 8, 8), (6, 6, 6)), ((4, 8, 8), (6, 8, 8)),
    ((4, 2, 2), (6, 6, 6)), ((4, 20), (6, 10)), ((4, 10), (6, 30)), ((5,), (7,)),
])
def test_regressor_maps_to_teacher_shape(s_shape, t_shape):
    r = Regressor("test", s_shape, t_shape)
    assert r(torch.randn(2, *s_shape)).shape == (2, *t_shape)


def test_pair_last_pairs_the_deepest():
    assert pair_last([1, 2, 3, 4], ["c", "d"]) == ([3, 4], ["c", "d"])


def _build(name, teacher, student, shape, **params):
    entry = DISTILL_METHODS.get(name)
    kw = entry.validate(params).model_dump()
    return entry.build(kw, teacher=teacher, student=student, data=types.SimpleNamespace(input_shape=shape))


def test_fitnet_is_mse_after_an_identity_regressor():
    torch.manual_seed(0)
    t, s = build_model("resnet8", {}, 5, (1, 8, 8)), build_model("resnet8", {}, 5, (1, 8, 8))
    obj = _build("fitnet", t, s, (1, 8, 8), hint_layer=2)
    reg = obj.regressor
    assert reg.layer.weight.shape[-2:] == (1, 1)  # equal shapes: a 1x1 convolution
    with torch.no_grad():
        reg.layer.weight.copy_(torch.eye(32).view(32, 32, 1, 1))
        reg.layer.bias.zero_()
    reg.bn.eps = 0.0
    obj.eval()
    s.eval()
    x = torch.randn(4, 1, 8, 8)
    fs, ft = s(x, features=True), t(x, features=True)
    expected = ((fs.stages[2] - ft.stages[2]) ** 2).mean()  # stage outputs are post-ReLU: the ReLU is identity
    assert obj.method_loss(fs, ft, None, None).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="hint_layer 9"):
        _build("fitnet", t, s, (1, 8, 8), hint_layer=9)


def test_default_betas_follow_the_published_table():
    table = {"fitnet": 100, "at": 1000, "sp": 3000, "cc": 0.02, "vid": 1.0, "rkd": 1.0, "pkt": 30000, "ab": 1.0,
             "ft": 200, "nst": 50, "fsp": 50}
    for name, beta in table.items():
        cls = DISTILL_METHODS.get(name).obj
        assert {"standard": beta, "soteacher": beta / 2} == cls.BETA, name
        p = DISTILL_METHODS.get(name).validate({})
        assert (p.gamma, p.alpha, p.T) == (1.0, 1.0, 4.0), name


PAIRS = {
    "sequence": ("cnn1d", {"channels": (8, 8, 16)}, "cnn1d", {"channels": (4, 8, 8, 12)}, (1, 16)),
    "mlp": ("mlp", {"hidden": (16, 12)}, "mlp", {"hidden": (8,)}, (1, 4, 4)),
}
SPATIAL_ONLY = {"at", "nst", "ft", "fsp"}


@pytest.mark.parametrize("kind", list(PAIRS))
@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_sequences_and_mlps(name, kind):
    t_name, t_kw, s_name, s_kw, shape = PAIRS[kind]
    torch.manual_seed(0)
    teacher, student = build_model(t_name, t_kw, 3, shape), build_model(s_name, s_kw, 3, shape)
    teacher.eval()
    params = {"joint": True} if name in ("ab", "fsp") else {}
    if kind == "mlp" and name in SPATIAL_ONLY:
        with pytest.raises(ConfigError, match=f"^{name}: needs spatial feature maps"):
            _build(name, teacher, student, shape, **params)
        return
    obj = _build(name, teacher, student, shape, **params)
    batch = Batch(torch.randn(6, *shape), torch.randint(0, 3, (6,)), torch.arange(6))
    out = obj(student, batch, None)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert set(out.parts) - {"ce", "kd"}, "the method's own term is missing"


@pytest.mark.parametrize("name", ["fitnet", "vid", "ab"])
def test_rank_mismatch_is_a_config_error(name):
    teacher = build_model("resnet8", {}, 3, (1, 8, 8))
    student = build_model("mlp", {"hidden": (8, 8)}, 3, (1, 8, 8))
    with pytest.raises(ConfigError, match=f"^{name}: .*different ranks"):
        _build(name, teacher, student, (1, 8, 8))


class _Loader:
    def __init__(self, n=24, shape=(1, 8, 8), bs=8):
        g = torch.Generator().manual_seed(0)
        self.x, self.y, self.bs = torch.randn(n, *shape, generator=g), torch.randint(0, 3, (n,), generator=g), bs

    def __len__(self):
        return len(self.y) // self.bs

    def epoch(self, e=0):
        for i in range(0, len(self.y), self.bs):
            yield Batch(self.x[i:i + self.bs], self.y[i:i + self.bs], torch.arange(i, i + self.bs))


def _state():
    return types.SimpleNamespace(epoch=0, train_loader=_Loader(), device=torch.device("cpu"))


@pytest.mark.parametrize("name", ["ab", "fsp", "ft", "fitnet"])
def test_initialisation_stage(name):
    torch.manual_seed(0)
    # channels differ (FSP and AB need connectors); small enough to train a few steps quickly
    teacher = build_model("resnet8", {}, 3, (1, 8, 8))
    student = build_model("resnet_cifar", {"depth": 8, "filters": (8, 8, 16, 32)}, 3, (1, 8, 8))
    teacher.eval()
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    obj = _build(name, teacher, student, (1, 8, 8), init_epochs=3, init_lr=0.05)
    obj.on_fit_start(student, _state())
    hist = obj.init_history
    assert len(hist) == 3 and hist[-1] < hist[0], hist
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_before.items())  # the teacher is frozen
    student_changed = any(not torch.equal(v, student.state_dict()[k]) for k, v in s_before.items())
    assert student_changed == (name != "ft")  # FT trains only the paraphraser; the student is not even run
    if name == "ft":
        assert not any(p.requires_grad for p in obj.paraphraser.parameters())  # frozen for distillation
    # a resumed run (epoch > 0) restores connectors from its checkpoint instead of initialising again
    obj2 = _build(name, teacher, student, (1, 8, 8), init_epochs=4)
    obj2.on_fit_start(student, types.SimpleNamespace(**{**vars(_state()), "epoch": 3}))
    assert obj2.init_history == []


def test_ab_and_fsp_default_to_ce_plus_kd_after_initialisation():
    teacher, student = build_model("resnet8", {}, 3, (1, 8, 8)), build_model("resnet8", {}, 3, (1, 8, 8))
    for name in ("ab", "fsp"):
        obj = _build(name, teacher, student, (1, 8, 8))
        out = obj(student, Batch(torch.randn(4, 1, 8, 8), torch.randint(0, 3, (4,)), torch.arange(4)), None)
        assert set(out.parts) == {"ce", "kd"}
        joint = _build(name, teacher, student, (1, 8, 8), joint=True)
        assert joint.beta == {"ab": 1.0, "fsp": 50.0}[name]
