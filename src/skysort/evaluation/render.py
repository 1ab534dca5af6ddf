"""The renderer every HTML page of skysort shares: one self-contained file.

Pages are Jinja2 templates (``templates/``) with their CSS inline; plots (matplotlib) and
image thumbnails are embedded as ``data:`` URIs, so a page needs nothing but itself: it
opens from disk in any browser, with no script, font or request to a network, and can be
mailed to a colleague. Thumbnails are small JPEGs read through skysort's own image reader
(FITS, 16-bit PNG and TIFF included); inside :func:`images_decoded_as`, FITS images are
shown as the model's or the inspection's decoding says (its bands and data-set-wide
scale), so a page shows the images as they were seen.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import csv
import io
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from skysort.data.fits_decode import FitsDecode
from skysort.data.images import load_image, read_or_reason
from skysort.rundir import atomic_write
from skysort.tasks.scores import number

#: Side of a gallery thumbnail, pixels.
THUMBNAIL = 96


_DECODE: contextvars.ContextVar[FitsDecode | None] = contextvars.ContextVar("decode",
                                                                           default=None)


@contextlib.contextmanager
def images_decoded_as(fits: FitsDecode | Mapping[str, Any] | None) -> Iterator[None]:
    """Pages rendered inside show FITS images decoded as ``fits`` (a
    :class:`FitsDecode` or its dict, as ``model.json`` and ``inspection.json`` keep it;
    None or a damaged one: each image its own scale)."""
    if isinstance(fits, Mapping):
        try:
            fits = FitsDecode.from_dict(fits)
        except Exception:  # a damaged or future entry: show the per-image composite
            fits = None
    token = _DECODE.set(fits)
    try:
        yield
    finally:
        _DECODE.reset(token)


def page_image(path: str | Path) -> Any:
    """An image as a page shows it (a ``PIL.Image``); raises like ``load_image``."""
    return load_image(path, fits=_DECODE.get())


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_uri(draw: Callable[[Any], Any], dpi: int = 80, colors: int | None = None
               ) -> str | None:
    """Runs ``draw(buffer)`` (a plot function of :mod:`skysort.evaluation.plots`, or any
    function that saves a figure to a file object) and returns the PNG as a data URI;
    None when it drew nothing. ``colors``: at most that many colours (a line plot keeps
    its look in 256 at a third of the bytes; not for plots holding images)."""
    buffer = io.BytesIO()
    if draw(buffer) is None:
        return None
    data = buffer.getvalue()
    return data_uri(_fewer_colors(data, colors) if colors else data, "image/png")


def _fewer_colors(png: bytes, colors: int) -> bytes:
    from PIL import Image

    image: Image.Image = Image.open(io.BytesIO(png))
    if image.mode == "RGBA" and image.getchannel("A").getextrema() == (255, 255):
        image = image.convert("RGB")  # opaque: median cut, which needs RGB, looks best
    method = Image.Quantize.MEDIANCUT if image.mode == "RGB" else Image.Quantize.FASTOCTREE
    out = io.BytesIO()
    image.quantize(colors, method=method).save(out, format="PNG", optimize=True)
    return min(out.getvalue(), png, key=len)


def thumbnail_uri(path: str | Path, size: int = THUMBNAIL) -> str | None:
    """A small JPEG of an image file as a data URI; None when it cannot be read (a file
    that moved since the run)."""
    image, _ = read_or_reason(page_image, path)
    if image is None:
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return data_uri(buffer.getvalue(), "image/jpeg")


def read_rows(path: Path) -> list[dict[str, str]] | None:
    """The rows of a CSV file a page is rendered from, as strings by column; None when
    there is no such file (a run or an inspection from before it was written)."""
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))


def render(template: str, context: dict[str, Any], output: Path) -> Path:
    """Renders ``templates/<template>`` with ``context`` into ``output`` (atomically)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("skysort.evaluation", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             # a run from another version may lack a key: show nothing
                             undefined=jinja2.ChainableUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["num"] = number
    env.filters["pct"] = lambda v, d=1: "n/a" if _missing(v) else f"{100 * v:.{d}f}%"
    html = env.get_template(template).render(**context)
    # a file name that is not UTF-8 (held as surrogates) is shown as its bytes, \xe9
    text = html.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    atomic_write(output, text.encode("utf-8"))
    return output


def _missing(value: Any) -> bool:
    import jinja2

    return value is None or isinstance(value, jinja2.Undefined) or \
        (isinstance(value, float) and value != value)

