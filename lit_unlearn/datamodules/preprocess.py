"""Turn a raw interactions table into contiguous-id implicit feedback.

The pipeline every recommender experiment runs before splitting (see :func:`preprocess`):

1. :func:`to_implicit`: explicit ratings become implicit feedback by keeping ratings at or above
   a threshold (``4`` on MovieLens in most unlearning papers); sources without ratings skip it.
2. :func:`deduplicate`: one row per (user, item). Repeated events (Last.FM plays, re-ratings)
   would otherwise inflate k-core counts and let the same pair land in train *and* test.
3. Users missing from the users table are dropped: attribute-inference attacks need a label (or an
   explicit unknown) for every model user, and a user without a profile row cannot be attacked.
   The drop is counted in a warning (``strict_users=True`` makes it an error), and an id
   written differently in the two tables (``"7"`` vs ``"007"``, ``"1"`` vs ``"1.0"``) is an
   error, not a silent drop.
4. :func:`k_core`: the usual ``k``-core filter, iterated to its fixed point.
5. :func:`reindex`: contiguous ``0..n-1`` ids in natural raw-id order, so the same data always
   maps to the same embedding rows, whatever order the file listed them in.

Everything is vectorised with pandas/numpy (factorised integer codes, ``bincount``, stable sorts)
so the 20M-row Last.FM/MovieLens-20M tables preprocess in seconds, not minutes.

All functions return new tables with a fresh ``RangeIndex`` and keep the input's row order (the
order :mod:`lit_unlearn.datamodules.splits` uses to break timestamp ties). :func:`preprocess`
logs a summary of what each stage dropped on every call (logger ``lit_unlearn.datamodules``).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from lit_unlearn.datamodules.schema import DataFormatError, id_key

__all__ = [
    "IndexedInteractions",
    "balance_users",
    "deduplicate",
    "k_core",
    "preprocess",
    "reindex",
    "sorted_ids",
    "to_implicit",
]

_INT_ID = re.compile(r"-?[0-9]+")

#: The data-layer logger (the loading summary goes here on every load).
logger = logging.getLogger("lit_unlearn.datamodules")


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], caller: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{caller}: interactions table lacks column(s) {missing}; got {list(frame.columns)} "
            "(see lit_unlearn.datamodules.schema)"
        )


def to_implicit(interactions: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """Keep the interactions whose rating is at least ``threshold``.

    A rating below the threshold is treated as "seen but not liked" and dropped, the standard
    explicit-to-implicit conversion. ``NaN`` ratings never pass a threshold, so a source without
    ratings must be used with ``threshold=None``; asking otherwise is a configuration error, and
    it is reported as such instead of silently returning an empty table.

    Args:
        interactions: Raw interactions table (``user``, ``item``, ``rating``, ``timestamp``).
        threshold: Minimum rating kept (inclusive), or ``None`` to keep every row.

    Returns:
        The kept rows in their original order, with a fresh index.

    Raises:
        ValueError: ``threshold`` is set but the table has no ratings, or no row reaches it.
    """
    if threshold is None:
        return interactions.reset_index(drop=True)
    _require_columns(interactions, ["rating"], "to_implicit")
    rating = interactions["rating"].to_numpy(dtype=np.float64, na_value=np.nan)
    if len(rating) == 0:
        raise ValueError("to_implicit: the interactions table is empty")
    if np.isnan(rating).all():
        raise ValueError(
            f"to_implicit: rating_threshold={threshold} but the source has no ratings (all NaN, "
            "e.g. play or click events); set rating_threshold to None for implicit sources"
        )
    keep = rating >= threshold  # NaN compares False: unrated rows are dropped
    if not keep.any():
        raise ValueError(
            f"to_implicit: rating_threshold={threshold} removed every interaction "
            f"(ratings range {np.nanmin(rating):g}..{np.nanmax(rating):g})"
        )
    return interactions.loc[keep].reset_index(drop=True)


def _codes(column: pd.Series) -> tuple[npt.NDArray[np.int64], int]:
    """Factorise a column into int64 codes (in order of appearance) and the number of codes."""
    codes, uniques = pd.factorize(column, sort=False, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), len(uniques)


def _pair_keys(interactions: pd.DataFrame) -> npt.NDArray[np.int64]:
    """One int64 key per (user, item) pair: ``user_code * num_items + item_code``."""
    user, _ = _codes(interactions["user"])
    item, num_items = _codes(interactions["item"])
    return user * np.int64(max(num_items, 1)) + item


def _stable_order(
    primary: npt.NDArray[np.int64], secondary: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Indices sorting rows by ``primary``, then ``secondary``, then row position.

    ``primary`` holds non-negative codes. When both keys fit together in 63 bits (always for
    real ids and second-resolution timestamps) they are packed into one int64 and sorted with a
    single stable argsort, about 3x faster than ``np.lexsort`` on tens of millions of rows.
    """
    n = len(primary)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    low = int(secondary.min())
    span = int(secondary.max()) - low
    primary_bits = int(primary.max()).bit_length()
    secondary_bits = span.bit_length()
    if primary_bits + secondary_bits <= 63:
        packed = (primary.astype(np.int64) << np.int64(secondary_bits)) | (
            secondary.astype(np.int64) - np.int64(low)
        )
        return np.argsort(packed, kind="stable").astype(np.int64, copy=False)
    return np.lexsort((secondary, primary)).astype(np.int64, copy=False)


