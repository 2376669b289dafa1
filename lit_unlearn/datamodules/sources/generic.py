"""Any interaction table (delimited text, JSON lines or Parquet) plus an optional users table.

For datasets without a dedicated source: point :class:`GenericTable` at the files and name the
columns. The format follows the extension:

* ``.csv`` (comma), ``.tsv``/``.txt`` (tab): delimited text; ``sep`` replaces the separator;
* ``.dat`` (e.g. MovieLens-1M ``ratings.dat``): delimited text with no standard separator, so
  ``sep`` is required (``"::"`` for MovieLens);
* any other extension: delimited text when ``sep`` is given, else an error;
* ``.jsonl``/``.ndjson``: JSON lines, one object per line, fields are the columns;
* ``.parquet``/``.pq``: Parquet (needs ``pyarrow``, the ``parquet`` extra).

Text and JSON-lines files may be compressed (``.gz``/``.bz2``/``.xz``/``.zst``/``.zip`` after
the extension). JSON-lines and Parquet files are always read by their extension; a separator
only applies to text files.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib
import json
import lzma
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.schema import DataFormatError, validate_interactions, validate_users
from lit_unlearn.datamodules.sources.base import DataSource, format_error

_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
#: Text extensions and their separator (None: no standard one, ``sep`` is required).
_TEXT: dict[str, str | None] = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".dat": None}
_PARQUET = (".parquet", ".pq")
_JSONL = (".jsonl", ".ndjson")
_KNOWN = sorted([*_TEXT, *_PARQUET, *_JSONL])

#: A column: its name, or its 0-based position in the file.
Column = str | int


@dataclass(frozen=True)
class TableFormat:
    """How a table file is read.

    Attributes:
        kind: ``text``, ``jsonl`` or ``parquet``.
        sep: Separator of a text file.
        header: Whether a text file's first line names the columns.
        names: Column names of a header-less text file (None: named by position).
    """

    kind: Literal["text", "jsonl", "parquet"]
    sep: str = ","
    header: bool = True
    names: tuple[str, ...] | None = None


def _extension(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def table_format(
    path: Path,
    sep: str | None,
    header: bool = True,
    names: list[str] | None = None,
    sep_arg: str = "sep",
) -> TableFormat:
    """The format of ``path`` from its extension and the separator/header options.

    Raises:
        ValueError: Unknown extension (or ``.dat``) without a separator, or ``names`` for a file
            that is not header-less text.
    """
    ext = _extension(path)
    if ext in _PARQUET or ext in _JSONL:
        if names is not None:
            raise ValueError(
                f"{path}: column names are for header-less text files; a {ext} file names its "
                "own columns"
            )
        return TableFormat("parquet" if ext in _PARQUET else "jsonl")
    if sep is None:
        if ext == ".dat":
            raise ValueError(
                f"{path}: a .dat file is delimited text without a standard separator; pass "
                f"{sep_arg} (e.g. {sep_arg}: '::' for MovieLens-1M)"
            )
        if ext not in _TEXT:
            raise ValueError(
                f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; use one "
                f"of {_KNOWN} (text optionally compressed with {list(_COMPRESSION)}) or pass "
                f"{sep_arg}"
            )
        sep = _TEXT[ext]
        assert sep is not None
    if names is not None:
        if header:
            raise ValueError(
                f"{path}: column names are for a file without a header line; set header to "
                "false (or drop the names to use the file's header)"
            )
        if not names or len(set(names)) != len(names):
            raise ValueError(f"{path}: column names must be distinct and non-empty, got {names}")
    return TableFormat("text", sep, header, tuple(names) if names is not None else None)


@contextlib.contextmanager
def _open_binary(path: Path) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed by its last suffix."""
    ext = path.suffix.lower()
    if ext == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if not n.endswith("/")]
            if len(members) != 1:
                raise DataFormatError(f"{path}: expected one file in the zip, found {members}")
            with archive.open(members[0]) as member:
                yield member
        return
    opener: Any = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(ext, open)
    if ext == ".zst":
        try:
            opener = importlib.import_module("zstandard").open
        except ImportError as err:
            raise ImportError(f"reading {path} needs zstandard: pip install zstandard") from err
    with opener(path, "rb") as stream:
        yield stream


