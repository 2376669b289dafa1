"""Tables as GitHub Markdown, rendered one way (CSVs are written by pandas at full precision).

Every Markdown table in the package goes through :func:`markdown_table`: floats to ``digits``
decimals, NaN and None as :data:`MISSING`, everything else as ``str``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["MISSING", "format_cell", "markdown_table"]

#: How a missing value (NaN, None) is shown in Markdown.
MISSING = "-"


def format_cell(value: Any, digits: int = 3) -> str:
    """One cell: floats rounded to ``digits`` decimals, NaN/None as :data:`MISSING`."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:.{digits}f}"
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f":  # numpy scalars
        return format_cell(float(value), digits)
    return str(value)


def markdown_table(
    frame: pd.DataFrame,
    digits: int = 3,
    index: bool = False,
    headers: Sequence[str] | None = None,
) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency).

    Args:
        frame: The rows.
        digits: Decimals of float cells.
        index: Show the index as the first column (named after ``frame.index.name``).
        headers: Column titles to show instead of the column names (same length).

    Returns:
        The table, lines joined by ``\\n``, without a trailing newline.
    """
    data = frame.reset_index() if index else frame
    titles = list(headers) if headers is not None else [str(c) for c in data.columns]
    if len(titles) != len(data.columns):
        raise ValueError(f"{len(titles)} headers for {len(data.columns)} columns")
    head = "| " + " | ".join(titles) + " |"
    rule = "|" + "---|" * len(titles)
    body = [
        "| " + " | ".join(format_cell(v, digits) for v in row) + " |"
        for row in data.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])
