"""``skysort inspect`` on a table of vote counts: agreement as shares of each question's
votes, vote totals per galaxy, and the tree check of counts; checked against numpy on the
table itself, and on the page in real Chromium."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import skysort
from skysort.inspection.votes import vote_view
from skysort.synth.counts import COUNT_TREE, make_vote_count_set
from skysort.tasks.schema import TreeSchema

TREE = TreeSchema.from_dict({"questions": [
    {"name": "q", "answers": ["a", "b"], "parent": None},
    {"name": "r", "answers": ["c", "d"], "parent": "b"}]})


def test_vote_view_of_counts_by_hand() -> None:
    counts = np.array([[9, 1, 1, 0],      # r: 1 vote, all for c
                       [2, 8, 6, 2],
                       [5, 5, 3, 1],      # r has 4 votes, b had 5: a violation
                       [0, 4, 0, 4],
                       [0, 0, 0, 0]], dtype=float)  # nobody voted
    view = vote_view(counts, ["a", "b", "c", "d"], TREE, np.ones(5, bool), counts=True)
    a, c = view["agreement"][0], view["agreement"][2]
    assert a["asked"] == 4 and a["median"] == pytest.approx(np.median([0.9, 0.2, 0.5, 0.0]))
    assert c["asked"] == 4 and c["median"] == pytest.approx(0.75)  # 1/1, 6/8, 3/4, 0/4
    q, r = view["questions"]
    assert (q["question"], q["asked"]) == ("q", 4)
    assert q["median"] == pytest.approx(np.median([0.9, 0.8, 0.5, 1.0]))
    assert q["at_least"] == {"0.6": 3, "0.8": 3, "0.9": 2}
    assert r["asked"] == 4 and r["median"] == pytest.approx(0.875)  # 1, 0.75, 0.75, 1
    votes = view["votes"]
    assert votes["question"] == "q" and (votes["min"], votes["max"]) == (0, 10)
    assert votes["median"] == 10 and votes["few"] == 1 and votes["none"] == 1
    assert votes["histogram"]["galaxies"] == np.bincount([10, 10, 10, 4, 0]).tolist()
    # a root question may have any number of votes; r must have b's
    assert [(v["row"], v["question"], v["gap"]) for v in view["violations"]] == \
        [(2, "r", pytest.approx(-1.0))]
    assert view["derived"] is None


def _table(votes: Path) -> tuple[list[str], np.ndarray]:
    answers = [a for q in COUNT_TREE["questions"] for a in q["answers"]]
    with open(votes, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return answers, np.array([[float(r[a]) for a in answers] for r in rows])


@pytest.mark.slow
def test_inspect_counts_summary_and_page(tmp_path: Path, browser: Any) -> None:
    from tests.browser import check_page, open_report

    images, votes, _ = make_vote_count_set(tmp_path / "gz", 120, size=64, seed=7)
    out = tmp_path / "out"
    skysort.inspect(images, labels=str(votes), out=out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "counts" and summary["unreadable"] == 0
    info = summary["fractions"]
    # independently, from votes.csv: shares of each question's votes, questions with votes
    answers, counts = _table(votes)
    col = {a: j for j, a in enumerate(answers)}
    for question, shown in zip(COUNT_TREE["questions"], info["questions"], strict=True):
        part = counts[:, [col[a] for a in question["answers"]]]
        total = part.sum(axis=1)
        top = part[total > 0].max(axis=1) / total[total > 0]
        assert shown["question"] == question["name"] and shown["asked"] == (total > 0).sum()
        assert shown["median"] == pytest.approx(np.median(top))
        assert shown["at_least"] == {t: int((top >= float(t)).sum()) for t in ("0.6", "0.8",
                                                                            "0.9")}
        for answer, j in zip(question["answers"], range(part.shape[1]), strict=True):
            row = next(r for r in info["agreement"] if r["answer"] == answer)
            share = part[total > 0, j] / total[total > 0]
            assert row["asked"] == len(share) and row["median"] == pytest.approx(
                np.median(share)) and row["max"] == pytest.approx(share.max())
    root = counts[:, [col[a] for a in COUNT_TREE["questions"][0]["answers"]]].sum(axis=1)
    v = info["votes"]
    assert v["question"] == "smooth-or-featured" and v["galaxies"] == 120
    assert (v["median"], v["min"], v["max"]) == (np.median(root), root.min(), root.max())
    assert v["mean"] == pytest.approx(root.mean()) and v["few"] == int((root < 10).sum())
    assert v["histogram"]["galaxies"] == np.bincount(root.astype(int)).tolist()
    assert info["violations"] == 0  # each follow-up question has its parent answer's votes
    # the page shows them
    page_file = out / "inspect.html"
    page = check_page(open_report(browser, page_file), page_file,
                      ["fractions", "vote-totals", "vote-few", "question-agreement",
                       "agreement"])
    assert page.locator("#fractions h2").inner_text() == "Vote counts"
    shown = {k: page.locator(f"#fractions [data-key='{k}']").inner_text()
             for k in ("median", "mean", "min", "max", "few", "none")}
    assert shown == {"median": f"{v['median']:.1f}", "mean": f"{v['mean']:.1f}",
                     "min": str(v["min"]), "max": str(v["max"]), "few": str(v["few"]),
                     "none": str(v["none"])}
    cells = page.locator("#question-agreement td").all_inner_texts()
    expected = []
    for q in info["questions"]:
        expected += [q["question"], str(q["asked"]), f"{q['median']:.3f}",
                     f"{q['q1']:.2f} – {q['q3']:.2f}",
                     *(str(q["at_least"][t]) for t in ("0.6", "0.8", "0.9"))]
    assert [c.strip() for c in cells] == expected
    assert page.locator("img[alt='votes per galaxy']").count() == 1
    assert "Every row obeys the tree" in page.locator("#fractions").inner_text()
    page.screenshot(path=str(out / "counts_inspect.png"), full_page=True)
    page.close()