def deduplicate(interactions: pd.DataFrame) -> pd.DataFrame:
    """Collapse repeated (user, item) events into one row.

    The kept row is the pair's *latest* event (largest timestamp; among equal timestamps the one
    appearing last in the table), so a leave-one-out split by time holds out what the user did
    most recently, not when they first met the item. The row's rating is the pair's maximum
    non-NaN rating (a user who once rated 5 liked the item even if a later event says 3).

    The output keeps the chosen rows in their original relative order, which preserves the
    "later row means later event" tie-break for equal timestamps. The result depends only on the
    table's content and order (no hashing or random choices), so it is deterministic.

    Args:
        interactions: Interactions table with ``user``, ``item``, ``rating`` and ``timestamp``.

    Returns:
        One row per (user, item) pair, every other column taken from the latest event.
    """
    _require_columns(interactions, ["user", "item", "rating", "timestamp"], "deduplicate")
    n = len(interactions)
    if n == 0:
        return interactions.reset_index(drop=True)
    key = _pair_keys(interactions)
    timestamp = interactions["timestamp"].to_numpy(dtype=np.int64)
    # One stable sort by pair keeps each pair's rows in table order; the latest event is then
    # the last row whose timestamp equals the pair's maximum (no second sort key needed).
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    boundary = np.flatnonzero(key_sorted[1:] != key_sorted[:-1]) + 1
    if len(boundary) + 1 == n:  # already unique: skip the copy-heavy path
        return interactions.reset_index(drop=True)
    first = np.concatenate(([0], boundary))
    group = np.zeros(n, dtype=np.int64)
    group[boundary] = 1
    group = np.cumsum(group)
    ts_sorted = timestamp[order]
    is_max = ts_sorted == np.maximum.reduceat(ts_sorted, first)[group]
    candidates = np.flatnonzero(is_max)
    cand_group = group[candidates]
    last = candidates[np.append(cand_group[1:] != cand_group[:-1], True)]
    rating = interactions["rating"].to_numpy(dtype=np.float64, na_value=np.nan)[order]
    with np.errstate(invalid="ignore"):
        best = np.fmax.reduceat(rating, first)  # fmax ignores NaN unless the whole group is NaN
    chosen = order[last]
    restore = np.argsort(chosen, kind="stable")
    out = interactions.iloc[chosen[restore]].reset_index(drop=True)
    out["rating"] = best[restore]
    return out


def k_core(
    interactions: pd.DataFrame, user_k: int, item_k: int, max_iter: int = 100
) -> pd.DataFrame:
    """Keep the largest subset where every user has ``>= user_k`` and every item ``>= item_k`` rows.

    One pass of "drop sparse users, drop sparse items" is not enough: dropping items lowers user
    counts below ``user_k`` again. The filter is repeated (both sides at once, on integer codes
    with ``bincount``) until nothing changes, which reaches the unique maximal k-core.

    Counts are rows, so deduplicate first if repeated events should count once.

    Args:
        interactions: Interactions table with ``user`` and ``item`` columns.
        user_k: Minimum interactions per user (``<= 1`` disables the user side).
        item_k: Minimum interactions per item (``<= 1`` disables the item side).
        max_iter: Passes allowed before giving up.

    Returns:
        The kept rows in their original order, with a fresh index.

    Raises:
        ValueError: Negative ``k``, ``max_iter < 1``, nothing left, or no fixed point within
            ``max_iter`` passes.
    """
    if user_k < 0 or item_k < 0:
        raise ValueError(f"k_core: user_k and item_k must be >= 0, got {user_k}, {item_k}")
    if max_iter < 1:
        raise ValueError(f"k_core: max_iter must be >= 1, got {max_iter}")
    _require_columns(interactions, ["user", "item"], "k_core")
    user, num_users = _codes(interactions["user"])
    item, num_items = _codes(interactions["item"])
    keep = np.ones(len(interactions), dtype=bool)
    for _ in range(max_iter):
        user_count = np.bincount(user[keep], minlength=num_users)
        item_count = np.bincount(item[keep], minlength=num_items)
        new_keep = keep & (user_count[user] >= user_k) & (item_count[item] >= item_k)
        if not new_keep.any():
            raise ValueError(
                f"k_core: no interaction survives the user_k={user_k}, item_k={item_k} core "
                f"(started from {len(interactions)} rows, {num_users} users, {num_items} items); "
                "lower the k values"
            )
        if np.array_equal(new_keep, keep):
            return interactions.loc[keep].reset_index(drop=True)
        keep = new_keep
    raise ValueError(
        f"k_core: user_k={user_k}, item_k={item_k} core did not converge in {max_iter} passes "
        f"({int(keep.sum())} rows left); raise max_iter"
    )


