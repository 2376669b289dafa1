"""Neural collaborative filtering: a two-tower dot-product model and NeuMF."""

from __future__ import annotations

import itertools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_unlearn.models.base import Recommender, check_dropout, check_non_negative_int

#: Rough bound on the elements of the ``[B, chunk, width]`` activations that
#: :meth:`NCF.full_scores` materialises per item chunk under NeuMF (2^24 floats = 64 MiB).
_FULL_SCORES_BUDGET = 1 << 24


class NCF(Recommender):
    """Neural collaborative filtering with a two-tower dot-product scorer or NeuMF.

    ``scorer="dot"`` is the configuration of the AttrCloak paper (Chen et al., "Making Users
    Indistinguishable: Attribute-wise Unlearning in Recommender Systems", 2023): user and item
    embeddings each pass through their own tower of ``hidden_layers`` ``Linear(d, d)`` layers and
    the logit is the dot product of the two tower outputs. ReLU (then dropout) sits *between*
    tower layers but not after the last one: a final ReLU would zero about half of the output
    dimensions of each tower and clamp every coordinate of the dot product to be non-negative
    times non-negative, so BPR could only push scores apart through the surviving positive
    coordinates; a linear last layer keeps the full signed space of MF, and with
    ``hidden_layers=0`` the model is exactly MF. The user representation is the user tower output.

    ``scorer="neumf"`` is NeuMF from He et al., "Neural Collaborative Filtering", WWW 2017: a GMF
    branch (element-wise product of GMF user and item embeddings, width ``d``) and an MLP branch
    (concatenated MLP user and item embeddings, width ``2d``, through ``hidden_layers``
    ``Linear -> ReLU -> Dropout`` layers, each halving the width) fused by a final
    ``Linear(d + 2d / 2^hidden_layers, 1)``. Its user representation is the concatenation of the
    GMF and MLP user embeddings: everything on the user side that the scorer consumes. The MLP
    tower and the fusion layer mix user and item inputs, so they count as item-side (non-user)
    parameters.

    All weights use Xavier-uniform initialisation and zero biases.

    Args:
        num_users: Number of users.
        num_items: Number of items.
        embedding_dim: Width ``d`` of every id embedding table.
        hidden_layers: Number of Linear layers per tower (dot) or in the MLP branch (neumf).
        dropout: Dropout probability after every hidden ReLU.
        scorer: ``"dot"`` (two towers, dot product) or ``"neumf"`` (GMF + MLP fused).

    Raises:
        ValueError: A size is not a positive int, ``hidden_layers`` is negative (or halves the
            NeuMF MLP below width 1), ``dropout`` is outside ``[0, 1)``, or ``scorer`` is unknown.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 128,
        hidden_layers: int = 2,
        dropout: float = 0.0,
        scorer: Literal["dot", "neumf"] = "dot",
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim)
        self.hidden_layers = check_non_negative_int("hidden_layers", hidden_layers)
        if scorer not in ("dot", "neumf"):
            raise ValueError(f"scorer must be 'dot' or 'neumf', got {scorer!r}")
        self.dropout = check_dropout(dropout)
        self.scorer = scorer
        d = embedding_dim
        self.user_embedding = nn.Embedding(num_users, d)
        self.item_embedding = nn.Embedding(num_items, d)
        if scorer == "dot":
            self.user_tower = nn.ModuleList(nn.Linear(d, d) for _ in range(hidden_layers))
            self.item_tower = nn.ModuleList(nn.Linear(d, d) for _ in range(hidden_layers))
        else:
            # The two tables above are the GMF embeddings; the MLP branch has its own.
            widths = [2 * d // 2**k for k in range(hidden_layers + 1)]
            if widths[-1] < 1:
                raise ValueError(
                    f"hidden_layers={hidden_layers} halves the NeuMF MLP width 2*{d} below 1"
                )
            self.user_mlp_embedding = nn.Embedding(num_users, d)
            self.item_mlp_embedding = nn.Embedding(num_items, d)
            self.mlp = nn.ModuleList(
                nn.Linear(w_in, w_out) for w_in, w_out in itertools.pairwise(widths)
            )
            self.predict = nn.Linear(d + widths[-1], 1)
        self.reset_parameters()

    @property
    def representation_dim(self) -> int:
        """Width ``d'`` of the user and item representations."""
        return self.embedding_dim * (2 if self.scorer == "neumf" else 1)

    def scores_by_dot(self) -> bool:
        return self.scorer == "dot"

    def _rows_are_shared(self) -> bool:
        # training-time dropout draws a mask per occurrence of an id
        return not (self.training and self.dropout > 0)

    @property
    def representation_is_table(self) -> bool:
        """NeuMF's user representation is its two embedding tables; the dot towers' is not."""
        return self.scorer == "neumf"

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases everywhere."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.xavier_uniform_(module.weight)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ representations
    def _tower(self, layers: nn.ModuleList, x: Tensor) -> Tensor:
        for k, layer in enumerate(layers):
            x = layer(x)
            if k < len(layers) - 1:  # no ReLU after the last layer, see the class docstring
                x = F.dropout(F.relu(x), self.dropout, self.training)
        return x

    def _tower_rep(self, table: nn.Embedding, layers: nn.ModuleList, ids: Tensor | None) -> Tensor:
        """Tower outputs for ``ids`` (any shape), or for every row when ``ids`` is None.

        A batch that names more ids than the table has rows (a full-data BPR step scores each
        user ~100 times) runs the tower once over the table and gathers: ``|table|`` rows
        through the MLP instead of ``ids.numel()``, the same values and gradients. Only when
        dropout is inactive: a training-time dropout mask is drawn per occurrence, which the
        gather would share between all occurrences of an id.
        """
        if ids is None or len(layers) == 0:
            return self._tower(layers, self._lookup(table, ids))
        dropout_active = self.training and self.dropout > 0
        if not dropout_active and ids.numel() > table.num_embeddings:
            # index_select: its backward (index_add) is about 2x faster than advanced indexing's
            rows = self._tower(layers, table.weight)
            return rows.index_select(0, ids.reshape(-1)).view(*ids.shape, rows.shape[-1])
        return self._tower(layers, table(ids))

    def _user_rep(self, users: Tensor | None) -> Tensor:
        if self.scorer == "dot":
            rep = self._tower_rep(self.user_embedding, self.user_tower, users)
            return self._shift_users(rep, users)
        emb = self._lookup(self.user_embedding, users)
        return torch.cat([emb, self._lookup(self.user_mlp_embedding, users)], dim=-1)

    def _item_rep(self, items: Tensor | None) -> Tensor:
        if self.scorer == "dot":
            return self._tower_rep(self.item_embedding, self.item_tower, items)
        emb = self._lookup(self.item_embedding, items)
        return torch.cat([emb, self._lookup(self.item_mlp_embedding, items)], dim=-1)

    def embed(
        self,
        users: Tensor | None = None,
        items: Tensor | None = None,
        graph: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Tower outputs (dot) or ``[GMF emb, MLP emb]`` concatenations (neumf); ignores graph."""
        return self._user_rep(users), self._item_rep(items)

    def user_representation(self, graph: Tensor | None = None) -> Tensor:
        """User tower outputs (dot) or ``[GMF user emb, MLP user emb]`` (neumf), all users."""
        return self._user_rep(None)

    # ------------------------------------------------------------------ scoring
    def score(self, user_rep: Tensor, item_rep: Tensor) -> Tensor:
        """Dot product (dot) or the NeuMF fusion (neumf), broadcasting over leading dims."""
        if self.scorer == "dot":
            return super().score(user_rep, item_rep)
        d = self.embedding_dim
        user_gmf, user_mlp = user_rep.split([d, d], dim=-1)
        item_gmf, item_mlp = item_rep.split([d, d], dim=-1)
        gmf = user_gmf * item_gmf
        if len(self.mlp) == 0:
            user_mlp, item_mlp = torch.broadcast_tensors(user_mlp, item_mlp)
            h = torch.cat([user_mlp, item_mlp], dim=-1)
        else:
            # Linear(cat[u, i]) == W_u u + W_i i + b: project each side before broadcasting, so
            # full_scores never materialises the [B, n_items, 2d] concatenation.
            first = self.mlp[0]
            assert isinstance(first, nn.Linear)
            h = F.linear(user_mlp, first.weight[:, :d]) + F.linear(
                item_mlp, first.weight[:, d:], first.bias
            )
            h = F.dropout(F.relu(h), self.dropout, self.training)
            for layer in list(self.mlp)[1:]:
                h = F.dropout(F.relu(layer(h)), self.dropout, self.training)
        # The branches have different widths, so broadcast their leading dims explicitly.
        lead = torch.broadcast_shapes(gmf.shape[:-1], h.shape[:-1])
        gmf, h = gmf.expand(*lead, -1), h.expand(*lead, -1)
        return self.predict(torch.cat([gmf, h], dim=-1)).squeeze(-1)

    def full_scores(
        self, users: Tensor, graph: Tensor | None = None, *, chunk_size: int | None = None
    ) -> Tensor:
        """Logits of ``users`` against every item, ``[B, num_items]``.

        A matmul for ``scorer="dot"``. NeuMF evaluates items in chunks to bound memory.

        Args:
            users: User ids ``[B]``.
            graph: Ignored.
            chunk_size: Items per NeuMF chunk; by default chosen so that one chunk's MLP
                activations stay below about 2^24 elements.
        """
        if self.scorer == "dot":
            return super().full_scores(users, graph)
        user_rep = self._user_rep(users).unsqueeze(-2)  # [B, 1, 2d]
        item_rep = self._item_rep(None)  # [num_items, 2d]
        if chunk_size is None:
            width = 4 * self.embedding_dim  # GMF product + MLP activations + fused input
            chunk_size = max(1, _FULL_SCORES_BUDGET // max(1, users.numel() * width))
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return torch.cat(
            [self.score(user_rep, chunk) for chunk in item_rep.split(chunk_size, dim=0)], dim=-1
        )

    # ------------------------------------------------------------------ parameters
    def user_parameters(self) -> list[nn.Parameter]:
        """User embeddings (GMF and MLP for neumf) and the user tower (dot)."""
        params = list(self.user_embedding.parameters())
        if self.scorer == "dot":
            params += list(self.user_tower.parameters())
        else:
            params += list(self.user_mlp_embedding.parameters())
        return params + self._shift_parameters()

    def l2_batch(self, users: Tensor, items: Tensor) -> Tensor:
        """See :meth:`Recommender.l2_batch`; covers GMF and MLP embeddings under NeuMF.

        Tower and fusion weights are not included (use weight decay for those).
        """
        sq = self._sq_norm(self.user_embedding, users) + self._sq_norm(self.item_embedding, items)
        if self.scorer == "neumf":
            sq = (
                sq
                + self._sq_norm(self.user_mlp_embedding, users)
                + self._sq_norm(self.item_mlp_embedding, items)
            )
        return sq / max(users.numel(), 1)
