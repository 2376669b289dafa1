"""MultVAE (FedVAE) and FedRAP: scores agree between pair and full scoring, per-user parts."""

from __future__ import annotations

import pytest
import torch

from lit_unlearn.models import NCF, FedRAP, MultVAE


def _graph(num_users: int = 6, num_items: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    pairs = [(u, i) for u in range(num_users) for i in torch.randperm(num_items, generator=g)[:3]]
    return torch.tensor(pairs).t()


def test_multvae_pair_scores_equal_full_scores_and_representation_is_the_encoder_mean() -> None:
    torch.manual_seed(0)
    model = MultVAE(6, 9, embedding_dim=4, hidden=5).eval()
    graph = _graph()
    users = torch.tensor([0, 3, 5])
    items = torch.tensor([[1, 2], [0, 8], [4, 4]])
    full = model.full_scores(users, graph=graph)
    torch.testing.assert_close(model(users, items, graph=graph), full.gather(1, items))
    rep = model.user_representation(graph=graph)
    assert rep.shape == (6, 4)
    rows = torch.zeros(6, 9)
    rows[graph[0], graph[1]] = 1
    torch.testing.assert_close(rep, model.encode(rows)[0])
    # the decoder logits of mu are the scores (the dot-product factorisation is exact)
    logits = model.decoder_out(model.decode_hidden(model.encode(rows)[0]))
    torch.testing.assert_close(full, logits[users])
    nll, kl, _ = model.elbo_terms(rows)
    assert torch.isfinite(nll).all() and (kl >= 0).all()
    assert model.per_user_parameters() == []


def test_multvae_needs_the_interactions() -> None:
    with pytest.raises(ValueError, match="graph"):
        MultVAE(6, 9, 4, hidden=5).full_scores(torch.tensor([0]))
    with pytest.raises(ValueError, match="dropout"):
        MultVAE(6, 9, 4, dropout=1.0)


def test_fedrap_scores_add_the_users_residual() -> None:
    torch.manual_seed(0)
    model = FedRAP(5, 7, embedding_dim=3, residual_init_std=0.1)
    users = torch.tensor([0, 2, 4])
    items = torch.tensor([[1, 6], [0, 0], [3, 5]])
    full = model.full_scores(users)
    torch.testing.assert_close(model(users, items), full.gather(1, items))
    e, c, d = model.user_embedding.weight, model.item_embedding.weight, model.residual
    torch.testing.assert_close(full[1, 3], (e[2] * (c[3] + d[2, 3])).sum())
    assert [p.shape for p in model.per_user_parameters()] == [(5, 3), (5, 7, 3)]
    assert model.user_representation().shape == (5, 6)
    # zero residuals (FedRAP's start): every user scores with the global table
    fresh = FedRAP(5, 7, embedding_dim=3)
    torch.testing.assert_close(
        fresh.full_scores(users), fresh.user_embedding.weight[users] @ fresh.item_embedding.weight.T
    )


def test_fedrap_regularizer_ignores_padding_and_is_smooth_at_zero() -> None:
    model = FedRAP(4, 6, embedding_dim=3, l1_global=0.0, difference=1.0, residual_init_std=0.1)
    users = torch.tensor([1])
    items = torch.tensor([[2, 3, 0]])
    with_pad = model.regularizer(users, items, torch.tensor([[1.0, 1.0, 0.0]]))
    torch.testing.assert_close(with_pad, model.regularizer(users, items[:, :2]))
    zero = FedRAP(4, 6, embedding_dim=3)
    loss = zero.regularizer(users, items)
    loss.backward()
    assert zero.residual.grad is not None and torch.isfinite(zero.residual.grad).all()
    with pytest.raises(ValueError, match="difference"):
        FedRAP(4, 6, difference=-1.0)


def test_fedrap_residual_brake_is_the_mean_squared_norm_of_the_touched_cells() -> None:
    # residual_l2 alone: w * mean over the batch's (user, item) cells of ||D_u[i]||^2, so its
    # gradient pulls exactly those cells toward zero (2 w D_u[i] / cells) and no other.
    torch.manual_seed(0)
    w = 10.0
    model = FedRAP(4, 6, 3, l1_global=0.0, difference=0.0, residual_l2=w, residual_init_std=0.5)
    users = torch.tensor([1, 3])
    items = torch.tensor([[2, 5], [0, 2]])
    loss = model.regularizer(users, items)
    d = model.residual.detach()
    cells = torch.stack([d[1, 2], d[1, 5], d[3, 0], d[3, 2]])
    torch.testing.assert_close(loss, w * cells.square().sum(dim=-1).mean())
    loss.backward()
    assert model.residual.grad is not None
    expected = torch.zeros_like(d)
    for u, i in ((1, 2), (1, 5), (3, 0), (3, 2)):
        expected[u, i] = 2 * w * d[u, i] / 4
    torch.testing.assert_close(model.residual.grad, expected)


def test_neumf_keeps_both_user_tables_private() -> None:
    model = NCF(5, 7, 4, hidden_layers=1, scorer="neumf")
    private = model.per_user_parameters()
    assert {id(p) for p in private} == {
        id(model.user_embedding.weight),
        id(model.user_mlp_embedding.weight),
    }
