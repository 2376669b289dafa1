"""Ranking metrics (full and sampled protocols), RankingMetrics and negative sampling."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from lit_unlearn.datamodules.sampling import (
    build_exclusion_mask,
    dense_seen_mask,
    interaction_keys,
    is_seen,
    sample_negatives,
    training_negatives,
)
from lit_unlearn.metrics import (
    DEFAULT_KS,
    RankingMetrics,
    check_ks,
    full_ranking_values,
    metric_keys,
    metrics_from_hits,
    metrics_from_ranks,
    protocol_prefix,
    sampled_ranks,
    sampled_values,
    topk_hits,
)

LOG2_3 = math.log2(3)  # 1.5849625007211563


def _b(rows: list[list[int]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def _close(values: dict[str, Tensor], expected: dict[str, list[float]]) -> None:
    for key, exp in expected.items():
        torch.testing.assert_close(
            values[key].double(), torch.tensor(exp, dtype=torch.float64), atol=1e-6, rtol=0
        )


# ---------------------------------------------------------------------------------------------
# Slow pure-python references
# ---------------------------------------------------------------------------------------------


def _ref_hits(scores: Tensor, targets: Tensor, exclude: Tensor | None, k: int) -> list[list[bool]]:
    """Sort each row's rankable items by (score desc, NaN as -inf, targets after non-targets)."""
    out = []
    for b in range(scores.shape[0]):
        items = []
        for i in range(scores.shape[1]):
            if exclude is not None and bool(exclude[b, i]):
                continue
            s = float(scores[b, i])
            s = -math.inf if math.isnan(s) else s
            items.append((-s, bool(targets[b, i])))
        items.sort()  # False < True: on equal score the non-target comes first
        row = [t for _, t in items[:k]]
        out.append(row + [False] * (k - len(row)))
    return out


def _ref_metrics(hits: list[bool], num_targets: int, k: int) -> tuple[float, float, float]:
    top = hits[:k]
    dcg = sum(1.0 / math.log2(r + 2) for r, h in enumerate(top) if h)
    idcg = sum(1.0 / math.log2(r + 2) for r in range(min(num_targets, k)))
    return float(any(top)), sum(top) / num_targets, dcg / idcg


def _ref_rank(pos: float, negs: list[float]) -> int:
    def f(x: float) -> float:
        return -math.inf if math.isnan(x) else x

    return sum(1 for n in negs if f(n) >= f(pos))


# ---------------------------------------------------------------------------------------------
# topk_hits / metrics_from_hits: hand-computed values
# ---------------------------------------------------------------------------------------------


def test_full_ranking_hand_computed() -> None:
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5],
            [0.1, 0.5, 0.3, 0.9, 0.2],
        ]
    )
    targets = _b([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]])
    exclude = _b([[1, 0, 0, 0, 0], [0, 0, 0, 1, 0]])
    # Row 0: item 0 excluded -> ranking 1, 2, 3, 4 -> hits [T, F, T, F], 2 targets.
    # Row 1: item 3 excluded -> ranking 1 (.5), 2 (.3), 4 (.2), 0 (.1) -> hits [F, F, F, T],
    #        1 target.
    hits = topk_hits(scores, targets, exclude, 4)
    assert hits.tolist() == [[True, False, True, False], [False, False, False, True]]
    values = full_ranking_values(scores, targets, exclude, ks=(1, 3, 4))
    # Row 0: hr@1 = 1, recall@1 = 1/2, ndcg@1 = (1/log2 2) / (1/log2 2) = 1.
    #        @3: hits 2 -> recall 1; DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3),
    #        ndcg@3 = 1.5 / (1 + 1/1.5849625) = 1.5 / 1.6309298 = 0.9197208.
    #        @4: same hits as @3 (rank 3 is no hit): 0.9197208.
    # Row 1: @1, @3: nothing -> 0; @4: hit at rank 3 -> DCG = 1/log2(5) = 0.4306766, IDCG = 1.
    n03 = 1.5 / (1 + 1 / LOG2_3)
    _close(
        values,
        {
            "hr@1": [1, 0],
            "hr@3": [1, 0],
            "hr@4": [1, 1],
            "recall@1": [0.5, 0],
            "recall@3": [1, 0],
            "recall@4": [1, 1],
            "ndcg@1": [1, 0],
            "ndcg@3": [n03, 0],
            "ndcg@4": [n03, 1 / math.log2(5)],
        },
    )
    assert abs(n03 - 0.9197208) < 1e-6


