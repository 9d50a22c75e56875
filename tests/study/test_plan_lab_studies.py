"""The true-distribution lab: the theory's patch-wise learner and its risk, data sweeps (learning curves), per-pair
teacher methods, and the intervals the lab's tables report."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdlab.analysis.stats import line_fit, mean_interval, paired_difference
from kdlab.config import StudyConfig, load_config
from kdlab.core.errors import ConfigError
from kdlab.core.registry import TEACHER_METHODS
from kdlab.data.mixed_feature import mixed_feature
from kdlab.models import build_model
from kdlab.study.plan import plan_study


def PatchERM(model):  # built as kdlab builds a method: its Params object and a context
    return TEACHER_METHODS.get("patch-erm").build({}, model=model)


def _patchwise(**kw):
    return build_model("patchwise", kw, num_classes=5, input_shape=(1, 8, 8))


def test_patchwise_model_sees_each_patch_alone_and_outputs_the_modified_softmax():
    torch.manual_seed(0)
    m = _patchwise(patch_size=4, width=16, depth=1).eval()
    x = torch.randn(3, 1, 8, 8)
    f = m(x, features=True)
    per_patch = m.patch_log_probs(f.stages[-1])  # (B, 4, K)
    assert per_patch.shape == (3, 4, 5)
    # log of Def. B.1: mean_m h_m minus the mean of the per-patch log-sum-exps
    h = m.classifier(f.stages[-1]).flatten(2).transpose(1, 2)
    direct = h.mean(1) - torch.logsumexp(h, -1).mean(1, keepdim=True)
    torch.testing.assert_close(f.logits, direct)
    # its softmax is the normalised geometric mean of the patches' predictions
    gm = per_patch.exp().prod(1) ** (1 / 4)
    torch.testing.assert_close(f.logits.softmax(-1), gm / gm.sum(-1, keepdim=True))
    # changing one patch changes only that patch's prediction
    y = x.clone()
    y[:, :, 4:, :4] += 1.0
    other = m.patch_log_probs(m(y, features=True).stages[-1])
    changed = (other - per_patch).abs().amax((0, 2))
    assert changed[2] > 1e-3 and changed[[0, 1, 3]].max() == 0
    with pytest.raises(ValueError, match="grid of 4x4"):
        m(torch.randn(1, 1, 6, 6))


def test_patch_erm_is_the_papers_risk_and_refuses_other_models():
    torch.manual_seed(1)
    m = _patchwise(width=8)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,))
    obj = PatchERM(model=m)
    batch = type("B", (), {"x": x, "y": y})()
    loss = obj.forward(m, batch, None).loss
    lp = m.patch_log_probs(m(x, features=True).stages[-1])
    assert torch.allclose(loss, -lp[torch.arange(6), :, y].mean())
    assert not torch.allclose(loss, F.cross_entropy(m(x), y))  # cross-entropy renormalises over classes
    with pytest.raises(ConfigError, match="'patch-erm' trains the model 'patchwise' only"):
        PatchERM(model=build_model("mlp", {}, num_classes=5, input_shape=(1, 8, 8)))


def test_lemma_3_3_minimiser_predicts_each_features_mean_label():
    # identical patches per feature (no noise, no transformation): an invariant extractor.  The minimiser of the
    # paper's risk gives every feature the label frequencies of the inputs that contain it (counted per patch).
    b = mixed_feature(num_train=400, num_test=10, num_classes=4, num_features=6, grid=2, patch_size=2,
                      feature_noise=0.0, transforms="none", feature_purity=0.0, seed=3)
    torch.manual_seed(0)
    m = build_model("patchwise", {"patch_size": 2, "width": 32, "depth": 1}, num_classes=4, input_shape=(1, 4, 4))
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    x, y = b.train.x, b.train.y
    batch = type("B", (), {"x": x, "y": y})()
    obj = PatchERM(model=m)
    for _ in range(600):
        opt.zero_grad()
        obj.forward(m, batch, None).loss.backward()
        opt.step()
    feats = b.train.extras["features"]
    protos = torch.from_numpy(b.meta["prototypes"]).float()  # (Z, 1, 2, 2)
    pred = m.patch_log_probs(m(protos, features=True).stages[-1])[:, 0].exp()  # one patch per prototype
    for z in range(6):
        rows = (feats == z).sum(1)  # occurrences of z in each input
        if rows.sum() < 20:
            continue
        target = torch.zeros(4).index_add_(0, y, rows.float()) / rows.sum()
        assert (pred[z] - target).abs().sum() < 0.03, (z, pred[z], target)


def _study(**extra):
    base = {"name": "s", "out_dir": "/tmp/kdlab-test-plan", "seeds": [0, 1],
            "data": {"name": "mixed-feature", "num_train": 100, "num_test": 20},
            "teacher": {"methods": {"standard": "standard", "patch-erm": "patch-erm"},
                        "schedule": {"milestones": [4, 8]}, "train": {"epochs": 10, "eval_every": 2}},
            "student": {"model": "mlp", "methods": {"alone": "none", "kd": "kd"}, "train": {"epochs": 3}},
            "pairs": [{"teacher": "patchwise", "student": "mlp"},
                      {"teacher": "resnet8", "student": "mlp", "teacher_methods": ["standard"]}]}
    return load_config(StudyConfig, {**base, **extra})


@pytest.mark.fast
def test_data_sweep_repeats_the_study_per_size_with_the_same_steps():
    cfg = _study(sweeps=[{"role": "data", "param": "num_train", "values": [100, 400], "same_steps": True}])
    plan = plan_study(cfg)
    teachers = [r for r in plan if r.kind == "teacher"]
    # patchwise: 2 methods, resnet8: standard only; x 2 sizes x 2 seeds
    assert len(teachers) == (2 + 1) * 2 * 2
    assert {r.teacher_label for r in teachers} == {"standard[num_train=100]", "standard[num_train=400]",
                                                   "patch-erm[num_train=100]", "patch-erm[num_train=400]"}
    assert not any(r.arch.startswith("resnet") and r.teacher_label.startswith("patch-erm") for r in teachers)
    small = next(r for r in teachers if r.teacher_label == "standard[num_train=100]")
    large = next(r for r in teachers if r.teacher_label == "standard[num_train=400]")
    assert small.config["data"]["num_train"] == 100 and large.config["data"]["num_train"] == 400
    assert large.config["train"]["epochs"] == 10 and small.config["train"]["epochs"] == 40  # 4x the epochs
    assert small.config["schedule"]["milestones"] == [16, 32] and small.config["train"]["eval_every"] == 8
    assert small.info == {"param": "data.num_train", "value": 100, "base": "standard"}
    assert "num_train=100" in str(small.run_dir) and "num_train=400" in str(large.run_dir)
    kd = [r for r in plan if r.kind == "student" and r.method_label == "kd"]
    assert len(kd) == 3 * 2 * 2 and all(r.config["data"]["num_train"] == int(r.teacher_label.split("=")[1][:-1])
                                        for r in kd)
    alone = {r.method_label for r in plan if r.kind == "student" and r.pair is None}
    assert alone == {"alone[num_train=100]", "alone[num_train=400]"}
    assert len({r.run_dir for r in plan}) == len(plan)


@pytest.mark.parametrize("sweeps, message", [
    ([{"role": "data", "param": "num_trains", "values": [10]}], "'num_trains' is not a parameter of data set"),
    ([{"role": "data", "param": "num_train", "values": ["x"]}], r"data.num_train='x'"),
    ([{"role": "data", "param": "num_train", "values": [10], "method": "standard"}], "drop its 'method'"),
    ([{"role": "teacher", "method": "standard", "param": "x", "values": [1], "same_steps": True}],
     "same_steps applies to data sweeps only"),
    ([{"role": "data", "param": "feature_noise", "values": [0.1], "same_steps": True}], "positive integer"),
    ([{"role": "teacher", "param": "x", "values": [1]}], "needs 'method'"),
    ([{"role": "data", "param": "num_train", "values": [10]},
      {"role": "teacher", "method": "standard", "param": "x", "values": [1]}], "the study's only sweep"),
])
@pytest.mark.fast
def test_data_sweep_errors_name_the_key(sweeps, message):
    with pytest.raises(ConfigError, match=message):
        _study(sweeps=sweeps)


def test_pair_teacher_methods_must_be_labels():
    with pytest.raises(ConfigError, match=r"pairs\[0\].teacher_methods: 'sftn' is not a teacher method label"):
        _study(pairs=[{"teacher": "resnet8", "student": "mlp", "teacher_methods": ["sftn"]}])


def test_intervals_match_textbook_formulas():
    from scipy import stats

    x = [0.2, 0.5, 0.1, 0.9, 0.4]
    iv = mean_interval(x)
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(x), scale=stats.sem(x))
    assert iv.n == 5 and math.isclose(iv.low, lo) and math.isclose(iv.high, hi)
    d = paired_difference([(1.0, 1.5), (2.0, 2.2), (None, 3.0), (0.5, 1.4)])
    assert d.n == 3 and math.isclose(d.estimate, (0.5 + 0.2 + 0.9) / 3)
    assert mean_interval([1.0]).n == 1 and math.isnan(mean_interval([1.0]).low)
    rng = np.random.default_rng(0)
    xs = np.repeat(np.log([100, 200, 400, 800]), 3)
    ys = 1.0 - 0.5 * xs + 0.05 * rng.standard_normal(len(xs))
    fit = line_fit(xs, ys)
    res = stats.linregress(xs, ys)
    half = stats.t.ppf(0.975, len(xs) - 2) * res.stderr
    assert math.isclose(fit.slope.estimate, res.slope) and math.isclose(fit.intercept, res.intercept)
    assert math.isclose(fit.slope.high - fit.slope.estimate, half)
    assert fit.slope.low < -0.5 < fit.slope.high


def test_scaling_study_end_to_end_reports_the_fitted_slopes(tmp_path):
    from kdlab.analysis.scaling import curves
    from kdlab.api import run_study

    cfg = {"name": "scale", "out_dir": str(tmp_path / "s"), "seeds": [0, 1],
           "data": {"name": "mixed-feature-def31", "num_train": 60, "num_test": 30, "redraw_transforms": False},
           "sweeps": [{"role": "data", "param": "num_train", "values": [40, 80, 160], "same_steps": True}],
           "teacher": {"methods": {"standard": "standard", "patch-erm": "patch-erm"},
                       "schedule": {"milestones": [2]}, "train": {"epochs": 2, "progress": "off"}},
           "student": {"model": "mlp", "methods": {}},
           "pairs": [{"teacher": {"name": "patchwise", "width": 8}, "student": "mlp"},
                     {"teacher": {"name": "resnet_cifar", "depth": 8, "filters": [4, 4, 8, 8]}, "student": "mlp",
                      "teacher_methods": ["standard"]}]}
    res = run_study(load_config(StudyConfig, cfg), log=lambda s: None)
    assert res.ran == 3 * 3 * 2 and not res.failed
    cs = curves(res.records)
    assert [(c.arch.split("(")[0], c.method) for c in cs] == [("patchwise", "standard"), ("patchwise", "patch-erm"),
                                                               ("resnet_cifar", "standard")]
    # the slope is a least-squares fit of every run's log L1 on log N
    recs = [r for r in res.records if r.kind == "teacher" and r.arch.startswith("patchwise")
            and r.sweep_base == "patch-erm"]
    assert len(recs) == 6
    b = np.polyfit([math.log(r.sweep_value) for r in recs], [math.log(r.get("pstar_l1_train")) for r in recs], 1)[0]
    assert math.isclose(cs[1].fit.slope.estimate, b, rel_tol=1e-9)
    report = (tmp_path / "s" / "report.md").read_text()
    assert "Distance to p* against the training-set size" in report and "figures/scaling.png" in report
    assert (tmp_path / "s" / "figures" / "scaling.png").stat().st_size > 10_000
    results = (tmp_path / "s" / "results.md").read_text()
    assert "patch-erm[num_train=160]" in results and "Paired differences" not in results


def test_paired_table_differences_each_method_to_the_baseline_seed_by_seed():
    from pathlib import Path

    from kdlab.analysis.tables import paired_table
    from kdlab.study.records import RunRecord

    def rec(kind, label, seed, method=None, **m):
        return RunRecord(kind, None if kind == "teacher" else "T--S", "T" if kind == "teacher" else "S", label,
                         method or label, seed, Path(f"/x/{kind}/{label}/{method}/{seed}"), None, metrics=m)

    base = {0: 70.0, 1: 72.0, 2: 71.0}
    other = {0: 71.0, 1: 72.5, 2: 73.0, 3: 90.0}  # seed 3 has no baseline: not a pair
    recs = [rec("teacher", "standard", s, top1=v, pstar_l1_train=0.5) for s, v in base.items()]
    recs += [rec("teacher", "so", s, top1=v, pstar_l1_train=0.4) for s, v in other.items()]
    recs += [rec("student", "standard", s, "kd", top1=v - 5) for s, v in base.items()]
    recs += [rec("student", "so", s, "kd", top1=v - 4) for s, v in other.items()]
    t = paired_table(recs, {"teacher": "T", "student": "S", "key": "T--S"}, ["standard", "so"], ["kd"])
    assert t.header == ["teacher method", "teacher top-1", "L1 to p* (train)", "kd student top-1"]
    top1, l1, kd = (c.interval for c in t.rows[0][1:])
    assert top1.n == 3 and math.isclose(top1.estimate, (1.0 + 0.5 + 2.0) / 3)
    assert math.isclose(kd.estimate, top1.estimate + 1)  # the students are the teachers' values shifted
    assert math.isclose(l1.estimate, -0.1) and math.isclose(l1.low, -0.1)  # no spread: a zero-width interval
    assert "[" in t.to_markdown() and t.to_csv().count("\n") == 4
    assert paired_table(recs, {"teacher": "T", "student": "S", "key": "T--S"}, ["standard"], ["kd"]) is None


@pytest.mark.fast
@pytest.mark.parametrize("name", ["lab-scaling", "lab-teacher-quality", "lab-soteacher-regime"])
def test_the_shipped_lab_studies_validate_and_plan(name):
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "studies" / f"{name}.yaml"
    cfg = load_config(StudyConfig, yaml.safe_load(path.read_text()))
    plan = plan_study(cfg)
    runs = {"lab-scaling": 54, "lab-teacher-quality": 144, "lab-soteacher-regime": 45}[name]
    assert len(plan) == runs  # the number the docs and the config's header give
