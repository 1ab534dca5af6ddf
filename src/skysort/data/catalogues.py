"""Catalogues as astropy reads and writes them: FITS binary tables, ECSV, VOTable, Parquet.

A label table (``--labels``) or a catalogue of image paths (``skysort predict``) may come
in any of these formats besides CSV. :func:`read_catalogue` reads one with
``astropy.table.Table.read`` and turns it into what the CSV reader sees: a header and
rows of text. Every check after that (ids, missing images, targets, label issues) is the
CSV path's, so a table behaves the same in every format. A cell becomes text as a CSV
would hold it: a masked (missing) cell is empty, bytes are decoded as UTF-8, numbers keep
their shortest exact form (``NaN`` stays ``nan``, a missing target). A column with more
than one value per row (a 2-D column, such as a spectrum) is refused. Row numbers count
the table's rows from 1 (a CSV's count lines, its header being line 1).

:func:`write_catalogue` writes prediction rows as a FITS binary table or an ECSV file,
with the run's provenance in the table's metadata (FITS header keywords, ECSV meta).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skysort.errors import DataError

#: astropy's format name per file name ending (longest endings first).
CATALOGUE_FORMATS = {
    ".fits.gz": "fits", ".fit.gz": "fits", ".fts.gz": "fits", ".fits": "fits", ".fit": "fits",
    ".fts": "fits", ".ecsv": "ascii.ecsv", ".vot": "votable", ".votable": "votable",
    ".xml": "votable", ".parquet": "parquet",
}
#: Formats predictions can be written in as one table, by file name ending.
TABLE_OUTPUTS = {".fits": "fits", ".fit": "fits", ".ecsv": "ecsv"}


def catalogue_format(path: str | Path) -> str | None:
    """astropy's format name for a table file, from its name; None for CSV or another file."""
    name = str(path).lower()
    return next((fmt for end, fmt in CATALOGUE_FORMATS.items() if name.endswith(end)), None)


def is_fits_table(path: Path) -> bool:
    """Whether a FITS file holds a table before any image (its first HDU with data is a
    binary or ASCII table), as a catalogue does; False for a FITS image."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            for hdu in hdul:
                if str(hdu.header.get("XTENSION", "")).strip() in ("BINTABLE", "TABLE"):
                    return True
                if int(hdu.header.get("NAXIS", 0)) > 0:
                    return False
    except (OSError, ValueError):
        return False
    return False


def read_table(path: Path) -> Any:
    """The table in ``path`` as an ``astropy.table.Table`` (the first table of a FITS file)."""
    fmt = catalogue_format(path)
    if fmt is None:
        raise DataError(f"{path}: not a catalogue file; name it *.csv, *.fits, *.fits.gz, "
                        "*.ecsv, *.vot, *.xml or *.parquet")
    from astropy.table import Table
    from astropy.utils.exceptions import AstropyWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            # a FITS NaN stays NaN, as in every other format (not masked, not empty)
            extra = {"mask_invalid": False} if fmt == "fits" else {}
            return Table.read(path, format=fmt, **extra)
    except Exception as exc:  # astropy raises many kinds for a file it cannot read
        what = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(f"{path}: cannot read as a {fmt} table ({what}); give a FITS binary "
                        "table, ECSV, VOTable or Parquet file, or a CSV") from None


def cell_texts(column: Any) -> list[str]:
    """One column's cells as CSV text: masked cells empty, bytes decoded."""
    values, mask = np.asarray(column), np.ma.getmaskarray(column)
    texts = []
    for value, masked in zip(values, mask, strict=True):
        if masked:
            texts.append("")
        elif isinstance(value, bytes):
            texts.append(value.decode("utf-8", "surrogateescape"))
        else:
            texts.append(str(value))
    return texts


def check_flat(path: Path, table: Any) -> None:
    """Refuses columns that hold more than one value per row."""
    flat = [name for name in table.colnames if table[name].ndim == 1]
    for name in table.colnames:
        if table[name].ndim != 1:
            raise DataError(f"{path}: column {name!r} holds {table[name].shape[1:]} values per "
                            f"row; only columns of one value per row can be read: {flat}")


def read_catalogue(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and ``(row number, cells)`` of a table file, as a CSV reader would give
    them; see the module doc."""
    table = read_table(path)
    check_flat(path, table)
    if not table.colnames:
        raise DataError(f"{path}: the table has no columns")
    columns = [cell_texts(table[name]) for name in table.colnames]
    rows = [(n, list(cells)) for n, cells in enumerate(zip(*columns, strict=True), start=1)]
    return [str(name).strip() for name in table.colnames], rows


def cell_values(column: Any) -> list[Any]:
    """One column's cells as Python values, as the table types them (None where masked,
    bytes decoded, a float32 in its shortest form): what ``--keep-columns`` carries."""
    values, mask = np.asarray(column), np.ma.getmaskarray(column)
    short = np.issubdtype(values.dtype, np.floating) and values.dtype.itemsize < 8
    out: list[Any] = []
    for value, masked in zip(values, mask, strict=True):
        if masked:
            out.append(None)
        elif isinstance(value, bytes):
            out.append(value.decode("utf-8", "surrogateescape"))
        else:
            out.append(float(str(value)) if short else value.item())
    return out


def write_catalogue(path: Path, fmt: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                    meta: dict[str, str]) -> None:
    """Writes ``rows`` as one FITS binary table (``fmt="fits"``) or ECSV file, whole, then
    renames it into place. A column of numbers (and missing values) becomes a float, or
    integer, column with the missing values masked; any other column text, empty where
    missing. ``meta`` goes into the FITS header or the ECSV header."""
    from astropy.table import MaskedColumn, Table

    fits = fmt == "fits"
    table = Table(meta={k: _ascii(v) if fits else v for k, v in meta.items()})
    cells = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    for name, values in zip(columns, cells, strict=True):
        present = [v for v in values if v is not None]
        if all(isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
               for v in present):
            whole = bool(present) and all(isinstance(v, int | np.integer) for v in present)
            data = np.array([0 if v is None else v for v in values],
                            dtype=np.int64 if whole else np.float64)
            table[name] = MaskedColumn(data, mask=[v is None for v in values])
        elif fits:  # FITS text is bytes: a path keeps its bytes as they are
            table[name] = [b"" if v is None else os.fsencode(str(v)) for v in values]
        else:
            table[name] = ["" if v is None else
                           str(v).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                           for v in values]
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long keywords become HIERARCH cards, as they should
        table.write(tmp, format="fits" if fits else "ascii.ecsv", overwrite=True)
    os.replace(tmp, path)


def _ascii(value: str) -> str:
    """A FITS header holds ASCII: anything else as ``\\xNN`` escapes."""
    return value.encode("ascii", "backslashreplace").decode("ascii")
