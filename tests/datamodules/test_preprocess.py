"""Tests for lit_unlearn.datamodules.preprocess on small hand-built tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from lit_unlearn.datamodules.preprocess import (
    IndexedInteractions,
    balance_users,
    deduplicate,
    k_core,
    preprocess,
    reindex,
    sorted_ids,
    to_implicit,
)


def table(rows: Sequence[tuple[str, str, float, int]]) -> pd.DataFrame:
    """Interactions table in the schema's dtypes."""
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    return frame.astype({"user": str, "item": str, "rating": "float64", "timestamp": "int64"})


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["user"], frame["item"], strict=True))


# ---------------------------------------------------------------- to_implicit


def test_to_implicit_keeps_ratings_at_or_above_threshold() -> None:
    frame = table([("1", "a", 5, 1), ("1", "b", 4, 2), ("2", "a", 3.5, 3), ("2", "c", np.nan, 4)])
    out = to_implicit(frame, 4.0)
    assert list(out["item"]) == ["a", "b"]
    assert list(out.index) == [0, 1]


def test_to_implicit_none_keeps_everything_including_nan() -> None:
    frame = table([("1", "a", np.nan, 1), ("2", "b", np.nan, 2)])
    assert len(to_implicit(frame, None)) == 2


def test_to_implicit_all_nan_with_threshold_says_no_ratings() -> None:
    frame = table([("1", "a", np.nan, 1), ("2", "b", np.nan, 2)])
    with pytest.raises(ValueError, match="no ratings"):
        to_implicit(frame, 4.0)


def test_to_implicit_removing_everything_is_an_error() -> None:
    frame = table([("1", "a", 1, 1), ("2", "b", 2, 2)])
    with pytest.raises(ValueError, match="removed every interaction"):
        to_implicit(frame, 4.0)


# ---------------------------------------------------------------- deduplicate


def test_deduplicate_keeps_latest_timestamp_and_max_rating() -> None:
    frame = table(
        [
            ("1", "a", 5, 10),  # first sighting, higher rating
            ("1", "b", 3, 20),
            ("1", "a", 2, 30),  # latest event of (1, a)
            ("2", "a", np.nan, 5),
            ("2", "a", 4, 1),
            ("1", "a", 1, 15),
        ]
    )
    out = deduplicate(frame)
    assert len(out) == 3
    got = {(u, i): (r, t) for u, i, r, t in out.itertuples(index=False)}
    assert got[("1", "a")] == (5.0, 30)
    assert got[("1", "b")] == (3.0, 20)
    assert got[("2", "a")] == (4.0, 5)  # NaN ignored by max, timestamp is the latest
    # Chosen rows keep original relative order (row of the latest event).
    assert list(zip(out["user"], out["item"], strict=True)) == [
        ("1", "b"),
        ("1", "a"),
        ("2", "a"),
    ]


def test_deduplicate_ties_take_the_later_row_and_is_deterministic() -> None:
    frame = table([("1", "a", 1, 7), ("1", "b", 1, 7), ("1", "a", 1, 7)])
    out = deduplicate(frame)
    # (1, a)'s tie is resolved by the later row, which comes after (1, b).
    assert list(out["item"]) == ["b", "a"]
    pd.testing.assert_frame_equal(out, deduplicate(frame))


def test_deduplicate_without_duplicates_is_identity() -> None:
    frame = table([("1", "a", 1, 3), ("2", "a", 2, 1)])
    pd.testing.assert_frame_equal(deduplicate(frame), frame)


def test_deduplicate_all_nan_ratings_stay_nan() -> None:
    frame = table([("1", "a", np.nan, 1), ("1", "a", np.nan, 2)])
    out = deduplicate(frame)
    assert len(out) == 1 and np.isnan(out["rating"].iloc[0])


# ---------------------------------------------------------------- k_core


def brute_force_core(frame: pd.DataFrame, user_k: int, item_k: int) -> set[tuple[str, str]]:
    """Reference: remove one violating node at a time until none is left."""
    edges = pairs(frame)
    while True:
        users = pd.Series([u for u, _ in edges]).value_counts()
        items = pd.Series([i for _, i in edges]).value_counts()
        bad_u = {u for u, c in users.items() if c < user_k}
        bad_i = {i for i, c in items.items() if c < item_k}
        if not bad_u and not bad_i:
            return edges
        edges = {(u, i) for u, i in edges if u not in bad_u and i not in bad_i}


