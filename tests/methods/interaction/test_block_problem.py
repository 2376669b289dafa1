"""ENMF: the efficient whole-data loss against the dense definition; closed-form block systems."""

from __future__ import annotations

import pytest
import torch

from lit_unlearn.methods.interaction.block_problem import RowBlock, split_row_newton_systems
from lit_unlearn.models import ENMF
from lit_unlearn.models.enmf_objective import enmf_objective
from lit_unlearn.optim.block_solvers import AdamWBlock, AHNewtonBlock, BlockSolver, HFNewtonBlock

C0, REG = 0.3, 0.1
Problem = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture
def problem() -> Problem:
    g = torch.Generator().manual_seed(0)
    m, n, d = 25, 18, 4
    p = 0.3 * torch.randn(m, d, generator=g, dtype=torch.float64)
    q = 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    h = torch.randn(d, generator=g, dtype=torch.float64)
    y = torch.rand(m, n, generator=g) < 0.25
    return p, q, h, y.nonzero()


def _dense(p: torch.Tensor, q: torch.Tensor, h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    y = torch.zeros(p.shape[0], q.shape[0], dtype=torch.float64)
    y[pairs[:, 0], pairs[:, 1]] = 1.0
    w = torch.where(y > 0, 1.0, C0).to(torch.float64)
    pred = (p * h) @ q.T
    # Paper 003 Eq. 1 (without the 1/2) minus the constant sum of observed entries.
    return (w * (y - pred) ** 2).sum() - y.sum() + REG * (p.square().sum() + q.square().sum())


def test_objective_matches_dense_weighted_least_squares(problem: Problem) -> None:
    p, q, h, pairs = problem
    torch.testing.assert_close(enmf_objective(p, q, h, pairs, C0, REG), _dense(p, q, h, pairs))


def _expected_over_masks(
    p: torch.Tensor, q: torch.Tensor, h: torch.Tensor, pairs: torch.Tensor, rho: float
) -> torch.Tensor:
    """The training loss averaged over every dropout mask of the user vectors, one by one.

    Each pair's user vector is dropped with its own mask (as in a training batch); the masks of
    different pairs are independent, so the expectation is a sum of per-pair expectations.
    """
    d = p.shape[1]
    masks = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * d)
    prob = ((1 - rho) ** masks.sum(1)) * (rho ** (d - masks.sum(1)))
    pu, qv = p[pairs[:, 0]], q[pairs[:, 1]]
    # [masks, pairs]: the observed score under each mask (inverted dropout).
    y = ((masks[:, None, :] / (1 - rho)) * pu * h * qv).sum(-1)
    pos = (prob[:, None] * ((1 - C0) * y.square() - 2 * y)).sum()
    miss = C0 * ((p * h) @ q.T).square().sum()
    return pos + miss + REG * (p.square().sum() + q.square().sum())


def test_dropout_objective_is_the_expected_loss_over_masks(problem: Problem) -> None:
    p, q, h, pairs = problem
    expected = _expected_over_masks(p, q, h, pairs, 0.7)
    torch.testing.assert_close(enmf_objective(p, q, h, pairs, C0, REG, 0.7), expected)
    # And it is not the loss without dropout (the term is there).
    assert float(enmf_objective(p, q, h, pairs, C0, REG)) < float(expected) - 1e-3
    with pytest.raises(ValueError, match="dropout"):
        enmf_objective(p, q, h, pairs, C0, REG, 1.0)


@pytest.mark.parametrize("dropout", [0.0, 0.7])
def test_newton_systems_match_autograd(problem: Problem, dropout: float) -> None:
    p, q, h, pairs = problem
    block = RowBlock(q, h, torch.arange(p.shape[0]), pairs, C0, REG, dropout)
    systems = block.newton_systems(p)
    # Built in degree order: every row exactly once.
    assert sorted(systems.rows.tolist()) == list(range(p.shape[0]))
    hess, grad = systems.in_row_order()
    x = p.clone().requires_grad_(True)
    torch.testing.assert_close(grad, torch.autograd.grad(block.loss(x), x)[0])
    full = torch.autograd.functional.hessian(block.loss, p)
    diag = torch.stack([full[i, :, i, :] for i in range(p.shape[0])])
    torch.testing.assert_close(hess, diag)
    # Chunks give the same rows as the whole block.
    h2, g2 = block.newton_systems(p, 5, 11).in_row_order()
    torch.testing.assert_close(h2, hess[5:11])
    torch.testing.assert_close(g2, grad[5:11])


