"""Flower deployment engine: the in-process engine's rounds as a Flower app, one node per user.

The research engine (:class:`~.engine.InProcessEngine`) trains a round's clients as one batch
in one process. This module runs the *same* rounds on Flower (``flwr`` >= 1.42, Message API,
no Ray): one ``flower-supernode`` per user, a ``ServerApp`` that samples, sends and
aggregates, a ``ClientApp`` that trains its user. With the same run config and seed the
final global parameters equal the in-process engine's (tested with a real SuperLink and
SuperNodes, ``tests/methods/federated/test_flower.py``).

Who holds what:

* **ServerApp** (:data:`server_app`): the global shared parameters (every parameter of the
  backbone except :meth:`~lit_unlearn.models.base.Recommender.per_user_parameters`), seeded
  exactly as the in-process engine's model, and the sampling generator. Each round it calls
  :meth:`InProcessEngine.plan_round` (same seed -> same clients and round seeds), sends a
  ``train`` message to the node of every sampled user, and aggregates the replies with the
  same strategy (:class:`~.strategy.FedAvg`, or :class:`~.strategy.FedAdam` with ``server =
  "fedadam"``, its moments held for the run), weighted by the interaction counts the nodes
  report. It never sees interactions or private rows.
* **ClientApp** (:data:`client_app`): its user is ``node_config["partition-id"]``; its data is
  ``node_config["data-path"]``, an ``.npz`` whose ``pairs`` is an int ``[2, E]`` array of
  (user, item) pairs (the node reads only its user's, so the file may hold just those); its
  private rows live in ``context.state`` (an ``ArrayRecord``), initialised from the same seeded
  model as the in-process engine's. A ``train`` message carries the global shared arrays, the
  round index and the round seed; the node runs :meth:`InProcessEngine.local_updates` for its
  one client (an engine over a one-user model and its own data) and replies with its
  shared-parameter deltas and its interaction count.

Before the first round the server sends a ``query`` to every node to map partition ids to
node ids; it waits (``node-timeout``) until every user has a node. A node whose partition id
names no user, a second node for the same user, or a node whose data holds no interaction of
its user fails that query with a clear message, and the server stops and reports it (and writes
it to ``output-path``): no wrong user is ever trained.

Configuration (all Flower's, no file of its own): the run config holds the model sizes and the
hyperparameters (:class:`FlowerRunConfig`, keys as in ``[tool.flwr.app.config]``), the node
config the user and its data. :func:`write_app` writes an app directory (``pyproject.toml``
plus a three-line components module) for ``flwr run``.

Launch (environment ``FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1``; the SuperLink's
and every node's machine need ``lit_unlearn[flower]`` installed, the app ships no code)::

    flower-superlink --insecure --disable-runtime-dependency-installation \
        --host 127.0.0.1 --port 9091
    flower-supernode --insecure --superlink 127.0.0.1:9091 --host 127.0.0.1 --port 9094 \
        --node-config 'partition-id=0 data-path="/data/user0.npz"'  # one per user, own --port
    python -c "from lit_unlearn.methods.federated.flower import write_app; write_app('app')"
    flwr run app <connection> --format json \
        --run-config 'num-users=4 num-items=12 num-rounds=3 output-path="/abs/result.pt"'

where ``<connection>`` is a ``[superlink.<connection>]`` table (``address =
"127.0.0.1:9091"``, ``insecure = true``) in ``$FLWR_HOME/config.toml``.

FedAU2 with the final erasure: add ``label=<class code>`` to each node's ``--node-config`` and,
e.g., ``attribute-classes=2 grl-scale=400.0 trigger="correct" head-kind="dsvae" head-lr=0.1
erase=true`` to ``--run-config``; the result's ``erasure`` holds the plan.

Cost: Flower 1.42 starts a fresh ``flwr-clientapp`` process per message (importing torch and
lit_unlearn) and an idle SuperNode polls every 3 s, so a round costs seconds whatever its size;
use the in-process engine for research runs.

Exactness: a client's draws (negatives, shuffles) come from its own generator
(:meth:`InProcessEngine.client_generator` of its user id), so a node draws what the in-process
engine draws for it. Randomness *inside* the loss (dropout, Mult-VAE's reparameterisation)
comes from the global RNG of the whole vmapped batch in process and cannot match a one-client
node; keep ``dropout = 0`` where equality matters (and the ``mlp`` head: the VAE / DSVAE
heads draw their noise per batch; APM's noise comes from the client's own generator and
matches). This app trains NCF (``dot`` or ``neumf``) with
:class:`~.objectives.PointwiseBCE` (FedNCF).

FedAU2 on Flower: with ``attribute-classes = K >= 2`` in the run config every client also
trains :class:`~.adversary.AdversaryTerm` (GRL scale, trigger, head kind and lr from the run
config), the head shared and aggregated like the item side. Each node holds its own label
(node config ``label=<class code>``; absent: unknown, the node adds no adversarial term); the
label never leaves the node: not in the discovery reply, not in any upload.

The final erasure (``erase = true``; :class:`~.erasure.FederatedErasure`) runs after the last
round as three exchanges with every node, custom query actions of the ``ClientApp``:
``erasure_counts`` (each node's one-hot class count), ``erasure_sums`` (given the class
proportions: its class sum, outer product and pseudo-labelled sums) and ``erasure_apply``
(given the ``[K, d]`` class shifts: the node adds its class's to its private rows). The server
forms only sums of the replies and returns the plan in the result (``erasure``). Here the
server adds the replies in the clear; a deployment wraps the first two exchanges in Flower's
secure aggregation (SecAgg+) so that it sees only the sums, as the protocol assumes. The
nodes' erased rows equal the in-process engine's rows after its erasure (tested).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from torch import Tensor

from lit_unlearn.methods.federated.adversary import AdversaryTerm
from lit_unlearn.methods.federated.apm import APMPerturbation
from lit_unlearn.methods.federated.clients import ClientData
from lit_unlearn.methods.federated.engine import ClientTransform, InProcessEngine
from lit_unlearn.methods.federated.erasure import (
    ClassStatistics,
    ErasurePlan,
    ErasureSums,
    FederatedErasure,
    apply_user_shift,
)
from lit_unlearn.methods.federated.objectives import PointwiseBCE
from lit_unlearn.methods.federated.strategy import Aggregator, FedAdam, FedAvg
from lit_unlearn.models.ncf import NCF

__all__ = [
    "FlowerRunConfig",
    "client_app",
    "load_result",
    "server_app",
    "write_app",
]

#: The app's components module written by :func:`write_app` (a top-level module of the FAB,
#: so ``flwr run``'s static check of the components does not import torch).
COMPONENTS_MODULE = "lit_unlearn_flower_components"

_STATE_PRIVATE = "lit-unlearn.private"
_STATE_META = "lit-unlearn.meta"


# ---------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class FlowerRunConfig:
    """The app's run config (``[tool.flwr.app.config]``; keys are the field names with ``-``).

    Attributes:
        num_users: Users (= nodes; user ids ``0 .. num_users - 1``).
        num_items: Items.
        embedding_dim: NCF embedding width.
        hidden_layers: NCF tower / MLP layers.
        scorer: NCF scorer, ``dot`` or ``neumf``.
        dropout: NCF dropout (0 keeps Flower equal to the in-process engine, see the module).
        num_negatives: :class:`~.objectives.PointwiseBCE` negatives per positive.
        fraction: Share of users sampled per round.
        num_rounds: Rounds.
        local_epochs: Local passes per sampled client.
        local_batch_size: Examples per local minibatch (0: the client's whole data).
        lr: Client learning rate.
        optimizer: ``sgd`` or ``adam``.
        private_lr: Learning rate of the node's private user row (0: ``lr``).
        private_optimizer: Optimiser of the private row, ``sgd`` or ``adam`` (empty:
            ``optimizer``).
        weighting: The server's weighting of the replies, ``interactions`` or ``uniform``.
        server_lr: The server step (FedAvg's, or FedAdam's ``eta``).
        rowwise: Row-wise averaging of the replies.
        server: The server strategy, ``fedavg`` (:class:`~.strategy.FedAvg`) or ``fedadam``
            (:class:`~.strategy.FedAdam`; its moments live in the ServerApp for the run).
        server_beta1: FedAdam's ``b1``.
        server_beta2: FedAdam's ``b2``.
        server_tau: FedAdam's adaptivity ``tau``.
        seed: Seed of the model init, the sampling and the clients' draws.
        output_path: Where the ServerApp writes the final global parameters, or the error that
            stopped the run (``torch.save``, an absolute path on the SuperLink's machine;
            empty: nowhere). See :func:`load_result`.
        node_timeout: Seconds the ServerApp waits for a node of every user.
        round_timeout: Seconds it waits for a round's replies.
        attribute_classes: Classes of the attribute the nodes hold (node config ``label``);
            0: no attribute, no adversary. With ``K >= 2`` every client trains FedAU2's
            :class:`~.adversary.AdversaryTerm` (a shared head, aggregated like the item side).
        grl_scale: The term's gradient-reversal scale (0: the head only observes).
        head_kind: ``mlp``, ``vae`` or ``dsvae``.
        head_hidden: The head's hidden width.
        head_lr: The head's own SGD learning rate (0: the clients' optimiser and lr).
        trigger: ``always`` (Global), ``correct`` (SUT) or ``adaptive``.
        sut_skip: What SUT skips for a mis-predicted client: ``loss`` or ``grl``.
        pretrain_rounds: Rounds before any reversal.
        noise_variance: DSVAE's lambda.
        adversary_weight: The term's weight.
        erase: After the last round, erase the attribute from every node's private rows
            (:class:`~.erasure.FederatedErasure`, three message exchanges; needs
            ``attribute_classes >= 2``).
        erasure_replicates: Its pseudo-label replicates.
        erasure_quantile: Its null quantile.
        erasure_ridge: Its relative ridge.
        erasure_ridge_cv: Choose the ridge by cross-validation over ``erasure_folds`` folds
            instead (``FederatedErasure(ridge="cv")``: each node also sends its sums under the
            fold it draws; needs enough labelled nodes for every fold).
        erasure_folds: The folds of ``erasure_ridge_cv``.
        apm_noise: APM's Laplace scale on each client's upload and kept rows
            (:class:`~.apm.APMPerturbation`, drawn from the client's own generator); 0 with
            ``apm_clip = 0``: no APM.
        apm_clip: APM's per-coordinate bound of a client's upload (0: no clipping).
        apm_private_bound: APM's bound of the kept rows before their noise (0: none).
    """

    num_users: int = 4
    num_items: int = 12
    embedding_dim: int = 8
    hidden_layers: int = 1
    scorer: str = "neumf"
    dropout: float = 0.0
    num_negatives: int = 4
    fraction: float = 0.5
    num_rounds: int = 3
    local_epochs: int = 1
    local_batch_size: int = 0
    lr: float = 0.1
    optimizer: str = "sgd"
    private_lr: float = 0.0
    private_optimizer: str = ""
    weighting: str = "interactions"
    server_lr: float = 1.0
    rowwise: bool = False
    server: str = "fedavg"
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_tau: float = 1e-3
    seed: int = 0
    output_path: str = ""
    node_timeout: float = 120.0
    round_timeout: float = 600.0
    attribute_classes: int = 0
    grl_scale: float = 0.0
    head_kind: str = "mlp"
    head_hidden: int = 100
    head_lr: float = 0.0
    trigger: str = "always"
    sut_skip: str = "loss"
    pretrain_rounds: int = 0
    noise_variance: float = 4.0
    adversary_weight: float = 1.0
    erase: bool = False
    erasure_replicates: int = 30
    erasure_quantile: float = 0.95
    erasure_ridge: float = 0.001
    erasure_ridge_cv: bool = False
    erasure_folds: int = 5
    apm_noise: float = 0.0
    apm_clip: float = 0.0
    apm_private_bound: float = 0.0

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items", "embedding_dim", "num_rounds", "local_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{_key(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("hidden_layers", "local_batch_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{_key(name)} must be >= 0, got {getattr(self, name)}")
        for name in ("node_timeout", "round_timeout"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{_key(name)} must be a finite number > 0")
        if self.attribute_classes == 1 or self.attribute_classes < 0:
            raise ValueError(
                f"attribute-classes must be 0 (no attribute) or >= 2, got {self.attribute_classes}"
            )
        if not (math.isfinite(self.private_lr) and self.private_lr >= 0):
            raise ValueError(f"private-lr must be a finite number >= 0, got {self.private_lr}")
        if self.private_optimizer not in ("", "sgd", "adam"):
            raise ValueError(
                f"private-optimizer must be 'sgd', 'adam' or empty, got {self.private_optimizer!r}"
            )
        if self.server not in ("fedavg", "fedadam"):
            raise ValueError(f"server must be 'fedavg' or 'fedadam', got {self.server!r}")
        self.build_aggregator()  # the strategy checks its own arguments
        if not (math.isfinite(self.head_lr) and self.head_lr >= 0):
            raise ValueError(f"head-lr must be a finite number >= 0, got {self.head_lr}")
        if self.attribute_classes:
            self.build_parts(num_users=1)  # the term checks its own arguments (RNG forked)
        self.build_transforms()  # APM checks its own arguments
        if self.erase:
            if not self.attribute_classes:
                raise ValueError("erase needs the nodes' labels: set attribute-classes >= 2")
            self.build_erasure()

    @classmethod
    def from_user_config(cls, config: Mapping[str, Any]) -> FlowerRunConfig:
        """Read a Flower run config (unknown keys are ignored, missing keys take defaults).

        Raises:
            ValueError: A value of the wrong type or out of range.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = _key(f.name)
            if key not in config:
                continue
            value = config[key]
            kind = type(f.default)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not kind:
                raise ValueError(
                    f"run config {key!r} must be of type {kind.__name__}, got {value!r} "
                    f"({type(value).__name__})"
                )
            values[f.name] = value
        return cls(**values)

    def to_user_config(self) -> dict[str, Any]:
        """The run config dict (hyphenated keys; float fields as floats)."""
        return {
            _key(f.name): float(v) if isinstance(f.default, float) else v
            for f, v in zip(fields(self), asdict(self).values(), strict=True)
        }

    def build_model(self, num_users: int | None = None) -> NCF:
        """The seeded backbone: the same init as ``torch.manual_seed(seed); NCF(...)``.

        ``num_users`` overrides the user count (a node's one-row model); the global RNG is
        left as it was.
        """
        return self.build_parts(num_users)[0]

    def build_terms(self, input_dim: int) -> list[AdversaryTerm]:
        """The clients' extra terms: FedAU2's adversary when the nodes hold an attribute.

        Built right after the model under the same seed (:meth:`build_parts`), so the head
        starts as ``torch.manual_seed(seed); NCF(...); AdversaryTerm(...)`` does.
        """
        if not self.attribute_classes:
            return []
        return [
            AdversaryTerm(
                input_dim=input_dim,
                num_classes=self.attribute_classes,
                weight=self.adversary_weight,
                grl_scale=self.grl_scale,
                lr=self.head_lr or None,
                trigger=cast(Literal["always", "correct", "adaptive"], self.trigger),
                pretrain_rounds=self.pretrain_rounds,
                sut_skip=cast(Literal["loss", "grl"], self.sut_skip),
                head_kind=cast(Literal["mlp", "vae", "dsvae"], self.head_kind),
                noise_variance=self.noise_variance,
                hidden=self.head_hidden,
            )
        ]

    def build_parts(self, num_users: int | None = None) -> tuple[NCF, list[AdversaryTerm]]:
        """The seeded backbone and, after it under the same seed, the terms' heads."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = NCF(
                self.num_users if num_users is None else num_users,
                self.num_items,
                self.embedding_dim,
                hidden_layers=self.hidden_layers,
                dropout=self.dropout,
                scorer=cast(Literal["dot", "neumf"], self.scorer),
            )
            return model, self.build_terms(model.representation_dim)

    def build_transforms(self) -> list[ClientTransform]:
        """The clients' transforms before upload: APM when ``apm_noise`` or ``apm_clip`` is set."""
        if not (self.apm_noise or self.apm_clip):
            return []
        return [
            APMPerturbation(
                noise=self.apm_noise,
                clip=self.apm_clip or None,
                private_bound=self.apm_private_bound or None,
            )
        ]

    def build_erasure(self) -> FederatedErasure:
        """The final erasure (step seeds: the run's ``seed``)."""
        return FederatedErasure(
            replicates=self.erasure_replicates,
            quantile=self.erasure_quantile,
            ridge="cv" if self.erasure_ridge_cv else self.erasure_ridge,
            seed=self.seed,
            folds=self.erasure_folds,
        )

    def build_engine(
        self,
        model: NCF,
        data: ClientData,
        engine_cls: type[InProcessEngine] = InProcessEngine,
        fraction: float | None = None,
        terms: list[AdversaryTerm] | None = None,
        labels: Tensor | None = None,
    ) -> InProcessEngine:
        """The in-process engine with this config's hyperparameters over ``model`` / ``data``
        (``fraction`` overrides the config's: a node's engine holds one client; ``terms`` and
        ``labels``: :meth:`build_parts`' terms and the clients' attribute codes)."""
        return engine_cls(
            model,
            PointwiseBCE(self.num_negatives),
            data,
            labels=labels,
            terms=list(terms or []),
            transforms=self.build_transforms(),
            fraction=self.fraction if fraction is None else fraction,
            local_epochs=self.local_epochs,
            local_batch_size=self.local_batch_size or None,
            lr=self.lr,
            optimizer=cast(Literal["sgd", "adam"], self.optimizer),
            private_lr=self.private_lr or None,
            private_optimizer=cast(Literal["sgd", "adam"], self.private_optimizer or None),
            aggregator=self.build_aggregator(),
            seed=self.seed,
        )

    def build_aggregator(self) -> Aggregator:
        """The server strategy (``server``), fresh: FedAdam's moments start at zero."""
        weighting = cast(Literal["interactions", "uniform"], self.weighting)
        if self.server == "fedadam":
            return FedAdam(
                weighting,
                server_lr=self.server_lr,
                rowwise=self.rowwise,
                betas=(self.server_beta1, self.server_beta2),
                tau=self.server_tau,
            )
        return FedAvg(weighting, server_lr=self.server_lr, rowwise=self.rowwise)


def _key(field_name: str) -> str:
    return field_name.replace("_", "-")


# ---------------------------------------------------------------------------------- app dir
def write_app(directory: str | os.PathLike[str], config: FlowerRunConfig | None = None) -> Path:
    """Write a Flower app directory for ``flwr run``: ``pyproject.toml`` + components module.

    The run config defaults in ``[tool.flwr.app.config]`` are ``config``'s (every key can be
    overridden with ``flwr run ... --run-config``). The app's code is this module, so every
    node and the SuperLink need ``lit_unlearn[flower]`` installed (run the SuperLink with
    ``--disable-runtime-dependency-installation``).

    Returns:
        The directory.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    run_config = (config or FlowerRunConfig()).to_user_config()
    lines = [
        "[project]",
        'name = "lit-unlearn-fedrec"',
        'version = "1.0.0"',
        'description = "User-level federated recommendation (lit_unlearn), one node per user"',
        'license = "MIT"',
        'dependencies = ["flwr>=1.42,<2"]',
        "",
        "[tool.flwr.app]",
        'publisher = "lit-unlearn"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{COMPONENTS_MODULE}:server_app"',
        f'clientapp = "{COMPONENTS_MODULE}:client_app"',
        "",
        "[tool.flwr.app.config]",
        *(f"{k} = {_toml_value(v)}" for k, v in run_config.items()),
        "",
    ]
    (root / "pyproject.toml").write_text("\n".join(lines), encoding="utf-8")
    (root / f"{COMPONENTS_MODULE}.py").write_text(
        '"""Components of the lit_unlearn Flower app: lit_unlearn.methods.federated.flower."""\n'
        "\n"
        "from lit_unlearn.methods.federated.flower import client_app, server_app\n"
        "\n"
        '__all__ = ["client_app", "server_app"]\n',
        encoding="utf-8",
    )
    return root


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ServerApp's output (``output-path``): ``shared`` (the final global shared parameters,
    name -> tensor), ``clients`` / ``round_seconds`` / ``loss`` (per round), ``setup_seconds``
    (node discovery), ``nodes`` (user -> node id) and ``erasure`` (the final erasure's plan:
    ``rank``, ``shrink``, ``eigenvalues``, ``null_mean``, ``null_quantile``, ``class_shift``,
    ``counts``; None without ``erase``); or ``error`` (what stopped the run)."""
    return cast(dict[str, Any], torch.load(Path(path), weights_only=True))


def _write_result(path: str, result: dict[str, Any]) -> None:
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    torch.save(result, tmp)
    os.replace(tmp, target)  # readers never see a partial file


# ---------------------------------------------------------------------------------- node side
def _int(record: ConfigRecord | MetricRecord, key: str) -> int:
    """An int entry of a record (the peer's message), checked."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"message entry {key!r} must be an int, got {value!r}")
    return value


class _NodeEngine(InProcessEngine):
    """The in-process engine over one client's own data (local id 0), drawing as its user."""

    user: int = -1

    def client_generator(self, round_seed: int, user: int) -> torch.Generator:  # type: ignore[override]
        return InProcessEngine.client_generator(round_seed, self.user)


def _node_user(context: Context, config: FlowerRunConfig) -> int:
    """The node's user, from ``partition-id``; raises unless it names one of the run's users."""
    if "partition-id" not in context.node_config:
        raise ValueError(
            "this SuperNode has no partition-id: start it with --node-config "
            "'partition-id=<user id> data-path=\"<file>.npz\"'"
        )
    user = context.node_config["partition-id"]
    if isinstance(user, bool) or not isinstance(user, int):
        raise ValueError(f"partition-id must be an int user id, got {user!r}")
    if not 0 <= user < config.num_users:
        raise ValueError(
            f"partition-id {user} names no user: the run has num-users={config.num_users} "
            f"(user ids 0..{config.num_users - 1}); start one SuperNode per user with "
            "--node-config 'partition-id=<user id> ...'"
        )
    return user


def _node_items(context: Context, config: FlowerRunConfig, user: int) -> Tensor:
    """The user's training items, from the ``.npz`` at ``node_config["data-path"]``."""
    path = context.node_config.get("data-path")
    if not isinstance(path, str) or not path:
        raise ValueError(
            f'node of user {user}: the node config needs data-path="<file>.npz" (an .npz '
            "whose 'pairs' is an int array [2, E] of (user, item))"
        )
    with np.load(path, allow_pickle=False) as npz:
        if "pairs" not in npz:
            raise ValueError(f"{path} has no 'pairs' array (int [2, E]: user, item)")
        pairs = torch.from_numpy(np.asarray(npz["pairs"])).long()
    if pairs.ndim != 2 or pairs.shape[0] != 2:
        raise ValueError(f"{path}: 'pairs' must be [2, E], got {tuple(pairs.shape)}")
    items = pairs[1][pairs[0] == user]
    if items.numel() == 0:
        raise ValueError(f"node of user {user}: {path} holds no interaction of user {user}")
    if int(items.min()) < 0 or int(items.max()) >= config.num_items:
        raise ValueError(f"{path}: item ids of user {user} outside [0, {config.num_items})")
    return items


def _node_label(context: Context, config: FlowerRunConfig, user: int) -> int:
    """The node's attribute code (node config ``label``; absent or -1: unknown)."""
    label = context.node_config.get("label", -1)
    if isinstance(label, bool) or not isinstance(label, int):
        raise ValueError(f"node of user {user}: label must be an int class code, got {label!r}")
    if label != -1 and not 0 <= label < config.attribute_classes:
        raise ValueError(
            f"node of user {user}: label {label} is not a class of the run's attribute "
            f"(attribute-classes={config.attribute_classes}: codes 0..."
            f"{config.attribute_classes - 1}, or -1 for unknown)"
        )
    return label


def _node_engine(config: FlowerRunConfig, user: int, items: Tensor, label: int = -1) -> _NodeEngine:
    """The engine over a one-user model (the user is local id 0) and the user's own data."""
    data = ClientData.from_pairs(torch.stack([torch.zeros_like(items), items]), 1, config.num_items)
    model, terms = config.build_parts(num_users=1)
    engine = config.build_engine(
        model, data, _NodeEngine, fraction=1.0, terms=terms, labels=torch.tensor([label])
    )
    assert isinstance(engine, _NodeEngine)
    engine.user = user
    return engine


def _initial_private_rows(
    config: FlowerRunConfig, engine: InProcessEngine, user: int
) -> dict[str, Tensor]:
    """Row ``user`` of every per-user table of the seeded full model (the in-process init)."""
    full = config.build_model()
    model_name = {id(p): n for n, p in engine.model.named_parameters()}
    params = dict(engine.objective.named_parameters())
    return {
        n: full.get_parameter(model_name[id(params[n])]).detach()[user].clone()
        for n in engine.private_names
    }


def _query(msg: Message, context: Context) -> Message:
    """Say which user this node is (and check its config and data before any round).

    The reply names the user and its interaction count, never its label."""
    config = FlowerRunConfig.from_user_config(context.run_config)
    user = _node_user(context, config)
    items = _node_items(context, config, user)
    _node_label(context, config, user)
    info = ConfigRecord({"partition-id": user, "num-examples": int(items.numel())})
    return Message(RecordDict({"node": info}), reply_to=msg)


def _load_state(
    msg: Message, context: Context, config: FlowerRunConfig, user: int, engine: InProcessEngine
) -> None:
    """Load the global arrays of ``msg`` and this node's private rows into ``engine``.

    Raises:
        RuntimeError: The node's rows are another user's, or from another round than the
            server's last round for this user (stale or lost state).
        ValueError: Parameter names that differ between server and node.
    """
    order = msg.content.config_records["instruction"]
    if _STATE_PRIVATE in context.state:
        meta = context.state.config_records[_STATE_META]
        if _int(meta, "user") != user:
            raise RuntimeError(f"node state holds user {meta['user']!r}'s rows, not user {user}'s")
        private = dict(context.state.array_records[_STATE_PRIVATE].to_torch_state_dict())
        last_round = _int(meta, "last-round")
    else:
        private, last_round = _initial_private_rows(config, engine, user), -1
    if last_round != _int(order, "last-round"):
        raise RuntimeError(
            f"user {user}: the node's private rows are from round {last_round}, the server's "
            f"last round for this user is {order['last-round']!r} (stale or lost node state)"
        )
    shared = msg.content.array_records["global"].to_torch_state_dict()
    if set(shared) != set(engine.shared_names) or set(private) != set(engine.private_names):
        raise ValueError(
            f"parameter names differ between server and node: got {sorted(shared)} + "
            f"{sorted(private)}, the node's model has {engine.shared_names} + "
            f"{engine.private_names} (same lit_unlearn version and run config everywhere?)"
        )
    params = dict(engine.objective.named_parameters())
    with torch.no_grad():
        for n, value in shared.items():
            params[n].copy_(value)
        for n, row in private.items():
            params[n][0] = row


def _store_private(context: Context, engine: InProcessEngine, user: int, last_round: int) -> None:
    """Keep the node's private rows (row 0 of its one-user tables) in ``context.state``."""
    params = dict(engine.objective.named_parameters())
    context.state[_STATE_PRIVATE] = ArrayRecord(
        {n: params[n][0].detach().clone() for n in engine.private_names}
    )
    context.state[_STATE_META] = ConfigRecord({"user": user, "last-round": last_round})


def _train(msg: Message, context: Context) -> Message:
    """One round of local training of this node's user, exactly as the in-process engine."""
    config = FlowerRunConfig.from_user_config(context.run_config)
    user = _node_user(context, config)
    order = msg.content.config_records["instruction"]
    if _int(order, "user") != user:
        raise ValueError(
            f"train message for user {order['user']!r} reached the node of user {user}"
        )
    round_index, round_seed = _int(order, "round"), _int(order, "round-seed")
    items = _node_items(context, config, user)
    engine = _node_engine(config, user, items, _node_label(context, config, user))
    _load_state(msg, context, config, user, engine)

    engine.round_index = round_index
    update, result = engine.local_updates(torch.tensor([0]), round_seed)

    context.state[_STATE_PRIVATE] = ArrayRecord(
        {n: update.private[n][0, 0].detach() for n in engine.private_names}
    )
    context.state[_STATE_META] = ConfigRecord({"user": user, "last-round": round_index})
    metrics = MetricRecord(
        {"num-examples": int(items.numel()), "loss": result.loss, "steps": int(result.steps[0])}
    )
    deltas = ArrayRecord({n: update.deltas[n][0].detach() for n in engine.shared_names})
    return Message(RecordDict({"deltas": deltas, "metrics": metrics}), reply_to=msg)


# The final erasure (FederatedErasure's steps 1-3) as three exchanges with every node. Each
# node's reply is a summand of a sum the server needs; run these messages under Flower's
# secure aggregation (SecAgg+) in a deployment and the server sees only the sums.
def _erasure_node(
    msg: Message, context: Context
) -> tuple[FlowerRunConfig, int, int, InProcessEngine]:
    """The node's config, user, label and its engine holding the final model's state."""
    config = FlowerRunConfig.from_user_config(context.run_config)
    if not config.erase:
        raise ValueError("an erasure message reached a node of a run without erase = true")
    user = _node_user(context, config)
    order = msg.content.config_records["instruction"]
    if _int(order, "user") != user:
        raise ValueError(
            f"erasure message for user {order['user']!r} reached the node of user {user}"
        )
    label = _node_label(context, config, user)
    engine = _node_engine(config, user, _node_items(context, config, user), label)
    _load_state(msg, context, config, user, engine)
    engine.model.eval()  # the representation as audited (no dropout draw)
    return config, user, label, engine


def _erasure_counts(msg: Message, context: Context) -> Message:
    """Step 2's first half: this node's one-hot class count (zeros without a label)."""
    config, _, label, _ = _erasure_node(msg, context)
    counts = torch.zeros(config.attribute_classes, dtype=torch.float64)
    if label >= 0:
        counts[label] = 1.0
    return Message(RecordDict({"sums": ArrayRecord({"counts": counts})}), reply_to=msg)


def _erasure_sums(msg: Message, context: Context) -> Message:
    """Steps 1-2: this node's class sum, outer product and pseudo-labelled class sums."""
    config, user, label, engine = _erasure_node(msg, context)
    erasure = config.build_erasure()
    with torch.no_grad():
        z = engine.model.user_representation()[:1]
    proportions = torch.from_numpy(msg.content.array_records["erasure"]["proportions"].numpy())
    known = torch.tensor([label]) >= 0  # a node without a label adds zeros
    sums = erasure.contribution(
        z[known],
        torch.tensor([user])[known],
        torch.tensor([label])[known],
        proportions,
        config.attribute_classes,
    )
    return Message(RecordDict({"sums": _sums_record(sums)}), reply_to=msg)


def _erasure_apply(msg: Message, context: Context) -> Message:
    """Step 3: add this node's class shift to its private rows (kept in ``context.state``)."""
    _, user, label, engine = _erasure_node(msg, context)
    shift = torch.from_numpy(msg.content.array_records["erasure"]["class-shift"].numpy())
    if label >= 0:
        apply_user_shift(engine.model, shift[label][None])
    _store_private(
        context, engine, user, _int(msg.content.config_records["instruction"], "last-round")
    )
    return Message(RecordDict({"done": ConfigRecord({"user": user})}), reply_to=msg)


def _sums_record(sums: ErasureSums) -> ArrayRecord:
    arrays = {
        "counts": sums.real.counts,
        "sums": sums.real.sums,
        "outer": sums.real.outer,
        "null-counts": sums.null_counts,
        "null-sums": sums.null_sums,
    }
    if sums.folds is not None:
        arrays.update(
            {
                "fold-counts": sums.folds.counts,
                "fold-sums": sums.folds.sums,
                "fold-outer": sums.folds.outer,
            }
        )
    return ArrayRecord(arrays)


def _record_sums(record: ArrayRecord) -> ErasureSums:
    t = {k: torch.from_numpy(record[k].numpy()) for k in record}
    folds = (
        ClassStatistics(t["fold-counts"], t["fold-sums"], t["fold-outer"])
        if "fold-counts" in t
        else None
    )
    return ErasureSums(
        ClassStatistics(t["counts"], t["sums"], t["outer"]),
        t["null-counts"],
        t["null-sums"],
        folds,
    )


client_app = ClientApp()
client_app.query()(_query)
client_app.train()(_train)
client_app.query("erasure_counts")(_erasure_counts)
client_app.query("erasure_sums")(_erasure_sums)
client_app.query("erasure_apply")(_erasure_apply)


# ---------------------------------------------------------------------------------- server side
def _exchange(grid: Grid, messages: list[Message], timeout: float, what: str) -> list[Message]:
    """Push ``messages``, pull every reply (polling), raise on an error reply or a timeout."""
    dst = {}
    ids = list(grid.push_messages(messages))
    for msg_id, msg in zip(ids, messages, strict=True):
        if not msg_id:
            raise RuntimeError(
                f"{what}: the SuperLink refused the message to node {msg.metadata.dst_node_id}"
            )
        dst[msg_id] = msg.metadata.dst_node_id
    pending, replies = set(ids), []
    deadline = time.monotonic() + timeout
    while pending:
        for reply in grid.pull_messages(sorted(pending)):
            if reply.has_error():
                node = dst.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
                raise RuntimeError(f"{what}: node {node} failed: {reply.error.reason}")
            pending.discard(reply.metadata.reply_to_message_id)
            replies.append(reply)
        if pending and time.monotonic() > deadline:
            late = sorted(dst[i] for i in pending)
            raise TimeoutError(f"{what}: no reply from node(s) {late} within {timeout:g} s")
        if pending:
            time.sleep(0.05)
    return replies


def _discover(grid: Grid, config: FlowerRunConfig) -> dict[int, int]:
    """Map every user to its node: query each node as it connects, until all users have one."""
    nodes: dict[int, int] = {}
    asked: set[int] = set()
    deadline = time.monotonic() + config.node_timeout
    while len(nodes) < config.num_users:
        new = sorted(set(grid.get_node_ids()) - asked)
        if new:
            asked.update(new)
            queries = [
                Message(
                    RecordDict(),
                    dst_node_id=node,
                    message_type=MessageType.QUERY,
                    group_id="discover",
                    ttl=config.node_timeout,
                )
                for node in new
            ]
            for reply in _exchange(grid, queries, config.node_timeout, "node discovery"):
                user = _int(reply.content.config_records["node"], "partition-id")
                node = reply.metadata.src_node_id
                if user in nodes:
                    raise RuntimeError(
                        f"node discovery: nodes {nodes[user]} and {node} both have "
                        f"partition-id {user}: start one SuperNode per user"
                    )
                nodes[user] = node
            continue
        if time.monotonic() > deadline:
            missing = sorted(set(range(config.num_users)) - set(nodes))
            raise TimeoutError(
                f"node discovery: no SuperNode for user(s) {missing[:10]} after "
                f"{config.node_timeout:g} s "
                f"({len(nodes)} of {config.num_users} users have one): start one per user "
                "with --node-config 'partition-id=<user id> data-path=\"<file>.npz\"'"
            )
        time.sleep(0.2)
    return nodes


def _serve(grid: Grid, config: FlowerRunConfig) -> dict[str, Any]:
    """The rounds; returns what :func:`load_result` reads."""
    num_users = config.num_users
    # The server holds no interaction. A placeholder of one item per user lets it reuse the
    # engine's sampling (plan_round) and its split of the parameters into shared / private;
    # FedAvg's weights come from the nodes' replies, never from this placeholder.
    placeholder = ClientData(
        indptr=torch.arange(num_users + 1),
        items=torch.zeros(num_users, dtype=torch.long),
        num_items=config.num_items,
    )
    model, terms = config.build_parts()
    engine = config.build_engine(model, placeholder, terms=terms)  # no labels: the nodes hold them
    params = dict(engine.objective.named_parameters())
    started = time.perf_counter()
    nodes = _discover(grid, config)
    setup_seconds = time.perf_counter() - started
    last_round = dict.fromkeys(range(num_users), -1)
    clients_per_round: list[list[int]] = []
    round_seconds: list[float] = []
    losses: list[float] = []
    for r in range(config.num_rounds):
        t0 = time.perf_counter()
        clients, round_seed = engine.plan_round()
        users = clients.tolist()
        start = {n: params[n].detach().clone() for n in engine.shared_names}
        global_arrays = ArrayRecord(start)
        messages = []
        for u in users:
            order = ConfigRecord(
                {"user": u, "round": r, "round-seed": round_seed, "last-round": last_round[u]}
            )
            content = RecordDict({"global": global_arrays, "instruction": order})
            messages.append(
                Message(
                    content,
                    dst_node_id=nodes[u],
                    message_type=MessageType.TRAIN,
                    group_id=str(r),
                    ttl=config.round_timeout,
                )
            )
        by_node = {
            m.metadata.src_node_id: m
            for m in _exchange(grid, messages, config.round_timeout, f"round {r}")
        }
        replies = [by_node[nodes[u]] for u in users]
        deltas = {
            n: torch.stack(
                [torch.from_numpy(m.content.array_records["deltas"][n].numpy()) for m in replies]
            )
            for n in engine.shared_names
        }
        metrics = [m.content.metric_records["metrics"] for m in replies]
        counts = torch.tensor([_int(m, "num-examples") for m in metrics])
        new_global = engine.aggregator(start, deltas, counts)
        with torch.no_grad():
            for n in engine.shared_names:
                params[n].copy_(new_global[n])
        for u in users:
            last_round[u] = r
        engine.round_index += 1
        clients_per_round.append(users)
        steps = [_int(m, "steps") for m in metrics]
        total = sum(float(cast(float, m["loss"])) * s for m, s in zip(metrics, steps, strict=True))
        losses.append(total / max(sum(steps), 1))
        round_seconds.append(time.perf_counter() - t0)
    erasure = _erase(grid, config, engine, nodes, last_round) if config.erase else None
    return {
        "erasure": erasure,
        "shared": {n: params[n].detach().clone() for n in engine.shared_names},
        "clients": clients_per_round,
        "round_seconds": round_seconds,
        "loss": losses,
        "setup_seconds": setup_seconds,
        "nodes": {u: int(n) for u, n in nodes.items()},
    }


def _erase(
    grid: Grid,
    config: FlowerRunConfig,
    engine: InProcessEngine,
    nodes: dict[int, int],
    last_round: dict[int, int],
) -> dict[str, Any]:
    """The final erasure over every node: counts, sums, then each node's class shift.

    The server forms only sums of the nodes' replies (:class:`~.erasure.FederatedErasure`'s
    protocol) and returns what it computed: the plan, never a node's row or label.
    """
    erasure = config.build_erasure()
    params = dict(engine.objective.named_parameters())
    global_arrays = ArrayRecord({n: params[n].detach().clone() for n in engine.shared_names})

    def exchange(action: str, extra: dict[str, Tensor]) -> list[Message]:
        messages = []
        for u, node in sorted(nodes.items()):
            content = RecordDict(
                {
                    "global": global_arrays,
                    "instruction": ConfigRecord({"user": u, "last-round": last_round[u]}),
                    "erasure": ArrayRecord(extra),
                }
            )
            messages.append(
                Message(
                    content,
                    dst_node_id=node,
                    message_type=f"{MessageType.QUERY}.{action}",
                    group_id=action,
                    ttl=config.round_timeout,
                )
            )
        return _exchange(grid, messages, config.round_timeout, f"erasure ({action})")

    counts = sum(
        (
            torch.from_numpy(m.content.array_records["sums"]["counts"].numpy())
            for m in exchange("erasure_counts", {})
        ),
        torch.zeros(config.attribute_classes, dtype=torch.float64),
    )
    if not counts.sum() > 0:
        raise RuntimeError("erasure: no node holds a label (node config label=<class code>)")
    replies = exchange("erasure_sums", {"proportions": counts / counts.sum()})
    total = _record_sums(replies[0].content.array_records["sums"])
    for m in replies[1:]:
        total = total + _record_sums(m.content.array_records["sums"])
    plan: ErasurePlan = erasure.plan_from_sums(total)
    exchange("erasure_apply", {"class-shift": plan.class_shift})
    return {
        "rank": plan.rank,
        "shrink": plan.shrink,
        "eigenvalues": plan.eigenvalues,
        "null_mean": plan.null_mean,
        "null_quantile": plan.null_quantile,
        "class_shift": plan.class_shift,
        "counts": plan.counts,
        "ridge": plan.ridge,
    }


server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    """Run the rounds; write the result (or the error) to ``output-path``."""
    config = FlowerRunConfig.from_user_config(context.run_config)
    try:
        result = _serve(grid, config)
    except Exception as err:
        _write_result(config.output_path, {"error": f"{type(err).__name__}: {err}"})
        raise
    _write_result(config.output_path, result)
