"""Temperature scaling that a hold-out cannot identify, and table cells of a single run."""

import warnings

import pytest
import torch

from kdlab.analysis.document import Stat, fmt_cell
from kdlab.core.metrics import T_RANGE, fit_temperature, nll

pytestmark = pytest.mark.fast  # the fast tier: no training (pytest -q -m fast)


def test_a_perfectly_classified_holdout_gives_no_scaling_and_a_warning():
    logits = torch.tensor([[4.0, 0.0], [0.0, 3.0], [5.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    with pytest.warns(UserWarning, match="does not identify a temperature; using T = 1"):
        assert fit_temperature(logits, labels) == 1.0
    with pytest.warns(UserWarning):
        assert fit_temperature(logits[:0], labels[:0]) == 1.0


def test_the_fitted_temperature_is_bounded_and_still_minimises_the_nll():
    torch.manual_seed(0)
    logits = torch.randn(400, 5) * 3
    labels = torch.where(torch.rand(400) < 0.6, logits.argmax(1), torch.randint(0, 5, (400,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = fit_temperature(logits, labels)
    assert T_RANGE[0] <= t <= T_RANGE[1] and t != 1.0
    for other in (t * 0.9, t * 1.1):
        assert nll(logits / t, labels) <= nll(logits / other, labels) + 1e-6
    # one error among confident predictions: the unbounded fit would push T towards 0
    sharp = torch.tensor([[9.0, 0.0]] * 99 + [[0.0, 9.0]])
    t = fit_temperature(sharp, torch.zeros(100, dtype=torch.long))
    assert T_RANGE[0] <= t <= T_RANGE[1]


def test_one_run_shows_no_spread():
    assert Stat.of([73.7312]).text() == "73.73 (n=1)"
    assert Stat.of([1.0, 2.0]).text() == "1.50 ± 0.71 (n=2)"
    assert fmt_cell([0.5]) == "0.50 (n=1)" and fmt_cell([]) == "-"
