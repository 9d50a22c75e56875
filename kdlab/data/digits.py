"""scikit-learn's 8x8 handwritten digits (ships inside scikit-learn: no download)."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field

from kdlab.core.errors import ConfigError
from kdlab.core.registry import register_dataset
from kdlab.data.augment import make_crop_flip
from kdlab.data.base import DataBundle, Split


@register_dataset("digits", input_shape="1x8x8", classes=10)
def digits(test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.25,
           split_seed: Annotated[int, Field(ge=0, lt=2**32)] = 0,  # scikit-learn's random_state range
           augment: Literal["none", "shift"] = "none") -> DataBundle:
    """scikit-learn digits: 1797 grey 8x8 images, 10 classes; a fixed stratified train/test split.

    ``augment: shift`` applies a random 1-pixel translation (crop with padding 1, no flip: digits are not
    mirror-symmetric).

    test_fraction: the stratified fraction of the 1797 images held out as the test split
    split_seed: seed of the train/test split (scikit-learn's random_state)
    augment: none, or shift (a random 1-pixel translation of the training images)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.data.astype(np.float32).reshape(-1, 1, 8, 8) / 16.0
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    try:
        tr, te = train_test_split(idx, test_size=test_fraction, random_state=split_seed, stratify=y)
    except ValueError as e:  # a split with fewer samples than classes on one side
        raise ConfigError(f"data.test_fraction: {test_fraction} cannot split 1797 samples of 10 classes: "
                          f"{str(e).strip().splitlines()[0]}") from None
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    aug = make_crop_flip(pad=1, flip=False) if augment == "shift" else None
    return DataBundle(
        name="digits",
        train=Split(torch.from_numpy(x[tr]), torch.from_numpy(y[tr])),
        test=Split(torch.from_numpy(x[te]), torch.from_numpy(y[te])),
        num_classes=10, input_shape=(1, 8, 8), class_names=[str(i) for i in range(10)], augment=aug,
    )
