from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skysort import ImageClassifier, NotFittedError
from tests.conftest import write_color_folders

pytestmark = pytest.mark.slow


def test_fit_predict_proba_follow_classes(tmp_path: Path) -> None:
    data = write_color_folders(tmp_path / "data", per_class=10, size=32, classes=("red", "blue"))
    paths = sorted(data.rglob("*.png"))
    labels = [p.parent.name for p in paths]
    model = ImageClassifier(epochs=30, project=str(tmp_path / "runs"))
    with pytest.raises(NotFittedError, match="fit"):
        model.predict(paths[:1])
    assert model.fit(paths, labels) is model
    assert model.classes_ == ["blue", "red"]
    probs = model.predict_proba(paths)
    assert probs.shape == (20, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    red = model.classes_.index("red")
    assert all((probs[i, red] > 0.5) == (labels[i] == "red") for i in range(20))
    assert model.score(paths, labels) == 1.0
    again = ImageClassifier.load(model.run_dir_)
    np.testing.assert_allclose(again.predict_proba(paths), probs, atol=1e-5)