def balance_users(
    users: pd.DataFrame,
    codes: npt.NDArray[np.int64],
    seed: int,
    num_classes: int | None = None,
) -> pd.DataFrame:
    """Down-sample every attribute class to the size of the smallest one.

    Attribute-inference accuracy on a skewed attribute (73% male on ML-100K) rewards a
    majority-class attacker; balancing users first makes chance level ``1 / num_classes``. Users
    whose code is unknown (``-1``) carry no label and are dropped.

    Sampling uses ``numpy.random.default_rng(seed)`` over the table's row order, so the same
    table and seed always keep the same users. Kept users stay in their original order.

    Args:
        users: Users table; row ``r`` has class ``codes[r]``.
        codes: int codes aligned with ``users`` rows, ``-1`` for unknown.
        seed: Random seed for the down-sampling.
        num_classes: Number of classes the attribute has. Classes are ``0..num_classes-1``; when
            ``None`` they are ``0..codes.max()``.

    Returns:
        The kept rows of ``users`` (same columns and index), ``k * smallest`` rows for ``k``
        classes.

    Raises:
        ValueError: Misaligned or invalid codes, no known code, or an empty class (balancing it
            would remove everybody).
    """
    codes = np.asarray(codes)
    if codes.ndim != 1 or len(codes) != len(users):
        raise ValueError(
            f"balance_users: codes must be 1-D and aligned with the {len(users)} users, "
            f"got shape {codes.shape}"
        )
    if len(codes) and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"balance_users: codes must be integers, got dtype {codes.dtype}")
    codes = codes.astype(np.int64, copy=False)
    if (codes < -1).any():
        raise ValueError(f"balance_users: codes must be >= -1 (-1 = unknown), got {codes.min()}")
    known = codes >= 0
    if not known.any():
        raise ValueError("balance_users: every user has an unknown (-1) code; nothing to balance")
    if num_classes is None:
        num_classes = int(codes.max()) + 1
    elif codes.max() >= num_classes:
        raise ValueError(f"balance_users: code {codes.max()} >= num_classes={num_classes}")
    sizes = np.bincount(codes[known], minlength=num_classes)
    empty = np.flatnonzero(sizes == 0)
    if len(empty):
        raise ValueError(
            f"balance_users: class(es) {empty.tolist()} have no user (class sizes "
            f"{sizes.tolist()}); balancing would keep nobody"
        )
    target = int(sizes.min())
    rng = np.random.default_rng(seed)
    keys = rng.random(len(codes))
    stratum = np.where(known, codes, num_classes)  # unknown users sort into a last group
    order = np.lexsort((keys, stratum))
    counts = np.bincount(stratum, minlength=num_classes + 1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(codes)) - starts[stratum[order]]
    keep = np.zeros(len(codes), dtype=bool)
    keep[order] = (rank < target) & known[order]
    return users.iloc[np.flatnonzero(keep)]


def sorted_ids(values: Iterable[str]) -> list[str]:
    """Unique raw ids in natural order.

    MovieLens ids are integers stored as strings; lexicographic order would put ``"10"`` before
    ``"2"``, so contiguous id ``k`` would not be raw id ``k + 1``. When every id is an integer
    literal the order is numeric (string order breaks ties such as ``"7"``/``"007"``); otherwise
    (hashes, names) it is plain string order. Either way it never depends on file order.

    Args:
        values: Raw ids, duplicates allowed.

    Returns:
        The distinct ids, sorted.
    """
    unique = {str(v) for v in values}
    if unique and all(_INT_ID.fullmatch(v) for v in unique):
        return sorted(unique, key=lambda v: (int(v), v))
    return sorted(unique)


