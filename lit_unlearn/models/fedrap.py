"""FedRAP: a global item table plus a per-user additive residual (the FedRAP backbone)."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from lit_unlearn.models.base import Recommender


class FedRAP(Recommender):
    """Additive personalisation (Li, Long & Zhou, "Federated Recommendation with Additive
    Personalization", ICLR 2024): user ``u`` scores item ``i`` with
    ``<e_u, C_i + D_u[i]>``, where ``C`` (``[I, d]``) is the global item table every client
    shares and ``D_u`` (``[I, d]``) the user's own residual item table, which never leaves the
    client, like its embedding ``e_u``.

    FedRAP's objective adds two regularisers to the pointwise loss: ``nu * ||C||_1`` (a sparse
    global table; here over the rows a batch touches, see :meth:`regularizer`) and
    ``-lam * ||D_u - C||_F^2`` (residuals that differ from the global part).
    The second is unbounded below, so here it is a bounded *difference* term: the squared
    cosine similarity between ``D_u`` and ``C`` rows the batch touches (:meth:`regularizer`);
    both weights are arguments (defaults as small as the paper's schedules start).

    Audits: :meth:`user_representation` is ``[e_u, mean_i D_u[i]]`` (``[U, 2d]``: both
    user-side paths, the residual summarised per dimension); :meth:`residual` gives the whole
    ``[U, I, d]`` tensor for the per-column attacker of FedAU2 (App. A.2).

    Args:
        num_users: Number of users.
        num_items: Number of items.
        embedding_dim: Width ``d`` (FedAU2: 32).
        residual_init_std: Standard deviation of the residual's initialisation (0: zeros,
            FedRAP starts ``D_u`` at zero so every user starts from the global model).
        l1_global: ``nu``, weight of ``||C||_1`` (per element, averaged).
        difference: ``lam``, weight of the residual-vs-global similarity penalty.
        residual_l2: Weight of the mean squared norm of the residual cells a batch touches
            (not in FedRAP; a brake on ``D_u``, a whole item table per client that memorises
            the client's positives under a per-client Adam, where every touched cell moves by
            about the lr each step). The ML-100K config uses 10: validation HR@10 0.337 ->
            0.41 at 200 rounds (``benchmarks/federated_sweep.py``, docs/federated.md).

    Raises:
        ValueError: A size is not a positive int, or a weight / std is negative or not finite.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 32,
        residual_init_std: float = 0.0,
        l1_global: float = 1e-4,
        difference: float = 1e-3,
        residual_l2: float = 0.0,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim)
        for name, value in (
            ("residual_init_std", residual_init_std),
            ("l1_global", l1_global),
            ("difference", difference),
            ("residual_l2", residual_l2),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a float >= 0, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")
        self.residual_init_std = float(residual_init_std)
        self.l1_global = float(l1_global)
        self.difference = float(difference)
        self.residual_l2 = float(residual_l2)
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        self.residual = nn.Parameter(torch.zeros(num_users, num_items, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform ``e`` and ``C``; ``D`` zeros (or normal with the given std)."""
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        with torch.no_grad():
            if self.residual_init_std > 0:
                self.residual.normal_(0.0, self.residual_init_std)
            else:
                self.residual.zero_()

    # ------------------------------------------------------------------ representations
    def embed(
        self,
        users: Tensor | None = None,
        items: Tensor | None = None,
        graph: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(e_u, C_i)``: the user embedding and the *global* item part only.

        FedRAP's item representation depends on the user; :meth:`forward` and
        :meth:`full_scores` add the residual.
        """
        user_rep = self._shift_users(self._lookup(self.user_embedding, users), users)
        return user_rep, self._lookup(self.item_embedding, items)

    def _dense_scoring_pays(self, num_pairs: int) -> bool:
        return False  # the score is not one [U, d] x [d, I] product

    def forward(self, users: Tensor, items: Tensor, graph: Tensor | None = None) -> Tensor:
        """``<e_u, C_i + D_u[i]>`` for ``users [B]`` and ``items [B]`` or ``[B, n]``."""
        if users.ndim != 1:
            raise ValueError(f"users must be [B], got shape {tuple(users.shape)}")
        if items.ndim not in (1, 2) or items.shape[0] != users.shape[0]:
            raise ValueError(
                f"items must be [B] or [B, n] with B = {users.shape[0]}, got {tuple(items.shape)}"
            )
        user_rep, global_part = self.embed(users, items)
        item_rep = global_part + self._residual_rows(users, items)
        if items.ndim == 2:
            user_rep = user_rep.unsqueeze(-2)
        return (user_rep * item_rep).sum(dim=-1)

    def full_scores(self, users: Tensor, graph: Tensor | None = None) -> Tensor:
        """``[B, I]`` scores: ``e_u C^T + <e_u, D_u[i]>`` for every item."""
        user_rep, global_part = self.embed(users, None)
        personal = torch.einsum("bd,bid->bi", user_rep, self.residual[users])
        return user_rep @ global_part.T + personal

    def user_representation(self, graph: Tensor | None = None) -> Tensor:
        """``[e_u, mean_i D_u[i]]`` for every user, ``[U, 2d]``."""
        user_rep = self._shift_users(self.user_embedding.weight, None)
        return torch.cat([user_rep, self.residual.mean(dim=1)], dim=-1)

    @property
    def representation_dim(self) -> int:
        """Width of the user-embedding part a user shift offsets (``d``)."""
        return self.embedding_dim

    def _residual_rows(self, users: Tensor, items: Tensor) -> Tensor:
        """``D_u[i]`` for ``users [B]`` and ``items [B]`` / ``[B, n]``: an embedding lookup in
        the flattened ``[U * I, d]`` table (its backward sums repeated cells, also under
        ``vmap``, where the backward of advanced indexing lost repeats in a test)."""
        index_users = users.unsqueeze(-1).expand_as(items) if items.ndim == 2 else users
        flat = self.residual.reshape(-1, self.residual.shape[-1])
        return nn.functional.embedding(index_users * self.residual.shape[1] + items, flat)

    def residual_matrix(self) -> Tensor:
        """The residual tables ``D`` ``[U, I, d]`` (FedAU2's per-column attacker reads them)."""
        return self.residual

    # ------------------------------------------------------------------ parameters
    def user_parameters(self) -> list[nn.Parameter]:
        """The user embedding and the user's residual item table."""
        return [cast(nn.Parameter, self.user_embedding.weight), self.residual,
                *self._shift_parameters()]  # fmt: skip

    def per_user_parameters(self) -> list[nn.Parameter]:
        """``e`` and ``D``: both have one row (table) per user and stay on its client."""
        return [cast(nn.Parameter, self.user_embedding.weight), self.residual]

    def regularizer(self, users: Tensor, items: Tensor, weight: Tensor | None = None) -> Tensor:
        """``nu * mean|C_i| + lam * mean cos^2(D_u[i], C_i) (+ l2 * mean ||D_u[i]||^2)`` over the
        batch's (user, item) cells.

        The L1 term covers the rows of ``C`` the batch touches, not the whole table: with a
        per-client Adam (moments fresh every round) a whole-table L1 gradient, tiny as it is,
        is normalised into a full-size step on every row the client never saw, and the global
        table collapsed to zero (FedRAP stayed at chance on ML-100K; with the L1 off it
        learned).

        Args:
            users: User ids ``[B]``.
            items: Item ids ``[B]`` or ``[B, n]``.
            weight: Optional weights of the cells (same shape as ``items``; 0 = padding).
        """
        residual = self._residual_rows(users, items)
        global_part = self.item_embedding(items)
        # cos^2 = <r, c>^2 / (|r|^2 |c|^2), with eps inside so it is smooth at r = 0 (where
        # FedRAP starts every residual): the gradient of a norm at 0 is undefined.
        dot = (residual * global_part).sum(dim=-1)
        eps = 1e-8
        cos_sq = dot.square() / (
            (residual.square().sum(dim=-1) + eps) * (global_part.square().sum(dim=-1) + eps)
        )
        if weight is None:
            weight = torch.ones_like(cos_sq)
        weight = weight.to(cos_sq.dtype)
        total = weight.sum().clamp_min(1.0)

        def mean(cells: Tensor) -> Tensor:
            return (cells * weight).sum() / total

        return (
            self.l1_global * mean(global_part.abs().mean(dim=-1))
            + self.difference * mean(cos_sq)
            + self.residual_l2 * mean(residual.square().sum(dim=-1))
        )

    def l2_batch(self, users: Tensor, items: Tensor) -> Tensor:
        """Squared norms of the batch's ``e_u`` and ``C_i`` rows, averaged over the batch."""
        sq = self._sq_norm(self.user_embedding, users) + self._sq_norm(self.item_embedding, items)
        return sq / max(users.numel(), 1)
