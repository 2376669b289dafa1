"""The one Markdown renderer: rounding, missing values, headers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lit_unlearn.reporting import MISSING, format_cell, markdown_table


def test_cells_round_and_show_missing_values_one_way() -> None:
    assert format_cell(0.12345, 3) == "0.123"
    assert format_cell(np.float32(0.5), 2) == "0.50"
    assert format_cell(float("nan")) == MISSING == format_cell(None)
    assert format_cell(True) == "True" and format_cell(7) == "7" and format_cell("mlp") == "mlp"


def test_markdown_table_layout_and_header_check() -> None:
    frame = pd.DataFrame({"method": ["A", "B"], "hr@10": [0.61934, float("nan")]})
    assert markdown_table(frame, digits=2).splitlines() == [
        "| method | hr@10 |",
        "|---|---|",
        "| A | 0.62 |",
        f"| B | {MISSING} |",
    ]
    assert markdown_table(frame.set_index("method"), index=True).splitlines()[2] == "| A | 0.619 |"
    with pytest.raises(ValueError, match="1 headers for 2 columns"):
        markdown_table(frame, headers=["only one"])
