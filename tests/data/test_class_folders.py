"""image-folder: one folder of images per class, held in memory."""

import numpy as np
import pytest
import torch
from PIL import Image

from image_data_files import COLOURS, make_class_folders
from kdlab.core.errors import DataError
from kdlab.data.class_folders import image_folder


def test_train_test_layout(tmp_path):
    make_class_folders(tmp_path / "train", {"cat": 3, "dog": 2})
    make_class_folders(tmp_path / "test", {"cat": 1, "dog": 2})
    b = image_folder(root=str(tmp_path), image_size=16)
    assert b.class_names == ["cat", "dog"] and b.num_classes == 2 and b.input_shape == (3, 16, 16)
    assert b.train.x.shape == (5, 3, 16, 16) and b.train.x.dtype == torch.uint8
    assert b.train.y.tolist() == [0, 0, 0, 1, 1] and b.test.y.tolist() == [0, 1, 1]
    # solid images keep their colour through the resize
    assert b.train.x[0, :, 5, 5].tolist() == list(COLOURS[0]) and b.test.x[2, :, 0, 0].tolist() == list(COLOURS[1])
    # normalisation: per-channel mean/std of the training pixels
    pixels = np.stack([np.array(COLOURS[k]) for k in [0, 0, 0, 1, 1]]) / 255
    assert b.meta["mean"] == pytest.approx(pixels.mean(0), abs=1e-4)
    # over all 5 x 256 pixels, i.e. the population std of the 5 colours; a constant channel keeps std 1e-3
    assert b.meta["std"] == pytest.approx(np.maximum(pixels.std(0), 1e-3), abs=1e-3)
    z = b.prepare(b.train.x)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)


def test_one_folder_stratified_split_is_seeded(tmp_path):
    make_class_folders(tmp_path, {"a": 10, "b": 5, "c": 4}, size=(8, 8))
    b = image_folder(root=str(tmp_path), image_size=8, test_fraction=0.2, split_seed=1)
    assert np.bincount(b.test.y.numpy()).tolist() == [2, 1, 1]  # round(0.2 n), at least one per class
    assert np.bincount(b.train.y.numpy()).tolist() == [8, 4, 3]
    again = image_folder(root=str(tmp_path), image_size=8, test_fraction=0.2, split_seed=1)
    assert torch.equal(again.test.y, b.test.y)
    assert b.augment is not None
    out = b.augment(b.train.x, torch.Generator().manual_seed(0))
    assert out.shape == b.train.x.shape and out.dtype == torch.uint8


def test_which_images_go_to_test_depends_on_the_seed(tmp_path):
    # images of one class that differ (a grey level per file) show which files went where
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i in range(10):
        Image.new("RGB", (8, 8), (i * 20,) * 3).save(tmp_path / "a" / f"{i}.png")
        Image.new("RGB", (8, 8), (255, 0, i * 20)).save(tmp_path / "b" / f"{i}.png")
    picks = {tuple(sorted(image_folder(root=str(tmp_path), image_size=8, split_seed=s).test.x[:, 2, 0, 0].tolist()))
             for s in range(4)}
    assert len(picks) > 1


def test_errors_are_one_line_and_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="not found"):
        image_folder(root=str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no class folders"):
        image_folder(root=str(tmp_path / "empty"))
    make_class_folders(tmp_path / "split" / "train", {"cat": 2, "dog": 2})
    make_class_folders(tmp_path / "split" / "test", {"cat": 1})
    with pytest.raises(DataError, match=r"class folder\(s\) dog of .*train missing in .*test"):
        image_folder(root=str(tmp_path / "split"))
    make_class_folders(tmp_path / "one", {"cat": 2})
    (tmp_path / "one" / "dog").mkdir()
    with pytest.raises(DataError, match=r"class folder .*dog holds no images"):
        image_folder(root=str(tmp_path / "one"))
    make_class_folders(tmp_path / "one", {"dog": 2})
    (tmp_path / "one" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*dog/broken.png") as e:
        image_folder(root=str(tmp_path / "one"))
    assert "\n" not in str(e.value)
