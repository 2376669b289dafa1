"""Stop training when a monitored loss stops improving by a *relative* margin."""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import EarlyStopping
from torch import Tensor

from lit_unlearn.validation import check_count


class RelativeEarlyStopping(EarlyStopping):
    """Early stopping on a loss whose scale is unknown in advance (e.g. the ENMF objective).

    An epoch counts as an improvement when the monitored value beats the best so far by more
    than ``rel_delta * |best|``; after ``patience`` epochs without one, training stops. By default
    it watches the task's epoch training loss, so it needs no validation split: the stopping
    rule of the original model, Retrain, Retrain* and warm-start in the AltEraser comparison.

    Args:
        monitor: Logged quantity to watch.
        rel_delta: Relative improvement that resets the patience.
        patience: Epochs without improvement before stopping.
        mode: ``min`` or ``max``.
        check_on_train_epoch_end: Check after each training epoch (the default, for training
            losses) rather than after validation.
    """

    def __init__(
        self,
        monitor: str = "train/loss_epoch",
        rel_delta: float = 1e-3,
        patience: int = 3,
        mode: str = "min",
        check_on_train_epoch_end: bool = True,
    ) -> None:
        if not (math.isfinite(rel_delta) and rel_delta >= 0):
            raise ValueError(f"rel_delta must be a finite float >= 0, got {rel_delta}")
        check_count("patience", patience, minimum=0)
        super().__init__(
            monitor=monitor,
            patience=patience,
            mode=mode,
            check_on_train_epoch_end=check_on_train_epoch_end,
        )
        self.rel_delta = rel_delta

    def _evaluate_stopping_criteria(self, current: Tensor) -> tuple[bool, str | None]:
        best = float(self.best_score)
        margin = self.rel_delta * abs(best) if math.isfinite(best) else 0.0
        # EarlyStopping compares ``current - min_delta`` with the best, min_delta signed by mode.
        self.min_delta = margin if self.mode == "max" else -margin
        return super()._evaluate_stopping_criteria(current)
