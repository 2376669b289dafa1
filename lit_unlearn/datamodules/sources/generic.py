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
import csv
import gzip
import importlib
import io
import json
import lzma
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.schema import DataFormatError, validate_interactions, validate_users
from lit_unlearn.datamodules.sources.base import (
    LATIN1_FALLBACK,
    DataSource,
    decode_text,
    format_error,
    to_floats,
    to_timestamps,
    warn_stray_bytes,
)

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
                raise DataFormatError(
                    f"{path}: expected one file in the zip, found {members}", path=path
                )
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


#: What a damaged or mislabelled compressed file raises while being read.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    lzma.LZMAError,
    zlib.error,
    NotImplementedError,  # zipfile: unsupported compression method
)


def _read_bytes(path: Path) -> bytes:
    """The whole (decompressed) file; a damaged file is a :class:`DataFormatError`."""
    try:
        with _open_binary(path) as stream:
            return stream.read()
    except _READ_ERRORS as err:
        raise DataFormatError(f"{path}: cannot read the file ({err})", path=path) from err


def _json_lines(
    path: Path, keep: set[str] | None
) -> tuple[dict[str, list[Any]], list[str], list[int]]:
    """Parse a JSON-lines file: values of the ``keep`` fields (all if None), every field seen
    (in order of first appearance) and the line number of each record. Blank lines are skipped.

    JSON text must be UTF-8 (RFC 8259), so a stray byte is an error here, unlike in delimited
    text where it is read as latin-1.
    """
    values: dict[str, list[Any]] = {}
    fields: list[str] = []
    seen: set[str] = set()
    lines: list[int] = []
    data = _read_bytes(path)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        record = parse_json_line(path, number, raw)
        for key in record:
            if key not in seen:
                seen.add(key)
                fields.append(key)
                if keep is None or key in keep:
                    values[key] = [None] * len(lines)
        for key, column in values.items():
            column.append(record.get(key))
        lines.append(number)
    if not lines:
        raise format_error(path, None, "file is empty; expected one JSON object per line")
    return values, fields, lines


def parse_json_line(path: Path, number: int, raw: bytes) -> dict[str, Any]:
    """One JSON-lines record, which must be a UTF-8 JSON object.

    Raises:
        DataFormatError: Not UTF-8, not JSON, nested too deep, or not an object; names the line.
    """
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise format_error(
            path, number, f"not valid UTF-8 text ({err.reason} at byte {err.start + 1})"
        ) from err
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise format_error(
            path,
            number,
            f"not valid JSON ({err.msg} at column {err.colno}); expected one object per line",
        ) from err
    except RecursionError as err:  # '[[[[...' nested beyond Python's recursion limit
        raise format_error(path, number, "not valid JSON (nested too deeply)") from err
    if not isinstance(record, dict):
        raise format_error(path, number, f"expected a JSON object, got {type(record).__name__}")
    return record


def id_text(
    value: Any, origin: str | Path, line: int, field: str, unit: str = "line"
) -> str | None:
    """An id value (JSON or Parquet) as text; None/NaN/blank -> None.

    Integers and integral floats are written as integers (``1.0`` -> ``"1"``: Parquet stores
    an integer column with gaps as float, and the users table may hold the same ids as ints).

    Raises:
        DataFormatError: A boolean, a non-integral or inexact float, or a non-scalar value.
    """
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool | np.bool_):
        problem = "a boolean"
    elif isinstance(value, int | np.integer):
        return str(int(value))
    elif isinstance(value, float | np.floating):
        # Beyond 2**53 a float no longer tells neighbouring integers apart.
        number = float(value)
        if number.is_integer() and abs(number) <= 2**53:
            return str(int(number))
        problem = "not an exact integer"
    else:
        problem = f"a {type(value).__name__}"
    raise format_error(
        origin,
        line,
        f"{field} must be text or an integer id, got {value!r} ({problem})",
        field,
        unit,
    )


#: Text a delimited file may write for a missing value (pandas' defaults); not for id columns,
#: where ``NA`` or ``null`` may be a real name.
_NA_TEXT: list[str] = [
    "",
    "#N/A",
    "#NA",
    "-NaN",
    "-nan",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]


