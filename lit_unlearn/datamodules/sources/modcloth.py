"""ModCloth clothing reviews with the user's body shape (Wan et al. 2019, McAuley lab).

Unlike the other sources, ModCloth keeps the user attribute *inside the interaction file*: each
review row carries the reviewer's body shape. There is no separate profile file, so
:meth:`ModCloth.load_users` has to read the interaction file (only the user id and body-shape
fields of each row). This is the one source whose data-free mode touches the interaction file.

Values follow the shared contracts: ratings finite in 1-5, timestamps all epoch numbers or all
ISO dates, ids as written (integral JSON numbers without ``.0``); the JSON release must be UTF-8
(a stray byte fails with its line), the CSV release reads stray bytes as latin-1 with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.schema import validate_interactions, validate_users
from lit_unlearn.datamodules.sources.base import (
    DataSource,
    format_error,
    to_floats,
    to_timestamps,
)
from lit_unlearn.datamodules.sources.generic import (
    TableFormat,
    TableReader,
    id_text,
    parse_json_line,
)

#: Fields holding the body shape, in order of preference.
BODY_FIELDS: tuple[str, ...] = ("body_shape", "user_attr")
#: Fields holding the rating, in order of preference (``quality`` is the 1-5 score of the
#: earlier ModCloth fit release, ``modcloth_final_data.json``).
RATING_FIELDS: tuple[str, ...] = ("rating", "quality")


#: ModCloth ratings (and the older ``quality`` score) are 1-5 stars.
RATING_RANGE: tuple[float, float] = (1.0, 5.0)


def _to_epoch_seconds(values: pd.Series, lines: np.ndarray, path: Path) -> np.ndarray | None:
    """Timestamps (epoch numbers or ISO dates, see
    :func:`~lit_unlearn.datamodules.sources.base.to_timestamps`) as int64 seconds; None if
    some or all rows have none (then the row order is the time)."""
    missing = values.isna().to_numpy(dtype=bool) | (
        values.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
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
    seconds, floored = to_timestamps(values, lines, path, "timestamp")
    if floored:
        warnings.warn(
            f"{path}: {floored} timestamp(s) had fractional seconds; floored to whole seconds",
            stacklevel=3,
        )
    return seconds


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
        # Bytes, not text mode: a stray latin-1 byte must fail with its line (JSON is UTF-8),
        # not as a bare UnicodeDecodeError from the file iterator.
        for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not raw.strip():
                continue
            record = parse_json_line(path, number, raw)
            user = id_text(record.get("user_id"), path, number, "user_id")
            if user is None:
                raise format_error(
                    path, number, f"no user_id; fields are {sorted(record)}", "user_id"
                )
            cols["user"].append(user)
            body = next((record[k] for k in BODY_FIELDS if record.get(k) is not None), None)
            if body is not None and not isinstance(body, str):
                raise format_error(
                    path, number, f"body shape must be text, got {body!r}", BODY_FIELDS[0]
                )
            cols["body"].append(body)
            if want_interactions:
                item = id_text(record.get("item_id"), path, number, "item_id")
                if item is None:
                    raise format_error(
                        path, number, f"no item_id; fields are {sorted(record)}", "item_id"
                    )
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
        # The generic reader decodes (latin-1 fallback), checks every record's field count
        # against the header and knows each record's line, quoted fields included.
        reader = TableReader(path, TableFormat("text", ","))
        header = reader.columns()
        required = ["user_id", "item_id"] if want_interactions else ["user_id"]
        lacking = [c for c in required if c not in header]
        if lacking:
            raise format_error(path, 1, f"missing column(s) {lacking}; the header has {header}")
        use = [c for c in header if c in wanted]
        raw = reader.read(use, ["user_id", *(["item_id"] if want_interactions else [])], use)
        if len(raw) == 0:
            raise format_error(path, None, "no data rows after the header")
        lines = reader.lines
        out = pd.DataFrame({"user": raw["user_id"].astype(object)})
        body = next((c for c in BODY_FIELDS if c in raw.columns), None)
        out["body"] = raw[body].astype(object) if body else None
        if want_interactions:
            out["item"] = raw["item_id"].astype(object)
            rating = next((c for c in RATING_FIELDS if c in raw.columns), None)
            out["rating"] = raw[rating].astype(object) if rating else None
            out["timestamp"] = raw["timestamp"].astype(object) if "timestamp" in raw else None
        for col, what in (("user", "user_id"), ("item", "item_id")):
            if col in out:
                empty = out[col].isna().to_numpy(dtype=bool)
                if empty.any():
                    line = int(lines[np.flatnonzero(empty)[0]])
                    raise format_error(path, line, f"empty {what}", what)
        return out, lines

    # -- tables ----------------------------------------------------------------------------

    def load_interactions(self) -> pd.DataFrame:
        frame, lines = self._read(want_interactions=True)
        path = self.path
        rating = to_floats(
            frame["rating"],
            lines,
            path,
            "rating",
            allow_empty=True,
            low=RATING_RANGE[0],
            high=RATING_RANGE[1],
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
