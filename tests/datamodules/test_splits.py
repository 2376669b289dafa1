"""Tests for lit_unlearn.datamodules.splits, on hand-built data and on real MovieLens-100K."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lit_unlearn.datamodules.preprocess import (
    IndexedInteractions,
    deduplicate,
    k_core,
    reindex,
    to_implicit,
)
from lit_unlearn.datamodules.splits import (
    Split,
    check_split,
    leave_one_out,
    random_ratio,
    shadow_mask,
)

ML100K = Path("/work/shared/datasets/ml-100k")


def indexed(user: list[int], item: list[int], timestamp: list[int]) -> IndexedInteractions:
    return IndexedInteractions(
        user=np.asarray(user, dtype=np.int64),
        item=np.asarray(item, dtype=np.int64),
        timestamp=np.asarray(timestamp, dtype=np.int64),
        user_ids=[str(u) for u in range(max(user) + 1)],
        item_ids=[str(i) for i in range(max(item) + 1)],
    )


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(u), int(i)) for u, i in pairs}


def random_data(num_users: int, seed: int, max_len: int = 30) -> IndexedInteractions:
    """Users with 1..max_len distinct items each, rows shuffled."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(num_users):
        n = int(rng.integers(1, max_len + 1))
        users += [u] * n
        items += rng.choice(100, size=n, replace=False).tolist()
    perm = rng.permutation(len(users))
    return indexed(
        list(np.asarray(users)[perm]),
        list(np.asarray(items)[perm]),
        rng.integers(0, 1000, len(users)).tolist(),
    )


# ---------------------------------------------------------------- leave_one_out


def test_leave_one_out_picks_latest_and_second_latest() -> None:
    # user 0: items 5 (t=3), 6 (t=1), 7 (t=9), 8 (t=4) -> test 7, val 8
    data = indexed([0, 0, 0, 0], [5, 6, 7, 8], [3, 1, 9, 4])
    split = leave_one_out(data)
    assert as_set(split.test) == {(0, 7)}
    assert as_set(split.val) == {(0, 8)}
    assert as_set(split.train) == {(0, 5), (0, 6)}
    check_split(split, data.num_users, data.num_items)


def test_leave_one_out_breaks_ties_by_row_order() -> None:
    data = indexed([0, 0, 0, 0], [1, 2, 3, 4], [5, 9, 9, 9])
    split = leave_one_out(data)
    assert as_set(split.test) == {(0, 4)}  # last row among the t=9 ties
    assert as_set(split.val) == {(0, 3)}
    assert as_set(split.train) == {(0, 1), (0, 2)}


def test_leave_one_out_short_users() -> None:
    # user 0: 1 interaction, user 1: 2 interactions, user 2: 3 interactions
    data = indexed([0, 1, 1, 2, 2, 2], [0, 1, 2, 3, 4, 5], [0, 2, 1, 1, 2, 3])
    split = leave_one_out(data, validation=True)
    assert as_set(split.train) == {(0, 0), (1, 2), (2, 3)}
    assert as_set(split.val) == {(2, 4)}
    assert as_set(split.test) == {(1, 1), (2, 5)}
    no_val = leave_one_out(data, validation=False)
    assert no_val.num_val == 0 and not no_val.has_val
    assert as_set(no_val.test) == {(1, 1), (2, 5)}
    assert as_set(no_val.train) == {(0, 0), (1, 2), (2, 3), (2, 4)}
    assert no_val.val.shape == (0, 2) and no_val.val.dtype == np.int64


def test_leave_one_out_random_matches_reference() -> None:
    data = random_data(50, seed=1)
    split = leave_one_out(data)
    check_split(split, data.num_users, data.num_items)
    assert split.num_train + split.num_val + split.num_test == len(data)
    for u in range(data.num_users):
        rows = np.flatnonzero(data.user == u)
        # Reference order: timestamp, then row position.
        ordered = sorted(rows, key=lambda r: (data.timestamp[r], r))
        items = [int(data.item[r]) for r in ordered]
        test = [int(i) for uu, i in split.test if uu == u]
        val = [int(i) for uu, i in split.val if uu == u]
        if len(items) >= 2:
            assert test == [items[-1]]
        else:
            assert test == []
        assert val == ([items[-2]] if len(items) >= 3 else [])


