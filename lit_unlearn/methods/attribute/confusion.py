"""Cross-fitted adversarial confusion: push every user to the decision boundary of an attacker
that never saw it (plain torch, no Lightning).

Issue 23's inversion comes from matching a statistic of the *whole* population exactly: each
user's own noise is written into the others' target, so a held-out user ends on the wrong side
of any attacker trained on the rest. This objective asks the held-out question directly:

* the labelled users of an attribute are split once, stratified by class, into ``K`` folds;
* head ``k`` (an MLP like the audit's attacker, class-balanced cross-entropy, trained on the
  detached, standardised representation of the users *outside* fold ``k``) is the attacker an
  outsider would train on everybody else;
* each user in fold ``k`` descends the cross-entropy between head ``k``'s posterior and the
  uniform distribution, i.e. ``KL(uniform || p_k(. | z_u))`` (Roy & Boddeti's maximum-entropy
  confusion, here cross-fitted). Its gradient vanishes where head ``k`` is undecided about
  the user: a user stops *at* the boundary of an attacker trained on the others instead of
  crossing it, which is what a reversed gradient (or exact moment matching) does.

The heads are trained with balanced weights, so "undecided" is uniform over the classes (the
posterior of a balanced head is the likelihood ratio, chance for balanced accuracy). Heads and
representation alternate: a few head steps on the current representation, then one step of the
representation against the frozen heads (the callback,
:class:`~lit_unlearn.methods.attribute.adversarial.AdversarialConfusion`).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "FoldHeads",
    "confusion_divergence",
    "head_training_loss",
    "replicated_folds",
    "stratified_folds",
]


def stratified_folds(codes: Tensor, folds: int, generator: torch.Generator) -> Tensor:
    """Assign each labelled user to one of ``folds`` folds, stratified by class.

    Args:
        codes: Class code per user ``[N]`` (``-1`` = unlabelled).
        folds: Number of folds (``>= 2``).
        generator: Seeds the assignment.

    Returns:
        Fold per user ``[N]`` (``-1`` for unlabelled users). Each class's users are shuffled and
        dealt round-robin, so every fold holds ``floor`` or ``ceil`` of the class's share.

    Raises:
        ValueError: Fewer than 2 folds, or a labelled class with fewer users than folds (some
            head would never see it and its push would be undefined).
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    codes = codes.cpu()
    out = torch.full_like(codes, -1)
    for c in torch.unique(codes[codes >= 0]).tolist():
        members = torch.nonzero(codes == c).flatten()
        if members.numel() < folds:
            raise ValueError(
                f"class {c} has {members.numel()} labelled users, fewer than folds={folds}: "
                "every head must see every class"
            )
        order = members[torch.randperm(members.numel(), generator=generator)]
        out[order] = torch.arange(order.numel()) % folds
    return out