def test_k_core_needs_several_passes() -> None:
    # A chain: removing user "u3" (1 row) makes item "c" sparse, which makes "u2" sparse, ...
    rows = [
        ("u0", "a", 1, 0),
        ("u0", "b", 1, 0),
        ("u1", "a", 1, 0),
        ("u1", "b", 1, 0),
        ("u2", "b", 1, 0),
        ("u2", "c", 1, 0),
        ("u3", "c", 1, 0),
    ]
    frame = table(rows)
    out = k_core(frame, user_k=2, item_k=2)
    assert pairs(out) == {("u0", "a"), ("u0", "b"), ("u1", "a"), ("u1", "b")}
    assert pairs(out) == brute_force_core(frame, 2, 2)
    # One pass is not the fixed point: with max_iter=1 it cannot confirm convergence.
    with pytest.raises(ValueError, match="did not converge"):
        k_core(frame, 2, 2, max_iter=1)


def test_k_core_matches_brute_force_on_random_graph() -> None:
    rng = np.random.default_rng(3)
    u = rng.integers(0, 40, 200)
    i = (rng.zipf(1.6, 200) % 60).astype(int)
    frame = deduplicate(table([(f"u{a}", f"i{b}", 1.0, 0) for a, b in zip(u, i, strict=True)]))
    out = k_core(frame, 3, 4)
    assert pairs(out) == brute_force_core(frame, 3, 4)
    assert out["user"].value_counts().min() >= 3
    assert out["item"].value_counts().min() >= 4


def test_k_core_keeps_row_order_and_disabled_sides() -> None:
    frame = table([("2", "x", 1, 0), ("1", "x", 1, 0), ("1", "y", 1, 0)])
    pd.testing.assert_frame_equal(k_core(frame, 1, 1), frame)
    assert list(k_core(frame, 1, 2)["user"]) == ["2", "1"]


def test_k_core_empty_result_mentions_k() -> None:
    frame = table([("1", "a", 1, 0), ("2", "b", 1, 0)])
    with pytest.raises(ValueError, match=r"user_k=5, item_k=5"):
        k_core(frame, 5, 5)
    with pytest.raises(ValueError, match=">= 0"):
        k_core(frame, -1, 2)


# ---------------------------------------------------------------- balance_users


def test_balance_users_exact_counts_and_determinism() -> None:
    users = pd.DataFrame({"gender": list("MMMMMMFFFX")}, index=[str(i) for i in range(10)])
    codes = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, -1], dtype=np.int64)
    out = balance_users(users, codes, seed=0)
    assert out["gender"].value_counts().to_dict() == {"M": 3, "F": 3}
    assert "9" not in out.index  # unknown dropped
    assert list(out.index) == sorted(out.index, key=int)  # original order kept
    pd.testing.assert_frame_equal(out, balance_users(users, codes, seed=0))
    draws = {tuple(balance_users(users, codes, seed=s).index) for s in range(20)}
    assert len(draws) > 1  # the seed matters


def test_balance_users_errors() -> None:
    users = pd.DataFrame({"g": ["a", "b", "c"]}, index=["1", "2", "3"])
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        balance_users(users, np.array([0, 2, 2]), seed=0)
    with pytest.raises(ValueError, match=r"\[2\]"):
        balance_users(users, np.array([0, 1, 1]), seed=0, num_classes=3)
    with pytest.raises(ValueError, match="unknown"):
        balance_users(users, np.array([-1, -1, -1]), seed=0)
    with pytest.raises(ValueError, match="aligned"):
        balance_users(users, np.array([0, 1]), seed=0)


# ---------------------------------------------------------------- ids


