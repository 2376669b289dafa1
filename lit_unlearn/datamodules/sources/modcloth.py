"""ModCloth clothing reviews with the user's body shape (Wan et al. 2019, McAuley lab).

Unlike the other sources, ModCloth keeps the user attribute *inside the interaction file*: each
review row carries the reviewer's body shape. There is no separate profile file, so
:meth:`ModCloth.load_users` has to read the interaction file (only the user id and body-shape
fields of each row). This is the one source whose data-free mode touches the interaction file.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.schema import validate_interactions, validate_users
from lit_unlearn.datamodules.sources.base import DataSource, format_error

#: Fields holding the body shape, in order of preference.
BODY_FIELDS: tuple[str, ...] = ("body_shape", "user_attr")
#: Fields holding the rating, in order of preference (``quality`` is the 1-5 score of the
#: earlier ModCloth fit release, ``modcloth_final_data.json``).
RATING_FIELDS: tuple[str, ...] = ("rating", "quality")


def _id_text(value: Any) -> str | None:
    """An id as text; integral floats lose their ``.0``; None/NaN/blank -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _to_epoch_seconds(values: pd.Series, lines: np.ndarray, path: Path) -> np.ndarray | None:
    """Timestamps (epoch numbers or ISO dates) as int64 seconds; None if there are none."""
    missing = values.isna().to_numpy(dtype=bool) | (values.astype(str).str.strip() == "").to_numpy(
        dtype=bool
    )
    if missing.all():
        return None
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        warnings.warn(
            f"{path}: {int(missing.sum())} row(s) lack a timestamp (first: line {lines[i]}); "
            "using the row order as time for all rows",
            stacklevel=3,
        )
        return None
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return numeric.astype("float64").to_numpy().astype("int64")
    text = values.astype(str).str.strip()
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna().to_numpy(dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise format_error(
            path,
            int(lines[i]),
            f"timestamp must be epoch seconds or an ISO date, got {values.iloc[i]!r}",
        )
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).to_numpy(dtype="int64")


