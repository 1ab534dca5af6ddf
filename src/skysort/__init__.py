"""skysort: train, evaluate and apply image classifiers for survey images."""

from __future__ import annotations

__version__ = "0.1.0"