def test_ndcg_idcg_uses_min_of_targets_and_k() -> None:
    # 3 targets, all ranked at the top: ndcg@2 has IDCG over min(3, 2) = 2 ranks -> 1.0,
    # recall@2 = 2/3, hr@2 = 1.
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    targets = _b([[1, 1, 1, 0, 0]])
    values = full_ranking_values(scores, targets, None, ks=(2, 5))
    _close(values, {"ndcg@2": [1.0], "recall@2": [2 / 3], "ndcg@5": [1.0], "recall@5": [1.0]})
    # Targets at ranks 1 and 3 (0-based) of 4: DCG = 1/log2(3) + 1/log2(5) = 0.6309298 + 0.4306766,
    # IDCG = 1 + 1/log2(3) = 1.6309298 -> ndcg@4 = 1.0616064 / 1.6309298 = 0.6509209.
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    targets = _b([[0, 1, 0, 1]])
    values = full_ranking_values(scores, targets, None, ks=(4,))
    expected = (1 / LOG2_3 + 1 / math.log2(5)) / (1 + 1 / LOG2_3)
    assert abs(expected - 0.6509209) < 1e-6
    _close(values, {"ndcg@4": [expected], "hr@4": [1.0], "recall@4": [1.0]})


def test_ties_are_pessimistic() -> None:
    # Items 0, 1, 2 tie at 1.0; target item 0 is ranked after the two tied non-targets: rank 2.
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    targets = _b([[1, 0, 0, 0]])
    assert topk_hits(scores, targets, None, 4).tolist() == [[False, False, True, False]]
    values = full_ranking_values(scores, targets, None, ks=(2, 3))
    # hr@2 = 0; ndcg@3 = 1/log2(2 + 2) = 0.5
    _close(values, {"hr@2": [0.0], "hr@3": [1.0], "ndcg@3": [0.5]})
    # Two tied targets among four tied items: they take ranks 2 and 3.
    scores = torch.tensor([[3.0, 3.0, 3.0, 3.0, 9.0]])
    targets = _b([[1, 0, 1, 0, 0]])
    assert topk_hits(scores, targets, None, 5).tolist() == [[False, False, False, True, True]]


def test_constant_scores_give_the_worst_case() -> None:
    # 10 items, one target, constant scores: the target is ranked last (rank 9).
    n_items = 10
    for dtype in (torch.float32, torch.float64, torch.float16, torch.int64):
        scores = torch.zeros(3, n_items, dtype=dtype)
        targets = torch.zeros(3, n_items, dtype=torch.bool)
        targets[0, 0] = targets[1, 5] = targets[2, 9] = True
        values = full_ranking_values(scores, targets, None, ks=(5, 9, 10))
        # @5, @9: no hit; @10: hit at rank 9 -> ndcg = 1/log2(11) = 0.2890648.
        _close(values, {"hr@9": [0, 0, 0], "ndcg@5": [0, 0, 0], "ndcg@10": [1 / math.log2(11)] * 3})


def test_excluded_items_are_never_ranked() -> None:
    scores = torch.tensor([[10.0, 9.0, 1.0, 0.0]])
    targets = _b([[1, 0, 0, 1]])
    exclude = _b([[1, 1, 0, 0]])
    # Excluded target 0 is not a hit; ranking is 2, 3 -> hits [F, T], then nothing.
    assert topk_hits(scores, targets, exclude, 4).tolist() == [[False, True, False, False]]
    # Only the non-excluded target counts: recall@2 = 1/1.
    values = full_ranking_values(scores, targets, exclude, ks=(2,))
    _close(values, {"recall@2": [1.0], "ndcg@2": [1 / LOG2_3]})
    # An excluded item never pushes a target down, even with a huge or equal score.
    scores = torch.tensor([[0.0, 0.0, 0.0]])
    targets = _b([[0, 0, 1]])
    exclude = _b([[1, 1, 0]])
    assert topk_hits(scores, targets, exclude, 1).tolist() == [[True]]


