"""Membership inference on softmax entropy: the MIA of SSD's code (Foster et al., AAAI 2024).

DSDA (paper 004, Sec. 4.1) reports MIA as defined by SSD's ``metrics.py`` (following
Chundawat et al. 2023): one feature per sample, the entropy of the model's softmax output
H(p) = -sum_k p_k log p_k; a logistic regression with ``class_weight="balanced"`` learns to
tell retain-train samples (members, label 1) from test samples (non-members, label 0); MIA is
the fraction of forget-train samples it predicts "member". A trained model is confident (low
entropy) on what it was trained on, so a high MIA means the forget samples still look seen;
after retraining without them they look like unseen data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["MIAResult", "entropy_mia", "softmax_entropy"]


def softmax_entropy(logits: Tensor) -> Tensor:
    """Entropy ``[N]`` of ``softmax(logits)`` (0 log 0 = 0), from log-probabilities (stable)."""
    logp = torch.log_softmax(logits.double(), dim=1)
    p = logp.exp()
    return -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(dim=1)


@dataclass(frozen=True)
class MIAResult:
    """Outcome of :func:`entropy_mia`.

    Attributes:
        mia: Fraction of target (forget-train) samples predicted "member", in [0, 1].
        attack_train_accuracy: Balanced accuracy of the attack on its own training data
            (members vs non-members): how separable the two are at all.
        num_members: Member samples the attack was trained on.
        num_nonmembers: Non-member samples it was trained on.
        num_targets: Target samples scored.
    """

    mia: float
    attack_train_accuracy: float
    num_members: int
    num_nonmembers: int
    num_targets: int


def entropy_mia(
    member_logits: Tensor, nonmember_logits: Tensor, target_logits: Tensor, seed: int = 0
) -> MIAResult:
    """SSD's MIA: logistic regression on softmax entropy, members vs non-members.

    Args:
        member_logits: ``[N_m, K]`` logits of retain-train samples (label 1).
        nonmember_logits: ``[N_n, K]`` logits of test samples (label 0).
        target_logits: ``[N_t, K]`` logits of forget-train samples (scored).
        seed: ``random_state`` of the logistic regression (lbfgs is deterministic anyway).

    Raises:
        ValueError: A set is empty.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    sizes = {
        "members": len(member_logits),
        "non-members": len(nonmember_logits),
        "targets": len(target_logits),
    }
    empty = [k for k, v in sizes.items() if v == 0]
    if empty:
        raise ValueError(f"MIA needs samples in every set; empty: {empty}")
    x = torch.cat([softmax_entropy(member_logits), softmax_entropy(nonmember_logits)])
    x_np = x.numpy().reshape(-1, 1)
    y = np.concatenate([np.ones(len(member_logits)), np.zeros(len(nonmember_logits))])
    clf = LogisticRegression(class_weight="balanced", solver="lbfgs", random_state=seed)
    clf.fit(x_np, y)
    pred = clf.predict(softmax_entropy(target_logits).numpy().reshape(-1, 1))
    return MIAResult(
        mia=float(pred.mean()),
        attack_train_accuracy=float(balanced_accuracy_score(y, clf.predict(x_np))),
        num_members=sizes["members"],
        num_nonmembers=sizes["non-members"],
        num_targets=sizes["targets"],
    )
