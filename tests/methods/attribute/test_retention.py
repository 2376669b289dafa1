"""Eq. 21 measured in scores: equal to the Euclidean form for isotropic items, blind to moves
the items do not read, the same through a scorer as through the matmul."""

from __future__ import annotations

import pytest
import torch

from lit_unlearn.methods.attribute.retention import (
    embedding_regularization,
    score_regularization,
)


def test_isotropic_items_give_the_euclidean_distance() -> None:
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    cur = ref + torch.randn(7, 4, generator=gen, dtype=torch.float64)
    items = torch.cat([torch.eye(4), -2 * torch.eye(4)]).double()  # second moment prop. to I
    for reduction in ("mean", "sum"):
        torch.testing.assert_close(
            score_regularization(cur, ref, items, reduction=reduction),
            embedding_regularization(cur, ref, reduction=reduction),
        )


def test_moves_the_items_do_not_read_are_free_and_the_scorer_path_agrees() -> None:
    gen = torch.Generator().manual_seed(1)
    items = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    items[:, 4] = 0.0  # no item reads dimension 4
    ref = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    sideways = ref.clone()
    sideways[:, 4] += 3.0
    assert float(score_regularization(sideways, ref, items)) == pytest.approx(0.0, abs=1e-12)
    cur = (ref + torch.randn(6, 5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    by_matmul = score_regularization(cur, ref, items)
    by_scorer = score_regularization(cur, ref, items, score=lambda u, i: (u * i).sum(-1), chunk=4)
    torch.testing.assert_close(by_matmul, by_scorer)
    (grad,) = torch.autograd.grad(by_matmul, cur)
    m = items.T @ items / items.shape[0]
    unit = items.pow(2).sum(1).mean() / 5
    torch.testing.assert_close(grad, 2 * (cur - ref).detach() @ m / unit / 6)


def test_bad_shapes_and_zero_items_are_clear_errors() -> None:
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="same"):
        score_regularization(x, torch.zeros(2, 4), torch.ones(5, 4))
    with pytest.raises(ValueError, match="item_rep"):
        score_regularization(x, x, torch.ones(5, 3))
    with pytest.raises(ValueError, match="reduction"):
        score_regularization(x, x, torch.ones(5, 4), reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="all zero"):
        score_regularization(x, x, torch.zeros(5, 4))
