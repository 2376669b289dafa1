"""Functional top-k ranking metrics for recommender evaluation (plain, vectorised torch).

Two evaluation protocols are supported, and every reported number must name the one it used:

* **full** ranking: each evaluated user's scores over *all* items are ranked, after removing the
  items the user already has in training (and, for the test split, in validation); the user's
  held-out items are the targets. Use :func:`topk_hits` then :func:`metrics_from_hits` (or
  :func:`full_ranking_values` for both).
* **sampled** ranking: each held-out ``(user, item)`` pair is ranked against a fixed set of sampled
  negatives (99 by default, see :mod:`lit_unlearn.datamodules.sampling`). Use :func:`sampled_ranks`
  then :func:`metrics_from_ranks` (or :func:`sampled_values` for both).

Ties are always broken **pessimistically**: a target is ranked after every non-target with an
equal score, so a model that gives every item the same score gets the worst possible metrics
instead of whatever order ``torch.topk`` happens to produce. ``NaN`` scores count as the worst
score (ranked like ``-inf``).

All functions return per-row values (one value per evaluated user for the full protocol, one per
held-out pair for the sampled protocol); :class:`lit_unlearn.metrics.RankingMetrics` averages them
over rows and across processes.

Rank positions ``r`` below are 0-based: the best item has ``r = 0``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_KS",
    "METRIC_NAMES",
    "check_ks",
    "full_ranking_values",
    "metric_keys",
    "metrics_from_hits",
    "metrics_from_ranks",
    "sampled_ranks",
    "sampled_values",
    "topk_hits",
]

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50)
"""Cut-offs reported by default."""

METRIC_NAMES: tuple[str, ...] = ("hr", "recall", "ndcg")
"""Metric families; every family is reported at every cut-off as ``f"{name}@{k}"``."""


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validate cut-offs.

    Args:
        ks: Cut-offs, e.g. ``(5, 10, 20, 50)``.

    Returns:
        ``ks`` as a tuple.

    Raises:
        ValueError: If ``ks`` is empty, holds a non-integer or non-positive value, or is not
            strictly increasing (sorted, no duplicates).
    """
    out = tuple(ks)
    if not out:
        raise ValueError("ks must hold at least one cut-off")
    for k in out:
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"ks must be positive ints, got {out!r}")
    if any(a >= b for a, b in itertools.pairwise(out)):
        raise ValueError(f"ks must be sorted and unique, got {out!r}")
    return out