@pytest.mark.parametrize("max_degree", [0, 2, 4, 100])
def test_split_systems_are_the_same_systems(problem: Problem, max_degree: int) -> None:
    p, q, h, pairs = problem
    block = RowBlock(q, h, torch.arange(p.shape[0]), pairs, C0, REG)
    hess, grad = block.newton_systems(p).in_row_order()
    low, dense = block.split_newton_systems(p, max_degree)
    rows = torch.cat([low.rows, dense.rows])
    assert sorted(rows.tolist()) == list(range(p.shape[0]))
    degree = torch.bincount(pairs[:, 0], minlength=p.shape[0])
    assert bool((degree[low.rows] <= max_degree).all())
    assert bool((degree[dense.rows] > max_degree).all())
    for part in (low.dense(), dense):
        torch.testing.assert_close(part.hess, hess[part.rows])
        torch.testing.assert_close(part.grad, grad[part.rows])
    # A chunk keeps its rows counted from its start.
    low5, dense5 = block.split_newton_systems(p, max_degree, 5, 11)
    torch.testing.assert_close(low5.dense().hess, hess[5 + low5.rows])
    torch.testing.assert_close(dense5.grad, grad[5 + dense5.rows])


def test_low_rank_and_dense_paths_give_the_same_update(problem: Problem) -> None:
    p, q, h, pairs = problem
    block = RowBlock(q, h, torch.arange(p.shape[0]), pairs, C0, REG)
    dense = AHNewtonBlock(low_rank_max_degree=0).solve(block, p)
    for max_degree in (None, 3):
        torch.testing.assert_close(
            AHNewtonBlock(low_rank_max_degree=max_degree).solve(block, p), dense
        )
    with pytest.raises(ValueError, match="low_rank_max_degree"):
        AHNewtonBlock(low_rank_max_degree=-1)


def test_pair_ids_out_of_range_raise(problem: Problem) -> None:
    p, q, h, pairs = problem
    bad = pairs.clone()
    bad[0, 1] = q.shape[0]
    with pytest.raises(ValueError, match="other-side ids"):
        enmf_objective(p, q, h, bad, C0, REG)
    bad[0, 1], bad[0, 0] = 0, -1
    with pytest.raises(ValueError, match="row ids"):
        enmf_objective(p, q, h, bad, C0, REG)


@pytest.mark.parametrize("dropout", [0.0, 0.7])
def test_block_loss_differs_from_objective_by_a_constant(problem: Problem, dropout: float) -> None:
    p, q, h, pairs = problem
    p2 = p + 0.1
    lhs = enmf_objective(p2, q, h, pairs, C0, REG, dropout)
    lhs = lhs - enmf_objective(p, q, h, pairs, C0, REG, dropout)
    users = RowBlock(q, h, torch.arange(p.shape[0]), pairs, C0, REG, dropout)
    torch.testing.assert_close(lhs, users.loss(p2) - users.loss(p))
    # The item side sees the same (symmetric) dropout term.
    q2 = q - 0.1
    lhs = enmf_objective(p, q2, h, pairs, C0, REG, dropout)
    lhs = lhs - enmf_objective(p, q, h, pairs, C0, REG, dropout)
    items = RowBlock(p, h, torch.arange(q.shape[0]), pairs.flip(1), C0, REG, dropout)
    torch.testing.assert_close(lhs, items.loss(q2) - items.loss(q))


def test_dropout_sends_every_row_to_the_dense_systems(problem: Problem) -> None:
    p, q, h, pairs = problem
    block = RowBlock(q, h, torch.arange(p.shape[0]), pairs, C0, REG, 0.5)
    low, dense = block.split_newton_systems(p, 100)
    assert len(low.rows) == 0 and sorted(dense.rows.tolist()) == list(range(p.shape[0]))
    # The AH solver's default (Woodbury for low-degree rows) therefore gives the dense update.
    torch.testing.assert_close(
        AHNewtonBlock().solve(block, p), AHNewtonBlock(low_rank_max_degree=0).solve(block, p)
    )


