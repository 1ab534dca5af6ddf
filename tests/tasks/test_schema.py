from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skysort.errors import ConfigError
from skysort.synth.sets import SMALL_TREE
from skysort.tasks.schema import TreeSchema, galaxy_zoo_schema, load_schema
from skysort.tasks.tree import TreeOutput


def test_galaxy_zoo_tree_is_the_kaggle_one() -> None:
    schema = galaxy_zoo_schema()
    assert len(schema.questions) == 11 and len(schema.columns) == 37
    parents = {q.answers[0].split(".")[0]: q.parent for q in schema.questions}
    assert parents == {"Class1": None, "Class2": "Class1.2", "Class3": "Class2.2",
                       "Class4": "Class2.2", "Class5": "Class2.2", "Class6": None,
                       "Class7": "Class1.1", "Class8": "Class6.1", "Class9": "Class2.1",
                       "Class10": "Class4.1", "Class11": "Class4.1"}
    assert schema.columns[:3] == ["Class1.1", "Class1.2", "Class1.3"]
    assert schema.columns[-1] == "Class11.6"
    assert load_schema("galaxy_zoo_37").columns == schema.columns


def test_tree_output_obeys_the_tree_in_any_column_order() -> None:
    schema = galaxy_zoo_schema()
    rng = np.random.default_rng(0)
    columns = list(rng.permutation(schema.columns))
    layer = TreeOutput(schema, columns)
    logits = torch.from_numpy(rng.normal(0, 3, (64, 37)).astype(np.float32))
    out = layer(logits).numpy()
    assert out.shape == (64, 37) and out.min() >= 0 and out.max() <= 1
    assert schema.tree_errors(out, columns).max() < 1e-6
    index = {c: i for i, c in enumerate(columns)}
    np.testing.assert_allclose(out[:, [index[f"Class1.{i}"] for i in (1, 2, 3)]].sum(1), 1,
                               atol=1e-6)
    # Q10's answers sum to Class4.1, itself a share of Class2.2, itself of Class1.2.
    q10 = out[:, [index[f"Class10.{i}"] for i in (1, 2, 3)]].sum(1)
    np.testing.assert_allclose(q10, out[:, index["Class4.1"]], atol=1e-6)
    # Each answer follows its own logit: raising Class3.1's logit raises its share of Q3.
    bumped = logits.clone()
    bumped[:, index["Class3.1"]] += 5
    share = lambda o: o[:, index["Class3.1"]] / (o[:, index["Class3.1"]] + o[:, index["Class3.2"]])  # noqa: E731
    assert (share(layer(bumped).numpy()) > share(out)).all()


def test_user_schema_from_yaml(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "tree.yaml").write_text(yaml.safe_dump(SMALL_TREE))
    schema = load_schema(tmp_path / "tree.yaml")
    assert schema.columns == ["smooth", "features", "artifact", "edge_on_yes", "edge_on_no",
                              "spiral_yes", "spiral_no", "merger_yes", "merger_no"]
    assert [q.name for q in schema.tree_order][:2] == ["smooth_or_features", "merging"]


@pytest.mark.parametrize(("questions", "match"), [
    ([{"answers": ["a", "b"]}, {"answers": ["b", "c"], "parent": "a"}], "appears in questions"),
    ([{"answers": ["a", "b"], "parent": "zz"}], "not an answer"),
    ([{"answers": ["a", "b"], "parent": "c"}, {"answers": ["c", "d"], "parent": "a"}], "cycle"),
    ([{"answers": []}], "needs a list of 'answers'"),
    ([{"answers": ["a"], "parents": None}], "unknown key"),
])
def test_bad_schemas_are_config_errors(questions: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TreeSchema.from_dict({"questions": questions})


def test_tree_output_refuses_columns_that_do_not_match() -> None:
    with pytest.raises(ConfigError, match="do not match"):
        TreeOutput(galaxy_zoo_schema(), ["Class1.1", "Class1.2"])


def test_tree_errors_measure_how_far_a_row_breaks_the_tree() -> None:
    schema = TreeSchema.from_dict({"questions": [
        {"name": "q1", "answers": ["a", "b"], "parent": None},
        {"name": "q2", "answers": ["c", "d"], "parent": "a"}]})
    columns = ["a", "b", "c", "d"]
    rows = np.array([[0.6, 0.4, 0.5, 0.1],    # obeys the tree
                     [0.6, 0.6, 0.5, 0.1],    # q1 sums to 1.2: off by 0.2
                     [0.7, 0.3, 0.2, 0.1],    # q2 sums to 0.3, its parent a is 0.7: 0.4
                     [0.5, 0.5, 0.5, 0.5]])   # q2 sums to 1.0 against 0.5: 0.5
    np.testing.assert_allclose(schema.tree_errors(rows, columns), [0.0, 0.2, 0.4, 0.5],
                               atol=1e-12)
    # column order is taken from `columns`, not assumed
    np.testing.assert_allclose(schema.tree_errors(rows[:, ::-1], columns[::-1]),
                               [0.0, 0.2, 0.4, 0.5], atol=1e-12)
