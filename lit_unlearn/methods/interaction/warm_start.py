"""Warm-start unlearning: fine-tune the trained model on the remaining data (paper 003, 4.1)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_unlearn.tasks.recommendation import RecommenderTask
from lit_unlearn.unlearning.base import UnlearningCallback
from lit_unlearn.validation import check_non_negative


class WarmStart(UnlearningCallback[RecommenderTask]):
    """Continue training from the original model on whatever the DataModule serves (``D_r``).

    The naive unlearner of AltEraser's section 4.1: the training objective is unchanged, only
    the starting point is the trained model instead of a random one. Pair it with a DataModule
    that trains on the remaining data (``ForgettingData(train_on="remaining")``) and a stopping
    rule (``RelativeEarlyStopping``).

    Args:
        checkpoint: The trained model to start from.
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
    """

    task_kind = RecommenderTask

    def __init__(
        self, checkpoint: str | None = None, lr: float = 1e-3, weight_decay: float = 0.0
    ) -> None:
        super().__init__(checkpoint=checkpoint, lr=lr)
        self.weight_decay = check_non_negative("weight_decay", weight_decay)

    def configure_optimizer(self, task: RecommenderTask) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.trainable_parameters(task), lr=self.lr, weight_decay=self.weight_decay
        )

    def training_step(
        self, task: RecommenderTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        return task.recommendation_step(batch)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lr": self.lr}
