"""The second-order linear attacker reads what the first-order one cannot: class spreads."""

from __future__ import annotations

import numpy as np
import pytest

from lit_unlearn.attacks import ATTACKERS, QuadraticAttacker, make_attacker
from lit_unlearn.attacks.leakage import measure_leakage
from lit_unlearn.attacks.logreg import LogisticRegressionAttacker


def spread_only(seed: int = 0, n: int = 600, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Equal class means; class 1 is 1.5x wider in every dimension."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    return rng.standard_normal((n, d)) * (1 + 0.5 * y[:, None]), y


def test_reads_a_spread_the_linear_attacker_cannot() -> None:
    x, y = spread_only()
    linear = measure_leakage(LogisticRegressionAttacker(), x, y, 2, n_permutations=0)
    quad = measure_leakage(QuadraticAttacker(), x, y, 2, n_permutations=0)
    assert abs(linear.auc - 0.5) < 0.06
    assert quad.auc > 0.75 and quad.balanced_accuracy > 0.65


def test_features_registry_and_bad_input() -> None:
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(
        QuadraticAttacker.expand(x), np.concatenate([x, x * x - 1.0], axis=1)
    )
    assert ATTACKERS["quadratic"] is QuadraticAttacker
    attacker = make_attacker("quadratic", seed=3, C=0.5)
    assert isinstance(attacker, QuadraticAttacker) and attacker.C == 0.5 and attacker.seed == 3
    with pytest.raises(ValueError, match="C must be"):
        QuadraticAttacker(C=0.0)
    xs, y = spread_only(n=60, d=3)
    proba = QuadraticAttacker().fit(xs, y, None, None, 2).predict_proba(xs)
    assert proba.shape == (60, 2) and np.allclose(proba.sum(1), 1.0)
