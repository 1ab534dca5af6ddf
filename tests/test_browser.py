"""The browser tests' own helper: under CI a missing browser is a failure, never a skip."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.browser import chromium_path, in_ci, require_browser


@pytest.mark.parametrize(("value", "ci"), [("true", True), ("1", True), ("yes", True),
                                           ("", False), ("false", False), ("0", False)])
def test_ci_is_any_value_but_an_off_one(monkeypatch: pytest.MonkeyPatch, value: str,
                                        ci: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_a_missing_chromium_fails_under_ci_and_skips_elsewhere(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api")  # else Playwright is what is missing
    absent = tmp_path / "no-chromium"
    monkeypatch.setenv("SKYSORT_CHROMIUM", str(absent))
    assert chromium_path() == absent
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception,
                       match=f"chromium is not at {re.escape(str(absent))}.*apt-get install "
                             "chromium.*CI is set"):
        require_browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=re.escape(str(absent))):
        require_browser()


def test_a_missing_playwright_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # import raises ImportError
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"Playwright is not installed.*CI is set"):
        require_browser()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="Playwright is not installed"):
        require_browser()
