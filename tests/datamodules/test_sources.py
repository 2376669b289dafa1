"""Data sources: tiny files in each official layout -> the two raw tables, and their errors."""

from __future__ import annotations

import json
import socket
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.datamodules.sources import (
    DataNotFoundError,
    GenericTable,
    LastFM1K,
    LastFM360K,
    ModCloth,
    MovieLens1M,
    MovieLens100K,
)

REAL_ML100K = Path("/work/shared/datasets")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def check_interactions(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert frame["rating"].dtype == np.float64
    assert frame["timestamp"].dtype == np.int64
    assert all(isinstance(v, str) for v in frame["user"])
    assert all(isinstance(v, str) for v in frame["item"])


# ---------------------------------------------------------------------------------------------
# MovieLens-100K
# ---------------------------------------------------------------------------------------------

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|student|T8H1N\n"


def ml100k(tmp_path: Path, data: str | None = U_DATA, user: str | None = U_USER) -> MovieLens100K:
    if data is not None:
        write(tmp_path / "ml-100k" / "u.data", data)
    if user is not None:
        write(tmp_path / "ml-100k" / "u.user", user)
    return MovieLens100K(str(tmp_path))


def test_ml100k_tables(tmp_path: Path) -> None:
    src = ml100k(tmp_path)
    src.prepare(download=False)
    inter = src.load_interactions()
    check_interactions(inter)
    assert inter["user"].tolist() == ["196", "186", "22"]
    assert inter["item"].tolist() == ["242", "302", "377"]
    assert inter["rating"].tolist() == [3.0, 3.0, 1.0]
    assert inter["timestamp"].tolist() == [881250949, 891717742, 878887116]
    users = src.load_users()
    assert users.index.name == "user"
    assert users.index.tolist() == ["1", "2", "3"]
    assert users["age"].dtype == np.int64
    assert users["age"].tolist() == [24, 53, 17]
    assert users["gender"].tolist() == ["M", "F", "M"]
    assert users["occupation"].tolist() == ["technician", "other", "student"]
    assert users["zip"].tolist() == ["85711", "94043", "T8H1N"]


def test_ml100k_blank_lines_and_crlf(tmp_path: Path) -> None:
    src = ml100k(tmp_path, data="1\t2\t5\t10\r\n\r\n3\t4\t1\t20\r\n\n")
    inter = src.load_interactions()
    assert inter["item"].tolist() == ["2", "4"]
    assert inter["timestamp"].tolist() == [10, 20]


def test_ml100k_users_without_interaction_file(tmp_path: Path) -> None:
    src = ml100k(tmp_path, data=None)
    src.prepare(download=False, need_interactions=False)
    assert len(src.load_users()) == 3
    with pytest.raises(DataNotFoundError) as err:
        src.prepare(download=False)
    assert str(tmp_path / "ml-100k" / "u.data") in str(err.value)
    assert "u.user" not in str(err.value)


def test_ml100k_users_with_unreadable_interaction_file(tmp_path: Path) -> None:
    # A directory where u.data should be: opening it would fail, load_users must not try.
    src = ml100k(tmp_path, data=None)
    (tmp_path / "ml-100k" / "u.data").mkdir()
    assert src.load_users()["gender"].tolist() == ["M", "F", "M"]
    with pytest.raises(OSError):
        src.load_interactions()


def test_ml100k_missing_files_message(tmp_path: Path) -> None:
    src = MovieLens100K(str(tmp_path))
    with pytest.raises(DataNotFoundError) as err:
        src.prepare(download=False)
    msg = str(err.value)
    assert str(tmp_path / "ml-100k" / "u.data") in msg
    assert str(tmp_path / "ml-100k" / "u.user") in msg
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in msg
    assert "download disabled" in msg


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("1\t2\t3\t4\n5\t6\t7\n", "line 2: expected 4 tab-separated fields, found 3"),
        ("1\t2\t3\t4\n5\t6\t7\t8\t9\n", "line 2: expected 4 tab-separated fields, found 5"),
        ("1,2,3,4\n", "line 1: expected 4 tab-separated fields, found 1"),
        ("1\t2\t3\t4\n\n5\t6\tx\t8\n", "line 3: rating must be a number, got 'x'"),
        ("u1\t2\t3\t4\n", "line 1: user id must be a numeric id, got 'u1'"),
        ("1\tmovie\t3\t4\n", "line 1: item id must be a numeric id, got 'movie'"),
        ("1\t2\t3\t4.5\n", "line 1: timestamp must be an integer, got '4.5'"),
        ("", "file is empty"),
        ("\n\n", "file is empty"),
    ],
)
def test_ml100k_malformed_interactions(tmp_path: Path, data: str, needle: str) -> None:
    src = ml100k(tmp_path, data=data)
    with pytest.raises(DataFormatError) as err:
        src.load_interactions()
    assert str(tmp_path / "ml-100k" / "u.data") in str(err.value)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    ("user", "needle"),
    [
        ("1|24|M|technician\n", "line 1: expected 5 '|'-separated fields, found 4"),
        ("1|24|M|technician|1\n2|old|F|other|2\n", "line 2: age must be an integer, got 'old'"),
        ("1\t24\tM\ttechnician\t1\n", "expected 5 '|'-separated fields, found 1"),
        ("1|24|M|a|1\n1|25|F|b|2\n", "duplicate user id '1'"),
    ],
)
def test_ml100k_malformed_users(tmp_path: Path, user: str, needle: str) -> None:
    src = ml100k(tmp_path, user=user)
    with pytest.raises(DataFormatError) as err:
        src.load_users()
    assert str(tmp_path / "ml-100k" / "u.user") in str(err.value)
    assert needle in str(err.value)


