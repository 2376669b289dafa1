"""The in-process engine: batched clients equal a plain per-client loop, FedAvg's closed form,
resume, determinism and bad input."""

from __future__ import annotations

import copy
from typing import Literal

import pytest
import torch
from torch import Tensor, nn

from lit_unlearn.methods.federated import (
    ClientData,
    ClientUpdate,
    FedAdam,
    FedAvg,
    InProcessEngine,
    MultinomialELBO,
    PointwiseBCE,
)
from lit_unlearn.models import NCF, FedRAP, MultVAE
from lit_unlearn.models.base import Recommender


def _pairs(num_users: int = 12, num_items: int = 15, per_user: int = 4, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for u in range(num_users):
        n = per_user + u % 3  # different lengths: clients drop out of later local steps
        items = torch.randperm(num_items, generator=g)[:n]
        rows.append(torch.stack([torch.full((n,), u), items]))
    return torch.cat(rows, dim=1)


def _model(kind: str, num_users: int = 12, num_items: int = 15) -> Recommender:
    torch.manual_seed(0)
    if kind == "ncf":
        return NCF(num_users, num_items, 8, hidden_layers=1, scorer="neumf")
    if kind == "fedrap":
        return FedRAP(num_users, num_items, 8, residual_init_std=0.05)
    return MultVAE(num_users, num_items, 6, hidden=10, dropout=0.0)


def _one_client_reference(
    model: Recommender,
    loss_fn: PointwiseBCE,
    data: ClientData,
    user: int,
    gen: torch.Generator,
    batch: int,
    lr: float,
    optimizer: str,
    private: tuple[str, float] | None = None,
) -> dict[str, Tensor]:
    """Plain PyTorch: a copy of the model whose per-user tables hold only ``user``'s row,
    trained by torch.optim on the client's minibatches (``private``: another optimiser and lr
    for those rows). Returns the final parameters."""
    local = copy.deepcopy(model)
    names = {id(p): n for n, p in model.named_parameters()}
    for p in model.per_user_parameters():
        module_name, _, attr = names[id(p)].rpartition(".")
        owner = local.get_submodule(module_name) if module_name else local
        setattr(owner, attr, nn.Parameter(p.detach()[user : user + 1].clone()))
    ex = loss_fn.examples(data, torch.tensor([user]), [gen])

    def make(params: list[nn.Parameter], kind: str, rate: float) -> torch.optim.Optimizer:
        if kind == "sgd":
            return torch.optim.SGD(params, lr=rate)
        return torch.optim.Adam(params, lr=rate)

    own = {id(p) for p in local.per_user_parameters()}
    if private is None:
        opts = [make(list(local.parameters()), optimizer, lr)]
    else:
        opts = [
            make([p for p in local.parameters() if id(p) not in own], optimizer, lr),
            make([p for p in local.parameters() if id(p) in own], *private),
        ]
    n = int(ex.mask.sum())
    for lo in range(0, n, batch):
        cols = {k: v[0, lo : lo + batch] for k, v in ex.columns.items()}
        for opt in opts:
            opt.zero_grad()
        loss_fn.loss(local, cols, ex.mask[0, lo : lo + batch]).backward()
        for opt in opts:
            opt.step()
    return dict(local.named_parameters())


@pytest.mark.parametrize(
    ("kind", "optimizer", "private"),
    [
        ("ncf", "sgd", None),
        ("ncf", "adam", None),
        ("fedrap", "sgd", None),
        # FedNCF's ML-100K recipe: SGD on the shared side, Adam on the private rows.
        ("ncf", "sgd", ("adam", 0.05)),
        ("fedrap", "adam", ("sgd", 0.5)),
    ],
)
def test_batched_round_equals_plain_per_client_training(
    kind: str,
    optimizer: Literal["sgd", "adam"],
    private: tuple[Literal["sgd", "adam"], float] | None,
) -> None:
    pairs = _pairs()
    data = ClientData.from_pairs(pairs, 12, 15)
    model = _model(kind)
    before = copy.deepcopy(model)
    lr = 0.05 if optimizer == "sgd" else 0.01
    engine = InProcessEngine(
        model,
        PointwiseBCE(2),
        data,
        fraction=0.5,
        local_batch_size=5,
        lr=lr,
        optimizer=optimizer,
        private_optimizer=None if private is None else private[0],
        private_lr=None if private is None else private[1],
    )
    clients, seed = copy.deepcopy(engine).plan_round()
    engine.run_round()
    # The reference: every sampled client trained alone with torch.optim, then FedAvg by hand.
    counts = data.counts[clients].double()
    w = counts / counts.sum()
    private_ids = {id(p) for p in before.per_user_parameters()}
    expected = {n: p.detach().clone() for n, p in before.named_parameters()}
    avg = {n: torch.zeros_like(p) for n, p in expected.items()}
    for c, user in enumerate(clients.tolist()):
        gen = InProcessEngine.client_generator(seed, user)
        local = _one_client_reference(
            before, PointwiseBCE(2), data, user, gen, 5, lr, optimizer, private
        )
        for n, p in before.named_parameters():
            if id(p) in private_ids:
                expected[n][user] = local[n].detach()[0]
            else:
                avg[n] += w[c].float() * (local[n].detach() - p.detach())
    for n, p in before.named_parameters():
        if id(p) not in private_ids:
            expected[n] = p.detach() + avg[n]
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n], atol=2e-6, rtol=1e-5)
    # unsampled users keep their private rows
    others = torch.tensor([u for u in range(12) if u not in clients.tolist()])
    for p_new, p_old in zip(model.per_user_parameters(), before.per_user_parameters(), strict=True):
        assert torch.equal(p_new.detach()[others], p_old.detach()[others])


