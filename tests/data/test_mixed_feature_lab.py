"""The lab's data: transformations redrawn per draw (Def. 3.1 step 3 as augmentation), the Def. 3.1 preset, and
the exact conditional P(y | x) against the stored p*(x)."""

import numpy as np
import pytest
import torch

from kdlab.config import TeacherRunConfig, load_config
from kdlab.data import ArrayLoader, load_dataset
from kdlab.data.mixed_feature import conditional_label_distribution, exactness, mixed_feature

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


def _orbit(patch: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(p, k, (-2, -1)) for p in (patch, patch.flip(-1)) for k in range(4)]


def test_redrawn_transformations_are_fresh_uniform_draws_of_each_patch():
    b = mixed_feature(num_train=64, num_test=10, grid=2, patch_size=4, redraw_transforms=True, seed=2)
    assert b.augment is not None and mixed_feature(num_train=8, num_test=2).augment is None
    x = b.train.x
    gen = torch.Generator().manual_seed(0)
    seen = {}  # (image, patch) -> set of distinct versions over draws
    for _ in range(60):
        a = b.augment(x, gen)
        assert a.shape == x.shape and torch.equal(a.sum((1, 2, 3)).round(decimals=3), x.sum((1, 2, 3)).round(
            decimals=3))
        for i in range(0, 64, 9):
            for r in range(2):
                for c in range(2):
                    orig = x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4]
                    new = a[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4]
                    orbit = _orbit(orig)
                    k = next(j for j, g in enumerate(orbit) if torch.equal(new, g))  # in the patch's orbit
                    seen.setdefault((i, r, c), set()).add(k)
    # each patch independently: 60 draws from 8 transformations leave none out (P < 1e-3 per patch)
    assert all(len(v) == 8 for v in seen.values())
    # patches of one image are transformed independently: not all with the same element
    a = b.augment(x, torch.Generator().manual_seed(1))
    picks = [[next(j for j, g in enumerate(_orbit(x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4]))
                  if torch.equal(a[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4], g)) for r in range(2) for c in range(2)]
             for i in range(16)]
    assert any(len(set(p)) > 1 for p in picks)


def test_flip_set_redraws_only_flips_and_augmented_epochs_are_reproducible():
    b = mixed_feature(num_train=40, num_test=10, transforms="flip", redraw_transforms=True, seed=4)
    a = b.augment(b.train.x, torch.Generator().manual_seed(3))
    for i in range(40):
        for r in range(2):
            for c in range(2):
                o, n = (t[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] for t in (b.train.x, a))
                assert torch.equal(n, o) or torch.equal(n, o.flip(-1))
    assert mixed_feature(num_train=8, num_test=2, transforms="none", redraw_transforms=True).augment is None

    def epoch(seed, e):
        loader = ArrayLoader(b.train, 16, torch.device("cpu"), shuffle=True, augment=b.augment, seed=seed)
        return torch.cat([batch.x for batch in loader.epoch(e)])

    assert torch.equal(epoch(0, 1), epoch(0, 1)) and not torch.equal(epoch(0, 1), epoch(0, 2))


def test_def31_preset_has_no_topics_and_redraws():
    spec = load_config(TeacherRunConfig, {"data": {"name": "mixed-feature-def31", "num_train": 3000, "num_test": 10},
                                          "model": "mlp"}).data
    b = load_dataset(spec)
    assert b.augment is not None and b.meta["generator"]["feature_purity"] == 0.0
    # features i.i.d. from the uniform p_Z: the patches of an input agree in dominant class at chance rate
    dominant = b.train.extras["features"] % b.num_classes
    agree = (dominant[:, 0] == dominant[:, 1]).float().mean().item()
    assert abs(agree - 0.1) < 0.03
    topical = mixed_feature(num_train=3000, num_test=10)  # the default: 75 % topical draws
    d = topical.train.extras["features"] % 10
    assert (d[:, 0] == d[:, 1]).float().mean().item() > 0.5


def test_exact_conditional_by_brute_force_on_a_tiny_generator():
    # 2 patches, 3 features, no topics: enumerate all 9 feature pairs by hand
    b = mixed_feature(num_train=30, num_test=5, num_classes=3, num_features=3, grid=1, patch_size=2,
                      feature_noise=0.8, feature_purity=0.0, transforms="flip", seed=5)
    b2 = mixed_feature(num_train=30, num_test=5, num_classes=3, num_features=3, grid=2, patch_size=2,
                       feature_noise=0.8, feature_purity=0.0, transforms="flip", seed=5)
    for bundle, m in ((b, 1), (b2, 4)):
        exact, left = conditional_label_distribution(bundle.train, bundle, top=3)
        assert left < 1e-12
        protos, py, prior = (bundle.meta[k] for k in ("prototypes", "feature_label_dist", "prior"))
        x = bundle.train.x.numpy().astype(np.float64)
        g = int(round(m ** 0.5))
        for i in range(0, 30, 7):
            patches = [x[i, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2] for r in range(g) for c in range(g)]
            lik = np.array([[np.mean([np.exp(-((p - v) ** 2).sum() / (2 * 0.8 ** 2))
                                      for v in (protos[z], protos[z][..., ::-1])]) * prior[z] for z in range(3)]
                            for p in patches])  # (M, Z)
            total = np.zeros(3)
            for combo in np.ndindex(*(3,) * m):
                w = np.prod([lik[j, z] for j, z in enumerate(combo)])
                gm = np.prod([py[z] for z in combo], axis=0) ** (1 / m)
                total += w * gm / gm.sum()
            np.testing.assert_allclose(exact[i].numpy(), total / total.sum(), rtol=1e-4, atol=1e-6)


def test_stored_p_star_is_the_exact_conditional_at_the_shipped_noise_and_not_at_large_noise():
    low = exactness(mixed_feature(num_train=300, num_test=10))
    assert low["l1_mean"] < 1e-4 and low["left_out_mass"] < 1e-9
    high = exactness(mixed_feature(num_train=300, num_test=10, feature_noise=1.5))
    assert high["l1_mean"] > 0.1 and high["above_0.01"] > 0.5
