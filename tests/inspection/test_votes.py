"""Vote fractions before training: agreement and tree consistency, through `inspect`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import skysort
from skysort.inspection.votes import agreement, tree_violations
from skysort.synth.sets import SMALL_TREE, make_vote_fraction_set
from skysort.tasks.schema import TreeSchema
from tests.test_cli_end_to_end import read_csv


def test_agreement_and_violations_by_hand() -> None:
    schema = TreeSchema.from_dict({"questions": [
        {"name": "q", "answers": ["a", "b"], "parent": None},
        {"name": "r", "answers": ["c", "d"], "parent": "b"}]})
    values = np.array([[0.9, 0.1, 0.05, 0.05],
                       [0.2, 0.8, 0.6, 0.2],
                       [0.5, 0.5, 0.5, 0.3],     # r sums to 0.8, parent b is 0.5
                       [0.0, 1.0, 0.95, 0.05]])
    rows = agreement(values, ["a", "b", "c", "d"], schema)
    a, c = rows[0], rows[2]
    assert a["asked"] == 4 and a["max"] == 0.9 and a["median"] == pytest.approx(0.35)
    assert a["at_least"] == {"0.6": 1, "0.8": 1, "0.9": 1}
    # c's share of question r: 0.05/0.1, 0.6/0.8, 0.5/0.8, 0.95/1.0
    assert c["asked"] == 4 and c["at_least"] == {"0.6": 3, "0.8": 1, "0.9": 1}
    assert c["median"] == pytest.approx((0.625 + 0.75) / 2) and c["max"] == pytest.approx(0.95)
    assert c["question"] == "r"
    found = tree_violations(values, ["a", "b", "c", "d"], schema)
    assert found == [{"row": 2, "question": "r", "parent": "b", "answers_sum": 0.8,
                      "expected": 0.5, "gap": pytest.approx(0.3)}]


@pytest.mark.slow
def test_inspect_lists_a_child_sum_violation(tmp_path: Path) -> None:
    images, votes, schema = make_vote_fraction_set(tmp_path / "gz", 40, size=48, seed=4)
    with open(votes, newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    broken = rows[5]  # spiral_yes + spiral_no no longer sum to edge_on_no
    col = header.index("spiral_yes")
    broken[col] = f"{min(1.0, float(broken[col]) + 0.3):.6f}"
    with open(votes, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    result = skysort.inspect(images, labels=str(votes), schema=str(schema),
                             out=tmp_path / "out")
    violations = read_csv(tmp_path / "out" / "tree_violations.csv")
    assert [(v["path"].split(".")[0], v["question"]) for v in violations] == \
        [(broken[0], "spiral_arms")]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["fractions"]["violations"] == 1 and summary["task"] == "fractions"
    answers = [r["answer"] for r in summary["fractions"]["agreement"]]
    assert answers == [a for q in SMALL_TREE["questions"] for a in q["answers"]]
    smooth = next(r for r in summary["fractions"]["agreement"] if r["answer"] == "smooth")
    values = np.array([float(r[header.index("smooth")]) for r in rows[1:]])
    assert smooth["max"] == pytest.approx(values.max())
    assert smooth["at_least"]["0.8"] == int((values >= 0.8).sum())
    assert result.summary["label_errors"] is None
    page = (tmp_path / "out" / "inspect.html").read_text()
    assert "Tree consistency: 1 violation(s)" in page and broken[0] in page


@pytest.mark.slow
def test_real_galaxy_zoo_rows_copies_and_derived_classes(tmp_path: Path, browser: object
                                                         ) -> None:
    """Real Kaggle Galaxy Zoo rows (tests/fixtures/galaxy_zoo_kaggle), each image copied ten
    times: three exact groups, the derived classes counted as the rule says, and the
    page's derived galleries show them, in Chromium."""
    from skysort.tasks.fractions import DERIVED_CLASSES, derived_classes
    from tests.browser import check_page, open_report
    from tests.test_targets_end_to_end import galaxy_zoo_set

    images, table = galaxy_zoo_set(tmp_path)
    out = tmp_path / "out"
    skysort.inspect(images, labels=str(table), out=out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "fractions" and summary["images"] == 30
    groups = read_csv(out / "duplicates.csv")
    assert {r["kind"] for r in groups} == {"exact"}
    by_group: dict[str, set[str]] = {}
    for r in groups:
        by_group.setdefault(r["group"], set()).add(r["path"][:-6])  # the real GalaxyID
    assert len(by_group) == 3 and all(len(ids) == 1 for ids in by_group.values())
    assert summary["fractions"]["violations"] == 0  # real rows obey the tree
    with open(table, newline="") as fh:
        rows = list(csv.reader(fh))
    columns, values = rows[0][1:], np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    for t in ("0.6", "0.9"):
        expected = np.array(DERIVED_CLASSES)[derived_classes(values, columns, float(t))]
        counts = {c: int((expected == c).sum()) for c in DERIVED_CLASSES if (expected == c).any()}
        assert summary["fractions"]["derived"][t] == counts
    seen = open_report(browser, out / "inspect.html")
    page = check_page(seen, out / "inspect.html", ["fractions", "duplicates", "oddities"])
    shown = page.locator(".gallery.derived figure").count()
    assert shown == sum(min(8, n) for t in ("0.6", "0.9") for c, n in
                        summary["fractions"]["derived"][t].items() if c != "other")
    page.close()
