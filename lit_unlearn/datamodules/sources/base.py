"""The data-source interface: one dataset's official file layout, parsed into the raw tables.

A source reads user profiles and interactions through *separate* methods, so the data-free mode
can load attributes without ever opening an interaction file.

Besides :class:`DataSource` this module holds the strict text-table reader the sources share
(:func:`iter_delimited` / :func:`read_delimited`): it checks every line's field count before
pandas parses anything, so a malformed file fails with its path, the line number and what was
expected, and it reads multi-gigabyte files in blocks with exact line numbers.
"""

from __future__ import annotations

import csv
import io
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
    """

    lines: int = 0
    merged: int = 0
    skipped: int = 0
    first_skipped: tuple[int, str] | None = None


def _sep_label(sep: str) -> str:
    return {"\t": "tab", ",": "comma", "|": "'|'", ";": "';'"}.get(sep, repr(sep))


def _preview(text: str, width: int = 120) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")


def format_error(origin: str | Path, line: int | None, message: str) -> DataFormatError:
    """A :class:`DataFormatError` quoting file and line: ``path: line N: message``."""
    where = f"{origin}: line {line}: " if line is not None else f"{origin}: "
    return DataFormatError(where + message)


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
        encoding: Text encoding of values; undecodable bytes raise, or are replaced when
            ``skip_short`` (tolerant mode) is on.
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
        errors="replace" if skip_short else "strict",
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


def to_integers(values: pd.Series, lines: np.ndarray, origin: str | Path, what: str) -> np.ndarray:
    """Parse decimal integers (int64); the first bad value fails with its line.

    Raises:
        DataFormatError: ``origin: line N: <what> must be an integer, got '...'``.
    """
    text = values.astype(str).str.strip()
    good = text.str.fullmatch(r"[+-]?\d+").fillna(False).to_numpy(dtype=bool)
    if not good.all():
        i = int(np.flatnonzero(~good)[0])
        raise format_error(
            origin, int(lines[i]), f"{what} must be an integer, got {values.iloc[i]!r}"
        )
    return text.astype("int64").to_numpy()


def to_floats(
    values: pd.Series,
    lines: np.ndarray,
    origin: str | Path,
    what: str,
    allow_empty: bool = False,
) -> np.ndarray:
    """Parse numbers (float64); ``""`` becomes NaN if ``allow_empty``, else fails with its line.

    Raises:
        DataFormatError: ``origin: line N: <what> must be a number, got '...'``.
    """
    text = values.astype(str).str.strip()
    out = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(out)
    if allow_empty:
        bad &= (text != "").to_numpy(dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise format_error(
            origin, int(lines[i]), f"{what} must be a number, got {values.iloc[i]!r}"
        )
    return out


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
