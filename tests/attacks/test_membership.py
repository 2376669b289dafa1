"""Softmax entropy and the entropy-based membership inference attack (SSD's MIA)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor

from lit_unlearn.attacks.membership import MIAResult, entropy_mia, softmax_entropy

K = 10


def _by_hand(logits: Tensor) -> Tensor:
    """-(p log p).sum with p = softmax(logits), written out in numpy (float64)."""
    x = logits.double().numpy()
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return torch.from_numpy(-terms.sum(axis=1))


# ---------------------------------------------------------------------------------------------
# softmax_entropy
# ---------------------------------------------------------------------------------------------


def test_uniform_logits_give_log_k() -> None:
    for k in (2, 3, K, 100):
        logits = torch.stack([torch.zeros(k), torch.full((k,), 7.5), torch.full((k,), -300.0)])
        h = softmax_entropy(logits)
        assert h.shape == (3,) and h.dtype == torch.float64
        torch.testing.assert_close(h, torch.full((3,), math.log(k), dtype=torch.float64))


def test_peaked_logits_give_about_zero() -> None:
    logits = torch.zeros(4, K)
    logits[torch.arange(4), torch.tensor([0, 3, 5, 9])] = torch.tensor([30.0, 50.0, 100.0, 1e4])
    h = softmax_entropy(logits)
    assert bool((h >= 0).all()) and float(h.max()) < 1e-10
    # Entropy falls monotonically as one logit grows.
    margins = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
    ramp = torch.zeros(len(margins), K)
    ramp[:, 2] = margins
    assert bool((softmax_entropy(ramp).diff() < 0).all())


def test_matches_the_definition_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.1, 1.0, 5.0, 20.0, 0.0]).repeat(10)[:, None]  # row temperatures
    logits = torch.randn(50, K, generator=g) * scales
    torch.testing.assert_close(softmax_entropy(logits), _by_hand(logits), rtol=0, atol=1e-12)
    # Two classes: the binary entropy of sigmoid(a).
    a = torch.tensor([-3.0, -0.2, 0.0, 1.3, 6.0])
    p = torch.sigmoid(a.double())
    binary = -(p * p.log() + (1 - p) * (1 - p).log())
    two = torch.stack([a, torch.zeros_like(a)], dim=1)
    torch.testing.assert_close(softmax_entropy(two), binary, rtol=0, atol=1e-12)
    # Known value: p = (1/2, 1/4, 1/4) -> 1.5 log 2.
    three = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64).log()
    assert float(softmax_entropy(three)) == pytest.approx(1.5 * math.log(2), abs=1e-12)


def test_stable_for_huge_logits() -> None:
    huge = torch.tensor(
        [
            [1e30, 0.0, -1e30],
            [3e38, 3e38, -3e38],  # float32 max-ish: two equal winners -> log 2
            [1e4, 1e4 - 1.0, 0.0],
            [-1e30, -1e30, -1e30],
        ]
    )
    h = softmax_entropy(huge)
    assert not bool(h.isnan().any()) and bool(h.isfinite().all())
    assert float(h[0]) == 0.0
    assert float(h[1]) == pytest.approx(math.log(2), abs=1e-12)
    assert float(h[3]) == pytest.approx(math.log(3), abs=1e-12)
    # Shift invariance: adding a large constant to a row changes nothing.
    g = torch.Generator().manual_seed(1)
    base = torch.randn(20, K, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        softmax_entropy(base + 1e6), softmax_entropy(base), atol=1e-9, rtol=0
    )
    torch.testing.assert_close(softmax_entropy(huge[2:3]), _by_hand(huge[2:3]), atol=1e-12, rtol=0)


def test_values_lie_in_zero_to_log_k_and_input_is_untouched() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(200, K, generator=g) * 3
    copy = logits.clone()
    h = softmax_entropy(logits)
    assert bool((h >= 0).all()) and bool((h <= math.log(K) + 1e-12).all())
    assert torch.equal(logits, copy)
    assert softmax_entropy(torch.empty(0, K)).shape == (0,)


# ---------------------------------------------------------------------------------------------
# entropy_mia
# ---------------------------------------------------------------------------------------------


def _confident(n: int, seed: int) -> Tensor:
    """Logits of a model sure of its answer (low entropy): what it saw in training."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, generator=g)
    logits[torch.arange(n), torch.randint(0, K, (n,), generator=g)] += 12.0
    return logits


def _unsure(n: int, seed: int) -> Tensor:
    """Logits close to uniform (high entropy): unseen data."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, K, generator=g) * 0.3


def test_targets_like_members_score_near_one() -> None:
    result = entropy_mia(_confident(80, 0), _unsure(60, 1), _confident(40, 2))
    assert isinstance(result, MIAResult)
    assert result.mia >= 0.95
    assert result.attack_train_accuracy >= 0.95
    assert (result.num_members, result.num_nonmembers, result.num_targets) == (80, 60, 40)


def test_targets_like_nonmembers_score_near_zero() -> None:
    result = entropy_mia(_confident(80, 0), _unsure(60, 1), _unsure(40, 3))
    assert result.mia <= 0.05
    assert result.attack_train_accuracy >= 0.95


def test_half_and_half_targets_score_about_half() -> None:
    targets = torch.cat([_confident(50, 4), _unsure(50, 5)])
    result = entropy_mia(_confident(80, 0), _unsure(60, 1), targets)
    assert 0.4 <= result.mia <= 0.6


def test_inseparable_sets_give_chance_attack_accuracy() -> None:
    # Members and non-members drawn alike: the attack cannot beat a coin by much.
    g = torch.Generator().manual_seed(6)
    same = torch.randn(400, K, generator=g) * 2
    result = entropy_mia(same[:200], same[200:], same[:50])
    assert 0.3 <= result.attack_train_accuracy <= 0.7
    assert 0.0 <= result.mia <= 1.0


def test_unbalanced_sets_are_weighted() -> None:
    # class_weight="balanced": 10x more members than non-members does not push every sample to
    # "member"; non-member-like targets still score low.
    result = entropy_mia(_confident(500, 0), _unsure(50, 1), _unsure(40, 3))
    assert result.mia <= 0.05 and result.attack_train_accuracy >= 0.95


def test_deterministic() -> None:
    g = torch.Generator().manual_seed(7)
    members = torch.randn(100, K, generator=g) * 3
    nonmembers = torch.randn(90, K, generator=g)
    targets = torch.randn(30, K, generator=g) * 2
    first = entropy_mia(members, nonmembers, targets)
    assert entropy_mia(members.clone(), nonmembers.clone(), targets.clone()) == first
    assert entropy_mia(members, nonmembers, targets, seed=123) == first  # lbfgs: no randomness
    # The result is a fraction of targets.
    assert (first.mia * 30) == pytest.approx(round(first.mia * 30))


@pytest.mark.parametrize(
    ("empty", "match"),
    [("members", r"empty: \['members'\]"), ("non-members", "non-members"), ("targets", "targets")],
)
def test_empty_set_raises(empty: str, match: str) -> None:
    sets = {"members": _confident(5, 0), "non-members": _unsure(5, 1), "targets": _unsure(5, 2)}
    sets[empty] = torch.empty(0, K)
    with pytest.raises(ValueError, match=rf"MIA needs samples in every set.*{match}"):
        entropy_mia(sets["members"], sets["non-members"], sets["targets"])


def test_all_empty_lists_every_set() -> None:
    e = torch.empty(0, K)
    with pytest.raises(ValueError, match=r"\['members', 'non-members', 'targets'\]"):
        entropy_mia(e, e, e)
