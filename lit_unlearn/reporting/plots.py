"""Figures for reports: matplotlib on the headless Agg backend, an optional dependency."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = ["pyplot", "safe_stem", "save_figure"]


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend, or None (with a warning) when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib missing: no plots (pip install lit-unlearn[plots])", stacklevel=2)
        return None
    return plt


def safe_stem(text: str) -> str:
    """A file-name-safe stem: letters, digits, ``-`` and ``.`` kept, the rest ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)


def save_figure(fig: Any, path: str | Path, dpi: int = 90) -> Path:
    """Save ``fig`` as PNG at ``path`` and close it (figures otherwise pile up in memory)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
