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

Training augmentation (``redraw_transforms``): each time a training example is drawn, every patch gets a fresh
transformation from the set (batched on the device, from the loader's per-epoch generator).  The stored patch is
gamma_0(x_z) with gamma_0 uniform over a group, so applying an independent uniform g gives (g o gamma_0)(x_z) with
g o gamma_0 again uniform: exactly a new draw of step 3, "data augmentation is employed for training" (SoTeacher
§1).  Without it the transformations are drawn once, at generation, and an example is the same input every epoch.

Where the default departs from Def. 3.1: ``feature_purity`` > 0 (topical features, see 1.) and no redraw.  The
preset ``mixed-feature-def31`` is Def. 3.1 exactly (``feature_purity`` 0, transformations redrawn).

p*(x) is the label distribution given the *feature names*.  It is the exact conditional P(y | x) of the input
only while the patches identify their features; with a large ``feature_noise`` a patch may be closer to another
feature's (transformed) prototype and P(y | x) mixes the candidates.  :func:`conditional_label_distribution`
computes the exact P(y | x) of the generator, and ``kdlab.data.mixed_feature.exactness`` how far p* is from it
(docs/results.md gives the figures for the shipped settings).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from kdlab.core.registry import register_dataset
from kdlab.data.base import DataBundle, Split

Classes = Annotated[int, Field(ge=2)]  # one class would make every label the same

TRANSFORM_IDS = {"dihedral": list(range(8)), "flip": [0, 4], "none": [0]}


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


def _dihedral(p, t: int):
    """Dihedral transform ``t`` of the last two axes (numpy array or tensor): t % 4 quarter turns, then a flip
    if t >= 4."""
    if isinstance(p, np.ndarray):
        p = np.rot90(p, k=t % 4, axes=(-2, -1))
        return p[..., ::-1] if t >= 4 else p
    p = torch.rot90(p, k=t % 4, dims=(-2, -1))
    return p.flip(-1) if t >= 4 else p


def _transform_patches(patches: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Apply dihedral transform ``ids`` (0..7: k = id % 4 quarter turns, then a flip if id >= 4) per patch."""
    out = patches.copy()
    for t in np.unique(ids):
        sel = ids == t
        out[sel] = _dihedral(patches[sel], int(t))
    return out


def redraw_transforms(grid: int, transforms: str):
    """The training augmentation of ``redraw_transforms``: every patch of every image of the batch gets an
    independent uniform transformation of the set, composed with the one it was generated with."""
    ids = TRANSFORM_IDS[transforms]

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        p = h // grid
        patches = x.reshape(b, c, grid, p, grid, p).permute(0, 2, 4, 1, 3, 5)  # (B, G, G, C, P, P)
        pick = torch.randint(0, len(ids), (b, grid, grid), device=x.device, generator=gen)
        out = torch.empty_like(patches)
        for i, t in enumerate(ids):
            sel = pick == i
            out[sel] = _dihedral(patches[sel], t)
        return out.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    return augment


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
def mixed_feature(num_train: PositiveInt = 2000, num_test: PositiveInt = 1000, num_classes: Classes = 10,
                  num_features: PositiveInt = 20, grid: PositiveInt = 2, patch_size: PositiveInt = 4,
                  channels: PositiveInt = 1, feature_noise: NonNegativeFloat = 0.3,
                  transforms: Literal["dihedral", "flip", "none"] = "dihedral",
                  label_sharpness: NonNegativeFloat = 6.0, label_noise: NonNegativeFloat = 1.0,
                  feature_purity: Annotated[float, Field(ge=0, le=1)] = 0.75,
                  feature_prior: Literal["uniform", "zipf"] = "uniform", redraw_transforms: bool = False,
                  seed: NonNegativeInt = 0) -> DataBundle:
    """SoTeacher's mixed-feature distribution (Def. 3.1): patches of transformed features, known p*(x);
    ``redraw_transforms``: a new transformation of every patch each time a training example is drawn.

    num_train: training samples
    num_test: test samples
    num_classes: classes
    num_features: feature prototypes (at least num_classes; feature k's dominant class is k mod num_classes)
    grid: patches per side (grid x grid patches per image)
    patch_size: side of a patch in pixels
    channels: image channels
    feature_noise: standard deviation of the Gaussian noise added to each patch
    transforms: the patch transformations drawn: dihedral (8 rotations / flips), flip or none
    label_sharpness: logit added to each feature's dominant class in its label distribution
    label_noise: standard deviation of the random logits of each feature's label distribution
    feature_purity: probability that a patch's feature is drawn from p_Z restricted to the example's topic (0:
      i.i.d. from p_Z, Def. 3.1)
    feature_prior: the features' prior, uniform or zipf
    redraw_transforms: a new transformation of every patch each time a training example is drawn
    seed: the generator's seed (prototypes, label distributions and samples)
    """
    if num_features < num_classes:
        from kdlab.core.errors import ConfigError

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
    augment = _redraw(grid, transforms) if redraw_transforms and transforms != "none" else None
    return DataBundle(
        name="mixed-feature", train=train, test=test, num_classes=num_classes,
        input_shape=(channels, side, side), class_names=[str(k) for k in range(num_classes)], augment=augment,
        meta={"feature_label_dist": label_dist, "prior": prior, "prototypes": prototypes,
              "generator": {"grid": grid, "feature_noise": feature_noise, "feature_purity": feature_purity,
                            "transforms": transforms}},
    )


_redraw = redraw_transforms  # the parameter of mixed_feature shadows the function's name


@register_dataset("mixed-feature-def31", input_shape="CxHxW (configurable)", classes="configurable")
def mixed_feature_def31(num_train: PositiveInt = 2000, num_test: PositiveInt = 1000, num_classes: Classes = 10,
                        num_features: PositiveInt = 20, grid: PositiveInt = 2, patch_size: PositiveInt = 4,
                        channels: PositiveInt = 1, feature_noise: NonNegativeFloat = 0.3,
                        transforms: Literal["dihedral", "flip", "none"] = "dihedral",
                        label_sharpness: NonNegativeFloat = 6.0, label_noise: NonNegativeFloat = 1.0,
                        feature_prior: Literal["uniform", "zipf"] = "uniform", redraw_transforms: bool = True,
                        seed: NonNegativeInt = 0) -> DataBundle:
    """Def. 3.1 exactly: features i.i.d. from p_Z (no topics) and a new transformation per patch each time a
    training example is drawn (``redraw_transforms: false``: the fixed sample of an ERM analysis).

    num_train: training samples
    num_test: test samples
    num_classes: classes
    num_features: feature prototypes (at least num_classes)
    grid: patches per side (grid x grid patches per image)
    patch_size: side of a patch in pixels
    channels: image channels
    feature_noise: standard deviation of the Gaussian noise added to each patch
    transforms: the patch transformations drawn: dihedral (8 rotations / flips), flip or none
    label_sharpness: logit added to each feature's dominant class in its label distribution
    label_noise: standard deviation of the random logits of each feature's label distribution
    feature_prior: the features' prior p_Z, uniform or zipf
    redraw_transforms: a new transformation of every patch each time a training example is drawn (false: a fixed
      sample)
    seed: the generator's seed (prototypes, label distributions and samples)
    """
    bundle = mixed_feature(num_train, num_test, num_classes, num_features, grid, patch_size, channels,
                           feature_noise, transforms, label_sharpness, label_noise, 0.0, feature_prior,
                           redraw_transforms, seed)
    bundle.name = "mixed-feature-def31"
    return bundle


def _patches(images: np.ndarray, grid: int) -> np.ndarray:
    """(N, C, G*P, G*P) images -> (N, M, C, P, P) patches, row-major like generation."""
    n, c, h, _ = images.shape
    p = h // grid
    return images.reshape(n, c, grid, p, grid, p).transpose(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, p, p)


def conditional_label_distribution(split: Split, bundle: DataBundle, top: int = 6) -> tuple[torch.Tensor, float]:
    """The generator's exact P(y | x) of every input of ``split`` (from its pixels, not its feature names), and the
    largest posterior mass over feature names that the enumeration left out.

    P(z, t | x) is proportional to prod_m q_t(z_m) lik(x_m | z_m), with t the topic, q_t = purity * p_Z(. | t) +
    (1 - purity) * p_Z and lik the Gaussian density of the patch around the prototype's transformations (averaged
    over the transformation set); P(y | x) = sum_z P(z | x) p*(z).  Per patch the ``top`` most likely feature names
    are enumerated; the returned mass bounds the error of doing so (0 when the patches identify their features)."""
    meta, gen = bundle.meta, bundle.meta["generator"]
    protos, label_dist, prior = meta["prototypes"], meta["feature_label_dist"], meta["prior"]
    k = label_dist.shape[1]
    ids = TRANSFORM_IDS[gen["transforms"]]
    variants = np.stack([np.stack([_dihedral(p, t) for t in ids]) for p in protos])  # (Z, T, C, P, P)
    x = _patches(split.x.numpy().astype(np.float64), gen["grid"])  # (N, M, C, P, P)
    n, m = x.shape[:2]
    d2 = ((x[:, :, None, None] - variants[None, None]) ** 2).reshape(n, m, *variants.shape[:2], -1).sum(-1)
    loglik = -d2 / (2 * gen["feature_noise"] ** 2)  # (N, M, Z, T)
    loglik = np.logaddexp.reduce(loglik, axis=-1) - np.log(len(ids))  # (N, M, Z)
    dominant = np.arange(len(prior)) % k
    cond = np.stack([np.where(dominant == t, prior, 0.0) for t in range(k)])
    cond /= cond.sum(1, keepdims=True)
    q = gen["feature_purity"] * cond + (1 - gen["feature_purity"]) * prior  # (K topics, Z)
    log_q = np.log(np.maximum(q, 1e-300))
    marginal = loglik + np.log(prior)  # per-patch posterior under p_Z, to choose the candidates
    marginal -= np.logaddexp.reduce(marginal, axis=-1, keepdims=True)
    order = np.argsort(-marginal, axis=-1)[..., :top]  # (N, M, top)
    left_out = float(1 - np.exp(np.take_along_axis(marginal, order, -1)).sum(-1).min())
    log_py = np.log(label_dist)  # (Z, K)
    out = np.empty((n, k))
    grids = np.stack(np.meshgrid(*[np.arange(top)] * m, indexing="ij"), -1).reshape(-1, m)  # (top^M, M)
    for i in range(n):
        z = order[i][np.arange(m), grids]  # (combos, M) feature names
        lik = loglik[i][np.arange(m), z].sum(-1)  # (combos,)
        topic = np.logaddexp.reduce(log_q[:, z].sum(-1), axis=0) - np.log(k)  # sum over topics
        logw = lik + topic
        w = np.exp(logw - logw.max())
        w /= w.sum()
        pz = log_py[z].mean(1)  # (combos, K): log geometric mean
        pz = np.exp(pz - pz.max(1, keepdims=True))
        pz /= pz.sum(1, keepdims=True)
        out[i] = w @ pz
    return torch.from_numpy(out.astype(np.float32)), left_out


def exactness(bundle: DataBundle, split: str = "train", top: int = 6) -> dict[str, float]:
    """How far the stored p*(x) is from the exact P(y | x): mean and max L1 distance, and the fraction of inputs
    with a distance above 0.01."""
    s = getattr(bundle, split)
    exact, left_out = conditional_label_distribution(s, bundle, top)
    l1 = (exact - s.extras["p_star"]).abs().sum(1)
    return {"l1_mean": l1.mean().item(), "l1_max": l1.max().item(), "above_0.01": (l1 > 0.01).float().mean().item(),
            "left_out_mass": left_out}