@pytest.mark.parametrize("dropout", [0.0, 0.7])
@pytest.mark.parametrize(
    "solver", [AHNewtonBlock(chunk_rows=7), HFNewtonBlock(damping=0.0, cg_max_iter=200)]
)
def test_newton_solvers_reach_the_block_minimum(
    problem: Problem, solver: BlockSolver, dropout: float
) -> None:
    p, q, h, pairs = problem
    rows = torch.tensor([1, 4, 9, 20])
    block = RowBlock(q, h, rows, pairs, C0, REG, dropout)
    x = solver.solve(block, p[rows])
    grad = block.newton_systems(x).grad
    assert float(grad.abs().max()) < 1e-4
    # The exact minimiser of each row's quadratic: H x* = 2 sum o  <=>  grad(x*) = 0.
    assert block.loss(x) <= block.loss(p[rows])


def test_adamw_block_decreases_the_loss(problem: Problem) -> None:
    p, q, h, pairs = problem
    block = RowBlock(q, h, torch.arange(p.shape[0]), pairs, C0, REG)
    x = AdamWBlock(lr=0.05, steps=20).solve(block, p)
    assert block.loss(x) < block.loss(p)


@pytest.mark.parametrize("bucket", [1, 64])  # 1: a bucket holding only the positive-free row
def test_row_systems_of_a_row_without_positives(bucket: int) -> None:
    o = torch.randn(5, 3, dtype=torch.float64)
    h = torch.ones(3, dtype=torch.float64)
    x = torch.zeros(2, 3, dtype=torch.float64)
    _, every_row_dense = split_row_newton_systems(
        x, o, h, torch.tensor([0]), torch.tensor([2]), 0.5, 0.1, -1, bucket=bucket
    )
    hess, grad = every_row_dense.in_row_order()
    gram = o.T @ o
    torch.testing.assert_close(hess[1], 2 * (0.5 * gram + 0.1 * torch.eye(3, dtype=torch.float64)))
    assert torch.count_nonzero(grad[1]) == 0
    # The low-rank form of the same systems (both rows have at most 3 positives).
    low, dense = split_row_newton_systems(
        x, o, h, torch.tensor([0]), torch.tensor([2]), 0.5, 0.1, 3, bucket=bucket
    )
    assert len(dense.rows) == 0
    torch.testing.assert_close(low.dense().hess, hess[low.rows])


def test_batch_losses_of_an_epoch_sum_to_the_objective() -> None:
    torch.manual_seed(0)
    model = ENMF(12, 9, embedding_dim=4, negative_weight=0.2, reg=0.05).double()
    pairs = torch.unique(torch.stack([torch.randint(12, (60,)), torch.randint(9, (60,))], 1), dim=0)
    degree = torch.bincount(pairs[:, 0], minlength=12)
    total = torch.zeros((), dtype=torch.float64)
    for chunk in torch.split(torch.randperm(len(pairs)), 7):
        u, i = pairs[chunk, 0], pairs[chunk, 1]
        total = total + model.batch_loss(u, i, degree[u], len(pairs)) * len(chunk)
    torch.testing.assert_close(total, model.objective(pairs))


def test_dropout_batch_losses_average_to_the_expected_objective() -> None:
    torch.manual_seed(0)
    model = ENMF(12, 9, embedding_dim=4, negative_weight=0.2, reg=0.05, dropout=0.7).double()
    pairs = torch.unique(torch.stack([torch.randint(12, (60,)), torch.randint(9, (60,))], 1), dim=0)
    degree = torch.bincount(pairs[:, 0], minlength=12)
    u, i = pairs[:, 0], pairs[:, 1]
    with torch.no_grad():
        model.eval()  # no masks: the deterministic loss, below the expected one
        plain = float(model.batch_loss(u, i, degree[u], len(pairs)) * len(pairs))
        model.train()
        draws = torch.stack(
            [model.batch_loss(u, i, degree[u], len(pairs)) * len(pairs) for _ in range(4000)]
        )
        target = float(model.objective(pairs))
    mean, se = float(draws.mean()), float(draws.std() / len(draws) ** 0.5)
    assert abs(mean - target) < 4 * se, (mean, target, se)
    assert plain < target  # the dropout term is a non-negative ridge
    assert float(draws.std()) > 0  # the masks are sampled


