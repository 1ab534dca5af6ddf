"""``skysort label``: the answer file (append, undo, resume, merge, kill), the server's
errors, and the page as a person uses it, in Debian's Chromium."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from skysort.data.dataset import DataSpec, open_dataset
from skysort.data.transforms import Preprocess
from skysort.errors import ConfigError
from skysort.labelling.answers import AnswerFile
from skysort.labelling.server import bind
from skysort.labelling.session import Session, run_classes
from skysort.models.info import ModelInfo
from skysort.tasks import make_task
from tests.conftest import COLORS

CLASSES = list(COLORS)  # red, green, blue: keys 1, 2, 3


def write_to_label(root: Path, n: int = 24, seed: int = 0) -> Path:
    """``root/images/<colour>_NNN.png`` and ``root/suggest/to_label.csv`` as ``skysort
    suggest`` writes it (paths relative to the CSV, one absolute)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "suggest").mkdir()
    rows = []
    for i in range(n):
        colour = CLASSES[i % 3]
        pixels = np.array(COLORS[colour], float) + rng.normal(0, 30, (48, 48, 3))
        pixels[8 + i % 20: 20 + i % 20, 10:30] = 255  # each image a look of its own
        path = root / "images" / f"{colour}_{i:03d}.png"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
        guess = CLASSES[(i + (i % 4 == 0)) % 3]
        rows.append([str(path) if i == 5 else f"../images/{path.name}", guess,
                     f"{0.4 + 0.02 * (i % 10):.2f}", f"{1 - i / n:.3f}", "uncertain", i + 1])
    table = root / "suggest" / "to_label.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "prediction", "probability", "score", "reason", "rank"])
        writer.writerows(reversed(rows))  # shown in rank order, not file order
    return table


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def colour(key: str) -> str:
    return Path(key).name.split("_")[0]


# -- the answer file -------------------------------------------------------------------------


def test_answers_append_undo_and_resume(tmp_path: Path) -> None:
    table = write_to_label(tmp_path)
    out = tmp_path / "labels.csv"
    session = Session(table, out, CLASSES)
    assert session.current() is not None and session.current().rank == "1"  # type: ignore[union-attr]
    first = []
    for _ in range(3):
        item = session.current()
        assert item is not None
        session.answer(item.key, colour(item.key))
        first.append(item.key)
    with pytest.raises(ValueError, match="not an image waiting"):  # a doubled key press
        session.answer(first[0], "red")
    with pytest.raises(ValueError, match="not a class"):
        session.answer(session.current().key, "purple")  # type: ignore[union-attr]
    assert session.undo() == first[2]
    assert session.current().key == first[2]  # type: ignore[union-attr]  # shown again
    assert [r["path"] for r in rows(out)] == first[:2]
    assert out.read_text().startswith("path,label\n")
    session.skip(first[2])
    skipped_next = session.current()
    assert skipped_next is not None and skipped_next.key != first[2]

    with pytest.raises(ConfigError, match="another skysort label is writing it"):
        Session(table, out, CLASSES)  # two at once would undo each other's answers
    session.close()
    again = Session(table, out, CLASSES)  # a second run resumes: answered ones skipped
    assert again.answered() == {k: colour(k) for k in first[:2]}
    assert again.current().key == first[2]  # type: ignore[union-attr]
    assert again.undo() == first[1]  # undo reaches the previous run's last answer
    assert [r["path"] for r in rows(out)] == first[:1]


def test_answers_merge_into_an_existing_label_table(tmp_path: Path) -> None:
    table = write_to_label(tmp_path)
    old = tmp_path / "images" / "old"
    old.mkdir()
    for name, rgb in (("a.png", (200, 40, 40)), ("b.png", (40, 40, 200))):
        Image.new("RGB", (48, 48), rgb).save(old / name)
    out = tmp_path / "labels.csv"
    # rows of other images, one of the images to label by its id without extension, and
    # no last newline (as an editor may leave it)
    out.write_text("path,label\nimages/old/a.png,red\nimages/red_000,red\nimages/old/b.png,blue")
    session = Session(table, out, CLASSES)
    assert session.answered() == {"images/red_000.png": "red"}  # not asked again
    assert session.current().key == "images/green_001.png"  # type: ignore[union-attr]
    for _ in range(4):
        item = session.current()
        assert item is not None
        session.answer(item.key, colour(item.key))
    for _ in range(4):
        session.undo()
    assert session.undo() is None  # the table's own rows are never undone
    assert len(rows(out)) == 3
    for _ in range(4):
        item = session.current()
        assert item is not None
        session.answer(item.key, colour(item.key))
    written = rows(out)
    assert len(written) == 7 and written[2] == {"path": "images/old/b.png", "label": "blue"}
    data = open_dataset(DataSpec(data=str(out)))  # what skysort train --labels reads
    got = {Path(p).relative_to(tmp_path).as_posix(): data.classes[int(t)]
           for p, t in zip(data.paths, data.targets, strict=True)}
    assert got == {r["path"] if "." in r["path"] else r["path"] + ".png": r["label"]
                   for r in written}


