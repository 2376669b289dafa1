"""A results file that survives kills: one JSON line per finished run, appended and fsynced.

Long experiment tables (hours on a CPU) write each finished run as it ends; a restarted table
reads the lines back and skips what is done. A last line cut short by a kill is ignored and cut
before the next append.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ROWS", "JsonlStore", "json_default"]

ROWS = "rows.jsonl"


class JsonlStore:
    """``out/rows.jsonl``: append finished runs, read them back after a kill (resume).

    Args:
        out: The table's output directory.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / ROWS

    def records(self) -> list[dict[str, Any]]:
        """Every complete line, in file order (a last line without its newline is ignored).

        Raises:
            ValueError: A line other than a cut-short last one is not JSON.
        """
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        records = []
        for number, line in enumerate(complete.decode().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{self.path}, line {number} is damaged ({err}); remove the line (or start "
                    "over with --fresh)"
                ) from err
        return records

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one line (after cutting a last line a kill left without its newline)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep != len(data):
                with self.path.open("r+b") as f:
                    f.truncate(keep)
        line = json.dumps(dict(record), default=json_default)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        """Forget every finished run (``--fresh``)."""
        self.path.unlink(missing_ok=True)


def json_default(value: Any) -> Any:
    """JSON for NumPy scalars, paths and tuples (``json.dumps(..., default=json_default)``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
