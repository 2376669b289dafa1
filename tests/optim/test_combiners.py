"""Gradient combiners (MGDA, fixed weights) and the flat-gradient helpers."""

from __future__ import annotations

import itertools
import math
import typing

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from lit_unlearn.optim import (
    MGDA,
    FixedWeights,
    GradientCombiner,
    assign_flat_grad,
    flatten_grads,
    gramian,
)
from lit_unlearn.optim._simplex import frank_wolfe as _frank_wolfe

F64 = torch.float64


def _t(rows: list[list[float]], dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def _random_jacobian(
    m: int, P: int, seed: int, offset: float = 0.0, dtype: torch.dtype = F64
) -> torch.Tensor:
    """Random gradients; ``offset`` adds a shared component (makes the min-norm point non-zero)."""
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(m, P, generator=gen, dtype=F64)
    J = J + offset * torch.randn(1, P, generator=gen, dtype=F64)
    return J.to(dtype)


def _assert_on_simplex(w: torch.Tensor, atol: float = 1e-12) -> None:
    assert bool(torch.isfinite(w).all())
    assert bool((w >= 0).all())
    assert float(w.sum()) == pytest.approx(1.0, abs=atol)


def _assert_kkt(G: torch.Tensor, w: torch.Tensor, rel: float = 1e-8) -> None:
    """KKT of min w^T G w on the simplex: (G w)_i >= w^T G w, with equality where w_i > 0."""
    eps = rel * float(torch.diagonal(G).max())
    g = G @ w
    f = float(w @ g)
    assert float(g.min()) >= f - eps
    assert float((g[w > 0] - f).abs().max()) <= eps


# --------------------------------------------------------------------------------------------
# MGDA, two objectives (AttrCloak Eq. 26)
# --------------------------------------------------------------------------------------------


def test_two_objectives_closed_form() -> None:
    # g1 = (3, 1) (unlearning), g2 = (-1, 2) (retention).
    # G00 = 9 + 1 = 10, G01 = -3 + 2 = -1, G11 = 1 + 4 = 5.
    # Eq. 26: alpha = (g2 - g1)^T g2 / ||g1 - g2||^2 = (-4, 1).(-1, 2) / ||(4, -1)||^2
    #       = (4 + 2) / 17 = 6/17;  Gramian form: (G11 - G01) / (G00 - 2 G01 + G11) = 6 / 17.
    # d = 6/17 (3, 1) + 11/17 (-1, 2) = (18 - 11, 6 + 22) / 17 = (7, 28) / 17.
    J = _t([[3.0, 1.0], [-1.0, 2.0]])
    direction, w = MGDA()(J)
    assert w.tolist() == pytest.approx([6 / 17, 11 / 17], abs=1e-15)
    assert direction.tolist() == pytest.approx([7 / 17, 28 / 17], abs=1e-14)
    # Eq. 25 at the optimum: d is orthogonal to g1 - g2 = (4, -1): (7*4 - 28) / 17 = 0.
    assert float(direction @ (J[0] - J[1])) == pytest.approx(0.0, abs=1e-14)
    # The same weights straight from the Gramian; AttrCloak-DF bounds (0.1, 1) do not bind.
    G = gramian(J)
    assert G.tolist() == [[10.0, -1.0], [-1.0, 5.0]]
    assert MGDA().weights(G).tolist() == pytest.approx([6 / 17, 11 / 17], abs=1e-15)
    assert MGDA(bounds=(0.1, 1.0)).weights(G).tolist() == pytest.approx([6 / 17, 11 / 17])


def test_two_objectives_clip_upper_and_lower() -> None:
    # g1 = (1, 0), g2 = (2, 0): G00 = 1, G01 = 2, G11 = 4;
    # alpha = (4 - 2) / (1 - 4 + 4) = 2 -> clipped to 1: all weight on the shorter g1.
    J = _t([[1.0, 0.0], [2.0, 0.0]])
    direction, w = MGDA()(J)
    assert w.tolist() == [1.0, 0.0]
    assert direction.tolist() == [1.0, 0.0]
    # Swapped: g1 = (2, 0), g2 = (1, 0): alpha = (1 - 2) / (4 - 4 + 1) = -1 -> clipped to 0.
    _, w = MGDA()(J.flip(0))
    assert w.tolist() == [0.0, 1.0]
    # AttrCloak-DF clips to [0.1, 1]: alpha = -1 -> 0.1, weights (0.1, 0.9).
    direction, w = MGDA(bounds=(0.1, 1.0))(J.flip(0))
    assert w.tolist() == pytest.approx([0.1, 0.9])
    assert direction.tolist() == pytest.approx([0.1 * 2 + 0.9 * 1, 0.0])
    # Upper bound below 1: orthogonal g1 = (1, 0), g2 = (0, 2): alpha = 4 / 5 -> clipped to 0.6.
    J = _t([[1.0, 0.0], [0.0, 2.0]])
    assert MGDA(bounds=(0.0, 0.6))(J)[1].tolist() == pytest.approx([0.6, 0.4])
    # Lower bound above the optimum: alpha = 4 / 5 -> clipped up to 0.9.
    assert MGDA(bounds=(0.9, 1.0))(J)[1].tolist() == pytest.approx([0.9, 0.1])
    # lo == hi pins the weight.
    assert MGDA(bounds=(0.3, 0.3))(J)[1].tolist() == pytest.approx([0.3, 0.7])


def test_two_identical_gradients() -> None:
    # g1 = g2: ||g1 - g2||^2 = 0, every alpha gives the same direction; alpha = 0.5 by convention.
    J = _t([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    direction, w = MGDA()(J)
    assert w.tolist() == [0.5, 0.5]
    assert direction.tolist() == [1.0, 2.0, 3.0]
    # 0.5 clipped into the bounds.
    assert MGDA(bounds=(0.6, 1.0))(J)[1].tolist() == pytest.approx([0.6, 0.4])
    assert MGDA(bounds=(0.0, 0.2))(J)[1].tolist() == pytest.approx([0.2, 0.8])
    # Many identical gradients (Frank-Wolfe path): uniform.
    w4 = MGDA().weights(gramian(J[:1].repeat(4, 1)))
    assert w4.tolist() == pytest.approx([0.25] * 4, abs=1e-15)


def test_one_zero_gradient_takes_all_weight() -> None:
    # g1 = 0, g2 = (1, 1): G00 = G01 = 0, G11 = 2; alpha = (2 - 0) / (0 - 0 + 2) = 1.
    # The min-norm point is the zero vector itself (Pareto-stationary).
    J = _t([[0.0, 0.0], [1.0, 1.0]])
    direction, w = MGDA()(J)
    assert w.tolist() == [1.0, 0.0]
    assert direction.tolist() == [0.0, 0.0]
    # g2 = 0: alpha = (0 - 0) / (2 - 0 + 0) = 0 -> all weight on g2.
    direction, w = MGDA()(J.flip(0))
    assert w.tolist() == [0.0, 1.0]
    assert direction.tolist() == [0.0, 0.0]
    # With AttrCloak-DF bounds the unlearning gradient keeps 10 % (alpha = 0 -> 0.1).
    direction, w = MGDA(bounds=(0.1, 1.0))(J.flip(0))
    assert w.tolist() == pytest.approx([0.1, 0.9])
    assert direction.tolist() == pytest.approx([0.1, 0.1])
    # m > 2: a zero gradient among others takes all the weight too.
    J3 = _t([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [-1.0, 3.0, 0.5]])
    assert MGDA().weights(gramian(J3)).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("g1", "g2"),
    [
        ([3.0, 0.0, 0.0], [0.0, 0.0, 4.0]),  # |g1|^2 = 9, |g2|^2 = 16 -> alpha = 16/25
        ([1.0, 1.0], [-2.0, 2.0]),  # |g1|^2 = 2, |g2|^2 = 8 -> alpha = 8/10
        ([0.0, 5.0], [0.1, 0.0]),  # |g1|^2 = 25, |g2|^2 = 0.01 -> alpha = 0.01/25.01
    ],
)
def test_two_orthogonal_gradients(g1: list[float], g2: list[float]) -> None:
    # G01 = 0: alpha = G11 / (G00 + G11) = |g2|^2 / (|g1|^2 + |g2|^2).
    n1, n2 = sum(x * x for x in g1), sum(x * x for x in g2)
    alpha = n2 / (n1 + n2)
    direction, w = MGDA()(_t([g1, g2]))
    assert w.tolist() == pytest.approx([alpha, 1 - alpha], rel=1e-12)
    # d = alpha g1 + (1 - alpha) g2 makes equal inner products with both: d.g1 = d.g2 = |d|^2.
    d2 = float(direction @ direction)
    assert float(direction @ _t([g1])[0]) == pytest.approx(d2, rel=1e-12)
    assert float(direction @ _t([g2])[0]) == pytest.approx(d2, rel=1e-12)


def test_two_objectives_agree_with_frank_wolfe() -> None:
    mgda = MGDA()
    for seed in range(20):
        P = [1, 2, 5, 40][seed % 4]
        J = _random_jacobian(2, P, seed, offset=seed % 3)
        G = gramian(J)
        G_norm = G / torch.diagonal(G).max()
        w_closed = mgda.weights(G)
        for init in (None, torch.tensor([1.0, 0.0], dtype=F64), torch.full((2,), 0.5, dtype=F64)):
            w_fw = _frank_wolfe(G_norm, max_iter=250, tol=1e-12, init=init)
            assert torch.allclose(w_closed, w_fw, atol=1e-9), (seed, init, w_closed, w_fw)


# --------------------------------------------------------------------------------------------
# MGDA, m > 2 (Frank-Wolfe)
# --------------------------------------------------------------------------------------------


def _slsqp_min(G: torch.Tensor) -> float:
    Gn = G.numpy()
    m = Gn.shape[0]
    res = minimize(
        lambda x: float(x @ Gn @ x),
        np.full(m, 1.0 / m),
        jac=lambda x: 2.0 * Gn @ x,
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 500},
    )
    # SLSQP meets the equality only to ~1e-9 (scipy 1.17 returned sum(x) = 1 - 9.8e-10, whose
    # value undercut the true minimum by 2e-9 relative): score its point after projecting it
    # back onto the simplex, so the reference is a feasible value.
    x = np.clip(res.x, 0.0, None)
    x = x / x.sum()
    return float(x @ Gn @ x)


@pytest.mark.parametrize("m", [3, 4, 5, 6])
def test_kkt_and_optimality_random(m: int) -> None:
    mgda = MGDA()
    for seed in range(12):
        # P < m - 1 makes the gradients affinely dependent (non-unique weights, zero minima).
        P = [2, m - 1, m + 3, 50][seed % 4]
        J = _random_jacobian(m, P, 100 * m + seed, offset=[0.0, 1.0, 3.0][seed % 3])
        G = gramian(J)
        w = mgda.weights(G)
        _assert_on_simplex(w)
        _assert_kkt(G, w)
        value = float(w @ G @ w)
        scale = float(torch.diagonal(G).max())
        # The projected SLSQP point is feasible, so ours can only be (numerically) no worse.
        assert value <= _slsqp_min(G) + 1e-9 * scale, (m, seed)


def test_three_objectives_against_simplex_grid() -> None:
    n = 200  # grid step 1/200 on the 2-simplex
    grid = torch.tensor(
        [(i / n, j / n, (n - i - j) / n) for i in range(n + 1) for j in range(n + 1 - i)],
        dtype=F64,
    )
    for seed in range(5):
        J = _random_jacobian(3, 4, seed, offset=1.0)
        G = gramian(J)
        w = MGDA().weights(G)
        value = float(w @ G @ w)
        grid_values = ((grid @ G) * grid).sum(dim=1)
        best = float(grid_values.min())
        scale = float(torch.diagonal(G).max())
        assert value <= best + 1e-12 * scale  # never worse than any feasible grid point
        assert value >= best - 1e-3 * scale  # and the grid's best is close to the optimum
        assert torch.allclose(w, grid[int(grid_values.argmin())], atol=2.0 / n)


def test_large_and_rank_deficient_problem() -> None:
    # 30 objectives in 10 dimensions: many weights are zero, KKT still holds tightly.
    J = _random_jacobian(30, 10, 7, offset=2.0)
    G = gramian(J)
    w = MGDA().weights(G)
    _assert_on_simplex(w)
    _assert_kkt(G, w)
    assert int((w == 0).sum()) > 0


def test_max_iter_one_is_still_feasible() -> None:
    J = _random_jacobian(6, 8, 3, offset=1.0)
    w = MGDA(max_iter=1).weights(gramian(J))
    _assert_on_simplex(w)


def test_single_objective() -> None:
    direction, w = MGDA()(_t([[1.0, -2.0]]))
    assert w.tolist() == [1.0]
    assert direction.tolist() == [1.0, -2.0]


@pytest.mark.parametrize("m", [2, 3, 5])
def test_zero_gramian_gives_uniform_weights(m: int) -> None:
    direction, w = MGDA()(torch.zeros(m, 4))
    assert w.tolist() == pytest.approx([1.0 / m] * m)
    assert direction.tolist() == [0.0] * 4
    # m == 2 with bounds: 0.5 clipped into them.
    if m == 2:
        assert MGDA(bounds=(0.7, 0.9)).weights(torch.zeros(2, 2)).tolist() == pytest.approx(
            [0.7, 0.3]
        )


# --------------------------------------------------------------------------------------------
# MGDA properties
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 5])
def test_permutation_invariance(m: int) -> None:
    mgda = MGDA()
    for seed in range(5):
        J = _random_jacobian(m, 20, seed, offset=1.0)
        w = mgda.weights(gramian(J))
        for perm in itertools.islice(itertools.permutations(range(m)), 1, 6):
            idx = torch.tensor(perm)
            w_perm = mgda.weights(gramian(J[idx]))
            assert torch.allclose(w_perm, w[idx], atol=1e-9), (seed, perm)