@dataclass(frozen=True, eq=False)
class IndexedInteractions:
    """Interactions with contiguous integer ids, ready for splitting and tensors.

    Attributes:
        user: ``int64[n]`` contiguous user id of each interaction.
        item: ``int64[n]`` contiguous item id of each interaction.
        timestamp: ``int64[n]`` event time; row order breaks ties (later row = later event).
        user_ids: Raw id of contiguous user ``k`` (``len == num_users``).
        item_ids: Raw id of contiguous item ``k`` (``len == num_items``).
    """

    user: npt.NDArray[np.int64]
    item: npt.NDArray[np.int64]
    timestamp: npt.NDArray[np.int64]
    user_ids: list[str]
    item_ids: list[str]

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("user", "item", "timestamp"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.dtype != np.int64 or arr.shape != (n,):
                raise ValueError(
                    f"IndexedInteractions.{name} must be an int64 array of shape ({n},), got "
                    f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}"
                )
        for name, ids, size in (
            ("user", self.user, len(self.user_ids)),
            ("item", self.item, len(self.item_ids)),
        ):
            if n and (ids.min() < 0 or ids.max() >= size):
                raise ValueError(
                    f"IndexedInteractions.{name} ids must lie in [0, {size}), got "
                    f"{ids.min()}..{ids.max()}"
                )

    @property
    def num_users(self) -> int:
        """Number of users (including any without interactions)."""
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        """Number of interactions (rows)."""
        return len(self.user)

    def __len__(self) -> int:
        return len(self.user)


def _index_codes(
    column: pd.Series, order: Sequence[str] | None
) -> tuple[npt.NDArray[np.int64], list[str]]:
    """Map raw ids to their position in ``order`` (natural order when None); -1 if absent."""
    codes, uniques = pd.factorize(column.astype(str), sort=False)
    raw = [str(u) for u in uniques]
    ids = sorted_ids(raw) if order is None else [str(v) for v in order]
    position = pd.Index(ids).get_indexer(pd.Index(raw)).astype(np.int64)
    return position[codes], ids


def reindex(
    interactions: pd.DataFrame, user_ids: Sequence[str] | None = None
) -> IndexedInteractions:
    """Give users and items contiguous ids.

    Users and items are numbered in natural raw-id order (:func:`sorted_ids`), so the mapping is
    a function of the id sets only. ``user_ids`` fixes the user order instead (e.g. the users
    table's order); interactions of users not listed are dropped and listed users without
    interactions keep their index. Items are numbered over the remaining interactions.

    Args:
        interactions: Table with ``user``, ``item`` and ``timestamp`` columns.
        user_ids: Raw user ids; contiguous user ``k`` is ``user_ids[k]``.

    Returns:
        The interactions, in their original row order, with contiguous ids.

    Raises:
        ValueError: Duplicate ``user_ids``, or no interaction left.
    """
    _require_columns(interactions, ["user", "item", "timestamp"], "reindex")
    if user_ids is not None:
        given = pd.Index([str(u) for u in user_ids])
        if given.has_duplicates:
            dup = given[given.duplicated()][0]
            raise ValueError(f"reindex: user_ids lists {dup!r} more than once")
    user, users = _index_codes(interactions["user"], user_ids)
    keep = user >= 0
    if not keep.any():
        raise ValueError(
            f"reindex: none of the {len(interactions)} interactions belongs to one of the "
            f"{len(users)} given user_ids"
        )
    frame = interactions if keep.all() else interactions.loc[keep]
    item, items = _index_codes(frame["item"], None)
    return IndexedInteractions(
        user=np.ascontiguousarray(user[keep]),
        item=item,
        timestamp=frame["timestamp"].to_numpy(dtype=np.int64),
        user_ids=users,
        item_ids=items,
    )


