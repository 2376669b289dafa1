"""Forgetting requests: sizes, reproducibility, noise outside every split; the DataModule."""

from __future__ import annotations

import numpy as np
import pytest

from lit_unlearn.datamodules import ForgettingData, Synthetic
from lit_unlearn.datamodules.forgetting import Scenario, make_forgetting_request


def _train(num_users: int = 30, num_items: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [
        np.stack([np.full(k, u), rng.choice(num_items, size=k, replace=False)], axis=1)
        for u, k in enumerate(rng.integers(1, 12, size=num_users))
    ]
    return np.concatenate(rows).astype(np.int64)


@pytest.mark.parametrize("scenario", ["privacy", "noise"])
def test_each_user_forgets_half_of_their_interactions(scenario: Scenario) -> None:
    train = _train()
    req = make_forgetting_request(train, 30, 50, scenario, num_forget_users=8, seed=3)
    counts = np.bincount(train[:, 0], minlength=30)
    assert len(req.users) == 8 and (counts[req.users] >= 2).all()
    per_user = np.bincount(req.forget[:, 0], minlength=30)
    np.testing.assert_array_equal(per_user[req.users], counts[req.users] // 2)
    assert per_user.sum() == per_user[req.users].sum()  # only forgetting users forget
    keys = lambda a: set(map(tuple, a.tolist()))  # noqa: E731
    assert keys(req.forget) <= keys(req.original)
    assert keys(req.remaining) == keys(req.original) - keys(req.forget)
    if scenario == "noise":
        assert keys(req.remaining) == keys(train) and not keys(req.forget) & keys(train)
    else:
        assert keys(req.original) == keys(train)


def test_noise_avoids_every_known_pair_and_is_reproducible() -> None:
    train = _train()
    test = np.array([[u, i] for u in range(30) for i in (48, 49)], dtype=np.int64)
    seen = np.concatenate([train, test])
    a = make_forgetting_request(train, 30, 50, "noise", 10, seed=1, seen=seen)
    b = make_forgetting_request(train, 30, 50, "noise", 10, seed=1, seen=seen)
    np.testing.assert_array_equal(a.forget, b.forget)
    assert not np.isin(a.forget[:, 1], [48, 49]).any()
    c = make_forgetting_request(train, 30, 50, "noise", 10, seed=2, seen=seen)
    assert not np.array_equal(a.forget, c.forget)


def test_bad_requests_fail_clearly() -> None:
    train = _train()
    with pytest.raises(ValueError, match="scenario"):
        make_forgetting_request(train, 30, 50, "delete", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only"):
        make_forgetting_request(train, 30, 50, "privacy", 1000)
    with pytest.raises(ValueError, match=">= 1"):
        make_forgetting_request(train, 30, 50, "privacy", 0)
    with pytest.raises(ValueError, match="non-empty"):
        make_forgetting_request(np.zeros((0, 2), dtype=np.int64), 30, 50, "privacy", 1)


def test_datamodule_serves_all_or_remaining_with_the_same_request() -> None:
    src = Synthetic(num_users=80, num_items=60, interactions_per_user=10)
    full = ForgettingData(src, num_forget_users=5, train_on="all")
    rest = ForgettingData(src, num_forget_users=5, train_on="remaining", shuffle_seed=7)
    np.testing.assert_array_equal(full.request.forget, rest.request.forget)
    assert len(full.split.train) == len(rest.split.train) + len(rest.request.forget)
    np.testing.assert_array_equal(full.split.test, rest.split.test)
    assert rest.shuffle_seed() == 7 and full.shuffle_seed() == full.seed
    with pytest.raises(ValueError, match="train_on"):
        ForgettingData(src, train_on="some")  # type: ignore[arg-type]
