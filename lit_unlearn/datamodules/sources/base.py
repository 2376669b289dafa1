"""The data-source interface: one dataset's official file layout, parsed into the raw tables.

A source reads user profiles and interactions through *separate* methods, so the data-free mode
can load attributes without ever opening an interaction file.

Besides :class:`DataSource` this module holds the strict text-table reader the sources share
(:func:`iter_delimited` / :func:`read_delimited`): it checks every line's field count before
pandas parses anything, so a malformed file fails with its path, the line number and what was
expected, and it reads multi-gigabyte files in blocks with exact line numbers. It also holds the
value parsers every reader uses (:func:`to_integers`, :func:`to_floats`, :func:`to_timestamps`,
:func:`decode_text`), so a number, a time or a byte means the same thing in every format.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.download import ArchiveSpec, DownloadError, download_archive
from lit_unlearn.datamodules.paths import PathKind, ResolvedPath, resolve_path
from lit_unlearn.datamodules.schema import DataFormatError


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are absent and could not be downloaded."""


class DataSource(ABC):
    """One dataset in its official layout.

    Subclasses with an official archive set :attr:`archive`; :meth:`prepare` then downloads,
    verifies and extracts it into ``root`` when files are missing. Sources without one set
    :attr:`homepage` so the error says where to get the files.

    A relative ``root`` (and the file paths of sources that take them) is looked up with
    :func:`~lit_unlearn.datamodules.paths.resolve_path`: relative to the working directory, then
    ``$LIT_UNLEARN_DATA``, then the repository root, so configs written from the repository root
    work from anywhere; errors about missing files name every location tried.

    Args:
        root: Directory that holds the dataset's folder (e.g. ``../shared/datasets`` holding
            ``ml-100k/``). Sources that take explicit file paths ignore it.
    """

    #: Short name used in configs, logs and error messages.
    name: str = "source"
    #: Official archive that :meth:`prepare` may download; ``None``: files are placed by hand.
    archive: ClassVar[ArchiveSpec | None] = None
    #: Where to get the files by hand (quoted in errors of sources without :attr:`archive`).
    homepage: ClassVar[str | None] = None

    def __init__(self, root: str | Path = "data") -> None:
        self._lookups: list[ResolvedPath] = []
        self.root = self.resolve(root, "root")

    def resolve(self, path: str | Path, kind: PathKind = "file") -> Path:
        """Where a configured relative path lives (see the class docstring); remembered so
        :meth:`missing_message` can list the locations tried."""
        found = resolve_path(path, kind)
        self._lookups.append(found)
        return found.path

    @abstractmethod
    def user_files(self) -> list[Path]:
        """Files :meth:`load_users` reads."""

    @abstractmethod
    def interaction_files(self) -> list[Path]:
        """Files :meth:`load_interactions` reads."""

    @abstractmethod
    def load_users(self) -> pd.DataFrame:
        """Users table (see :mod:`lit_unlearn.datamodules.schema`). Reads only user files."""

    @abstractmethod
    def load_interactions(self) -> pd.DataFrame:
        """Interactions table (see :mod:`lit_unlearn.datamodules.schema`)."""

    def missing_files(self, need_interactions: bool = True) -> list[Path]:
        """Needed files that do not exist (user files, plus interaction files if needed)."""
        files = self.user_files() + (self.interaction_files() if need_interactions else [])
        seen: set[Path] = set()
        missing = []
        for p in files:
            if p not in seen and not p.exists():
                missing.append(p)
            seen.add(p)
        return missing

    def prepare(self, download: bool = True, need_interactions: bool = True) -> None:
        """Make sure the files exist; download and verify the official archive if allowed.

        Args:
            download: Try the official archive when files are missing.
            need_interactions: False in data-free mode: only user files must exist.

        Raises:
            DataNotFoundError: Files missing and not downloadable; the message says where to put
                them.
        """
        missing = self.missing_files(need_interactions)
        if not missing:
            return
        if not download or self.archive is None:
            reason = "download disabled" if self.archive is not None else None
            raise DataNotFoundError(self.missing_message(missing, reason))
        try:
            download_archive(self.archive, self.root)
        except DownloadError as err:
            raise DataNotFoundError(
                self.missing_message(missing, f"download failed: {err}")
            ) from err
        missing = self.missing_files(need_interactions)
        if missing:
            raise DataNotFoundError(
                self.missing_message(
                    missing, f"{self.archive.filename} was extracted but does not contain them"
                )
            )

    def missing_message(self, missing: list[Path], reason: str | None = None) -> str:
        """Error text naming each missing file and how to obtain it."""
        lines = [f"{self.name}: missing file(s):", *(f"  {p}" for p in missing)]
        if self.archive is not None:
            lines.append(
                f"Download {self.archive.url} and extract it into {self.root} (it holds the "
                f"folder these files live in), or put {self.archive.filename} into {self.root} "
                "and run again with download enabled."
            )
        elif self.homepage is not None:
            lines.append(f"Get the files from {self.homepage} and put them at the paths above.")
        else:
            lines.append("This source cannot be downloaded: put the files at the paths above.")
        for lookup in getattr(self, "_lookups", []):
            if not lookup.found and any(
                p == lookup.path or lookup.path in p.parents for p in missing
            ):
                lines.append(lookup.describe())
        if reason:
            lines.append(f"({reason})")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Strict delimited-text reading shared by the sources