@pytest.mark.parametrize("m", [2, 3, 4, 6])
def test_direction_does_not_conflict_with_any_objective(m: int) -> None:
    # With a non-zero min-norm point d: d . g_i >= ||d||^2 > 0 for every objective.
    for seed in range(5):
        J = _random_jacobian(m, 30, seed, offset=2.0)
        direction, w = MGDA()(J)
        d2 = float(direction @ direction)
        assert d2 > 1e-6
        eps = 1e-8 * float((J * J).sum(dim=1).max())
        assert bool((J @ direction >= d2 - eps).all())
        # Scaling every gradient by the same factor leaves the weights unchanged.
        w_scaled = MGDA().weights(gramian(J * 1e3))
        assert torch.allclose(w_scaled, w, atol=1e-9)


def test_deterministic_and_pure() -> None:
    J = _random_jacobian(5, 12, 11, offset=1.0)
    J_copy = J.clone()
    G = gramian(J)
    G_copy = G.clone()
    mgda = MGDA()
    w1, w2 = mgda.weights(G), mgda.weights(G)
    assert torch.equal(w1, w2)
    assert torch.equal(G, G_copy)
    d1, v1 = mgda(J)
    d2, v2 = mgda(J)
    assert torch.equal(d1, d2) and torch.equal(v1, v2)
    assert torch.equal(J, J_copy)
    # A fresh instance gives bit-identical weights (no state between calls).
    assert torch.equal(MGDA().weights(G), w1)
    # weights() does not alias its input (editing the output leaves G alone).
    w1.zero_()
    assert torch.equal(G, G_copy)


