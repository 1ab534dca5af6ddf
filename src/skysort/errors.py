"""Errors that skysort raises for problems a user can fix.

Every error is a :class:`SkySortError`; each subclass also inherits the builtin that fits,
so callers may catch either::

    SkySortError
    ├── ConfigError(ValueError)        unknown key, bad value, bad YAML
    ├── DataError(ValueError)          a dataset that cannot be used as given
    │   └── LabelError                 a label file or table that does not match its images
    ├── ImageError(ValueError)         one file that cannot be decoded as an image
    ├── ModelError(ValueError)         unknown backbone, weights that do not fit
    ├── RunError(FileNotFoundError)    a run directory that is missing or incomplete
    └── NotFittedError(RuntimeError)   a model used before it was trained or loaded

Messages say what was wrong, where (file, row, column) and what would be valid.
"""

from __future__ import annotations


class SkySortError(Exception):
    """Base class for every error skysort raises on purpose."""


class ConfigError(SkySortError, ValueError):
    """A configuration key or value is not valid."""


class DataError(SkySortError, ValueError):
    """A dataset cannot be used as given (no images, an empty class, ...)."""


class LabelError(DataError):
    """A label file or table does not match the images it describes."""


class ImageError(SkySortError, ValueError):
    """A single file cannot be read as an image."""


class ModelError(SkySortError, ValueError):
    """A backbone name or a weights file cannot be used."""


class RunError(SkySortError, FileNotFoundError):
    """A run directory is missing or lacks a file it should hold."""


class NotFittedError(SkySortError, RuntimeError):
    """A model was used before it was trained or loaded."""
