"""The real-photograph set (``real_photos.py``) inspected once for the tests that need it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inspection.real_photos import make_photo_set, plant_wrong_labels


@pytest.fixture(scope="session")
def photo_inspection(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """180 crops of real photographs (seed 0), 10 labels planted wrong, then
    ``skysort.inspect``: ``{"root", "planted", "out", "result"}``."""
    import skysort

    root = make_photo_set(tmp_path_factory.mktemp("photos") / "data", 60, 96, seed=0)
    planted = plant_wrong_labels(root, 10, seed=0)
    out: Path = root.parent / "inspect"
    result = skysort.inspect(root, out=out, page=False)
    return {"root": root, "planted": planted, "out": out, "result": result}
