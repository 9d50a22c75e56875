"""The best-epoch table of ``kdlab reproduce`` says which split chose its epochs."""

from kdlab.reproduce.command import best_selection
from kdlab.reproduce.layouts import PartResult


def parts(*selected):
    return {"p": PartResult(None, [{"selected_on": s} if s else {} for s in selected])}


def test_the_label_names_the_split_that_chose_the_best_epochs():
    assert best_selection(parts("test", None)) == "chosen on test"  # runs of older kdlab: chosen on test
    assert best_selection(parts("val", "val")) == "chosen on validation"
    assert best_selection(parts("val", "test")) == "chosen on validation or test (per run: selected_on)"
