"""Base of the unlearning callbacks: take over a trained task's training step.

An unlearning method is a Lightning callback put in ``trainer.callbacks`` on top of a trained
checkpoint. In ``setup`` it loads the checkpoint's weights once, freezes what the method must not
touch, and registers itself on the task; the task then delegates ``training_step`` and
``configure_optimizers`` to it (manual optimisation, so the method can run several backward
passes and combine their gradients). Any task implementing
:class:`~lit_unlearn.unlearning.contract.UnlearnableTask` can be unlearned this way.

Resuming (``fit --ckpt_path``) must give the model of the uninterrupted run. Two things would
break that, and the base handles both: whatever a method derives from the *original* model at
fit start (a retention reference, synthetic data) must not be derived from the restored,
half-unlearned weights (:meth:`UnlearningCallback.original_weights`), and a one-shot edit
applied at fit start must not be applied again (:attr:`UnlearningCallback.one_shot_done`, saved
in the checkpoint).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lit_unlearn.datamodules.protocols import UserIndexData, conforms
from lit_unlearn.fingerprint import check_checkpoint, read_checkpoint
from lit_unlearn.unlearning.contract import UnlearnableTask, require_task
from lit_unlearn.validation import check_positive

TaskT = TypeVar("TaskT", bound=UnlearnableTask)


def protected_inputs(trainer: pl.Trainer) -> dict[str, str]:
    """Files a fit reads and must never write over: models it unlearns, the user index.

    Returns:
        ``{what: path}`` for every unlearning callback's ``checkpoint`` and the DataModule's
        ``user_index``.
    """
    protected: dict[str, str] = {}
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        checkpoint = getattr(callback, "checkpoint", None)
        if isinstance(callback, UnlearningCallback) and checkpoint is not None:
            what = "the checkpoint it unlearns"
            protected[what if what not in protected else f"{what} ({type(callback).__name__})"] = (
                checkpoint
            )
    dm = getattr(trainer, "datamodule", None)
    if conforms(dm, UserIndexData) and cast(UserIndexData, dm).user_index is not None:
        protected["the user index it reads"] = str(cast(UserIndexData, dm).user_index)
    return protected


def refuse_outputs_over_inputs(trainer: pl.Trainer, who: str) -> None:
    """Raise when a checkpoint callback saves into the folder of a :func:`protected_inputs` file.

    Call it after every callback's setup (checkpoint directories are resolved by then) and
    before anything is saved. Paths are compared after resolving symlinks and relative parts,
    so ``runs/x/../x/checkpoints`` or a linked folder is the same directory.

    Raises:
        ValueError: Naming the callback, the folder and the input it would overwrite or prune.
    """
    protected = protected_inputs(trainer)
    for callback in trainer.checkpoint_callbacks:
        dirpath = getattr(callback, "dirpath", None)
        if dirpath is None:
            continue
        out = Path(os.path.realpath(dirpath))
        for what, path in protected.items():
            if Path(os.path.realpath(path)).parent == out:
                raise ValueError(
                    f"{who}: {type(callback).__name__} saves into {out}, the folder of {what} "
                    f"({path}); its files (last.ckpt, best.ckpt...) could overwrite or prune "
                    "it. Point the checkpoint dirpath elsewhere."
                )


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
        check_positive("lr", lr)  # `lr <= 0` alone lets NaN through
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.optimizer = optimizer
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint to unlearn {checkpoint!r} does not exist")
        self.checkpoint = checkpoint
        self.lr = lr
        self._world_size = 1
        #: The task's weights as set up to be unlearned, kept from setup until training starts
        #: (a resumed fit restores the half-unlearned weights over them in between).
        self._original: dict[str, Tensor] | None = None
        #: Whether a one-shot method already edited the weights (saved in checkpoints, so a
        #: resumed fit never applies the edit a second time).
        self.one_shot_done = False

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        task: TaskT = require_task(pl_module, self.task_kind, type(self).__name__)  # type: ignore[assignment]
        self._world_size = trainer.world_size
        if self.checkpoint is not None:
            # Loaded on every fit start; when a run is resumed with --ckpt_path, Lightning
            # restores the resumed weights after setup, so this never applies twice.
            state = read_checkpoint(self.checkpoint, what="checkpoint to unlearn")
            # The data module is set up before callbacks: a model of other data or another
            # architecture is refused here, naming the checkpoint and what differs.
            check_checkpoint(state, task, getattr(trainer, "datamodule", None), self.checkpoint)
            self.check_loaded(state)
            task.restore_weights(state["state_dict"])
            self.restore_extra(task, state)
        self.prepare_model(task)
        # The weights now are the model to unlearn. A resumed fit (--ckpt_path) restores the
        # checkpoint's partly unlearned weights right after setup, and Lightning tells whether
        # it resumes only then: keep a copy until training starts, for what a method derives
        # from the original model (see original_weights).
        self._original = {k: v.detach().clone() for k, v in task.state_dict().items()}
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
        refuse_outputs_over_inputs(trainer, type(self).__name__)

    @contextmanager
    def original_weights(self, task: TaskT) -> Iterator[None]:
        """Run the block with the task holding the weights of the model to unlearn.

        In a fresh fit these are the task's weights until the first step; in a resumed fit
        Lightning has restored the checkpoint's partly unlearned weights, so the original ones
        (kept in ``setup``) are swapped in for the block and the restored ones put back after.
        Use it for everything derived from the original model at fit start.
        """
        if self._original is None:  # outside a fit's start: the task's weights are the ones
            yield
            return
        current = {k: v.detach().clone() for k, v in task.state_dict().items()}
        task.load_state_dict(self._original)
        try:
            yield
        finally:
            task.load_state_dict(current)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Everything derived from the original model is derived by now: free the copy.
        self._original = None

    #: The task class the method needs (a subclass narrows it, e.g. to a RepresentationTask).
    task_kind: type = UnlearnableTask

    @property
    def world_size(self) -> int:
        """Processes of the fit this callback is set up in (1 before setup)."""
        return self._world_size

    def check_loaded(self, state: dict[str, Any]) -> None:
        """Refuse a loaded checkpoint this method cannot unlearn (default: accept it)."""

    def restore_extra(self, task: TaskT, state: dict[str, Any]) -> None:
        """Restore what the checkpoint holds beside the weights (default: nothing)."""

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
        return {"checkpoint": self.checkpoint, "one_shot_done": self.one_shot_done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (subclasses extending it call ``super()``)."""
        self.one_shot_done = bool(state_dict.get("one_shot_done", False))