def _known_users(
    frame: pd.DataFrame, profiles: pd.DataFrame, strict_users: bool
) -> tuple[np.ndarray, int]:
    """Mask of the interactions whose user is in ``profiles``, and the number of users not.

    Raises:
        DataFormatError: A missing user whose id spells a table id differently (``"7"`` vs
            ``"007"``), or any missing user with ``strict_users``.
    """
    user = frame["user"].astype(str)
    known = user.isin(profiles.index).to_numpy()
    if known.all():
        return known, 0
    absent = pd.unique(user[~known].to_numpy(dtype=object))
    keys = {id_key(v): v for v in profiles.index}
    for value in absent:
        match = keys.get(id_key(value))
        if match is not None:
            raise DataFormatError(
                f"preprocess: interaction user {value!r} is not in the users table, but "
                f"{match!r} is: ids are compared as written, so write each id the same way in "
                "both files"
            )
    if not known.any():
        raise ValueError(
            f"preprocess: none of the {frame['user'].nunique()} interacting users is in the "
            f"users table ({len(profiles)} users; e.g. interaction user "
            f"{str(frame['user'].iloc[0])!r} vs table user {profiles.index[0]!r}); "
            "are both tables from the same source?"
        )
    count = (
        f"{len(absent)} of {user.nunique()} interacting users ({int((~known).sum())} "
        f"interactions), e.g. {[str(v) for v in absent[:5]]}"
    )
    if strict_users:
        raise DataFormatError(
            f"preprocess: {count} are not in the users table; strict_users is on (set it off "
            "to drop them with a warning)"
        )
    warnings.warn(
        f"preprocess: dropped {count}: they are not in the users table, so there are no "
        "attributes to audit them with (strict_users=True makes this an error)",
        stacklevel=3,
    )
    return known, len(absent)


def preprocess(
    interactions: pd.DataFrame,
    users: pd.DataFrame | None,
    *,
    rating_threshold: float | None,
    user_k: int,
    item_k: int,
    dedup: bool = True,
    strict_users: bool = False,
) -> tuple[IndexedInteractions, pd.DataFrame]:
    """Run the full pipeline: implicit -> dedup -> known users -> k-core -> reindex.

    Users are filtered to the users table *before* the k-core so the core is computed on the
    interactions that will actually be used (filtering afterwards could break the k guarantee).

    Args:
        interactions: Raw interactions table (see :mod:`lit_unlearn.datamodules.schema`).
        users: Users table indexed by raw user id, or ``None`` when there are no profiles.
        rating_threshold: See :func:`to_implicit`.
        user_k: See :func:`k_core`.
        item_k: See :func:`k_core`.
        dedup: Collapse repeated (user, item) events (:func:`deduplicate`).
        strict_users: Interactions of users missing from ``users`` are an error instead of
            being dropped with a warning.

    Returns:
        ``(data, users)``: the indexed interactions and the users table restricted to the kept
        users, row ``k`` being contiguous user ``k`` (a column-less table indexed by the kept
        raw ids when ``users`` is ``None``).

    Raises:
        ValueError: A stage removes everything or the inputs are inconsistent (e.g. an empty
            users table); the message names the stage.
        DataFormatError: An interaction user id spells a users-table id differently, or users
            are missing from the table with ``strict_users``.
    """
    n_raw, n_users_raw = len(interactions), interactions["user"].nunique()
    frame = to_implicit(interactions, rating_threshold)
    n_implicit = len(frame)
    if dedup:
        frame = deduplicate(frame)
    n_dedup = len(frame)
    profiles: pd.DataFrame | None = None
    absent_users = 0
    if users is not None:
        if len(users) == 0:
            raise ValueError(
                "preprocess: the users table is empty (a source without a users file has no "
                "profiles), so every interaction would be dropped; pass users=None to keep all "
                "interacting users"
            )
        if len(frame) == 0:
            raise ValueError("preprocess: no interaction is left before the users filter")
        profiles = users.copy()
        profiles.index = pd.Index(profiles.index.astype(str), name="user")
        if profiles.index.has_duplicates:
            dup = profiles.index[profiles.index.duplicated()][0]
            raise ValueError(f"preprocess: users table lists user {dup!r} more than once")
        known, absent_users = _known_users(frame, profiles, strict_users)
        if not known.all():
            frame = frame.loc[known].reset_index(drop=True)
    n_known = len(frame)
    frame = k_core(frame, user_k, item_k)
    data = reindex(frame)
    dropped = (n_raw - n_implicit) + (n_dedup - n_known) + (n_known - len(frame))
    logger.log(
        logging.WARNING if absent_users else logging.INFO,
        "loading summary: %d interactions of %d users read; dropped %d below rating_threshold=%s, "
        "merged %d repeated (user, item) events, dropped %d of %d users absent from the users "
        "table (%d interactions) and %d interactions by the %d/%d-core; kept %d interactions, "
        "%d users, %d items (%d removed in all)",
        n_raw,
        n_users_raw,
        n_raw - n_implicit,
        rating_threshold,
        n_implicit - n_dedup,
        absent_users,
        n_users_raw,
        n_dedup - n_known,
        n_known - len(frame),
        user_k,
        item_k,
        len(frame),
        data.num_users,
        data.num_items,
        dropped,
    )
    if profiles is None:
        return data, pd.DataFrame(index=pd.Index(data.user_ids, name="user"))
    return data, profiles.loc[data.user_ids]