def test_blocks_keep_line_numbers(tmp_path: Path) -> None:
    from lit_unlearn.datamodules.sources.base import iter_delimited

    lines = [f"{i}\t{i + 1}\n" for i in range(1000)]
    lines[777] = "x\n"
    path = write(tmp_path / "t.tsv", "".join(lines))
    with pytest.raises(DataFormatError, match="line 778: expected 2 tab-separated fields"):
        list(iter_delimited(path, n_fields=2, columns={0: "a", 1: "b"}, block_size=100))
    lines[777] = "777\t778\n"
    path.write_text("".join(lines))
    parts = list(iter_delimited(path, n_fields=2, columns={0: "a", 1: "b"}, block_size=100))
    assert len(parts) > 10
    frame = pd.concat([p[0] for p in parts], ignore_index=True)
    assert frame["a"].tolist() == [str(i) for i in range(1000)]
    assert np.concatenate([p[1] for p in parts]).tolist() == list(range(1, 1001))


@pytest.mark.skipif(not (REAL_ML100K / "ml-100k" / "u.data").exists(), reason="no real ML-100K")
def test_real_ml100k() -> None:
    src = MovieLens100K(str(REAL_ML100K))
    src.prepare(download=False)
    users = src.load_users()
    inter = src.load_interactions()
    check_interactions(inter)
    assert len(users) == 943
    assert len(inter) == 100_000
    assert inter["item"].nunique() == 1682
    assert inter["user"].nunique() == 943
    assert set(inter["user"]) == set(users.index)
    assert users["gender"].value_counts().to_dict() == {"M": 670, "F": 273}
    assert users["occupation"].nunique() == 21


# ---------------------------------------------------------------------------------------------
# MovieLens-1M
# ---------------------------------------------------------------------------------------------

RATINGS_DAT = "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n"
# Latin-1 bytes (\xe9 = é) are not valid UTF-8: the file must be read as latin-1.
USERS_DAT = (
    b"1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n4::M::45::7::Qu\xe9bec\n"
)


