"""One trained run of three colour classes, shared by the prediction tests (the OpenVINO
tests add its engine check and an int8 model, which the others never read)."""

from __future__ import annotations

from pathlib import Path

import pytest

import skysort
from tests.conftest import write_color_folders


@pytest.fixture(scope="package")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("scale")
    data = write_color_folders(work / "data", per_class=15, size=40, seed=4)
    result = skysort.train(data, project=str(work / "runs"), name="c", epochs=30)
    return result.run_dir, data
