"""``FederatedErasureUnlearning``: erase an attribute from a *trained* federated recommender.

:class:`~.task.FederatedTask`'s ``final_erasure`` runs the null-calibrated erasure after the last
round of the fit that trains the model. This callback runs the same protocol
(:class:`~.erasure.FederatedErasure`: securely aggregated class sums, a pseudo-label null,
class shifts the clients add to their private rows) on a model trained earlier, from its
checkpoint, without another round: the trained federation is erased as it is, with settings
chosen after training (another ``ridge`` or ``quantile``, another attribute the clients hold).

With the same protocol settings, the erased model equals the one ``final_erasure`` gives in the
fit that trained it (the plan depends only on the final model, the labels and the erasure's
own seed; a test checks the representations agree). The checkpoint is never written: the
erased model goes to the fit's own ModelCheckpoint, which may not save into the checkpoint's
folder.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor

from lit_unlearn.datamodules.federated import FederatedData
from lit_unlearn.methods.federated.erasure import ErasurePlan, FederatedErasure
from lit_unlearn.methods.federated.task import _ERASED_KEY, _STATE_KEY, FederatedTask
from lit_unlearn.unlearning.base import UnlearningCallback

__all__ = ["FederatedErasureUnlearning"]


class FederatedErasureUnlearning(UnlearningCallback[FederatedTask]):
    """One-shot federated erasure of the task's ``attribute`` from a trained model's clients.

    The first training step plans from the clients' sums and applies the class shifts
    (:meth:`FederatedTask.erase`); later steps change nothing (a clock step each, so
    ``global_step`` advances and ModelCheckpoint saves the erased model). Run it for one step
    (``trainer.max_epochs: 1``, ``limit_train_batches: 1``, as
    ``configs/method/federated/erase_trained.yaml``).

    Args:
        checkpoint: The trained federated model (a ``FederatedTask`` checkpoint of the same
            data and backbone; its client states and round count are carried over).
        erasure: The protocol and its settings (default ``FederatedErasure()``).
        attribute: The attribute to erase, one of the DataModule's (default the task's
            ``attribute``, the one its clients trained with). Another erases a model trained
            against something else, or against nothing (the Original), for it: the clients
            hold every attribute's label of their own user.

    Raises:
        ValueError: At setup: the checkpoint was erased already, or the task also has a
            ``final_erasure`` (one erasure per model), no attribute to erase, or ``attribute``
            names none of the DataModule's attributes.
    """

    task_kind = FederatedTask

    def __init__(
        self,
        checkpoint: str | None = None,
        erasure: FederatedErasure | None = None,
        attribute: str | None = None,
    ) -> None:
        super().__init__(checkpoint=checkpoint, lr=1.0, optimizer="sgd")
        self.erasure = erasure if erasure is not None else FederatedErasure()
        self.attribute = attribute
        self.plan: ErasurePlan | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and isinstance(pl_module, FederatedTask):
            if pl_module.final_erasure is not None:
                raise ValueError(
                    "FederatedErasureUnlearning erases a trained model; this task also has a "
                    "final_erasure: drop one of them (model.init_args.final_erasure: null)"
                )
            if self.attribute is None and pl_module.attribute is None:
                raise ValueError(
                    "FederatedErasureUnlearning erases the task's `attribute` unless it names "
                    "its own: name one (model.init_args.attribute: gender, or the callback's "
                    "attribute)"
                )
            dm = getattr(trainer, "datamodule", None)
            if self.attribute is not None and isinstance(dm, FederatedData):
                names = dm.user_attributes.names
                if self.attribute not in names:
                    raise ValueError(
                        f"FederatedErasureUnlearning.attribute {self.attribute!r} is not among "
                        f"the DataModule's attributes {list(names)}"
                    )
        super().setup(trainer, pl_module, stage)

    def check_loaded(self, state: dict[str, Any]) -> None:
        if state.get(_ERASED_KEY, False):
            raise ValueError(
                f"{self.checkpoint} holds a model whose attribute was erased already; erasing "
                "it again would shrink what is left a second time: start from the checkpoint "
                "before its erasure"
            )

    def restore_extra(self, task: FederatedTask, state: dict[str, Any]) -> None:
        engine_state = state.get(_STATE_KEY)
        if engine_state is not None:
            # The module's setup (after the callbacks') builds the engine and loads this: the
            # erased checkpoint keeps the trained run's round count and client states.
            task.load_engine_state(engine_state)

    def configure_optimizer(self, task: FederatedTask) -> torch.optim.Optimizer | None:
        """A clock (SGD at learning rate 0): the erasure is one shot, but ``global_step`` must
        advance or ModelCheckpoint saves nothing."""
        return torch.optim.SGD(self.trainable_parameters(task), lr=0.0)

    def training_step(self, task: FederatedTask, batch: Any, batch_idx: int) -> Tensor:
        """Erase on the first step (never twice: a resumed fit restores ``one_shot_done``)."""
        if not self.one_shot_done:
            self.plan = task.erase(self.erasure, self.attribute)
            self.one_shot_done = True
        clock = task.optimizers()
        assert isinstance(clock, LightningOptimizer)
        clock.step()
        return torch.zeros(())
