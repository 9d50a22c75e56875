"""kdlab's mixed-feature distribution (SoTeacher, Def. 3.1), with a known true label distribution p*(x).

Generation, for each example:

1. pick M = grid**2 feature names z_1..z_M from a vocabulary Z (|Z| = ``num_features``).  Def. 3.1 draws them
   i.i.d. from p_Z (``feature_purity: 0``).  Following the LDA view the paper cites, an example may also have a
   topic t (uniform over classes) and draw each feature, with probability ``feature_purity``, from p_Z restricted
   to the features whose dominant class is t; this makes inputs whose features mostly agree, so that labels are
   learnable while p*(x) stays soft.  p*(x) depends only on the features either way;
2. for each feature, its input patch is x_z = mu_z + ``feature_noise`` * eps (a C x P x P prototype plus
   Gaussian noise), then transformed by a transformation drawn uniformly from a group (the 8 dihedral symmetries
   of the square, or the horizontal flips, or none);
3. the patches are tiled into a C x (grid*P) x (grid*P) image, so convolutional models apply;
4. each feature has a label distribution p_Y(.|z) = softmax(s * e_{c_z} + sigma * g_z), c_z = z mod K its
   dominant class, s = ``label_sharpness``, sigma = ``label_noise``, g_z ~ N(0, I);
5. the label is drawn from p*(x) = normalised geometric mean of p_Y(.|z_m) over the M patches.

Every split stores p*(x) as ``extras['p_star']`` and the feature names as ``extras['features']``.
Deterministic given ``seed``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..registry import register_dataset
from .base import DataBundle, Split


def feature_label_distributions(num_features: int, num_classes: int, sharpness: float, noise: float,
                                rng: np.random.Generator) -> np.ndarray:
    logits = noise * rng.standard_normal((num_features, num_classes))
    logits[np.arange(num_features), np.arange(num_features) % num_classes] += sharpness
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def true_label_distribution(features: np.ndarray, label_dist: np.ndarray) -> np.ndarray:
    """p*(x): the normalised geometric mean over patches of the patches' feature label distributions."""
    log_mean = np.log(label_dist)[features].mean(axis=1)  # (N, K)
    log_mean -= log_mean.max(axis=1, keepdims=True)
    p = np.exp(log_mean)
    return p / p.sum(axis=1, keepdims=True)


def _transform_patches(patches: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Apply dihedral transform ``ids`` (0..7: k = id % 4 quarter turns, then a flip if id >= 4) per patch."""
    out = patches.copy()
    for t in np.unique(ids):
        sel = ids == t
        p = np.rot90(patches[sel], k=int(t) % 4, axes=(-2, -1))
        if t >= 4:
            p = p[..., ::-1]
        out[sel] = p
    return out


def _sample_split(n: int, rng: np.random.Generator, *, prior: np.ndarray, dominant: np.ndarray,
                  label_dist: np.ndarray, prototypes: np.ndarray, grid: int, feature_noise: float,
                  purity: float, transforms: str) -> Split:
    num_classes = label_dist.shape[1]
    m = grid * grid
    topics = rng.integers(0, num_classes, size=n)
    features = rng.choice(len(prior), size=(n, m), p=prior)
    # per-topic conditional of the prior, for the topical draws
    cond = np.stack([np.where(dominant == k, prior, 0.0) for k in range(num_classes)])
    cond /= cond.sum(1, keepdims=True)
    topical = rng.random((n, m)) < purity
    cum = cond.cumsum(1)[topics]  # (n, |Z|)
    u = rng.random((n, m, 1))
    draws = np.minimum((u > cum[:, None, :]).sum(-1), len(prior) - 1)
    features = np.where(topical, draws, features)

    patches = prototypes[features] + feature_noise * rng.standard_normal((n, m) + prototypes.shape[1:])
    n_t = {"dihedral": 8, "flip": 2, "none": 1}[transforms]
    ids = rng.integers(0, n_t, size=(n, m))
    if transforms == "flip":
        ids = ids * 4  # identity or flip
    patches = _transform_patches(patches.reshape((n * m,) + prototypes.shape[1:]), ids.reshape(-1))
    c, p = prototypes.shape[1], prototypes.shape[2]
    images = patches.reshape(n, grid, grid, c, p, p).transpose(0, 3, 1, 4, 2, 5).reshape(n, c, grid * p, grid * p)

    p_star = true_label_distribution(features, label_dist)
    cum_star = p_star.cumsum(1)
    labels = np.minimum((rng.random((n, 1)) > cum_star).sum(1), num_classes - 1)
    return Split(torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels.astype(np.int64)),
                 {"p_star": torch.from_numpy(p_star.astype(np.float32)), "features": torch.from_numpy(features)})


@register_dataset("mixed-feature", input_shape="CxHxW (configurable)", classes="configurable")
def mixed_feature(num_train: int = 2000, num_test: int = 1000, num_classes: int = 10, num_features: int = 20,
                  grid: int = 2, patch_size: int = 4, channels: int = 1, feature_noise: float = 0.3,
                  transforms: Literal["dihedral", "flip", "none"] = "dihedral", label_sharpness: float = 6.0,
                  label_noise: float = 1.0, feature_purity: float = 0.75,
                  feature_prior: Literal["uniform", "zipf"] = "uniform", seed: int = 0) -> DataBundle:
    """SoTeacher's mixed-feature distribution (Def. 3.1): patches of transformed features, known p*(x)."""
    if num_features < num_classes:
        from ..errors import ConfigError

        raise ConfigError(f"mixed-feature: num_features ({num_features}) must be >= num_classes ({num_classes})")
    rng = np.random.default_rng([seed, 0])
    label_dist = feature_label_distributions(num_features, num_classes, label_sharpness, label_noise, rng)
    prototypes = rng.standard_normal((num_features, channels, patch_size, patch_size))
    if feature_prior == "uniform":
        prior = np.full(num_features, 1.0 / num_features)
    else:
        prior = 1.0 / (1.0 + rng.permutation(num_features))
        prior /= prior.sum()
    dominant = np.arange(num_features) % num_classes
    common = dict(prior=prior, dominant=dominant, label_dist=label_dist, prototypes=prototypes, grid=grid,
                  feature_noise=feature_noise, purity=feature_purity, transforms=transforms)
    train = _sample_split(num_train, np.random.default_rng([seed, 1]), **common)
    test = _sample_split(num_test, np.random.default_rng([seed, 2]), **common)
    side = grid * patch_size
    return DataBundle(
        name="mixed-feature", train=train, test=test, num_classes=num_classes,
        input_shape=(channels, side, side), class_names=[str(k) for k in range(num_classes)],
        meta={"feature_label_dist": label_dist, "prior": prior},
    )
