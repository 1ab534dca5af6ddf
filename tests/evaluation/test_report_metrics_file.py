"""``skysort report RUN --metrics FILE`` with a file that is not a metrics file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skysort.cli import main


@pytest.mark.parametrize(("content", "missing"), [
    ({"a": 1}, "no 'task', 'model', 'baseline' keys"),
    ({"task": "multiclass", "model": {}}, "no 'baseline' key"),
    ([1, 2], "no 'task', 'model', 'baseline' keys"),
])
def test_a_json_file_that_is_not_metrics_is_a_run_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, missing: str
        ) -> None:
    run = tmp_path / "run"
    run.mkdir()
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(content))
    assert main(["report", str(run), "--metrics", str(summary)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"RunError: {summary}: not a metrics file ({missing}); give the "
                   "metrics.json or metrics_<name>.json that skysort train or skysort "
                   "evaluate wrote")
    assert not list(run.iterdir())  # no page written
