"""``data.val_fraction``: a stratified validation split taken out of the training split, drawn from the run's seed,
before the hold-out, read like the test split; the cached data set does not depend on it."""

import numpy as np
import pytest
import torch

from kdlab.config import DistillRunConfig, TeacherRunConfig, load_config
from kdlab.core.errors import ConfigError
from kdlab.data import DataBundle, DatasetSplit, load_dataset
from kdlab.data.base import hold_out, split_validation


def write_arrays(folder, counts=(40, 25, 15), num_test=12, seed=0):
    """An ``arrays`` data set whose training samples carry their row number as the extra ``id``."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    rng.shuffle(y)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", x=rng.normal(size=(len(y), 4)).astype(np.float32), y=y, id=np.arange(len(y)))
    np.savez(folder / "test.npz", x=rng.normal(size=(num_test, 4)).astype(np.float32),
             y=np.arange(num_test) % len(counts))
    return folder


def spec(root, schema=TeacherRunConfig, **split):
    role = {"model": "mlp"} if schema is TeacherRunConfig else {"student": "mlp"}
    return load_config(schema, {"data": {"name": "arrays", "root": str(root), **split}, **role}).data


def ids(split) -> set[int]:
    return set(split.extras["id"].tolist())


def test_the_split_is_stratified_disjoint_and_covers_the_training_split(tmp_path):
    root = write_arrays(tmp_path / "d")
    full = load_dataset(spec(root))
    b = load_dataset(spec(root, val_fraction=0.2), seed=3)
    assert ids(b.train).isdisjoint(ids(b.val)) and ids(b.train) | ids(b.val) == ids(full.train)
    for c, n in enumerate((40, 25, 15)):
        assert int((b.val.y == c).sum()) == round(0.2 * n)  # each class gives its share
    # every sample keeps its input and label
    for split in (b.train, b.val):
        rows = split.extras["id"].long()
        assert torch.equal(split.x, full.train.x[rows]) and torch.equal(split.y, full.train.y[rows])
    assert b.holdout is None and full.val is None


def test_the_split_is_drawn_from_the_seed_and_shared_by_teachers_and_students(tmp_path):
    root = write_arrays(tmp_path / "d")
    teacher = [ids(load_dataset(spec(root, val_fraction=0.25), seed=s).val) for s in (0, 1)]
    student = [ids(load_dataset(spec(root, DistillRunConfig, val_fraction=0.25), seed=s).val) for s in (0, 1)]
    assert teacher == student  # a seed's runs, teachers and students, hold out the same samples
    assert teacher[0] != teacher[1]  # another seed draws another split
    assert ids(load_dataset(spec(root, val_fraction=0.25), seed=0).val) == teacher[0]  # and again the same


def test_the_split_is_taken_before_the_holdout(tmp_path):
    root = write_arrays(tmp_path / "d")
    alone = load_dataset(spec(root, val_fraction=0.2), seed=5)
    both = load_dataset(spec(root, val_fraction=0.2), 0.25, seed=5)
    assert ids(both.val) == ids(alone.val)  # the hold-out does not change the validation split
    assert ids(both.holdout) | ids(both.train) == ids(alone.train)  # it is taken from what the split leaves
    assert ids(both.holdout).isdisjoint(ids(both.val))
    assert ids(both.holdout) == ids(hold_out(alone, 0.25).holdout)


def test_the_cached_data_set_does_not_depend_on_val_fraction(tmp_path):
    root = write_arrays(tmp_path / "d")
    a = load_dataset(spec(root, val_fraction=0.1), seed=0)
    b = load_dataset(spec(root, val_fraction=0.3), seed=0)
    c = load_dataset(spec(root))
    assert a.test is b.test is c.test  # one data set built, three views of it
    with pytest.raises(ValueError, match="needs the run's seed"):
        load_dataset(spec(root, val_fraction=0.1))


class Files(torch.utils.data.Dataset):
    """A file data set: item ``i`` is its index read through ``transform``."""

    def __init__(self, n, transform):
        self.n, self.transform = n, transform

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.transform(torch.tensor([float(i)])), 0


def test_the_split_of_a_file_data_set_is_read_like_the_test_split(tmp_path):
    augment, plain = (lambda x: -x), (lambda x: x)
    y = torch.arange(40) % 2
    bundle = DataBundle("files", DatasetSplit(Files(40, augment), y), DatasetSplit(Files(8, plain), y[:8]), 2, (1,))
    b = hold_out(split_validation(bundle, 0.25, seed=0), 0.2)
    read = lambda split: [float(split.dataset[i][0]) for i in range(len(split))]  # noqa: E731
    assert all(v >= 0 for v in read(b.val)) and len(b.val) == 10  # no augmentation: the test transform
    assert all(v >= 0 for v in read(b.holdout)) and len(b.holdout) == 6  # taken after it, read as the test split
    assert all(v <= 0 for v in read(b.train))  # the training split keeps its augmentation
    assert set(read(b.val)).isdisjoint(-v for v in read(b.train))


@pytest.mark.parametrize("counts, fraction, message", [
    ((30, 1), 0.6, r"data\.val_fraction: 0\.6 takes all 1 training sample of class 1 of arrays"),
    ((5, 5), 0.05, r"data\.val_fraction: 0\.05 of the 10 training samples of arrays selects no validation sample"),
    ((2,), 0.5, r"data\.val_fraction: arrays: the training split has 1 sample after val_fraction 0\.5"),
])
def test_a_fraction_that_leaves_too_little_is_one_line_naming_the_key(tmp_path, counts, fraction, message):
    root = write_arrays(tmp_path / "d", counts, num_test=4)
    with pytest.raises(ConfigError, match=message) as e:
        load_dataset(spec(root, val_fraction=fraction), seed=0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value, message", [(1.0, "less than 1"), (-0.1, "greater than or equal to 0"),
                                            (True, "not a boolean"), ("a", "valid number")])
def test_val_fraction_is_validated_as_a_data_key(tmp_path, value, message):
    with pytest.raises(ConfigError, match=f"data.val_fraction: .*{message}"):
        spec(tmp_path, val_fraction=value)
    with pytest.raises(ConfigError, match="data.val_fractoin: unknown key"):
        spec(tmp_path, val_fractoin=0.1)
