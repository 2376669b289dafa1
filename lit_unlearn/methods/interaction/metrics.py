"""Metrics of interaction unlearning for the forgetting users (AltEraser, paper 003, Tables 3-4).

* re-predict score: the mean model output on the forgotten interactions ``D_f`` (a model that
  still remembers them scores them high; Table 3);
* top-k lists of the forgetting users over the items outside their remaining training data,
  compared with Retrain's by RBO@k (:mod:`lit_unlearn.metrics.rbo`);
* Recall@k / NDCG@k of the forgetting users on their test items (full ranking over every item
  not in ``D_r``; recall divides by the number of test items, as in RecBole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_unlearn.datamodules.sampling import build_exclusion_mask, interaction_keys
from lit_unlearn.metrics.ranking import metrics_from_hits, topk_hits
from lit_unlearn.metrics.rbo import rbo_at_k
from lit_unlearn.models.base import Recommender

__all__ = [
    "ForgettingEvaluation",
    "evaluate_forgetting",
    "forgetting_metrics",
    "repredict_score",
    "top_k_lists",
]


@torch.no_grad()
def repredict_score(model: Recommender, forget_pairs: Tensor) -> float:
    """Mean score of the model on the forgotten pairs ``[n_f, 2]``."""
    if forget_pairs.numel() == 0:
        raise ValueError("no forgotten pairs to re-predict")
    was_training = model.training
    model.eval()
    try:
        scores = model(forget_pairs[:, 0], forget_pairs[:, 1])
    finally:
        model.train(was_training)
    return float(scores.float().mean())


@torch.no_grad()
def _eval_scores(model: Recommender, users: Tensor) -> Tensor:
    """Float scores of ``users`` against every item, in eval mode (mode restored after)."""
    was_training = model.training
    model.eval()
    try:
        return model.full_scores(users).float()
    finally:
        model.train(was_training)


@torch.no_grad()
def top_k_lists(model: Recommender, users: Tensor, exclude_pairs: Tensor, k: int) -> Tensor:
    """Top-``k`` item ids ``[U, k]`` of ``users``, items in ``exclude_pairs`` masked out."""
    n_items = model.num_items
    keys = torch.unique(interaction_keys(exclude_pairs[:, 0], exclude_pairs[:, 1], n_items))
    scores = _eval_scores(model, users)
    mask = build_exclusion_mask(users.cpu(), keys.cpu(), n_items).to(scores.device)
    scores = scores.masked_fill(mask, float("-inf"))
    return scores.topk(k, dim=1).indices


@dataclass(frozen=True)
class ForgettingEvaluation:
    """One model's Table 3/4 quantities, with what an audit or a confidence interval needs.

    Attributes:
        values: ``repredict``, ``recall@k``, ``ndcg@k`` (means over the evaluated users) and,
            with reference lists, ``rbo@k`` (mean over the forgetting users).
        lists: Top-``max(ks)`` item ids of every forgetting user ``[U, max(ks)]`` (items of
            ``D_r`` excluded), the lists RBO compares.
        scores: The scores of ``lists`` ``[U, max(ks)]``.
        users: The evaluated users ``[B]``: the forgetting users with test items, sorted.
        per_user: ``recall@k`` / ``ndcg@k`` of each evaluated user, ``{name: Tensor[B]}``.
    """

    values: dict[str, float]
    lists: Tensor
    scores: Tensor
    users: Tensor
    per_user: dict[str, Tensor]


@torch.no_grad()
def evaluate_forgetting(
    model: Recommender,
    forget_users: Tensor,
    forget_pairs: Tensor,
    remaining_pairs: Tensor,
    test_pairs: Tensor,
    ks: Sequence[int] = (10, 20, 50),
    reference_lists: Tensor | None = None,
    rbo_p: float = 0.9,
) -> ForgettingEvaluation:
    """The Table 3/4 quantities of one model, its lists and the per-user accuracy.

    Args: as :func:`forgetting_metrics`.
    """
    ks = sorted(ks)
    k_max = ks[-1]
    device = forget_users.device
    n_items = model.num_items
    keys = torch.unique(interaction_keys(remaining_pairs[:, 0], remaining_pairs[:, 1], n_items))
    scores = _eval_scores(model, forget_users)
    mask = build_exclusion_mask(forget_users.cpu(), keys.cpu(), n_items).to(scores.device)
    top = scores.masked_fill(mask, float("-inf")).topk(k_max, dim=1)
    lists = top.indices
    out: dict[str, float] = {"repredict": repredict_score(model, forget_pairs)}
    if reference_lists is not None:
        for k in ks:
            out[f"rbo@{k}"] = float(rbo_at_k(lists[:, :k], reference_lists[:, :k], p=rbo_p).mean())
    # Test ranking of the forgetting users that have test items.
    test = test_pairs[torch.isin(test_pairs[:, 0], forget_users.to(test_pairs.device))]
    users = torch.unique(test[:, 0]).to(device)
    per_user: dict[str, Tensor] = {}
    if users.numel():
        exclude_keys = keys.cpu()
        target_keys = torch.unique(interaction_keys(test[:, 0], test[:, 1], n_items)).cpu()
        scores = _eval_scores(model, users)
        exclude = build_exclusion_mask(users.cpu(), exclude_keys, n_items).to(scores.device)
        targets = build_exclusion_mask(users.cpu(), target_keys, n_items).to(scores.device)
        hits = topk_hits(scores, targets, exclude, k=k_max)
        values = metrics_from_hits(hits, targets.sum(dim=1), ks)
        for k in ks:
            for name in (f"recall@{k}", f"ndcg@{k}"):
                per_user[name] = values[name]
                out[name] = float(values[name].mean())
    return ForgettingEvaluation(out, lists, top.values, users, per_user)


@torch.no_grad()
def forgetting_metrics(
    model: Recommender,
    forget_users: Tensor,
    forget_pairs: Tensor,
    remaining_pairs: Tensor,
    test_pairs: Tensor,
    ks: Sequence[int] = (10, 20, 50),
    reference_lists: Tensor | None = None,
    rbo_p: float = 0.9,
) -> tuple[dict[str, float], Tensor]:
    """The Table 3/4 quantities of one model, and its top-``max(ks)`` lists.

    Args:
        model: The (original, retrained or unlearned) backbone, on the device of the tensors.
        forget_users: Forgetting users ``[U]``.
        forget_pairs: ``D_f`` ``[n_f, 2]``.
        remaining_pairs: ``D_r`` ``[n_r, 2]``: items excluded from every list and ranking.
        test_pairs: Test pairs of all users; only the forgetting users' are used.
        ks: Cut-offs.
        reference_lists: Retrain's top-``max(ks)`` lists of the same users, for RBO@k.
        rbo_p: RBO persistence.

    Returns:
        ``({"repredict", "recall@k", "ndcg@k", "rbo@k"}, lists [U, max(ks)])``.
    """
    result = evaluate_forgetting(
        model, forget_users, forget_pairs, remaining_pairs, test_pairs, ks, reference_lists, rbo_p
    )
    return result.values, result.lists
