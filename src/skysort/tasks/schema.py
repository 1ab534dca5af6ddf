"""Decision trees of vote fractions (Galaxy Zoo style) and the output layer that obeys them.

A :class:`TreeSchema` lists questions, each with its answer columns and the answer it
hangs from (``parent``; ``null`` for a root question). It is written in YAML::

    name: my_tree
    questions:
      - name: smooth or features
        answers: [smooth, features, artifact]
        parent: null                  # a root question: its answers sum to 1
      - name: edge-on
        answers: [edge_on_yes, edge_on_no]
        parent: features              # its answers sum to the value of `features`

:class:`TreeOutput` turns one logit per answer into fractions that obey the tree, as the
winning Kaggle Galaxy Zoo solution did: each question's answers are normalised to sum to
one (a softmax) and multiplied by the value of the parent answer. The schema of the
Kaggle Galaxy Zoo challenge (37 columns) is built in (:func:`galaxy_zoo_schema`), and a
table whose columns match it is recognised without any flag; so are the vote-count trees of
Galaxy Zoo 2 (:func:`gz2_schema`) and Galaxy Zoo DECaLS (:func:`gz_decals_schema`), whose
count columns :func:`skysort.tasks.detect.count_columns` finds in a catalogue's header.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from skysort.errors import ConfigError


@dataclass(frozen=True)
class Question:
    """One question: its answer columns and the answer it hangs from (None: a root)."""

    name: str
    answers: tuple[str, ...]
    parent: str | None = None


@dataclass
class TreeSchema:
    """Questions as written; :attr:`tree_order` puts every parent answer before its
    children."""

    questions: list[Question]
    name: str = "custom"
    id_column: str | None = None
    columns: list[str] = field(init=False)
    tree_order: list[Question] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tree_order = _topological(self.questions, self.name)
        self.columns = [a for q in self.questions for a in q.answers]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "schema") -> TreeSchema:
        if not isinstance(data, Mapping) or not isinstance(data.get("questions"), list):
            raise ConfigError(f"{source}: a schema needs a 'questions:' list "
                              "(each with name, answers and parent)")
        unknown = set(data) - {"name", "questions", "id_column"}
        if unknown:
            raise ConfigError(f"{source}: unknown schema key(s) {sorted(unknown)}; "
                              "valid: name, questions, id_column")
        questions = []
        for i, q in enumerate(data["questions"], start=1):
            if not isinstance(q, Mapping) or not q.get("answers"):
                raise ConfigError(f"{source}: question {i} needs a list of 'answers'")
            extra = set(q) - {"name", "answers", "parent"}
            if extra:
                raise ConfigError(f"{source}: question {i} has unknown key(s) {sorted(extra)}; "
                                  "valid: name, answers, parent")
            questions.append(Question(name=str(q.get("name", f"Q{i}")),
                                      answers=tuple(str(a) for a in q["answers"]),
                                      parent=None if q.get("parent") is None
                                      else str(q["parent"])))
        return cls(questions=questions, name=str(data.get("name", Path(source).stem)),
                   id_column=data.get("id_column"))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TreeSchema:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8
            raise ConfigError(f"{path}: cannot read schema ({exc})") from exc
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "id_column": self.id_column,
                "questions": [{"name": q.name, "answers": list(q.answers), "parent": q.parent}
                              for q in self.questions]}

    def matches(self, columns: Sequence[str]) -> bool:
        """True when ``columns`` are exactly this tree's answers (in any order)."""
        return sorted(columns) == sorted(self.columns)

    def subtree(self, answers: Sequence[str]) -> TreeSchema | None:
        """The questions all of whose answers are in ``answers`` and whose parent answer
        is kept too (a catalogue with part of a tree); None when no question is complete."""
        have = set(answers)
        kept: list[Question] = []
        done: set[str] = set()
        for q in self.tree_order:
            if set(q.answers) <= have and (q.parent is None or q.parent in done):
                kept.append(q)
                done.update(q.answers)
        if not kept:
            return None
        order = {q.name: i for i, q in enumerate(self.questions)}
        kept.sort(key=lambda q: order[q.name])
        return self if len(kept) == len(self.questions) else \
            TreeSchema(questions=kept, name=f"{self.name} ({len(kept)} questions)",
                       id_column=self.id_column)

    def question_of(self, column: str) -> Question:
        return next(q for q in self.questions if column in q.answers)

    def tree_errors(self, values: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """Per row, the largest gap between a question's answer sum and its parent value."""
        index = {c: i for i, c in enumerate(columns)}
        worst = np.zeros(len(values))
        for q in self.questions:
            total = values[:, [index[a] for a in q.answers]].sum(axis=1)
            expected = values[:, index[q.parent]] if q.parent else 1.0
            worst = np.maximum(worst, np.abs(total - expected))
        return worst


def _topological(questions: list[Question], source: str) -> list[Question]:
    answers: dict[str, str] = {}
    for q in questions:
        for a in q.answers:
            if a in answers:
                raise ConfigError(f"{source}: answer {a!r} appears in questions "
                                  f"{answers[a]!r} and {q.name!r}; each column belongs to one")
            answers[a] = q.name
    for q in questions:
        if q.parent is not None and q.parent not in answers:
            raise ConfigError(f"{source}: question {q.name!r} hangs from {q.parent!r}, which is "
                              f"not an answer of any question (answers: {sorted(answers)})")
    ordered: list[Question] = []
    done: set[str] = set()
    pending = list(questions)
    while pending:
        ready = [q for q in pending if q.parent is None or q.parent in done]
        if not ready:
            raise ConfigError(f"{source}: questions {[q.name for q in pending]} hang from each "
                              "other in a cycle; a tree needs root questions (parent: null)")
        for q in ready:
            ordered.append(q)
            done.update(q.answers)
            pending.remove(q)
    return ordered


def _builtin(name: str) -> TreeSchema:
    text = resources.files("skysort").joinpath(f"tasks/schemas/{name}.yaml").read_text()
    return TreeSchema.from_dict(yaml.safe_load(text), source=name)


def galaxy_zoo_schema() -> TreeSchema:
    """The 37-column Kaggle Galaxy Zoo challenge tree (``Class1.1`` ... ``Class11.6``)."""
    return _builtin("galaxy_zoo_37")


def gz2_schema() -> TreeSchema:
    """Galaxy Zoo 2 (Willett et al. 2013), named as Hart et al. (2016) name its columns."""
    return _builtin("gz2_hart16")


def gz_decals_schema() -> TreeSchema:
    """Galaxy Zoo DECaLS DR5 (Walmsley et al. 2022), named as its catalogue is."""
    return _builtin("gz_decals_dr5")


BUILTIN_SCHEMAS = {"galaxy_zoo_37": galaxy_zoo_schema, "gz2_hart16": gz2_schema,
                   "gz_decals_dr5": gz_decals_schema}
#: The built-in trees whose catalogues publish vote counts, recognised from a header.
COUNT_SCHEMAS = ("gz_decals_dr5", "gz2_hart16")


def load_schema(spec: str | Path) -> TreeSchema:
    """A built-in schema by name, or a YAML file."""
    if str(spec) in BUILTIN_SCHEMAS:
        return BUILTIN_SCHEMAS[str(spec)]()
    if not Path(spec).is_file():
        raise ConfigError(f"schema {spec!r} is neither a file nor a built-in schema "
                          f"({', '.join(BUILTIN_SCHEMAS)})")
    return TreeSchema.from_yaml(spec)
