"""Data-free retention loss: keep the unlearned embeddings close to the original ones.

AttrCloak's ``L^Reg`` (Eq. 21): when the interaction data is gone, recommendation quality is kept
by limiting how far each user embedding moves, ``sum_i ||em_i - em'_i||^2``, on the rationale that
nearby parameters give similar recommendations. The same parameter-space L2 term is the ``-R`` in
the U2U-R / D2D-R baselines (:mod:`lit_unlearn.methods.attribute.distinguishability`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

__all__ = ["embedding_regularization", "score_regularization"]


def embedding_regularization(
    current: Tensor,
    reference: Tensor,
    reduction: Literal["sum", "mean"] = "sum",
) -> Tensor:
    """Eq. 21: squared Euclidean distance of each embedding to its pre-unlearning value.

    Args:
        current: ``[N, d]`` embeddings being unlearned (``em'``; differentiable).
        reference: ``[N, d]`` embeddings before unlearning (``em``); detached, so the loss only
            ever moves ``current``.
        reduction: ``"sum"`` over users (Eq. 21 as written; grows with ``N``) or ``"mean"`` over
            users (the sum divided by ``N``, i.e. the mean per-user squared distance, which keeps
            a fixed loss weight meaningful across user counts and mini-batch sizes).

    Returns:
        Scalar loss in ``current``'s dtype.

    Raises:
        ValueError: Shapes differ, are not 2-D, or ``reduction`` is unknown.
    """
    if current.ndim != 2:
        raise ValueError(f"current must be [N, d], got shape {tuple(current.shape)}")
    if reference.shape != current.shape:
        raise ValueError(
            f"reference shape {tuple(reference.shape)} differs from current shape "
            f"{tuple(current.shape)}"
        )
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    diff = current - reference.detach().to(dtype=current.dtype, device=current.device)
    total = diff.pow(2).sum()
    if reduction == "mean":
        return total / max(current.shape[0], 1)
    return total


def score_regularization(
    current: Tensor,
    reference: Tensor,
    item_rep: Tensor,
    score: Callable[[Tensor, Tensor], Tensor] | None = None,
    reduction: Literal["sum", "mean"] = "mean",
    chunk: int = 128,
) -> Tensor:
    """Eq. 21 measured in what the recommender reads: the squared change of every user's
    scores over the items (not in the paper).

    Eq. 21 charges every direction of the representation alike; the items read some more than
    others. This charges ``mean_i (s(z_u, v_i) - s(z0_u, v_i))^2`` per user, divided by
    ``mean_i ||v_i||^2 / d`` so that for a dot-product scorer with isotropic items it equals
    :func:`embedding_regularization` (``(z - z0)^T M (z - z0) / (tr M / d)``, ``M`` the items'
    second moment). A move along directions the items do not read is free.

    Args:
        current: ``[N, d]`` representations being unlearned (differentiable).
        reference: ``[N, d]`` before unlearning (detached).
        item_rep: ``[I, d]`` item representations (fixed: attribute unlearning leaves the item
            side alone).
        score: The model's scorer ``[..., d] x [..., d] -> [...]``; ``None``: dot product
            (one matmul, no ``[N, I, d]`` tensor).
        reduction: ``"sum"`` or ``"mean"`` over users, as :func:`embedding_regularization`.
        chunk: Users per scorer call when ``score`` is given (memory ``chunk x I x d``).

    Returns:
        Scalar loss.

    Raises:
        ValueError: Shapes that do not fit, an unknown reduction, or items of zero norm.
    """
    if current.ndim != 2 or reference.shape != current.shape:
        raise ValueError(
            f"current and reference must be the same [N, d], got {tuple(current.shape)} and "
            f"{tuple(reference.shape)}"
        )
    if item_rep.ndim != 2 or item_rep.shape[1] != current.shape[1]:
        raise ValueError(f"item_rep must be [I, {current.shape[1]}], got {tuple(item_rep.shape)}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    items = item_rep.detach().to(dtype=current.dtype, device=current.device)
    ref = reference.detach().to(dtype=current.dtype, device=current.device)
    unit = items.pow(2).sum(dim=1).mean() / items.shape[1]
    if not bool(unit > 0):
        raise ValueError("item representations are all zero: the score metric is undefined")
    if score is None:
        per_user = ((current - ref) @ items.T).pow(2).mean(dim=1)
    else:
        parts = []
        for start in range(0, current.shape[0], chunk):
            now = score(current[start : start + chunk, None, :], items[None])
            before = score(ref[start : start + chunk, None, :], items[None])
            parts.append((now - before).pow(2).mean(dim=1))
        per_user = torch.cat(parts)
    total = per_user.sum() / unit
    if reduction == "mean":
        return total / max(current.shape[0], 1)
    return total
