"""The two raw tables every data source produces, and their validation.

Every source (MovieLens, Last.FM, ModCloth, generic tables, the synthetic generator) turns its
official files into the same two pandas tables, so preprocessing, splits and attribute encodings
are written once:

* **interactions**: one row per user-item event, columns ``user`` (str), ``item`` (str),
  ``rating`` (float64, NaN where the source has none, e.g. Last.FM play events) and ``timestamp``
  (int64 seconds; sources without time use the row order so "latest" stays well defined).
* **users**: indexed by ``user`` (str, the same raw ids), one column per raw attribute
  (``gender``, ``age``, ``occupation``, ``country``, ``body_shape``, ...). Missing values are
  ``NaN``/``None``; encoders turn them into ``-1`` (unknown) codes.

Raw ids are kept as strings so ids from different files (ints in ``u.data``, hashes in Last.FM)
compare equal after parsing without dtype surprises.
"""

from __future__ import annotations

import pandas as pd

INTERACTION_COLUMNS: tuple[str, ...] = ("user", "item", "rating", "timestamp")


class DataFormatError(ValueError):
    """A data file exists but does not have the layout its source expects."""


def validate_interactions(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check and normalise an interactions table.

    Args:
        frame: Table with at least ``user`` and ``item`` columns.
        origin: Where the table came from (file path), quoted in errors.

    Returns:
        A table with exactly :data:`INTERACTION_COLUMNS`, dtypes normalised.

    Raises:
        DataFormatError: Missing columns, empty table, or non-numeric ratings/timestamps.
    """
    missing = {"user", "item"} - set(frame.columns)
    if missing:
        raise DataFormatError(
            f"{origin}: missing column(s) {sorted(missing)}; got {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise DataFormatError(f"{origin}: no interactions")
    out = pd.DataFrame(
        {
            "user": frame["user"].astype(str).to_numpy(),
            "item": frame["item"].astype(str).to_numpy(),
        }
    )
    if "rating" in frame.columns:
        rating = pd.to_numeric(frame["rating"], errors="coerce")
        bad = rating.isna() & frame["rating"].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataFormatError(
                f"{origin}: non-numeric rating {frame['rating'].iloc[row]!r} at row {row}"
            )
        out["rating"] = rating.astype("float64").to_numpy()
    else:
        out["rating"] = float("nan")
    if "timestamp" in frame.columns and frame["timestamp"].notna().all():
        ts = pd.to_numeric(frame["timestamp"], errors="coerce")
        if ts.isna().any():
            row = int(ts.isna().to_numpy().nonzero()[0][0])
            raise DataFormatError(
                f"{origin}: non-numeric timestamp {frame['timestamp'].iloc[row]!r} at row {row}"
            )
        out["timestamp"] = ts.astype("int64").to_numpy()
    else:
        # No time information: row order is the only order the source gives.
        out["timestamp"] = pd.RangeIndex(len(frame)).to_numpy().astype("int64")
    return out


def validate_users(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check a users table: string index named ``user``, unique ids.

    Raises:
        DataFormatError: Duplicate user ids or an empty table.
    """
    if len(frame) == 0:
        raise DataFormatError(f"{origin}: no users")
    frame = frame.copy()
    frame.index = frame.index.astype(str)
    frame.index.name = "user"
    dup = frame.index.duplicated()
    if dup.any():
        raise DataFormatError(f"{origin}: duplicate user id {frame.index[dup][0]!r}")
    return frame
