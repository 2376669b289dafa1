"""Train/validation/test splits of indexed interactions, and the attacker's shadow users.

Two protocols cover the recommender-unlearning literature:

* :func:`leave_one_out`: each user's latest interaction is the test item (and the one before it
  the validation item), the protocol of NCF/LightGCN-style top-k evaluation.
* :func:`random_ratio`: a per-user random 80/20 (or 80/10/10) split, used where time is absent or
  meaningless.

Both are vectorised (one stable sort plus per-user ranks), so they take seconds on 20M rows, and
both are deterministic: leave-one-out by construction, the random split for a given seed and row
order.

:func:`shadow_mask` picks the users whose attributes the attacker is assumed to know;
:func:`check_split` is a cheap sanity check for tests and data modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from lit_unlearn.datamodules.preprocess import IndexedInteractions, _stable_order

__all__ = ["Split", "check_split", "leave_one_out", "random_ratio", "shadow_mask"]

_EPS = 1e-9


@dataclass(frozen=True, eq=False)
class Split:
    """Interaction pairs of each partition.

    Attributes:
        train: ``int64[n_train, 2]`` (user, item) pairs.
        val: ``int64[n_val, 2]`` pairs; empty when the protocol has no validation part.
        test: ``int64[n_test, 2]`` pairs.
    """

    train: npt.NDArray[np.int64]
    val: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            arr = getattr(self, name)
            if (
                not isinstance(arr, np.ndarray)
                or arr.dtype != np.int64
                or arr.ndim != 2
                or arr.shape[1] != 2
            ):
                raise ValueError(
                    f"Split.{name} must be an int64 array of shape [n, 2], got "
                    f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}"
                )

    @property
    def num_train(self) -> int:
        """Number of training pairs."""
        return int(self.train.shape[0])

    @property
    def num_val(self) -> int:
        """Number of validation pairs."""
        return int(self.val.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test pairs."""
        return int(self.test.shape[0])

    @property
    def has_val(self) -> bool:
        """Whether the validation part is non-empty."""
        return self.num_val > 0


def _pairs(data: IndexedInteractions, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.stack((data.user[rows], data.item[rows]), axis=1).astype(np.int64, copy=False)


def _group_starts(groups_sorted: npt.NDArray[np.int64], num_groups: int) -> npt.NDArray[np.int64]:
    """Start position of each group in a table sorted by group."""
    counts = np.bincount(groups_sorted, minlength=num_groups)
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)


