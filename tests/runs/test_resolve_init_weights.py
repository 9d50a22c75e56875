"""``init: {weights: FILE}``: a teacher or student run starts from a weights file instead of its random
initialisation; the key is left out of configs that do not set it (older run folders keep their settings), a bad
file is a one-line error before the run folder exists, and a resumed run continues from its own checkpoint."""

import pytest
import torch

from conftest import TINY_DATA, TINY_TRAIN
from kdlab.api import distill, train_teacher
from kdlab.config import DistillRunConfig, TeacherRunConfig, load_config
from kdlab.core.errors import CheckpointError
from kdlab.data import load_dataset
from kdlab.models import build_model


def start(tmp_path, seed: int = 7) -> tuple[str, dict[str, torch.Tensor]]:
    """A kdlab resnet8 of the tiny data set, saved as a training script would ({'model': state_dict})."""
    data = load_dataset(load_config(TeacherRunConfig, {"data": TINY_DATA, "model": "resnet8"}).data)
    torch.manual_seed(seed)
    state = build_model("resnet8", {}, data.num_classes, data.input_shape).state_dict()
    file = tmp_path / "start.pth"
    torch.save({"epoch": 3, "model": state}, file)
    return str(file), state


def test_init_is_left_out_of_configs_that_do_not_set_it():
    plain = load_config(DistillRunConfig, {"data": TINY_DATA, "student": "resnet8", "method": "none"})
    assert "init" not in plain.model_dump(mode="json")


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_run_starts_from_the_init_weights(tmp_path, role):
    file, state = start(tmp_path)
    # a learning rate too small to move a parameter: the trained parameters are the file's
    cfg = {"seed": 0, "data": TINY_DATA, "optim": {"lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0},
           "train": {**TINY_TRAIN, "epochs": 1}, "init": {"weights": file}, "out_dir": str(tmp_path / role)}
    if role == "teacher":
        res = train_teacher({**cfg, "model": "resnet8"})
    else:
        res = distill({**cfg, "student": "resnet8", "method": "none"})
    trained = torch.load(res.run_dir / "checkpoints" / "last.pt", weights_only=True)["model_state"]
    params = [k for k, _ in build_model("resnet8", {}, 4, (3, 8, 8)).named_parameters()]
    assert params and all(torch.allclose(trained[k], state[k], atol=1e-9) for k in params)
    assert (res.run_dir / "config.yaml").read_text().count(file) == 1  # the run says what it started from


def test_a_file_that_does_not_fit_is_one_line_before_the_run_folder_exists(tmp_path):
    file = tmp_path / "mlp.pth"
    torch.save(build_model("mlp", {"hidden": [8]}, 4, (3, 8, 8)).state_dict(), file)
    with pytest.raises(CheckpointError, match="init.weights") as e:
        train_teacher({"data": TINY_DATA, "model": "resnet8", "train": TINY_TRAIN, "init": {"weights": str(file)},
                       "out_dir": str(tmp_path / "t")})
    assert "\n" not in str(e.value) and not (tmp_path / "t").exists()
