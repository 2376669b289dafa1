"""The two raw tables every data source produces, and their validation.

Every source (MovieLens, Last.FM, ModCloth, generic tables, the synthetic generator) turns its
official files into the same two pandas tables, so preprocessing, splits and attribute encodings
are written once:

* **interactions**: one row per user-item event, columns ``user`` (str), ``item`` (str),
  ``rating`` (float64, finite, NaN where the source has none, e.g. Last.FM play events) and
  ``timestamp`` (int64 seconds; sources without time use the row order so "latest" stays well
  defined).
* **users**: indexed by ``user`` (str, the same raw ids), one column per raw attribute
  (``gender``, ``age``, ``occupation``, ``country``, ``body_shape``, ...). Missing values are
  ``NaN``/``None``; encoders turn them into ``-1`` (unknown) codes.

Raw ids are kept as strings so ids from different files (ints in ``u.data``, hashes in Last.FM)
compare equal after parsing without dtype surprises. They are compared **as written** (after
stripping surrounding whitespace): ``"007"`` and ``"7"`` are different strings, so a table that
holds both spellings is rejected (:func:`ambiguous_ids`) rather than silently treated as two
users; see ``docs/recommendation.md`` ("Data contracts") for every such decision.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

INTERACTION_COLUMNS: tuple[str, ...] = ("user", "item", "rating", "timestamp")

#: Integer-like id spellings (``7``, ``007``, ``+7``, ``7.0``) that :func:`id_key` normalises.
_NUMERIC_ID = re.compile(r"[+-]?\d+(?:\.0*)?")


class DataFormatError(ValueError):
    """A data file exists but does not have the layout its source expects.

    The message always names the file; where known it also names the line (or row) and the
    field, which are kept as attributes for programs that handle the error.

    Args:
        message: The full message (``path: line N: field ...``).
        path: The file the problem is in.
        line: 1-based line (or row, for formats without lines) of the problem.
        field: The field (column) the problem is in.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field


def id_key(text: str) -> str:
    """The spelling-independent key of a raw id: integer-like ids lose sign ``+``, leading
    zeros and a ``.0`` tail (``"007"``, ``"7.0"`` -> ``"7"``); other ids are returned as is.

    Ids are *compared* as written; this key only detects two spellings of one number.
    """
    if _NUMERIC_ID.fullmatch(text):
        return str(int(text.split(".", 1)[0]))
    return text


def ambiguous_ids(ids: pd.Series | pd.Index) -> tuple[str, str] | None:
    """Two distinct ids of ``ids`` that spell the same number (``"007"``/``"7"``), or None."""
    unique = pd.unique(np.asarray(ids, dtype=object))
    numeric = [v for v in unique if _NUMERIC_ID.fullmatch(v)]
    seen: dict[str, str] = {}
    for value in numeric:
        key = id_key(value)
        if key in seen:
            return seen[key], value
        seen[key] = value
    return None


def _clean_ids(values: pd.Series | pd.Index, origin: str, what: str) -> np.ndarray:
    """Ids as stripped strings; missing, empty or ambiguous ids fail.

    Works on the distinct values (``factorize``), so a 20M-row table with 1K users costs one
    hash pass, not 20M ``str.strip`` calls.
    """
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        raise DataFormatError(
            f"{origin}: row {row + 1}: missing {what} id", path=origin, field=what
        )
    text = pd.Index(uniques, dtype=object).astype(str).str.strip()
    empty = np.asarray(text == "", dtype=bool)
    if empty.any():
        row = int(np.flatnonzero(np.isin(codes, np.flatnonzero(empty)))[0])
        raise DataFormatError(f"{origin}: row {row + 1}: empty {what} id", path=origin, field=what)
    clash = ambiguous_ids(text)
    if clash is not None:
        raise DataFormatError(
            f"{origin}: {what} ids {clash[0]!r} and {clash[1]!r} spell the same number; ids are "
            "compared as written, so they would be two different "
            f"{what}s: write every id the same way",
            path=origin,
            field=what,
        )
    return np.asarray(text, dtype=object)[codes]


def validate_interactions(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check and normalise an interactions table.

    Args:
        frame: Table with at least ``user`` and ``item`` columns.
        origin: Where the table came from (file path), quoted in errors.

    Returns:
        A table with exactly :data:`INTERACTION_COLUMNS`, dtypes normalised.

    Raises:
        DataFormatError: Missing columns, empty table, empty or ambiguous ids, non-numeric or
            infinite ratings, non-numeric timestamps or timestamps outside int64.
    """
    missing = {"user", "item"} - set(frame.columns)
    if missing:
        raise DataFormatError(
            f"{origin}: missing column(s) {sorted(missing)}; got {list(frame.columns)}",
            path=origin,
        )
    if len(frame) == 0:
        raise DataFormatError(f"{origin}: no interactions", path=origin)
    out = pd.DataFrame(
        {
            "user": _clean_ids(frame["user"], origin, "user"),
            "item": _clean_ids(frame["item"], origin, "item"),
        }
    )
    if "rating" in frame.columns:
        rating = pd.to_numeric(frame["rating"], errors="coerce")
        # An infinite rating is never a real score; the readers reject it with its line, this
        # is the backstop for tables built in code.
        bad = (rating.isna() & frame["rating"].notna()).to_numpy(dtype=bool) | np.isinf(
            rating.to_numpy(dtype="float64", na_value=np.nan)
        )
        if bad.any():
            row = int(bad.nonzero()[0][0])
            raise DataFormatError(
                f"{origin}: row {row + 1}: rating must be a finite number, got "
                f"{frame['rating'].iloc[row]!r}",
                path=origin,
                field="rating",
            )
        out["rating"] = rating.astype("float64").to_numpy()
    else:
        out["rating"] = float("nan")
    if "timestamp" in frame.columns and frame["timestamp"].notna().all():
        values = frame["timestamp"]
        if pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values):
            out["timestamp"] = values.astype("int64").to_numpy()
        else:
            ts = pd.to_numeric(values, errors="coerce").astype("float64")
            # float -> int64 casts turn values past +-2**63 (and NaN) into INT64_MIN: reject
            # them instead of reordering the split.
            bad = ~(ts.abs() < 2.0**63).to_numpy(dtype=bool)
            if bad.any():
                row = int(bad.nonzero()[0][0])
                raise DataFormatError(
                    f"{origin}: row {row + 1}: timestamp must be a number within int64 "
                    f"seconds, got {values.iloc[row]!r}",
                    path=origin,
                    field="timestamp",
                )
            out["timestamp"] = np.floor(ts.to_numpy()).astype("int64")
    else:
        # No time information: row order is the only order the source gives.
        out["timestamp"] = pd.RangeIndex(len(frame)).to_numpy().astype("int64")
    return out


def validate_users(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check a users table: string index named ``user``, unique, unambiguous ids.

    Raises:
        DataFormatError: Duplicate, empty or ambiguous user ids, or an empty table.
    """
    if len(frame) == 0:
        raise DataFormatError(f"{origin}: no users", path=origin)
    frame = frame.copy()
    frame.index = pd.Index(_clean_ids(frame.index, origin, "user"), name="user")
    dup = frame.index.duplicated()
    if dup.any():
        raise DataFormatError(
            f"{origin}: duplicate user id {frame.index[dup][0]!r}", path=origin, field="user"
        )
    return frame