def test_minus_inf_and_nan_scores() -> None:
    # -inf scored items are still ranked (before excluded ones); NaN counts as -inf.
    scores = torch.tensor([[float("-inf"), float("nan"), 1.0, 5.0]])
    targets = _b([[0, 1, 0, 0]])
    exclude = _b([[0, 0, 0, 1]])
    # ranking: 2 (1.0), then 0 (-inf, non-target) and 1 (NaN = -inf, target, goes last).
    assert topk_hits(scores, targets, exclude, 4).tolist() == [[False, False, True, False]]
    assert topk_hits(scores.double(), targets, exclude, 4).tolist() == [[False, False, True, False]]


def test_k_larger_than_num_items_pads_with_false() -> None:
    scores = torch.tensor([[0.3, 0.2]])
    targets = _b([[0, 1]])
    assert topk_hits(scores, targets, None, 4).tolist() == [[False, True, False, False]]
    assert topk_hits(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool), None, 2).shape == (
        0,
        2,
    )


def test_argument_errors() -> None:
    s = torch.zeros(2, 3)
    t = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="2-D"):
        topk_hits(torch.zeros(3), t, None, 1)
    with pytest.raises(ValueError, match="BoolTensor"):
        topk_hits(s, t.float(), None, 1)
    with pytest.raises(ValueError, match="shape"):
        topk_hits(s, t, torch.zeros(2, 4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="positive"):
        topk_hits(s, t, None, 0)
    with pytest.raises(ValueError, match="no targets"):
        metrics_from_hits(torch.zeros(2, 5, dtype=torch.bool), torch.tensor([1, 0]), (5,))
    with pytest.raises(ValueError, match="top 5 ranks"):
        metrics_from_hits(torch.zeros(2, 5, dtype=torch.bool), torch.tensor([1, 1]), (5, 10))
    with pytest.raises(ValueError, match="no targets"):
        full_ranking_values(s, t, None, (1,))


@pytest.mark.parametrize("ks", [(), (10, 5), (5, 5), (0,), (-1, 3), (5.0,), (True,)])
def test_check_ks_rejects(ks: Sequence[int]) -> None:
    with pytest.raises(ValueError):
        check_ks(ks)
    with pytest.raises(ValueError):
        RankingMetrics(ks=ks)


def test_metric_keys() -> None:
    assert check_ks(DEFAULT_KS) == (5, 10, 20, 50)
    assert metric_keys((1, 3)) == ["hr@1", "hr@3", "recall@1", "recall@3", "ndcg@1", "ndcg@3"]


# ---------------------------------------------------------------------------------------------
# Cross-check against the pure-python reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64])
def test_topk_hits_matches_reference(seed: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(seed)
    B, n_items = 12, 17
    # Few distinct values -> many ties, also across the top-k cut.
    scores = torch.randint(-3, 4, (B, n_items), generator=g).to(dtype)
    if seed % 2:  # continuous scores on odd seeds
        scores = (
            (torch.randn(B, n_items, generator=g) * 3).to(dtype)
            if dtype.is_floating_point
            else scores
        )
    targets = torch.rand(B, n_items, generator=g) < 0.25
    targets[torch.arange(B), torch.randint(0, n_items, (B,), generator=g)] = True
    exclude = (torch.rand(B, n_items, generator=g) < 0.3) & ~targets
    exclude[0] = True  # a row with everything excluded
    exclude[1, 0] = targets[1, 0] = True  # an excluded target
    if dtype.is_floating_point:
        scores[2, 3] = float("nan")
        scores[3, :5] = float("-inf")
    for k in (1, 3, 5, 17, 20):
        for ex in (exclude, None):
            expected = _ref_hits(scores, targets, ex, k)
            assert topk_hits(scores, targets, ex, k).tolist() == expected, (k, ex is None)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_values_match_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    B, n_items = 20, 60
    scores = torch.randint(0, 10, (B, n_items), generator=g).float()
    targets = torch.rand(B, n_items, generator=g) < 0.1
    targets[torch.arange(B), torch.randint(0, n_items, (B,), generator=g)] = True
    exclude = (torch.rand(B, n_items, generator=g) < 0.3) & ~targets
    ks = (1, 5, 10, 20, 50)
    values = full_ranking_values(scores, targets, exclude, ks)
    ref_hits = _ref_hits(scores, targets, exclude, 50)
    for b in range(B):
        nt = int(targets[b].sum())
        for k in ks:
            hr, rec, ndcg = _ref_metrics(ref_hits[b], nt, k)
            assert values[f"hr@{k}"][b].item() == pytest.approx(hr, abs=1e-6)
            assert values[f"recall@{k}"][b].item() == pytest.approx(rec, abs=1e-6)
            assert values[f"ndcg@{k}"][b].item() == pytest.approx(ndcg, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Sampled protocol
# ---------------------------------------------------------------------------------------------


def test_sampled_ranks_hand_computed() -> None:
    nan = float("nan")
    pos = torch.tensor([0.5, 0.5, 0.5, nan, 0.5])
    neg = torch.tensor(
        [
            [0.1, 0.2, 0.3],  # all below -> rank 0
            [0.5, 0.1, 0.9],  # 0.5 ties (counts against), 0.9 beats -> rank 2
            [0.6, 0.7, 0.8],  # all beat -> rank 3
            [0.0, 0.0, nan],  # NaN positive counts as -inf -> worst rank 3
            [nan, 0.5, 0.0],  # NaN negative counts as -inf, 0.5 ties -> rank 1
        ]
    )
    ranks = sampled_ranks(pos, neg)
    assert ranks.dtype == torch.long
    assert ranks.tolist() == [0, 2, 3, 3, 1]
    values = metrics_from_ranks(ranks, ks=(1, 3))
    # rank 0: ndcg = 1/log2(2) = 1; rank 1: 1/log2(3) = 0.6309298; rank 2: 1/log2(4) = 0.5;
    # rank 3 is outside the top 3.
    _close(
        values,
        {
            "hr@1": [1, 0, 0, 0, 0],
            "recall@1": [1, 0, 0, 0, 0],
            "ndcg@1": [1, 0, 0, 0, 0],
            "hr@3": [1, 1, 0, 0, 1],
            "recall@3": [1, 1, 0, 0, 1],
            "ndcg@3": [1, 0.5, 0, 0, 1 / LOG2_3],
        },
    )


def test_sampled_constant_scores_are_worst() -> None:
    values = sampled_values(torch.zeros(4), torch.zeros(4, 99), ks=(10, 99, 100))
    # rank 99 of 100 -> only @100 counts: ndcg = 1/log2(101)
    _close(values, {"hr@10": [0] * 4, "hr@99": [0] * 4, "ndcg@100": [1 / math.log2(101)] * 4})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_matches_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    N, n_neg = 50, 99
    pos = torch.randint(0, 20, (N,), generator=g).double()
    neg = torch.randint(0, 20, (N, n_neg), generator=g).double()
    pos[3] = float("nan")
    neg[3, 5] = neg[4, 7] = float("nan")
    ranks = sampled_ranks(pos, neg)
    ref = [_ref_rank(float(pos[n]), neg[n].tolist()) for n in range(N)]
    assert ranks.tolist() == ref
    ks = (1, 5, 10, 50)
    values = metrics_from_ranks(ranks, ks)
    for n, r in enumerate(ref):
        for k in ks:
            assert values[f"hr@{k}"][n].item() == float(r < k)
            assert values[f"recall@{k}"][n].item() == float(r < k)
            exp = 1 / math.log2(r + 2) if r < k else 0.0
            assert values[f"ndcg@{k}"][n].item() == pytest.approx(exp, abs=1e-6)
    # The single-target full protocol over [pos, negs] gives the same values.
    scores = torch.cat([pos.unsqueeze(1), neg], dim=1)
    targets = torch.zeros_like(scores, dtype=torch.bool)
    targets[:, 0] = True
    full = full_ranking_values(scores, targets, None, ks)
    for key in values:
        torch.testing.assert_close(full[key], values[key])


def test_sampled_shape_errors() -> None:
    with pytest.raises(ValueError, match="pos_scores"):
        sampled_ranks(torch.zeros(3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=">= 0"):
        metrics_from_ranks(torch.tensor([-1]), (1,))


# ---------------------------------------------------------------------------------------------
# RankingMetrics
# ---------------------------------------------------------------------------------------------


def _random_values(n: int, ks: Sequence[int], seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, 30, generator=g)
    targets = torch.rand(n, 30, generator=g) < 0.2
    targets[:, 0] = True
    return full_ranking_values(scores, targets, None, ks)


def test_ranking_metrics_accumulates_like_one_update() -> None:
    ks = (1, 5, 10)
    values = _random_values(23, ks, seed=0)
    one = RankingMetrics(ks=ks, prefix="test/full/")
    one.update(values)
    many = RankingMetrics(ks=ks, prefix="test/full/")
    for lo, hi in ((0, 5), (5, 5), (5, 17), (17, 23)):  # includes an empty batch
        many.update({k: v[lo:hi] for k, v in values.items()})
    a, b = one.compute(), many.compute()
    assert list(a) == [f"test/full/{key}" for key in metric_keys(ks)]
    assert list(a) == list(b)
    for key in a:
        assert a[key].ndim == 0
        torch.testing.assert_close(a[key], b[key], atol=1e-12, rtol=0)
        torch.testing.assert_close(
            a[key], values[key.removeprefix("test/full/")].double().mean(), atol=1e-7, rtol=0
        )
    assert int(many.count) == 23


def test_ranking_metrics_default_keys_and_reset() -> None:
    m = RankingMetrics(prefix=protocol_prefix("val", "sampled"))
    ranks = torch.tensor([0, 3, 12, 60])
    m.update(metrics_from_ranks(ranks, DEFAULT_KS))
    out = m.compute()
    assert sorted(out) == sorted(f"val/sampled/{k}" for k in metric_keys(DEFAULT_KS))
    # hr@10: ranks 0 and 3 -> 2/4; ndcg@5 = (1 + 1/log2(5)) / 4
    assert out["val/sampled/hr@10"].item() == pytest.approx(0.5)
    assert out["val/sampled/ndcg@5"].item() == pytest.approx((1 + 1 / math.log2(5)) / 4)
    m.reset()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no rows evaluated"):
        m.compute()


def test_ranking_metrics_update_validation() -> None:
    m = RankingMetrics(ks=(1, 5))
    values = metrics_from_ranks(torch.tensor([0, 1]), (1, 5, 10))
    m.update(values)  # extra cut-off 10 is ignored
    assert set(m.compute()) == set(metric_keys((1, 5)))
    with pytest.raises(KeyError, match="ndcg@5"):
        m.update({k: v for k, v in values.items() if k != "ndcg@5"})
    bad = dict(values)
    bad["hr@5"] = bad["hr@5"][:1]
    with pytest.raises(ValueError, match="common length"):
        m.update(bad)
    with pytest.raises(ValueError, match="protocol"):
        protocol_prefix("val", "leave-one-out")


# ---------------------------------------------------------------------------------------------
# Interaction keys, exclusion masks and negative sampling
# ---------------------------------------------------------------------------------------------


def _interactions(seed: int = 0) -> tuple[Tensor, Tensor, int, int]:
    """Random interactions of 40 users over 300 items, plus dense users 0 (exactly 99 unseen
    items), 1 (150 unseen: sorted-random-keys path) and 2 (98 unseen: infeasible)."""
    g = torch.Generator().manual_seed(seed)
    U, n_items = 40, 300
    u = torch.randint(3, U, (2000,), generator=g)
    i = torch.randint(0, n_items, (2000,), generator=g)
    dense_u, dense_i = [], []
    for dense_user, unseen in ((0, 99), (1, 150), (2, 98)):
        items = torch.randperm(n_items, generator=g)[: n_items - unseen]
        dense_u.append(torch.full_like(items, dense_user))
        dense_i.append(items)
    user = torch.cat([u, *dense_u])
    item = torch.cat([i, *dense_i])
    return user, item, U, n_items


def test_interaction_keys_and_is_seen() -> None:
    user, item, U, n_items = _interactions()
    keys = interaction_keys(user, item, n_items)
    assert bool((keys[1:] > keys[:-1]).all())
    pairs = set(zip(user.tolist(), item.tolist(), strict=True))
    assert keys.numel() == len(pairs)
    qu = torch.randint(0, U, (500,))
    qi = torch.randint(0, n_items, (500,))
    qu[:20], qi[:20] = user[:20], item[:20]
    got = is_seen(keys, qu.view(20, 25), qi.view(20, 25), n_items)
    assert got.shape == (20, 25)
    expected = [(a, b) in pairs for a, b in zip(qu.tolist(), qi.tolist(), strict=True)]
    assert got.flatten().tolist() == expected
    assert not bool(is_seen(keys[:0], qu, qi, n_items).any())
    with pytest.raises(ValueError, match="item"):
        interaction_keys(torch.tensor([0]), torch.tensor([n_items]), n_items)


def test_build_exclusion_mask() -> None:
    user, item, U, n_items = _interactions()
    keys = interaction_keys(user, item, n_items)
    users = torch.tensor([5, 0, 5, U + 3, 39])  # repeats and a user without interactions
    mask = build_exclusion_mask(users, keys, n_items)
    dense = torch.zeros(U + 4, n_items, dtype=torch.bool)
    dense[user, item] = True
    assert torch.equal(mask, dense[users])
    assert build_exclusion_mask(users, keys[:0], n_items).sum() == 0
    assert build_exclusion_mask(users[:0], keys, n_items).shape == (0, n_items)


def test_sample_negatives_properties() -> None:
    user, item, _, n_items = _interactions()
    keys = interaction_keys(user, item, n_items)
    pairs_user = torch.tensor([0, 1, 3, 4, 5, 1, 0, 39] * 5)
    neg = sample_negatives(pairs_user, keys, n_items, num_negatives=99, seed=7)
    assert neg.shape == (40, 99) and neg.dtype == torch.long
    assert int(neg.min()) >= 0 and int(neg.max()) < n_items
    assert not bool(is_seen(keys, pairs_user.unsqueeze(1).expand_as(neg), neg, n_items).any())
    assert bool((neg[:, 1:] > neg[:, :-1]).all())  # distinct (and sorted) within a row
    # User 0 has exactly 99 unseen items: every one of them, every time.
    unseen0 = sorted(set(range(n_items)) - set(item[user == 0].tolist()))
    for row in neg[pairs_user == 0]:
        assert row.tolist() == unseen0
    # Deterministic for a seed, whatever the global RNG state; different for another seed.
    torch.manual_seed(123)
    assert torch.equal(neg, sample_negatives(pairs_user, keys, n_items, num_negatives=99, seed=7))
    other = sample_negatives(pairs_user, keys, n_items, num_negatives=99, seed=8)
    assert not torch.equal(neg[pairs_user != 0], other[pairs_user != 0])
    # Rows of the same user differ (independent draws), except for the forced user 0.
    rows_3 = neg[pairs_user == 3]
    assert not torch.equal(rows_3[0], rows_3[1])
    assert sample_negatives(pairs_user, keys, n_items, num_negatives=0).shape == (40, 0)
    assert sample_negatives(pairs_user[:0], keys, n_items).shape == (0, 99)


def test_sample_negatives_infeasible() -> None:
    user, item, _, n_items = _interactions()
    keys = interaction_keys(user, item, n_items)
    with pytest.raises(ValueError, match="user 2 has only 98 items"):
        sample_negatives(torch.tensor([3, 2, 0]), keys, n_items, num_negatives=99)
    sample_negatives(torch.tensor([3, 2, 0]), keys, n_items, num_negatives=98)  # feasible
    with pytest.raises(ValueError, match="strictly increasing"):
        sample_negatives(torch.tensor([3]), keys.flip(0), n_items)


@pytest.mark.parametrize(("seen_count", "num_negatives"), [(10, 20), (150, 99)])
def test_sample_negatives_is_uniform(seen_count: int, num_negatives: int) -> None:
    # Sparse path (290 unseen, 20 draws) and sorted-random-keys path (150 unseen, 99 draws).
    n_items, rows = 300, 3000
    seen_items = torch.arange(0, 2 * seen_count, 2)
    keys = interaction_keys(torch.zeros_like(seen_items), seen_items, n_items)
    neg = sample_negatives(
        torch.zeros(rows, dtype=torch.long), keys, n_items, num_negatives, seed=1
    )
    counts = torch.bincount(neg.flatten(), minlength=n_items).double()
    assert counts[seen_items].sum() == 0
    unseen = torch.ones(n_items, dtype=torch.bool)
    unseen[seen_items] = False
    m = int(unseen.sum())
    p = num_negatives / m  # inclusion probability of each unseen item per row
    expected, std = rows * p, math.sqrt(rows * p * (1 - p))
    z = (counts[unseen] - expected) / std
    assert float(z.abs().max()) < 5.0
    chi2 = float((z**2).sum())  # ~ chi-square with about m dof (rows are dependent only weakly)
    assert chi2 < m + 6 * math.sqrt(2 * m)


def test_training_negatives_redraw_seen_pairs_once() -> None:
    # user 0 has seen half of the 10 items: a uniform draw hits them with p = 0.5, one redraw
    # leaves p^2 = 0.25; user 1 has seen nothing.
    seen = interaction_keys(torch.zeros(5, dtype=torch.long), torch.arange(5), 10)
    users = torch.cat([torch.zeros(20000, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    torch.manual_seed(0)
    plain = training_negatives(users, 10, 2)
    torch.manual_seed(0)
    redrawn = training_negatives(users, 10, 2, seen)
    assert plain.shape == redrawn.shape == (20100, 2)
    assert int(plain.min()) >= 0 and int(plain.max()) < 10
    assert 0.45 < float((plain[:20000] < 5).float().mean()) < 0.55
    assert 0.22 < float((redrawn[:20000] < 5).float().mean()) < 0.28
    torch.manual_seed(0)
    assert torch.equal(training_negatives(users, 10, 2, seen[:0]), plain)  # no keys: no redraw


def test_dense_seen_mask_gives_the_same_draws_as_the_sorted_keys() -> None:
    gen = torch.Generator().manual_seed(3)
    n_users, n_items = 40, 30
    pu = torch.randint(n_users, (400,), generator=gen)
    pi = torch.randint(n_items, (400,), generator=gen)
    keys = interaction_keys(pu, pi, n_items)
    mask = dense_seen_mask(keys, n_users, n_items)
    assert mask.shape == (n_users, n_items) and int(mask.sum()) == keys.numel()
    assert bool(mask[pu, pi].all())
    users = torch.randint(n_users, (5000,), generator=gen)
    torch.manual_seed(0)
    by_keys = training_negatives(users, n_items, 4, keys)
    torch.manual_seed(0)
    by_mask = training_negatives(users, n_items, 4, mask)
    assert torch.equal(by_keys, by_mask)
    torch.manual_seed(0)
    assert not torch.equal(training_negatives(users, n_items, 4), by_mask)  # redraws happened
    with pytest.raises(ValueError, match="must be \\[num_users, 30\\]"):
        training_negatives(users, n_items, 4, mask[:, :10])
    with pytest.raises(ValueError, match="exceeds"):
        dense_seen_mask(keys, 1 << 14, 1 << 13)
    with pytest.raises(ValueError, match="num_users"):
        dense_seen_mask(keys, 10, n_items)
