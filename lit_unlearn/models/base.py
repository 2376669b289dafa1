"""The recommender backbone interface shared by every model, task and unlearning method.

Backbones are plain :class:`torch.nn.Module` s; the Lightning glue (losses, optimisers, logging)
lives in :mod:`lit_unlearn.tasks`. Every backbone splits scoring into two stages:

1. :meth:`Recommender.embed` maps user and item ids to the *final* representations the scorer
   consumes (embedding tables for MF, tower outputs for NCF, propagated vectors for LightGCN);
2. :meth:`Recommender.score` turns a pair of representations into a preference logit.

This split is what unlearning methods and attribute-inference audits need: the audit attacks
:meth:`Recommender.user_representation` (the user-side half of stage 1) and attribute unlearning
by parameter self-sharing updates only :meth:`Recommender.user_parameters`.

Graph convention: backbones that need the interaction graph (LightGCN) take ``graph``, a
LongTensor ``[2, E]`` of training ``(user, item)`` pairs whose item ids are *not* offset by
``num_users``. The graph is always an argument, never registered state, so checkpoints do not
carry data. Backbones that do not need it ignore it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, cast

import torch
from torch import Tensor, nn


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive int (bools rejected), else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_dropout(dropout: object) -> float:
    """Return ``dropout`` as a float if it is a number in [0, 1), else raise ``ValueError``."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
    if not (math.isfinite(dropout) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be a float in [0, 1) (0 disables it), got {dropout!r}")
    return float(dropout)


def check_non_negative_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 0 (bools rejected), else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


class DataRegimeWarning(UserWarning):
    """A backbone runs with hyperparameters tuned for very different data
    (:meth:`Recommender.data_regime_warning`)."""


class Recommender(nn.Module, ABC):
    """Base class of implicit-feedback recommenders scored by ``score(embed(u), embed(i))``.

    Args:
        num_users: Number of users; ids are ``0 .. num_users - 1``.
        num_items: Number of items; ids are ``0 .. num_items - 1``.
        embedding_dim: Width of the (layer-0) id embeddings.

    Raises:
        ValueError: Any size is not a positive int.
    """

    #: Whether :meth:`embed` needs the training ``graph`` (LightGCN) or ignores it.
    needs_graph: ClassVar[bool] = False

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64) -> None:
        super().__init__()
        self.num_users = check_positive_int("num_users", num_users)
        self.num_items = check_positive_int("num_items", num_items)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.user_shift: nn.Parameter | None = None

    @property
    def representation_is_table(self) -> bool:
        """Whether :meth:`user_representation` is the user embedding table(s) themselves (MF,
        NeuMF's two tables): optimising the representation is then optimising the table, and
        the backbone needs no :meth:`enable_user_shift`."""
        return False

    @property
    def representation_dim(self) -> int:
        """Width ``d'`` of the user and item representations (default: ``embedding_dim``)."""
        return self.embedding_dim

    # ------------------------------------------------------------------ user shift
    def enable_user_shift(self) -> nn.Parameter:
        """Add a per-user offset ``delta_u`` (zeros) to the user representation and return it.

        The representation becomes ``em_u + delta_u`` everywhere the scorer and the audit read
        it. Optimising ``delta`` alone is optimising the representation itself, the variable
        AttrCloak's Algorithm 1 updates ("fine-tuned user embeddings em'_i = f_p(f_phi(u_i))"),
        while the embeddings, towers and propagation that produced it stay as trained. Idempotent:
        an existing offset is returned unchanged. Checkpoints carry it as ``user_shift``; loading
        one that has it re-creates it (see :meth:`_load_from_state_dict`).

        Raises:
            ValueError: The backbone's representation is its embedding table
                (:attr:`representation_is_table`): optimise the table instead.
        """
        if self.representation_is_table:
            raise ValueError(
                f"{type(self).__name__}'s user representation is its embedding table: "
                "optimise user_parameters() directly, it needs no user shift"
            )
        if self.user_shift is None:
            ref = next(self.parameters())
            zeros = torch.zeros(self.num_users, self.representation_dim, dtype=ref.dtype)
            self.user_shift = nn.Parameter(zeros.to(ref.device))
        return self.user_shift

    def _shift_users(self, rep: Tensor, users: Tensor | None) -> Tensor:
        """``rep + delta[users]`` (all users for ``None``) when a user shift is enabled."""
        if self.user_shift is None:
            return rep
        if users is None:
            return rep + self.user_shift
        shift = self.user_shift.index_select(0, users.reshape(-1).to(rep.device))
        return rep + shift.view(*users.shape, -1)

    def _shift_parameters(self) -> list[nn.Parameter]:
        return [] if self.user_shift is None else [self.user_shift]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # A checkpoint unlearned on the representation carries ``user_shift``; a freshly built
        # backbone does not have it yet, so create it before the strict key check.
        key = prefix + "user_shift"
        if key in state_dict and self.user_shift is None:
            self.enable_user_shift()
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    # ------------------------------------------------------------------ stage 1: representations
    @abstractmethod
    def embed(
        self,
        users: Tensor | None = None,
        items: Tensor | None = None,
        graph: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Final user and item representations, the inputs of :meth:`score`.

        Args:
            users: User ids of any shape ``S_u``; ``None`` means all users (``S_u = [num_users]``).
            items: Item ids of any shape ``S_i``; ``None`` means all items (``S_i = [num_items]``).
            graph: Training ``(user, item)`` pairs ``[2, E]`` (item ids not offset); required by
                graph backbones, ignored by the others.

        Returns:
            ``(user_rep [*S_u, d'], item_rep [*S_i, d'])``.
        """

    def user_representation(self, graph: Tensor | None = None) -> Tensor:
        """Representation of every user that the scorer consumes, ``[num_users, d']``.

        This is what an attribute-inference audit attacks: it covers every user-side path of the
        model (e.g. both NeuMF branches), so an attribute the model can still use is visible here.
        Call it in eval mode (dropout off).
        """
        return self.embed(graph=graph)[0]

    # ------------------------------------------------------------------ stage 2: scoring
    def score(self, user_rep: Tensor, item_rep: Tensor) -> Tensor:
        """Preference logits, broadcasting over leading dims: ``[..., d'] x [..., d'] -> [...]``.

        The default is the dot product; e.g. ``[B, 1, d] x [B, n, d] -> [B, n]``.
        """
        return (user_rep * item_rep).sum(dim=-1)

    def forward(self, users: Tensor, items: Tensor, graph: Tensor | None = None) -> Tensor:
        """Score user-item pairs.

        Args:
            users: User ids ``[B]``.
            items: Item ids ``[B]`` (one item per user) or ``[B, n]`` (e.g. several negatives).
            graph: Training graph, see :meth:`embed`.

        Returns:
            Logits of the same shape as ``items``.
        """
        if users.ndim != 1:
            raise ValueError(f"users must be [B], got shape {tuple(users.shape)}")
        if items.ndim not in (1, 2) or items.shape[0] != users.shape[0]:
            raise ValueError(
                f"items must be [B] or [B, n] with B = {users.shape[0]}, got {tuple(items.shape)}"
            )
        if self._dense_scoring_pays(items.numel()):
            # Many pairs (a full-data BPR step names each (user, item) cell ~0.5 times or more):
            # one [U, I] score matrix and an index beat gathering [B, n, d'] representations on
            # both sides (ML-100K, 98k positives x 9 items: 1.6M scores and one matmul instead
            # of two 113M-float gathers). The same values; the gradient flows through the index.
            user_all, item_all = self.embed(None, None, graph)
            full = user_all @ item_all.T
            index_users = users.unsqueeze(-1) if items.ndim == 2 else users
            return full[index_users.to(full.device), items.to(full.device)]
        user_rep, item_rep = self.embed(users, items, graph)
        if items.ndim == 2:
            user_rep = user_rep.unsqueeze(-2)  # [B, 1, d'] against [B, n, d']
        return self.score(user_rep, item_rep)

    def _dense_scoring_pays(self, num_pairs: int) -> bool:
        """Whether :meth:`forward` should score through the full ``[U, I]`` matrix.

        Only for the default dot-product :meth:`score`, when the pairs are at least half as
        many as the matrix's cells, and when :meth:`embed` of every row equals the rows of
        :meth:`embed` of all (see :meth:`_rows_are_shared`).
        """
        return (
            self.scores_by_dot()
            and self.num_users * self.num_items <= 2 * num_pairs
            and self._rows_are_shared()
        )

    def scores_by_dot(self) -> bool:
        """Whether :meth:`score` is the plain dot product (the default implementation), so
        ``user_rep @ item_rep.T`` scores every pair (callers may then skip :meth:`score`)."""
        return type(self).score is Recommender.score

    def _rows_are_shared(self) -> bool:
        """Whether a row's representation is the same wherever the id occurs in a batch.

        False while per-occurrence randomness (training-time dropout) is active.
        """
        return True

    def full_scores(self, users: Tensor, graph: Tensor | None = None) -> Tensor:
        """Logits of the given users against every item, ``[B, num_items]``.

        The default (dot-product scorers) is a single matmul.
        """
        user_rep, item_rep = self.embed(users, None, graph)
        return user_rep @ item_rep.T

    # ------------------------------------------------------------------ parameters
    @abstractmethod
    def user_parameters(self) -> list[nn.Parameter]:
        """User-side parameters: user embeddings and user towers/branches.

        Attribute unlearning by parameter self-sharing updates only these. Gradients of any
        function of :meth:`user_representation` reach only these parameters.
        """

    def item_parameters(self) -> list[nn.Parameter]:
        """Every parameter not in :meth:`user_parameters` (item embeddings, item tower, fusion).

        Together with :meth:`user_parameters` it covers :meth:`parameters` exactly once.
        """
        user_ids = {id(p) for p in self.user_parameters()}
        return [p for p in self.parameters() if id(p) not in user_ids]

    def data_regime_warning(self, num_interactions: int) -> DataRegimeWarning | None:
        """A warning when the backbone's hyperparameters were tuned for very different data.

        The task calls this once with the number of training pairs it attaches (this model's
        ``num_users`` x ``num_items``) and emits what it returns; ``None`` (the default) means
        nothing to say. ENMF warns when its MovieLens-tuned ``c0`` meets much sparser data.
        """
        return None

    def per_user_parameters(self) -> list[nn.Parameter]:
        """Parameters with one row per user, row ``u`` read only for user ``u``.

        What a client of a user-level federated recommender keeps private (its row never
        leaves the device); everything else is shared. The default: the user embedding tables
        among :meth:`user_parameters` (``nn.Embedding`` with ``num_users`` rows). Backbones with
        other per-user tensors (FedRAP's residual item table) extend it.
        """
        user_ids = {id(p) for p in self.user_parameters()}
        return [
            cast(nn.Parameter, m.weight)
            for m in self.modules()
            if isinstance(m, nn.Embedding)
            and m.num_embeddings == self.num_users
            and id(m.weight) in user_ids
        ]

    @abstractmethod
    def l2_batch(self, users: Tensor, items: Tensor) -> Tensor:
        """Squared L2 norm of the batch's raw (layer-0) embeddings, averaged over the batch.

        The BPR regulariser of LightGCN (He et al., 2020, Eq. 15): ``(||E_u||^2 + ||E_i||^2) / B``
        where the sums run over the embedding rows the batch touches (with repetition) and
        ``B = users.numel()``. No factor 1/2: the task's weight absorbs it.

        Args:
            users: User ids ``[B]``.
            items: Item ids of the batch, any shape (e.g. ``[B, 1 + n]`` positives and negatives).
        """

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _lookup(table: nn.Embedding, ids: Tensor | None) -> Tensor:
        """Rows of ``table`` for ``ids`` (any shape), or the whole table when ``ids`` is None."""
        return table.weight if ids is None else table(ids)

    @staticmethod
    def _sq_norm(table: nn.Embedding, ids: Tensor) -> Tensor:
        """``sum_k ||table[ids_k]||^2`` over ``ids`` with repetition.

        A batch naming more ids than the table has rows goes through per-row counts
        (``sum_r count_r ||e_r||^2``): the same value and gradient as gathering, without
        materialising (and back-propagating through) the ``[ids.numel(), d]`` gather.
        """
        if ids.numel() > table.num_embeddings:
            counts = torch.bincount(ids.reshape(-1), minlength=table.num_embeddings)
            if counts.numel() != table.num_embeddings:  # what the lookup would have refused
                rows = table.num_embeddings
                raise IndexError(f"id {counts.numel() - 1} out of range for a table of {rows} rows")
            return (counts.to(table.weight.dtype) * table.weight.square().sum(dim=-1)).sum()
        return table(ids).square().sum()