@pytest.mark.parametrize("m", [2, 4])
def test_float32_and_float64_inputs(m: int) -> None:
    J64 = _random_jacobian(m, 16, 5, offset=1.0)
    J32 = J64.to(torch.float32)
    d64, w64 = MGDA()(J64)
    d32, w32 = MGDA()(J32)
    assert d64.dtype == w64.dtype == F64
    assert d32.dtype == w32.dtype == torch.float32
    assert torch.allclose(w32.double(), w64, atol=1e-5)
    assert torch.allclose(d32.double(), d64, atol=1e-4)
    # The returned weights are the ones the direction was formed with.
    assert torch.equal(d32, w32 @ J32)
    # weights() accepts a float32 Gramian and always answers in float64.
    w = MGDA().weights(gramian(J32).float())
    assert w.dtype == F64
    assert torch.allclose(w, w64, atol=1e-5)


def test_mgda_step_decreases_every_objective() -> None:
    # L_k(x) = ||x - a_k||^2 over shared x: one step along -d lowers all three losses.
    anchors = _t([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    x = torch.nn.Parameter(torch.tensor([-1.0, -2.0, 0.5], dtype=F64))
    grads = []
    for a in anchors:
        x.grad = None
        ((x - a) ** 2).sum().backward()
        grads.append(flatten_grads([x]))
    J = torch.stack(grads)
    direction, _ = MGDA()(J)
    assign_flat_grad([x], direction)
    before = ((x.detach() - anchors) ** 2).sum(dim=1)
    torch.optim.SGD([x], lr=0.05).step()
    after = ((x.detach() - anchors) ** 2).sum(dim=1)
    assert bool((after < before).all())


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bounds": (-0.1, 1.0)}, "0 <= lo <= hi <= 1"),
        ({"bounds": (0.5, 0.2)}, "0 <= lo <= hi <= 1"),
        ({"bounds": (0.0, 1.5)}, "0 <= lo <= hi <= 1"),
        ({"bounds": (math.nan, 1.0)}, "0 <= lo <= hi <= 1"),
        ({"bounds": (0.0, 0.5, 1.0)}, "pair"),
        ({"bounds": "ab"}, "pair"),
        ({"bounds": 0.5}, "pair"),
        ({"bounds": ("0", 1.0)}, "pair"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"max_iter": True}, "max_iter"),
        ({"tol": -1.0}, "tol"),
        ({"tol": math.inf}, "tol"),
        ({"tol": "1e-9"}, "tol"),
    ],
)
def test_mgda_rejects_bad_hyperparameters(kwargs: dict[str, typing.Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MGDA(**kwargs)


def test_mgda_accepts_list_bounds_and_keeps_config() -> None:
    mgda = MGDA(bounds=[0.1, 1], max_iter=10, tol=0.0)  # type: ignore[arg-type]
    assert mgda.bounds == (0.1, 1.0)
    assert repr(mgda) == "MGDA(bounds=(0.1, 1.0), max_iter=10, tol=0.0, normalize='none')"


def test_mgda_l2_normalisation_weighs_directions_not_magnitudes() -> None:
    # g0 = (10, 0), g1 = (0, 1): on unit vectors the min-norm point is (1/2, 1/2), so the raw
    # weights are (1/2)/10 and (1/2)/1 and both gradients contribute a step of length 1/2.
    grads = torch.tensor([[10.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    direction, w = MGDA(normalize="l2")(grads)
    assert w.tolist() == pytest.approx([0.05, 0.5])
    assert direction.tolist() == pytest.approx([0.5, 0.5])
    # A zero gradient gets weight 0 instead of a division by zero.
    _, w0 = MGDA(normalize="l2")(torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64))
    assert torch.isfinite(w0).all() and w0[0] == 0
    with pytest.raises(ValueError, match="normalize"):
        MGDA(normalize="max")  # type: ignore[arg-type]


def test_mgda_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="bounds"):
        MGDA(bounds=(0.1, 1.0)).weights(torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match=r"gramian.*non-finite"):
        MGDA().weights(_t([[1.0, math.nan], [math.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"gramian.*non-finite"):
        MGDA().weights(_t([[math.inf, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        MGDA().weights(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="square"):
        MGDA().weights(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="positive semi-definite"):
        MGDA().weights(_t([[-1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"grads.*rows \[1\]"):
        MGDA()(_t([[1.0, 2.0], [math.nan, 0.0]]))
    with pytest.raises(ValueError, match="grads"):
        MGDA()(torch.ones(4))
    with pytest.raises(ValueError, match="grads"):
        MGDA()(torch.ones(0, 4))


def test_type_hints_are_a_cli_schema() -> None:
    hints = typing.get_type_hints(MGDA.__init__)
    assert hints["bounds"] == typing.Optional[tuple[float, float]]  # noqa: UP045
    assert hints["max_iter"] is int and hints["tol"] is float
    assert typing.get_type_hints(FixedWeights.__init__)["weights"] == list[float]


def test_combiners_build_from_a_config() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--combiner", type=GradientCombiner)
    cfg = parser.parse_args(
        ['--combiner={"class_path": "lit_unlearn.optim.MGDA", "init_args": {"bounds": [0.1, 1]}}']
    )
    combiner = parser.instantiate(cfg).combiner
    assert isinstance(combiner, MGDA) and combiner.bounds == (0.1, 1.0)


# --------------------------------------------------------------------------------------------
# FixedWeights
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
def test_fixed_weights_ablation_grid(alpha: float) -> None:
    J = _t([[3.0, 1.0], [-1.0, 2.0]])
    combiner = FixedWeights([alpha, 1.0 - alpha])
    direction, w = combiner(J)
    assert w.tolist() == pytest.approx([alpha, 1.0 - alpha])
    assert direction.tolist() == pytest.approx([3 * alpha - (1 - alpha), alpha + 2 * (1 - alpha)])
    assert combiner.weights(gramian(J)).tolist() == pytest.approx([alpha, 1.0 - alpha])
    # The weights are returned as given, even if they ignore the gradients entirely.
    assert combiner.weights(torch.zeros(2, 2)).tolist() == pytest.approx([alpha, 1.0 - alpha])


def test_fixed_weights_not_normalised_and_dtype() -> None:
    combiner = FixedWeights([2, 0.5, 0])
    direction, w = combiner(torch.ones(3, 2, dtype=torch.float32))
    assert w.dtype == torch.float32 and w.tolist() == [2.0, 0.5, 0.0]
    assert direction.tolist() == [2.5, 2.5]
    assert combiner.fixed_weights == [2.0, 0.5, 0.0]
    assert repr(combiner) == "FixedWeights(weights=[2.0, 0.5, 0.0])"


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([], "empty"),
        ([-0.1, 1.1], r"weights\[0\].*>= 0"),
        ([0.5, math.nan], r"weights\[1\].*finite"),
        ([math.inf], "finite"),
        ([0.0, 0.0], "positive"),
        (["0.5", 0.5], "number"),
        ([True, 0.0], "number"),
        ("0.5", "list"),
        (0.5, "list"),
    ],
)
def test_fixed_weights_validation(weights: typing.Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FixedWeights(weights)


def test_fixed_weights_length_must_match() -> None:
    combiner = FixedWeights([0.2, 0.8])
    with pytest.raises(ValueError, match=r"2 weights.*3 objectives"):
        combiner(torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"2 weights.*1 objectives"):
        combiner.weights(torch.ones(1, 1))
    with pytest.raises(ValueError, match="square"):
        combiner.weights(torch.ones(2, 3))
    with pytest.raises(ValueError, match="non-finite"):
        combiner(_t([[1.0, math.inf], [0.0, 0.0]]))


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def test_gramian() -> None:
    J = _t([[1.0, 2.0], [3.0, 4.0], [0.0, -1.0]], dtype=torch.float32)
    G = gramian(J)
    # Rows: (1,2).(1,2) = 5, (1,2).(3,4) = 11, (1,2).(0,-1) = -2, (3,4).(3,4) = 25,
    # (3,4).(0,-1) = -4, (0,-1).(0,-1) = 1.
    assert G.dtype == F64
    assert G.tolist() == [[5.0, 11.0, -2.0], [11.0, 25.0, -4.0], [-2.0, -4.0, 1.0]]
    with pytest.raises(ValueError, match=r"\[m, P\]"):
        gramian(torch.ones(3))


def _toy_params(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    layer = torch.nn.Linear(3, 2).to(dtype)
    extra = torch.nn.Parameter(torch.zeros(4, dtype=dtype))  # never receives a gradient
    scalar = torch.nn.Parameter(torch.tensor(1.5, dtype=dtype))
    out = (layer(torch.ones(1, 3, dtype=dtype)).sum() * scalar) ** 2
    out.backward()
    return [layer.weight, extra, layer.bias, scalar]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flatten_and_assign_round_trip(dtype: torch.dtype) -> None:
    params = _toy_params(dtype)
    weight, extra, bias, scalar = params
    assert extra.grad is None
    flat = flatten_grads(params)
    assert flat.dtype == dtype and flat.shape == (6 + 4 + 2 + 1,)
    assert torch.equal(flat[:6], weight.grad.reshape(-1))  # type: ignore[union-attr]
    assert torch.equal(flat[6:10], torch.zeros(4, dtype=dtype))  # None grad -> zeros
    assert torch.equal(flat[10:12], bias.grad)  # type: ignore[arg-type]
    assert float(flat[12]) == float(scalar.grad)  # type: ignore[arg-type]
    # flatten copies: editing the flat vector leaves the gradients alone.
    flat[0] = 123.0
    assert float(weight.grad[0, 0]) != 123.0  # type: ignore[index]

    weight_grad = weight.grad
    new = torch.arange(13, dtype=torch.float64)
    assign_flat_grad(params, new)
    assert weight.grad is weight_grad  # existing gradients are written in place
    assert extra.grad is not None and extra.grad.tolist() == [6.0, 7.0, 8.0, 9.0]
    assert weight.grad.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert scalar.grad is not None and scalar.grad.shape == () and float(scalar.grad) == 12.0
    assert all(p.grad is not None and p.grad.dtype == dtype for p in params)
    assert torch.equal(flatten_grads(params), new.to(dtype))
    # assign copies too: the new gradients do not alias the flat vector.
    new.zero_()
    assert extra.grad.tolist() == [6.0, 7.0, 8.0, 9.0]


def test_flatten_accepts_generators_and_sparse_grads() -> None:
    emb = torch.nn.Embedding(5, 2, sparse=True)
    emb(torch.tensor([1, 3])).sum().backward()
    assert emb.weight.grad is not None and emb.weight.grad.is_sparse
    flat = flatten_grads(emb.parameters())
    expected = torch.zeros(5, 2)
    expected[[1, 3]] = 1.0
    assert torch.equal(flat, expected.reshape(-1))
    assign_flat_grad(list(emb.parameters()), 2 * flat)
    assert not emb.weight.grad.is_sparse
    assert torch.equal(emb.weight.grad, 2 * expected)


def test_flat_helpers_validation() -> None:
    params = _toy_params()
    with pytest.raises(ValueError, match="13 elements"):
        assign_flat_grad(params, torch.zeros(12))
    with pytest.raises(ValueError, match="13 elements"):
        assign_flat_grad(params, torch.zeros(13, 1))
    with pytest.raises(ValueError, match="empty"):
        flatten_grads([])
    with pytest.raises(ValueError, match="empty"):
        assign_flat_grad([], torch.zeros(0))
    mixed = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, dtype=F64))]
    with pytest.raises(ValueError, match="dtype"):
        flatten_grads(mixed)