def test_a_table_without_a_label_column_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "labels.csv"
    out.write_text("path\nx.png\n")
    with pytest.raises(Exception, match="header of an id column and a label column"):
        AnswerFile(out)


def test_where_the_paths_are_relative_to_is_never_guessed_wrong(tmp_path: Path) -> None:
    table = write_to_label(tmp_path / "data")
    elsewhere = tmp_path / "answers" / "labels.csv"
    elsewhere.parent.mkdir()
    session = Session(table, elsewhere, CLASSES)  # new file: relative to the images' folder
    assert session.root == tmp_path / "data" / "images"
    assert session.train_command() == f"skysort train {session.root} --labels {elsewhere}"
    session.answer(session.current().key, "red")  # type: ignore[union-attr]
    session.close()
    with pytest.raises(ConfigError, match=r"holds labels already.*pass --images"):
        Session(table, elsewhere, CLASSES)  # an existing table's folder is not ours to guess
    assert Session(table, elsewhere, CLASSES, root=session.root).answered()
    with pytest.raises(ConfigError, match="is not under it"):
        Session(table, elsewhere, CLASSES, root=tmp_path / "answers")
    with pytest.raises(ConfigError, match="no folder"):
        Session(table, tmp_path / "nowhere" / "labels.csv", CLASSES)


def test_classes_come_from_a_run(tmp_path: Path) -> None:
    info = ModelInfo(task=make_task("multiclass", ["star", "galaxy", "qso"]), backbone="x",
                     weights_id="y", num_features=4, preprocess=Preprocess())
    (tmp_path / "model.json").write_text(json.dumps(info.to_dict()))
    assert run_classes(tmp_path) == ["star", "galaxy", "qso"]


# -- the server, as a process ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``skysort label`` (as ``python -m skysort label``) in a child process."""

    def __init__(self, table: Path, out: Path, port: int) -> None:
        self.args = [sys.executable, "-m", "skysort", "label", str(table), "--out", str(out),
                     "--classes", ",".join(CLASSES), "--port", str(port)]
        self.url = f"http://127.0.0.1:{port}/"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Server:
        # Ctrl-C as a terminal sends it: a process started in the background inherits
        # SIGINT ignored, and Python then leaves it ignored (the server never stopped)
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                     "PYTHONFAULTHANDLER": "1"},
                                     preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                      signal.SIG_DFL))
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line.startswith(f"skysort label: {self.url}"), (line, self.stop())
        return self

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.load(response))

    def stop(self, sig: int = signal.SIGKILL) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # where it hung
            self.proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"skysort label did not stop on signal {sig}:\n{err}") from None
        return self.proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_server_loses_no_answer(tmp_path: Path, sig: int) -> None:
    table = write_to_label(tmp_path)
    out = tmp_path / "labels.csv"
    server = Server(table, out, free_port()).start()
    given = {}
    state = json.load(urllib.request.urlopen(server.url + "api/state", timeout=30))
    for _ in range(5):
        key = state["item"]["key"]
        state = server.post("api/answer", {"key": key, "label": colour(key)})
        given[key] = colour(key)
    foreign = urllib.request.Request(server.url + "api/state", headers={"Host": "evil.test"})
    with pytest.raises(urllib.error.HTTPError, match="403"):  # DNS rebinding: refused
        urllib.request.urlopen(foreign, timeout=30)
    code, err = server.stop(sig)
    assert {r["path"]: r["label"] for r in rows(out)} == given and len(rows(out)) == 5
    if sig == signal.SIGINT:  # Ctrl-C: a clean stop that says where the answers are
        assert code == 0 and "5 of 24 images answered" in err and "Traceback" not in err


