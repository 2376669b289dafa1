"""Last.FM-1K (listening events) and Last.FM-360K (play counts), Ò. Celma's dumps (2010).

Items are artists: the MusicBrainz artist id, or the artist name where the id is empty.

The dumps are large (19M and 17.5M lines) and were collected from a web API, so a few lines are
odd. The readers here:

* read in 64 MiB blocks, only the needed columns, with no quote handling (``csv.QUOTE_NONE``:
  names like ``"Weird Al"`` stay as they are);
* accept lines with surplus tabs by merging the extra fields into the free-text field (track
  name for 1K, artist name for 360K), and 1K lines lacking the trailing track fields;
* drop lines that are still unusable (too few fields, bad timestamp, plays that are not a
  finite count >= 0, no user or artist) with one warning, *as long as they are rare* (at most
  0.1% of lines, see :data:`MAX_BAD_FRACTION`); beyond that the file is not in the expected
  format and a :class:`~lit_unlearn.datamodules.schema.DataFormatError` names the first bad line;
* read bytes that are not UTF-8 (a few latin-1 artist names) as latin-1 characters, so two
  names differing in such a byte stay two artists, with one warning counting the lines;
* turn ages outside :data:`AGE_RANGE` (the 360K profiles hold e.g. ``-1337``) into unknown,
  with one warning counting them, keeping the user.

Neither archive has a published digest of its own, but both READMEs give the md5 of each data
file, which :meth:`DataSource.prepare` checks after extraction.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lit_unlearn.datamodules.download import ArchiveSpec
from lit_unlearn.datamodules.schema import validate_interactions, validate_users
from lit_unlearn.datamodules.sources.base import (
    DataSource,
    ReadStats,
    empty_to_nan,
    format_error,
    iter_delimited,
)

#: Largest share of unusable lines a Last.FM file may have before it is rejected.
MAX_BAD_FRACTION: float = 0.001
#: Ages (years) kept; others become unknown (NaN).
AGE_RANGE: tuple[float, float] = (1.0, 120.0)


class _BadLines:
    """Unusable lines of one file: counted, first one remembered, judged at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.first: tuple[int, str] | None = None

    def add(self, lines: np.ndarray, mask: np.ndarray, why: str) -> None:
        n = int(mask.sum())
        if n == 0:
            return
        line = int(lines[np.flatnonzero(mask)[0]])
        if self.first is None or line < self.first[0]:
            self.first = (line, why)
        self.count += n

    def finish(self, stats: ReadStats) -> None:
        """Raise if too many lines were unusable, else warn about the dropped and re-decoded
        ones."""
        if stats.latin1_lines:
            warnings.warn(
                f"{self.path}: {stats.latin1_lines} line(s) are not valid UTF-8 (first: line "
                f"{stats.first_latin1}); read their stray bytes as latin-1 characters, so "
                "distinct bytes stay distinct",
                stacklevel=3,
            )
        if stats.first_skipped is not None:
            line, text = stats.first_skipped
            if self.first is None or line < self.first[0]:
                self.first = (line, f"too few tab-separated fields: {text[:120]!r}")
        bad = self.count + stats.skipped
        if stats.lines == 0:
            raise format_error(self.path, None, "file is empty")
        if bad == 0:
            return
        assert self.first is not None
        line, why = self.first
        if bad > MAX_BAD_FRACTION * stats.lines or bad == stats.lines:
            raise format_error(
                self.path,
                line,
                f"{why} ({bad} of {stats.lines} lines unusable: not the expected format)",
            )
        warnings.warn(
            f"{self.path}: skipped {bad} of {stats.lines} unusable lines (first: line {line}, "
            f"{why})",
            stacklevel=3,
        )