def test_client_draws_do_not_depend_on_the_other_clients() -> None:
    data = ClientData.from_pairs(_pairs(), 12, 15)
    engine = InProcessEngine(_model("ncf"), PointwiseBCE(2), data, fraction=0.5, local_batch_size=4)
    together, _ = engine.local_updates(torch.tensor([1, 4, 7]), round_seed=11)
    alone, _ = engine.local_updates(torch.tensor([4]), round_seed=11)
    for n, d in alone.deltas.items():
        torch.testing.assert_close(d[0], together.deltas[n][1], atol=1e-6, rtol=1e-5)


def test_multvae_round_trains_and_is_deterministic() -> None:
    data = ClientData.from_pairs(_pairs(), 12, 15)

    def run() -> list[Tensor]:
        model = _model("vae")
        engine = InProcessEngine(
            model, MultinomialELBO(0.2), data, fraction=0.5, lr=0.01, optimizer="adam", seed=3
        )
        losses = [engine.run_round().loss for _ in range(6)]
        assert losses[-1] < losses[0]
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(), run(), strict=True):
        assert torch.equal(a, b)


def test_fedavg_closed_form_and_rowwise() -> None:
    start = {"w": torch.zeros(3, 2)}
    deltas = {"w": torch.tensor([[[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]],
                                 [[3.0, 3.0], [4.0, 4.0], [0.0, 0.0]]])}  # fmt: skip
    counts = torch.tensor([1, 3])
    plain = FedAvg()(start, deltas, counts)["w"]
    torch.testing.assert_close(plain, 0.25 * deltas["w"][0] + 0.75 * deltas["w"][1])
    rowwise = FedAvg(rowwise=True)(start, deltas, counts)["w"]
    # row 0: both clients; row 1: only client 1; row 2: only client 0
    torch.testing.assert_close(rowwise, torch.tensor([[2.5, 2.5], [4.0, 4.0], [2.0, 0.0]]))
    uniform = FedAvg(weighting="uniform", server_lr=2.0)(start, deltas, counts)["w"]
    torch.testing.assert_close(uniform, deltas["w"].sum(0))


