"""The package keeps the shape CONTRIBUTING.md describes: small modules, a short top level,
and no code outside tasks/ that decides by comparing task-kind names."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "skysort"
#: A module longer than this has more than one job.
MAX_LINES = 400
#: Modules at the top of the package besides __init__ and __main__.
MAX_TOP_LEVEL = 8
KINDS = ("multiclass", "binary", "multilabel", "fractions", "counts")


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long


def test_the_top_level_holds_at_most_eight_modules() -> None:
    top = sorted(p.name for p in SRC.glob("*.py") if p.name not in ("__init__.py",
                                                                     "__main__.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_no_task_kind_is_compared_outside_tasks() -> None:
    """A kind answers for itself: ``kind == ...`` or a kind's name compared with ``task``
    anywhere but tasks/ means a feature that a new kind would have to be edited into."""
    kind_names = "|".join(KINDS)
    patterns = [re.compile(r"kind (==|!=|in) "),
                re.compile(rf"""(\.task|\.kind|\bkind)\s*(==|!=|in|not in)\s*\(?["']"""
                           rf"""({kind_names})["']"""),
                re.compile(rf"""["']({kind_names})["']\s*(==|!=)\s*\S*(\.task|kind)\b""")]
    found = [f"{p.relative_to(SRC)}:{i}: {line.strip()}"
             for p in SRC.rglob("*.py") if "tasks" not in p.relative_to(SRC).parts
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if any(pattern.search(line) for pattern in patterns)]
    assert not found, "\n".join(found)
