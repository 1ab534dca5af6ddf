"""What every plot shares: matplotlib without a display, and how a figure is saved."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display), imported when first drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(fig: Any, file: Any, dpi: int = 80, *, tight: bool = True) -> Any:
    """Lays out (``tight``: tight layout; False for a figure that lays itself out), saves
    as PNG to ``file`` (a path or a file object) and closes a figure; returns ``file``."""
    if tight:
        fig.tight_layout()
    fig.savefig(file, dpi=dpi, format="png")
    pyplot().close(fig)
    return file