def ml1m(
    tmp_path: Path, ratings: str | None = RATINGS_DAT, users: bytes | None = USERS_DAT
) -> MovieLens1M:
    if ratings is not None:
        write(tmp_path / "ml-1m" / "ratings.dat", ratings.encode("latin-1"))
    if users is not None:
        write(tmp_path / "ml-1m" / "users.dat", users)
    return MovieLens1M(str(tmp_path))


def test_ml1m_tables(tmp_path: Path) -> None:
    src = ml1m(tmp_path)
    inter = src.load_interactions()
    check_interactions(inter)
    assert inter["user"].tolist() == ["1", "1", "2"]
    assert inter["item"].tolist() == ["1193", "661", "1357"]
    assert inter["rating"].tolist() == [5.0, 3.0, 5.0]
    assert inter["timestamp"].tolist() == [978300760, 978302109, 978298709]
    users = src.load_users()
    assert users.index.tolist() == ["1", "2", "3", "4"]
    assert users["gender"].tolist() == ["F", "M", "M", "M"]
    assert users["age"].tolist() == [1, 56, 25, 45]
    assert users["occupation"].tolist() == [
        "K-12 student",
        "self-employed",
        "scientist",
        "executive/managerial",
    ]
    assert users["zip"].tolist() == ["48067", "70072", "55117", "Québec"]


def test_ml1m_occupation_names() -> None:
    from lit_unlearn.datamodules.sources.movielens import ML1M_OCCUPATIONS

    assert len(ML1M_OCCUPATIONS) == 21
    assert ML1M_OCCUPATIONS[0] == "other or not specified"
    assert ML1M_OCCUPATIONS[12] == "programmer"
    assert ML1M_OCCUPATIONS[20] == "writer"


def test_ml1m_users_without_ratings(tmp_path: Path) -> None:
    src = ml1m(tmp_path, ratings=None)
    src.prepare(download=False, need_interactions=False)
    assert len(src.load_users()) == 4


@pytest.mark.parametrize(
    ("users", "needle"),
    [
        (b"1::F::1::10\n", "line 1: expected 5 '::'-separated fields, found 4"),
        (b"1::F::1::10::48067\n2:M:56:16:70072\n", "line 2: expected 5 '::'-separated fields"),
        (b"1::F::30::10::48067\n", "line 1: age code must be one of (1, 18, 25, 35, 45, 50, 56)"),
        (b"1::F::1::21::48067\n", "line 1: occupation code must be 0-20, got 21"),
        (b"1::F::1::x::48067\n", "line 1: occupation code must be an integer, got 'x'"),
    ],
)
def test_ml1m_malformed_users(tmp_path: Path, users: bytes, needle: str) -> None:
    src = ml1m(tmp_path, users=users)
    with pytest.raises(DataFormatError) as err:
        src.load_users()
    assert str(tmp_path / "ml-1m" / "users.dat") in str(err.value)
    assert needle in str(err.value)


def test_ml1m_malformed_ratings(tmp_path: Path) -> None:
    src = ml1m(tmp_path, ratings="1::1193::5::978300760\n1::661::five::978302109\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat: line 2: rating must be a number"):
        src.load_interactions()


# ---------------------------------------------------------------------------------------------
# Last.FM-1K
# ---------------------------------------------------------------------------------------------

MBID_A = "f1b1cf71-bd35-4e99-8624-24a6e15f133a"
MBID_T = "db16d0b3-b8ce-4aa8-a11a-e4d53cc7f8a6"
EVENTS_1K = (
    f"user_000001\t2009-05-04T23:08:57Z\t{MBID_A}\tDeep Dish\t{MBID_T}\tFuck Me Im Famous\n"
    f"user_000001\t2009-05-04T13:54:10Z\t\tSome Unknown Band\t\tTrack\n"
    f'user_000002\t2009-05-03T15:48:25Z\t\t"Weird Al" Yankovic\t\tAmish "Paradise\n'
    f"user_000002\t2009-05-02T00:00:00Z\t{MBID_A}\tDeep Dish\t\tName\twith a tab\n"
    f"user_000003\t2008-01-01T00:00:01Z\t\tShort Line Artist\n"
)
PROFILE_1K = (
    "#id\tgender\tage\tcountry\tregistered\n"
    "user_000001\tm\t\tJapan\tAug 13, 2006\n"
    "user_000002\tf\t\tPeru\tFeb 24, 2006\n"
    "user_000003\t\t22\tUnited States\t\n"
)