def _round_half_up(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    # Half-up (not banker's) rounding, with a tolerance so 0.7 * 5 = 3.4999... rounds to 4.
    return np.floor(x + 0.5 + _EPS).astype(np.int64)


def leave_one_out(data: IndexedInteractions, validation: bool = True) -> Split:
    """Hold out each user's latest interaction for test (and the one before for validation).

    Interactions are ordered per user by timestamp; equal timestamps keep the table's row order
    (later row = later event), which is also how sources without time encode order. Users too
    short to give up rows keep everything for training: a user with one interaction has no test
    row (a model cannot score a user it has never seen), and with ``validation`` a user with two
    interactions gets train + test only, since test is the part the experiments report.

    Args:
        data: Indexed interactions (ideally deduplicated, else a pair may repeat across parts).
        validation: Also hold out the second-latest interaction of users with ``>= 3``.

    Returns:
        The split; each part sorted by user, then time.
    """
    n = len(data)
    # Stable sort: user, then timestamp, then original row order.
    order = _stable_order(data.user, data.timestamp)
    user_sorted = data.user[order]
    counts = np.bincount(data.user, minlength=data.num_users)
    ends = np.cumsum(counts)
    from_end = ends[user_sorted] - np.arange(n) - 1  # 0 = latest event of that user
    size = counts[user_sorted]
    test = (from_end == 0) & (size >= 2)
    val = (from_end == 1) & (size >= 3) if validation else np.zeros(n, dtype=bool)
    train = ~(test | val)
    return Split(
        train=_pairs(data, order[train]),
        val=_pairs(data, order[val]),
        test=_pairs(data, order[test]),
    )


def random_ratio(
    data: IndexedInteractions, train: float = 0.8, val: float = 0.0, seed: int = 0
) -> Split:
    """Split each user's interactions at random into train/val/test fractions.

    A user with ``n`` interactions gets ``n_train = max(1, round(train * n))`` training rows and
    ``n_val = round(val * n)`` validation rows (half-up rounding), the rest going to test. The
    test part is protected first: every user with ``>= 2`` interactions keeps at least one test
    row (even for ``train + val == 1``), taken from validation and then training, so every
    evaluable user is evaluated. Users with one interaction keep it for training.

    Per-user splitting (instead of a global shuffle) keeps every user's proportions close to the
    requested ones; a random permutation followed by a stable sort by user gives a uniformly
    random order within each user in one sort.

    Args:
        data: Indexed interactions.
        train: Fraction for training, ``0 < train <= 1``.
        val: Fraction for validation, ``>= 0`` with ``train + val <= 1``.
        seed: Seed of ``numpy.random.default_rng``; same seed and data give the same split.

    Returns:
        The split; each part sorted by user.

    Raises:
        ValueError: Fractions out of range.
    """
    if not 0.0 < train <= 1.0:
        raise ValueError(f"random_ratio: train fraction must be in (0, 1], got {train}")
    if val < 0.0:
        raise ValueError(f"random_ratio: val fraction must be >= 0, got {val}")
    if train + val > 1.0 + _EPS:
        raise ValueError(
            f"random_ratio: train + val must be <= 1, got {train} + {val} = {train + val}"
        )
    n = len(data)
    # A random permutation, then a stable sort by user: uniformly random order within each user.
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    order = perm[np.argsort(data.user[perm], kind="stable")]
    user_sorted = data.user[order]
    counts = np.bincount(data.user, minlength=data.num_users).astype(np.int64)
    rank = np.arange(n) - _group_starts(user_sorted, data.num_users)[user_sorted]
    fcounts = counts.astype(np.float64)
    n_train = np.maximum(1, _round_half_up(train * fcounts))
    n_val = _round_half_up(val * fcounts)
    # Reserve one test row for every user that can spare it: trim val first, then train.
    budget = np.where(counts >= 2, counts - 1, counts)
    n_train = np.minimum(n_train, budget)
    n_val = np.minimum(n_val, budget - n_train)
    cut_train = n_train[user_sorted]
    cut_val = cut_train + n_val[user_sorted]
    in_train = rank < cut_train
    in_val = ~in_train & (rank < cut_val)
    in_test = rank >= cut_val
    return Split(
        train=_pairs(data, order[in_train]),
        val=_pairs(data, order[in_val]),
        test=_pairs(data, order[in_test]),
    )


def shadow_mask(
    codes: npt.NDArray[np.int64] | None, num_users: int, fraction: float = 0.2, seed: int = 0
) -> npt.NDArray[np.bool_]:
    """Choose the shadow users: those whose attribute labels the attacker knows.

    The attacker trains on the shadow users and is scored on the others, so both sides should
    have the same class mix: the draw is stratified, taking ``round(fraction * size)`` users
    (half-up) from each class, at least one from a class with ``>= 2`` users and never a whole
    class of ``>= 2`` users (so every class keeps an evaluated user). Users with an unknown
    label (``-1``) form their own stratum sampled at the same fraction; with ``codes=None`` all
    users form one stratum.

    Args:
        codes: ``int[num_users]`` class codes for stratification, ``-1`` for unknown, or None.
        num_users: Number of users.
        fraction: Share of users in the shadow set, ``0 < fraction < 1``.
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        ``bool[num_users]``, True for shadow users.

    Raises:
        ValueError: Bad fraction, negative ``num_users``, or codes misaligned/invalid.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"shadow_mask: fraction must be in (0, 1), got {fraction}")
    if num_users < 0:
        raise ValueError(f"shadow_mask: num_users must be >= 0, got {num_users}")
    if codes is None:
        labels = np.zeros(num_users, dtype=np.int64)
    else:
        raw = np.asarray(codes)
        if raw.shape != (num_users,):
            raise ValueError(f"shadow_mask: codes must have shape ({num_users},), got {raw.shape}")
        if num_users and not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"shadow_mask: codes must be integers, got dtype {raw.dtype}")
        labels = raw.astype(np.int64)
        if num_users and labels.min() < -1:
            raise ValueError(f"shadow_mask: codes must be >= -1 (-1 = unknown), got {labels.min()}")
    if num_users == 0:
        return np.zeros(0, dtype=bool)
    _, stratum = np.unique(labels, return_inverse=True)
    stratum = stratum.reshape(-1).astype(np.int64)
    num_strata = int(stratum.max()) + 1
    sizes = np.bincount(stratum, minlength=num_strata)
    take = _round_half_up(fraction * sizes.astype(np.float64))
    big = sizes >= 2
    take[big] = np.clip(take[big], 1, sizes[big] - 1)
    keys = np.random.default_rng(seed).random(num_users)
    order = np.lexsort((keys, stratum))
    stratum_sorted = stratum[order]
    rank = np.arange(num_users) - _group_starts(stratum_sorted, num_strata)[stratum_sorted]
    mask = np.zeros(num_users, dtype=bool)
    mask[order] = rank < take[stratum_sorted]
    return mask


def check_split(split: Split, num_users: int, num_items: int) -> None:
    """Sanity-check a split: ids in range and no (user, item) pair in two parts.

    A pair in both train and test would leak the answer; an out-of-range id would index past an
    embedding table. Duplicates *within* a part are allowed (non-deduplicated data).

    Args:
        split: The split to check.
        num_users: Number of users (ids must be in ``[0, num_users)``).
        num_items: Number of items (ids must be in ``[0, num_items)``).

    Raises:
        ValueError: The first problem found.
    """
    parts = {"train": split.train, "val": split.val, "test": split.test}
    keys: dict[str, pd.Index] = {}
    for name, pairs in parts.items():
        if len(pairs):
            for col, label, size in ((0, "user", num_users), (1, "item", num_items)):
                lo, hi = int(pairs[:, col].min()), int(pairs[:, col].max())
                if lo < 0 or hi >= size:
                    raise ValueError(
                        f"check_split: {name} {label} ids span {lo}..{hi}, outside [0, {size})"
                    )
        # Hash-based membership (pandas) avoids sorting tens of millions of keys.
        keys[name] = pd.Index(pairs[:, 0] * np.int64(num_items) + pairs[:, 1])
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            small, large = sorted((keys[a], keys[b]), key=len)
            common = small[small.isin(large)]
            if len(common):
                u, it = divmod(int(common[0]), num_items)
                raise ValueError(
                    f"check_split: {len(common.unique())} (user, item) pair(s) in both {a} and "
                    f"{b}, e.g. ({u}, {it})"
                )
