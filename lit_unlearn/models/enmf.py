"""ENMF: neural matrix factorisation trained on the whole data without negative sampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_unlearn.models.enmf_objective import (
    dropout_kappa,
    enmf_objective,
    missing_term,
    positive_term,
)
from lit_unlearn.models.mf import MF


def _check_float(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a float in [{low}, {high}], got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a float in [{low}, {high}], got {value!r}")
    return float(value)


class ENMF(MF):
    """Efficient neural matrix factorisation (Chen et al., TOIS 2020), AltEraser's backbone.

    Scores ``y_uv = h^T (p_u * q_v)`` (the one-layer NCF of paper 003, section 3.1) and is
    trained on every user-item entry with the weighted least squares of
    :mod:`lit_unlearn.models.enmf_objective` (observed entries weight 1, missing ones
    ``negative_weight``), plus ``reg (|P|^2 + |Q|^2)``. The loss never builds the user x item
    matrix.

    Dropout follows RecBole's ENMF (the code paper 003 ran): in training, the user vectors of the
    positive term are dropped (inverted dropout, rate ``dropout``); the missing term and scoring
    use them whole. :meth:`objective` is the expected loss over the masks, which is still an
    exact quadratic per row (:mod:`lit_unlearn.models.enmf_objective`, "Dropout"), so
    AltEraser's blocks stay deterministic and its Newton step exact. Dropout is also what makes
    two retrainings differ (paper 003's Retrain* vs Retrain); without it only the batch order does.

    Args:
        num_users: Number of users.
        num_items: Number of items.
        embedding_dim: Latent factors ``d``.
        negative_weight: ``c0``, the uniform weight of missing entries, in ``[0, 1]``. The
            default 0.1 is ENMF's generic one; its authors tune it per dataset (smaller for
            sparser data) and use 0.3-0.5 on MovieLens-1M; ``configs/model/enmf.yaml`` sets 0.5.
        reg: L2 coefficient on user and item embeddings (part of the loss, so the Newton
            sub-problems see it).
        init_std: Std of the normal initialisation of the embeddings (``h`` starts at ones).
        dropout: Dropout rate on the user vectors of the positive term, in ``[0, 1)``; RecBole's
            ENMF default is 0.7, which ``configs/model/enmf.yaml`` uses. 0 (the class default)
            trains the deterministic loss.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        negative_weight: float = 0.1,
        reg: float = 0.01,
        init_std: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        negative_weight = _check_float("negative_weight", negative_weight, 0.0, 1.0)
        reg = _check_float("reg", reg, 0.0, math.inf)
        dropout = _check_float("dropout", dropout, 0.0, 1.0)
        dropout_kappa(dropout)  # 1.0 passes the range check above but would drop everything
        # MF owns the embedding tables, their lookup, the user-side split and the batch L2.
        super().__init__(num_users, num_items, embedding_dim, init_std=init_std)
        self.negative_weight = negative_weight
        self.reg = reg
        self.dropout = dropout
        self.h = nn.Parameter(torch.ones(embedding_dim))

    def reset_parameters(self) -> None:
        """Embeddings from ``N(0, init_std^2)`` (as MF), prediction layer ``h = 1``."""
        super().reset_parameters()
        if hasattr(self, "h"):  # MF.__init__ calls this before h exists
            with torch.no_grad():
                self.h.fill_(1.0)

    def score(self, user_rep: Tensor, item_rep: Tensor) -> Tensor:
        """``h^T (p_u * q_v)``, broadcasting over leading dims."""
        return (user_rep * self.h * item_rep).sum(dim=-1)

    def full_scores(self, users: Tensor, graph: Tensor | None = None) -> Tensor:
        """``(P_users * h) Q^T``: one matmul."""
        return (self.user_embedding(users) * self.h) @ self.item_embedding.weight.T

    # ------------------------------------------------------------------ the whole-data loss
    def batch_loss(
        self, users: Tensor, items: Tensor, user_degree: Tensor, num_pairs: int
    ) -> Tensor:
        """Mean share of the whole-data loss carried by a batch of observed pairs.

        Each pair ``(u, v)`` carries its positive term plus ``1 / n_u`` of user ``u``'s missing
        term and L2 penalty, and ``1 / N`` of the item L2 penalty, so the batch losses of one
        epoch sum (times the batch sizes) to exactly :meth:`objective` on the training pairs;
        with dropout in training mode, to it in expectation over the masks.

        Args:
            users: User ids ``[B]`` of the pairs.
            items: Item ids ``[B]``.
            user_degree: ``n_u`` for each pair's user, ``[B]`` (training interactions).
            num_pairs: ``N``, the number of training pairs.
        """
        p = self.user_embedding(users)
        q_all = self.item_embedding.weight
        share = 1.0 / user_degree.to(p.dtype)
        # RecBole's ENMF drops the user vector of the observed scores only.
        dropped = F.dropout(p, self.dropout, self.training) if self.dropout > 0 else p
        loss = positive_term(dropped, q_all[items], self.h, self.negative_weight)
        loss = loss + missing_term(p, q_all, self.h, self.negative_weight, user_weight=share)
        if self.reg > 0:
            user_l2 = (p.square().sum(dim=-1) * share).sum()
            item_l2 = q_all.square().sum() * (users.shape[0] / num_pairs)
            loss = loss + self.reg * (user_l2 + item_l2)
        return loss / users.shape[0]

    def objective(self, pairs: Tensor) -> Tensor:
        """The full ENMF loss ``L_D(P, Q, h)`` on training pairs ``[N, 2]`` (paper 003, Eq. 1).

        With dropout, its expectation over the masks (deterministic, whatever the mode).
        """
        return enmf_objective(
            self.user_embedding.weight,
            self.item_embedding.weight,
            self.h,
            pairs,
            self.negative_weight,
            self.reg,
            self.dropout,
        )
