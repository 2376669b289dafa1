"""Second-order solvers: one Newton step solves a quadratic; CG; damping; bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from lit_unlearn.optim.newton import HessianFreeNewton, batched_newton_step, conjugate_gradient


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