class ModCloth(DataSource):
    """ModCloth reviews: user, item, rating, time and the user's body shape.

    Accepts either release:

    * JSON lines (one object per line): ``user_id``, ``item_id``, optional ``rating`` (or
      ``quality``), optional ``timestamp`` (epoch seconds or ISO date) and the body shape in
      ``user_attr`` (Wan et al. 2019: ``"Small"``/``"Large"``) or ``body_shape``;
    * the CSV release ``df_modcloth.csv`` (columns ``item_id, user_id, rating, timestamp, size,
      fit, user_attr, model_attr, category, brand, year, split``), chosen when ``file`` ends in
      ``.csv``.

    Without timestamps the row order is the time. The users table has one column,
    ``body_shape``: each user's most frequent non-empty value (ties -> the alphabetically first),
    NaN if they never gave one.

    **Data-free mode reads the interaction file**: ModCloth has no profile file, the body shape is
    stored on each review row, so :meth:`load_users` reads the interaction file (user id and body
    shape only). It is the only source that does so.

    There is no automatic download: get the file from
    https://cseweb.ucsd.edu/~jmcauley/datasets.html#market_bias.

    Args:
        root: Folder that ``file`` is relative to.
        file: The JSON-lines or ``.csv`` file, relative to ``root`` (or absolute).
    """

    name = "modcloth"
    homepage = "https://cseweb.ucsd.edu/~jmcauley/datasets.html#market_bias"

    def __init__(self, root: str = "data", file: str = "modcloth/modcloth_final_data.json") -> None:
        super().__init__(root)
        self.path = self.root / file

    def user_files(self) -> list[Path]:
        # The body shape lives in the interaction file (see the class docstring).
        return [self.path]

    def interaction_files(self) -> list[Path]:
        return [self.path]

    # -- reading ---------------------------------------------------------------------------

    def _read(self, want_interactions: bool) -> tuple[pd.DataFrame, np.ndarray]:
        """Raw fields (``user``, ``body`` and, if asked, ``item``, ``rating``, ``timestamp``)."""
        if self.path.suffix.lower() == ".csv":
            return self._read_csv(want_interactions)
        return self._read_jsonl(want_interactions)

    def _read_jsonl(self, want_interactions: bool) -> tuple[pd.DataFrame, np.ndarray]:
        path = self.path
        cols: dict[str, list[Any]] = {"user": [], "body": []}
        if want_interactions:
            cols.update(item=[], rating=[], timestamp=[])
        lines: list[int] = []
        with path.open("r", encoding="utf-8") as f:
            for number, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as err:
                    raise format_error(
                        path, number, f"not valid JSON ({err.msg}); expected one object per line"
                    ) from err
                if not isinstance(record, dict):
                    raise format_error(
                        path, number, f"expected a JSON object, got {type(record).__name__}"
                    )
                user = _id_text(record.get("user_id"))
                if user is None:
                    raise format_error(path, number, f"no user_id; fields are {sorted(record)}")
                cols["user"].append(user)
                cols["body"].append(
                    next((record[k] for k in BODY_FIELDS if record.get(k) is not None), None)
                )
                if want_interactions:
                    item = _id_text(record.get("item_id"))
                    if item is None:
                        raise format_error(path, number, f"no item_id; fields are {sorted(record)}")
                    cols["item"].append(item)
                    cols["rating"].append(
                        next((record[k] for k in RATING_FIELDS if record.get(k) is not None), None)
                    )
                    cols["timestamp"].append(record.get("timestamp"))
                lines.append(number)
        if not lines:
            raise format_error(path, None, "file is empty; expected one JSON object per line")
        return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in cols.items()}), np.asarray(
            lines
        )

    def _read_csv(self, want_interactions: bool) -> tuple[pd.DataFrame, np.ndarray]:
        path = self.path
        wanted = {"user_id", *BODY_FIELDS}
        if want_interactions:
            wanted |= {"item_id", "timestamp", *RATING_FIELDS}
        try:
            raw = pd.read_csv(path, dtype=str, usecols=lambda c: c in wanted)
        except pd.errors.EmptyDataError as err:
            raise format_error(path, None, "file is empty; expected a CSV with a header") from err
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise format_error(path, None, f"not a readable CSV: {err}") from err
        required = ["user_id", "item_id"] if want_interactions else ["user_id"]
        lacking = [c for c in required if c not in raw.columns]
        if lacking:
            header = pd.read_csv(path, nrows=0).columns.tolist()
            raise format_error(path, 1, f"missing column(s) {lacking}; the header has {header}")
        if len(raw) == 0:
            raise format_error(path, None, "no data rows after the header")
        # Line of each row, assuming no quoted field spans lines (true of the release).
        lines = np.arange(len(raw)) + 2
        out = pd.DataFrame({"user": raw["user_id"].map(_id_text).astype(object)})
        body = next((c for c in BODY_FIELDS if c in raw.columns), None)
        out["body"] = raw[body].astype(object) if body else None
        if want_interactions:
            out["item"] = raw["item_id"].map(_id_text).astype(object)
            rating = next((c for c in RATING_FIELDS if c in raw.columns), None)
            out["rating"] = raw[rating].astype(object) if rating else None
            out["timestamp"] = raw["timestamp"].astype(object) if "timestamp" in raw else None
        for col, what in (("user", "user_id"), ("item", "item_id")):
            if col in out:
                empty = out[col].isna().to_numpy(dtype=bool)
                if empty.any():
                    raise format_error(path, int(lines[np.flatnonzero(empty)[0]]), f"empty {what}")
        return out, lines

    # -- tables ----------------------------------------------------------------------------

    def load_interactions(self) -> pd.DataFrame:
        frame, lines = self._read(want_interactions=True)
        path = self.path
        rating_raw = frame["rating"]
        rating = pd.to_numeric(rating_raw, errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )
        bad = np.isnan(rating) & rating_raw.notna().to_numpy(dtype=bool)
        bad &= (rating_raw.astype(str).str.strip() != "").to_numpy(dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise format_error(
                path, int(lines[i]), f"rating must be a number, got {rating_raw.iloc[i]!r}"
            )
        table = pd.DataFrame(
            {"user": frame["user"].to_numpy(), "item": frame["item"].to_numpy(), "rating": rating}
        )
        seconds = _to_epoch_seconds(frame["timestamp"], lines, path)
        if seconds is not None:
            table["timestamp"] = seconds
        return validate_interactions(table, str(path))

    def load_users(self) -> pd.DataFrame:
        """Users and their most frequent body shape; reads the interaction file (see above)."""
        frame, _ = self._read(want_interactions=False)
        body = frame["body"].map(lambda v: str(v).strip() if v is not None and v == v else "")
        users = pd.Index(pd.unique(frame["user"].to_numpy(dtype=object)), name="user")
        given = pd.DataFrame({"user": frame["user"], "body": body})
        given = given[given["body"] != ""]
        if given.empty:
            warnings.warn(
                f"{self.path}: no {' / '.join(BODY_FIELDS)} field; body_shape is unknown for all "
                "users",
                stacklevel=2,
            )
            shape = pd.Series(np.nan, index=users, dtype=object)
        else:
            counts = given.groupby(["user", "body"]).size().reset_index(name="n")
            counts = counts.sort_values(["user", "n", "body"], ascending=[True, False, True])
            top = counts.drop_duplicates("user").set_index("user")["body"]
            shape = top.reindex(users).astype(object)
        table = pd.DataFrame({"body_shape": shape.to_numpy(dtype=object)}, index=users)
        return validate_users(table, str(self.path))
