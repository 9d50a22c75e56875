"""MNIST-1D (Greydanus 2020), generated locally with the ``mnist1d`` package's generator (never downloaded)."""

from __future__ import annotations

import random
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat

from kdlab.core.errors import ConfigError
from kdlab.core.registry import register_dataset
from kdlab.data.augment import make_crop_flip
from kdlab.data.base import DataBundle, Split


@register_dataset("mnist1d", input_shape="1x40", classes=10)
def mnist1d(num_samples: Annotated[int, Field(ge=10)] = 5000,  # at least one sample of each of the 10 classes
            train_split: Annotated[float, Field(gt=0, lt=1)] = 0.8,
            seed: Annotated[int, Field(ge=0, lt=2**32)] = 42,  # the generator seeds NumPy's global RNG with it
            iid_noise_scale: NonNegativeFloat = 2e-2, corr_noise_scale: NonNegativeFloat = 0.25,
            shear_scale: NonNegativeFloat = 0.75, augment: Literal["none", "shift"] = "none") -> DataBundle:
    """MNIST-1D: 40-step sequences from 10 digit templates (default 5000 samples, 80/20 split).

    ``augment: shift`` applies a random translation of up to 2 steps (a padded crop).

    num_samples: sequences generated (train and test together; a tenth of them per class)
    train_split: the fraction of them in the training split
    seed: the generator's seed
    iid_noise_scale: scale of the independent per-step noise
    corr_noise_scale: scale of the correlated (smooth) noise
    shear_scale: scale of the random shear of each sequence
    augment: none, or shift (a random translation of up to 2 steps of the training sequences)
    """
    from mnist1d.data import get_dataset_args, make_dataset

    if num_samples < 10:  # the generator draws num_samples // 10 of each class and fails on none
        raise ConfigError(f"data.num_samples: {num_samples} is fewer than one sample per class (10)")
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    args.iid_noise_scale, args.corr_noise_scale, args.shear_scale = iid_noise_scale, corr_noise_scale, shear_scale
    # The generator reseeds NumPy's and Python's global RNGs; do not leak that into the caller.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    def split(x, y):
        return Split(torch.as_tensor(x, dtype=torch.float32).unsqueeze(1), torch.as_tensor(y, dtype=torch.int64))

    return DataBundle(
        name="mnist1d", train=split(d["x"], d["y"]), test=split(d["x_test"], d["y_test"]),
        num_classes=10, input_shape=(1, args.final_seq_length), class_names=[str(i) for i in range(10)],
        augment=make_crop_flip(pad=2, flip=False) if augment == "shift" else None,
    )
