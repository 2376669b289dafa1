"""DAMO's three objectives (DSDA stage 2, paper 004, Sec. 3.3), plain torch.

* L_R = CE(M(x_r), y_r) on synthetic retain samples;
* L_F = -CE(M(x_f), y_f) on synthetic forget samples. Unbounded below, so each sample's CE is
  capped (spec decision 7: ``cap = 5 log K`` by default): once a forget sample is already
  misclassified with that margin it stops pulling;
* L_Disc (Eq. 7), a Circle-loss form without margins on h = M^f(x_r) and class centres c_i::

      s_p = cos(c_y, h),  s_n^j = cos(c_j, h)  (j in C_r minus y),
      alpha_p = [O_p - s_p]_+,  alpha_n^j = [s_n^j - O_n]_+    (detached, as Circle loss),
      L_Disc = log(1 + sum_j exp(delta alpha_n^j s_n^j) exp(-delta alpha_p s_p))
             = softplus(logsumexp_j(delta alpha_n^j s_n^j) - delta alpha_p s_p),

  computed in that log-sum-exp form so delta = 64 never overflows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_centres", "discriminative_loss", "forget_loss", "retain_loss"]


def retain_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """L_R: mean cross-entropy."""
    return F.cross_entropy(logits, labels)


def forget_loss(logits: Tensor, labels: Tensor, cap: float | None = None) -> Tensor:
    """L_F = -mean(min(CE_i, cap)) (``cap=None``: the paper's unbounded -CE).

    Raises:
        ValueError: ``cap`` is not positive.
    """
    if cap is not None and cap <= 0:
        raise ValueError(f"cap must be > 0 (or None), got {cap}")
    ce = F.cross_entropy(logits, labels, reduction="none")
    if cap is not None:
        ce = ce.clamp(max=cap)
    return -ce.mean()


def default_forget_cap(num_classes: int, factor: float = 5.0) -> float:
    """``factor * log K``: CE of a confidently wrong prediction (spec decision 7)."""
    return factor * math.log(num_classes)


def class_centres(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean feature of every class ``[K, D]`` (rows of classes without samples are 0).

    Spec decision 5: the centres are the mean M^f features of the synthetic retain samples of
    each class under the original model, fixed during unlearning.
    """
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(features.dtype)
    return sums / counts[:, None]


def discriminative_loss(
    features: Tensor,
    labels: Tensor,
    centres: Tensor,
    retain_classes: Sequence[int],
    delta: float = 64.0,
    o_p: float = 1.25,
    o_n: float = -0.25,
) -> Tensor:
    """L_Disc (Eq. 7) averaged over the batch, stable for any delta.

    Args:
        features: h = M^f(x_r) ``[B, D]`` of retain samples.
        labels: Their classes ``[B]`` (each in ``retain_classes``).
        centres: Class centres ``[K, D]``.
        retain_classes: C_r (the negatives of a sample are C_r minus its class).
        delta: Scale (Circle loss's gamma; spec: 64).
        o_p: Positive optimum (1 + m, m = 0.25).
        o_n: Negative optimum (-m).

    Raises:
        ValueError: Fewer than two retain classes (no negative exists).
    """
    retain = torch.as_tensor(list(retain_classes), dtype=torch.long, device=features.device)
    if retain.numel() < 2:
        raise ValueError("L_Disc needs at least two retain classes (a positive and a negative)")
    cos = F.normalize(features, dim=1) @ F.normalize(centres[retain], dim=1).T  # [B, |C_r|]
    is_pos = labels[:, None] == retain[None, :]
    s_p = (cos * is_pos).sum(dim=1)
    alpha_p = (o_p - s_p).clamp_min(0).detach()
    alpha_n = (cos - o_n).clamp_min(0).detach()
    neg_logits = (delta * alpha_n * cos).masked_fill(is_pos, float("-inf"))
    return F.softplus(torch.logsumexp(neg_logits, dim=1) - delta * alpha_p * s_p).mean()
