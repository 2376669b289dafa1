"""Rank-biased overlap (Webber, Moffat and Zobel, "A similarity measure for indefinite
rankings", TOIS 2010), the extrapolated point estimate ``RBO_EXT`` (their Eq. 32).

For two rankings ``S`` (length ``s``) and ``L`` (length ``l >= s``) without repeated items, with
``X_d = |S_{:d} & L_{:d}|`` the overlap at depth ``d`` (``S`` contributes only its ``s`` items
beyond depth ``s``) and persistence ``p``:

    RBO_EXT = (1 - p) / p * [ sum_{d=1}^{l} X_d / d * p^d
                              + sum_{d=s+1}^{l} X_s (d - s) / (s d) * p^d ]
              + [ (X_l - X_s) / l + X_s / s ] * p^l.

For two top-``k`` lists (``s = l = k``) this is ``(1-p)/p sum_d X_d/d p^d + X_k/k p^k``; at
``p = 1`` it is the plain overlap ``X_k / k``. AltEraser (paper 003, Table 3) averages RBO@k of
each forgetting user's top-k list against Retrain's.

The PyPI ``rbo`` package pins ``numpy<2`` and its two public implementations disagree with each
other (DESIGN.md), hence this implementation: :func:`rbo_ext` is the literal formula for one pair
of lists, :func:`rbo_at_k` a batched tensor version for top-k lists.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

__all__ = ["rbo_at_k", "rbo_ext"]


def _check_p(p: float) -> None:
    if not 0.0 < p <= 1.0:
        raise ValueError(f"persistence p must be in (0, 1], got {p}")


def rbo_ext(first: Sequence[Hashable], second: Sequence[Hashable], p: float = 0.9) -> float:
    """Extrapolated RBO of two rankings of possibly different lengths (Webber Eq. 32).

    Raises:
        ValueError: ``p`` outside ``(0, 1]``, an empty list, or a list with repeated items.
    """
    _check_p(p)
    if not first or not second:
        raise ValueError("RBO needs two non-empty rankings")
    for name, ranking in (("first", first), ("second", second)):
        if len(set(ranking)) != len(ranking):
            raise ValueError(f"the {name} ranking repeats an item")
    short, long = (first, second) if len(first) <= len(second) else (second, first)
    s, length = len(short), len(long)
    prefix_short: set[Hashable] = set()
    prefix_long: set[Hashable] = set()
    overlap = 0
    x: list[int] = []  # X_d for d = 1..l, updated as each prefix grows by one item
    for d in range(length):
        if d < s:
            overlap += short[d] in prefix_long
            prefix_short.add(short[d])
        overlap += long[d] in prefix_short
        prefix_long.add(long[d])
        x.append(overlap)
    x_s, x_l = x[s - 1], x[length - 1]
    total = sum(x[d - 1] / d * p**d for d in range(1, length + 1))
    total += sum(x_s * (d - s) / (s * d) * p**d for d in range(s + 1, length + 1))
    head = (1.0 - p) / p * total if p < 1.0 else 0.0
    return head + ((x_l - x_s) / length + x_s / s) * p**length


def rbo_at_k(first: Tensor, second: Tensor, p: float = 0.9) -> Tensor:
    """Extrapolated RBO of batches of top-``k`` lists, ``[B, k] x [B, k] -> [B]``.

    Items within a row must be distinct (true of top-k lists). ``X_d`` for every depth comes
    from a cumulative sum of the ``k x k`` match matrix, so there is no Python loop over users.
    """
    _check_p(p)
    if first.shape != second.shape or first.ndim != 2 or first.shape[1] == 0:
        raise ValueError(
            f"need two [B, k] rankings of the same shape, got {tuple(first.shape)} and "
            f"{tuple(second.shape)}"
        )
    k = first.shape[1]
    match = (first.unsqueeze(2) == second.unsqueeze(1)).to(torch.float64)  # [B, i, j]
    # X_d = number of matches with i < d and j < d: the 2-D prefix sum on the diagonal.
    prefix = match.cumsum(dim=1).cumsum(dim=2)
    x = prefix.diagonal(dim1=1, dim2=2)  # [B, k], X_1..X_k
    depth = torch.arange(1, k + 1, dtype=torch.float64, device=first.device)
    weights = p**depth
    head = (1.0 - p) / p * (x / depth * weights).sum(dim=1) if p < 1.0 else 0.0
    return head + x[:, -1] / k * p**k