@dataclass(frozen=True)
class _TextScan:
    """A delimited text file, decoded and checked record by record (see :func:`_scan_text`)."""

    text: str
    names: list[str]
    lines: np.ndarray  # 1-based line of each data record
    stray_lines: np.ndarray  # lines read with the latin-1 fallback


def _field_counts(data: bytes, sep: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Field count and 1-based line number of each non-blank line of unquoted text.

    Vectorised like :func:`~lit_unlearn.datamodules.sources.base.iter_delimited`: separators
    and newlines are ASCII, so counting them on the raw bytes equals counting on the text.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1)).astype(np.int64)
    ends = np.concatenate((nl, [len(buf)])).astype(np.int64)
    if data.endswith(b"\n") or not data:  # no line after the final newline
        starts, ends = starts[:-1], ends[:-1]
    has_cr = np.zeros(len(starts), dtype=bool)
    nonzero = ends > starts
    has_cr[nonzero] = buf[ends[nonzero] - 1] == 13
    content_end = ends - has_cr
    if len(sep) == 1:
        hits = np.flatnonzero(buf == sep[0])
        owner = np.searchsorted(starts, hits, side="right") - 1
        counts = np.bincount(owner[owner >= 0], minlength=len(starts)) + 1
    else:
        counts = np.asarray(
            [data.count(sep, int(a), int(b)) + 1 for a, b in zip(starts, content_end, strict=True)],
            dtype=np.int64,
        )
    nonblank = content_end > starts
    numbers = np.arange(1, len(starts) + 1, dtype=np.int64)
    return counts[nonblank].astype(np.int64), numbers[nonblank]


def _scan_text(path: Path, fmt: TableFormat) -> _TextScan:
    """Decode a delimited text file and check that every record has the header's field count.

    pandas silently turns a first row with one field too many into the index (shifting every
    column), drops surplus fields of a row under ``usecols`` and fills a short row with NaN;
    counting the fields of each record first makes each of those an error naming the line.

    Raises:
        DataFormatError: Unreadable file, empty file, duplicate header names, a record whose
            field count differs from the header's (or the first line's), or unclosed quotes.
    """
    data = _read_bytes(path)
    text, stray = decode_text(data)
    sep = fmt.sep
    label = {"\t": "tab", ",": "comma"}.get(sep, repr(sep))
    sep_bytes = sep.encode("utf-8")
    # Quotes are interpreted by pandas for a one-character separator (a quoted field may hold
    # the separator or a newline), so the count has to follow the csv rules there.
    quoted = len(sep) == 1 and '"' in text
    counts: list[int]
    starts: list[int]
    header_fields: list[str] | None = None
    if quoted:
        counts, starts = [], []
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
        previous = 0
        try:
            for row in reader:
                start, previous = previous + 1, reader.line_num
                if not row:  # a blank line, as pandas skips it
                    continue
                if fmt.header and header_fields is None:
                    header_fields = row
                    continue
                counts.append(len(row))
                starts.append(start)
        except csv.Error as err:
            raise format_error(
                path, previous + 1, f"not a valid {label}-separated line ({err})"
            ) from err
    else:
        count_array, line_array = _field_counts(data, sep_bytes)
        if fmt.header and len(line_array):
            first = int(line_array[0])
            raw = data.split(b"\n", first)[first - 1].rstrip(b"\r")
            header_fields = raw.decode("utf-8", errors=LATIN1_FALLBACK).split(sep)
            count_array, line_array = count_array[1:], line_array[1:]
        counts, starts = count_array.tolist(), line_array.tolist()
    if fmt.header:
        if header_fields is None:
            raise format_error(path, None, "file is empty; expected a header line")
        names = list(header_fields)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise format_error(
                path, None, f"the header names column(s) {dup} more than once", dup[0]
            )
        want, what = len(names), "the header's"
    else:
        if not counts:
            raise format_error(path, None, "file is empty; expected lines of fields")
        width = counts[0]
        if fmt.names is not None:
            if len(fmt.names) != width:
                raise format_error(
                    path,
                    None,
                    f"{len(fmt.names)} column names {list(fmt.names)} given, but line "
                    f"{starts[0]} has {width} {fmt.sep!r}-separated fields",
                )
            names = list(fmt.names)
        else:
            names = [str(i) for i in range(width)]
        want, what = width, "line " + str(starts[0]) + "'s"
    count_array = np.asarray(counts, dtype=np.int64)
    wrong = np.flatnonzero(count_array != want)
    if len(wrong):
        i = int(wrong[0])
        raise format_error(
            path,
            starts[i],
            f"expected {want} {label}-separated fields ({what} count), found {counts[i]}"
            + (" (a surplus field is never dropped)" if counts[i] > want else ""),
        )
    return _TextScan(text, names, np.asarray(starts, dtype=np.int64), stray)


