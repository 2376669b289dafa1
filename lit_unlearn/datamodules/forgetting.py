"""Interaction-forgetting requests (AltEraser, paper 003, section 5.2).

``N`` random users (64 by default) each ask to forget part of their training data:

* ``privacy``: user ``i`` deletes ``floor(n_i / 2)`` of their ``n_i`` training interactions,
  drawn at random;
* ``noise``: ``floor(n_i / 2)`` false-positive interactions (items the user never interacted
  with in any split) are injected into the training data before the original model is trained,
  and deleting all of them is the request.

The original data is ``D_a`` (training pairs, plus the noise), the forgetting data ``D_f`` and the
remaining data ``D_r = D_a \\ D_f``. Everything is a pure function of the split and a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["ForgettingRequest", "Scenario", "make_forgetting_request"]

Scenario = Literal["privacy", "noise"]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class ForgettingRequest:
    """One batch of forgetting requests.

    Attributes:
        scenario: ``privacy`` or ``noise``.
        users: Sorted ids of the forgetting users, ``int64[N]``.
        original: ``D_a``, the pairs the original model is trained on, ``int64[n_a, 2]``.
        forget: ``D_f``, the pairs to forget, ``int64[n_f, 2]`` (a subset of ``original``).
        remaining: ``D_r = D_a \\ D_f``, ``int64[n_a - n_f, 2]``.
    """

    scenario: Scenario
    users: IntArray
    original: IntArray
    forget: IntArray
    remaining: IntArray


def _sorted_pairs(pairs: IntArray) -> IntArray:
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return np.ascontiguousarray(pairs[order])


def make_forgetting_request(
    train: IntArray,
    num_users: int,
    num_items: int,
    scenario: Scenario = "noise",
    num_forget_users: int = 64,
    seed: int = 0,
    seen: IntArray | None = None,
) -> ForgettingRequest:
    """Draw forgetting users and the interactions they delete.

    Args:
        train: Training pairs ``int64[n, 2]`` of the per-user split.
        num_users: Number of users (ids ``0 .. num_users - 1``).
        num_items: Number of items.
        scenario: ``privacy`` or ``noise`` (module docstring).
        num_forget_users: ``N``; only users with ``n_i >= 2`` can forget ``floor(n_i / 2) >= 1``.
        seed: Seed of the draw.
        seen: Every known pair of every split (train, validation, test); noise items are drawn
            outside it. Defaults to ``train``.

    Raises:
        ValueError: Unknown scenario, malformed pairs, or fewer eligible users than requested.
    """
    if scenario not in ("privacy", "noise"):
        raise ValueError(f"scenario must be 'privacy' or 'noise', got {scenario!r}")
    if isinstance(num_forget_users, bool) or not isinstance(num_forget_users, int):
        raise ValueError(f"num_forget_users must be an int, got {num_forget_users!r}")
    if num_forget_users < 1:
        raise ValueError(f"num_forget_users must be >= 1, got {num_forget_users}")
    train = np.asarray(train, dtype=np.int64)
    if train.ndim != 2 or train.shape[1] != 2 or len(train) == 0:
        raise ValueError(f"train must be non-empty int pairs [n, 2], got shape {train.shape}")
    seen = train if seen is None else np.asarray(seen, dtype=np.int64)
    counts = np.bincount(train[:, 0], minlength=num_users)
    eligible = np.flatnonzero(counts >= 2)
    if scenario == "noise":
        # Room for floor(n_i / 2) unseen items.
        seen_counts = np.bincount(seen[:, 0], minlength=num_users)
        eligible = eligible[num_items - seen_counts[eligible] >= counts[eligible] // 2]
    if num_forget_users > len(eligible):
        raise ValueError(
            f"{num_forget_users} forgetting users requested but only {len(eligible)} users have "
            f">= 2 training interactions{' and room for noise' if scenario == 'noise' else ''}"
        )
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(eligible, size=num_forget_users, replace=False)).astype(np.int64)
    is_forgetting = np.zeros(num_users, dtype=bool)
    is_forgetting[users] = True

    if scenario == "privacy":
        # Random rank of each training row within its user; forget the floor(n/2) lowest.
        keys = rng.random(len(train))
        order = np.lexsort((keys, train[:, 0]))
        sorted_users = train[order, 0]
        starts = np.searchsorted(sorted_users, np.arange(num_users))
        rank = np.arange(len(train)) - starts[sorted_users]
        chosen = order[is_forgetting[sorted_users] & (rank < counts[sorted_users] // 2)]
        mask = np.zeros(len(train), dtype=bool)
        mask[chosen] = True
        original = train
        forget = train[mask]
        remaining = train[~mask]
    else:
        noise_rows = []
        seen_items: dict[int, npt.NDArray[np.int64]] = {}
        seen_sorted = seen[np.isin(seen[:, 0], users)]
        for u in users.tolist():
            seen_items[u] = np.unique(seen_sorted[seen_sorted[:, 0] == u, 1])
        for u in users.tolist():
            candidates = np.setdiff1d(np.arange(num_items, dtype=np.int64), seen_items[u])
            k = int(counts[u] // 2)
            items = rng.choice(candidates, size=k, replace=False)
            noise_rows.append(np.stack([np.full(k, u, dtype=np.int64), items], axis=1))
        forget = np.concatenate(noise_rows).astype(np.int64)
        original = np.concatenate([train, forget])
        remaining = train
    return ForgettingRequest(
        scenario=scenario,
        users=users,
        original=_sorted_pairs(original),
        forget=_sorted_pairs(forget),
        remaining=_sorted_pairs(remaining),
    )
