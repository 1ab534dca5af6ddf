"""``skysort label``: a local page for labelling the images ``skysort suggest`` chose.

The page is served by Flask (Pallets, BSD-3; Werkzeug's threaded server, which skysort
already installs through tensorboard) on 127.0.0.1 only: nothing on the network can reach
it. The page is one Jinja2 template with its CSS and script inline; images come from this
server (``/image/<n>``, by their number in ``to_label.csv``, so no other file can be
asked for), and nothing else is requested from anywhere (a Content-Security-Policy says
so to the browser too).

Each answer is written to the answer file before the page hears back
(:mod:`skysort.labelling.answers`); the page holds no state of its own, so a reload or a
closed tab loses nothing, and a second run resumes where the first stopped
(:mod:`skysort.labelling.session`).
"""

from __future__ import annotations

import errno
import io
import logging
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from skysort.data.images import load_image, read_or_reason
from skysort.errors import ConfigError
from skysort.labelling.session import Session, run_classes, run_labels

#: Default port of ``skysort label``.
PORT = 8765
HOST = "127.0.0.1"
#: Longest side of the large image, and of a neighbour's, pixels.
LARGE = 640
SMALL = 160
CSP = ("default-src 'none'; img-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


def create_app(session: Session) -> Any:
    """The Flask app serving ``session``: the page, its state and actions as JSON, the
    images."""
    import flask
    import jinja2

    app = flask.Flask("skysort.labelling")
    app.jinja_loader = jinja2.PackageLoader("skysort.labelling", "templates")

    @app.before_request
    def _local_only() -> Any:
        # the socket is 127.0.0.1's; a Host of another name is a web page that rebound its
        # name to this machine (DNS rebinding): refused
        if flask.request.host.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost"):
            flask.abort(403)
        return None

    @app.after_request
    def _headers(response: Any) -> Any:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        if not response.mimetype.startswith("image/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def page() -> Any:
        keys = [str(i + 1) if i < 9 else "" for i in range(len(session.classes))]
        return flask.render_template("label.html.j2", classes=list(zip(keys, session.classes,
                                                                       strict=True)),
                                     title=Path(session.out).name)

    @app.get("/favicon.ico")
    def favicon() -> Any:
        return flask.Response(status=204)  # none; and no 404 in the browser's console

    @app.get("/api/state")
    def state() -> Any:
        return flask.jsonify(session.state())

    @app.post("/api/answer")
    def answer() -> Any:
        body = flask.request.get_json(silent=True) or {}
        try:
            session.answer(str(body.get("key", "")), str(body.get("label", "")))
        except ValueError as exc:
            return flask.jsonify(session.state() | {"error": str(exc)}), 409
        return flask.jsonify(session.state())

    @app.post("/api/skip")
    def skip() -> Any:
        session.skip(str((flask.request.get_json(silent=True) or {}).get("key", "")))
        return flask.jsonify(session.state())

    @app.post("/api/undo")
    def undo() -> Any:
        session.undo()
        return flask.jsonify(session.state())

    @app.get("/image/<int:index>")
    def image(index: int) -> Any:
        size = SMALL if flask.request.args.get("size") == "small" else LARGE
        if index not in session.by_index:
            flask.abort(404)
        return flask.Response(_jpeg(session.by_index[index].path, size), mimetype="image/jpeg",
                              headers={"Cache-Control": "max-age=3600"})

    @app.get("/labelled/<int:index>")
    def labelled(index: int) -> Any:
        if not 0 <= index < len(session.labelled):
            flask.abort(404)
        return flask.Response(_jpeg(session.labelled[index], SMALL), mimetype="image/jpeg",
                              headers={"Cache-Control": "max-age=3600"})

    return app


def _jpeg(path: Path, size: int) -> bytes:
    """The image as a JPEG at most ``size`` pixels a side; a grey square with a cross when
    it cannot be read (moved since ``skysort suggest``)."""
    from PIL import Image, ImageDraw

    image, _ = read_or_reason(load_image, path)
    if image is None:
        image = Image.new("RGB", (size, size), (90, 90, 90))
        draw = ImageDraw.Draw(image)
        draw.line((0, 0, size, size), fill=(200, 60, 60), width=4)
        draw.line((0, size, size, 0), fill=(200, 60, 60), width=4)
    elif max(image.size) < size:  # small cutouts are shown large, pixels kept sharp
        scale = size // max(image.size)
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale),
                                 Image.Resampling.NEAREST)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def bind(port: int, host: str = HOST) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port); a port in use is a
    one-line :class:`ConfigError`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # a restart may reuse the port its killed predecessor left in TIME_WAIT; a port another
    # server listens on is still refused (Linux, macOS)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            why = "in use" if exc.errno == errno.EADDRINUSE else "not allowed here"
            raise ConfigError(f"port {port} on {host} is {why}; choose another with --port "
                              "(e.g. --port 8766)") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                          "choose another with --port") from None
    return sock


def make_server(session: Session, sock: socket.socket) -> Any:
    """A threaded Werkzeug server of the session's app on ``sock`` (from :func:`bind`;
    the server holds a duplicate of it: close ``sock``), not yet serving."""
    from werkzeug.serving import make_server as werkzeug_server

    return werkzeug_server(HOST, sock.getsockname()[1], create_app(session), threaded=True,
                           fd=sock.fileno())


def serve_labelling(to_label: str | Path, out: str | Path, *,
                    classes: Sequence[str] | None = None, run: str | Path | None = None,
                    port: int = PORT, images: str | Path | None = None,
                    open_browser: bool = False,
                    on_ready: Callable[[str], None] | None = None) -> int:
    """Serves the labelling page until Ctrl-C; returns the exit status (0).

    Args:
        to_label: the CSV ``skysort suggest`` wrote (``path`` and, shown if there,
            ``prediction``, ``probability``, ``reason``, ``rank``).
        out: the answer file (``labels.csv``): appended to, created when missing.
        classes: the class names (keys 1-9 in this order); or
        run: a trained run whose ``model.json`` names them; its images and their labels
            (``split.csv``) start a new answer file, and its labelled images most like
            each image to label are shown beside it.
        port: 127.0.0.1's port (0: any free one).
        images: the folder the answer file's paths are relative to (default: the answer
            file's folder when it holds every image, else their deepest common folder).
        open_browser: open the page in the default browser.
        on_ready: called with the page's URL once it is served.
    """
    if classes is not None:
        names = list(classes)
    elif run is not None:
        names = run_classes(run)
    else:
        raise ConfigError("no classes: give --classes a,b,c or --run RUN (a trained run)")
    known = run_labels(run) if run is not None else []
    sock = bind(port)  # first: a port in use leaves no answer file behind
    try:
        session = Session(to_label, out, names, root=images, known=known)
        if run is not None:
            from skysort.labelling.lookalikes import labelled_lookalikes

            session.set_lookalikes(labelled_lookalikes(run, [i.path for i in session.items]))
        server = make_server(session, sock)
    finally:
        sock.close()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    url = f"http://{HOST}:{server.socket.getsockname()[1]}/"
    done = len(session.answered())
    print(f"skysort label: {url} ({done} of {len(session.items)} images answered; answers "
          f"go to {session.out}; Ctrl-C stops, a second run resumes)", flush=True)
    if on_ready is not None:
        on_ready(url)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, (url,)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        session.close()
    print(f"\nskysort label: {len(session.answered())} of {len(session.items)} images answered "
          f"in {session.out}; train with: {session.train_command()}", file=sys.stderr)
    return 0