# ---------------------------------------------------------------- random_ratio


def test_random_ratio_per_user_proportions() -> None:
    data = indexed([0] * 10 + [1] * 20 + [2] * 1 + [3] * 2, list(range(33)), [0] * 33)
    split = random_ratio(data, train=0.8, val=0.1, seed=0)
    check_split(split, data.num_users, data.num_items)

    def count(part: np.ndarray, u: int) -> int:
        return int((part[:, 0] == u).sum())

    assert [count(split.train, u) for u in range(4)] == [8, 16, 1, 1]
    assert [count(split.val, u) for u in range(4)] == [1, 2, 0, 0]
    assert [count(split.test, u) for u in range(4)] == [1, 2, 0, 1]


def test_random_ratio_determinism_and_every_user_has_test() -> None:
    data = random_data(80, seed=2)
    a = random_ratio(data, train=0.7, val=0.1, seed=5)
    b = random_ratio(data, train=0.7, val=0.1, seed=5)
    c = random_ratio(data, train=0.7, val=0.1, seed=6)
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        np.testing.assert_array_equal(x, y)
    assert as_set(a.test) != as_set(c.test)
    check_split(a, data.num_users, data.num_items)
    counts = np.bincount(data.user, minlength=data.num_users)
    tested = np.unique(a.test[:, 0])
    np.testing.assert_array_equal(tested, np.flatnonzero(counts >= 2))
    assert a.num_train + a.num_val + a.num_test == len(data)


def test_random_ratio_full_train_still_tests() -> None:
    data = indexed([0, 0, 0, 1], [0, 1, 2, 3], [0, 0, 0, 0])
    split = random_ratio(data, train=1.0)
    assert split.num_train == 3 and split.num_test == 1
    assert split.test[0, 0] == 0


@pytest.mark.parametrize(
    ("train", "val", "message"),
    [(0.0, 0.0, "train fraction"), (1.2, 0.0, "train fraction"), (0.8, -0.1, "val fraction"),
     (0.8, 0.3, "train \\+ val")],
)  # fmt: skip
def test_random_ratio_bad_fractions(train: float, val: float, message: str) -> None:
    data = indexed([0, 0], [0, 1], [0, 0])
    with pytest.raises(ValueError, match=message):
        random_ratio(data, train=train, val=val)


# ---------------------------------------------------------------- shadow_mask


def test_shadow_mask_is_stratified_and_deterministic() -> None:
    codes = np.array([0] * 50 + [1] * 20 + [2] * 3 + [3] * 1 + [-1] * 10, dtype=np.int64)
    mask = shadow_mask(codes, len(codes), fraction=0.2, seed=0)
    assert mask.dtype == np.bool_ and mask.shape == codes.shape
    per_class = {int(c): int(mask[codes == c].sum()) for c in np.unique(codes)}
    assert per_class == {0: 10, 1: 4, 2: 1, 3: 0, -1: 2}
    np.testing.assert_array_equal(mask, shadow_mask(codes, len(codes), 0.2, seed=0))
    assert not np.array_equal(mask, shadow_mask(codes, len(codes), 0.2, seed=1))


def test_shadow_mask_small_classes_and_no_codes() -> None:
    codes = np.array([0, 0, 1, 1, 1], dtype=np.int64)
    mask = shadow_mask(codes, 5, fraction=0.9, seed=0)
    assert int(mask[codes == 0].sum()) == 1  # never a whole class of >= 2
    assert int(mask[codes == 1].sum()) == 2
    plain = shadow_mask(None, 100, fraction=0.25, seed=3)
    assert int(plain.sum()) == 25