def _json_lines(
    path: Path, keep: set[str] | None
) -> tuple[dict[str, list[Any]], list[str], list[int]]:
    """Parse a JSON-lines file: values of the ``keep`` fields (all if None), every field seen
    (in order of first appearance) and the line number of each record. Blank lines are skipped.
    """
    values: dict[str, list[Any]] = {}
    fields: list[str] = []
    seen: set[str] = set()
    lines: list[int] = []
    try:
        with _open_binary(path) as stream:
            for number, raw in enumerate(stream, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.strip())
                except UnicodeDecodeError as err:
                    raise format_error(
                        path, number, f"not valid UTF-8 text ({err.reason})"
                    ) from err
                except json.JSONDecodeError as err:
                    raise format_error(
                        path,
                        number,
                        f"not valid JSON ({err.msg} at column {err.colno}); expected one object "
                        "per line",
                    ) from err
                if not isinstance(record, dict):
                    raise format_error(
                        path, number, f"expected a JSON object, got {type(record).__name__}"
                    )
                for key in record:
                    if key not in seen:
                        seen.add(key)
                        fields.append(key)
                        if keep is None or key in keep:
                            values[key] = [None] * len(lines)
                for key, column in values.items():
                    column.append(record.get(key))
                lines.append(number)
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as err:
        raise DataFormatError(f"{path}: cannot read the file ({err})") from err
    if not lines:
        raise format_error(path, None, "file is empty; expected one JSON object per line")
    return values, fields, lines


def _id_text(value: Any) -> str | None:
    return None if value is None or value != value else str(value)


class _Reader:
    """One table file: its columns, the chosen ones read, and row labels for errors."""

    def __init__(self, path: Path, fmt: TableFormat, keep: set[str] | None = None) -> None:
        self.path = path
        self.fmt = fmt
        self.keep = keep
        self._json: tuple[dict[str, list[Any]], list[str], list[int]] | None = None

    def _engine(self) -> Literal["c", "python"]:
        return "python" if len(self.fmt.sep) > 1 else "c"

    def _parsed(self) -> tuple[dict[str, list[Any]], list[str], list[int]]:
        if self._json is None:
            self._json = _json_lines(self.path, self.keep)
        return self._json

    def columns(self) -> list[str]:
        """Column names (header-less text without names: ``"0"``, ``"1"``, ...)."""
        path, fmt = self.path, self.fmt
        if fmt.kind == "jsonl":
            return list(self._parsed()[1])
        if fmt.kind == "parquet":
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
            if fmt.header:
                first = pd.read_csv(path, sep=fmt.sep, nrows=0, engine=self._engine())
            else:
                first = pd.read_csv(
                    path, sep=fmt.sep, header=None, nrows=1, dtype=str, engine=self._engine()
                )
        except pd.errors.EmptyDataError as err:
            expected = "a header line" if fmt.header else "lines of fields"
            raise DataFormatError(f"{path}: file is empty; expected {expected}") from err
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            what = "the header" if fmt.header else "the first line"
            raise DataFormatError(f"{path}: cannot read {what} ({err})") from err
        if fmt.header:
            return [str(c) for c in first.columns]
        width = first.shape[1]
        if fmt.names is None:
            return [str(i) for i in range(width)]
        if len(fmt.names) != width:
            raise DataFormatError(
                f"{path}: {len(fmt.names)} column names {list(fmt.names)} given, but line 1 has "
                f"{width} {fmt.sep!r}-separated fields"
            )
        return list(fmt.names)

    def read(self, columns: list[str], id_cols: list[str]) -> pd.DataFrame:
        """``columns`` of every row; ids as strings (missing ones None/NaN)."""
        path, fmt = self.path, self.fmt
        if fmt.kind == "jsonl":
            values = self._parsed()[0]
            frame = pd.DataFrame({c: pd.Series(values[c], dtype=object) for c in columns})
            for c in frame.columns:
                frame[c] = frame[c].map(_id_text) if c in id_cols else frame[c].infer_objects()
            return frame
        if fmt.kind == "parquet":
            frame = pd.read_parquet(path, columns=columns)
            for c in id_cols:
                frame[c] = frame[c].map(_id_text)
            return frame
        names = None if fmt.header else self.columns()
        try:
            return pd.read_csv(
                path,
                sep=fmt.sep,
                header=0 if fmt.header else None,
                names=names,
                usecols=columns,
                dtype={c: str for c in id_cols},
                engine=self._engine(),
            )
        except pd.errors.EmptyDataError as err:
            raise DataFormatError(f"{path}: file is empty") from err
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise DataFormatError(
                f"{path}: not a valid {fmt.sep!r}-separated table ({err})"
            ) from err

    def where(self, row: int) -> str:
        """Row ``row`` (0-based) as errors name it: ``line N`` (JSON lines) or ``row N``."""
        if self.fmt.kind == "jsonl":
            return f"line {self._parsed()[2][row]}"
        return f"row {row + 1}"