def lastfm1k(
    tmp_path: Path, events: str | None = EVENTS_1K, profile: str | None = PROFILE_1K
) -> LastFM1K:
    folder = tmp_path / "lastfm-dataset-1K"
    if events is not None:
        write(folder / "userid-timestamp-artid-artname-traid-traname.tsv", events)
    if profile is not None:
        write(folder / "userid-profile.tsv", profile)
    return LastFM1K(str(tmp_path))


def test_lastfm1k_tables(tmp_path: Path) -> None:
    src = lastfm1k(tmp_path)
    src.prepare(download=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inter = src.load_interactions()
    assert any("extra tabs" in str(w.message) for w in caught)
    check_interactions(inter)
    assert inter["user"].tolist() == ["user_000001"] * 2 + ["user_000002"] * 2 + ["user_000003"]
    assert inter["item"].tolist() == [
        MBID_A,
        "Some Unknown Band",  # no MBID: the artist name is the item
        '"Weird Al" Yankovic',  # quotes are data (QUOTE_NONE)
        MBID_A,
        "Short Line Artist",
    ]
    assert inter["rating"].isna().all()
    assert inter["timestamp"].tolist() == [
        1241478537,
        1241445250,
        1241365705,
        1241222400,
        1199145601,
    ]
    users = src.load_users()
    assert users.index.tolist() == ["user_000001", "user_000002", "user_000003"]
    assert users["gender"].tolist()[:2] == ["m", "f"]
    assert pd.isna(users["gender"].iloc[2])
    assert users["age"].iloc[2] == 22 and users["age"].iloc[:2].isna().all()
    assert users["country"].tolist() == ["Japan", "Peru", "United States"]
    assert pd.isna(users["registered"].iloc[2])


def test_lastfm1k_users_without_events(tmp_path: Path) -> None:
    src = lastfm1k(tmp_path, events=None)
    src.prepare(download=False, need_interactions=False)
    assert len(src.load_users()) == 3
    with pytest.raises(
        DataNotFoundError, match=r"userid-timestamp-artid-artname-traid-traname\.tsv"
    ):
        src.prepare(download=False)


def test_lastfm1k_bad_timestamp(tmp_path: Path) -> None:
    events = EVENTS_1K + "user_000004\tyesterday\t\tBand\t\tSong\n"
    src = lastfm1k(tmp_path, events=events)
    with pytest.raises(DataFormatError) as err:
        src.load_interactions()
    assert "traname.tsv: line 6: timestamp must look like 2009-05-04T23:08:57Z" in str(err.value)


def test_lastfm1k_too_few_fields(tmp_path: Path) -> None:
    src = lastfm1k(tmp_path, events=EVENTS_1K + "user_000004\t2009-05-04T23:08:57Z\n")
    with pytest.raises(DataFormatError, match=r"line 6: too few tab-separated fields"):
        src.load_interactions()


def test_lastfm1k_rare_odd_lines_are_skipped(tmp_path: Path) -> None:
    good = "".join(
        f"user_{i % 7}\t2009-05-04T23:08:57Z\t\tArtist {i % 11}\t\tT\n" for i in range(3000)
    )
    src = lastfm1k(tmp_path, events=good + "user_x\tnot a time\t\tA\t\tT\n")
    with pytest.warns(UserWarning, match=r"skipped 1 of 3001 unusable lines \(first: line 3001"):
        inter = src.load_interactions()
    assert len(inter) == 3000


def test_lastfm1k_profile_errors(tmp_path: Path) -> None:
    src = lastfm1k(
        tmp_path, profile="#id\tgender\tage\tcountry\tregistered\nuser_1\tm\told\tPeru\t\n"
    )
    with pytest.raises(DataFormatError, match=r"userid-profile\.tsv: line 2: age must be a number"):
        src.load_users()
    src = lastfm1k(tmp_path, profile="#id\tgender\tage\tcountry\tregistered\n")
    with pytest.raises(DataFormatError, match="file is empty"):
        src.load_users()


# ---------------------------------------------------------------------------------------------
# Last.FM-360K
# ---------------------------------------------------------------------------------------------

SHA_A = "00000c289a1829a808ac09c00daf10bc3c4e223b"
SHA_B = "00001411dc427966b17297bf4d69e7e193135d89"
PLAYS_360K = (
    f"{SHA_A}\t3bd73256-3905-4f3a-97e2-8b341527f805\tbetty blowtorch\t2137\n"
    f"{SHA_A}\t\tdie \u00e4rzte\t1099\n"
    f"{SHA_B}\t\tartist\twith tab\t12\n"
)
PROFILE_360K = f"{SHA_A}\tf\t22\tGermany\tFeb 1, 2007\n{SHA_B}\tm\t\tCanada\tDec 4, 2007\n"


def lastfm360k(
    tmp_path: Path, plays: str | None = PLAYS_360K, profile: str | None = PROFILE_360K
) -> LastFM360K:
    folder = tmp_path / "lastfm-dataset-360K"
    if plays is not None:
        write(folder / "usersha1-artmbid-artname-plays.tsv", plays)
    if profile is not None:
        write(folder / "usersha1-profile.tsv", profile)
    return LastFM360K(str(tmp_path))


def test_lastfm360k_tables(tmp_path: Path) -> None:
    src = lastfm360k(tmp_path)
    with pytest.warns(UserWarning, match="merged them into the artist name"):
        inter = src.load_interactions()
    check_interactions(inter)
    assert inter["user"].tolist() == [SHA_A, SHA_A, SHA_B]
    assert inter["item"].tolist() == [
        "3bd73256-3905-4f3a-97e2-8b341527f805",
        "die \u00e4rzte",
        "artist\twith tab",
    ]
    assert inter["rating"].tolist() == [2137.0, 1099.0, 12.0]
    assert inter["timestamp"].tolist() == [0, 1, 2]  # no time: row order
    users = src.load_users()
    assert users.index.tolist() == [SHA_A, SHA_B]
    assert users["gender"].tolist() == ["f", "m"]
    assert users["age"].iloc[0] == 22 and np.isnan(users["age"].iloc[1])
    assert users["country"].tolist() == ["Germany", "Canada"]
    assert users["registered"].tolist() == ["Feb 1, 2007", "Dec 4, 2007"]


def test_lastfm360k_users_without_plays(tmp_path: Path) -> None:
    src = lastfm360k(tmp_path, plays=None)
    src.prepare(download=False, need_interactions=False)
    assert len(src.load_users()) == 2


def test_lastfm360k_bad_plays(tmp_path: Path) -> None:
    src = lastfm360k(tmp_path, plays=f"{SHA_A}\t\tband\tmany\n{SHA_A}\t\tother\t3\n")
    with pytest.raises(DataFormatError) as err:
        src.load_interactions()
    assert "plays.tsv: line 1: plays must be a number" in str(err.value)


def test_lastfm360k_empty(tmp_path: Path) -> None:
    src = lastfm360k(tmp_path, plays="")
    with pytest.raises(DataFormatError, match=r"plays\.tsv: file is empty"):
        src.load_interactions()


def test_lastfm_missing_files_name_archive(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        LastFM360K(str(tmp_path)).prepare(download=False)
    msg = str(err.value)
    assert str(tmp_path / "lastfm-dataset-360K" / "usersha1-profile.tsv") in msg
    assert "lastfm-dataset-360K.tar.gz" in msg


# ---------------------------------------------------------------------------------------------
# ModCloth
# ---------------------------------------------------------------------------------------------


def jsonl(rows: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


MODCLOTH_ROWS: list[dict[str, object]] = [
    {
        "item_id": 7443,
        "user_id": "Alex",
        "rating": 4,
        "timestamp": "2010-01-21 08:00:00+00:00",
        "user_attr": "Small",
    },
    {
        "item_id": 7443,
        "user_id": "carolyn.agan",
        "rating": 3,
        "timestamp": "2010-01-27 08:00:00+00:00",
        "user_attr": None,
    },
    {
        "item_id": 7444,
        "user_id": "Alex",
        "rating": 5,
        "timestamp": "2010-02-01 08:00:00+00:00",
        "user_attr": "Large",
    },
    {
        "item_id": 7445,
        "user_id": "Alex",
        "timestamp": "2010-02-02 08:00:00+00:00",
        "user_attr": "Large",
    },
    {
        "item_id": 7446,
        "user_id": "Robin",
        "rating": 2,
        "timestamp": "2010-02-03 08:00:00+00:00",
        "user_attr": "Small",
    },
    {
        "item_id": 7446,
        "user_id": "Kim",
        "rating": 2,
        "timestamp": "2010-02-03 09:00:00+00:00",
        "user_attr": "Small",
    },
    {
        "item_id": 7447,
        "user_id": "Kim",
        "rating": 2,
        "timestamp": "2010-02-03 10:00:00+00:00",
        "user_attr": "Large",
    },
]


def test_modcloth_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path / "modcloth" / "modcloth_final_data.json", jsonl(MODCLOTH_ROWS))
    src = ModCloth(str(tmp_path))
    assert src.user_files() == src.interaction_files() == [path]
    src.prepare(download=False, need_interactions=False)
    inter = src.load_interactions()
    check_interactions(inter)
    assert inter["user"].tolist()[:2] == ["Alex", "carolyn.agan"]
    assert inter["item"].tolist()[:3] == ["7443", "7443", "7444"]
    assert inter["rating"].tolist()[:3] == [4.0, 3.0, 5.0]
    assert np.isnan(inter["rating"].iloc[3])
    assert inter["timestamp"].iloc[0] == 1264060800  # 2010-01-21 08:00 UTC
    users = src.load_users()
    assert users.index.tolist() == ["Alex", "carolyn.agan", "Robin", "Kim"]
    assert users.loc["Alex", "body_shape"] == "Large"  # 2 x Large vs 1 x Small
    assert users["body_shape"].isna()["carolyn.agan"]
    assert users.loc["Robin", "body_shape"] == "Small"
    assert users.loc["Kim", "body_shape"] == "Large"  # tie -> sorted first


def test_modcloth_body_shape_field_epoch_and_no_time(tmp_path: Path) -> None:
    rows = [
        {"user_id": 1, "item_id": "a", "timestamp": 1264060800, "body_shape": "pear"},
        {"user_id": 2, "item_id": "b", "timestamp": 1264060900, "body_shape": "apple"},
    ]
    write(tmp_path / "m.json", jsonl(rows))
    src = ModCloth(str(tmp_path), file="m.json")
    inter = src.load_interactions()
    assert inter["user"].tolist() == ["1", "2"]
    assert inter["timestamp"].tolist() == [1264060800, 1264060900]
    assert inter["rating"].isna().all()
    assert src.load_users()["body_shape"].tolist() == ["pear", "apple"]
    write(tmp_path / "n.json", jsonl([{"user_id": "u", "item_id": i} for i in "xyz"]))
    assert ModCloth(str(tmp_path), file="n.json").load_interactions()["timestamp"].tolist() == [
        0,
        1,
        2,
    ]


def test_modcloth_csv(tmp_path: Path) -> None:
    text = (
        "item_id,user_id,rating,timestamp,size,fit,user_attr,model_attr,category,brand,year,split\n"
        "7443,Alex,4,2010-01-21 08:00:00+00:00,,,Small,Small,Dresses,,2012,0\n"
        '7443,carolyn.agan,3,2010-01-27 08:00:00+00:00,,,,Small,Dresses,"Brand, Inc.",2012,0\n'
        "7444,Alex,5,2010-02-01 08:00:00+00:00,3.0,Just right,Small,Small&Large,Tops,,2012,1\n"
    )
    write(tmp_path / "df_modcloth.csv", text)
    src = ModCloth(str(tmp_path), file="df_modcloth.csv")
    inter = src.load_interactions()
    check_interactions(inter)
    assert inter["user"].tolist() == ["Alex", "carolyn.agan", "Alex"]
    assert inter["item"].tolist() == ["7443", "7443", "7444"]
    assert inter["rating"].tolist() == [4.0, 3.0, 5.0]
    assert inter["timestamp"].tolist() == [1264060800, 1264579200, 1265011200]
    users = src.load_users()
    assert users.loc["Alex", "body_shape"] == "Small"
    assert users["body_shape"].isna()["carolyn.agan"]


def test_modcloth_malformed(tmp_path: Path) -> None:
    path = write(tmp_path / "m.json", jsonl(MODCLOTH_ROWS[:2]) + "{'user_id': 'x'}\n")
    with pytest.raises(DataFormatError, match=r"m\.json: line 3: not valid JSON"):
        ModCloth(str(tmp_path), file="m.json").load_interactions()
    path.write_text(jsonl([{"item_id": 1, "user_id": "a"}, {"item_id": 2}]))
    with pytest.raises(DataFormatError, match=r"line 2: no user_id"):
        ModCloth(str(tmp_path), file="m.json").load_users()
    path.write_text(jsonl([{"item_id": 1, "user_id": "a", "rating": "great"}]))
    with pytest.raises(DataFormatError, match=r"line 1: rating must be a number, got 'great'"):
        ModCloth(str(tmp_path), file="m.json").load_interactions()
    path.write_text(jsonl([{"item_id": 1, "user_id": "a", "timestamp": "someday"}]))
    with pytest.raises(DataFormatError, match=r"line 1: timestamp must be epoch seconds or an ISO"):
        ModCloth(str(tmp_path), file="m.json").load_interactions()
    path.write_text("")
    with pytest.raises(DataFormatError, match="file is empty"):
        ModCloth(str(tmp_path), file="m.json").load_users()
    write(tmp_path / "c.csv", "item,user\n1,2\n")
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['user_id', 'item_id'\]"):
        ModCloth(str(tmp_path), file="c.csv").load_interactions()


def test_modcloth_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        ModCloth(str(tmp_path)).prepare(download=True, need_interactions=False)
    assert str(tmp_path / "modcloth" / "modcloth_final_data.json") in str(err.value)
    assert "https://cseweb.ucsd.edu/~jmcauley/datasets.html#market_bias" in str(err.value)


# ---------------------------------------------------------------------------------------------
# GenericTable
# ---------------------------------------------------------------------------------------------


def test_generic_csv_with_users(tmp_path: Path) -> None:
    inter = write(tmp_path / "i.csv", "user,item,rating,timestamp\n007,a,4.5,100\n8,b,,200\n")
    users = write(tmp_path / "u.csv", "user,gender,age,country\n007,F,31,Peru\n8,M,,Japan\n")
    src = GenericTable(str(inter), str(users))
    table = src.load_interactions()
    check_interactions(table)
    assert table["user"].tolist() == ["007", "8"]  # ids stay strings
    assert table["rating"].iloc[0] == 4.5 and np.isnan(table["rating"].iloc[1])
    assert table["timestamp"].tolist() == [100, 200]
    u = src.load_users()
    assert u.index.tolist() == ["007", "8"]
    assert list(u.columns) == ["gender", "age", "country"]
    assert u.loc["007", "age"] == 31


def test_generic_tsv_custom_columns_iso_time(tmp_path: Path) -> None:
    inter = write(tmp_path / "i.tsv", "uid\tiid\twhen\tx\nu1\ti1\t2009-05-04T23:08:57Z\t1\n")
    src = GenericTable(
        str(inter), user_col="uid", item_col="iid", rating_col=None, timestamp_col="when"
    )
    table = src.load_interactions()
    assert table["timestamp"].tolist() == [1241478537]
    assert table["rating"].isna().all()
    assert len(src.load_users()) == 0  # no users file: no attributes


def test_generic_optional_columns_absent(tmp_path: Path) -> None:
    inter = write(tmp_path / "i.txt", "user\titem\nu\ta\nu\tb\nv\ta\n")
    table = GenericTable(str(inter)).load_interactions()
    assert table["rating"].isna().all()
    assert table["timestamp"].tolist() == [0, 1, 2]


def test_generic_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    inter = tmp_path / "i.parquet"
    pd.DataFrame(
        {"user": [1, 2], "item": [10, 20], "rating": [1.0, 2.0], "timestamp": [5, 6]}
    ).to_parquet(inter)
    users = tmp_path / "u.parquet"
    pd.DataFrame({"user": [1, 2], "occupation": ["x", "y"]}).to_parquet(users)
    src = GenericTable(str(inter), str(users))
    table = src.load_interactions()
    check_interactions(table)
    assert table["user"].tolist() == ["1", "2"]
    assert table["item"].tolist() == ["10", "20"]
    assert src.load_users()["occupation"].to_dict() == {"1": "x", "2": "y"}


def test_generic_sep_override(tmp_path: Path) -> None:
    inter = write(tmp_path / "ratings.dat", "user::item::rating\n1::2::3\n")
    table = GenericTable(str(inter), sep="::").load_interactions()
    assert table["item"].tolist() == ["2"] and table["rating"].tolist() == [3.0]


def test_generic_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot tell the format from the extension '\.xlsx'"):
        GenericTable(str(tmp_path / "i.xlsx"))
    inter = write(tmp_path / "i.csv", "uid,item\n1,2\n")
    with pytest.raises(DataFormatError) as err:
        GenericTable(str(inter)).load_interactions()
    assert "no column 'user' (given as user_col)" in str(err.value)
    assert "available columns: ['uid', 'item']" in str(err.value)
    with pytest.raises(DataFormatError, match=r"no column 'score' \(given as rating_col\)"):
        GenericTable(str(inter), user_col="uid", rating_col="score").load_interactions()
    bad = write(tmp_path / "b.csv", "user,item,rating\n1,2,3\n1,3,good\n")
    with pytest.raises(DataFormatError, match=r"b\.csv: line 3: 'rating' must be a number"):
        GenericTable(str(bad)).load_interactions()
    empty = write(tmp_path / "e.csv", "")
    with pytest.raises(DataFormatError, match="file is empty"):
        GenericTable(str(empty)).load_interactions()
    users = write(tmp_path / "u.csv", "id,gender\n1,F\n")
    with pytest.raises(
        DataFormatError, match=r"no column 'user' \(given as users_id_col\).*\['id', 'gender'\]"
    ):
        GenericTable(str(inter), str(users)).load_users()


def test_generic_users_never_open_interactions(tmp_path: Path) -> None:
    users = write(tmp_path / "u.tsv", "user\tgender\n1\tF\n")
    src = GenericTable(str(tmp_path / "absent.csv"), str(users))
    src.prepare(download=True, need_interactions=False)
    assert src.load_users()["gender"].tolist() == ["F"]
    with pytest.raises(DataNotFoundError, match=r"absent\.csv"):
        src.prepare(download=True)
