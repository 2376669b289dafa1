"""Second-order solvers: one Newton step solves a quadratic; CG; damping; bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from lit_unlearn.optim.newton import (
    HessianFreeNewton,
    ImplicitSystems,
    LowRankSystems,
    batched_newton_step,
    batched_pcg_step,
    conjugate_gradient,
    low_rank_newton_step,
)


def _spd(n: int, seed: int = 0, batch: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, n, n, generator=g, dtype=torch.float64)
    return a @ a.transpose(-1, -2) + n * torch.eye(n, dtype=torch.float64)


def test_conjugate_gradient_solves_spd_system_in_n_steps() -> None:
    a = _spd(8)
    b = torch.randn(8, dtype=torch.float64)
    x, iters = conjugate_gradient(lambda v: a @ v, b, max_iter=8, tol=1e-14)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))
    assert iters <= 8


def test_conjugate_gradient_stops_on_negative_curvature() -> None:
    a = -torch.eye(3, dtype=torch.float64)
    x, iters = conjugate_gradient(lambda v: a @ v, torch.ones(3, dtype=torch.float64), 10)
    assert iters == 0 and torch.count_nonzero(x) == 0


def test_batched_newton_step_solves_quadratics_in_one_step() -> None:
    h = _spd(5, batch=(7,))
    target = torch.randn(7, 5, dtype=torch.float64)
    x = torch.randn(7, 5, dtype=torch.float64)
    grad = (h @ (x - target).unsqueeze(-1)).squeeze(-1)  # f = 1/2 (x-t)^T H (x-t)
    x_new = x + batched_newton_step(h, grad)
    torch.testing.assert_close(x_new, target)


def test_batched_newton_step_damps_only_indefinite_blocks() -> None:
    h = _spd(4, batch=(3,))
    h[1] = -torch.eye(4, dtype=torch.float64)  # not positive definite
    grad = torch.ones(3, 4, dtype=torch.float64)
    step = batched_newton_step(h, grad)
    torch.testing.assert_close(step[0], -torch.linalg.solve(h[0], grad[0]))
    assert torch.isfinite(step).all()


def test_batched_newton_step_rejects_nan_and_bad_shapes() -> None:
    h = _spd(3, batch=(2,))
    with pytest.raises(ValueError, match="NaN"):
        batched_newton_step(h, torch.full((2, 3), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="need hess"):
        batched_newton_step(h, torch.zeros(3, 3, dtype=torch.float64))


def test_batched_newton_step_raises_when_damping_cannot_help() -> None:
    h = torch.full((1, 2, 2), float("-inf"), dtype=torch.float64)
    with pytest.raises(ValueError):
        batched_newton_step(h, torch.zeros(1, 2, dtype=torch.float64))


def test_hessian_free_newton_solves_a_quadratic_in_one_step() -> None:
    a = _spd(6, seed=1)
    b = torch.randn(6, dtype=torch.float64)
    x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = HessianFreeNewton([x], damping=0.0, cg_max_iter=6, cg_tol=1e-14)
    opt.step(lambda: 0.5 * x @ a @ x - b @ x)
    torch.testing.assert_close(x.detach(), torch.linalg.solve(a, b))
    assert opt.state[x]["step_size"] == 1.0


def test_hessian_free_newton_minimises_rosenbrock() -> None:
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    opt = HessianFreeNewton([x], damping=1e-3, cg_max_iter=10)

    def f() -> torch.Tensor:
        return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2

    values = [float(opt.step(f)) for _ in range(60)]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values))  # monotone
    torch.testing.assert_close(x.detach(), torch.ones(2, dtype=torch.float64), atol=1e-4, rtol=0)


def test_hessian_free_newton_rejects_nan_loss_and_bad_args() -> None:
    x = torch.zeros(2, requires_grad=True)
    opt = HessianFreeNewton([x])
    with pytest.raises(FloatingPointError):
        opt.step(lambda: (x * float("nan")).sum())
    with pytest.raises(ValueError):
        HessianFreeNewton([x], cg_max_iter=0)
    with pytest.raises(ValueError):
        HessianFreeNewton([x], armijo=1.5)


def test_batched_newton_step_rejects_a_nan_hessian_with_a_finite_gradient() -> None:
    h = _spd(3, batch=(2,))
    h[1, 2, 0] = float("nan")  # the factorisation reads the lower triangle only
    with pytest.raises(ValueError, match="NaN"):
        batched_newton_step(h, torch.ones(2, 3, dtype=torch.float64))


def _low_rank(shared: torch.Tensor, seed: int = 0) -> LowRankSystems:
    """Eight systems in three buckets over 6 factors (rank 0 to 3, padded with -1 or empty)."""
    g = torch.Generator().manual_seed(seed)
    d = shared.shape[0]
    pool = torch.randn(6, d, generator=g, dtype=torch.float64)
    buckets = (
        torch.tensor([[-1, -1], [0, -1], [5, 2]]),
        torch.tensor([[1, 3, 4], [0, 1, 2], [4, -1, -1], [5, 5, 0]]),  # a repeated factor
        torch.zeros(1, 0, dtype=torch.long),  # a bucket of rows without positives
    )
    grad = torch.randn(8, d, generator=g, dtype=torch.float64)
    return LowRankSystems(shared, pool, buckets, grad, torch.arange(8))


@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_low_rank_newton_step_matches_the_formed_hessians(damping: float) -> None:
    systems = _low_rank(_spd(5))
    hess, grad, _ = systems.dense()
    # The Hessians by hand: shared + sum of the listed factors' outer products.
    f = systems.pool
    torch.testing.assert_close(
        hess[2], systems.shared + torch.outer(f[5], f[5]) + torch.outer(f[2], f[2])
    )
    torch.testing.assert_close(hess[0], systems.shared)
    torch.testing.assert_close(hess[7], systems.shared)
    expected = -torch.linalg.solve(hess + damping * torch.eye(5, dtype=torch.float64), grad)
    torch.testing.assert_close(low_rank_newton_step(systems, damping), expected)


def test_low_rank_newton_step_falls_back_when_the_shared_part_is_singular() -> None:
    # No L2 term and a rank-deficient Gram matrix: the shared part alone cannot be factorised,
    # every formed Hessian can (or gets Levenberg-Marquardt damping).
    shared = torch.zeros(3, 3, dtype=torch.float64)
    systems = _low_rank(shared)
    step = low_rank_newton_step(systems)
    hess, grad, _ = systems.dense()
    assert torch.isfinite(step).all()
    torch.testing.assert_close(step, batched_newton_step(hess, grad))


def test_low_rank_newton_step_rejects_nan_and_bad_shapes() -> None:
    systems = _low_rank(_spd(4))
    with pytest.raises(ValueError, match="NaN"):
        low_rank_newton_step(systems._replace(grad=systems.grad * float("nan")))
    pool = systems.pool.clone()
    pool[1, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN"):
        low_rank_newton_step(systems._replace(pool=pool))
    with pytest.raises(ValueError, match="buckets hold 3 systems, grad 8"):
        low_rank_newton_step(systems._replace(buckets=systems.buckets[:1]))
    with pytest.raises(ValueError, match="need shared"):
        low_rank_newton_step(systems._replace(shared=torch.eye(3, dtype=torch.float64)))


def _shared_plus_low_rank(
    rows: int, d: int, ranks: list[int], ridge: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``A`` shared, ``H_i = A + F_i^T F_i (+ a diagonal)`` with ``rank F_i = ranks[i]``."""
    g = torch.Generator().manual_seed(1)
    shared = _spd(d, seed=2)
    hess = shared.expand(rows, d, d).clone()
    for i, r in enumerate(ranks):
        f = torch.randn(r, d, generator=g, dtype=torch.float64)
        hess[i] += f.T @ f
        if ridge:
            hess[i] += torch.diag(0.1 * torch.rand(d, generator=g, dtype=torch.float64))
    grad = torch.randn(rows, d, generator=g, dtype=torch.float64)
    return shared, hess, grad


