"""Pages opened as a person opens them: from disk, in Debian's headless Chromium driven by
Playwright (never a downloaded browser), with checks every page of skysort must pass."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> Path:
    """Debian's chromium (``apt-get install chromium``; .ci/run installs it): the file
    ``SKYSORT_CHROMIUM`` names, else ``chromium`` on PATH, else /usr/bin/chromium."""
    given = os.environ.get("SKYSORT_CHROMIUM")
    return Path(given or shutil.which("chromium") or "/usr/bin/chromium")


def in_ci() -> bool:
    """Whether ``CI`` is set to anything but empty, 0, false, no or off."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def require_browser() -> tuple[Any, Path]:
    """Playwright's sync API and Chromium's path. Where either is missing the browser
    tests skip, except under CI (``CI`` set), where they must run: there it is a failure."""
    chromium = chromium_path()
    try:
        import playwright.sync_api as sync_api
    except ImportError:
        missing = "Playwright is not installed (.ci/run installs it: pip install -e '.[dev]')"
    else:
        if chromium.is_file():
            return sync_api, chromium
        missing = (f"Debian's chromium is not at {chromium} (.ci/run installs it: apt-get "
                   "install chromium; SKYSORT_CHROMIUM names another)")
    if in_ci():
        pytest.fail(f"{missing}; CI is set, so the browser tests must run", pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser), fresh profile."""
    sync_api, chromium = require_browser()
    profile = tempfile.mkdtemp(prefix="skysort-chromium-")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(chromium), args=ARGS, headless=True,
            viewport={"width": 1200, "height": 900})
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def open_report(browser: Any, path: Path) -> dict[str, Any]:
    """Loads the page; returns it with every request, console message and page error."""
    page = browser.new_page()
    seen: dict[str, Any] = {"requests": [], "console": [], "errors": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("console", lambda m: seen["console"].append((m.type, m.text)))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    start = time.perf_counter()
    page.goto(path.resolve().as_uri(), wait_until="load")
    seen["seconds"] = time.perf_counter() - start
    seen["page"] = page
    return seen


def check_page(seen: dict[str, Any], report: Path, sections: list[str]) -> Any:
    page = seen["page"]
    # nothing but the file itself was requested: plots and thumbnails are inside it
    assert [u for u in seen["requests"] if not u.startswith("data:")] == [report.resolve().as_uri()]
    assert not [m for m in seen["console"] if m[0] == "error"] and not seen["errors"]
    for section in sections:
        assert page.locator(f"#{section}").is_visible(), section
    for img in page.locator("img").all():  # every embedded image decoded
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("alt")
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("L"))
    assert shot.std() > 20 and (shot < 100).mean() > 0.01  # not blank: text, plots, images
    return page