def test_enmf_scores_and_bad_arguments() -> None:
    model = ENMF(4, 5, embedding_dim=3)
    users = torch.tensor([0, 3])
    full = model.full_scores(users)
    torch.testing.assert_close(full[:, 2], model(users, torch.tensor([2, 2])))
    with pytest.raises(ValueError, match="negative_weight"):
        ENMF(4, 5, negative_weight=1.5)
    with pytest.raises(ValueError, match="reg"):
        ENMF(4, 5, reg=-1.0)
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout"):
            ENMF(4, 5, dropout=rate)


@pytest.mark.parametrize("dropout", [0.0, 0.7])
def test_implicit_systems_are_the_newton_systems(problem: Problem, dropout: float) -> None:
    p, q, h, pairs = problem
    block = RowBlock(q, h, torch.arange(p.shape[0]), pairs, C0, REG, dropout)
    hess, grad = block.newton_systems(p).in_row_order()
    v = torch.randn_like(p)
    for local in (None, torch.tensor([0, 3, 7, 20])):
        rows = torch.arange(p.shape[0]) if local is None else local
        implicit = block.implicit_systems(p, local)
        torch.testing.assert_close(implicit.grad, grad[rows])
        torch.testing.assert_close(
            implicit.matvec(v[rows]), (hess[rows] @ v[rows].unsqueeze(-1)).squeeze(-1)
        )
        # The shared part is a lower bound of every Hessian (what makes it a preconditioner).
        gap = torch.linalg.eigvalsh(hess[rows] - implicit.shared)
        assert float(gap.min()) > -1e-9
    torch.testing.assert_close(block.degree, torch.bincount(pairs[:, 0], minlength=p.shape[0]))


def test_subset_block_is_the_block_of_those_rows(problem: Problem) -> None:
    p, q, h, pairs = problem
    block = RowBlock(q, h, torch.arange(p.shape[0]), pairs, C0, REG, 0.7)
    local = torch.tensor([2, 5, 6, 19])
    part = block.subset(local)
    alone = RowBlock(q, h, local, pairs, C0, REG, 0.7)
    torch.testing.assert_close(part.rows, alone.rows)
    torch.testing.assert_close(part.loss(p[local]), alone.loss(p[local]))
    torch.testing.assert_close(
        part.newton_systems(p[local]).hess, alone.newton_systems(p[local]).hess
    )


@pytest.mark.parametrize("dropout", [0.0, 0.7])
@pytest.mark.parametrize("cg_max_degree", [1, 3, 100])
def test_conjugate_gradient_rows_give_the_exact_update(
    problem: Problem, dropout: float, cg_max_degree: int
) -> None:
    p, q, h, pairs = problem
    block = RowBlock(q, h, torch.arange(p.shape[0]), pairs, C0, REG, dropout)
    exact = AHNewtonBlock().solve(block, p)
    solver = AHNewtonBlock(cg_max_degree=cg_max_degree, cg_tol=1e-10)
    torch.testing.assert_close(solver.solve(block, p), exact, rtol=1e-7, atol=1e-8)
    light = int((block.degree <= cg_max_degree).sum())
    cg_rows, exact_rows = solver.last_counts
    assert cg_rows + exact_rows == p.shape[0] and cg_rows <= light
    # Rows CG cannot finish within its budget are solved exactly, not left half-way.
    starved = AHNewtonBlock(cg_max_degree=100, cg_tol=1e-12, cg_max_iter=1)
    torch.testing.assert_close(starved.solve(block, p), exact, rtol=1e-7, atol=1e-8)
    assert starved.last_counts[1] > 0


def test_conjugate_gradient_options_are_checked() -> None:
    for kwargs, match in (
        ({"cg_max_degree": -1}, "cg_max_degree"),
        ({"cg_tol": 0.0}, "cg_tol"),
        ({"cg_tol": float("nan")}, "cg_tol"),
        ({"cg_max_iter": 0}, "cg_max_iter"),
        ({"cg_max_degree": 4, "damping": 0.1}, "damping"),
    ):
        with pytest.raises(ValueError, match=match):
            AHNewtonBlock(**kwargs)