def test_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    table = write_to_label(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is in use.*--port"):
            bind(port)
        proc = subprocess.run([sys.executable, "-m", "skysort", "label", str(table), "--out",
                               str(tmp_path / "labels.csv"), "--classes", "a,b", "--port",
                               str(port)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and not (tmp_path / "labels.csv").exists()
    assert proc.stderr.strip().splitlines() == [
        f"ConfigError: port {port} on 127.0.0.1 is in use; choose another with --port "
        "(e.g. --port 8766)"]


# -- the page, in Chromium -------------------------------------------------------------------


@pytest.fixture
def labelling(tmp_path: Path) -> Iterator[tuple[Server, Path, Path]]:
    table = write_to_label(tmp_path)
    server = Server(table, tmp_path / "labels.csv", free_port()).start()
    yield server, table, tmp_path / "labels.csv"
    if server.proc is not None and server.proc.poll() is None:
        server.stop()


def test_label_twenty_images_by_keyboard(browser: Any, labelling: tuple[Server, Path, Path],
                                         tmp_path: Path) -> None:
    """20 answers by keyboard, one undone, a reload and a killed server on the way: the
    file holds exactly the 19 answers that stand, and is what training reads."""
    server, _, out = labelling
    page = browser.new_page()
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server.url, wait_until="load")
    expected: dict[str, str] = {}
    undone = ""

    def shown() -> str:
        page.wait_for_function("n => document.getElementById('progress').textContent"
                               ".startsWith(n + ' of 24')", arg=len(expected))
        return str(page.locator("#large").get_attribute("data-key"))

    for given in range(1, 21):
        key = shown()
        label = colour(key)
        if key == undone:  # answered again, otherwise
            label = CLASSES[(CLASSES.index(label) + 1) % 3]
        page.keyboard.press(str(CLASSES.index(label) + 1))
        expected[key] = label
        if given == 7:
            shown()
            page.keyboard.press("u")
            del expected[key]
            undone = key
            assert shown() == key  # the undone image is shown again
        if given == 11:
            shown()
            page.reload(wait_until="load")
        if given == 15:
            shown()
            # killed between answers: one killed while sending an image would leave that
            # image half-loaded (a console error) until the reload
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
            server.stop(signal.SIGKILL)
            server.start()  # the same port: the open page goes on after a reload
            page.reload(wait_until="load")
        if given == 18:
            assert page.locator("#neighbours img").count() == 4
            assert page.locator("#guess b").inner_text() in CLASSES
    skipped = shown()
    page.keyboard.press("s")  # a skip writes nothing
    page.wait_for_function("k => document.getElementById('large').dataset.key !== k",
                           arg=skipped)
    for img in page.locator("img").all():
        img.evaluate("i => i.decode()")
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("alt")
    shot = page.screenshot(full_page=True)
    (Path(os.environ.get("SKYSORT_SCREENSHOTS", tmp_path)) / "label_page.png").write_bytes(shot)
    grey = np.asarray(Image.open(io.BytesIO(shot)).convert("L"))
    assert grey.std() > 20

    written = rows(out)
    assert len(written) == 19 and {r["path"]: r["label"] for r in written} == expected
    assert not problems
    assert all(u.startswith(server.url) for u in requests), requests  # nothing from outside
    data = open_dataset(DataSpec(data=str(out)))  # exactly what skysort train --labels reads
    assert sorted(Path(p).relative_to(out.parent).as_posix() for p in data.paths) == \
        sorted(expected)
    assert {Path(p).relative_to(out.parent).as_posix(): data.classes[int(t)]
            for p, t in zip(data.paths, data.targets, strict=True)} == expected
    page.close()


@pytest.mark.slow
def test_skysort_train_reads_the_answer_file(tmp_path: Path) -> None:
    table = write_to_label(tmp_path, n=30)
    out = tmp_path / "labels.csv"
    session = Session(table, out, CLASSES)
    while (item := session.current()) is not None:
        session.answer(item.key, colour(item.key))
    assert session.train_command() == f"skysort train {out}"
    proc = subprocess.run([sys.executable, "-m", "skysort", "train", str(tmp_path), "--labels",
                           str(out), "--project", str(tmp_path / "runs"), "--name", "t",
                           "epochs=3"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    split = rows(tmp_path / "runs" / "t" / "split.csv")
    assert len(split) == 30
    assert all(colour(r["path"]) == r["label"] for r in split)
