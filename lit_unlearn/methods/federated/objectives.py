"""A client's local objective: its recommendation loss plus pluggable extra terms.

Everything here is written for *one* client and evaluated by the engine under
``torch.func.functional_call`` + ``vmap`` over the round's sampled clients: the backbone's
per-user tables then hold a single row (the client's own, id 0) and the shared parameters are
the client's local copy. A loss therefore addresses its user as id 0.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_unlearn.methods.federated.clients import ClientData, PaddedExamples
from lit_unlearn.models.base import Recommender
from lit_unlearn.models.fedrap import FedRAP
from lit_unlearn.models.multvae import MultVAE

__all__ = ["ClientTerm", "LocalLoss", "MultinomialELBO", "PointwiseBCE", "shuffle_rows"]


def shuffle_rows(mask: Tensor, generators: list[torch.Generator]) -> Tensor:
    """A per-row permutation ``[C, L]`` that puts each row's real entries first, shuffled.

    Row ``c`` is shuffled with ``generators[c]`` (the client's own), so a client's order does
    not depend on which other clients share its round.
    """
    length = mask.shape[1]
    keys = torch.stack([torch.rand(length, generator=g) for g in generators])
    keys = torch.where(mask.cpu(), keys, torch.full_like(keys, 2.0)).to(mask.device)
    return torch.argsort(keys, dim=1)  # padding (key 2) sorts last


def _pad(items: list[Tensor], labels: list[Tensor]) -> PaddedExamples:
    """Stack per-client example vectors into ``[C, L]`` columns with a mask."""
    length = max((t.numel() for t in items), default=0)
    c = len(items)
    item_out = torch.zeros(c, length, dtype=torch.long)
    label_out = torch.zeros(c, length)
    mask = torch.zeros(c, length, dtype=torch.bool)
    for row, (it, lab) in enumerate(zip(items, labels, strict=True)):
        item_out[row, : it.numel()] = it
        label_out[row, : lab.numel()] = lab
        mask[row, : it.numel()] = True
    return PaddedExamples(columns={"item": item_out, "label": label_out}, mask=mask)


class LocalLoss(ABC):
    """A client's recommendation objective on its own data (FedAU2 Eq. 1, per user)."""

    #: Whether examples are reshuffled into minibatches (False: one example per client).
    batched: bool = True

    def start_round(self, round_index: int) -> None:  # noqa: B027 (optional hook)
        """Called before each round (schedules such as KL annealing)."""

    @abstractmethod
    def check_model(self, model: Recommender) -> None:
        """Raise ``ValueError`` if the loss cannot train ``model``."""

    @abstractmethod
    def examples(
        self, data: ClientData, clients: Tensor, generators: list[torch.Generator]
    ) -> PaddedExamples:
        """This round's training examples of ``clients``, shuffled, ``[C, L, ...]``.

        Client ``c`` draws its examples with ``generators[c]`` only (one generator per client
        and round), so the in-process engine and a Flower node draw the same.
        """

    @abstractmethod
    def loss(self, model: Recommender, batch: dict[str, Tensor], mask: Tensor) -> Tensor:
        """Scalar loss of one client's minibatch (``[B, ...]`` columns, ``mask [B]``)."""

    @abstractmethod
    def representation(self, model: Recommender, batch: dict[str, Tensor]) -> Tensor:
        """The client's user representation ``[r]`` (what its attackers and adversary read)."""


class PointwiseBCE(LocalLoss):
    """Binary cross-entropy on the client's positives and sampled negatives.

    FedNCF's loss (Perifanis & Efraimidis 2022; NCF's log loss, He et al. 2017) and FedRAP's
    (with :meth:`FedRAP.regularizer` added). Negatives are drawn uniformly per positive each
    round from the items the client has not interacted with (its own data: the client knows
    its history), so the round's examples are ``n_u * (1 + num_negatives)``.

    Args:
        num_negatives: Negatives per positive (FedAU2 leaves it open; NCF's 4).
    """

    def __init__(self, num_negatives: int = 4) -> None:
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int):
            raise ValueError(f"num_negatives must be an int >= 1, got {num_negatives!r}")
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives = num_negatives

    def check_model(self, model: Recommender) -> None:
        if isinstance(model, MultVAE):
            raise ValueError(
                "PointwiseBCE scores (user, item) pairs; MultVAE needs MultinomialELBO"
            )

    def examples(
        self, data: ClientData, clients: Tensor, generators: list[torch.Generator]
    ) -> PaddedExamples:
        # Client by client with its own generator and its own length, so what a client draws
        # never depends on the other clients of its round (the Flower engine draws the same).
        k = self.num_negatives
        items_list, labels_list = [], []
        for user, g in zip(clients.tolist(), generators, strict=True):
            pos = data.items[data.indptr[user] : data.indptr[user + 1]]
            n = pos.numel()
            neg = torch.randint(0, data.num_items, (n * k,), generator=g)
            redraw = torch.randint(0, data.num_items, (n * k,), generator=g)
            seen = torch.zeros(data.num_items, dtype=torch.bool)
            seen[pos] = True
            # One redraw of negatives that are the client's positives (as the centralised
            # task); the rare second collision is kept.
            neg = torch.where(seen[neg], redraw, neg)
            order = torch.randperm(n * (1 + k), generator=g)
            items_list.append(torch.cat([pos, neg])[order])
            labels_list.append(torch.cat([torch.ones(n), torch.zeros(n * k)])[order])
        return _pad(items_list, labels_list)

    def loss(self, model: Recommender, batch: dict[str, Tensor], mask: Tensor) -> Tensor:
        items = batch["item"]
        users = torch.zeros_like(items)
        logits = model(users, items)
        per = F.binary_cross_entropy_with_logits(logits, batch["label"], reduction="none")
        weight = mask.to(per.dtype)
        loss = (per * weight).sum() / weight.sum().clamp_min(1.0)
        if isinstance(model, FedRAP):
            loss = loss + model.regularizer(users, items, weight)
        return loss

    def representation(self, model: Recommender, batch: dict[str, Tensor]) -> Tensor:
        return model.user_representation()[0]


