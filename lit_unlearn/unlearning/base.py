"""Base of the unlearning callbacks: take over a trained RecommenderTask's training step.

An unlearning method is a Lightning callback put in ``trainer.callbacks`` on top of a trained
checkpoint. In ``setup`` it loads the checkpoint's weights once, freezes what the method must not
touch, and registers itself on the task; the task then delegates ``training_step`` and
``configure_optimizers`` to it (manual optimisation, so the method can run several backward
passes and combine their gradients).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lit_unlearn.tasks.recommendation import RecommenderTask


class UnlearningCallback(Callback, ABC):
    """Loads the model to unlearn, freezes non-updated parameters, owns the training step.

    Args:
        checkpoint: Lightning checkpoint of the trained model to unlearn. ``None`` unlearns the
            weights the task already has (e.g. when called from Python after training).
        lr: Learning rate over the updated parameters.
        optimizer: ``adam`` or ``sgd`` (plain gradient descent, as AttrCloak's Algorithm 1
            writes the update; it keeps MGDA's common-descent guarantee, which Adam's
            per-coordinate rescaling does not).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.optimizer = optimizer
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint to unlearn {checkpoint!r} does not exist")
        self.checkpoint = checkpoint
        self.lr = lr

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, RecommenderTask):
            raise TypeError(
                f"{type(self).__name__} unlearns a RecommenderTask, got {type(pl_module).__name__}"
            )
        if self.checkpoint is not None:
            # Loaded on every fit start; when a run is resumed with --ckpt_path, Lightning
            # restores the resumed weights after setup, so this never applies twice.
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
            model = pl_module.model
            if model.user_shift is not None and "model.user_shift" not in state["state_dict"]:
                # A shift left by an earlier fit in this process: the checkpoint has none.
                model.user_shift = None
            pl_module.load_state_dict(state["state_dict"])
        self.prepare_model(pl_module)
        trainable = {id(p) for p in self.trainable_parameters(pl_module)}
        for p in pl_module.parameters():
            # Frozen before the strategy wraps the model (DDP must not wait for these grads).
            p.requires_grad_(id(p) in trainable)
        pl_module.unlearning = self

    def prepare_model(self, task: RecommenderTask) -> None:
        """Change the loaded model before freezing (e.g. add a parameter); default: nothing."""

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if (
            stage == "fit"
            and isinstance(pl_module, RecommenderTask)
            and pl_module.unlearning is self
        ):
            pl_module.unlearning = None
            for p in pl_module.parameters():
                p.requires_grad_(True)

    # ------------------------------------------------------------------ the method
    def trainable_parameters(self, task: RecommenderTask) -> list[torch.nn.Parameter]:
        """Parameters the method updates (default: every parameter)."""
        return list(task.model.parameters())

    def configure_optimizer(self, task: RecommenderTask) -> torch.optim.Optimizer | None:
        """The optimiser over :meth:`trainable_parameters` (the task's configure_optimizers)."""
        params = self.trainable_parameters(task)
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr)
        return torch.optim.Adam(params, lr=self.lr)

    @abstractmethod
    def training_step(
        self, task: RecommenderTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        """One unlearning step: compute objectives, backward, combine, step; return a loss."""

    def state_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint}