class FoldHeads(nn.Module):
    """``K`` independent MLP heads evaluated as one batched network.

    Head ``k`` maps ``[N, d] -> [N, C]`` through ``layers - 1`` ReLU hidden layers of width
    ``hidden``; all heads run at once (weights stacked on a leading ``K`` axis), so one
    optimiser step trains every head on its own users (Adam's update is element-wise, the
    heads' losses are summed and share no parameter).

    Args:
        folds: Number of heads ``K``.
        input_dim: Representation width ``d``.
        num_classes: Classes ``C``.
        hidden: Hidden width (the audit's MLP attacker: 100).
        layers: Linear layers per head (``>= 1``; 1 is multinomial logistic regression).
        generator: Seeds the (PyTorch-default-style uniform) initialisation.
    """

    def __init__(
        self,
        folds: int,
        input_dim: int,
        num_classes: int,
        hidden: int = 100,
        layers: int = 3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        widths = [input_dim] + [hidden] * (layers - 1) + [num_classes]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(widths):
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(folds, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            b = (torch.rand(folds, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    @property
    def folds(self) -> int:
        return int(self.weights[0].shape[0])

    def forward(self, x: Tensor, *, frozen: bool = False) -> Tensor:
        """Every head's logits for every row: ``[N, d] -> [K, N, C]``.

        Args:
            x: Standardised representation.
            frozen: Use detached weights, so only ``x`` receives a gradient (the
                representation's step against fixed heads).
        """
        h = x.unsqueeze(0).expand(self.folds, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if frozen:
                w, b = w.detach(), b.detach()
            h = torch.baddbmm(b.unsqueeze(1), h, w)
            if i < last:
                h = F.relu(h)
        return h


def replicated_folds(
    codes: Tensor, folds: int, replicates: int, generator: torch.Generator
) -> Tensor:
    """``replicates`` independent stratified fold draws, as global head ids.

    Replicate ``r``'s fold ``k`` is judged by head ``r * folds + k``, so a :class:`FoldHeads`
    of ``folds * replicates`` heads serves them all. Averaging a user's push over several
    heads that never saw it keeps what they agree on (the attribute) and averages out what
    each one learnt from its own training users' noise.

    Returns:
        ``[replicates, N]`` head ids (``-1``: unlabelled).
    """
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    rows = []
    for r in range(replicates):
        f = stratified_folds(codes, folds, generator)
        rows.append(torch.where(f >= 0, f + r * folds, f))
    return torch.stack(rows)


def _as_rows(assignment: Tensor) -> Tensor:
    """``[N]`` (one fold draw) or ``[R, N]`` head ids, as ``[R, N]``."""
    if assignment.dim() == 1:
        return assignment.unsqueeze(0)
    if assignment.dim() != 2:
        raise ValueError(f"fold assignment must be [N] or [R, N], got {tuple(assignment.shape)}")
    return assignment


def _balanced_weights(codes: Tensor, row: Tensor, head: int, num_classes: int) -> Tensor:
    """Per-user weight for ``head`` of a fold draw ``row``: 0 for the head's own fold and for
    unlabelled users, else the inverse of the user's class count among the head's training
    users, normalised to mean 1 over them (sklearn's ``balanced``)."""
    train = (row >= 0) & (row != head)
    counts = torch.bincount(codes[train], minlength=num_classes).to(torch.float32)
    present = counts > 0
    per_class = torch.zeros(num_classes, device=codes.device)
    per_class[present] = train.sum().float() / (present.sum().float() * counts[present])
    weights = torch.zeros(codes.shape[0], device=codes.device)
    weights[train] = per_class[codes[train]]
    return weights


def head_training_loss(
    heads: FoldHeads, x: Tensor, codes: Tensor, folds: Tensor, num_classes: int
) -> Tensor:
    """Sum over heads of each head's class-balanced cross-entropy on its training users (the
    labelled users outside its fold, in its fold draw). ``x`` should be detached: this trains
    the heads only.

    Args:
        heads: ``folds_per_draw * R`` heads.
        x: Standardised representation ``[N, d]``.
        codes: Class per user ``[N]`` (``-1``: unlabelled).
        folds: Head ids ``[N]`` (one draw) or ``[R, N]`` (:func:`replicated_folds`).
        num_classes: Classes ``C``.
    """
    rows = _as_rows(folds)
    count = heads.folds
    per_draw = count // rows.shape[0]
    if per_draw * rows.shape[0] != count:
        raise ValueError(f"{count} heads cannot serve {rows.shape[0]} fold draws equally")
    logits = heads(x)  # [H, N, C]
    weights = torch.stack(
        [_balanced_weights(codes, rows[h // per_draw], h, num_classes) for h in range(count)]
    ).to(logits.dtype)  # [H, N]
    target = codes.clamp_min(0).unsqueeze(0).expand(count, -1)
    ce = F.cross_entropy(logits.reshape(-1, num_classes), target.reshape(-1), reduction="none")
    ce = ce.view(count, -1)
    return ((weights * ce).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-12)).sum()


def confusion_divergence(heads: FoldHeads, x: Tensor, folds: Tensor, margin: float = 0.0) -> Tensor:
    """Mean over labelled users (and fold draws) of ``KL(uniform || p_h(. | x_u))``, ``h`` the
    head of the user's fold in each draw.

    Zero exactly when every user's held-out heads are undecided about it; the heads are frozen
    (only ``x`` gets a gradient). Uses only the user's own heads: an attacker that trained on
    the user would see its own training data, which is not the question.

    Args:
        heads: The fold heads.
        x: Standardised representation ``[N, d]`` (with grad).
        folds: Head ids ``[N]`` or ``[R, N]`` (``-1``: unlabelled, left out; a user is
            labelled in every draw or in none).
        margin: Each user's divergence (its mean over the draws) counts only above this value
            (a hinge): a user its held-out heads already find nearly undecided stops moving,
            instead of being pulled to exactly uniform. ``0``: the plain mean.

    Returns:
        Scalar ``>= 0`` (``0`` when no user is labelled).
    """
    rows = _as_rows(folds)
    labelled = rows[0] >= 0
    if not bool(labelled.any()):
        return x.sum() * 0.0
    logits = heads(x[labelled], frozen=True)  # [H, n, C]
    users = torch.arange(int(labelled.sum()), device=x.device)
    own = torch.stack([logits[row[labelled], users] for row in rows])  # [R, n, C]
    log_p = F.log_softmax(own, dim=-1)
    num_classes = own.shape[-1]
    # KL(u || p) = sum_c (1/C) (log(1/C) - log p_c), per draw and user, then over draws
    per_user = (-math.log(num_classes) - log_p.mean(dim=-1)).mean(dim=0)  # [n]
    if margin > 0:
        per_user = (per_user - margin).clamp_min(0.0)
    return per_user.mean()