class TableReader:
    """One table file: its columns, the chosen ones read, and the line/row of each record."""

    def __init__(self, path: Path, fmt: TableFormat, keep: set[str] | None = None) -> None:
        self.path = path
        self.fmt = fmt
        self.keep = keep
        self._json: tuple[dict[str, list[Any]], list[str], list[int]] | None = None
        self._text: _TextScan | None = None
        self.lines = np.zeros(0, dtype=np.int64)

    @property
    def unit(self) -> str:
        """How records are counted in errors: ``row`` for Parquet, else ``line``."""
        return "row" if self.fmt.kind == "parquet" else "line"

    def _parsed(self) -> tuple[dict[str, list[Any]], list[str], list[int]]:
        if self._json is None:
            self._json = _json_lines(self.path, self.keep)
        return self._json

    def _scanned(self) -> _TextScan:
        if self._text is None:
            self._text = _scan_text(self.path, self.fmt)
        return self._text

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
                names = [str(c) for c in pq.read_schema(path).names]
            except Exception as err:  # pyarrow raises ArrowInvalid & co for non-Parquet files
                raise DataFormatError(
                    f"{path}: not a readable Parquet file ({err})", path=path
                ) from err
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise format_error(path, None, f"column(s) {dup} appear more than once", dup[0])
            return names
        return self._scanned().names

    def read(self, columns: list[str], id_cols: list[str], text_cols: list[str]) -> pd.DataFrame:
        """``columns`` of every record; ids as stripped strings (missing ones None).

        Args:
            columns: Columns to read.
            id_cols: Id columns: text (integral numbers written as integers), no NA parsing.
            text_cols: Other columns kept as text for the caller's own parsing.

        After the call :attr:`lines` holds the line (row) of each record.
        """
        path, fmt = self.path, self.fmt
        if fmt.kind == "jsonl":
            values, _, lines = self._parsed()
            self.lines = np.asarray(lines, dtype=np.int64)
            frame = pd.DataFrame({c: pd.Series(values[c], dtype=object) for c in columns})
        elif fmt.kind == "parquet":
            try:
                frame = pd.read_parquet(path, columns=columns)
            except Exception as err:  # pyarrow: ArrowInvalid, OSError, ... for broken files
                raise DataFormatError(
                    f"{path}: not a readable Parquet file ({err})", path=path
                ) from err
            self.lines = np.arange(1, len(frame) + 1, dtype=np.int64)
        else:
            return self._read_text(columns, id_cols, text_cols)
        for c in id_cols:
            frame[c] = pd.Series(
                [
                    id_text(v, path, int(n), c, self.unit)
                    for v, n in zip(frame[c], self.lines, strict=True)
                ],
                dtype=object,
                index=frame.index,
            )
        for c in columns:
            if c not in id_cols and frame[c].dtype == object:
                frame[c] = frame[c].infer_objects()
        return frame

    def _read_text(
        self, columns: list[str], id_cols: list[str], text_cols: list[str]
    ) -> pd.DataFrame:
        path, fmt = self.path, self.fmt
        scan = self._scanned()
        warn_stray_bytes(path, scan.stray_lines, stacklevel=5)
        sep = fmt.sep if len(fmt.sep) == 1 else re.escape(fmt.sep)
        try:
            frame = pd.read_csv(
                io.StringIO(scan.text),
                sep=sep,
                header=0 if fmt.header else None,
                names=scan.names,
                usecols=columns,
                dtype={c: str for c in [*id_cols, *text_cols]},
                keep_default_na=False,
                na_values={c: [""] if c in id_cols else _NA_TEXT for c in columns},
                engine="c" if len(fmt.sep) == 1 else "python",
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
            raise DataFormatError(
                f"{path}: not a valid {fmt.sep!r}-separated table ({err})", path=path
            ) from err
        if len(frame) != len(scan.lines):
            raise format_error(
                path,
                None,
                f"read {len(frame)} rows but counted {len(scan.lines)} records (a stray quote or "
                "carriage return?)",
            )
        self.lines = scan.lines
        for c in id_cols:
            frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
            frame[c] = frame[c].map(lambda v: v.strip() or None if isinstance(v, str) else v)
        return frame

    def where(self, row: int) -> int:
        """Line (row) number of record ``row`` (0-based), as errors name it."""
        return int(self.lines[row])


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
    non-default name, or a position) must exist. Timestamps are either all numbers (epoch
    seconds, within int64; fractional seconds are floored with a warning) or all ISO dates, never
    a mix. Ratings must be finite and at least ``min_rating``; an empty rating (or ``NA``,
    ``null``...) is missing. Ids are text compared as written (integral JSON/Parquet numbers
    written as integers: ``1.0`` -> ``"1"``). Every text record must have exactly the header's
    number of fields. Bytes that are not UTF-8 in a text file are read as latin-1 characters
    (with a warning); a JSON-lines file must be UTF-8. Errors name the file, the line (``row N``
    for Parquet) and the column.

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
        min_rating: Smallest valid rating; a smaller one is an error naming its line. ``None``
            accepts any finite rating (e.g. Jester's -10..10). Ratings are always finite.
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
        min_rating: float | None = 0.0,
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
        if min_rating is not None and not np.isfinite(min_rating):
            raise ValueError(f"min_rating must be a finite number or None, got {min_rating}")
        self.min_rating = min_rating
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
        reader = TableReader(
            path, self.interactions_format, {c for c in wanted if isinstance(c, str)}
        )
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
        rating, timestamp = cols.get("rating_col"), cols.get("timestamp_col")
        numbers = [c for c in (rating, timestamp) if c is not None and c not in (user, item)]
        frame = reader.read(list(dict.fromkeys(cols.values())), [user, item], numbers)
        unit = reader.unit
        for arg in ("user_col", "item_col"):
            empty = frame[cols[arg]].isna().to_numpy(dtype=bool)
            if empty.any():
                line = reader.where(int(np.flatnonzero(empty)[0]))
                raise format_error(path, line, f"empty {arg} {cols[arg]!r}", cols[arg], unit)
        table = pd.DataFrame({"user": frame[user], "item": frame[item]})
        if rating is not None:
            table["rating"] = to_floats(
                frame[rating],
                reader.lines,
                path,
                repr(rating),
                allow_empty=True,
                low=self.min_rating,
                unit=unit,
            )
        if timestamp is not None:
            seconds, floored = to_timestamps(
                frame[timestamp], reader.lines, path, repr(timestamp), unit
            )
            if floored:
                warnings.warn(
                    f"{path}: {floored} {timestamp!r} value(s) had fractional seconds; floored "
                    "to whole seconds (equal seconds keep the file order)",
                    stacklevel=2,
                )
            table["timestamp"] = seconds
        return validate_interactions(table, str(path))

    def load_users(self) -> pd.DataFrame:
        if self.users_path is None or self.users_format is None:
            return pd.DataFrame(index=pd.Index([], dtype=object, name="user"))
        path = self.users_path
        reader = TableReader(path, self.users_format)
        available = reader.columns()
        needed: dict[str, Column] = {"users_id_col": self.users_id_col}
        id_col = _resolve(path, available, needed, self.users_format)["users_id_col"]
        frame = reader.read(available, [id_col], [])
        ids = frame[id_col]
        empty = ids.isna().to_numpy(dtype=bool)
        if empty.any():
            line = reader.where(int(np.flatnonzero(empty)[0]))
            raise format_error(path, line, f"empty users_id_col {id_col!r}", id_col, reader.unit)
        dup = ids.duplicated().to_numpy(dtype=bool)
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            raise format_error(
                path,
                reader.where(i),
                f"user {ids.iloc[i]!r} is listed again (first at {reader.unit} "
                f"{reader.where(int(np.flatnonzero((ids == ids.iloc[i]).to_numpy())[0]))})",
                id_col,
                reader.unit,
            )
        users = frame.drop(columns=[id_col])
        users.index = pd.Index(ids.astype(str).to_numpy(dtype=object), name="user")
        return validate_users(users, str(path))