class MultinomialELBO(LocalLoss):
    """Mult-VAE's loss on the client's interaction row: ``nll + beta_t * KL`` (FedVAE).

    Polato's FedVAE (2021) trains Mult-VAE with each client holding its row ``x_u``; one
    example per client per local epoch. ``beta`` is annealed linearly from 0 to its value over
    ``anneal_rounds`` (Mult-VAE's KL annealing, here per round; 0 = constant ``beta``).

    Args:
        beta: Final KL weight (Mult-VAE: 0.2).
        anneal_rounds: Rounds over which ``beta`` grows from 0 (0: no annealing).
    """

    batched = False

    def __init__(self, beta: float = 0.2, anneal_rounds: int = 0) -> None:
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite float >= 0, got {beta!r}")
        if isinstance(anneal_rounds, bool) or not isinstance(anneal_rounds, int):
            raise ValueError(f"anneal_rounds must be an int >= 0, got {anneal_rounds!r}")
        if anneal_rounds < 0:
            raise ValueError(f"anneal_rounds must be >= 0, got {anneal_rounds}")
        self.beta = float(beta)
        self.anneal_rounds = anneal_rounds
        self.current_beta = self.beta if anneal_rounds == 0 else 0.0

    def start_round(self, round_index: int) -> None:
        if self.anneal_rounds:
            self.current_beta = self.beta * min(1.0, round_index / self.anneal_rounds)

    def check_model(self, model: Recommender) -> None:
        if not isinstance(model, MultVAE):
            raise ValueError(f"MultinomialELBO trains a MultVAE, got {type(model).__name__}")

    def examples(
        self, data: ClientData, clients: Tensor, generators: list[torch.Generator]
    ) -> PaddedExamples:
        rows = data.rows(clients).unsqueeze(1)  # [C, 1, I]
        return PaddedExamples(
            columns={"row": rows}, mask=torch.ones(rows.shape[0], 1, dtype=torch.bool)
        )

    def loss(self, model: Recommender, batch: dict[str, Tensor], mask: Tensor) -> Tensor:
        assert isinstance(model, MultVAE)
        nll, kl, _ = model.elbo_terms(batch["row"])
        return ((nll + self.current_beta * kl) * mask.to(nll.dtype)).sum()

    def representation(self, model: Recommender, batch: dict[str, Tensor]) -> Tensor:
        assert isinstance(model, MultVAE)
        return model.encode(batch["row"])[0][0]


class ClientTerm(nn.Module, ABC):
    """An extra term of a client's local objective, with its own shared parameters.

    Its parameters are uploaded and aggregated like the item side (FedAU2's adversary head is
    one). It sees the client's backbone (local copy), its minibatch and its attribute label.
    A term may train its own parameters with its own optimiser and learning rate (``lr`` not
    None); otherwise the clients' apply.
    """

    #: Learning rate of the term's own parameters (None: the clients' optimiser and lr).
    lr: float | None = None
    #: Optimiser of the term's own parameters when ``lr`` is set.
    optimizer: str = "sgd"

    def start_round(self, round_index: int) -> None:
        """Called before each round's local training (schedules such as a pretraining phase)."""

    def observe_labels(self, labels: Tensor) -> None:
        """Called once by the engine with every client's attribute code (``-1`` unknown), for
        terms that need population statistics of the label (a deployment's server gets them
        by secure aggregation of one-hot counts); the default needs none."""

    @abstractmethod
    def forward(
        self,
        model: Recommender,
        local_loss: LocalLoss,
        batch: dict[str, Tensor],
        label: Tensor,
    ) -> Tensor:
        """Scalar term added to the client's loss; ``label`` is ``-1`` when unknown."""
