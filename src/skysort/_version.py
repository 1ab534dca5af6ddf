"""The package version, in one place (read by pyproject.toml, model.json and ``--version``)."""

__version__ = "0.1.0"