def test_fedadam_closed_form_over_two_rounds() -> None:
    """Reddi et al. Alg. 2 by hand: m, v over the weighted mean updates, no bias correction."""
    start = {"w": torch.tensor([[1.0, -1.0], [0.5, 0.0]], dtype=torch.float64)}
    counts = torch.tensor([1, 3])
    d1 = {"w": torch.tensor([[[0.4, 0.0], [0.0, 0.2]], [[0.0, -0.4], [0.0, 0.2]]],
                            dtype=torch.float64)}  # fmt: skip
    d2 = {"w": -2 * d1["w"]}
    agg = FedAdam(server_lr=0.1, betas=(0.5, 0.75), tau=0.01)
    after1 = agg(start, d1, counts)
    after2 = agg(after1, d2, counts)
    g1 = 0.25 * d1["w"][0] + 0.75 * d1["w"][1]
    g2 = -2 * g1
    m1, v1 = 0.5 * g1, 0.25 * g1**2
    m2, v2 = 0.5 * m1 + 0.5 * g2, 0.75 * v1 + 0.25 * g2**2
    x1 = start["w"] + 0.1 * m1 / (v1.sqrt() + 0.01)
    torch.testing.assert_close(after1["w"], x1)
    torch.testing.assert_close(after2["w"], x1 + 0.1 * m2 / (v2.sqrt() + 0.01))
    # A coordinate no client moved stays until a later round moves it (m = 0 there).
    assert after1["w"][1, 0] == start["w"][1, 0]
    # The per-coordinate normalisation: a 100x smaller update moves the row by about as much
    # (FedAvg would move it 100x less), which is why rare items move under FedAdam.
    small = FedAdam(server_lr=0.1, tau=1e-9)(start, {"w": d1["w"] / 100}, counts)["w"]
    full = FedAdam(server_lr=0.1, tau=1e-9)(start, d1, counts)["w"]
    torch.testing.assert_close(small, full, rtol=1e-5, atol=1e-5)


def test_fedadam_bad_settings_and_foreign_state() -> None:
    with pytest.raises(ValueError, match="betas"):
        FedAdam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="tau"):
        FedAdam(tau=0.0)
    with pytest.raises(ValueError, match="server_lr"):
        FedAdam(server_lr=-1.0)
    with pytest.raises(ValueError, match="another aggregator"):
        FedAdam().load_state_dict({"momentum": {}})
    with pytest.raises(ValueError, match="another aggregator"):
        FedAvg().load_state_dict({"m": {}, "v": {}})
    with pytest.raises(ValueError, match="no training interaction"):
        FedAdam()({"w": torch.zeros(2)}, {"w": torch.ones(1, 2)}, torch.zeros(1))


