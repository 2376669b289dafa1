"""Tests of the recommender backbones in :mod:`lit_unlearn.models`."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_unlearn.models import MF, NCF, LightGCN, Recommender

NU, NI, D = 7, 11, 8

Factory = Callable[[int, int], Recommender]

BACKBONES: dict[str, Factory] = {
    "mf": lambda u, i: MF(u, i, D),
    "ncf-dot": lambda u, i: NCF(u, i, D, hidden_layers=2),
    "ncf-dot-0": lambda u, i: NCF(u, i, D, hidden_layers=0),
    "ncf-neumf": lambda u, i: NCF(u, i, D, hidden_layers=2, scorer="neumf"),
    "ncf-neumf-0": lambda u, i: NCF(u, i, D, hidden_layers=0, scorer="neumf"),
    "lightgcn": lambda u, i: LightGCN(u, i, D, num_layers=2),
}
REP_DIM = {"ncf-neumf": 2 * D, "ncf-neumf-0": 2 * D}


def make_graph(
    num_users: int = NU, num_items: int = NI, per_user: int = 3, seed: int = 0
) -> Tensor:
    """Each user has ``per_user`` distinct random items; ``[2, E]``, items not offset."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.arange(num_users).repeat_interleave(per_user)
    items = torch.cat(
        [torch.randperm(num_items, generator=gen)[:per_user] for _ in range(num_users)]
    )
    return torch.stack([users, items])


@pytest.fixture(params=list(BACKBONES))
def backbone(request: pytest.FixtureRequest) -> tuple[str, Recommender]:
    torch.manual_seed(0)
    model = BACKBONES[request.param](NU, NI)
    model.eval()
    return request.param, model


GRAPH = make_graph()


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    # These tensors are tiny: intra-op threads only add spin-wait contention (30x slower on a
    # busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- shapes
def test_forward_shapes(backbone: tuple[str, Recommender]) -> None:
    _, model = backbone
    users = torch.tensor([0, 3, 6, 3])
    assert model(users, torch.tensor([1, 2, 10, 0]), graph=GRAPH).shape == (4,)
    assert model(users, torch.randint(0, NI, (4, 5)), graph=GRAPH).shape == (4, 5)


def test_forward_is_score_of_embed(backbone: tuple[str, Recommender]) -> None:
    _, model = backbone
    users, items = torch.tensor([0, 5]), torch.tensor([[1, 2, 3], [4, 4, 9]])
    u_rep, i_rep = model.embed(users, items, GRAPH)
    expected = model.score(u_rep.unsqueeze(1), i_rep)
    torch.testing.assert_close(model(users, items, graph=GRAPH), expected)
    # pairwise [B] scoring agrees with the [B, n] broadcasting path
    torch.testing.assert_close(model(users, items[:, 1], graph=GRAPH), expected[:, 1])


def test_full_scores_equal_forward(backbone: tuple[str, Recommender]) -> None:
    _, model = backbone
    users = torch.tensor([2, 0, 6])
    full = model.full_scores(users, graph=GRAPH)
    assert full.shape == (3, NI)
    all_items = torch.arange(NI).expand(3, NI)
    torch.testing.assert_close(full, model(users, all_items, graph=GRAPH), rtol=1e-5, atol=1e-6)


def test_representation_shapes(backbone: tuple[str, Recommender]) -> None:
    name, model = backbone
    d = REP_DIM.get(name, D)
    assert model.user_representation(graph=GRAPH).shape == (NU, d)
    u_all, i_all = model.embed(graph=GRAPH)
    assert u_all.shape == (NU, d) and i_all.shape == (NI, d)
    torch.testing.assert_close(model.user_representation(graph=GRAPH), u_all)
    u, i = model.embed(torch.tensor([[0, 1], [2, 3]]), torch.tensor([4]), GRAPH)
    assert u.shape == (2, 2, d) and i.shape == (1, d)
    torch.testing.assert_close(u[1, 0], u_all[2])


def test_score_broadcasts(backbone: tuple[str, Recommender]) -> None:
    _, model = backbone
    u_all, i_all = model.embed(graph=GRAPH)
    out = model.score(u_all[:3].unsqueeze(1), i_all[:5].unsqueeze(0))  # [3,1,d] x [1,5,d]
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, model.full_scores(torch.arange(3), graph=GRAPH)[:, :5])


