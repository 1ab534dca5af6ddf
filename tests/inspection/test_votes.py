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
    assert c["asked"] == 4 and c["at_least"] == {"0.6": 2, "0.8": 1, "0.9": 1}
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
