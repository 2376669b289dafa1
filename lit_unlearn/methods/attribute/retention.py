"""Data-free retention loss: keep the unlearned embeddings close to the original ones.

AttrCloak's ``L^Reg`` (Eq. 21): when the interaction data is gone, recommendation quality is kept
by limiting how far each user embedding moves, ``sum_i ||em_i - em'_i||^2``, on the rationale that
nearby parameters give similar recommendations. The same parameter-space L2 term is the ``-R`` in
the U2U-R / D2D-R baselines (:mod:`lit_unlearn.methods.attribute.distinguishability`).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

__all__ = ["embedding_regularization"]


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
