import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_TRAIN, teacher_cfg
from kdlab.config import TeacherRunConfig, load_config
from kdlab.core.checkpoint import load_checkpoint
from kdlab.core.errors import ConfigError
from kdlab.core.registry import TEACHER_METHODS
from kdlab.core.state import LoopState
from kdlab.data import load_dataset
from kdlab.data.base import Batch
from kdlab.methods.teacher.sftn import sftn_loss
from kdlab.models import build_model
from kdlab.runs.teacher import train_teacher


def SFTN(model, data, student, **params):  # built as kdlab builds a method: its Params object and a context
    return TEACHER_METHODS.get("sftn").build({"student": student, **params}, model=model, data=data)



class _Data:
    def __init__(self, shape, classes=100):
        self.input_shape, self.num_classes, self.train = shape, classes, range(8)
        self.name = "probe"


# the pairs of the SFTN tables (CIFAR-100 at 32x32; the ImageNet pair at 224x224)
PAIRS = [("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("wrn_40_2", "ShuffleV2"),
         ("resnet32x4", "resnet8x4"), ("resnet32x4", "resnet8x2"), ("resnet32x4", "ShuffleV1"),
         ("resnet32x4", "ShuffleV2"), ("ResNet50", "vgg8"), ("imagenet_resnet50", "imagenet_resnet34")]


def _state(epoch=0):
    return LoopState(epoch=epoch, epochs=4, step=0, steps_per_epoch=1, num_train=8, num_classes=100,
                     device=torch.device("cpu"))


@pytest.mark.parametrize("teacher, student", PAIRS)
def test_branch_shapes_for_the_papers_pairs(teacher, student):
    torch.manual_seed(0)
    imagenet = teacher.startswith("imagenet")
    classes = 1000 if imagenet else 100
    data = _Data((3, 224, 224) if imagenet else (3, 32, 32), classes)
    t = build_model(teacher, {}, classes, data.input_shape)
    obj = SFTN(t, data, {"name": student})
    n_t = len(t.stages) - 1
    s_stages = len(build_model(student, {}, classes, data.input_shape).stages) - 1
    if n_t == s_stages:  # same depth in blocks: teacher stage i feeds student stage i + 1
        assert obj.pairs == [(i, i) for i in range(1, n_t)]
    else:  # paired by resolution
        assert obj.pairs and all(1 <= i < n_t and 1 <= j < s_stages for i, j in obj.pairs)
    x = torch.randn(2, *data.input_shape)
    f = t(x, features=True)
    for (i, _), branch in zip(obj.pairs, obj.branches):
        assert branch(f.stages[i]).shape == (2, classes)
    out = obj(t, Batch(x, torch.tensor([1, 2]), torch.arange(2)), _state())
    assert torch.isfinite(out.loss) and set(out.parts) == {"ce_teacher", "kl_branches", "ce_branches"}


def test_loss_equals_manual_equations():
    torch.manual_seed(0)
    t = torch.randn(4, 5)
    r = [torch.randn(4, 5), torch.randn(4, 5)]
    y = torch.tensor([0, 1, 2, 3])
    tau = 2.0
    loss, parts = sftn_loss(t, r, y, lambda_t=1.0, lambda_kl=3.0, lambda_ce=0.5, tau=tau)
    q_t = F.softmax(t / tau, 1)
    kl = sum((F.softmax(z / tau, 1) * (F.softmax(z / tau, 1).log() - q_t.log())).sum(1).mean() for z in r) / 2
    ce_r = sum(F.cross_entropy(z, y) for z in r) / 2
    manual = F.cross_entropy(t, y) + 3.0 * kl + 0.5 * ce_r
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    other, _ = sftn_loss(t, r, y, 1.0, 3.0, 0.5, tau, kl_direction="teacher_branch")
    kl2 = sum((q_t * (q_t.log() - F.log_softmax(z / tau, 1))).sum(1).mean() for z in r) / 2
    assert other.item() == pytest.approx((F.cross_entropy(t, y) + 3.0 * kl2 + 0.5 * ce_r).item(), rel=1e-5)


@pytest.mark.parametrize("detach", [False, True])
def test_branch_gradient_reaches_the_first_teacher_block(detach):
    torch.manual_seed(0)
    data = _Data((3, 16, 16), classes=10)
    t = build_model("resnet8x4", {}, 10, data.input_shape)
    obj = SFTN(t, data, {"name": "resnet8"}, lambda_t=0.0, lambda_kl=0.0, detach_teacher_features=detach)  # branch CE
    x = torch.randn(4, 3, 16, 16)
    obj(t, Batch(x, torch.tensor([0, 1, 2, 3]), torch.arange(4)), _state()).loss.backward()
    first = t.stages[1][0].conv1.weight.grad
    if detach:
        assert first is None or first.abs().sum() == 0
    else:
        assert first is not None and first.abs().sum() > 0
    head = t.classifier.weight.grad  # only the branch CE term: the teacher head gets no gradient
    assert head is None or head.abs().sum() == 0


def test_stripped_teacher_loads_into_plain_architecture(tmp_path):
    res = train_teacher(teacher_cfg(tmp_path / "t", model="resnet8x4", method={"name": "sftn", "student": "resnet8"}))
    ck = load_checkpoint(res.run_dir / "checkpoints" / "last.pt")
    plain = build_model("resnet8x4", {}, 10, (1, 8, 8))
    plain.load_state_dict(ck["model_state"])  # strict: no branch parameters in the teacher
    assert any(k.startswith("branches.") for k in ck["objective_state"])
    hist = (res.run_dir / "metrics.jsonl").read_text()
    assert "branch1_top1" in hist and "branch2_top1" in hist


def test_fine_tuning_mode_freezes_the_teacher_first(tmp_path):
    pre = train_teacher(teacher_cfg(tmp_path / "pre", model="resnet8x4"))
    cfg = teacher_cfg(tmp_path / "ft", model="resnet8x4", train={**TINY_TRAIN, "epochs": 2, "save_every": 1},
                      method={"name": "sftn", "student": "resnet8", "pretrained": str(pre.run_dir),
                              "branch_only_epochs": 1})
    res = train_teacher(cfg)
    w0 = load_checkpoint(pre.run_dir / "checkpoints" / "last.pt")["model_state"]
    w1 = load_checkpoint(res.run_dir / "checkpoints" / "epoch_001.pt")
    w2 = load_checkpoint(res.run_dir / "checkpoints" / "epoch_002.pt")["model_state"]
    for k, v in w0.items():  # after the branch-only epoch the teacher is untouched (running stats included)
        assert torch.equal(v, w1["model_state"][k]), k
    assert any(not torch.equal(v, w2[k]) for k, v in w0.items() if v.is_floating_point())
    cfg2 = load_config(TeacherRunConfig, cfg)
    data = load_dataset(cfg2.data)
    fresh = SFTN(build_model("resnet8x4", {}, 10, data.input_shape), data, {"name": "resnet8"})
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in w1["objective_state"].items()
               if v.is_floating_point())  # the branches trained


def test_block_map_errors():
    data = _Data((3, 32, 32))
    t = build_model("wrn_16_2", {}, 100, data.input_shape)
    with pytest.raises(ConfigError, match="block_map: pair \\[3, 1\\] is out of range"):
        SFTN(t, data, {"name": "resnet8"}, block_map=[[3, 1]])
    with pytest.raises(ConfigError, match=r"cannot map a teacher feature of size \(32, 32\) to the student's"):
        SFTN(build_model("resnet32x4", {}, 100, data.input_shape), data, {"name": "MobileNetV2"}, block_map=[[1, 3]])
    seq = _Data((1, 40), classes=10)
    with pytest.raises(ConfigError, match="takes image inputs"):
        SFTN(build_model("cnn1d", {}, 10, (1, 40)), seq, {"name": "resnet8"})