def _resolve(
    path: Path, available: list[str], needed: dict[str, Column], fmt: TableFormat
) -> dict[str, str]:
    """Column name of each argument (``needed``: argument name -> name or position).

    Raises:
        DataFormatError: A named column is absent or a position is past the last column.
    """
    out = {}
    for arg, col in needed.items():
        if isinstance(col, int):
            if col >= len(available):
                raise DataFormatError(
                    f"{path}: no column at position {col} (given as {arg}); the file has "
                    f"{len(available)} columns: {available}"
                )
            out[arg] = available[col]
        elif col not in available:
            hint = (
                " (the file has no header line: name its columns with columns/users_columns or "
                "give positions)"
                if fmt.kind == "text" and not fmt.header and fmt.names is None
                else ""
            )
            raise DataFormatError(
                f"{path}: no column {col!r} (given as {arg}); available columns: {available}" + hint
            )
        else:
            out[arg] = col
    return out


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _timestamps(values: pd.Series, path: Path, col: str, reader: _Reader) -> np.ndarray:
    """Numbers as epoch seconds, or datetimes/date strings converted to epoch seconds."""
    missing = values.isna().to_numpy(dtype=bool)
    if missing.any():
        i = _first_bad(missing)
        raise DataFormatError(f"{path}: {reader.where(i)}: empty {col!r} (timestamp column)")
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
            f"{path}: {reader.where(i)}: {col!r} must be epoch seconds or an ISO date/time, got "
            f"{values.iloc[i]!r}"
        )
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64")


def _check_column(arg: str, col: object, optional: bool) -> None:
    if col is None and optional:
        return
    if (
        isinstance(col, bool)
        or not isinstance(col, str | int)
        or (isinstance(col, int) and col < 0)
    ):
        kind = (
            "a column name, a position >= 0 or None"
            if optional
            else "a column name or a position >= 0"
        )
        raise ValueError(f"{arg} must be {kind}, got {col!r}")


