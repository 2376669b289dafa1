"""Fine-tune: continue training the original classifier on the retain classes only.

The naive class-unlearning reference (Golatkar et al. 2020; the "FT" baseline of SSD's code):
start from the trained model, minimise cross-entropy on D_r for a few epochs and rely on
catastrophic forgetting to erase C_f. DSDA's Fig. 2 variant fine-tunes on synthetic data
instead; it comes with that method.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from lit_unlearn.tasks.classification import ClassificationTask
from lit_unlearn.unlearning.base import UnlearningCallback
from lit_unlearn.validation import check_finite

__all__ = ["FineTune"]


class FineTune(UnlearningCallback[ClassificationTask]):
    """Continue training on the retain classes (pair with ``data.train_on: retain``).

    Args:
        checkpoint: The trained classifier to unlearn (``None``: the task's current weights).
        lr: Learning rate.
        optimizer: ``sgd`` (with ``momentum``) or ``adam``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
    """

    task_kind = ClassificationTask
    #: Training data the method reads (DSDA's Table 1 column).
    data_needed: ClassVar[tuple[str, ...]] = ("D_r",)

    def __init__(
        self,
        checkpoint: str | None = None,
        lr: float = 0.01,
        optimizer: Literal["adam", "sgd"] = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(checkpoint=checkpoint, lr=lr, optimizer=optimizer)
        check_finite("momentum", momentum)  # a comparison alone lets NaN through
        check_finite("weight_decay", weight_decay)
        if not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(
                f"need 0 <= momentum < 1 and weight_decay >= 0, got {momentum}, {weight_decay}"
            )
        self.momentum = momentum
        self.weight_decay = weight_decay

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = getattr(trainer, "datamodule", None)
        if stage == "fit" and getattr(dm, "train_on", "retain") != "retain":
            raise ValueError(
                "FineTune continues training on the retain classes: set data.train_on=retain "
                f"(the DataModule serves {getattr(dm, 'train_on', '?')!r} classes)"
            )
        if stage == "fit" and getattr(dm, "mode", "data_dependent") != "data_dependent":
            raise ValueError(
                "FineTune needs the retain training data: set data.mode=data_dependent"
            )
        super().setup(trainer, pl_module, stage)

    def configure_optimizer(self, task: ClassificationTask) -> torch.optim.Optimizer:
        params = self.trainable_parameters(task)
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def training_step(
        self, task: ClassificationTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        loss = task.task_loss(batch)
        opt = task.optimizers()
        assert not isinstance(opt, list)
        opt.zero_grad(set_to_none=True)
        task.manual_backward(loss)
        opt.step()
        task.track_loss("train/loss", loss)
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "lr": self.lr}
