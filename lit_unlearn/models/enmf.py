"""ENMF: neural matrix factorisation trained on the whole data without negative sampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_unlearn.models.base import DataRegimeWarning
from lit_unlearn.models.enmf_objective import (
    dropout_kappa,
    enmf_objective,
    missing_term,
    positive_term,
)
from lit_unlearn.models.mf import MF

#: The ENMF authors' MovieLens range of ``c0`` (0.3-0.5 on MovieLens-1M; 0.5 in
#: ``configs/model/enmf.yaml``): from this value up, :func:`regime_warning` checks the data.
MOVIELENS_MIN_NEGATIVE_WEIGHT = 0.3
#: Data sparser than any of these (on the training pairs) is "far from MovieLens".
SPARSE_MAX_DENSITY = 0.01
SPARSE_MAX_PER_USER = 30.0
SPARSE_MAX_PER_ITEM = 20.0
#: The command that chooses ``c0`` and dropout on a validation split.
TUNE_COMMAND = "python -m lit_unlearn.methods.interaction.tune"


class ENMFRegimeWarning(DataRegimeWarning):
    """ENMF runs with its MovieLens-tuned ``c0`` on much sparser data (:func:`regime_warning`)."""


def regime_warning(
    num_users: int,
    num_items: int,
    num_interactions: int,
    negative_weight: float,
    dropout: float,
) -> str | None:
    """A message when ENMF's MovieLens-tuned ``c0`` meets data much sparser than MovieLens.

    ``configs/model/enmf.yaml`` (c0 = 0.5, dropout = 0.7) is tuned on MovieLens, which is dense.
    On the training pairs of an 80% per-user split (what the model sees, and what the task
    passes here):

    ======================  ==========  =========  ==========
    data                    per user    per item   density
    ======================  ==========  =========  ==========
    ML-100K (943 x 1,682)   85          48         5.0%
    ML-1M (6,040 x 3,706)   133         216        3.6%
    synthetic long tail     40          4.4        0.23%
    synthetic 5-core        8.0         12.8       1.2%
    ======================  ==========  =========  ==========

    (all data: ML-100K 106 / 59 / 6.3%, ML-1M 166 / 270 / 4.5%). The data counts as far from
    that regime when any of the three is below a third to a fifth of ML-100K's: fewer than
    :data:`SPARSE_MAX_PER_USER` (30) interactions per user, fewer than
    :data:`SPARSE_MAX_PER_ITEM` (20) per item, or a density under :data:`SPARSE_MAX_DENSITY`
    (1%). Both synthetic sets above qualify; ML-100K and ML-1M (and their 50% splits) do not.

    Why density: the whole-data loss puts weight 1 on the ``N`` observed entries and ``c0`` on
    every one of the ``U x I`` entries, so the share of the fit that goes to the positives is
    about ``density / c0``; the ENMF authors likewise set ``c0`` "according to the sparsity",
    smaller for sparser data. Keeping ML-100K's balance at c0 = 0.5 would mean ``c0 ~ 10 x
    density`` (0.36 on ML-1M, inside the authors' 0.3-0.5; 0.02 on the long-tail set): a
    starting point for a search, not a measured optimum. Why the counts: with few positives per
    user or item the embeddings are fitted mostly by the missing term, and dropout's ridge
    (which scales with ``(1 - c0)`` and a row's positives) carries a different weight than on
    MovieLens.

    Only ``c0`` decides whether to warn: it is the value the ENMF authors tie to sparsity, and
    a ``c0`` below :data:`MOVIELENS_MIN_NEGATIVE_WEIGHT` (0.3) already moved off MovieLens's
    values. Dropout 0.7 is RecBole's default, not a MovieLens choice; the message names it
    because the tuner searches both.

    Args:
        num_users: Users of the model (rows of its user table).
        num_items: Items of the model.
        num_interactions: Training pairs.
        negative_weight: The model's ``c0``.
        dropout: The model's dropout rate.

    Returns:
        The message, or None when the values or the data are not in question.
    """
    if num_users < 1 or num_items < 1 or num_interactions < 1:
        return None
    if negative_weight < MOVIELENS_MIN_NEGATIVE_WEIGHT:
        return None
    per_user = num_interactions / num_users
    per_item = num_interactions / num_items
    density = num_interactions / (num_users * num_items)
    reasons = []
    if per_user < SPARSE_MAX_PER_USER:
        reasons.append(f"{per_user:.1f} interactions per user (< {SPARSE_MAX_PER_USER:g})")
    if per_item < SPARSE_MAX_PER_ITEM:
        reasons.append(f"{per_item:.1f} per item (< {SPARSE_MAX_PER_ITEM:g})")
    if density < SPARSE_MAX_DENSITY:
        reasons.append(f"density {density:.2%} (< {SPARSE_MAX_DENSITY:.0%})")
    if not reasons:
        return None
    balance = 10 * density
    hint = (
        f" (c0 ~ 10 x density = {balance:.2g} keeps MovieLens's balance; a starting point only)"
        if balance < negative_weight
        else ""
    )
    return (
        f"ENMF runs with negative_weight (c0) = {negative_weight:g} and dropout = {dropout:g}, "
        f"values tuned on MovieLens (ML-100K training: ~85 interactions per user, ~48 per item, "
        f"density 5%), on much sparser data: {num_users} users x {num_items} items x "
        f"{num_interactions} training pairs, {', '.join(reasons)}. The ENMF authors use a "
        f"smaller c0 on sparser data{hint}. Choose c0 and dropout on a validation split: "
        f"{TUNE_COMMAND} --data <data yaml> --model <model yaml> "
        f"--grid negative_weight=0.02,0.05,0.1,0.2,0.5 --grid dropout=0.0,0.3,0.7 --out <dir> "
        f"(docs/alteraser.md, 'Sparse data: choosing c0 and dropout')."
    )


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
            On much sparser data the task warns (:func:`regime_warning`); choose it with
            ``python -m lit_unlearn.methods.interaction.tune``.
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

    def data_regime_warning(self, num_interactions: int) -> ENMFRegimeWarning | None:
        """:func:`regime_warning` for this model's sizes, ``c0`` and dropout."""
        message = regime_warning(
            self.num_users, self.num_items, num_interactions, self.negative_weight, self.dropout
        )
        return None if message is None else ENMFRegimeWarning(message)

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