def test_l2_batch(backbone: tuple[str, Recommender]) -> None:
    name, model = backbone
    users, items = torch.tensor([0, 1, 1]), torch.tensor([[2, 3], [4, 4], [0, 10]])
    l2 = model.l2_batch(users, items)
    assert l2.ndim == 0 and l2 > 0
    tables = [("user_embedding", "item_embedding")]
    if name.startswith("ncf-neumf"):
        tables.append(("user_mlp_embedding", "item_mlp_embedding"))
    expected = sum(
        getattr(model, ut).weight[users].pow(2).sum()
        + getattr(model, it).weight[items].pow(2).sum()
        for ut, it in tables
    )
    torch.testing.assert_close(l2, expected / 3)
    l2.backward()  # differentiable w.r.t. the raw embeddings


def test_l2_batch_large_batch_uses_counts(backbone: tuple[str, Recommender]) -> None:
    """More ids than rows (the per-row count path): same value and gradient as the gather."""
    name, model = backbone
    gen = torch.Generator().manual_seed(3)
    users = torch.randint(NU, (4 * NU,), generator=gen)
    items = torch.randint(NI, (4 * NU, 3), generator=gen)
    tables = [("user_embedding", "item_embedding")]
    if name.startswith("ncf-neumf"):
        tables.append(("user_mlp_embedding", "item_mlp_embedding"))
    params = [getattr(model, t).weight for pair in tables for t in pair]
    l2 = model.l2_batch(users, items)
    got = torch.autograd.grad(l2, params)
    expected = (
        sum(
            getattr(model, ut).weight[users].pow(2).sum()
            + getattr(model, it).weight[items].pow(2).sum()
            for ut, it in tables
        )
        / users.numel()
    )
    want = torch.autograd.grad(expected, params)
    torch.testing.assert_close(l2, expected)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_l2_batch_large_batch_out_of_range_ids_raise(backbone: tuple[str, Recommender]) -> None:
    _, model = backbone
    users = torch.zeros(4 * NI, dtype=torch.long)
    with pytest.raises(IndexError, match="out of range"):
        model.l2_batch(users, torch.full((4 * NI,), NI))
    with pytest.raises((IndexError, RuntimeError)):  # negative ids: bincount refuses them
        model.l2_batch(users, torch.full((4 * NI,), -1))


@pytest.mark.parametrize("batch", [15, 5 * NI])
@pytest.mark.parametrize("training", [False, True])
def test_ncf_large_batch_tower_once_matches_per_pair(training: bool, batch: int) -> None:
    """A batch naming more ids than the tables have rows runs each tower once over the table
    and gathers (batch 15: 30 item ids, 11 rows); one naming at least half the [U, I] cells
    scores through the full matrix (batch 55). Both: same scores and gradients as the
    per-occurrence towers (no dropout)."""
    torch.manual_seed(0)
    model = NCF(NU, NI, D, hidden_layers=2)
    model.train(training)
    gen = torch.Generator().manual_seed(1)
    users = torch.randint(NU, (batch,), generator=gen)
    items = torch.randint(NI, (batch, 2), generator=gen)
    assert model._dense_scoring_pays(items.numel()) == (batch > 15)
    fast = model(users, items)
    grads = torch.autograd.grad(fast.square().sum(), list(model.parameters()))
    # Reference: the towers applied to each occurrence's embedding row.
    user_rep = model._tower(model.user_tower, model.user_embedding.weight[users])
    item_rep = model._tower(model.item_tower, model.item_embedding.weight[items])
    slow = (user_rep.unsqueeze(1) * item_rep).sum(-1)
    want = torch.autograd.grad(slow.square().sum(), list(model.parameters()))
    torch.testing.assert_close(fast, slow)
    for g, w in zip(grads, want, strict=True):
        torch.testing.assert_close(g, w)