def test_sorted_ids_natural_order() -> None:
    assert sorted_ids(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sorted_ids(["-3", "007", "7", "20"]) == ["-3", "007", "7", "20"]
    assert sorted_ids(["b10", "b2", "a"]) == ["a", "b10", "b2"]
    assert sorted_ids(["10", "2", "x"]) == ["10", "2", "x"]
    assert sorted_ids([]) == []


def test_reindex_natural_order() -> None:
    frame = table([("10", "5", 1, 3), ("2", "40", 1, 1), ("2", "5", 1, 2)])
    data = reindex(frame)
    assert data.user_ids == ["2", "10"]
    assert data.item_ids == ["5", "40"]
    np.testing.assert_array_equal(data.user, [1, 0, 0])
    np.testing.assert_array_equal(data.item, [0, 1, 0])
    np.testing.assert_array_equal(data.timestamp, [3, 1, 2])
    assert (data.num_users, data.num_items, len(data)) == (2, 2, 3)
    assert data.user.dtype == np.int64 and data.item.dtype == np.int64


def test_reindex_with_given_user_order_drops_others() -> None:
    frame = table([("a", "x", 1, 0), ("b", "y", 1, 1), ("c", "z", 1, 2)])
    data = reindex(frame, user_ids=["c", "zz", "a"])
    assert data.user_ids == ["c", "zz", "a"]
    assert data.item_ids == ["x", "z"]  # item "y" belonged to dropped user "b"
    np.testing.assert_array_equal(data.user, [2, 0])
    np.testing.assert_array_equal(data.item, [0, 1])
    np.testing.assert_array_equal(data.timestamp, [0, 2])
    with pytest.raises(ValueError, match="more than once"):
        reindex(frame, user_ids=["a", "a"])
    with pytest.raises(ValueError, match="none of the"):
        reindex(frame, user_ids=["q"])


def test_indexed_interactions_validates() -> None:
    with pytest.raises(ValueError, match="int64"):
        IndexedInteractions(
            user=np.array([0], dtype=np.int32),
            item=np.array([0]),
            timestamp=np.array([0]),
            user_ids=["a"],
            item_ids=["x"],
        )
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        IndexedInteractions(
            user=np.array([1], dtype=np.int64),
            item=np.array([0], dtype=np.int64),
            timestamp=np.array([0], dtype=np.int64),
            user_ids=["a"],
            item_ids=["x"],
        )


# ---------------------------------------------------------------- pipeline


def test_preprocess_pipeline_and_users_alignment() -> None:
    rows = []
    for u in ["1", "2", "10"]:
        for it in ["a", "b", "c"]:
            rows.append((u, it, 5.0, 1))
    rows += [("1", "a", 5.0, 9)]  # duplicate, removed by dedup
    rows += [("3", "a", 5.0, 1), ("3", "b", 5.0, 1)]  # user 3 too sparse for user_k=3
    rows += [("99", "a", 5.0, 1), ("99", "b", 5.0, 1), ("99", "c", 5.0, 1)]  # not in users
    rows += [("2", "d", 1.0, 1)]  # below threshold
    frame = table(rows)
    users = pd.DataFrame({"gender": ["F", "M", "M", "F"]}, index=[10, 3, 2, 1])
    data, kept = preprocess(frame, users, rating_threshold=4, user_k=3, item_k=2)
    assert data.user_ids == ["1", "2", "10"]
    assert data.item_ids == ["a", "b", "c"]
    assert len(data) == 9
    assert list(kept.index) == data.user_ids
    assert list(kept["gender"]) == ["F", "M", "F"]
    assert kept.index.name == "user"
    # The latest timestamp of the duplicated pair survives.
    row = np.flatnonzero((data.user == 0) & (data.item == 0))
    assert data.timestamp[row].tolist() == [9]

    data2, kept2 = preprocess(frame, None, rating_threshold=None, user_k=1, item_k=1)
    assert list(kept2.index) == data2.user_ids == ["1", "2", "3", "10", "99"]
    assert kept2.shape[1] == 0


def test_preprocess_errors_name_the_stage() -> None:
    frame = table([("1", "a", 5.0, 1), ("2", "a", 5.0, 1)])
    users = pd.DataFrame({"g": ["F"]}, index=["7"])
    with pytest.raises(ValueError, match="users table"):
        preprocess(frame, users, rating_threshold=None, user_k=1, item_k=1)
    with pytest.raises(ValueError, match="k_core"):
        preprocess(frame, None, rating_threshold=None, user_k=3, item_k=1)
    with pytest.raises(ValueError, match="to_implicit"):
        preprocess(frame, None, rating_threshold=6, user_k=1, item_k=1)


def test_deduplicate_matches_pandas_reference_with_ties() -> None:
    rng = np.random.default_rng(0)
    n = 400
    frame = table(
        [
            (f"u{a}", f"i{b}", float(r), int(t))
            for a, b, r, t in zip(
                rng.integers(0, 8, n),
                rng.integers(0, 8, n),
                rng.integers(1, 6, n),
                rng.integers(0, 4, n),  # many timestamp ties
                strict=True,
            )
        ]
    )
    frame.loc[rng.random(n) < 0.2, "rating"] = np.nan
    out = deduplicate(frame)
    # Reference: stable sort by timestamp, the last row of each pair is the latest event.
    ref = frame.reset_index().sort_values("timestamp", kind="stable")
    latest = ref.groupby(["user", "item"]).tail(1).sort_values("index")
    best = frame.groupby(["user", "item"])["rating"].max()
    assert list(zip(out["user"], out["item"], strict=True)) == list(
        zip(latest["user"], latest["item"], strict=True)
    )
    np.testing.assert_array_equal(out["timestamp"], latest["timestamp"])
    expected = [best.loc[(u, i)] for u, i in zip(out["user"], out["item"], strict=True)]
    np.testing.assert_array_equal(out["rating"].to_numpy(), np.asarray(expected, dtype=float))
