"""Any interaction table (CSV, TSV or Parquet) plus an optional users table.

For datasets without a dedicated source: point :class:`GenericTable` at the files and name the
columns. The format follows the extension (``.csv``, ``.tsv``/``.txt``, ``.parquet``/``.pq``;
``.gz``/``.bz2``/``.xz``/``.zst``/``.zip`` compression of text files is undone by pandas) unless
``sep`` is given, which makes both files delimited text with that separator. Parquet needs
``pyarrow`` (the ``parquet`` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.schema import DataFormatError, validate_interactions, validate_users
from lit_unlearn.datamodules.sources.base import DataSource

_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
_FORMATS: dict[str, str] = {
    ".csv": ",",
    ".tsv": "\t",
    ".txt": "\t",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def table_format(path: Path, sep: str | None) -> str:
    """``"parquet"`` or the separator of a delimited text file.

    Raises:
        ValueError: Unknown extension and no ``sep``.
    """
    if sep is not None:
        return sep
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext not in _FORMATS:
        raise ValueError(
            f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; use one of "
            f"{sorted(_FORMATS)} (optionally compressed with {list(_COMPRESSION)}) or pass sep"
        )
    return _FORMATS[ext]


def _columns_of(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:  # pragma: no cover - pyarrow is an optional extra
            raise ImportError(
                f"reading {path} needs pyarrow: pip install 'lit-unlearn[parquet]'"
            ) from err
        try:
            return [str(c) for c in pq.read_schema(path).names]
        except Exception as err:  # pyarrow raises ArrowInvalid & co for non-Parquet files
            raise DataFormatError(f"{path}: not a readable Parquet file ({err})") from err
    try:
        header = pd.read_csv(path, sep=fmt, nrows=0, engine="python" if len(fmt) > 1 else "c")
    except pd.errors.EmptyDataError as err:
        raise DataFormatError(f"{path}: file is empty; expected a header line") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: cannot read the header ({err})") from err
    return [str(c) for c in header.columns]


def _read(path: Path, fmt: str, columns: list[str], id_cols: list[str]) -> pd.DataFrame:
    """Read ``columns`` (ids as strings), with errors that name the file."""
    if fmt == "parquet":
        frame = pd.read_parquet(path, columns=columns)
        for c in id_cols:
            frame[c] = frame[c].map(lambda v: None if v is None or v != v else str(v))
        return frame
    try:
        return pd.read_csv(
            path,
            sep=fmt,
            usecols=columns,
            dtype={c: str for c in id_cols},
            engine="python" if len(fmt) > 1 else "c",
        )
    except pd.errors.EmptyDataError as err:
        raise DataFormatError(f"{path}: file is empty") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{path}: not a valid {fmt!r}-separated table ({err})") from err


def _require(path: Path, available: list[str], needed: dict[str, str]) -> None:
    """Fail if a named column is absent; ``needed`` maps argument name -> column."""
    for arg, col in needed.items():
        if col not in available:
            raise DataFormatError(
                f"{path}: no column {col!r} (given as {arg}); available columns: {available}"
            )


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _timestamps(values: pd.Series, path: Path, col: str) -> np.ndarray:
    """Numbers as epoch seconds, or datetimes/date strings converted to epoch seconds."""
    missing = values.isna().to_numpy(dtype=bool)
    if missing.any():
        i = _first_bad(missing)
        raise DataFormatError(f"{path}: row {i + 1}: empty {col!r} (timestamp column)")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64").to_numpy().astype("int64")
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return numeric.astype("float64").to_numpy().astype("int64")
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        parsed = pd.to_datetime(values.astype(str), utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna().to_numpy(dtype=bool)
    if bad.any():
        i = _first_bad(bad)
        raise DataFormatError(
            f"{path}: row {i + 1}: {col!r} must be epoch seconds or an ISO date/time, got "
            f"{values.iloc[i]!r}"
        )
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64")


class GenericTable(DataSource):
    """An interaction table and an optional users table in CSV, TSV or Parquet.

    Both files have a header line (Parquet: column names). Rows in errors are counted from 1
    after the header. Rating and timestamp columns are
    optional: with ``None``, or a default name that the file lacks, ratings are NaN and the row
    order is the time. A column named explicitly (any non-default name) must exist.
    Timestamps may be numbers (epoch seconds) or ISO date strings.

    The users table holds every column of the users file except the id column. Without a users
    file :meth:`load_users` returns an empty table (no attributes known); it never opens the
    interaction file.

    Args:
        interactions: Interaction file (``.csv``, ``.tsv``, ``.txt``, ``.parquet``).
        users: Users file (same formats), or None.
        user_col: User id column of the interaction file.
        item_col: Item id column of the interaction file.
        rating_col: Rating column, or None for none.
        timestamp_col: Timestamp column, or None for none.
        users_id_col: User id column of the users file.
        sep: Separator for both files, overriding the extension (then both are read as text).
    """

    name = "generic"

    def __init__(
        self,
        interactions: str,
        users: str | None = None,
        user_col: str = "user",
        item_col: str = "item",
        rating_col: str | None = "rating",
        timestamp_col: str | None = "timestamp",
        users_id_col: str = "user",
        sep: str | None = None,
    ) -> None:
        super().__init__()
        if sep == "":
            raise ValueError("sep must be a non-empty string or None")
        self.interactions_path = Path(interactions).expanduser()
        self.users_path = Path(users).expanduser() if users is not None else None
        self.user_col = user_col
        self.item_col = item_col
        self.rating_col = rating_col
        self.timestamp_col = timestamp_col
        self.users_id_col = users_id_col
        self.sep = sep
        # Fail fast on an unknown extension (no file is opened here).
        table_format(self.interactions_path, sep)
        if self.users_path is not None:
            table_format(self.users_path, sep)

    def user_files(self) -> list[Path]:
        return [self.users_path] if self.users_path is not None else []

    def interaction_files(self) -> list[Path]:
        return [self.interactions_path]

    def _optional(self, col: str | None, default: str, available: list[str]) -> str | None:
        if col is None:
            return None
        if col in available:
            return col
        if col == default:
            return None
        return col  # explicitly named but absent: _require reports it

    def load_interactions(self) -> pd.DataFrame:
        path = self.interactions_path
        fmt = table_format(path, self.sep)
        available = _columns_of(path, fmt)
        rating = self._optional(self.rating_col, "rating", available)
        timestamp = self._optional(self.timestamp_col, "timestamp", available)
        needed = {"user_col": self.user_col, "item_col": self.item_col}
        if rating is not None:
            needed["rating_col"] = rating
        if timestamp is not None:
            needed["timestamp_col"] = timestamp
        _require(path, available, needed)
        frame = _read(
            path, fmt, list(dict.fromkeys(needed.values())), [self.user_col, self.item_col]
        )
        for arg, col in (("user_col", self.user_col), ("item_col", self.item_col)):
            empty = frame[col].isna().to_numpy(dtype=bool)
            if empty.any():
                raise DataFormatError(f"{path}: row {_first_bad(empty) + 1}: empty {arg} {col!r}")
        table = pd.DataFrame({"user": frame[self.user_col], "item": frame[self.item_col]})
        if rating is not None:
            values = pd.to_numeric(frame[rating], errors="coerce")
            bad = (values.isna() & frame[rating].notna()).to_numpy(dtype=bool)
            if bad.any():
                i = _first_bad(bad)
                got = frame[rating].iloc[i]
                raise DataFormatError(
                    f"{path}: row {i + 1}: {rating!r} must be a number, got {got!r}"
                )
            table["rating"] = values.astype("float64").to_numpy()
        if timestamp is not None:
            table["timestamp"] = _timestamps(frame[timestamp], path, timestamp)
        return validate_interactions(table, str(path))

    def load_users(self) -> pd.DataFrame:
        if self.users_path is None:
            return pd.DataFrame(index=pd.Index([], dtype=object, name="user"))
        path = self.users_path
        fmt = table_format(path, self.sep)
        available = _columns_of(path, fmt)
        _require(path, available, {"users_id_col": self.users_id_col})
        frame = _read(path, fmt, available, [self.users_id_col])
        ids = frame[self.users_id_col]
        empty = ids.isna().to_numpy(dtype=bool)
        if empty.any():
            raise DataFormatError(
                f"{path}: row {_first_bad(empty) + 1}: empty users_id_col {self.users_id_col!r}"
            )
        users = frame.drop(columns=[self.users_id_col])
        users.index = pd.Index(ids.astype(str).to_numpy(dtype=object), name="user")
        return validate_users(users, str(path))