# ---------------------------------------------------------------------------------------------


@dataclass
class ReadStats:
    """What :func:`iter_delimited` did with lines that did not have the expected shape.

    Attributes:
        lines: Data lines seen (blank lines and skipped header lines excluded).
        merged: Lines with extra separators whose surplus fields were merged into one field.
        skipped: Lines dropped because they had too few fields (``skip_short``).
        first_skipped: ``(line number, text)`` of the first dropped line.
        latin1_lines: Lines that were not valid UTF-8, their stray bytes read as latin-1
            (see :func:`decode_text`).
        first_latin1: Line number of the first such line.
    """

    lines: int = 0
    merged: int = 0
    skipped: int = 0
    first_skipped: tuple[int, str] | None = None
    latin1_lines: int = 0
    first_latin1: int | None = None


def _sep_label(sep: str) -> str:
    return {"\t": "tab", ",": "comma", "|": "'|'", ";": "';'"}.get(sep, repr(sep))


def _preview(text: str, width: int = 120) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")


def format_error(
    origin: str | Path,
    line: int | None,
    message: str,
    field: str | None = None,
    unit: str = "line",
) -> DataFormatError:
    """A :class:`DataFormatError` quoting file and line: ``path: line N: message``.

    Args:
        origin: The file.
        line: 1-based line (or row) number, None when the problem is not on one line.
        message: What is wrong; it names the field.
        field: The field, kept on the error as an attribute.
        unit: ``"line"``, or ``"row"`` for formats without lines (Parquet).
    """
    where = f"{origin}: {unit} {line}: " if line is not None else f"{origin}: "
    return DataFormatError(where + message, path=origin, line=line, field=field)


# ---------------------------------------------------------------------------------------------
# Text decoding: UTF-8, stray bytes kept distinct
# ---------------------------------------------------------------------------------------------

#: Codec error handler that reads each byte a UTF-8 decoder rejects as the latin-1 character of
#: the same value (``0xE9`` -> ``é``), so distinct bytes stay distinct strings; ``"replace"``
#: would turn every one into U+FFFD and merge e.g. two artists that differ in one accented
#: letter.
LATIN1_FALLBACK = "lit_unlearn_latin1_fallback"


def _latin1_fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    positions: list[int] | None = getattr(_recording, "positions", None)
    if positions is not None:
        positions.append(err.start)
    return bytes(err.object[err.start : err.end]).decode("latin-1"), err.end


