"""Epoch-mean training loss, step values logged at the logger's cadence (manual optimisation)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["EpochLossTracking"]


class EpochLossTracking:
    """LightningModule mixin: :meth:`track_loss` each step, :meth:`log_epoch_loss` at epoch end.

    ``self.log`` costs ~1 ms per call on CPU (result-collection bookkeeping), as much as a whole
    small-model step, so the step value is logged only every ``log_every_n_steps`` steps while
    the epoch mean is accumulated on the device.
    """

    _epoch_loss: list[Any]

    def track_loss(self, name: str, loss: Tensor, batch_size: int | None = None) -> None:
        """Accumulate the epoch mean and log ``name`` at the logger's cadence only."""
        module: Any = self
        self._epoch_loss[0] = self._epoch_loss[0] + loss.detach()
        self._epoch_loss[1] += 1
        if module.global_step % max(getattr(module.trainer, "log_every_n_steps", 50), 1) == 0:
            module.log(
                name, loss.detach(), prog_bar=True, on_step=True, on_epoch=False,
                batch_size=batch_size,
            )  # fmt: skip

    def on_train_epoch_start(self) -> None:
        self._epoch_loss = [torch.zeros((), device=getattr(self, "device", "cpu")), 0]

    def log_epoch_loss(self) -> None:
        """Log ``train/loss_epoch``: the mean over every rank's steps of this epoch."""
        total, count = self._epoch_loss
        if count:
            module: Any = self
            module.log("train/loss_epoch", total / count, sync_dist=True)
