"""Matrix factorisation with a dot-product scorer (BPR-MF)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from lit_unlearn.models.base import Recommender


class MF(Recommender):
    """Matrix factorisation scored by the dot product of user and item embeddings.

    Trained with the BPR loss this is BPR-MF from Rendle et al., "BPR: Bayesian Personalized
    Ranking from Implicit Feedback", UAI 2009. The representations are the embedding tables.

    Args:
        num_users: Number of users.
        num_items: Number of items.
        embedding_dim: Number of latent factors.
        init_std: Standard deviation of the zero-mean normal initialisation.

    Raises:
        ValueError: A size is not a positive int, or ``init_std`` is not a positive finite float.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(num_users, num_items, embedding_dim)
        if isinstance(init_std, bool) or not isinstance(init_std, (int, float)):
            raise ValueError(f"init_std must be a positive float, got {init_std!r}")
        if not (math.isfinite(init_std) and init_std > 0):
            raise ValueError(f"init_std must be a positive float, got {init_std!r}")
        self.init_std = float(init_std)
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.item_embedding = nn.Embedding(num_items, embedding_dim)
        self.reset_parameters()

    @property
    def representation_is_table(self) -> bool:
        """The user representation is the embedding table."""
        return True

    def reset_parameters(self) -> None:
        """Re-draw both embedding tables from ``N(0, init_std^2)``."""
        nn.init.normal_(self.user_embedding.weight, std=self.init_std)
        nn.init.normal_(self.item_embedding.weight, std=self.init_std)

    def embed(
        self,
        users: Tensor | None = None,
        items: Tensor | None = None,
        graph: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Embedding rows of ``users`` and ``items`` (whole tables for ``None``); ignores graph."""
        return self._lookup(self.user_embedding, users), self._lookup(self.item_embedding, items)

    def user_representation(self, graph: Tensor | None = None) -> Tensor:
        """The user embedding table ``[num_users, embedding_dim]``."""
        return self.user_embedding.weight

    def user_parameters(self) -> list[nn.Parameter]:
        """The user embedding table."""
        return list(self.user_embedding.parameters())

    def l2_batch(self, users: Tensor, items: Tensor) -> Tensor:
        """See :meth:`Recommender.l2_batch`."""
        sq = self._sq_norm(self.user_embedding, users) + self._sq_norm(self.item_embedding, items)
        return sq / max(users.numel(), 1)
