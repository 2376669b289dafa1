"""Class-unlearning accuracies: per class, on the retain set (A_r) and on the forget set (A_f).

DSDA (paper 004, Sec. 4.1) reports A_r = accuracy on the test images of the retain classes and
A_f = accuracy on the test images of the forget classes: sample-weighted accuracies over the
pooled images of each class set (not means of per-class accuracies; they coincide on balanced
test sets such as CIFAR's). :class:`ClassAccuracy` keeps per-class correct / total counts as
sum-reduced ``torchmetrics`` states, so every number is the same on 1 process and on several.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["ClassAccuracy", "subset_accuracy"]


def subset_accuracy(correct: Tensor, total: Tensor, classes: Sequence[int]) -> float:
    """Pooled accuracy over the samples of ``classes`` (NaN when they have none or are empty)."""
    if not classes:
        return float("nan")
    idx = torch.as_tensor(list(classes), dtype=torch.long, device=correct.device)
    n = float(total[idx].sum())
    return float(correct[idx].sum()) / n if n else float("nan")


class ClassAccuracy(Metric):
    """Per-class correct / total counts of argmax predictions.

    Args:
        num_classes: Number of classes K.
    """

    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.add_state("correct", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Count a batch: ``logits [B, K]`` (or predicted labels ``[B]``) against ``labels``."""
        pred = logits.argmax(dim=1) if logits.dim() == 2 else logits
        hit = (pred == labels).long()
        # Out of place (as RankingMetrics): CPU ddp_spawn passes the module through shared
        # memory and Lightning un-shares only parameters and buffers, so `+=` on these states
        # would add every rank's counts into one tensor that all processes see.
        self.correct = (
            self.correct + torch.bincount(labels, weights=hit, minlength=self.num_classes).long()
        )
        self.total = self.total + torch.bincount(labels, minlength=self.num_classes)

    def compute(self) -> Tensor:
        """Per-class accuracy ``[K]`` (NaN for a class without samples)."""
        return self.correct.double() / self.total.double()

    def counts(self) -> tuple[Tensor, Tensor]:
        """``(correct, total)`` per class, summed over every process."""
        with self.sync_context():
            return self.correct.clone(), self.total.clone()