#: Where :func:`stray_byte_lines` collects the offsets of stray bytes (per thread).
_recording = threading.local()
codecs.register_error(LATIN1_FALLBACK, _latin1_fallback)


def stray_byte_lines(data: bytes, encoding: str = "utf-8") -> np.ndarray:
    """1-based numbers of the distinct lines of ``data`` holding bytes that are not ``encoding``.

    Empty for clean text; the clean case costs one strict decode.
    """
    try:
        data.decode(encoding)
        return np.zeros(0, dtype=np.int64)
    except UnicodeDecodeError:
        pass
    positions: list[int] = []
    _recording.positions = positions
    try:
        data.decode(encoding, errors=LATIN1_FALLBACK)
    finally:
        _recording.positions = None
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    lines = np.searchsorted(newlines, np.asarray(positions, dtype=np.int64), side="left") + 1
    return np.unique(lines).astype(np.int64)


def decode_text(data: bytes) -> tuple[str, np.ndarray]:
    """Decode UTF-8 text; bytes that are not UTF-8 are read as latin-1 characters.

    Returns:
        ``(text, lines)``: the text and the 1-based numbers of the lines that held bytes that
        are not UTF-8 (empty for clean UTF-8), for the caller to count and report.
    """
    lines = stray_byte_lines(data)
    return data.decode("utf-8", errors=LATIN1_FALLBACK), lines


def warn_stray_bytes(origin: str | Path, lines: np.ndarray, stacklevel: int = 3) -> None:
    """Report lines read with the latin-1 fallback (no-op when there are none)."""
    if len(lines):
        warnings.warn(
            f"{origin}: {len(lines)} line(s) are not valid UTF-8 (first: line {int(lines[0])}); "
            "read their stray bytes as latin-1 characters, so distinct bytes stay distinct",
            stacklevel=stacklevel,
        )