def test_ncf_large_batch_with_dropout_keeps_per_pair_masks() -> None:
    """With dropout active the per-occurrence path stays: two occurrences of one user get
    different masks (a gathered tower output would make them identical)."""
    torch.manual_seed(0)
    model = NCF(NU, NI, 32, hidden_layers=2, dropout=0.5).train()
    users = torch.zeros(3 * NI, dtype=torch.long)
    user_rep, _ = model.embed(users, torch.zeros(1, dtype=torch.long))
    assert not torch.equal(user_rep[0], user_rep[1])
    model.eval()
    user_rep, _ = model.embed(users, torch.zeros(1, dtype=torch.long))
    assert torch.equal(user_rep[0], user_rep[1])


# ---------------------------------------------------------------------------- NeuMF chunking
def test_neumf_chunked_full_scores() -> None:
    torch.manual_seed(0)
    model = NCF(5, 23, 8, hidden_layers=2, scorer="neumf").eval()
    users = torch.tensor([4, 0, 2])
    reference = model.full_scores(users, chunk_size=10_000)
    for chunk in (1, 4, 7, 23):
        torch.testing.assert_close(model.full_scores(users, chunk_size=chunk), reference)
    torch.testing.assert_close(model.full_scores(users), reference)
    with pytest.raises(ValueError, match="chunk_size"):
        model.full_scores(users, chunk_size=0)


# ---------------------------------------------------------------------------- parameters
def test_parameter_partition(backbone: tuple[str, Recommender]) -> None:
    _, model = backbone
    user, item = model.user_parameters(), model.item_parameters()
    assert user and item
    ids = [id(p) for p in user + item]
    assert len(ids) == len(set(ids)), "a parameter is listed twice"
    assert set(ids) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("name", ["mf", "ncf-dot", "ncf-dot-0", "ncf-neumf", "ncf-neumf-0"])
def test_user_representation_gradients_stay_user_side(name: str) -> None:
    torch.manual_seed(0)
    model = BACKBONES[name](NU, NI).eval()
    model.user_representation().pow(2).sum().backward()
    for p in model.user_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    for p in model.item_parameters():
        assert p.grad is None or not p.grad.any()


def test_lightgcn_user_representation_depends_on_items() -> None:
    # Propagation mixes item embeddings into user vectors: documented, not a partition bug.
    model = LightGCN(NU, NI, D, num_layers=1)
    model.user_representation(graph=GRAPH).pow(2).sum().backward()
    assert model.item_embedding.weight.grad is not None
    assert model.item_embedding.weight.grad.any()


def test_ncf_dot_tower_has_no_final_relu() -> None:
    torch.manual_seed(0)
    model = NCF(NU, NI, D, hidden_layers=2).eval()
    rep = model.user_representation()
    assert (rep < 0).any(), "a final ReLU would make every coordinate non-negative"


def test_ncf_zero_layers_is_mf() -> None:
    model = NCF(NU, NI, D, hidden_layers=0)
    torch.testing.assert_close(model.user_representation(), model.user_embedding.weight)
    users, items = torch.tensor([1, 2]), torch.tensor([3, 4])
    expected = (model.user_embedding.weight[users] * model.item_embedding.weight[items]).sum(-1)
    torch.testing.assert_close(model(users, items), expected)


def test_ncf_dropout_only_in_train_mode() -> None:
    torch.manual_seed(0)
    model = NCF(NU, NI, 32, hidden_layers=2, dropout=0.5)
    users, items = torch.arange(NU), torch.arange(NU)
    model.eval()
    torch.testing.assert_close(model(users, items), model(users, items))
    model.train()
    assert not torch.equal(model(users, items), model(users, items))


# ---------------------------------------------------------------------------- LightGCN graph
def dense_lightgcn(model: LightGCN, graph: Tensor) -> tuple[Tensor, Tensor]:
    """Reference propagation with a dense ``D^-1/2 A D^-1/2``."""
    n = model.num_users + model.num_items
    A = torch.zeros(n, n, dtype=torch.float64)
    A[graph[0], graph[1] + model.num_users] = 1.0
    A[graph[1] + model.num_users, graph[0]] = 1.0
    deg = A.sum(1)
    inv_sqrt = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    norm = inv_sqrt[:, None] * A * inv_sqrt[None, :]
    x = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).double()
    layers = [x]
    for _ in range(model.num_layers):
        layers.append(norm @ layers[-1])
    out = torch.stack(layers).mean(0)
    return out[: model.num_users], out[model.num_users :]


