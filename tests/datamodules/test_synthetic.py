"""The synthetic source: fixed tables for a seed; the long-tail mode for sparse-data benchmarks."""

from __future__ import annotations

import hashlib

import pytest

from lit_unlearn.datamodules import Synthetic

# The default tables as first generated (before the blockwise draw and the long-tail options):
# the demo, the tests and the committed reports all stand on them.
DEFAULT_SHA256 = "47afbe7cb3ef80090ddf11ddd827b537e1cdd6421ca2b7e206eaa4c65f8b23b6"


def _digest(source: Synthetic) -> str:
    frame = source.load_interactions()[["user", "item", "rating", "timestamp"]]
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def test_default_tables_do_not_change() -> None:
    assert _digest(Synthetic()) == DEFAULT_SHA256


def test_long_tail_mode_makes_most_items_rare_and_some_users_heavy() -> None:
    kwargs = {"num_users": 400, "num_items": 3000, "interactions_per_user": 20}
    mild = Synthetic(**kwargs).load_interactions()  # type: ignore[arg-type]
    tail = Synthetic(
        **kwargs,  # type: ignore[arg-type]
        popularity_exponent=1.0,
        activity="lognormal",
    ).load_interactions()
    mild_items, tail_items = mild.groupby("item").size(), tail.groupby("item").size()
    # Zipf popularity: the top 1% of items take a far larger share of the interactions.
    top = 30
    share = {
        name: items.nlargest(top).sum() / items.sum()
        for name, items in (("mild", mild_items), ("tail", tail_items))
    }
    assert share["tail"] > 1.4 * share["mild"]
    # Log-normal activity: heavy users well beyond the uniform mode's 1.5x cap.
    users = tail.groupby("user").size()
    assert users.max() > 3 * 20 and users.min() >= 2
    assert mild.groupby("user").size().max() <= 30
    # Same seed, same tables.
    again = Synthetic(**kwargs, popularity_exponent=1.0, activity="lognormal")  # type: ignore[arg-type]
    assert again.load_interactions().equals(tail)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"popularity_exponent": -1.0}, "popularity_exponent"),
        ({"popularity_exponent": float("nan")}, "popularity_exponent"),
        ({"activity": "pareto"}, "activity"),
    ],
)
def test_bad_long_tail_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Synthetic(**kwargs)  # type: ignore[arg-type]
