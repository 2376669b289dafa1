"""Pairwise and pointwise recommendation losses on sampled negatives (plain torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """Bayesian personalised ranking (Rendle et al., 2009, Eq. 4 without the prior).

    ``-mean(log sigmoid(s_ui - s_uj))`` over every (positive, negative) pair.

    Args:
        pos: Positive scores ``[B]``.
        neg: Negative scores ``[B, n]`` (n negatives per positive).
    """
    return -F.logsigmoid(pos.unsqueeze(-1) - neg).mean()


def bce_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """Binary cross-entropy with positives labelled 1 and sampled negatives 0 (NCF, He et al. 2017).

    Each positive and each negative counts once, so ``n`` negatives weigh ``n`` times a positive
    as in the NCF paper's sampling ratio.
    """
    logits = torch.cat([pos.unsqueeze(-1), neg], dim=-1)
    labels = torch.zeros_like(logits)
    labels[..., 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / logits.shape[0]


LOSSES = {"bpr": bpr_loss, "bce": bce_loss}
