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
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lit_unlearn.unlearning.resume import RNG_STATE_KEY, collect_rng_state, restore_rng_state

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

    Every checkpoint also holds each rank's global random state, restored when a resumed fit
    starts training, so the resumed run draws the negatives, dropout masks and noise the
    uninterrupted one drew (subclasses overriding ``on_save_checkpoint``,
    ``on_load_checkpoint`` or ``on_train_start`` call ``super()``).

    Attributes:
        model: The backbone (a plain ``nn.Module``) whose parameters a method may update.
        unlearning: The callback that owns the training step, or None (the task's own step).
    """

    model: nn.Module
    unlearning: UnlearningStep | None = None
    #: Random states read from the checkpoint a fit resumes from, one per rank, until training
    #: starts (a class default: subclasses need not call this class's __init__ for it).
    _resumed_rng: list[dict[str, Any]] | None = None

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

    # ------------------------------------------------------------------ exact resume
    def _save_random_state(self, checkpoint: dict[str, Any]) -> None:
        """Store every rank's global random state (``Trainer.save_checkpoint`` runs on all)."""
        state = collect_rng_state()
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            states: list[Any] = [None] * self.world_size
            dist.all_gather_object(states, state)
        else:
            states = [state]
        checkpoint[RNG_STATE_KEY] = states

    def _load_random_state(self, checkpoint: dict[str, Any]) -> None:
        """Keep the checkpoint's random states for :meth:`on_train_start`."""
        # Held until on_train_start: restoring now would be undone by whatever draws random
        # numbers between loading and the first step (sanity checks, fit-start audits).
        self._resumed_rng = checkpoint.get(RNG_STATE_KEY)

    def on_train_start(self) -> None:
        """Put back the random state the resumed checkpoint was written with.

        Runs after every callback's ``on_train_start``, right before the first step, which is
        where the uninterrupted run was when it wrote the checkpoint.
        """
        states, self._resumed_rng = self._resumed_rng, None
        if not states:
            return
        if len(states) != self.world_size:
            rank_zero_warn(
                f"the checkpoint holds the random state of {len(states)} process(es), this fit "
                f"runs {self.world_size}: the resumed run draws other random numbers than the "
                "uninterrupted one would have"
            )
            return
        restore_rng_state(states[self.global_rank])

    # ------------------------------------------------------------------ shared safety nets
    def configure_callbacks(self) -> list[pl.Callback]:
        """A default :class:`~lit_unlearn.divergence.DivergenceGuard` and a
        :class:`~lit_unlearn.unlearning.run_guard.RunGuard` for every fit.

        A model hook rather than a trainer default: a later ``--config`` replaces
        ``trainer.callbacks``, and Python users build their own Trainer; every task and every
        unlearning method (they run inside a task's step) is covered either way. A guard the
        trainer already holds (with the user's limits) is kept.
        """
        from lit_unlearn.divergence import default_guard
        from lit_unlearn.unlearning.run_guard import RunGuard

        # Trainer.callbacks is set in Trainer.__init__ (by its callback connector), untyped.
        configured: list[pl.Callback] = getattr(self._trainer, "callbacks", None) or []
        callbacks = default_guard(configured)
        # Outputs never overwrite inputs or an earlier run; SIGTERM saves and exits non-zero.
        return [*callbacks, RunGuard()]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record what the weights belong to: data and model (``lit_unlearn.fingerprint``)."""
        from lit_unlearn.fingerprint import FINGERPRINT_KEY, make_fingerprint

        checkpoint[FINGERPRINT_KEY] = make_fingerprint(self.model, self._datamodule())
        self._save_random_state(checkpoint)  # exact resume (lit_unlearn.unlearning.resume)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of other data or another model before its weights are loaded.

        Lightning calls this before loading the ``state_dict`` (``--ckpt_path`` of fit,
        validate, test), so a size difference is reported with the checkpoint path and the
        differing setting rather than PyTorch's bare "size mismatch".

        Raises:
            CheckpointMismatchError: See :func:`lit_unlearn.fingerprint.check_checkpoint`.
        """
        from lit_unlearn.fingerprint import check_checkpoint

        trainer = self._trainer
        path = trainer.ckpt_path if trainer is not None else None
        check_checkpoint(checkpoint, self, self._datamodule(), path)
        self._load_random_state(checkpoint)

    def _datamodule(self) -> object | None:
        trainer = self._trainer
        return getattr(trainer, "datamodule", None) if trainer is not None else None


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
