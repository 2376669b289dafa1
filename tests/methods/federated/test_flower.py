"""The Flower deployment engine: its final global parameters equal the in-process engine's.

Fast tests drive the real ``ServerApp`` and ``ClientApp`` objects through an in-memory grid (one
``Context`` per node, error replies as Flower builds them). The slow tests run a real
``flower-superlink`` and one ``flower-supernode`` per user, each a separate process on
127.0.0.1 with its own ports and ``partition-id``, and submit the app with ``flwr run``; every
process (and every process it spawned) is killed afterwards, pass or fail. There, every Flower
message starts a fresh ``flwr-clientapp`` process that imports torch and lit_unlearn, and an
idle SuperNode polls every 3 s, so a round takes seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

try:
    import flwr  # noqa: F401
except ImportError:  # flwr needs Python >= 3.11
    pytest.skip(
        "flwr is not installed: pip install -c constraints.txt -e '.[flower]' (Python >= 3.11)",
        allow_module_level=True,
    )

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from lit_unlearn.methods.federated import ClientData, FedAdam, FedAvg, InProcessEngine, PointwiseBCE
from lit_unlearn.methods.federated.adversary import AdversaryTerm
from lit_unlearn.methods.federated.apm import APMPerturbation
from lit_unlearn.methods.federated.engine import ClientTransform
from lit_unlearn.methods.federated.erasure import FederatedErasure, apply_user_shift
from lit_unlearn.methods.federated.flower import (
    FlowerRunConfig,
    client_app,
    load_result,
    server_app,
    write_app,
)
from lit_unlearn.methods.federated.flower_cluster import LocalFlowerCluster, missing_commands
from lit_unlearn.methods.federated.objectives import ClientTerm
from lit_unlearn.models import NCF

NUM_USERS, NUM_ITEMS, ROUNDS = 4, 12, 2


def _pairs() -> Tensor:
    """4 users x 12 items, 3-5 positives each (different lengths: padded local batches)."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for u in range(NUM_USERS):
        n = 3 + u % 3
        rows.append(torch.stack([torch.full((n,), u), torch.randperm(NUM_ITEMS, generator=g)[:n]]))
    return torch.cat(rows, dim=1)


def _config(output: Path) -> FlowerRunConfig:
    return FlowerRunConfig(
        num_users=NUM_USERS,
        num_items=NUM_ITEMS,
        embedding_dim=8,
        hidden_layers=1,
        scorer="neumf",
        num_negatives=4,
        fraction=0.5,
        num_rounds=ROUNDS,
        local_epochs=2,
        local_batch_size=4,
        lr=0.1,
        seed=3,
        output_path=str(output),
        node_timeout=90.0,
        round_timeout=90.0,
    )


def _in_process(
    config: FlowerRunConfig,
    labels: list[int] | None = None,
    term: dict[str, Any] | None = None,
    transforms: list[ClientTransform] | None = None,
) -> tuple[InProcessEngine, list[list[int]]]:
    """The reference: the in-process engine with the same seed and hyperparameters, after
    ``config.num_rounds`` rounds, and its clients per round (``term``: FedAU2's adversary,
    built after the model as a config seeds it)."""
    torch.manual_seed(config.seed)
    model = NCF(NUM_USERS, NUM_ITEMS, 8, hidden_layers=1, scorer="neumf")
    terms: list[ClientTerm] = [AdversaryTerm(input_dim=16, **term)] if term is not None else []
    engine = InProcessEngine(
        model,
        PointwiseBCE(4),
        ClientData.from_pairs(_pairs(), NUM_USERS, NUM_ITEMS),
        labels=torch.tensor(labels) if labels is not None else None,
        terms=terms,
        transforms=transforms,
        fraction=0.5,
        local_epochs=2,
        local_batch_size=4,
        lr=0.1,
        aggregator=FedAdam(server_lr=config.server_lr, tau=config.server_tau)
        if config.server == "fedadam"
        else FedAvg(),
        seed=config.seed,
        private_lr=config.private_lr or None,
        private_optimizer="adam" if config.private_optimizer == "adam" else None,
    )
    clients = [engine.run_round().clients.tolist() for _ in range(config.num_rounds)]
    return engine, clients


