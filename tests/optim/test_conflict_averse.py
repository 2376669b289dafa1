"""ConflictAverse (DAMO, DSDA Theorem 3.3): closed forms, the defining property, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_unlearn.optim import ConflictAverse
from lit_unlearn.optim.conflict_averse import conflict_averse_weights, project_simplex


def _direction(J: np.ndarray, lam: np.ndarray, c: float) -> np.ndarray:
    coef, _ = conflict_averse_weights(J @ J.T, lam, c)
    return coef @ J


def test_radius_zero_returns_the_target_gradient() -> None:
    J = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 3.0, 0.5], [0.2, -0.4, 1.0]], dtype=torch.float64)
    combiner = ConflictAverse(c=0.0, target_weights=[1.0, 2.0, 0.5])
    d, w = combiner(J)
    assert torch.allclose(w, torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    assert torch.allclose(d, torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64) @ J)
    assert torch.equal(combiner.static_weights(3), w.cpu())  # type: ignore[arg-type]
    assert ConflictAverse(c=0.5).static_weights(3) is None


@pytest.mark.parametrize("c", [0.1, 0.5, 0.9])
def test_orthogonal_unit_gradients_closed_form(c: float) -> None:
    # G = I, g_T = (1, 1): w* = (1/2, 1/2), ||g_w*|| = 1/sqrt 2, d* = (1 + c) g_T.
    d, w = ConflictAverse(c=c)(torch.eye(2, dtype=torch.float64))
    assert torch.allclose(d, torch.full((2,), 1 + c, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(w, torch.full((2,), 1 + c, dtype=torch.float64), atol=1e-8)


def test_identical_gradients_scale_by_one_plus_c() -> None:
    g = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    J = torch.cat([g, g])
    d, _ = ConflictAverse(c=0.5)(J)  # g_T = 2g, g_w = g: d = 2g + 0.5 * 2||g|| g / ||g||
    assert torch.allclose(d, 3.0 * g[0], atol=1e-10)


@pytest.mark.parametrize("seed", range(12))
def test_direction_is_the_argmax_of_the_worst_inner_product_in_the_ball(seed: int) -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    m, p = int(rng.integers(2, 5)), int(rng.integers(4, 9))
    J = rng.normal(size=(m, p)) * rng.uniform(0.1, 10.0, size=(m, 1))
    lam, c = rng.uniform(0.2, 2.0, size=m), float(rng.uniform(0.05, 0.95))
    d, g_t = _direction(J, lam, c), lam @ J
    # Feasible: inside the ball ||d - g_T|| <= c ||g_T||.
    assert np.linalg.norm(d - g_t) <= c * np.linalg.norm(g_t) * (1 + 1e-9)
    # Optimal: a generic solver on the primal (variables d and t: max t, J d >= t, ball) does
    # not beat it.
    cons = [
        {"type": "ineq", "fun": lambda x: J @ x[:-1] - x[-1]},
        {"type": "ineq", "fun": lambda x: c**2 * g_t @ g_t - (x[:-1] - g_t) @ (x[:-1] - g_t)},
    ]
    x0 = np.concatenate([g_t, [(J @ g_t).min()]])
    res = minimize(lambda x: -x[-1], x0, constraints=cons, method="SLSQP",
                   options={"ftol": 1e-14, "maxiter": 1000})  # fmt: skip
    # SLSQP may stop on a line-search warning at its optimum: use its point when feasible.
    x = res.x
    assert np.linalg.norm(x[:-1] - g_t) <= c * np.linalg.norm(g_t) * (1 + 1e-6)
    ours, generic = float((J @ d).min()), float((J @ x[:-1]).min())
    assert ours >= generic - 1e-6 * abs(generic)
    # And it is never worse for the worst objective than g_T itself (g_T is feasible).
    assert ours >= float((J @ g_t).min()) - 1e-9 * abs(ours)


def test_conflicting_objectives_get_a_direction_that_helps_the_worst() -> None:
    J = torch.tensor([[1.0, 0.0], [-0.8, 0.3]], dtype=torch.float64)  # <g_1, g_2> < 0
    g_t = J.sum(0)
    d, _ = ConflictAverse(c=0.5)(J)
    assert float((J @ g_t).min()) < float((J @ d).min())


def test_pareto_stationary_and_zero_gradients_give_the_centre_without_nan() -> None:
    g = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    d, w = ConflictAverse(c=0.5)(torch.cat([g, -g]))  # 0 is in the hull; g_T = 0 too
    assert torch.isfinite(d).all() and torch.allclose(d, torch.zeros(2, dtype=torch.float64))
    # g_T = 2g - g = g; the dual puts all weight on -g (w* = (0, 1)), so d* = g - c g: the
    # point of the ball nearest to being orthogonal to g (max of min(<g,d>, -<g,d>)).
    d, w = ConflictAverse(c=0.5, target_weights=[2.0, 1.0])(torch.cat([g, -g]))
    assert torch.isfinite(w).all()
    assert torch.allclose(d, 0.5 * g[0], atol=1e-8)
    d, w = ConflictAverse(c=0.5)(torch.zeros(3, 4, dtype=torch.float64))
    assert torch.equal(d, torch.zeros(4, dtype=torch.float64)) and torch.isfinite(w).all()


def test_rescale_and_determinism_and_pure() -> None:
    J = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    G = J @ J.T
    before = G.clone()
    a = ConflictAverse(c=0.5).weights(G)
    assert torch.equal(a, ConflictAverse(c=0.5).weights(G)) and torch.equal(G, before)
    assert torch.allclose(ConflictAverse(c=0.5, rescale=True).weights(G), a / 1.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"c": 1.0}, "c must lie"),
        ({"c": -0.1}, "c must lie"),
        ({"target_weights": [1.0, -1.0]}, "target_weights"),
        ({"target_weights": [0.0, 0.0]}, "target_weights"),
        ({"max_iter": 0}, "max_iter"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConflictAverse(**kwargs)


def test_target_weights_must_match_the_objectives() -> None:
    with pytest.raises(ValueError, match="3 target weights but got 2"):
        ConflictAverse(target_weights=[1.0, 1.0, 1.0]).weights(torch.eye(2, dtype=torch.float64))


def test_simplex_projection() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        v = rng.normal(size=int(rng.integers(1, 6))) * 3
        p = project_simplex(v)
        assert abs(p.sum() - 1) < 1e-12 and (p >= 0).all()
        # Optimality: <v - p, q - p> <= 0 for any simplex point q (here the vertices).
        for q in np.eye(len(v)):
            assert (v - p) @ (q - p) <= 1e-10
