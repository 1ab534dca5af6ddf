"""How the report's per-class galleries share their thumbnails among the classes."""

from __future__ import annotations

from skysort.evaluation.report_sections import PER_CLASS, PER_CLASS_TOTAL, gallery_plan


def test_few_classes_get_eight_and_eight_each() -> None:
    assert (PER_CLASS, PER_CLASS_TOTAL) == (8, 96)
    assert gallery_plan([3, 1, 0, 2, 5]) == (8, [0, 1, 2, 3, 4])  # 80 thumbnails
    assert gallery_plan([1] * 7) == (6, list(range(7)))  # 96 // 14 = 6: 84 thumbnails


def test_many_classes_show_those_with_the_most_mistakes_within_the_budget() -> None:
    mistakes = [(c * 7) % 11 for c in range(30)]
    side, shown = gallery_plan(mistakes)
    # two correct and two wrong per class, 96 // 4 = 24 classes: the most mistakes first,
    # ties in class order, shown in class order
    most = sorted(range(30), key=lambda c: (-mistakes[c], c))[:24]
    assert (side, shown) == (2, sorted(most))
    assert 2 * side * len(shown) == 96
    assert gallery_plan([0] * 200) == (2, list(range(24)))