def _assert_shared_equal(result: dict[str, Any], engine: InProcessEngine) -> None:
    params = dict(engine.objective.named_parameters())
    assert set(result["shared"]) == set(engine.shared_names)
    for name in engine.shared_names:
        torch.testing.assert_close(
            result["shared"][name], params[name].detach(), atol=1e-5, rtol=0, msg=name
        )


def _assert_private_rows_equal(grid: MemoryGrid, engine: InProcessEngine) -> None:
    """Every sampled node's private rows equal the in-process engine's rows of its user."""
    params = dict(engine.objective.named_parameters())
    for node, context in grid.contexts.items():
        if "lit-unlearn.private" in context.state:
            rows = context.state.array_records["lit-unlearn.private"].to_torch_state_dict()
            for name, row in rows.items():
                torch.testing.assert_close(
                    row, params[name].detach()[node - 100], atol=1e-6, rtol=0
                )


# ---------------------------------------------------------------------------------- in memory
class MemoryGrid(Grid):
    """Delivers each message to its node's ``client_app`` at once (one ``Context`` per node);
    a handler's exception becomes an error reply, as ``flwr-clientapp`` builds it."""

    def __init__(
        self, node_configs: list[dict[str, Any]], run_config: dict[str, Any], forget: bool
    ) -> None:
        self.forget = forget  # a node loses its state after each round it trains
        self.contexts = {
            100 + k: Context(
                run_id=1, node_id=100 + k, node_config=nc, state=RecordDict(), run_config=run_config
            )
            for k, nc in enumerate(node_configs)
        }
        self.replies: dict[str, Message] = {}
        self.delivered: list[tuple[str, int]] = []

    def set_run(self, run: Any) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Any:
        raise NotImplementedError

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: Any) -> list[str]:
        ids = []
        for msg in messages:
            msg_id = f"m{len(self.delivered)}"
            msg.metadata.__dict__["_message_id"] = msg_id
            node = msg.metadata.dst_node_id
            self.delivered.append((msg.metadata.message_type, node))
            try:
                reply = client_app(msg, self.contexts[node])
            except Exception as ex:
                reply = Message(Error(0, f"{type(ex)}:<'{ex}'>"), reply_to=msg)
            if self.forget and msg.metadata.message_type == "train":
                self.contexts[node].state = RecordDict()
            self.replies[msg_id] = reply
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Any) -> list[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        raise NotImplementedError


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a ServerApp process sets before creating messages."""
    for attr, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def _serve_in_memory(
    tmp_path: Path,
    partition_ids: list[int],
    config: FlowerRunConfig,
    forget: bool = False,
    labels: dict[int, int] | None = None,
) -> tuple[dict[str, Any], MemoryGrid]:
    data = tmp_path / "pairs.npz"
    np.savez(data, pairs=_pairs().numpy())
    grid = MemoryGrid(
        [
            {"partition-id": p, "data-path": str(data)}
            | ({"label": labels[p]} if labels is not None and p in labels else {})
            for p in partition_ids
        ],
        config.to_user_config(),
        forget,
    )
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config.to_user_config()
    )
    with contextlib.suppress(Exception):  # the result file holds the error
        server_app(grid, context)
    return load_result(config.output_path), grid


@pytest.mark.usefixtures("task_identity")
def test_server_and_client_apps_equal_the_in_process_engine(tmp_path: Path) -> None:
    config = _config(tmp_path / "result.pt")
    result, grid = _serve_in_memory(tmp_path, [3, 1, 0, 2], config)
    assert "error" not in result, result.get("error")
    engine, clients = _in_process(config)
    assert result["clients"] == clients
    _assert_shared_equal(result, engine)
    # one query per node, then train messages to the sampled users' nodes only
    assert sorted(n for kind, n in grid.delivered if kind == "query") == sorted(grid.contexts)
    trained = [n for kind, n in grid.delivered if kind == "train"]
    assert trained == [result["nodes"][u] for round_users in clients for u in round_users]
    assert result["nodes"] == {3: 100, 1: 101, 0: 102, 2: 103}


@pytest.mark.usefixtures("task_identity")
def test_private_rows_stay_on_the_nodes_and_match_the_in_process_engine(tmp_path: Path) -> None:
    config = _config(tmp_path / "result.pt")
    _, grid = _serve_in_memory(tmp_path, list(range(NUM_USERS)), config)
    engine, _ = _in_process(config)
    params = dict(engine.objective.named_parameters())
    for node, context in grid.contexts.items():
        user = node - 100
        if "lit-unlearn.private" not in context.state:  # never sampled
            continue
        rows = context.state.array_records["lit-unlearn.private"].to_torch_state_dict()
        assert set(rows) == set(engine.private_names)
        for name, row in rows.items():
            torch.testing.assert_close(row, params[name].detach()[user], atol=1e-6, rtol=0)


@pytest.mark.usefixtures("task_identity")
def test_split_optimisers_on_flower_equal_the_in_process_engine(tmp_path: Path) -> None:
    """FedNCF's ML-100K recipe: SGD on the shared side, Adam on the node's private row."""
    config = dataclasses.replace(
        _config(tmp_path / "result.pt"), private_optimizer="adam", private_lr=0.05
    )
    result, grid = _serve_in_memory(tmp_path, list(range(NUM_USERS)), config)
    assert "error" not in result, result.get("error")
    engine, clients = _in_process(config)
    assert engine.param_optim[engine.private_names[0]] == ("adam", 0.05)
    assert result["clients"] == clients
    _assert_shared_equal(result, engine)
    _assert_private_rows_equal(grid, engine)
    with pytest.raises(ValueError, match="private-optimizer"):
        dataclasses.replace(config, private_optimizer="lbfgs")
    with pytest.raises(ValueError, match="private-lr"):
        dataclasses.replace(config, private_lr=float("nan"))


@pytest.mark.usefixtures("task_identity")
def test_fedadam_server_on_flower_equals_the_in_process_engine(tmp_path: Path) -> None:
    """A FedAdam server (FedVAE's strategy; here on the NCF the Flower app runs): the ServerApp
    keeps FedAdam's moments for the run, and the result equals the in-process engine's."""
    config = dataclasses.replace(
        _config(tmp_path / "result.pt"), server="fedadam", server_lr=0.05, server_tau=1e-2
    )
    result, grid = _serve_in_memory(tmp_path, list(range(NUM_USERS)), config)
    assert "error" not in result, result.get("error")
    engine, clients = _in_process(config)
    assert isinstance(engine.aggregator, FedAdam) and engine.aggregator.m  # moments are used
    assert result["clients"] == clients
    _assert_shared_equal(result, engine)
    _assert_private_rows_equal(grid, engine)
    # FedAvg from the same start differs: the test sees the strategy.
    fedavg, _ = _in_process(dataclasses.replace(config, server="fedavg"))
    assert any(
        not torch.allclose(result["shared"][n], p.detach(), atol=1e-4)
        for n, p in fedavg.objective.named_parameters()
        if n in fedavg.shared_names
    )
    with pytest.raises(ValueError, match="server must be"):
        dataclasses.replace(config, server="fedprox")
    with pytest.raises(ValueError, match="tau"):
        dataclasses.replace(config, server_tau=0.0)
    with pytest.raises(ValueError, match="betas"):
        dataclasses.replace(config, server_beta1=1.0)


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize(
    ("partition_ids", "message"),
    [
        ([0, 1, 9, 3], "partition-id 9 names no user: the run has num-users=4"),
        ([0, 1, 1, 3], "both have partition-id 1"),
        ([0, 1, -1, 3], "partition-id -1 names no user"),
    ],
)
def test_bad_partition_ids_stop_the_run_before_training(
    tmp_path: Path, partition_ids: list[int], message: str
) -> None:
    result, grid = _serve_in_memory(tmp_path, partition_ids, _config(tmp_path / "result.pt"))
    assert "shared" not in result
    assert "node discovery" in result["error"] and message in result["error"]
    assert all(kind == "query" for kind, _ in grid.delivered)


@pytest.mark.usefixtures("task_identity")
def test_a_user_without_a_node_times_out_with_its_id(tmp_path: Path) -> None:
    config = dataclasses.replace(_config(tmp_path / "result.pt"), node_timeout=0.3)
    result, grid = _serve_in_memory(tmp_path, [0, 1, 3], config)
    assert "no SuperNode for user(s) [2]" in result["error"]
    assert all(kind == "query" for kind, _ in grid.delivered)


@pytest.mark.usefixtures("task_identity")
def test_a_node_that_lost_its_private_rows_refuses_to_train(tmp_path: Path) -> None:
    config = dataclasses.replace(_config(tmp_path / "result.pt"), num_rounds=3)
    result, _ = _serve_in_memory(tmp_path, list(range(NUM_USERS)), config, forget=True)
    assert "round 2" in result["error"], result["error"]  # users 1 and 2 train again in round 2
    assert "stale or lost node state" in result["error"]


LABELS = [0, 1, 1, 0]  # each node's attribute code (node config ``label``)
TERM = {  # FedAU2's term with the deterministic MLP head (the noisy heads draw per batch)
    "num_classes": 2,
    "grl_scale": 400.0,
    "lr": 0.1,
    "trigger": "correct",
    "sut_skip": "loss",
    "head_kind": "mlp",
    "hidden": 100,
}


def _fedau2_config(output: Path, erase: bool = False) -> FlowerRunConfig:
    return dataclasses.replace(
        _config(output),
        num_rounds=3,
        attribute_classes=2,
        grl_scale=400.0,
        head_lr=0.1,
        trigger="correct",
        head_kind="mlp",
        erase=erase,
        erasure_replicates=6,
    )


@pytest.mark.usefixtures("task_identity")
def test_fedau2_term_on_flower_equals_the_in_process_engine(tmp_path: Path) -> None:
    """The adversary head is shared and aggregated; each node trains it on its own label."""
    config = _fedau2_config(tmp_path / "result.pt")
    result, grid = _serve_in_memory(
        tmp_path, list(range(NUM_USERS)), config, labels=dict(enumerate(LABELS))
    )
    assert "error" not in result, result.get("error")
    assert result["erasure"] is None
    engine, clients = _in_process(config, LABELS, TERM)
    assert result["clients"] == clients
    assert any(n.startswith("terms.0.head.") for n in engine.shared_names)
    _assert_shared_equal(result, engine)
    # the labels never travel: no message to or from the server carries them
    assert all(kind in ("query", "train") for kind, _ in grid.delivered)


@pytest.mark.usefixtures("task_identity")
def test_apm_on_flower_equals_the_in_process_engine(tmp_path: Path) -> None:
    """APM's clipping and Laplace noise, drawn on each node from its own generator."""
    config = dataclasses.replace(
        _config(tmp_path / "result.pt"), apm_noise=0.03, apm_clip=0.1, apm_private_bound=2.0
    )
    result, grid = _serve_in_memory(tmp_path, list(range(NUM_USERS)), config)
    assert "error" not in result, result.get("error")
    apm = APMPerturbation(noise=0.03, clip=0.1, private_bound=2.0)
    engine, clients = _in_process(config, transforms=[apm])
    assert result["clients"] == clients
    _assert_shared_equal(result, engine)
    plain, _ = _in_process(config)
    assert not torch.allclose(  # the noise did reach the upload
        dict(plain.objective.named_parameters())["model.predict.weight"],
        result["shared"]["model.predict.weight"],
    )
    _assert_private_rows_equal(grid, engine)


@pytest.mark.usefixtures("task_identity")
def test_erasure_on_flower_moves_the_nodes_rows_as_the_in_process_erasure(
    tmp_path: Path,
) -> None:
    """Counts, sums and class shifts over messages: every node ends with the in-process
    engine's rows plus the in-process plan's shift for its class; the server holds only the
    plan."""
    config = _fedau2_config(tmp_path / "result.pt", erase=True)
    labels = LABELS
    result, grid = _serve_in_memory(
        tmp_path, list(range(NUM_USERS)), config, labels=dict(enumerate(labels))
    )
    assert "error" not in result, result.get("error")
    engine, _ = _in_process(config, labels, TERM)
    _assert_shared_equal(result, engine)
    codes = torch.tensor(labels)
    erasure = FederatedErasure(replicates=6, seed=config.seed)
    with torch.no_grad():
        before = engine.model.user_representation().clone()
    plan = erasure.plan(before, codes, 2)
    # The server adds the nodes' float32 sums message by message, the plan in one reduction
    # whose order follows the CPU's kernels: equal to float32 rounding (2e-7 on an AVX-512 Xeon).
    torch.testing.assert_close(
        result["erasure"]["class_shift"], plan.class_shift, rtol=1e-5, atol=1e-6
    )
    assert result["erasure"]["rank"] == plan.rank
    apply_user_shift(engine.model, erasure.shifts(plan, codes))
    params = dict(engine.objective.named_parameters())
    for node, context in grid.contexts.items():
        rows = context.state.array_records["lit-unlearn.private"].to_torch_state_dict()
        for name, row in rows.items():
            torch.testing.assert_close(row, params[name].detach()[node - 100], atol=1e-6, rtol=0)
    kinds = [kind for kind, _ in grid.delivered]
    for action in ("erasure_counts", "erasure_sums", "erasure_apply"):
        assert kinds.count(f"query.{action}") == NUM_USERS
    assert not torch.equal(before, engine.model.user_representation())  # it did move them


@pytest.mark.usefixtures("task_identity")
def test_erasure_without_enough_labels_stops_with_the_class_sizes(tmp_path: Path) -> None:
    """A node without a label adds zeros to every sum; too few labels is a clear error."""
    config = _fedau2_config(tmp_path / "result.pt", erase=True)
    result, grid = _serve_in_memory(
        tmp_path, list(range(NUM_USERS)), config, labels={0: 0, 1: 1, 2: 1}
    )
    assert "need two classes with >= 2 labelled clients" in result["error"]
    assert "[1, 2]" in result["error"]  # user 3 counted in neither class
    assert [k for k, _ in grid.delivered].count("query.erasure_apply") == 0  # nothing moved


def test_erasure_sums_cross_the_wire_with_their_folds() -> None:
    """What a node sends with ``erasure-ridge-cv``: its sums under the fold it drew too; the
    server's plan from the records equals the in-process plan (the ridge chosen alike)."""
    from lit_unlearn.methods.federated.flower import _record_sums, _sums_record

    g = torch.Generator().manual_seed(0)
    z = torch.randn(60, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (60,), generator=g)
    z[:, 0] += labels
    erasure = FederatedErasure(replicates=4, ridge="cv", folds=3, seed=1)
    proportions = torch.bincount(labels, minlength=2).double() / 60
    total = None
    for u in range(60):
        sums = erasure.contribution(
            z[u : u + 1], torch.tensor([u]), labels[u : u + 1], proportions, 2
        )
        back = _record_sums(_sums_record(sums))
        assert back.folds is not None and sums.folds is not None
        torch.testing.assert_close(back.folds.outer, sums.folds.outer)
        total = back if total is None else total + back
    assert total is not None
    plan, direct = erasure.plan_from_sums(total), erasure.plan(z, labels, 2)
    assert plan.ridge == direct.ridge
    torch.testing.assert_close(plan.class_shift, direct.class_shift)
    plain = FederatedErasure(replicates=4).contribution(z, torch.arange(60), labels, proportions, 2)
    assert _record_sums(_sums_record(plain)).folds is None


@pytest.mark.usefixtures("task_identity")
def test_a_label_outside_the_attribute_stops_the_run_at_discovery(tmp_path: Path) -> None:
    config = _fedau2_config(tmp_path / "result.pt")
    result, grid = _serve_in_memory(
        tmp_path, list(range(NUM_USERS)), config, labels={0: 0, 1: 2, 2: 1, 3: 0}
    )
    assert "node discovery" in result["error"] and "label 2 is not a class" in result["error"]
    assert all(kind == "query" for kind, _ in grid.delivered)


def test_flower_fedau2_config_is_checked_when_read() -> None:
    with pytest.raises(ValueError, match="attribute-classes"):
        FlowerRunConfig(attribute_classes=1)
    with pytest.raises(ValueError, match="erase needs"):
        FlowerRunConfig(erase=True)
    with pytest.raises(ValueError, match="trigger"):
        FlowerRunConfig(attribute_classes=2, trigger="sometimes")
    with pytest.raises(ValueError, match="head-lr"):
        FlowerRunConfig(attribute_classes=2, head_lr=float("nan"))
    with pytest.raises(ValueError, match="replicates"):
        FlowerRunConfig(attribute_classes=2, erase=True, erasure_replicates=0)
    with pytest.raises(ValueError, match="noise"):
        FlowerRunConfig(apm_noise=-1.0)
    with pytest.raises(ValueError, match="folds"):
        FlowerRunConfig(attribute_classes=2, erase=True, erasure_ridge_cv=True, erasure_folds=1)
    cv = FlowerRunConfig.from_user_config(
        {"attribute-classes": 2, "erase": True, "erasure-ridge-cv": True, "erasure-folds": 3}
    )
    assert cv.build_erasure().ridge == "cv" and cv.build_erasure().folds == 3
    state = torch.random.get_rng_state()
    FlowerRunConfig(attribute_classes=3, head_kind="dsvae", erase=True)
    assert torch.equal(state, torch.random.get_rng_state())  # checking draws nothing


@pytest.mark.usefixtures("task_identity")
def test_dsvae_head_and_erasure_run_on_flower(tmp_path: Path) -> None:
    """The paper's head draws its noise on the node (not comparable with the batched engine's
    draws): the run finishes, trains the head and erases."""
    config = dataclasses.replace(
        _fedau2_config(tmp_path / "result.pt", erase=True), head_kind="dsvae"
    )
    result, _ = _serve_in_memory(
        tmp_path, list(range(NUM_USERS)), config, labels=dict(enumerate(LABELS))
    )
    assert "error" not in result, result.get("error")
    start = dict(config.build_parts()[1][0].named_parameters())
    assert any(
        not torch.equal(result["shared"][f"terms.0.{n}"], p.detach()) for n, p in start.items()
    )
    assert result["erasure"]["class_shift"].shape == (2, 16)
    assert torch.isfinite(result["erasure"]["class_shift"]).all()


# ---------------------------------------------------------------------------------- processes
@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalFlowerCluster]:
    """A SuperLink and SuperNodes on 127.0.0.1 (the library's launcher), stopped pass or fail."""
    missing = missing_commands()
    if missing:
        pytest.skip(f"Flower's commands {missing} are not beside {sys.executable}")
    c = LocalFlowerCluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.npz"
    np.savez(path, pairs=_pairs().numpy())
    return path


@pytest.mark.slow
@pytest.mark.timeout(180)  # backstop: every wait below has its own deadline
def test_flower_rounds_equal_the_in_process_engine(
    cluster: LocalFlowerCluster, data: Path, tmp_path: Path
) -> None:
    output = tmp_path / "result.pt"
    config = _config(output)
    cluster.start(list(range(NUM_USERS)), data)
    result = cluster.run(write_app(tmp_path / "app", config), output, timeout=100)
    assert "error" not in result, result.get("error")

    engine, clients = _in_process(config)
    assert result["clients"] == clients
    assert sorted(result["nodes"]) == list(range(NUM_USERS))
    assert len(set(result["nodes"].values())) == NUM_USERS
    _assert_shared_equal(result, engine)
    start = dict(config.build_model().named_parameters())
    assert any(  # the rounds did train
        not torch.equal(result["shared"][n], start[n.removeprefix("model.")].detach())
        for n in engine.shared_names
    )
    assert len(result["round_seconds"]) == ROUNDS and all(np.isfinite(result["loss"]))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_partition_id_naming_no_user_stops_the_run(
    cluster: LocalFlowerCluster, data: Path, tmp_path: Path
) -> None:
    output = tmp_path / "result.pt"
    cluster.start([NUM_USERS + 5], data)
    result = cluster.run(write_app(tmp_path / "app", _config(output)), output, timeout=60)
    assert "shared" not in result
    assert "node discovery" in result["error"]
    assert f"partition-id {NUM_USERS + 5} names no user" in result["error"]
    assert f"num-users={NUM_USERS}" in result["error"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_fedau2_and_erasure_on_real_nodes_equal_the_in_process_engine(
    cluster: LocalFlowerCluster, data: Path, tmp_path: Path
) -> None:
    """The adversary term and the three erasure exchanges (custom query actions) through a
    real SuperLink and SuperNodes, each node holding its own label."""
    output = tmp_path / "result.pt"
    # One round: the rounds' equality is the in-memory tests'; this one checks the routing.
    config = dataclasses.replace(_fedau2_config(output, erase=True), num_rounds=1)
    cluster.start(list(range(NUM_USERS)), data, labels=LABELS)
    result = cluster.run(write_app(tmp_path / "app", config), output, timeout=160)
    assert "error" not in result, result.get("error")
    engine, clients = _in_process(config, LABELS, TERM)
    assert result["clients"] == clients
    _assert_shared_equal(result, engine)
    with torch.no_grad():
        plan = FederatedErasure(replicates=6, seed=config.seed).plan(
            engine.model.user_representation(), torch.tensor(LABELS), 2
        )
    torch.testing.assert_close(  # float32 rounding, as in the in-memory test
        result["erasure"]["class_shift"], plan.class_shift, rtol=1e-5, atol=1e-6
    )
