"""Tests for the simulated galaxy generator: shapes, determinism, file layout, vote fractions,
and that the pictures carry the properties they claim (S/N, structure, colour)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from skysort.errors import DataError
from skysort.synth.galaxies import MORPHOLOGIES, render_galaxy
from skysort.synth.sets import SMALL_TREE, make_class_folders, make_vote_fraction_set


def _render(kind: str, seed: object, size: int = 48, snr: float | None = 100.0,
            color: bool = True) -> np.ndarray:
    return render_galaxy(kind, np.random.default_rng(seed), size, snr, color)  # type: ignore[arg-type]


def _contrast(gray: np.ndarray) -> float:
    """Peak of the 3x3-smoothed image over the background noise measured on the border
    (median to 84th percentile, robust to the clipping of negative noise at 0)."""
    a = gray.astype(float)
    smooth = np.lib.stride_tricks.sliding_window_view(np.pad(a, 1, mode="edge"), (3, 3))
    border = np.concatenate([a[:6].ravel(), a[-6:].ravel(), a[:, :6].ravel(), a[:, -6:].ravel()])
    p50, p84 = np.percentile(border, [50, 84])
    return float((smooth.mean(axis=(-1, -2)).max() - p50) / max(p84 - p50, 1.0))


def _isophote_residual(gray: np.ndarray, threshold: float = 90.0) -> float:
    """|image - its own elliptical-isophote average| / image, over the bright pixels: near 0
    for smooth elliptical light, large for arms and clumps."""
    a = gray.astype(float)
    w = np.where(a > threshold, a, 0.0)
    yy, xx = np.indices(a.shape)
    dy, dx = yy - (w * yy).sum() / w.sum(), xx - (w * xx).sum() / w.sum()
    cov = np.array([[(w * dy * dy).sum(), (w * dy * dx).sum()],
                    [(w * dy * dx).sum(), (w * dx * dx).sum()]]) / w.sum()
    inv = np.linalg.inv(cov) * np.sqrt(np.linalg.det(cov))
    radius = np.sqrt(inv[0, 0] * dy * dy + 2 * inv[0, 1] * dy * dx + inv[1, 1] * dx * dx)
    ring = np.round(radius * 2).astype(int).ravel()
    model = (np.bincount(ring, a.ravel()) / np.maximum(np.bincount(ring), 1))[ring]
    mask = (w > 0).ravel()
    return float(np.abs(a.ravel() - model)[mask].sum() / a.ravel()[mask].sum())


@pytest.mark.parametrize("kind", MORPHOLOGIES)
def test_render_shapes_and_dtypes(kind: str) -> None:
    rgb = _render(kind, 1, size=40)
    gray = _render(kind, 1, size=40, color=False)
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    assert gray.shape == (40, 40) and gray.dtype == np.uint8
    assert rgb.max() > 100 and gray.max() > 100  # a galaxy, not an empty frame
    assert np.median(gray) < 40  # on a dark sky


def test_render_is_deterministic_and_snr_none_draws_one() -> None:
    a, b = _render("spiral", 5, snr=None), _render("spiral", 5, snr=None)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, _render("spiral", 6, snr=None))


@pytest.mark.parametrize("kwargs", [dict(kind="quasar"), dict(size=8), dict(snr=0.0),
                                    dict(snr=float("nan")), dict(rng=42)])
def test_render_rejects_bad_arguments(kwargs: dict) -> None:
    args = dict(kind="elliptical", rng=np.random.default_rng(0), size=32, snr=10.0) | kwargs
    with pytest.raises(DataError):
        render_galaxy(**args)


def test_low_snr_images_have_lower_contrast() -> None:
    low = [_contrast(_render(k, [2, i], snr=5.0, color=False)) for i, k in enumerate(MORPHOLOGIES)]
    high = [_contrast(_render(k, [2, i], snr=200.0, color=False))
            for i, k in enumerate(MORPHOLOGIES)]
    assert max(low) < 6 < min(high)
    assert np.mean(high) > 2.5 * np.mean(low)


def test_spirals_have_more_structure_than_ellipticals() -> None:
    def median_residual(kind: str) -> float:
        return float(np.median([_isophote_residual(_render(kind, [3, i], 64, 150.0, False))
                                for i in range(8)]))

    assert median_residual("spiral") > 1.8 * median_residual("elliptical")


def test_ellipticals_are_redder_than_spirals() -> None:
    def red_minus_blue(kind: str) -> float:
        values = []
        for i in range(4):
            pixels = _render(kind, [4, i], 48, 150.0).astype(float)
            bright = pixels.mean(axis=-1) > 60
            values.append((pixels[..., 0] - pixels[..., 2])[bright].mean())
        return float(np.mean(values))

    assert red_minus_blue("elliptical") > red_minus_blue("spiral") + 20


def test_class_folders_layout_counts_and_decoding(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "set", 2, size=32, seed=1)
    assert root == tmp_path / "set"
    assert sorted(p.name for p in root.iterdir()) == sorted(MORPHOLOGIES)
    for kind in MORPHOLOGIES:
        files = sorted((root / kind).iterdir())
        assert [f.name for f in files] == [f"{kind}_00000.png", f"{kind}_00001.png"]
        with Image.open(files[0]) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (32, 32)


def test_class_folders_imbalanced_grey_jpeg(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path, {"elliptical": 3, "merger": 1}, size=32, fmt="jpg",
                              color=False)
    assert sorted(p.name for p in root.iterdir()) == ["elliptical", "merger"]
    assert len(list((root / "elliptical").glob("*.jpg"))) == 3
    assert len(list((root / "merger").glob("*.jpg"))) == 1
    with Image.open(root / "merger" / "merger_00000.jpg") as image:
        assert image.format == "JPEG" and image.mode == "L" and image.size == (32, 32)


def test_class_folders_are_deterministic(tmp_path: Path) -> None:
    def file_bytes(seed: int, name: str, fmt: str) -> bytes:
        root = make_class_folders(tmp_path / name, {"spiral": 1}, size=32, seed=seed, fmt=fmt)
        return (root / "spiral" / f"spiral_00000.{fmt}").read_bytes()

    for fmt in ("png", "jpg"):
        assert file_bytes(7, f"a{fmt}", fmt) == file_bytes(7, f"b{fmt}", fmt)
        assert file_bytes(7, f"c{fmt}", fmt) != file_bytes(8, f"d{fmt}", fmt)
    # image i of a class does not depend on the other classes or counts asked for
    more = make_class_folders(tmp_path / "e", {"spiral": 2, "edge_on": 1}, size=32, seed=7)
    assert (more / "spiral" / "spiral_00000.png").read_bytes() == file_bytes(7, "f", "png")


@pytest.mark.parametrize("kwargs", [dict(counts={"quasar": 2}), dict(counts={"spiral": 0}),
                                    dict(counts=-1), dict(counts={}), dict(counts="spiral"),
                                    dict(fmt="tiff"),
                                    dict(size=4), dict(snr_range=(0.0, 10.0)),
                                    dict(snr_range=(50.0, 10.0))])
def test_class_folders_reject_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    args = dict(counts=1, size=32) | kwargs
    with pytest.raises(DataError):
        make_class_folders(tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()  # checked before anything is written


def _read_votes(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.parametrize("volunteers", [40, 7])
def test_vote_fraction_set_format(tmp_path: Path, volunteers: int) -> None:
    images, csv_path, schema_path = make_vote_fraction_set(tmp_path, 12, size=32, seed=3,
                                                           volunteers=volunteers)
    header, rows = _read_votes(csv_path)
    answers = [a for q in SMALL_TREE["questions"] for a in q["answers"]]
    assert header == ["GalaxyID", *answers]
    assert yaml.safe_load(schema_path.read_text()) == SMALL_TREE
    assert len(rows) == 12
    assert sorted(p.name for p in images.iterdir()) == sorted(f"{r['GalaxyID']}.jpg" for r in rows)
    for row in rows:
        values = {a: float(row[a]) for a in answers}
        assert all(0.0 <= v <= 1.0 for v in values.values())
        assert all(len(row[a].split(".")[1]) == 6 for a in answers)
        for question in SMALL_TREE["questions"]:
            parent = 1.0 if question["parent"] is None else values[question["parent"]]
            assert sum(values[a] for a in question["answers"]) == pytest.approx(parent, abs=1e-6)
        # fractions are vote counts over volunteers (to the 6 decimals written)
        assert all(abs(v * volunteers - round(v * volunteers)) < 1e-4 for v in values.values())
    again = make_vote_fraction_set(tmp_path / "again", 12, size=32, seed=3,
                                   volunteers=volunteers)
    assert again[1].read_bytes() == csv_path.read_bytes()
    first = sorted(images.iterdir())[0]
    assert (again[0] / first.name).read_bytes() == first.read_bytes()


def test_votes_follow_morphology_and_snr(tmp_path: Path) -> None:
    def mean_by_kind(snr: float, column: str) -> dict[str, float]:
        root = tmp_path / f"snr{snr}"
        make_vote_fraction_set(root, 30, size=24, fmt="png", seed=1, snr_range=(snr, snr))
        _, rows = _read_votes(root / "votes.csv")
        with open(root / "truth.csv", newline="") as fh:
            kind = {r["GalaxyID"]: r["morphology"] for r in csv.DictReader(fh)}
        by_kind: dict[str, list[float]] = {}
        for row in rows:
            by_kind.setdefault(kind[row["GalaxyID"]], []).append(float(row[column]))
        return {k: float(np.mean(v)) for k, v in by_kind.items()}

    clear, faint = mean_by_kind(200.0, "smooth"), mean_by_kind(5.0, "smooth")
    assert clear["elliptical"] > 0.6 > 0.3 > clear["spiral"]
    assert faint["spiral"] > clear["spiral"] + 0.2  # faint spirals look smooth
