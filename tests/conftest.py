"""Shared fixtures: a private embedding cache, and tiny images the tests make themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLORS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The test session gets its own embedding cache, never the user's (set before any
    other fixture, so module-scoped ones and subprocesses use it too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKYSORT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


def write_color_folders(root: Path, per_class: int | dict[str, int] = 12, size: int = 48,
                        seed: int = 0, classes: Sequence[str] = tuple(COLORS),
                        noise: float = 30.0) -> Path:
    """A separable toy set: each class a noisy patch of its own colour."""
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, dict) else dict.fromkeys(classes, per_class)
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        base = np.array(COLORS[name], dtype=float)
        for i in range(count):
            pixels = base + rng.normal(0, noise, (size, size, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def color_folders(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``color_folders(per_class=12, ...)`` -> a class-folder tree under tmp_path."""

    def make(**kwargs: object) -> Path:
        return write_color_folders(tmp_path / "data", **kwargs)  # type: ignore[arg-type]

    return make


from tests.browser import browser  # noqa: E402, F401 (the fixture, for every test module)
