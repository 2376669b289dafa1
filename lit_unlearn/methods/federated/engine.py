"""The in-process research engine: a round's sampled clients trained as one batch, exactly.

A round (FedAU2 Sec. 3.1 / App. A.3, FedAvg): sample a fraction of the users (seeded); every
sampled client starts from the same global shared state and its own private rows, runs
``local_epochs`` passes over its own examples in minibatches with its own optimiser state,
and uploads the change of the shared parameters; the server aggregates the uploads
(:class:`~.strategy.Aggregator`), and the clients keep their private rows. Unsampled clients
are untouched.

The clients of a round are independent given the global state, so they run together: each
shared parameter gets a per-client copy ``[C, *shape]``, each per-user table the client's own
row ``[C, 1, *shape]``, and one ``torch.func.vmap`` of ``grad`` over the clients computes every
client's minibatch gradient at once (clients with fewer minibatches drop out of later steps).
Nothing is averaged before the upload, so the result equals a loop over clients one by one
(tested), only faster.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from lit_unlearn.methods.federated.clients import ClientData
from lit_unlearn.methods.federated.objectives import ClientTerm, LocalLoss, shuffle_rows
from lit_unlearn.methods.federated.strategy import Aggregator, FedAvg
from lit_unlearn.models.base import Recommender

__all__ = ["ClientTransform", "ClientUpdate", "InProcessEngine", "RoundResult", "UploadHook"]


@dataclass(frozen=True)
class RoundResult:
    """What one round did.

    Attributes:
        round_index: The round's index (0-based).
        clients: Sampled user ids ``[C]`` (sorted).
        loss: Mean local loss over the clients' minibatch steps.
        steps: Local minibatch steps per client ``[C]``.
    """

    round_index: int
    clients: Tensor
    loss: float
    steps: Tensor


@dataclass(frozen=True)
class ClientUpdate:
    """The round's uploads, as an honest-but-curious server sees them.

    Attributes:
        round_index: The round.
        clients: User ids ``[C]``.
        start: The global shared parameters the clients started from (name -> tensor).
        deltas: Each client's upload ``theta_c - theta`` (name -> ``[C, *shape]``).
        lr: Each shared parameter's client learning rate.
        optimizer: Each shared parameter's client optimiser; for ``sgd``, ``-delta / lr`` is
            the sum of the local steps' gradients (what a gradient attack reads).
        private: The clients' new private rows (name -> ``[C, 1, *row]``); these stay on the
            clients, the server never sees them.
    """

    round_index: int
    clients: Tensor
    start: dict[str, Tensor]
    deltas: dict[str, Tensor]
    lr: dict[str, float]
    optimizer: dict[str, str]
    private: dict[str, Tensor]


UploadHook = Callable[[ClientUpdate], None]


class ClientTransform(ABC):
    """A client-side change of what each client keeps and uploads after its local training.

    Runs on the clients, before anything leaves them (local differential privacy: APM's
    perturbation of the parameters). It must treat clients independently and draw any noise
    from ``generators[c]``: client ``c``'s own transform stream of the round, seeded by the
    round and the client only (not the examples' stream, whose position depends on how far the
    round's batch was padded), so a Flower node draws the same as the in-process engine.
    """

    @abstractmethod
    def __call__(self, update: ClientUpdate, generators: list[torch.Generator]) -> ClientUpdate:
        """The changed update (``deltas`` uploaded, ``private`` kept by the clients)."""


class _ClientObjective(nn.Module):
    """One client's loss: the local recommendation loss plus every extra term."""

    def __init__(self, model: Recommender, local_loss: LocalLoss, terms: list[ClientTerm]):
        super().__init__()
        self.model = model
        self.terms = nn.ModuleList(terms)
        self.local_loss = local_loss

    def forward(self, batch: dict[str, Tensor], mask: Tensor, label: Tensor) -> Tensor:
        loss = self.local_loss.loss(self.model, batch, mask)
        for term in self.terms:
            loss = loss + term(self.model, self.local_loss, batch, label)
        return loss


class InProcessEngine:
    """User-level federated training of a backbone, a round at a time, in one process.

    Args:
        model: The backbone; its :meth:`~Recommender.per_user_parameters` stay on the clients,
            every other parameter is shared. Updated in place.
        local_loss: The client's recommendation objective.
        data: Every client's training positives.
        labels: Attribute code per user ``[U]`` (``-1`` unknown), passed to the extra terms.
        terms: Extra local terms with shared parameters (e.g. FedAU2's adversary).
        fraction: Share of users sampled per round (FedAU2: 10%).
        local_epochs: Passes over its data per sampled client (FedAU2: 1).
        local_batch_size: Examples per local minibatch (None: the client's whole data, one
            step per local epoch).
        lr: The clients' learning rate.
        optimizer: ``sgd`` or ``adam``; Adam's moments belong to the client and live for its
            local training of the round (as a client that builds its optimiser per round).
        aggregator: Server strategy (default FedAvg weighted by interactions).
        seed: Seed of client sampling, negatives, shuffling and any randomness in the losses.
        transforms: Client-side changes of each client's result before it uploads (APM's
            parameter perturbation), in order.
        private_lr: Learning rate of the client's private rows (its user embedding; None:
            ``lr``). The two sides see different gradients: a private row is trained only
            when its client is sampled, a shared item row by every client that touches it.
        private_optimizer: Optimiser of the private rows (None: ``optimizer``). FedNCF on
            ML-100K learns best with SGD on the shared side and Adam on the private rows
            (docs/federated.md, "Client optimisers").

    Raises:
        ValueError: Bad hyperparameters, a fraction that selects no client, a client with no
            training interaction, or a loss that cannot train the backbone.
    """

    def __init__(
        self,
        model: Recommender,
        local_loss: LocalLoss,
        data: ClientData,
        labels: Tensor | None = None,
        terms: list[ClientTerm] | None = None,
        fraction: float = 0.1,
        local_epochs: int = 1,
        local_batch_size: int | None = None,
        lr: float = 0.1,
        optimizer: Literal["sgd", "adam"] = "sgd",
        aggregator: Aggregator | None = None,
        seed: int = 0,
        transforms: list[ClientTransform] | None = None,
        private_lr: float | None = None,
        private_optimizer: Literal["sgd", "adam"] | None = None,
    ) -> None:
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        for name, value in (("local_epochs", local_epochs), ("local_batch_size", local_batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):  # fmt: skip
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name, rate in (("lr", lr), ("private_lr", private_lr)):
            if rate is not None and not (math.isfinite(rate) and rate > 0):
                raise ValueError(f"{name} must be a finite float > 0, got {rate!r}")
        for name, choice in (("optimizer", optimizer), ("private_optimizer", private_optimizer)):
            if choice is not None and choice not in ("sgd", "adam"):
                raise ValueError(f"{name} must be 'sgd' or 'adam', got {choice!r}")
        if data.num_users != model.num_users or data.num_items != model.num_items:
            raise ValueError(
                f"client data has {data.num_users} users x {data.num_items} items, the model "
                f"{model.num_users} x {model.num_items}"
            )
        empty = (data.counts == 0).nonzero().flatten()
        if empty.numel():
            raise ValueError(
                f"{empty.numel()} client(s) have no training interaction (e.g. user index "
                f"{empty[:5].tolist()}): filter them out (user_k >= 2 with leave-one-out)"
            )
        self.num_sampled = round(fraction * data.num_users)
        if self.num_sampled < 1:
            raise ValueError(
                f"fraction {fraction} of {data.num_users} users samples no client per round"
            )
        local_loss.check_model(model)
        self.model = model
        self.local_loss = local_loss
        self.data = data
        self.labels = (
            labels.long().cpu() if labels is not None else torch.full((data.num_users,), -1)
        )
        if self.labels.shape != (data.num_users,):
            raise ValueError(f"labels must be [{data.num_users}], got {tuple(self.labels.shape)}")
        self.objective = _ClientObjective(model, local_loss, list(terms or []))
        for term in self.objective.terms:
            assert isinstance(term, ClientTerm)
            term.observe_labels(self.labels)
        self.fraction = float(fraction)
        self.local_epochs = local_epochs
        self.local_batch_size = local_batch_size
        self.lr = float(lr)
        self.optimizer = optimizer
        self.private_lr = self.lr if private_lr is None else float(private_lr)
        self.private_optimizer: str = optimizer if private_optimizer is None else private_optimizer
        self.aggregator = aggregator if aggregator is not None else FedAvg()
        self.seed = seed
        self.transforms = list(transforms or [])
        self.round_index = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.upload_hooks: list[UploadHook] = []
        private = {id(p) for p in model.per_user_parameters()}
        named = [(n, p) for n, p in self.objective.named_parameters() if p.requires_grad]
        self.private_names = [n for n, p in named if id(p) in private]
        self.shared_names = [n for n, p in named if id(p) not in private]
        self._params = dict(named)
        # Each parameter's (optimiser, lr): the clients' by default; a term may train its own
        # parameters with its own (FedAU2: the adversary has its own learning rate).
        self.param_optim: dict[str, tuple[str, float]] = {}
        for n in self._params:
            opt: str = self.private_optimizer if n in self.private_names else self.optimizer
            rate = self.private_lr if n in self.private_names else self.lr
            for k, term in enumerate(self.objective.terms):
                assert isinstance(term, ClientTerm)
                if n.startswith(f"terms.{k}.") and term.lr is not None:
                    opt, rate = term.optimizer, float(term.lr)
            self.param_optim[n] = (opt, rate)
        self._grad = vmap(
            grad_and_value(self._client_loss), in_dims=(0, 0, 0, 0), randomness="different"
        )
        # The first local step of a round: every client starts from the same global state, so
        # the shared parameters go in once (in_dims None) instead of as C copies; the copies
        # appear with the first update. This halves a round's memory traffic when clients take
        # one step (FedVAE: one example per client and round).
        first_dims = {n: (None if n in self.shared_names else 0) for n in self._params}
        self._grad_first = vmap(
            grad_and_value(self._client_loss),
            in_dims=(first_dims, 0, 0, 0),
            randomness="different",
        )

    # ------------------------------------------------------------------ one client's loss
    def _client_loss(
        self, params: dict[str, Tensor], batch: dict[str, Tensor], mask: Tensor, label: Tensor
    ) -> Tensor:
        return functional_call(self.objective, params, (batch, mask, label), strict=False)

    # ------------------------------------------------------------------ sampling
    def plan_round(self) -> tuple[Tensor, int]:
        """The next round's clients (``round(fraction * U)`` users without replacement, sorted)
        and its seed; advances the server's generator."""
        perm = torch.randperm(self.data.num_users, generator=self.generator)
        round_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        return perm[: self.num_sampled].sort().values, round_seed

    @staticmethod
    def client_generator(round_seed: int, user: int) -> torch.Generator:
        """The generator of ``user``'s draws in the round with seed ``round_seed``."""
        return torch.Generator().manual_seed((round_seed * 1_000_003 + user) % (2**63 - 1))

    # ------------------------------------------------------------------ a round
    def run_round(self, clients: Tensor | None = None) -> RoundResult:
        """Run one round (sampling its clients unless given) and update the model in place.

        Raises:
            FloatingPointError: A client's local loss is not finite (nothing is aggregated).
        """
        planned, round_seed = self.plan_round()
        clients = (planned if clients is None else clients).long().cpu()
        update, result = self.local_updates(clients, round_seed)
        self.apply(update)
        self.round_index += 1
        return result

    def local_updates(self, clients: Tensor, round_seed: int) -> tuple[ClientUpdate, RoundResult]:
        """Every client's local training from the current global state; changes nothing.

        Returns:
            The uploads (with the clients' new private rows in ``private``) and the round's
            statistics.
        """
        clients = clients.long().cpu()
        self.local_loss.start_round(self.round_index)
        for term in self.objective.terms:
            assert isinstance(term, ClientTerm)
            term.start_round(self.round_index)
        generators = [self.client_generator(round_seed, u) for u in clients.tolist()]
        examples = self.local_loss.examples(self.data, clients, generators)
        # Randomness inside the losses (dropout, reparameterisation, noisy heads) comes from the
        # global RNG seeded with the round's seed, so a resumed run draws the same.
        device = next(iter(self._params.values())).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(round_seed)
            update, result = self._train_clients(
                clients, examples.columns, examples.mask, generators, device
            )
        # The client-side transforms draw from a second stream of each client's own (seeded by
        # the round and the client only), never from the round's shared RNG, and not from the
        # examples' stream: how far that one advances depends on the padding of the round's
        # batch, i.e. on the other clients (a Flower node pads nothing).
        if self.transforms:
            noise = [
                self.client_generator(_transform_seed(round_seed), u) for u in clients.tolist()
            ]
            for transform in self.transforms:
                update = transform(update, noise)
        return update, result

    def apply(self, update: ClientUpdate) -> None:
        """Aggregate the uploads into the global model, store the private rows, run hooks."""
        counts = self.data.counts[update.clients].to(
            next(iter(update.start.values())).device if update.start else "cpu"
        )
        new_global = self.aggregator(update.start, update.deltas, counts)
        cl = update.clients
        with torch.no_grad():
            for n in self.shared_names:
                self._params[n].copy_(new_global[n])
            for n in self.private_names:
                self._params[n][cl.to(self._params[n].device)] = update.private[n][:, 0]
        for hook in self.upload_hooks:
            hook(update)

    def _train_clients(
        self,
        clients: Tensor,
        columns: dict[str, Tensor],
        mask: Tensor,
        generators: list[torch.Generator],
        device: torch.device,
    ) -> tuple[ClientUpdate, RoundResult]:
        num = clients.numel()
        cl_dev = clients.to(device)
        start = {n: self._params[n].detach().clone() for n in self.shared_names}
        # Until the first update the shared parameters are the global ones for every client:
        # kept unbatched, ``[1, *shape]`` (see ``_grad_first``).
        params: dict[str, Tensor] = {n: start[n].unsqueeze(0) for n in self.shared_names}
        for n in self.private_names:
            params[n] = self._params[n].detach()[cl_dev].unsqueeze(1).clone()
        # Adam's moments start at zero; they are created by the first step (m = (1 - b1) g).
        moments: dict[str, tuple[Tensor, Tensor]] = {}
        adam_names = {n for n in params if self.param_optim[n][0] == "adam"}
        adam_t = torch.zeros(num, dtype=torch.long, device=device)
        labels = self.labels[clients].to(device)
        columns = {k: v.to(device) for k, v in columns.items()}
        mask = mask.to(device)
        lengths = mask.sum(dim=1)
        size = self.local_batch_size if self.local_loss.batched else None
        batch = int(lengths.max()) if size is None else size
        steps = torch.where(lengths > 0, (lengths + batch - 1) // max(batch, 1), 0)
        total_loss, total_steps = 0.0, 0
        for epoch in range(self.local_epochs):
            if epoch > 0 and self.local_loss.batched:
                order = shuffle_rows(mask, generators)
                columns = {k: v.gather(1, _expand_like(order, v)) for k, v in columns.items()}
                mask = mask.gather(1, order)
            for s in range(int(steps.max())):
                first = epoch == 0 and s == 0
                active = (steps > s).nonzero().flatten()
                every = active.numel() == num
                sub = params if every else {n: p[active] for n, p in params.items()}
                lo, hi = s * batch, (s + 1) * batch
                b = {k: (v if every else v[active])[:, lo:hi] for k, v in columns.items()}
                m = (mask if every else mask[active])[:, lo:hi]
                if first:
                    # Every client has >= 1 example, so all are active at the first step.
                    assert every
                    # Keys in _grad_first's in_dims order (vmap pairs dict leaves by order).
                    unbatched = {
                        n: sub[n][0] if n in self.shared_names else sub[n] for n in self._params
                    }
                    grads, losses = self._grad_first(unbatched, b, m, labels)
                else:
                    grads, losses = self._grad(sub, b, m, labels if every else labels[active])
                if not bool(torch.isfinite(losses).all()):
                    bad = (~torch.isfinite(losses)).nonzero().flatten()
                    ids = clients[active.cpu()[bad.cpu()]].tolist()
                    raise FloatingPointError(
                        f"round {self.round_index}, local step {s}: non-finite local loss for "
                        f"client(s) {ids[:5]}: lower the learning rate or check the data"
                    )
                total_loss += float(losses.sum())
                total_steps += int(losses.numel())
                if adam_names:
                    adam_t[active] += 1
                    adam_grads = {n: g for n, g in grads.items() if n in adam_names}
                    new = self._adam(sub, adam_grads, moments, active, every, adam_t[active])
                    for n, value in new.items():
                        if every:
                            params[n] = value
                        else:
                            params[n][active] = value
                for n, g in grads.items():
                    if n in adam_names:
                        continue
                    # SGD in place: the per-client tables are the round's largest tensors.
                    rate = self.param_optim[n][1]
                    if first and n in self.shared_names:
                        params[n] = torch.add(params[n], g, alpha=-rate)  # [1, ...] -> [C, ...]
                    elif every:
                        params[n].add_(g, alpha=-rate)
                    else:
                        params[n].index_add_(0, active, g, alpha=-rate)
        deltas = {n: params[n] - start[n].unsqueeze(0) for n in self.shared_names}
        private = {n: params[n] for n in self.private_names}
        lrs = {n: self.param_optim[n][1] for n in self.shared_names}
        optims = {n: self.param_optim[n][0] for n in self.shared_names}
        update = ClientUpdate(self.round_index, clients, start, deltas, lrs, optims, private)
        return update, RoundResult(
            round_index=self.round_index,
            clients=clients,
            loss=total_loss / max(total_steps, 1),
            steps=steps.cpu() * self.local_epochs,
        )

    def _adam(
        self,
        sub: dict[str, Tensor],
        grads: dict[str, Tensor],
        moments: dict[str, tuple[Tensor, Tensor]],
        active: Tensor,
        every: bool,
        t: Tensor,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> dict[str, Tensor]:
        b1, b2 = betas
        out = {}
        for n, g in grads.items():
            if n not in moments:
                # First step: the moments were zero, m = (1 - b1) g and v = (1 - b2) g^2.
                m = g * (1 - b1)
                v = g.square().mul_(1 - b2)
                moments[n] = (m, v)
            elif every:
                m, v = moments[n]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
            else:
                m_all, v_all = moments[n]
                m = m_all[active].mul_(b1).add_(g, alpha=1 - b1)
                v = v_all[active].mul_(b2).addcmul_(g, g, value=1 - b2)
                m_all[active], v_all[active] = m, v
            shape = (-1,) + (1,) * (g.ndim - 1)
            c1 = (1 - b1 ** t.to(g.dtype)).view(shape)
            c2 = (1 - b2 ** t.to(g.dtype)).view(shape)
            rate = self.param_optim[n][1]
            # In place on temporaries: the per-client item tables are the round's largest
            # tensors, and Adam's arithmetic over them was most of a round's time.
            step = (m / c1).div_((v / c2).sqrt_().add_(eps)).mul_(rate)
            out[n] = sub[n] - step
        return out

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Round counter, sampling RNG and the server strategy's state (FedAdam's moments).

        The parameters live in the model's state dict.
        """
        return {
            "round_index": self.round_index,
            "generator": self.generator.get_state(),
            "aggregator": self.aggregator.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a resumed run then samples as the uninterrupted one).

        A checkpoint written before the strategy's state was saved has no ``aggregator`` key;
        a stateless strategy resumes from it as before, a stateful one from fresh moments.
        """
        self.aggregator.load_state_dict(state.get("aggregator", {}))
        self.round_index = int(state["round_index"])
        self.generator.set_state(state["generator"])


def _transform_seed(round_seed: int) -> int:
    """The seed of the clients' transform streams in a round (distinct from the examples')."""
    return (round_seed * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % (2**62)


def _expand_like(order: Tensor, value: Tensor) -> Tensor:
    """``order [C, L]`` broadcast to ``value [C, L, ...]`` for ``gather`` along dim 1."""
    return order.view(*order.shape, *([1] * (value.ndim - 2))).expand_as(value)
