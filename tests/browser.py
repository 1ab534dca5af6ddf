"""Pages opened as a person opens them: from disk, in Debian's headless Chromium driven by
Playwright (never a downloaded browser), with checks every page of skysort must pass."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

#: Debian's chromium (``apt-get install chromium``; .ci/run installs it).
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser), fresh profile."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    profile = tempfile.mkdtemp(prefix="skysort-chromium-")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=ARGS, headless=True,
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