def metric_keys(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """Names of the per-row values produced for ``ks``.

    Args:
        ks: Cut-offs.

    Returns:
        ``[f"{name}@{k}" for name in METRIC_NAMES for k in ks]``, e.g. ``["hr@5", ..., "ndcg@50"]``.
    """
    return [f"{name}@{k}" for name in METRIC_NAMES for k in check_ks(ks)]


def _check_matrix(name: str, t: Tensor, shape: torch.Size) -> None:
    if t.dtype != torch.bool:
        raise ValueError(f"{name} must be a BoolTensor, got {t.dtype}")
    if t.shape != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, scores have {tuple(shape)}")


def topk_hits(scores: Tensor, targets: Tensor, exclude: Tensor | None, k: int) -> Tensor:
    """Which of each row's top-``k`` ranked items are targets (full-ranking protocol).

    Items with ``exclude`` set are removed from the ranking (they can never be a hit, even if
    they are also targets). The remaining items are ordered by

    1. score, descending (``NaN`` counts as ``-inf``);
    2. pessimistic tie-break: among equal scores, non-targets come before targets.

    Equal-scoring items of the same kind may come in any order, which does not change ``hits``,
    so the result is deterministic. If a row has fewer than ``k`` rankable items the positions
    past the last one are ``False``; ``k`` may exceed the number of items.

    ``hits[b, r] = targets[b, item at rank r of row b]``, ``r = 0 .. k-1``.

    Method (exact): excluded items get the lowest possible score, ``torch.topk`` with ``k + 1``
    finds each row's top ``k`` and whether the score at the cut is tied with the next one. Only
    if some row has such a tie, the block is widened to every item scoring at least the row's
    ``k``-th best score. The block is then ordered lexicographically (rankable first, score
    descending, targets last) by three stable sorts. Heavy ties at the cut (constant scores, or
    fewer than ``k`` rankable items with a score above ``-inf``) make the block as wide as the
    row: still exact, just slower.

    Args:
        scores: ``Tensor[B, I]`` of item scores (float or integer), higher is better.
        targets: ``BoolTensor[B, I]``, the held-out items of each row.
        exclude: ``BoolTensor[B, I]`` of items removed from the ranking (training items, and
            validation items when testing), or ``None``.
        k: Number of ranks to return, ``k >= 1``.

    Returns:
        ``BoolTensor[B, k]`` on ``scores.device``.

    Raises:
        ValueError: On wrong shapes/dtypes or ``k < 1``.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [B, I], got shape {tuple(scores.shape)}")
    if scores.is_complex() or scores.dtype == torch.bool:
        raise ValueError(f"scores must be real numbers, got {scores.dtype}")
    _check_matrix("targets", targets, scores.shape)
    if exclude is not None:
        _check_matrix("exclude", exclude, scores.shape)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")

    B, n_items = scores.shape
    keff = min(k, n_items)
    if B == 0 or n_items == 0:
        return torch.zeros(B, k, dtype=torch.bool, device=scores.device)

    drop: Tensor | None
    if scores.is_floating_point():
        lowest: float | int = float("-inf")
        drop = torch.isnan(scores) if exclude is None else torch.isnan(scores) | exclude
    else:
        lowest = torch.iinfo(scores.dtype).min
        drop = exclude
    key = scores if drop is None else scores.masked_fill(drop, lowest)

    top_key, top_idx = torch.topk(key, min(keff + 1, n_items), dim=1, largest=True, sorted=True)
    kth = top_key[:, keff - 1 : keff]
    if keff < n_items and bool((top_key[:, keff] == kth[:, 0]).any()):
        # Some row is tied across the cut: take every item scoring >= its k-th best score.
        width = int((key >= kth).sum(dim=1).max())
        top_key, top_idx = torch.topk(key, width, dim=1, largest=True, sorted=False)
    # Lexicographic order within the block by stable sorts, least significant key first:
    # targets last, then score descending, then excluded items last.
    hit = targets.gather(1, top_idx)
    if exclude is not None:
        ex = exclude.gather(1, top_idx)
        hit = hit & ~ex
    o = torch.argsort(hit.to(torch.uint8), dim=1, stable=True)
    hit, top_key = hit.gather(1, o), top_key.gather(1, o)
    if exclude is not None:
        ex = ex.gather(1, o)
    o = torch.argsort(top_key, dim=1, descending=True, stable=True)
    hit = hit.gather(1, o)
    if exclude is not None:
        ex = ex.gather(1, o)
        hit = hit.gather(1, torch.argsort(ex.to(torch.uint8), dim=1, stable=True))
    hits = hit[:, :keff]
    if keff < k:
        hits = torch.cat([hits, hits.new_zeros(B, k - keff)], dim=1)
    return hits


def sampled_ranks(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """0-based rank of each positive among itself and its sampled negatives (sampled protocol).

    ``rank[n] = #{j : neg_scores[n, j] >= pos_scores[n]}``: ties count against the positive
    (pessimistic). ``NaN`` counts as ``-inf`` on both sides, as in :func:`topk_hits`, so a
    ``NaN`` positive gets the worst rank ``n_neg``. The rank lies in ``[0, n_neg]``.

    Args:
        pos_scores: ``Tensor[N]``, score of each held-out pair.
        neg_scores: ``Tensor[N, n_neg]``, scores of the pair's negatives.

    Returns:
        ``LongTensor[N]``.

    Raises:
        ValueError: On mismatched shapes.
    """
    if pos_scores.ndim != 1 or neg_scores.ndim != 2 or neg_scores.shape[0] != pos_scores.shape[0]:
        raise ValueError(
            "expected pos_scores [N] and neg_scores [N, n_neg], got "
            f"{tuple(pos_scores.shape)} and {tuple(neg_scores.shape)}"
        )
    pos, neg = pos_scores.unsqueeze(1), neg_scores
    if pos.is_floating_point():
        pos = pos.masked_fill(torch.isnan(pos), float("-inf"))
    if neg.is_floating_point():
        neg = neg.masked_fill(torch.isnan(neg), float("-inf"))
    return (neg >= pos).sum(dim=1, dtype=torch.long)


def _discounts(n: int, device: torch.device) -> Tensor:
    """``1 / log2(r + 2)`` for ``r = 0 .. n-1`` (float64)."""
    r = torch.arange(n, device=device, dtype=torch.float64)
    return 1.0 / torch.log2(r + 2.0)


def metrics_from_hits(hits: Tensor, num_targets: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-row HR, Recall and NDCG at every cut-off, from top-k hits (multi-target rows).

    With ``h[r]`` the hit indicator at rank ``r`` (0-based) and ``T`` the row's number of targets:

    * ``hr@k = 1[sum_{r<k} h[r] > 0]``
    * ``recall@k = (sum_{r<k} h[r]) / T``
    * ``ndcg@k = DCG@k / IDCG@k`` with ``DCG@k = sum_{r<k} h[r] / log2(r + 2)`` and
      ``IDCG@k = sum_{r < min(T, k)} 1 / log2(r + 2)`` (all targets ranked first).

    Args:
        hits: ``BoolTensor[B, kmax]`` from :func:`topk_hits`, ``kmax >= max(ks)``.
        num_targets: ``LongTensor[B]``, number of targets of each row (every row needs at least
            one; count only targets that are not excluded).
        ks: Cut-offs, positive, sorted, unique.

    Returns:
        ``{f"{name}@{k}": Tensor[B]}`` (float32) for ``name`` in ``("hr", "recall", "ndcg")``
        and ``k`` in ``ks``.

    Raises:
        ValueError: On wrong shapes, ``max(ks) > kmax``, or a row with no targets.
    """
    ks = check_ks(ks)
    if hits.ndim != 2 or hits.dtype != torch.bool:
        raise ValueError(f"hits must be a 2-D BoolTensor, got {hits.dtype} {tuple(hits.shape)}")
    B, kmax = hits.shape
    if ks[-1] > kmax:
        raise ValueError(f"hits cover the top {kmax} ranks, but ks asks for {ks[-1]}")
    if num_targets.shape != (B,) or num_targets.is_floating_point():
        raise ValueError(
            f"num_targets must be an integer tensor of shape ({B},), "
            f"got {num_targets.dtype} {tuple(num_targets.shape)}"
        )
    if B and bool((num_targets <= 0).any()):
        bad = int(torch.nonzero(num_targets <= 0)[0, 0])
        raise ValueError(f"row {bad} has no targets; drop rows without held-out items first")

    h = hits[:, : ks[-1]].to(torch.float64)
    disc = _discounts(ks[-1], hits.device)
    cum_hits = h.cumsum(dim=1)  # [B, kmax']: hits within the top r+1
    cum_dcg = (h * disc).cumsum(dim=1)
    cum_ideal = disc.cumsum(dim=0)  # IDCG with r+1 targets
    nt = num_targets.to(device=hits.device, dtype=torch.long)
    out: dict[str, Tensor] = {}
    for name in METRIC_NAMES:
        for k in ks:
            nh = cum_hits[:, k - 1]
            if name == "hr":
                v = (nh > 0).to(torch.float64)
            elif name == "recall":
                v = nh / nt.to(torch.float64)
            else:
                idcg = cum_ideal[nt.clamp(max=k) - 1]
                v = cum_dcg[:, k - 1] / idcg
            out[f"{name}@{k}"] = v.to(torch.float32)
    return out


def metrics_from_ranks(ranks: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-row HR, Recall and NDCG at every cut-off for single-positive rows (sampled protocol).

    With one target at 0-based rank ``r``: ``hr@k = recall@k = 1[r < k]`` and
    ``ndcg@k = 1[r < k] / log2(r + 2)`` (``IDCG = 1``).

    Args:
        ranks: ``LongTensor[N]`` from :func:`sampled_ranks`.
        ks: Cut-offs, positive, sorted, unique.

    Returns:
        ``{f"{name}@{k}": Tensor[N]}`` (float32), same keys as :func:`metrics_from_hits`.

    Raises:
        ValueError: On a wrong shape/dtype or a negative rank.
    """
    ks = check_ks(ks)
    if ranks.ndim != 1 or ranks.is_floating_point():
        raise ValueError(
            f"ranks must be an integer tensor [N], got {ranks.dtype} {tuple(ranks.shape)}"
        )
    if ranks.numel() and bool((ranks < 0).any()):
        raise ValueError("ranks must be >= 0")
    r = ranks.to(torch.float64)
    gain = 1.0 / torch.log2(r + 2.0)
    out: dict[str, Tensor] = {}
    for name in METRIC_NAMES:
        for k in ks:
            inside = ranks < k
            v = inside.to(torch.float64) if name != "ndcg" else torch.where(inside, gain, 0.0)
            out[f"{name}@{k}"] = v.to(torch.float32)
    return out


def full_ranking_values(
    scores: Tensor,
    targets: Tensor,
    exclude: Tensor | None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, Tensor]:
    """Full-ranking protocol in one call: :func:`topk_hits` then :func:`metrics_from_hits`.

    Args:
        scores: ``Tensor[B, I]`` of item scores.
        targets: ``BoolTensor[B, I]`` of held-out items; every row needs one that is not excluded.
        exclude: ``BoolTensor[B, I]`` of items removed from the ranking, or ``None``.
        ks: Cut-offs.

    Returns:
        Per-row values keyed ``f"{name}@{k}"``, each ``Tensor[B]``.
    """
    ks = check_ks(ks)
    hits = topk_hits(scores, targets, exclude, ks[-1])
    valid = targets if exclude is None else targets & ~exclude
    return metrics_from_hits(hits, valid.sum(dim=1), ks)


def sampled_values(
    pos_scores: Tensor, neg_scores: Tensor, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, Tensor]:
    """Sampled protocol in one call: :func:`sampled_ranks` then :func:`metrics_from_ranks`.

    Args:
        pos_scores: ``Tensor[N]`` scores of the held-out pairs.
        neg_scores: ``Tensor[N, n_neg]`` scores of their negatives.
        ks: Cut-offs.

    Returns:
        Per-row values keyed ``f"{name}@{k}"``, each ``Tensor[N]``.
    """
    return metrics_from_ranks(sampled_ranks(pos_scores, neg_scores), ks)