def iter_delimited(
    path: Path,
    *,
    n_fields: int,
    columns: Mapping[int, str],
    sep: str = "\t",
    encoding: str = "utf-8",
    skip_lines: int = 0,
    min_fields: int | None = None,
    merge_field: int | None = None,
    skip_short: bool = False,
    stats: ReadStats | None = None,
    data: bytes | None = None,
    sep_label: str | None = None,
    block_size: int = 64 << 20,
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Read a headerless single-byte-separated text table in blocks, checking every line.

    Blank lines are ignored. No quoting is interpreted (``csv.QUOTE_NONE``): quote characters are
    data, as in the MovieLens and Last.FM dumps. Values come back as strings; the caller converts
    them and can report the exact line of a bad value with the returned line numbers.

    Args:
        path: The file (quoted in errors; read unless ``data`` is given).
        n_fields: Fields a line must have.
        columns: ``field position -> column name`` of the fields to return.
        sep: One-character separator.
        encoding: Text encoding of values; bytes that are not valid in it are read as latin-1
            characters (see :func:`decode_text`) and the lines holding them counted in
            ``stats``.
        skip_lines: Leading lines to skip (headers).
        min_fields: Lines with ``min_fields <= fields < n_fields`` are accepted, missing trailing
            fields read as ``""``. Default ``n_fields``.
        merge_field: Lines with more than ``n_fields`` fields are accepted and the surplus is
            joined (with ``sep``) into this field, e.g. a free-text name holding a stray
            separator. ``None``: such lines are errors.
        skip_short: Drop lines of a wrong shape (counted in ``stats``) instead of raising.
        stats: Filled with counts of merged/skipped lines.
        data: The file's bytes, already read (e.g. with a multi-character separator replaced).
        sep_label: How to name the separator in errors (default derived from ``sep``).
        block_size: Bytes per block; each block is parsed at once.

    Yields:
        ``(frame, lines)``: string columns named by ``columns`` and the 1-based line number of
        each row.

    Raises:
        DataFormatError: A line has the wrong number of fields (naming file, line, expected and
            found counts and the line's text), or undecodable text.
    """
    if len(sep) != 1:
        raise ValueError(f"sep must be one character, got {sep!r}")
    label = sep_label or _sep_label(sep)
    min_fields = n_fields if min_fields is None else min_fields
    stats = stats if stats is not None else ReadStats()
    sep_byte = sep.encode(encoding)
    if len(sep_byte) != 1:
        raise ValueError(f"sep {sep!r} is not one byte in {encoding}")
    layout = _Layout(
        path=path,
        names=[f"f{i}" for i in range(n_fields)],
        use=sorted(columns),
        columns=dict(columns),
        sep=sep,
        label=label,
        encoding=encoding,
        errors=LATIN1_FALLBACK,
        skip_lines=skip_lines,
        n_fields=n_fields,
        min_fields=min_fields,
        merge_field=merge_field,
        skip_short=skip_short,
    )
    stream = io.BytesIO(data) if data is not None else path.open("rb")
    line_offset = 0  # physical lines in previous blocks
    carry = b""
    try:
        while True:
            chunk = stream.read(block_size)
            block = carry + chunk
            if not chunk:
                carry = b""
            else:
                cut = block.rfind(b"\n")
                if cut < 0:
                    carry = block
                    continue
                block, carry = block[: cut + 1], block[cut + 1 :]
            if block:
                yield from _parse_block(layout, block, line_offset, stats)
                line_offset += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            if not chunk:
                break
    finally:
        stream.close()


@dataclass(frozen=True)
class _Layout:
    """What :func:`_parse_block` needs to know about the file (see :func:`iter_delimited`)."""

    path: Path
    names: list[str]
    use: list[int]
    columns: dict[int, str]
    sep: str
    label: str
    encoding: str
    errors: str
    skip_lines: int
    n_fields: int
    min_fields: int
    merge_field: int | None
    skip_short: bool


def _parse_block(
    layout: _Layout, block: bytes, line_offset: int, stats: ReadStats
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    path, names, use, columns = layout.path, layout.names, layout.use, layout.columns
    sep, encoding, errors = layout.sep, layout.encoding, layout.errors
    n_fields, min_fields, merge_field = layout.n_fields, layout.min_fields, layout.merge_field
    buf = np.frombuffer(block, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))
    if block.endswith(b"\n"):  # no line after the final newline
        starts, ends = starts[:-1], ends[:-1]
    n_lines = len(starts)
    has_cr = np.zeros(n_lines, dtype=bool)
    nonzero = ends > starts
    has_cr[nonzero] = buf[ends[nonzero] - 1] == 13
    content_end = ends - has_cr
    seps = np.flatnonzero(buf == sep.encode(encoding)[0])
    fields = np.bincount(np.searchsorted(starts, seps, side="right") - 1, minlength=n_lines) + 1
    data_line = content_end > starts
    first_data = max(0, layout.skip_lines - line_offset)
    data_line[:first_data] = False
    stats.lines += int(data_line.sum())
    stray = stray_byte_lines(block, encoding)
    if len(stray):
        stats.latin1_lines += len(stray)
        if stats.first_latin1 is None:
            stats.first_latin1 = int(stray[0]) + line_offset

    def text_of(i: int) -> str:
        return block[starts[i] : content_end[i]].decode(encoding, errors="replace")

    ok = data_line & (fields >= min_fields) & (fields <= n_fields)
    extra = data_line & (fields > n_fields) & (merge_field is not None)
    bad = data_line & ~ok & ~extra
    if bad.any():
        bad_idx = np.flatnonzero(bad)
        if not layout.skip_short:
            i = int(bad_idx[0])
            want = f"{n_fields}" if min_fields == n_fields else f"{min_fields} to {n_fields}"
            raise format_error(
                path,
                line_offset + i + 1,
                f"expected {want} {layout.label}-separated fields, found {int(fields[i])}: "
                f"{_preview(text_of(i))}",
            )
        if stats.first_skipped is None:
            i = int(bad_idx[0])
            stats.first_skipped = (line_offset + i + 1, text_of(i))
        stats.skipped += len(bad_idx)

    frames: list[pd.DataFrame] = []
    line_parts: list[np.ndarray] = []
    if ok.any():
        if ok.all() and not has_cr.any():
            payload = block  # the common case: every line is a clean data line
        else:
            # Keep only accepted lines' bytes (without '\r'), so pandas sees a clean table.
            total = np.diff(np.concatenate((starts, [len(buf)])))
            mask = np.repeat(ok, total)
            mask[(content_end[ok & has_cr])] = False
            payload = buf[mask].tobytes()
        try:
            frame = pd.read_csv(
                io.BytesIO(payload),
                sep=sep,
                header=None,
                names=names,
                usecols=[names[i] for i in use],
                dtype=str,
                na_filter=False,
                quoting=csv.QUOTE_NONE,
                lineterminator="\n",
                skip_blank_lines=False,
                encoding=encoding,
                encoding_errors=errors,
                engine="c",
            )
        except UnicodeDecodeError as err:
            raise format_error(path, None, f"not valid {encoding} text ({err})") from err
        except (pd.errors.ParserError, ValueError) as err:
            raise format_error(path, None, f"could not parse: {err}") from err
        ok_lines = line_offset + np.flatnonzero(ok) + 1
        if len(frame) != len(ok_lines):
            raise format_error(
                path,
                int(ok_lines[0]),
                f"parsed {len(frame)} rows from {len(ok_lines)} lines in a block starting here",
            )
        frame.columns = [columns[i] for i in use]
        frames.append(frame)
        line_parts.append(ok_lines)
    if extra.any():
        assert merge_field is not None
        rows = []
        for j in np.flatnonzero(extra).tolist():
            parts = block[starts[j] : content_end[j]].decode(encoding, errors=errors).split(sep)
            surplus = len(parts) - n_fields
            merged = sep.join(parts[merge_field : merge_field + surplus + 1])
            parts = [*parts[:merge_field], merged, *parts[merge_field + surplus + 1 :]]
            rows.append([parts[k] for k in use])
        stats.merged += len(rows)
        frames.append(pd.DataFrame(rows, columns=[columns[i] for i in use], dtype=str))
        line_parts.append(line_offset + np.flatnonzero(extra) + 1)
    if not frames:
        return
    if len(frames) == 1:
        yield frames[0], line_parts[0]
        return
    frame = pd.concat(frames, ignore_index=True)
    lines = np.concatenate(line_parts)
    order = np.argsort(lines, kind="stable")
    yield frame.iloc[order].reset_index(drop=True), lines[order]


def read_delimited(
    path: Path,
    *,
    n_fields: int,
    columns: Mapping[int, str],
    expected: str,
    **kwargs: object,
) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`iter_delimited` gathered into one table; an empty file is an error.

    Args:
        path: The file.
        n_fields: Fields per line.
        columns: ``field position -> column name``.
        expected: Layout description for the empty-file error (e.g. ``"user|age|gender|..."``).
        **kwargs: Passed to :func:`iter_delimited`.

    Returns:
        ``(frame, lines)``: string columns and 1-based line numbers.

    Raises:
        DataFormatError: Malformed line, or no data lines at all.
    """
    parts = list(iter_delimited(path, n_fields=n_fields, columns=columns, **kwargs))  # type: ignore[arg-type]
    if not parts:
        raise format_error(path, None, f"file is empty; expected lines of {expected}")
    if len(parts) == 1:
        return parts[0]
    frame = pd.concat([p[0] for p in parts], ignore_index=True)
    return frame, np.concatenate([p[1] for p in parts])


_INT64_MAX = np.iinfo(np.int64).max
_INTEGER = re.compile(r"[+-]?\d+")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ].*)?")