def test_batched_pcg_step_is_the_newton_step() -> None:
    ranks = [0, 1, 2, 5, 3, 0]
    shared, hess, grad = _shared_plus_low_rank(len(ranks), 8, ranks, ridge=True)
    grad[5] = 0.0  # a row already at its minimum: step 0, converged at once
    systems = ImplicitSystems(shared, grad, lambda v: (hess @ v.unsqueeze(-1)).squeeze(-1))
    step, done = batched_pcg_step(systems, tol=1e-12, max_iter=40)
    assert bool(done.all())
    torch.testing.assert_close(step, batched_newton_step(hess, grad))
    assert torch.count_nonzero(step[5]) == 0


def test_batched_pcg_step_needs_rank_plus_one_iterations() -> None:
    # A^{-1} H = I + rank-r: at most r + 1 distinct eigenvalues, so CG is exact after r + 1.
    ranks = [1, 2, 3, 4]
    shared, hess, grad = _shared_plus_low_rank(len(ranks), 12, ranks, ridge=False)
    systems = ImplicitSystems(shared, grad, lambda v: (hess @ v.unsqueeze(-1)).squeeze(-1))
    step, done = batched_pcg_step(systems, tol=1e-9, max_iter=5)
    assert bool(done.all())
    torch.testing.assert_close(step, batched_newton_step(hess, grad))
    # With too few iterations the heavier rows are reported unfinished (never silently wrong).
    _, done = batched_pcg_step(systems, tol=1e-9, max_iter=2)
    assert done.tolist() == [True, False, False, False]


def test_batched_pcg_step_rejects_bad_input() -> None:
    shared, hess, grad = _shared_plus_low_rank(2, 4, [1, 1], ridge=False)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return (hess @ v.unsqueeze(-1)).squeeze(-1)

    with pytest.raises(ValueError, match="tol"):
        batched_pcg_step(ImplicitSystems(shared, grad, matvec), tol=0.0)
    with pytest.raises(ValueError, match="shared"):
        batched_pcg_step(ImplicitSystems(shared[:3, :3], grad, matvec))
    bad = grad.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        batched_pcg_step(ImplicitSystems(shared, bad, matvec))
    with pytest.raises(ValueError, match="positive definite"):
        batched_pcg_step(ImplicitSystems(-shared, grad, matvec))