class GenericTable(DataSource):
    """An interaction table and an optional users table in delimited text, JSON lines or Parquet.

    **Formats.** See the module docstring: the extension decides (``.csv``, ``.tsv``/``.txt``,
    ``.dat`` with ``sep``, ``.jsonl``/``.ndjson``, ``.parquet``/``.pq``). ``sep`` sets the
    separator of the interaction file (and of any extension that is not listed), ``users_sep``
    that of the users file (default ``sep``), so e.g. ``ratings.dat`` with ``::`` can go with a
    ``users.csv``.

    **Columns.** Each ``*_col`` argument is a column name or a 0-based column position (an
    integer; not for JSON lines, whose fields have no order). A text file has a header line by
    default; with ``header=False`` (``users_header`` for the users file, default ``header``) its
    columns are named by ``columns`` (``users_columns``), one name per field, or else by their
    position as text (``"0"``, ``"1"``, ...), which the integer positions address. JSON-lines
    fields and Parquet columns always carry their own names, and a JSON-lines field missing
    from some lines is empty there.

    Rating and timestamp columns are optional: with ``None``, or a default name that the file
    lacks, ratings are NaN and the row order is the time. A column given explicitly (any
    non-default name, or a position) must exist. Timestamps may be numbers (epoch seconds) or
    ISO date strings. Errors name the file and the row: ``row N`` counts data rows from 1 after
    the header (text, Parquet), ``line N`` is the file's line (JSON lines).

    The users table holds every column of the users file except the id column. Without a users
    file :meth:`load_users` returns an empty table (no attributes known: use ``attributes: []``
    in the DataModule); it never opens the interaction file.

    Relative file paths are looked up in the working directory, then under
    ``$LIT_UNLEARN_DATA``, then in the repository root (see :class:`DataSource`).

    Example (MovieLens-1M ratings without users, and a JSON-lines file)::

        GenericTable("ml-1m/ratings.dat", sep="::", header=False,
                     columns=["user", "item", "rating", "timestamp"])
        GenericTable("clicks.jsonl", user_col="uid", item_col="sku", rating_col=None)

    Args:
        interactions: Interaction file.
        users: Users file, or None.
        user_col: User id column of the interaction file.
        item_col: Item id column of the interaction file.
        rating_col: Rating column, or None for none.
        timestamp_col: Timestamp column, or None for none.
        users_id_col: User id column of the users file.
        sep: Separator of the interaction file if it is text (overrides the extension's).
        users_sep: Separator of the users file if it is text; default ``sep``.
        header: Whether a text interaction file starts with a header line.
        users_header: Whether a text users file starts with a header line; default ``header``.
        columns: Names of the columns of a header-less text interaction file, in order.
        users_columns: Names of the columns of a header-less text users file, in order.
    """

    name = "generic"

    def __init__(
        self,
        interactions: str,
        users: str | None = None,
        user_col: str | int = "user",
        item_col: str | int = "item",
        rating_col: str | int | None = "rating",
        timestamp_col: str | int | None = "timestamp",
        users_id_col: str | int = "user",
        sep: str | None = None,
        users_sep: str | None = None,
        header: bool = True,
        users_header: bool | None = None,
        columns: list[str] | None = None,
        users_columns: list[str] | None = None,
    ) -> None:
        super().__init__()
        self._lookups.clear()  # the root is unused: only the file lookups matter in errors
        for arg, value in (("sep", sep), ("users_sep", users_sep)):
            if value == "":
                raise ValueError(f"{arg} must be a non-empty string or None")
        for arg, col, optional in (
            ("user_col", user_col, False),
            ("item_col", item_col, False),
            ("rating_col", rating_col, True),
            ("timestamp_col", timestamp_col, True),
            ("users_id_col", users_id_col, False),
        ):
            _check_column(arg, col, optional)
        self.interactions_path = self.resolve(Path(interactions))
        self.users_path = self.resolve(Path(users)) if users is not None else None
        self.user_col = user_col
        self.item_col = item_col
        self.rating_col = rating_col
        self.timestamp_col = timestamp_col
        self.users_id_col = users_id_col
        self.sep = sep
        self.users_sep = sep if users_sep is None else users_sep
        self.header = header
        self.users_header = header if users_header is None else users_header
        # Fail fast on an unknown extension or contradicting options (no file is opened here).
        self.interactions_format = table_format(self.interactions_path, sep, header, columns)
        self.users_format = (
            table_format(
                self.users_path, self.users_sep, self.users_header, users_columns, "users_sep"
            )
            if self.users_path is not None
            else None
        )
        if self.users_path is None and users_columns is not None:
            raise ValueError("users_columns given without a users file")
        for path, fmt, cols in (
            (
                self.interactions_path,
                self.interactions_format,
                (user_col, item_col, rating_col, timestamp_col),
            ),
            (self.users_path, self.users_format, (users_id_col,)),
        ):
            if fmt is not None and fmt.kind == "jsonl" and any(isinstance(c, int) for c in cols):
                raise ValueError(
                    f"{path}: JSON-lines fields have no position; give column names, not numbers"
                )

    def user_files(self) -> list[Path]:
        return [self.users_path] if self.users_path is not None else []

    def interaction_files(self) -> list[Path]:
        return [self.interactions_path]

    @staticmethod
    def _optional(col: Column | None, default: str, available: list[str]) -> Column | None:
        if col is None or isinstance(col, int):
            return col
        if col in available:
            return col
        if col == default:
            return None
        return col  # explicitly named but absent: _resolve reports it

    def load_interactions(self) -> pd.DataFrame:
        path = self.interactions_path
        wanted = {self.user_col, self.item_col, self.rating_col, self.timestamp_col}
        reader = _Reader(path, self.interactions_format, {c for c in wanted if isinstance(c, str)})
        available = reader.columns()
        needed: dict[str, Column] = {"user_col": self.user_col, "item_col": self.item_col}
        rating_spec = self._optional(self.rating_col, "rating", available)
        timestamp_spec = self._optional(self.timestamp_col, "timestamp", available)
        if rating_spec is not None:
            needed["rating_col"] = rating_spec
        if timestamp_spec is not None:
            needed["timestamp_col"] = timestamp_spec
        cols = _resolve(path, available, needed, self.interactions_format)
        user, item = cols["user_col"], cols["item_col"]
        frame = reader.read(list(dict.fromkeys(cols.values())), [user, item])
        for arg in ("user_col", "item_col"):
            empty = frame[cols[arg]].isna().to_numpy(dtype=bool)
            if empty.any():
                raise DataFormatError(
                    f"{path}: {reader.where(_first_bad(empty))}: empty {arg} {cols[arg]!r}"
                )
        table = pd.DataFrame({"user": frame[user], "item": frame[item]})
        rating = cols.get("rating_col")
        if rating is not None:
            values = pd.to_numeric(frame[rating], errors="coerce")
            bad = (values.isna() & frame[rating].notna()).to_numpy(dtype=bool)
            if bad.any():
                i = _first_bad(bad)
                got = frame[rating].iloc[i]
                raise DataFormatError(
                    f"{path}: {reader.where(i)}: {rating!r} must be a number, got {got!r}"
                )
            table["rating"] = values.astype("float64").to_numpy()
        timestamp = cols.get("timestamp_col")
        if timestamp is not None:
            table["timestamp"] = _timestamps(frame[timestamp], path, timestamp, reader)
        return validate_interactions(table, str(path))

    def load_users(self) -> pd.DataFrame:
        if self.users_path is None or self.users_format is None:
            return pd.DataFrame(index=pd.Index([], dtype=object, name="user"))
        path = self.users_path
        reader = _Reader(path, self.users_format)
        available = reader.columns()
        needed: dict[str, Column] = {"users_id_col": self.users_id_col}
        id_col = _resolve(path, available, needed, self.users_format)["users_id_col"]
        frame = reader.read(available, [id_col])
        ids = frame[id_col]
        empty = ids.isna().to_numpy(dtype=bool)
        if empty.any():
            raise DataFormatError(
                f"{path}: {reader.where(_first_bad(empty))}: empty users_id_col {id_col!r}"
            )
        users = frame.drop(columns=[id_col])
        users.index = pd.Index(ids.astype(str).to_numpy(dtype=object), name="user")
        return validate_users(users, str(path))