def test_lightgcn_matches_dense_reference() -> None:
    torch.manual_seed(0)
    model = LightGCN(4, 5, 3, num_layers=3).double()
    # user 3 and item 4 are isolated; (0, 1) is duplicated and must count once
    graph = torch.tensor([[0, 0, 0, 1, 2, 2, 0], [0, 1, 2, 1, 2, 3, 1]])
    users, items = model.embed(graph=graph)
    ref_users, ref_items = dense_lightgcn(model, graph)
    torch.testing.assert_close(users, ref_users)
    torch.testing.assert_close(items, ref_items)
    # isolated nodes keep only their own embedding, scaled by alpha_0 = 1 / (K + 1)
    torch.testing.assert_close(users[3], model.user_embedding.weight[3] / 4)
    # float32 path agrees too
    model.float()
    users32, _ = model.embed(graph=graph)
    torch.testing.assert_close(users32.double(), ref_users, rtol=1e-5, atol=1e-6)


def test_lightgcn_zero_layers_is_mf() -> None:
    model = LightGCN(NU, NI, D, num_layers=0)
    users, items = model.embed(graph=GRAPH)
    torch.testing.assert_close(users, model.user_embedding.weight)
    torch.testing.assert_close(items, model.item_embedding.weight)


def test_lightgcn_graph_cache() -> None:
    torch.manual_seed(0)
    model = LightGCN(NU, NI, D, num_layers=2)
    g1, g2 = make_graph(seed=1), make_graph(seed=2)
    assert not torch.equal(g1, g2) and g1.shape == g2.shape
    out1 = model.user_representation(graph=g1)
    assert model._graph_cache is not None
    adj = model._graph_cache[2]
    torch.testing.assert_close(model.user_representation(graph=g1), out1)
    assert model._graph_cache[2] is adj, "same graph must not rebuild"
    model.user_representation(graph=g1.clone())
    assert model._graph_cache[2] is adj, "equal content must not rebuild"

    # a different graph of the same shape must not reuse the cached adjacency
    out2 = model.user_representation(graph=g2)
    fresh = LightGCN(NU, NI, D, num_layers=2)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(out2, fresh.user_representation(graph=g2))
    assert not torch.allclose(out1, out2)

    # nor must the same tensor after an in-place edit
    g = g1.clone()
    model.user_representation(graph=g)
    g[1, 0] = (g[1, 0] + 1) % NI
    torch.testing.assert_close(
        model.user_representation(graph=g), fresh.user_representation(graph=g.clone())
    )

    # the graph is data, not state
    assert set(model.state_dict()) == {"user_embedding.weight", "item_embedding.weight"}
    assert copy.deepcopy(model)._graph_cache is None
    assert pickle.loads(pickle.dumps(model))._graph_cache is None
    assert model._graph_cache is not None


def test_lightgcn_graph_errors() -> None:
    model = LightGCN(NU, NI, D)
    users = torch.tensor([0, 1])
    for call in (
        lambda: model(users, users),
        lambda: model.full_scores(users),
        lambda: model.user_representation(),
        lambda: model.embed(),
    ):
        with pytest.raises(ValueError, match="needs graph"):
            call()
    with pytest.raises(ValueError, match="LongTensor"):
        model.embed(graph=GRAPH.float())
    with pytest.raises(ValueError, match="LongTensor"):
        model.embed(graph=GRAPH.T)
    with pytest.raises(ValueError, match="out of range"):
        model.embed(graph=torch.tensor([[0], [NI]]))  # items must not be offset
    with pytest.raises(ValueError, match="out of range"):
        model.embed(graph=torch.tensor([[NU], [0]]))


# ---------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "make",
    [
        lambda: MF(0, NI),
        lambda: MF(NU, -1),
        lambda: MF(NU, NI, embedding_dim=0),
        lambda: MF(NU, NI, embedding_dim=2.5),  # type: ignore[arg-type]
        lambda: MF(True, NI),
        lambda: MF(NU, NI, init_std=0.0),
        lambda: MF(NU, NI, init_std=float("nan")),
        lambda: NCF(NU, NI, hidden_layers=-1),
        lambda: NCF(NU, NI, dropout=1.0),
        lambda: NCF(NU, NI, dropout=-0.1),
        lambda: NCF(NU, NI, scorer="mlp"),  # type: ignore[arg-type]
        lambda: NCF(NU, NI, embedding_dim=4, hidden_layers=4, scorer="neumf"),
        lambda: LightGCN(NU, NI, num_layers=-1),
        lambda: LightGCN(0, NI),
    ],
)
def test_invalid_arguments(make: Callable[[], Recommender]) -> None:
    with pytest.raises(ValueError):
        make()


