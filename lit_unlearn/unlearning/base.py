"""Base of the unlearning callbacks: take over a trained task's training step.

An unlearning method is a Lightning callback put in ``trainer.callbacks`` on top of a trained
checkpoint. In ``setup`` it loads the checkpoint's weights once, freezes what the method must not
touch, and registers itself on the task; the task then delegates ``training_step`` and
``configure_optimizers`` to it (manual optimisation, so the method can run several backward
passes and combine their gradients). Any task implementing
:class:`~lit_unlearn.unlearning.contract.UnlearnableTask` can be unlearned this way.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lit_unlearn.datamodules.protocols import UserIndexData, conforms
from lit_unlearn.unlearning.contract import UnlearnableTask, require_task

TaskT = TypeVar("TaskT", bound=UnlearnableTask)


class UnlearningCallback(Callback, ABC, Generic[TaskT]):
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
        self._world_size = 1

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        task: TaskT = require_task(pl_module, self.task_kind, type(self).__name__)  # type: ignore[assignment]
        self._world_size = trainer.world_size
        if self.checkpoint is not None:
            # Loaded on every fit start; when a run is resumed with --ckpt_path, Lightning
            # restores the resumed weights after setup, so this never applies twice.
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
            task.restore_weights(state["state_dict"])
        self.prepare_model(task)
        trainable = {id(p) for p in self.trainable_parameters(task)}
        for p in task.parameters():
            # Frozen before the strategy wraps the model (DDP must not wait for these grads).
            p.requires_grad_(id(p) in trainable)
        task.unlearning = self

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Refuse to start when a checkpoint output would land on the model being unlearned.

        Checked after every callback's setup (checkpoint directories are resolved by then) and
        before anything is saved. Paths are compared after resolving symlinks and relative
        parts, so ``runs/x/../x/checkpoints`` or a linked folder is the same directory.
        """
        protected: dict[str, str] = {}
        if self.checkpoint is not None:
            protected["the checkpoint it unlearns"] = self.checkpoint
        dm = getattr(trainer, "datamodule", None)
        if conforms(dm, UserIndexData) and cast(UserIndexData, dm).user_index is not None:
            protected["the user index it reads"] = str(cast(UserIndexData, dm).user_index)
        for callback in trainer.checkpoint_callbacks:
            dirpath = getattr(callback, "dirpath", None)
            if dirpath is None:
                continue
            out = Path(os.path.realpath(dirpath))
            for what, path in protected.items():
                if Path(os.path.realpath(path)).parent == out:
                    raise ValueError(
                        f"{type(self).__name__}: {type(callback).__name__} saves into {out}, the "
                        f"folder of {what} ({path}); its files (last.ckpt, best.ckpt...) could "
                        "overwrite or prune it. Point the checkpoint dirpath elsewhere."
                    )

    #: The task class the method needs (a subclass narrows it, e.g. to a RepresentationTask).
    task_kind: type = UnlearnableTask

    @property
    def world_size(self) -> int:
        """Processes of the fit this callback is set up in (1 before setup)."""
        return self._world_size

    def prepare_model(self, task: TaskT) -> None:
        """Change the loaded model before freezing (e.g. add a parameter); default: nothing."""

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if (
            stage == "fit"
            and isinstance(pl_module, UnlearnableTask)
            and pl_module.unlearning is self
        ):
            pl_module.unlearning = None
            for p in pl_module.parameters():
                p.requires_grad_(True)

    # ------------------------------------------------------------------ the method
    def trainable_parameters(self, task: TaskT) -> list[torch.nn.Parameter]:
        """Parameters the method updates (default: every parameter of the backbone)."""
        return list(task.model.parameters())

    def configure_optimizer(self, task: TaskT) -> torch.optim.Optimizer | None:
        """The optimiser over :meth:`trainable_parameters` (the task's configure_optimizers)."""
        params = self.trainable_parameters(task)
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr)
        return torch.optim.Adam(params, lr=self.lr)

    @abstractmethod
    def training_step(self, task: TaskT, batch: Any, batch_idx: int) -> Tensor:
        """One unlearning step: compute objectives, backward, combine, step; return a loss."""

    def state_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint}
