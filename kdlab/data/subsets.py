"""Class-balanced, seeded subsets of a labelled split (``num_train`` / ``num_test`` of the image data sets)."""

from __future__ import annotations

import numpy as np

from kdlab.core.errors import ConfigError


def balanced_indices(labels: np.ndarray, n: int, seed: int, key: str) -> np.ndarray:
    """``n`` indices into ``labels``, as equal a share per class as the counts allow, drawn with ``seed``.

    Each class gets ``n // K`` (the first ``n % K`` classes one more); a class with fewer samples than its share
    gives what it has and the rest is spread over the others, so the result always holds ``n`` samples.  The
    indices come back sorted (the data set's order), and the same ``(labels, n, seed)`` always gives the same.
    """
    total = len(labels)
    if n > total:
        raise ConfigError(f"data.{key}: {n} asked for but the split holds {total} samples")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    take = np.zeros(len(classes), dtype=np.int64)
    left = n
    # water-filling: repeatedly share what is left among the classes that still have samples
    while left > 0:
        open_ = [i for i, p in enumerate(pools) if take[i] < len(p)]
        share, extra = divmod(left, len(open_))
        for j, i in enumerate(open_):
            add = min(share + (j < extra), len(pools[i]) - take[i])
            take[i] += add
            left -= add
    return np.sort(np.concatenate([p[:t] for p, t in zip(pools, take)]))