def _locate(lines: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """Index and line number of the first ``True`` of ``mask``."""
    i = int(np.flatnonzero(mask)[0])
    return i, int(lines[i])


def _bounds_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    return f">= {low:g}" if low is not None else f"<= {high:g}"


def to_integers(
    values: pd.Series,
    lines: np.ndarray,
    origin: str | Path,
    what: str,
    low: int | None = None,
    high: int | None = None,
    unit: str = "line",
) -> np.ndarray:
    """Parse decimal integers (int64); the first bad value fails with its line.

    Args:
        values: Text values.
        lines: 1-based line of each value.
        origin: The file.
        what: The field, named in errors.
        low: Smallest valid value (inclusive), None for no bound.
        high: Largest valid value (inclusive), None for no bound.
        unit: How ``lines`` are named in errors (``line`` or ``row``).

    Raises:
        DataFormatError: ``origin: line N: <what> must be an integer, got '...'``; also for a
            value outside int64 (``astype`` would raise OverflowError) or outside the bounds.
    """
    text = values.astype(str).str.strip()
    good = text.str.fullmatch(_INTEGER.pattern).fillna(False).to_numpy(dtype=bool)
    if not good.all():
        i, line = _locate(lines, ~good)
        raise format_error(
            origin, line, f"{what} must be an integer, got {values.iloc[i]!r}", what, unit
        )
    # Up to 18 digits always fits int64; longer ones are checked exactly (rare: ids, ns times).
    digits = text.str.lstrip("+-").str.lstrip("0").str.len().to_numpy()
    long = np.flatnonzero(digits > 18)
    for i in long.tolist():
        if abs(int(text.iloc[i])) > _INT64_MAX:
            raise format_error(
                origin,
                int(lines[i]),
                f"{what} {values.iloc[i]!r} is out of range (at most 19 digits, |value| < 2**63)",
                what,
                unit,
            )
    out = text.astype("int64").to_numpy()
    _check_bounds(out, lines, origin, what, low, high, unit, values)
    return out


def _check_bounds(
    out: np.ndarray,
    lines: np.ndarray,
    origin: str | Path,
    what: str,
    low: float | None,
    high: float | None,
    unit: str,
    values: pd.Series,
) -> None:
    if low is None and high is None:
        return
    bad = np.zeros(len(out), dtype=bool)
    with np.errstate(invalid="ignore"):
        if low is not None:
            bad |= out < low
        if high is not None:
            bad |= out > high
    if bad.any():
        i, line = _locate(lines, bad)
        raise format_error(
            origin,
            line,
            f"{what} must be {_bounds_text(low, high)}, got {values.iloc[i]!r}",
            what,
            unit,
        )


def to_floats(
    values: pd.Series,
    lines: np.ndarray,
    origin: str | Path,
    what: str,
    allow_empty: bool = False,
    low: float | None = None,
    high: float | None = None,
    unit: str = "line",
) -> np.ndarray:
    """Parse finite numbers (float64); ``""`` becomes NaN if ``allow_empty``, else fails.

    ``inf``, ``nan`` and numbers too large for a float are errors: no rating, play count or
    age is infinite, and a NaN written out is not the same as a missing value.

    Args:
        values: Text values (or numbers: Parquet and JSON columns).
        lines: 1-based line of each value.
        origin: The file.
        what: The field, named in errors.
        allow_empty: Empty (or missing) values become NaN instead of failing.
        low: Smallest valid value (inclusive), None for no bound.
        high: Largest valid value (inclusive), None for no bound.
        unit: How ``lines`` are named in errors (``line`` or ``row``).

    Raises:
        DataFormatError: ``origin: line N: <what> must be a finite number, got '...'``, or a
            value outside the bounds.
    """
    text = numbers_as_text(values, lines, origin, what, unit)
    empty = text.isna().to_numpy(dtype=bool) | (text == "").to_numpy(dtype=bool)
    out = pd.to_numeric(text.where(~empty, None), errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan
    )
    bad = ~np.isfinite(out)
    if allow_empty:
        bad &= ~empty
    if bad.any():
        i, line = _locate(lines, bad)
        got = "an empty value" if empty[i] else repr(values.iloc[i])
        written_nan = str(text.iloc[i]).lower().lstrip("+-") == "nan"
        kind = "a finite number" if np.isinf(out[i]) or written_nan else "a number"
        raise format_error(origin, line, f"{what} must be {kind}, got {got}", what, unit)
    _check_bounds(out, lines, origin, what, low, high, unit, values)
    return out


def numbers_as_text(
    values: pd.Series, lines: np.ndarray, origin: str | Path, what: str, unit: str = "line"
) -> pd.Series:
    """Values of a numeric field as stripped text (None where missing).

    Numbers stay exact (an int is written in full, not through a float); values that cannot be
    a number at all (booleans, lists, objects from JSON or Parquet) fail here with their line.

    Raises:
        DataFormatError: A boolean or a non-scalar value.
    """
    missing = values.isna().to_numpy(dtype=bool)
    if pd.api.types.is_bool_dtype(values):
        bad = ~missing
    elif pd.api.types.is_numeric_dtype(values):
        numeric = values.astype("float64") if pd.api.types.is_float_dtype(values) else values
        out = numeric.astype(str).str.strip().astype(object)
        return out.where(~missing, None)
    elif pd.api.types.is_string_dtype(values):
        bad = np.zeros(len(values), dtype=bool)  # text (all str): nothing to check per value
    else:
        bad = ~missing & np.fromiter(
            (
                isinstance(v, bool | np.bool_)
                or not (v is None or isinstance(v, str | int | float | np.integer | np.floating))
                for v in values
            ),
            dtype=bool,
            count=len(values),
        )
    if bad.any():
        i, line = _locate(lines, bad)
        raise format_error(
            origin,
            line,
            f"{what} must be a number, got {type(values.iloc[i]).__name__} {values.iloc[i]!r}",
            what,
            unit,
        )
    text = values.astype(object).where(~missing, "").astype(str).str.strip().astype(object)
    return text.where(~missing, None)


def to_timestamps(
    values: pd.Series,
    lines: np.ndarray,
    origin: str | Path,
    what: str = "timestamp",
    unit: str = "line",
) -> tuple[np.ndarray, int]:
    """Epoch seconds (int64) from epoch numbers *or* ISO-8601 dates, never a mix of both.

    * A column of numbers is epoch seconds; it must be finite and within int64. Fractional
      seconds are floored (counted in the return value; equal seconds keep the file order).
    * A column of text dates must be ISO-8601 with at least ``YYYY-MM-DD`` and parse; a value
      without a timezone is UTC.
    * A column mixing the two kinds fails: ``1000`` among dates would otherwise be read as the
      year 1000, and ``1500000000`` as a date is out of range.
    * Datetime columns (Parquet) are converted directly.

    Args:
        values: The field's values (text, numbers or datetimes).
        lines: 1-based line (row) of each value.
        origin: The file.
        what: The field, named in errors.
        unit: How ``lines`` are named in errors (``line`` or ``row``).

    Returns:
        ``(seconds, floored)``: int64 epoch seconds and how many values had fractional seconds.

    Raises:
        DataFormatError: A missing, non-finite, out-of-range, unparsable or mixed-kind value,
            naming its line and the field.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
        missing = stamps.isna().to_numpy(dtype=bool)
        if missing.any():
            i, line = _locate(lines, missing)
            raise format_error(origin, line, f"empty {what}", what, unit)
        epoch = pd.Timestamp(0, tz="UTC")
        return ((stamps - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64"), 0
    text = numbers_as_text(values, lines, origin, what, unit)
    missing = text.isna().to_numpy(dtype=bool) | (text == "").to_numpy(dtype=bool)
    if missing.any():
        i, line = _locate(lines, missing)
        raise format_error(origin, line, f"empty {what}", what, unit)
    is_date = text.str.fullmatch(_ISO_DATE.pattern).to_numpy(dtype=bool)
    if is_date.any() and not is_date.all():
        # Name the first value of the minority kind: that is the odd one out.
        odd = ~is_date if is_date.sum() * 2 >= len(is_date) else is_date
        i, line = _locate(lines, odd)
        j = int(np.flatnonzero(~odd)[0])
        raise format_error(
            origin,
            line,
            f"{what} column mixes epoch numbers and ISO dates: got {values.iloc[i]!r} here but "
            f"{values.iloc[j]!r} at {unit} {int(lines[j])}; write every {what} the same way",
            what,
            unit,
        )
    if is_date.all():
        return _iso_seconds(text, values, lines, origin, what, unit), 0
    if text.str.fullmatch(_INTEGER.pattern).all():
        return to_integers(text, lines, origin, what, unit=unit), 0
    seconds = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    # float -> int64 turns NaN, inf and |x| >= 2**63 into INT64_MIN, which would silently move
    # the event to the beginning of time and change the leave-one-out split.
    bad = ~(np.abs(seconds) < 2.0**63)
    if bad.any():
        i, line = _locate(lines, bad)
        nan = np.isnan(seconds[i])
        raise format_error(
            origin,
            line,
            f"{what} must be epoch seconds or an ISO date/time, got {values.iloc[i]!r}"
            + ("" if nan else " (outside int64 seconds)"),
            what,
            unit,
        )
    floored = np.floor(seconds)
    return floored.astype("int64"), int((floored != seconds).sum())


def _iso_seconds(
    text: pd.Series,
    values: pd.Series,
    lines: np.ndarray,
    origin: str | Path,
    what: str,
    unit: str,
) -> np.ndarray:
    try:
        stamps = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        bad = stamps.isna().to_numpy(dtype=bool)
    except (ValueError, OverflowError):  # OutOfBoundsDatetime is a ValueError
        stamps = None
        bad = np.ones(len(text), dtype=bool)
    if bad.any():
        # Find the first value that does not parse on its own (the whole column may have
        # failed because of one out-of-range date).
        for i in np.flatnonzero(bad).tolist():
            try:
                ok = not pd.isna(pd.to_datetime(text.iloc[i], utc=True, format="ISO8601"))
            except (ValueError, OverflowError):
                ok = False
            if not ok:
                raise format_error(
                    origin,
                    int(lines[i]),
                    f"{what} must be epoch seconds or an ISO date/time, got {values.iloc[i]!r}",
                    what,
                    unit,
                )
        raise format_error(  # pragma: no cover - every value parses alone but not together
            origin, None, f"{what}: the ISO dates do not parse together (mixed formats?)", what
        )
    assert stamps is not None
    epoch = pd.Timestamp(0, tz="UTC")
    return ((stamps - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64")


def check_numeric_ids(values: pd.Series, lines: np.ndarray, origin: str | Path, what: str) -> None:
    """Fail on the first id that is not a non-negative decimal integer.

    Raises:
        DataFormatError: ``origin: line N: <what> must be a numeric id, got '...'``.
    """
    good = values.astype(str).str.fullmatch(r"\d+").fillna(False).to_numpy(dtype=bool)
    if not good.all():
        i = int(np.flatnonzero(~good)[0])
        raise format_error(
            origin, int(lines[i]), f"{what} must be a numeric id, got {values.iloc[i]!r}"
        )


def empty_to_nan(values: pd.Series) -> pd.Series:
    """Strings with ``""`` (after stripping) replaced by NaN, as an object Series."""
    out = values.astype(str).str.strip().astype(object)
    return out.where(out != "", np.nan)
