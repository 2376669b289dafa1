"""MovieLens-100K and MovieLens-1M in their official GroupLens layouts.

Both archives are published by GroupLens with md5 digests that many independent projects quote
identically (ml-100k.zip ``0e33842e24a9c977be4e0107933c0723``, ml-1m.zip
``c4d9eecfca2ab87c1945afe126590906``); :meth:`DataSource.prepare` verifies them after a download.
Files are read as latin-1 (the GroupLens encoding; a superset of the ASCII rating files).
Values are checked against the releases' ranges: ratings 0.5-5 stars, ages 1-120 years,
timestamps within int64 seconds; anything else fails with the file, line and field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.download import ArchiveSpec
from lit_unlearn.datamodules.schema import validate_interactions, validate_users
from lit_unlearn.datamodules.sources.base import (
    DataSource,
    check_numeric_ids,
    format_error,
    read_delimited,
    to_floats,
    to_integers,
)

#: ML-1M occupation codes 0-20, named as in the ML-1M README.
ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other or not specified",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)

#: ML-1M age codes: the lower bound of each of the seven age groups.
ML1M_AGE_CODES: tuple[int, ...] = (1, 18, 25, 35, 45, 50, 56)

_ENCODING = "latin-1"
#: Every MovieLens release rates on 0.5-5 stars (100K and 1M: whole stars 1-5).
RATING_RANGE: tuple[float, float] = (0.5, 5.0)
#: Plausible ages in years (ML-100K holds 7-73); outside it the file is not ML-100K.
AGE_RANGE: tuple[int, int] = (1, 120)


def _read_ratings(path: Path, sep: str, data: bytes | None, sep_label: str) -> pd.DataFrame:
    frame, lines = read_delimited(
        path,
        n_fields=4,
        columns={0: "user", 1: "item", 2: "rating", 3: "timestamp"},
        sep=sep,
        encoding=_ENCODING,
        data=data,
        sep_label=sep_label,
        expected="user, item, rating, timestamp",
    )
    check_numeric_ids(frame["user"], lines, path, "user id")
    check_numeric_ids(frame["item"], lines, path, "item id")
    out = pd.DataFrame(
        {
            "user": frame["user"].to_numpy(),
            "item": frame["item"].to_numpy(),
            "rating": to_floats(
                frame["rating"], lines, path, "rating", low=RATING_RANGE[0], high=RATING_RANGE[1]
            ),
            "timestamp": to_integers(frame["timestamp"], lines, path, "timestamp"),
        }
    )
    return validate_interactions(out, str(path))


class MovieLens100K(DataSource):
    """MovieLens-100K (GroupLens): 943 users, 1682 movies, 100,000 ratings.

    Reads ``root/ml-100k/u.data`` (tab-separated ``user item rating timestamp``, no header) and
    ``root/ml-100k/u.user`` (``user|age|gender|occupation|zip``). The users table has ``age``
    (int, years), ``gender`` (``'M'``/``'F'``), ``occupation`` (one of 21 names) and ``zip``
    (str; some are not numeric). :meth:`load_users` opens only ``u.user``.

    Args:
        root: Folder that holds ``ml-100k/``; the official archive is downloaded into it when
            files are missing and downloading is allowed.
    """

    name = "ml-100k"
    archive = ArchiveSpec(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        filename="ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723",
    )

    def __init__(self, root: str = "data") -> None:
        super().__init__(root)
        self.folder = self.root / "ml-100k"

    def user_files(self) -> list[Path]:
        return [self.folder / "u.user"]

    def interaction_files(self) -> list[Path]:
        return [self.folder / "u.data"]

    def load_interactions(self) -> pd.DataFrame:
        return _read_ratings(self.folder / "u.data", "\t", None, "tab")

    def load_users(self) -> pd.DataFrame:
        path = self.folder / "u.user"
        frame, lines = read_delimited(
            path,
            n_fields=5,
            columns={0: "user", 1: "age", 2: "gender", 3: "occupation", 4: "zip"},
            sep="|",
            encoding=_ENCODING,
            expected="user|age|gender|occupation|zip",
        )
        check_numeric_ids(frame["user"], lines, path, "user id")
        users = pd.DataFrame(
            {
                "age": to_integers(
                    frame["age"], lines, path, "age", low=AGE_RANGE[0], high=AGE_RANGE[1]
                ),
                "gender": frame["gender"].str.strip().to_numpy(dtype=object),
                "occupation": frame["occupation"].str.strip().to_numpy(dtype=object),
                "zip": frame["zip"].str.strip().to_numpy(dtype=object),
            },
            index=pd.Index(frame["user"].to_numpy(dtype=object), name="user"),
        )
        return validate_users(users, str(path))


class MovieLens1M(DataSource):
    """MovieLens-1M (GroupLens): 6040 users, 3706 rated movies, 1,000,209 ratings.

    Reads ``root/ml-1m/ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and
    ``root/ml-1m/users.dat`` (``UserID::Gender::Age::Occupation::Zip-code``), latin-1. The users
    table has ``gender`` (``'M'``/``'F'``), ``age`` (the ML-1M group code, the group's lower
    bound: 1, 18, 25, 35, 45, 50 or 56), ``occupation`` (code 0-20 turned into the README's
    name, see :data:`ML1M_OCCUPATIONS`) and ``zip`` (str). :meth:`load_users` opens only
    ``users.dat``.

    Args:
        root: Folder that holds ``ml-1m/``; the official archive is downloaded into it when files
            are missing and downloading is allowed.
    """

    name = "ml-1m"
    archive = ArchiveSpec(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        filename="ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906",
    )

    def __init__(self, root: str = "data") -> None:
        super().__init__(root)
        self.folder = self.root / "ml-1m"

    def user_files(self) -> list[Path]:
        return [self.folder / "users.dat"]

    def interaction_files(self) -> list[Path]:
        return [self.folder / "ratings.dat"]

    @staticmethod
    def _tabbed(path: Path) -> bytes:
        # '::' is two characters; none of these files holds a tab, so turn it into one.
        return path.read_bytes().replace(b"::", b"\t")

    def load_interactions(self) -> pd.DataFrame:
        path = self.folder / "ratings.dat"
        return _read_ratings(path, "\t", self._tabbed(path), "'::'")

    def load_users(self) -> pd.DataFrame:
        path = self.folder / "users.dat"
        frame, lines = read_delimited(
            path,
            n_fields=5,
            columns={0: "user", 1: "gender", 2: "age", 3: "occupation", 4: "zip"},
            sep="\t",
            encoding=_ENCODING,
            data=self._tabbed(path),
            sep_label="'::'",
            expected="UserID::Gender::Age::Occupation::Zip-code",
        )
        check_numeric_ids(frame["user"], lines, path, "user id")
        age = to_integers(frame["age"], lines, path, "age code")
        bad = ~np.isin(age, ML1M_AGE_CODES)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise format_error(
                path, int(lines[i]), f"age code must be one of {ML1M_AGE_CODES}, got {age[i]}"
            )
        occ = to_integers(frame["occupation"], lines, path, "occupation code")
        bad = (occ < 0) | (occ >= len(ML1M_OCCUPATIONS))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise format_error(path, int(lines[i]), f"occupation code must be 0-20, got {occ[i]}")
        users = pd.DataFrame(
            {
                "gender": frame["gender"].str.strip().to_numpy(dtype=object),
                "age": age,
                "occupation": np.asarray(ML1M_OCCUPATIONS, dtype=object)[occ],
                "zip": frame["zip"].str.strip().to_numpy(dtype=object),
            },
            index=pd.Index(frame["user"].to_numpy(dtype=object), name="user"),
        )
        return validate_users(users, str(path))