def test_shadow_mask_errors() -> None:
    with pytest.raises(ValueError, match="fraction"):
        shadow_mask(None, 10, fraction=1.0)
    with pytest.raises(ValueError, match="fraction"):
        shadow_mask(None, 10, fraction=0.0)
    with pytest.raises(ValueError, match="shape"):
        shadow_mask(np.zeros(3, dtype=np.int64), 4)
    with pytest.raises(ValueError, match=">= -1"):
        shadow_mask(np.array([0, -2]), 2)


# ---------------------------------------------------------------- check_split / Split


def test_check_split_catches_leaks_and_range() -> None:
    e = np.zeros((0, 2), dtype=np.int64)
    leak = Split(train=np.array([[0, 1]]), val=e, test=np.array([[0, 1]]))
    with pytest.raises(ValueError, match="both train and test"):
        check_split(leak, 1, 2)
    out_of_range = Split(train=np.array([[0, 2]]), val=e, test=e)
    with pytest.raises(ValueError, match="item ids"):
        check_split(out_of_range, 1, 2)
    with pytest.raises(ValueError, match=r"shape \[n, 2\]"):
        Split(train=np.zeros(3, dtype=np.int64), val=e, test=e)


# ---------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.skipif(not (ML100K / "u.data").exists(), reason="ML-100K not available")
def test_ml100k_implicit_5core_leave_one_out() -> None:
    start = time.perf_counter()
    raw = pd.read_csv(
        ML100K / "u.data",
        sep="\t",
        names=["user", "item", "rating", "timestamp"],
        dtype={"user": "str", "item": "str", "rating": "float64", "timestamp": "int64"},
    )
    assert len(raw) == 100_000
    frame = k_core(deduplicate(to_implicit(raw, 4.0)), user_k=5, item_k=5)
    data = reindex(frame)
    split = leave_one_out(data, validation=True)
    elapsed = time.perf_counter() - start
    print(
        f"ML-100K >=4, 5-core: {len(data)} interactions, {data.num_users} users, "
        f"{data.num_items} items; train/val/test {split.num_train}/{split.num_val}/"
        f"{split.num_test}; {elapsed:.2f}s"
    )
    # 55,375 ratings >= 4; the 5-core keeps almost all users and ~1.2-1.4k items.
    assert 50_000 <= len(data) <= 55_375
    assert 900 <= data.num_users <= 943
    assert 1_000 <= data.num_items <= 1_500
    check_split(split, data.num_users, data.num_items)
    # Every kept user has >= 5 interactions, so exactly one test item and one val item each.
    assert split.num_test == data.num_users == split.num_val
    np.testing.assert_array_equal(split.test[:, 0], np.arange(data.num_users))
    latest = pd.DataFrame({"u": data.user, "t": data.timestamp}).groupby("u")["t"].max()
    key = pd.Series(data.timestamp, index=pd.MultiIndex.from_arrays([data.user, data.item]))
    test_time = key.loc[list(map(tuple, split.test))].to_numpy()
    np.testing.assert_array_equal(test_time, latest.sort_index().to_numpy())
    # Test items are latest also against the raw table (ids mapped back).
    raw_latest = frame.groupby("user")["timestamp"].max()
    assert int(raw_latest.loc[data.user_ids[0]]) == int(test_time[0])


def test_leave_one_out_huge_timestamps_use_the_fallback_sort() -> None:
    # Timestamps spanning ~2^63 cannot be packed with the user code: np.lexsort path.
    big = 2**62
    data = indexed([0, 0, 0, 1, 1], [0, 1, 2, 3, 4], [big, -big, big, 5, -big])
    split = leave_one_out(data)
    assert as_set(split.test) == {(0, 2), (1, 3)}
    assert as_set(split.val) == {(0, 0)}
    assert as_set(split.train) == {(0, 1), (1, 4)}