@pytest.mark.parametrize("server", ["fedavg", "fedadam"])
def test_resume_equals_uninterrupted(server: str) -> None:
    data = ClientData.from_pairs(_pairs(), 12, 15)

    def engine_for(model: Recommender) -> InProcessEngine:
        # FedAdam carries server moments across rounds: they must travel in the checkpoint.
        aggregator = FedAvg() if server == "fedavg" else FedAdam(server_lr=0.05)
        return InProcessEngine(
            model, PointwiseBCE(2), data, fraction=0.25, local_batch_size=4, aggregator=aggregator
        )

    straight = _model("ncf")
    e1 = engine_for(straight)
    for _ in range(5):
        e1.run_round()
    resumed = _model("ncf")
    e2 = engine_for(resumed)
    for _ in range(2):
        e2.run_round()
    model_state = copy.deepcopy(resumed.state_dict())
    engine_state = copy.deepcopy(e2.state_dict())
    fresh = _model("ncf")
    fresh.load_state_dict(model_state)
    e3 = engine_for(fresh)
    e3.load_state_dict(engine_state)
    for _ in range(3):
        e3.run_round()
    for a, b in zip(straight.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_upload_hook_sees_each_clients_delta() -> None:
    data = ClientData.from_pairs(_pairs(), 12, 15)
    model = _model("ncf")
    engine = InProcessEngine(model, PointwiseBCE(2), data, fraction=0.5, local_batch_size=4)
    seen: list[ClientUpdate] = []
    engine.upload_hooks.append(seen.append)
    before = {n: p.detach().clone() for n, p in engine.objective.named_parameters()}
    engine.run_round()
    (update,) = seen
    assert update.clients.numel() == 6
    assert set(update.deltas) == set(engine.shared_names)
    assert not set(update.deltas) & set(engine.private_names)  # private rows are never uploaded
    for n in engine.shared_names:
        torch.testing.assert_close(update.start[n], before[n])


def test_bad_input_is_refused() -> None:
    pairs = _pairs()
    data = ClientData.from_pairs(pairs, 12, 15)
    with pytest.raises(ValueError, match="samples no client"):
        InProcessEngine(_model("ncf"), PointwiseBCE(), data, fraction=0.01)
    with pytest.raises(ValueError, match="fraction"):
        InProcessEngine(_model("ncf"), PointwiseBCE(), data, fraction=0.0)
    with pytest.raises(ValueError, match="lr"):
        InProcessEngine(_model("ncf"), PointwiseBCE(), data, lr=float("nan"))
    with pytest.raises(ValueError, match="private_lr"):
        InProcessEngine(_model("ncf"), PointwiseBCE(), data, private_lr=0.0)
    with pytest.raises(ValueError, match="private_optimizer"):
        InProcessEngine(_model("ncf"), PointwiseBCE(), data, private_optimizer="lbfgs")  # type: ignore[arg-type]
    no_user_3 = pairs[:, pairs[0] != 3]
    with pytest.raises(ValueError, match="no training interaction"):
        InProcessEngine(_model("ncf"), PointwiseBCE(), ClientData.from_pairs(no_user_3, 12, 15))
    with pytest.raises(ValueError, match="MultinomialELBO"):
        InProcessEngine(_model("vae"), PointwiseBCE(), data)
    with pytest.raises(ValueError, match="MultVAE"):
        InProcessEngine(_model("ncf"), MultinomialELBO(), data)
    with pytest.raises(ValueError, match="users x"):
        InProcessEngine(_model("ncf", num_users=13), PointwiseBCE(), data)
    with pytest.raises(ValueError, match="outside"):
        ClientData.from_pairs(pairs, 5, 15)
    with pytest.raises(ValueError, match="labels"):
        InProcessEngine(_model("ncf"), PointwiseBCE(), data, labels=torch.zeros(3))


def test_non_finite_local_loss_stops_the_round_before_aggregation() -> None:
    data = ClientData.from_pairs(_pairs(), 12, 15)
    model = _model("ncf")
    assert isinstance(model, NCF)
    with torch.no_grad():
        model.item_embedding.weight[0, 0] = float("nan")
    engine = InProcessEngine(model, PointwiseBCE(2), data, fraction=1.0, local_batch_size=4)
    before = model.user_embedding.weight.detach().clone()
    with pytest.raises(FloatingPointError, match="round 0"):
        engine.run_round()
    assert torch.equal(model.user_embedding.weight.detach(), before)


def test_fedrap_client_leaves_the_global_rows_it_never_touched() -> None:
    # A whole-table L1 on C under a per-client Adam moved every row of C by a full step and
    # collapsed the global table (FedRAP stayed at chance on ML-100K): a client's upload must
    # be zero on the item rows its examples never name.
    data = ClientData.from_pairs(_pairs(), 12, 15)
    model = _model("fedrap")
    engine = InProcessEngine(
        model, PointwiseBCE(1), data, fraction=0.5, local_batch_size=4, lr=0.01, optimizer="adam"
    )
    update, _ = engine.local_updates(torch.tensor([2]), round_seed=5)
    ex = PointwiseBCE(1).examples(data, torch.tensor([2]), [engine.client_generator(5, 2)])
    touched = torch.zeros(15, dtype=torch.bool)
    touched[ex.columns["item"][ex.mask]] = True
    delta = update.deltas["model.item_embedding.weight"][0]
    assert (~touched).any()
    assert torch.equal(delta[~touched], torch.zeros_like(delta[~touched]))
    assert delta[touched].abs().sum() > 0
