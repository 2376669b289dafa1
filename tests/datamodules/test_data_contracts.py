"""Data contracts (issue 22, part 5): every problem the issue lists is an error naming file,
line and field, or a counted, logged drop; see docs/recommendation.md, "Data contracts"."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lit_unlearn.datamodules.index import STATE_KEY, UserIndex
from lit_unlearn.datamodules.preprocess import preprocess
from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.datamodules.sources import (
    GenericTable,
    LastFM1K,
    LastFM360K,
    ModCloth,
    MovieLens1M,
    MovieLens100K,
)
from lit_unlearn.datamodules.sources.base import to_integers


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def raises_at(fn: object, path: str, line: int | None, field: str | None) -> DataFormatError:
    """Run ``fn`` and check the DataFormatError names the file, line and field."""
    with pytest.raises(DataFormatError) as err:
        fn()  # type: ignore[operator]
    assert path in str(err.value), str(err.value)
    assert err.value.path is not None and path in err.value.path
    if line is not None:
        assert f"line {line}:" in str(err.value) and err.value.line == line, str(err.value)
    if field is not None:
        assert err.value.field is not None and field in err.value.field, err.value.field
    return err.value


# -- raw exceptions from deep inside -----------------------------------------------------------


def test_twenty_digit_timestamp_and_age_are_clear_errors(tmp_path: Path) -> None:
    write(tmp_path / "ml-100k/u.data", "1\t2\t3\t881250949\n1\t3\t4\t99999999999999999999\n")
    write(tmp_path / "ml-100k/u.user", "1|99999999999999999999|M|x|1\n")
    src = MovieLens100K(str(tmp_path))
    raises_at(src.load_interactions, "u.data", 2, "timestamp")
    raises_at(src.load_users, "u.user", 1, "age")
    with pytest.raises(DataFormatError, match="out of range"):
        to_integers(pd.Series(["-99999999999999999999"]), np.array([4]), "f", "age")


def test_latin1_byte_in_modcloth(tmp_path: Path) -> None:
    write(
        tmp_path / "m.json",
        b'{"user_id": "a", "item_id": 1}\n{"user_id": "B\xe9a", "item_id": 2}\n',
    )
    raises_at(lambda: ModCloth(str(tmp_path), file="m.json").load_users(), "m.json", 2, None)
    csv = b"item_id,user_id,rating\n1,B\xe9a,4\n2,B\xe8a,5\n"
    write(tmp_path / "m.csv", csv)
    with pytest.warns(UserWarning, match=r"2 line\(s\) are not valid UTF-8"):
        users = ModCloth(str(tmp_path), file="m.csv").load_users()
    assert sorted(users.index) == ["Bèa", "Béa"]  # two users, as written


@pytest.mark.parametrize(
    ("values", "line"),
    [
        (["2009-05-04", "1500000000", "2009-05-05"], 3),  # epoch among dates
        (["2009-05-04", "2009-05-05", "1000"], 4),  # "1000" is not the year 1000
        (["1500000000", "1500000001", "2009-05-05"], 4),
    ],
)
def test_mixed_epoch_and_iso_timestamps(tmp_path: Path, values: list[str], line: int) -> None:
    rows = "".join(f"u,{i},4,{v}\n" for i, v in enumerate(values))
    path = write(tmp_path / "i.csv", "user,item,rating,timestamp\n" + rows)
    err = raises_at(GenericTable(str(path)).load_interactions, "i.csv", line, "timestamp")
    assert "mixes epoch numbers and ISO dates" in str(err)
    jsonl = "".join(
        json.dumps({"user_id": "u", "item_id": i, "timestamp": v}) + "\n"
        for i, v in enumerate(values)
    )
    write(tmp_path / "m.json", jsonl)
    raises_at(
        lambda: ModCloth(str(tmp_path), file="m.json").load_interactions(),
        "m.json",
        line - 1,
        "timestamp",
    )


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "line 1: not valid JSON"),
        (b'{"user_ids": ["1"]', "not valid JSON"),
        (b'{"user_ids": ["1", "1"], "item_ids": []}', "more than once"),
        (b'{"user_ids": [1.5], "item_ids": []}', r"user_ids\[0\] must be a text or integer id"),
        (b'{"user_ids": "12", "item_ids": []}', "must be a list"),
        (b"[1, 2]", "must be a mapping"),
        (b'{"user_ids": ["\xe9"]}', "not a UTF-8 JSON"),
    ],
)
def test_user_index_json_errors(tmp_path: Path, data: bytes, match: str) -> None:
    path = write(tmp_path / "index.json", data)
    with pytest.raises(DataFormatError, match=match) as err:
        UserIndex.load(path)
    assert str(path) in str(err.value)


def test_user_index_checkpoint_errors(tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save({STATE_KEY: {"user_ids": ["1", "2"], "item_ids": ["a"]}}, buf)
    good = buf.getvalue()
    assert UserIndex.load(write(tmp_path / "ok.ckpt", good)).user_ids == ["1", "2"]
    for name, data in (
        ("cut.ckpt", good[: len(good) // 2]),  # truncated zip
        ("empty.ckpt", b""),  # EOFError
        ("junk.ckpt", b"\x80\x02junk"),  # UnpicklingError
    ):
        path = write(tmp_path / name, data)
        with pytest.raises(DataFormatError, match="not a readable checkpoint") as err:
            UserIndex.load(path)
        assert str(path) in str(err.value)


# -- silently wrong ------------------------------------------------------------------------------


def test_huge_timestamps_never_become_int64_min(tmp_path: Path) -> None:
    path = write(tmp_path / "i.csv", "user,item,timestamp\nu,a,100\nu,b,1e30\n")
    err = raises_at(GenericTable(str(path)).load_interactions, "i.csv", 3, "timestamp")
    assert "outside int64" in str(err)
    write(tmp_path / "m.json", '{"user_id": "u", "item_id": 1, "timestamp": 1e30}\n')
    raises_at(
        lambda: ModCloth(str(tmp_path), file="m.json").load_interactions(), "m.json", 1, "timestamp"
    )


def test_fractional_timestamps_are_floored_with_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path / "i.csv", "user,item,timestamp\nu,a,100.7\nu,b,100.2\n")
    with pytest.warns(UserWarning, match="2 'timestamp' value"):
        table = GenericTable(str(path)).load_interactions()
    assert table["timestamp"].tolist() == [100, 100]


@pytest.mark.parametrize("bad", ["-1", "inf", "nan", "1e400"])
def test_negative_and_infinite_ratings_rejected_everywhere(tmp_path: Path, bad: str) -> None:
    write(tmp_path / "ml-100k/u.data", f"1\t2\t3\t881250949\n1\t3\t{bad}\t881250950\n")
    raises_at(MovieLens100K(str(tmp_path)).load_interactions, "u.data", 2, "rating")
    write(tmp_path / "ml-1m/ratings.dat", f"1::2::{bad}::978300760\n")
    raises_at(MovieLens1M(str(tmp_path)).load_interactions, "ratings.dat", 1, "rating")
    path = write(tmp_path / "i.csv", f"user,item,rating\nu,a,4\nu,b,{bad}\n")
    if bad == "nan":  # a written NaN is a missing rating in generic tables (like NA, null)
        assert np.isnan(GenericTable(str(path)).load_interactions()["rating"].iloc[1])
    else:
        raises_at(GenericTable(str(path)).load_interactions, "i.csv", 3, "rating")
    write(tmp_path / "m.json", f'{{"user_id": "u", "item_id": 1, "rating": "{bad}"}}\n')
    raises_at(
        lambda: ModCloth(str(tmp_path), file="m.json").load_interactions(), "m.json", 1, "rating"
    )


def test_generic_min_rating_none_accepts_negative_scales(tmp_path: Path) -> None:
    path = write(tmp_path / "jester.csv", "user,item,rating\nu,a,-9.5\nu,b,7\n")
    table = GenericTable(str(path), min_rating=None).load_interactions()
    assert table["rating"].tolist() == [-9.5, 7.0]


def test_negative_play_counts_are_dropped_and_counted(tmp_path: Path) -> None:
    good = "".join(f"u{i:03d}\t\tartist{i}\t{i + 1}\n" for i in range(2000))
    write(
        tmp_path / "lastfm-dataset-360K/usersha1-artmbid-artname-plays.tsv", good + "u1\t\tx\t-5\n"
    )
    with pytest.warns(
        UserWarning, match=r"skipped 1 of 2001 unusable lines .*plays must be a number >= 0"
    ):
        table = LastFM360K(str(tmp_path)).load_interactions()
    assert len(table) == 2000 and (table["rating"] >= 0).all()


def test_lastfm_odd_ages_become_unknown(tmp_path: Path) -> None:
    write(
        tmp_path / "lastfm-dataset-360K/usersha1-profile.tsv",
        "a\tf\t-1337\tPeru\tx\nb\tm\t25\tPeru\tx\n",
    )
    with pytest.warns(UserWarning, match=r"1 age\(s\) outside 1-120"):
        users = LastFM360K(str(tmp_path)).load_users()
    assert users["age"].isna().tolist() == [True, False] and users["age"].iloc[1] == 25


def test_users_missing_from_profile_are_counted_or_strict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inter = pd.DataFrame(
        {
            "user": ["1", "1", "2", "3"],
            "item": ["a", "b", "a", "c"],
            "rating": np.nan,
            "timestamp": [1, 2, 3, 4],
        }
    )
    users = pd.DataFrame({"gender": ["F"]}, index=pd.Index(["1"], name="user"))
    with (
        caplog.at_level(logging.INFO, logger="lit_unlearn.datamodules"),
        pytest.warns(UserWarning, match=r"dropped 2 of 3 interacting users \(2 interactions\)"),
    ):
        data, _ = preprocess(inter, users, rating_threshold=None, user_k=1, item_k=1)
    assert data.user_ids == ["1"]
    summary = [r.getMessage() for r in caplog.records if "loading summary" in r.getMessage()]
    assert len(summary) == 1 and "dropped 2 of 3 users absent from the users table" in summary[0]
    with pytest.raises(DataFormatError, match="strict_users is on"):
        preprocess(inter, users, rating_threshold=None, user_k=1, item_k=1, strict_users=True)


def test_summary_logged_on_every_load(caplog: pytest.LogCaptureFixture) -> None:
    inter = pd.DataFrame(
        {"user": ["1", "1"], "item": ["a", "a"], "rating": [4.0, 2.0], "timestamp": [1, 2]}
    )
    with caplog.at_level(logging.INFO, logger="lit_unlearn.datamodules"):
        preprocess(inter, None, rating_threshold=None, user_k=1, item_k=1)
    assert any("merged 1 repeated (user, item) events" in r.getMessage() for r in caplog.records)


def test_ids_spelled_two_ways(tmp_path: Path) -> None:
    path = write(tmp_path / "i.csv", "user,item\n007,a\n7,b\n")
    with pytest.raises(DataFormatError, match=r"user ids '007' and '7' spell the same number"):
        GenericTable(str(path)).load_interactions()
    inter = write(tmp_path / "j.csv", "user,item\n7,a\n8,b\n")
    users = write(tmp_path / "u.csv", "user,gender\n007,F\n8,M\n")
    src = GenericTable(str(inter), str(users))
    with pytest.raises(
        DataFormatError, match=r"interaction user '7' is not in the users table, but '007' is"
    ):
        preprocess(
            src.load_interactions(), src.load_users(), rating_threshold=None, user_k=1, item_k=1
        )


def test_extra_and_missing_fields_in_csv_rows(tmp_path: Path) -> None:
    first = write(tmp_path / "a.csv", "user,item,rating\n1,2,3,9\n4,5,6\n")  # pandas: index shift
    err = raises_at(GenericTable(str(first)).load_interactions, "a.csv", 2, None)
    assert "expected 3 comma-separated fields" in str(err) and "found 4" in str(err)
    later = write(tmp_path / "b.csv", "user,item,rating\n1,2,3\n4,5,6,7\n")
    raises_at(GenericTable(str(later)).load_interactions, "b.csv", 3, None)
    short = write(tmp_path / "c.csv", "user,item,rating\n1,2,3\n4,5\n")
    raises_at(GenericTable(str(short)).load_interactions, "c.csv", 3, None)
    quoted = write(tmp_path / "d.csv", 'user,item,rating\n1,"a,b",3\n\n4,"c\nd",5\n6,e,1,2\n')
    raises_at(GenericTable(str(quoted)).load_interactions, "d.csv", 6, None)
    dup = write(tmp_path / "e.csv", "user,user,item\n1,2,3\n")
    with pytest.raises(DataFormatError, match=r"names column\(s\) \['user'\] more than once"):
        GenericTable(str(dup)).load_interactions()


def test_parquet_float_ids_match_integer_users(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    inter = tmp_path / "i.parquet"
    pd.DataFrame({"user": [1.0, 2.0, np.nan], "item": [10, 20, 30]}).iloc[:2].to_parquet(inter)
    users = tmp_path / "u.csv"
    write(users, "user,gender\n1,F\n2,M\n")
    src = GenericTable(str(inter), str(users))
    data, _ = preprocess(
        src.load_interactions(), src.load_users(), rating_threshold=None, user_k=1, item_k=1
    )
    assert data.user_ids == ["1", "2"]
    pd.DataFrame({"user": [1.5], "item": [1]}).to_parquet(inter)
    with pytest.raises(DataFormatError, match=r"row 1: user must be text or an integer id"):
        GenericTable(str(inter)).load_interactions()


def test_lastfm_latin1_artists_stay_distinct(tmp_path: Path) -> None:
    lines = [
        f"user_000001\t2009-05-04T23:08:{i % 60:02d}Z\t\tartist{i}\t\tt\n".encode()
        for i in range(10)
    ]
    lines += [
        b"user_000001\t2009-05-04T23:08:57Z\t\tM\xf6tley\t\tt\n",
        b"user_000001\t2009-05-04T23:08:58Z\t\tM\xfctley\t\tt\n",
    ]
    write(
        tmp_path / "lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv",
        b"".join(lines),
    )
    with pytest.warns(UserWarning, match=r"2 line\(s\) are not valid UTF-8 \(first: line 11\)"):
        table = LastFM1K(str(tmp_path)).load_interactions()
    assert {"Mötley", "Mütley"} <= set(table["item"])