def test_forward_shape_errors() -> None:
    model = MF(NU, NI, D)
    with pytest.raises(ValueError, match="users"):
        model(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="items"):
        model(torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long))


def test_defaults_and_attributes() -> None:
    ncf = NCF(NU, NI)
    assert (ncf.num_users, ncf.num_items, ncf.embedding_dim) == (NU, NI, 128)
    assert MF(NU, NI).embedding_dim == LightGCN(NU, NI).embedding_dim == 64
    assert LightGCN(NU, NI).num_layers == 3 and LightGCN.needs_graph and not MF.needs_graph


def test_import_does_not_load_torch_geometric() -> None:
    code = "import sys, lit_unlearn.models; assert 'torch_geometric' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- training
def bpr_overfits(model: Recommender, graph: Tensor, steps: int = 300, lr: float = 0.05) -> None:
    """Full-batch BPR over every (user, positive, negative) triple must fit the training set."""
    pos = torch.zeros(model.num_users, model.num_items, dtype=torch.bool)
    pos[graph[0], graph[1]] = True
    triples = [
        (u, p, n)
        for u in range(model.num_users)
        for p in pos[u].nonzero().flatten().tolist()
        for n in (~pos[u]).nonzero().flatten().tolist()
    ]
    users, pos_items, neg_items = torch.tensor(triples).T
    items = torch.stack([pos_items, neg_items], dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        scores = model(users, items, graph=graph)
        loss = -F.logsigmoid(scores[:, 0] - scores[:, 1]).mean()
        loss = loss + 1e-4 * model.l2_batch(users, items)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[:: steps // 10]
    model.eval()
    with torch.no_grad():
        full = model.full_scores(torch.arange(model.num_users), graph=graph)
    worst_pos = full.masked_fill(~pos, float("inf")).min(1).values
    best_neg = full.masked_fill(pos, float("-inf")).max(1).values
    assert (worst_pos > best_neg).all(), (worst_pos, best_neg)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_bpr_overfits_tiny_problem(name: str) -> None:
    torch.manual_seed(0)
    bpr_overfits(BACKBONES[name](8, 20), make_graph(num_users=8, num_items=20, per_user=3))


@pytest.mark.parametrize("shift", [False, True])
def test_dense_scoring_matches_per_pair(backbone: tuple[str, Recommender], shift: bool) -> None:
    """Batches naming >= half the [U, I] cells are scored through the full matrix (dot
    scorers): the same values and gradients as scoring the gathered pairs, with and without
    a user shift (backbones whose representation is not their table)."""
    name, model = backbone
    if shift:
        if model.representation_is_table:  # its table is the representation: no shift
            with pytest.raises(ValueError, match="representation is its embedding table"):
                model.enable_user_shift()
            return
        with torch.no_grad():
            model.enable_user_shift().normal_()
    graph = GRAPH if model.needs_graph else None
    gen = torch.Generator().manual_seed(3)
    users = torch.randint(NU, (4 * NI,), generator=gen)
    for items in (torch.randint(NI, (4 * NI, 3), generator=gen), torch.randint(NI, (4 * NI,))):
        params = [p for p in model.parameters() if p.requires_grad]
        got = model(users, items, graph)
        g_got = torch.autograd.grad(got.square().sum(), params, allow_unused=True)
        user_rep, item_rep = model.embed(users, items, graph)
        want = model.score(user_rep.unsqueeze(-2) if items.ndim == 2 else user_rep, item_rep)
        g_want = torch.autograd.grad(want.square().sum(), params, allow_unused=True)
        torch.testing.assert_close(got, want)
        for a, b in zip(g_got, g_want, strict=True):
            if a is None or b is None:
                assert a is None and b is None
            else:
                torch.testing.assert_close(a, b)
    assert model._dense_scoring_pays(users.numel() * 3) == model.scores_by_dot(), name
