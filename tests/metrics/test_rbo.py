"""Webber's extrapolated RBO against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from lit_unlearn.metrics.rbo import rbo_at_k, rbo_ext


def test_identical_and_disjoint_lists() -> None:
    assert rbo_ext("abcd", "abcd", 0.9) == pytest.approx(1.0)
    assert rbo_ext("abcd", "efgh", 0.9) == pytest.approx(0.0)


def test_hand_computed_even_lengths() -> None:
    # X = (0, 2): (1-p)/p * (0/1 p + 2/2 p^2) + 2/2 p^2 = 0.25 + 0.25 at p = 0.5.
    assert rbo_ext("ab", "ba", 0.5) == pytest.approx(0.5)
    # X = (0, 0, 2, 4) at p = 0.9: 1/9 * (2/3 * 0.729 + 0.6561) + 0.6561 = 0.783.
    assert rbo_ext("abcd", "dcba", 0.9) == pytest.approx(0.783)
    # X = (1, 1, 2): 1/9 * (0.9 + 0.405 + 0.486) + 2/3 * 0.729 = 0.685.
    assert rbo_ext("abc", "adb", 0.9) == pytest.approx(0.685)


def test_hand_computed_uneven_lengths() -> None:
    # S = (a, b), L = (a, c, b): s = 2, l = 3, X = (1, 1, 2), X_s = 1.
    # (1-p)/p * [0.9 + 0.405 + 0.486 + 1 * 1/6 * 0.729] + [(2 - 1)/3 + 1/2] * 0.729
    # = 1.9125 / 9 + 0.6075 = 0.82.
    assert rbo_ext("ab", "acb", 0.9) == pytest.approx(0.82, abs=1e-12)
    assert rbo_ext("acb", "ab", 0.9) == pytest.approx(rbo_ext("ab", "acb", 0.9))
    # A prefix of a ranking extrapolates to agreement.
    assert rbo_ext("abc", "abcdef", 0.9) == pytest.approx(1.0)


def test_p_one_is_overlap_and_bad_input() -> None:
    assert rbo_ext("abcd", "axby", 1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        rbo_ext("ab", "ab", 0.0)
    with pytest.raises(ValueError, match="repeats"):
        rbo_ext("aab", "abc")
    with pytest.raises(ValueError):
        rbo_ext("", "abc")


def test_batched_matches_scalar() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.stack([torch.randperm(30, generator=g)[:10] for _ in range(20)])
    b = torch.stack([torch.randperm(30, generator=g)[:10] for _ in range(20)])
    got = rbo_at_k(a, b, p=0.8)
    want = torch.tensor([rbo_ext(x.tolist(), y.tolist(), 0.8) for x, y in zip(a, b, strict=True)])
    torch.testing.assert_close(got, want.to(torch.float64))
    with pytest.raises(ValueError):
        rbo_at_k(a, b[:, :5])