def _artist_items(mbid: pd.Series, name: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Artist MBID, or the artist name where the MBID is empty; and a mask of empty ones."""
    mbid = mbid.str.strip()
    name = name.str.strip()
    has_mbid = mbid != ""
    item = mbid.where(has_mbid, name)
    return item, (~has_mbid & (name == "")).to_numpy(dtype=bool)


def _read_profile(path: Path, header: bool) -> pd.DataFrame:
    """Both dumps' profile layout: ``user gender age country signup``, tab-separated."""
    skip = 0
    if header:
        with path.open("rb") as f:
            first = f.readline()
        skip = 1 if first.startswith(b"#") else 0
    stats = ReadStats()
    bad = _BadLines(path)
    parts = []
    odd_ages = 0
    first_odd: tuple[int, str] | None = None
    cols = {0: "user", 1: "gender", 2: "age", 3: "country", 4: "registered"}
    for frame, lines in iter_delimited(
        path, n_fields=5, columns=cols, skip_lines=skip, skip_short=True, stats=stats
    ):
        age_text = frame["age"].str.strip()
        age = pd.to_numeric(age_text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        # "nan"/"inf" parse as numbers but are no age: unusable like any other non-number.
        bad_age = ~np.isfinite(age) & (age_text != "").to_numpy(dtype=bool)
        odd = np.isfinite(age) & ((age < AGE_RANGE[0]) | (age > AGE_RANGE[1]))
        if odd.any():
            odd_ages += int(odd.sum())
            if first_odd is None:
                i = int(np.flatnonzero(odd)[0])
                first_odd = (int(lines[i]), str(age_text.iloc[i]))
            age = np.where(odd, np.nan, age)
        age = np.where(bad_age, np.nan, age)
        no_user = (frame["user"].str.strip() == "").to_numpy(dtype=bool)
        bad.add(lines, bad_age, "age must be a number or empty")
        bad.add(lines, no_user, "empty user id")
        keep = ~(bad_age | no_user)
        parts.append(
            pd.DataFrame(
                {
                    "gender": empty_to_nan(frame["gender"]).to_numpy()[keep],
                    "age": age[keep],
                    "country": empty_to_nan(frame["country"]).to_numpy()[keep],
                    "registered": empty_to_nan(frame["registered"]).to_numpy()[keep],
                },
                index=pd.Index(frame["user"].str.strip().to_numpy(dtype=object)[keep], name="user"),
            )
        )
    bad.finish(stats)
    if first_odd is not None:
        warnings.warn(
            f"{path}: {odd_ages} age(s) outside {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g} years read as "
            f"unknown (first: line {first_odd[0]}, age {first_odd[1]!r})",
            stacklevel=3,
        )
    users = pd.concat(parts) if len(parts) > 1 else parts[0]
    return validate_users(users, str(path))


class LastFM1K(DataSource):
    """Last.FM-1K: full listening histories (to May 2009) of 992 users.

    Reads ``root/lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv`` (tab, no
    header: user, ISO-8601 UTC time, artist MBID, artist name, track MBID, track name) and
    ``root/lastfm-dataset-1K/userid-profile.tsv`` (header ``#id gender age country
    registered``). Interactions are artist plays: ``rating`` NaN, ``timestamp`` epoch seconds.
    The users table has ``gender`` (``'m'``/``'f'``, NaN if empty), ``age`` (float, NaN if empty),
    ``country`` and ``registered`` (str, NaN if empty). :meth:`load_users` opens only the profile
    file. See the module docstring for how odd lines are handled.

    Args:
        root: Folder that holds ``lastfm-dataset-1K/``; the official archive (~640 MB) is
            downloaded into it when files are missing and downloading is allowed.
    """

    name = "lastfm-1k"
    archive = ArchiveSpec(
        url="http://mtg.upf.edu/static/datasets/last.fm/lastfm-dataset-1K.tar.gz",
        filename="lastfm-dataset-1K.tar.gz",
        # md5 of the data files from the dataset README (the archive's own is not published).
        member_md5={
            "lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv": (
                "64747b21563e3d2aa95751e0ddc46b68"
            ),
            "lastfm-dataset-1K/userid-profile.tsv": "c53608b6b445db201098c1489ea497df",
        },
    )

    def __init__(self, root: str = "data") -> None:
        super().__init__(root)
        self.folder = self.root / "lastfm-dataset-1K"

    def user_files(self) -> list[Path]:
        return [self.folder / "userid-profile.tsv"]

    def interaction_files(self) -> list[Path]:
        return [self.folder / "userid-timestamp-artid-artname-traid-traname.tsv"]

    def load_users(self) -> pd.DataFrame:
        return _read_profile(self.folder / "userid-profile.tsv", header=True)

    def load_interactions(self) -> pd.DataFrame:
        path = self.interaction_files()[0]
        stats = ReadStats()
        bad = _BadLines(path)
        parts = []
        cols = {0: "user", 1: "time", 2: "mbid", 3: "artist"}
        for frame, lines in iter_delimited(
            path,
            n_fields=6,
            min_fields=4,
            merge_field=5,
            columns=cols,
            skip_short=True,
            stats=stats,
        ):
            time = pd.to_datetime(
                frame["time"].str.strip(), format="%Y-%m-%dT%H:%M:%SZ", utc=True, errors="coerce"
            )
            bad_time = time.isna().to_numpy(dtype=bool)
            user = frame["user"].str.strip()
            item, no_item = _artist_items(frame["mbid"], frame["artist"])
            no_user = (user == "").to_numpy(dtype=bool)
            bad.add(lines, bad_time, "timestamp must look like 2009-05-04T23:08:57Z")
            bad.add(lines, no_user & ~bad_time, "empty user id")
            bad.add(lines, no_item & ~bad_time & ~no_user, "neither artist MBID nor name")
            keep = ~(bad_time | no_user | no_item)
            if not keep.all():
                user, item, time = user[keep], item[keep], time[keep]
            seconds = time.dt.as_unit("s").astype("int64").to_numpy()
            parts.append(pd.DataFrame({"user": user, "item": item, "timestamp": seconds}))
        bad.finish(stats)
        if stats.merged:
            warnings.warn(
                f"{path}: {stats.merged} line(s) had extra tabs; merged them into the track name",
                stacklevel=2,
            )
        table = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return validate_interactions(table, str(path))


class LastFM360K(DataSource):
    """Last.FM-360K: top-artist play counts of ~360,000 users (2008).

    Reads ``root/lastfm-dataset-360K/usersha1-artmbid-artname-plays.tsv`` (tab, no header: user
    sha1, artist MBID, artist name, plays) and ``root/lastfm-dataset-360K/usersha1-profile.tsv``
    (tab, no header: user sha1, gender, age, country, signup date). ``rating`` is the play count
    (float) so a play-count threshold can binarise it; there is no time, so ``timestamp`` is the
    row order. The users table is as for :class:`LastFM1K` (``registered`` holds the signup
    date). :meth:`load_users` opens only the profile file. See the module docstring for how odd
    lines are handled.

    Args:
        root: Folder that holds ``lastfm-dataset-360K/``; the official archive (~540 MB) is
            downloaded into it when files are missing and downloading is allowed.
    """

    name = "lastfm-360k"
    archive = ArchiveSpec(
        url="http://mtg.upf.edu/static/datasets/last.fm/lastfm-dataset-360K.tar.gz",
        filename="lastfm-dataset-360K.tar.gz",
        # md5 of the data files from the dataset README (the archive's own is not published).
        member_md5={
            "lastfm-dataset-360K/usersha1-artmbid-artname-plays.tsv": (
                "be672526eb7c69495c27ad27803148f1"
            ),
            "lastfm-dataset-360K/usersha1-profile.tsv": "51159d4edf6a92cb96f87768aa2be678",
        },
    )

    def __init__(self, root: str = "data") -> None:
        super().__init__(root)
        self.folder = self.root / "lastfm-dataset-360K"

    def user_files(self) -> list[Path]:
        return [self.folder / "usersha1-profile.tsv"]

    def interaction_files(self) -> list[Path]:
        return [self.folder / "usersha1-artmbid-artname-plays.tsv"]

    def load_users(self) -> pd.DataFrame:
        return _read_profile(self.folder / "usersha1-profile.tsv", header=False)

    def load_interactions(self) -> pd.DataFrame:
        path = self.interaction_files()[0]
        stats = ReadStats()
        bad = _BadLines(path)
        parts = []
        cols = {0: "user", 1: "mbid", 2: "artist", 3: "plays"}
        for frame, lines in iter_delimited(
            path, n_fields=4, merge_field=2, columns=cols, skip_short=True, stats=stats
        ):
            plays_text = frame["plays"].str.strip()
            plays = pd.to_numeric(plays_text, errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan
            )
            # A play count is a finite number >= 0; "inf", "-5" or "1e400" is a broken line.
            bad_plays = ~(np.isfinite(plays) & (plays >= 0))
            user = frame["user"].str.strip()
            item, no_item = _artist_items(frame["mbid"], frame["artist"])
            no_user = (user == "").to_numpy(dtype=bool)
            bad.add(lines, bad_plays, "plays must be a number >= 0")
            bad.add(lines, no_user & ~bad_plays, "empty user id")
            bad.add(lines, no_item & ~bad_plays & ~no_user, "neither artist MBID nor name")
            keep = ~(bad_plays | no_user | no_item)
            parts.append(
                pd.DataFrame({"user": user[keep], "item": item[keep], "rating": plays[keep]})
            )
        bad.finish(stats)
        if stats.merged:
            warnings.warn(
                f"{path}: {stats.merged} line(s) had extra tabs; merged them into the artist name",
                stacklevel=2,
            )
        table = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return validate_interactions(table, str(path))
