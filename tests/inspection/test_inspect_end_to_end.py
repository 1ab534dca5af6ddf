"""`skysort inspect` finds the problems planted in generated galaxies: copies (exact and
near) across splits, flipped labels, a blank and a noise frame; a later `train` computes
nothing twice and keeps copies together on request; the page opens in Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import skysort
from skysort.synth.sets import make_class_folders
from tests.browser import check_page, open_report
from tests.test_cli_end_to_end import cli, read_csv
from tests.test_cli_end_to_end import skysort as run_cli

pytestmark = pytest.mark.slow

NEAR_KINDS = ("resized", "jpeg", "rot90", "flip")


def plant_copies(root: Path, exact: int = 8, near_each: int = 12, seed: int = 0
                 ) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Copies of randomly chosen originals, written as new files of the same class.

    Returns ``(exact pairs, near pairs with their kind)`` as relative paths."""
    rng = np.random.default_rng(seed)
    originals = sorted(root.glob("*/*.png"))
    chosen = rng.choice(len(originals), exact + near_each * len(NEAR_KINDS), replace=False)
    exact_pairs, near_pairs = [], []
    for n, index in enumerate(chosen):
        src = originals[index]
        rel = src.relative_to(root).as_posix()
        if n < exact:  # half byte copies, half the same pixels with other metadata
            dst = src.with_name(f"copy{n:02d}_{src.name}")
            if n % 2:
                info = PngImagePlugin.PngInfo()
                info.add_text("Comment", f"saved again {n}")
                Image.open(src).save(dst, pnginfo=info)
                assert dst.read_bytes() != src.read_bytes()
            else:
                shutil.copy(src, dst)
            exact_pairs.append((rel, dst.relative_to(root).as_posix()))
            continue
        kind = NEAR_KINDS[(n - exact) % len(NEAR_KINDS)]
        image = Image.open(src).convert("RGB")
        if kind == "resized":
            image = image.resize((image.width * 3 // 4,) * 2, Image.Resampling.BILINEAR)
        elif kind == "rot90":
            image = image.transpose(Image.Transpose.ROTATE_90)
        elif kind == "flip":
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        dst = src.with_name(f"{kind}{n:02d}_{src.stem}.jpg")
        image.save(dst, quality=70 if kind == "jpeg" else 92)
        near_pairs.append((rel, dst.relative_to(root).as_posix(), kind))
    return exact_pairs, near_pairs


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = make_class_folders(tmp_path_factory.mktemp("planted") / "data",
                              {"elliptical": 60, "spiral": 60, "edge_on": 60}, size=80, seed=3)
    exact, near = plant_copies(root)
    rng = np.random.default_rng(1)
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(root / "spiral" / "blank.png")
    Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(
        root / "edge_on" / "noise.png")
    out = root.parent / "inspect"
    proc = cli("inspect", root, "--out", out, cwd=root.parent)
    return {"root": root, "exact": exact, "near": near, "out": out, "proc": proc}


def groups_by_path(out: Path) -> dict[str, str]:
    return {r["path"]: r["group"] for r in read_csv(out / "duplicates.csv")}


def test_copies_are_found_and_leaks_flagged(planted: dict) -> None:
    out: Path = planted["out"]
    group = groups_by_path(out)
    exact = planted["exact"]
    near = planted["near"]
    for a, b in exact:  # every exact copy, grouped as exact
        assert group.get(a) is not None and group.get(a) == group.get(b), (a, b)
    found = [group.get(a) is not None and group.get(a) == group.get(b) for a, b, _ in near]
    assert np.mean(found) >= 0.9, [p for p, f in zip(near, found, strict=True) if not f]
    for kind in NEAR_KINDS:  # each kind of copy is found, not just the easy ones
        assert any(f for f, p in zip(found, near, strict=True) if p[2] == kind), kind
    # pairs reported that were not planted: under 1% of all other pairs (here: none)
    planted_pairs = {frozenset(p[:2]) for p in exact + near}
    pairs = read_csv(out / "duplicate_pairs.csv")
    false = [p for p in pairs if frozenset((p["path_a"], p["path_b"])) not in planted_pairs]
    n = len(read_csv(out / "images.csv"))
    assert len(false) < 0.01 * (n * (n - 1) / 2 - len(planted_pairs))
    assert not false, false
    assert {p["kind"] for p in pairs if frozenset((p["path_a"], p["path_b"])) in
            {frozenset(e) for e in exact}} == {"exact"}
    # a group spans splits exactly when its images' splits (images.csv) differ
    split = {r["path"]: r["split"] for r in read_csv(out / "images.csv")}
    rows = read_csv(out / "duplicates.csv")
    by_group: dict[str, set[str]] = {}
    for r in rows:
        assert r["split"] == split[r["path"]]
        by_group.setdefault(r["group"], set()).add(r["split"])
    spans = {r["group"]: r["spans_splits"] == "1" for r in rows}
    assert spans == {g: len(s) > 1 for g, s in by_group.items()}
    assert any(spans.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicates"]["groups_across_splits"] == sum(spans.values())
    assert summary["duplicates"]["groups_across_labels"] == 0  # copies kept their class
    assert f"{sum(spans.values())} across splits (leakage)" in planted["proc"].stdout


def test_blank_and_noise_frames_are_the_oddest(planted: dict) -> None:
    top = [r["path"] for r in read_csv(planted["out"] / "oddities.csv")[:5]]
    assert "spiral/blank.png" in top and "edge_on/noise.png" in top
    summary = json.loads((planted["out"] / "summary.json").read_text())
    assert summary["constant_images"] == ["spiral/blank.png"]


def test_what_is_there(planted: dict) -> None:
    summary = json.loads((planted["out"] / "summary.json").read_text())
    root: Path = planted["root"]
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert summary["images"] == len(files) and summary["unreadable"] == 0
    assert summary["formats"] == {"PNG": sum(p.suffix == ".png" for p in files),
                                  "JPEG": sum(p.suffix == ".jpg" for p in files)}
    counts = {c: sum(1 for p in files if p.parent.name == c) for c in summary["classes"]}
    assert {c: sum(v.values()) for c, v in summary["per_class"].items()} == counts
    majority = max(counts, key=lambda c: counts[c])
    assert summary["majority_baseline"] == {"class": majority,
                                            "accuracy": counts[majority] / len(files)}
    widths = sorted(summary["sizes"]["width"])
    assert widths[0] == 60 and widths[-1] == 80  # the resized copies are 60 px


def test_a_second_inspect_and_a_later_train_compute_nothing_twice(planted: dict,
                                                                  tmp_path: Path) -> None:
    root: Path = planted["root"]
    # a program of its own: the cache the first inspect (in this process) left on disk
    again = run_cli("inspect", root, "--out", tmp_path / "again", cwd=tmp_path)
    n = json.loads((planted["out"] / "summary.json").read_text())["images"]
    assert f"{n} of {n} images read from the cache, 0 to compute" in again.stderr
    assert "fingerprints: decoding" not in again.stderr
    assert (tmp_path / "again" / "suspected_label_errors.csv").read_bytes() == \
        (planted["out"] / "suspected_label_errors.csv").read_bytes()
    train = cli("train", root, "--project", tmp_path / "runs", "--name", "r", "epochs=5",
                cwd=tmp_path)
    assert f"{n} of {n} images read from the cache, 0 to compute" in train.stderr
    assert "fingerprints: decoding" not in train.stderr
    # the default check warns about the copies across splits, in metrics.json too
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    leaks = json.loads((planted["out"] / "summary.json").read_text())[
        "duplicates"]["groups_across_splits"]
    assert any(w.startswith(f"{leaks} group(s) of copies") for w in metrics["warnings"])


def test_split_groups_keeps_copies_in_one_split(planted: dict, tmp_path: Path) -> None:
    root: Path = planted["root"]
    result = skysort.train(root, project=str(tmp_path / "runs"), name="g", epochs=3,
                           split_groups="duplicates")
    split = {r["path"]: r["split"] for r in read_csv(result.run_dir / "split.csv")}
    for a, b, *_ in planted["exact"] + planted["near"]:
        group = groups_by_path(planted["out"])
        if group.get(a) is not None and group.get(a) == group.get(b):
            assert split[a] == split[b], (a, b)
    assert not any("group(s) of copies" in w for w in result.metrics["warnings"])
    # only the copies moved: every other image keeps the split of the default rule
    default = {r["path"]: r["split"] for r in read_csv(planted["out"] / "images.csv")}
    moved = {p for p in split if split[p] != default[p]}
    members = set(groups_by_path(planted["out"]))
    assert moved and moved <= members


def test_flipped_labels_rank_among_the_suspects(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"elliptical": 80, "spiral": 80,
                                                  "edge_on": 80}, size=64, seed=5,
                              snr_range=(30.0, 300.0))
    files = sorted(root.glob("*/*.png"))
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(files), round(0.05 * len(files)), replace=False)
    classes = ["elliptical", "spiral", "edge_on"]
    moved = set()
    for i in flipped:
        other = [c for c in classes if c != files[i].parent.name][rng.integers(2)]
        dst = root / other / f"flipped_{files[i].name}"
        files[i].rename(dst)
        moved.add(dst.relative_to(root).as_posix())
    result = skysort.inspect(root, out=tmp_path / "out", page=False)
    suspects = read_csv(tmp_path / "out" / "suspected_label_errors.csv")
    top = {r["path"] for r in suspects[:2 * len(moved)]}
    assert len(top & moved) >= 0.6 * len(moved), (len(top & moved), len(moved))
    scores = [float(r["score"]) for r in suspects]
    assert scores == sorted(scores)  # worst first
    for r in suspects:
        assert r["given_label"] == r["path"].split("/")[0] and r["suggested_label"] != \
            r["given_label"]
    assert result.summary["label_errors"]["suspected"] == len(suspects)


def test_inspect_page_in_a_browser(planted: dict, browser: object) -> None:
    out: Path = planted["out"]
    page_path = out / "inspect.html"
    seen = open_report(browser, page_path)
    page = check_page(seen, page_path, ["data", "duplicates", "label-errors", "oddities", "map"])
    summary = json.loads((out / "summary.json").read_text())
    assert int(page.locator("#dup-groups").inner_text()) == summary["duplicates"]["groups"]
    assert int(page.locator("#readable").inner_text()) == summary["readable"]
    assert int(page.locator("#suspects").inner_text()) == summary["label_errors"]["suspected"]
    # the groups shown are those of duplicates.csv, leaks first, with their images
    group = groups_by_path(out)
    shown = page.locator(".group").all()
    assert shown and shown[0].get_attribute("data-spans-splits") == "1"
    for box in shown:
        paths = [f.get_attribute("data-path") for f in box.locator("figure").all()]
        assert {group[p] for p in paths} == {box.get_attribute("data-group")}
    odd = [f.get_attribute("data-path") for f in page.locator("#odd-gallery figure").all()]
    assert odd[:5] == [r["path"] for r in read_csv(out / "oddities.csv")[:5]]
    assert page.locator(".warning").first.inner_text().startswith("WARNING: ")
    page.close()


def test_similar_finds_the_copies(planted: dict, tmp_path: Path) -> None:
    root: Path = planted["root"]
    original, copy = planted["exact"][0]
    html = tmp_path / "similar.html"
    proc = cli("similar", planted["out"], root / original, "-k", "5", "--html", html,
               cwd=tmp_path)
    lines = proc.stdout.splitlines()[1:6]
    top2 = {line.split()[-1] for line in lines[:2]}
    assert top2 == {str(root / original), str(root / copy)}
    assert all(float(line.split()[1]) > 0.999 for line in lines[:2])
    assert html.is_file() and html.read_text().count("<figure") == 5
    # from the data folder itself (no saved index) the answer is the same
    matches = skysort.find_similar(root, root / original, k=2)
    assert {m.path for m in matches} == {str(root / original), str(root / copy)}


def test_repeated_rows_of_a_split_file_count_once(tmp_path: Path) -> None:
    """A HiRISE split file repeats rare-class files to up-sample them: inspect counts each
    file once (as evaluation does), finds no copy of a file in itself, and says so."""
    from tests.conftest import write_color_folders

    root = write_color_folders(tmp_path / "colors", {"red": 12, "green": 12, "blue": 4},
                               size=40)
    data = tmp_path / "hirise"
    data.mkdir()
    rows, classes = [], {"red": 0, "green": 1, "blue": 2}
    for n, path in enumerate(sorted(root.glob("*/*.png"))):
        name = f"{path.parent.name}_{path.name}"
        shutil.copy(path, data / name)
        rows.append((name, classes[path.parent.name], ("train", "val", "test")[n % 3]))
    blue = [r for r in rows if r[1] == 2]
    repeats = [(b[0], 2, b[2]) for b in blue] * 2 + [(blue[0][0], 2, "test" if
                                                     blue[0][2] != "test" else "train")]
    (data / "labels.txt").write_text("".join(f"{r[0]} {r[1]}\n" for r in rows))
    (data / "split.txt").write_text("".join(" ".join(map(str, r)) + "\n"
                                            for r in rows + repeats))
    result = skysort.inspect(data, out=tmp_path / "out")
    out, summary = tmp_path / "out", result.summary
    assert summary["images"] == len(rows) == 28 and summary["repeated_rows"] == len(repeats)
    images = read_csv(out / "images.csv")
    assert sorted(r["path"] for r in images) == sorted(r[0] for r in rows)
    assert {c: sum(v.values()) for c, v in summary["per_class"].items()} == \
        {"0": 12, "1": 12, "2": 4}
    assert summary["majority_baseline"]["accuracy"] == pytest.approx(12 / 28)
    # each file keeps the split of its first row
    assert {r["path"]: r["split"] for r in images} == {r[0]: r[2] for r in rows}
    grouped = {r["path"] for r in read_csv(out / "duplicates.csv")}
    assert not grouped & {b[0] for b in blue} and summary["duplicates"]["exact_groups"] == 0
    issues = [r for r in read_csv(out / "label_issues.csv") if r["kind"] == "repeated row"]
    assert sorted(r["id"] for r in issues) == sorted(r[0] for r in repeats)
    assert sum("training would see it in both" in r["detail"] for r in issues) == 1
    assert summary["label_issues"]["count"] == len(repeats)
    page = (out / "inspect.html").read_text()
    assert f"{len(repeats)} repeated row" in page
    # skysort similar, from the data itself, finds each file once too
    matches = skysort.find_similar(data, data / blue[0][0], k=4)
    assert len({m.path for m in matches}) == 4
