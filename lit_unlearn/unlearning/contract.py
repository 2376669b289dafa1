"""The unlearning contract: what a task offers so that a method callback can take it over.

A method never reaches into a task's private state. It sees an :class:`UnlearnableTask`: a
LightningModule that keeps its backbone in ``model``, can restore trained weights, lets a
callback own its training step (manual optimisation) and exposes its own training loss. Methods
that work on per-subject representations (attribute unlearning: one row per user) need a
:class:`RepresentationTask`. Recommendation, classification and federated tasks implement the
same two classes, so one base callback (:class:`~lit_unlearn.unlearning.base.UnlearningCallback`)
unlearns all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

__all__ = ["RepresentationTask", "UnlearnableTask", "UnlearningStep", "require_task"]


class UnlearningStep(Protocol):
    """What an unlearning callback provides when it takes over a task's training step."""

    def training_step(self, task: Any, batch: Any, batch_idx: int) -> Tensor: ...

    def configure_optimizer(self, task: Any) -> torch.optim.Optimizer | None: ...


class UnlearnableTask(pl.LightningModule, ABC):
    """A LightningModule an unlearning callback can take over.

    Subclasses keep their backbone in ``model``, run manual optimisation, and delegate
    ``training_step`` / ``configure_optimizers`` to ``unlearning`` whenever a callback set it
    (see :meth:`delegated_step`).

    Attributes:
        model: The backbone (a plain ``nn.Module``) whose parameters a method may update.
        unlearning: The callback that owns the training step, or None (the task's own step).
    """

    model: nn.Module
    unlearning: UnlearningStep | None = None

    @abstractmethod
    def restore_weights(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load the weights of the trained model to unlearn (a checkpoint's ``state_dict``)."""

    @abstractmethod
    def task_loss(self, batch: Any) -> Tensor:
        """The task's own training loss on a batch (a retention objective for unlearning).

        Raises:
            FloatingPointError: The loss is NaN/inf (never silently stepped on).
        """

    @property
    def world_size(self) -> int:
        """Processes of the run (1 outside a Trainer)."""
        return self._trainer.world_size if self._trainer is not None else 1


class RepresentationTask(UnlearnableTask):
    """An unlearnable task with one representation row per data subject (e.g. per user)."""

    @abstractmethod
    def representation(self) -> Tensor:
        """``[N, d]`` rows the model computes its outputs from, differentiable (for losses)."""

    @abstractmethod
    def representation_parameters(self) -> list[nn.Parameter]:
        """The parameters that produce :meth:`representation` (what attribute methods update)."""

    @abstractmethod
    def enable_representation_offset(self) -> nn.Parameter | None:
        """Make the representation itself a free variable: a per-row offset parameter.

        Returns:
            The offset (created once, then reused), or None when the representation already is
            a parameter table (:meth:`representation_parameters` is that table).
        """

    @property
    @abstractmethod
    def representation_offset(self) -> nn.Parameter | None:
        """The offset made by :meth:`enable_representation_offset`, if any."""

    @property
    @abstractmethod
    def representation_needs_data(self) -> bool:
        """True when :meth:`representation` needs the training data (e.g. a graph to propagate)."""

    @property
    @abstractmethod
    def has_training_data(self) -> bool:
        """True when the task holds its training data (data-dependent mode)."""


def require_task(task: pl.LightningModule, kind: type, who: str) -> UnlearnableTask:
    """``task`` if it implements ``kind``, else a TypeError saying what the method needs."""
    if not isinstance(task, kind):
        raise TypeError(
            f"{who} unlearns a {kind.__name__} (lit_unlearn.unlearning.contract), got "
            f"{type(task).__name__}: implement that class's members to plug a task in"
        )
    assert isinstance(task, UnlearnableTask)  # every kind is an UnlearnableTask subclass
    return task
