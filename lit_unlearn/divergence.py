"""Stop a diverging run before it saves anything: the :class:`DivergenceGuard` callback.

A learning rate far too large does not always make the loss NaN: with BPR on MF at ``lr=1e6``
the loss stays finite while the embeddings reach 2.6e7, and ``ModelCheckpoint`` then saved that
model (over an earlier ``best.ckpt``) and the run exited 0. The guard checks, after every
optimiser step of any task or unlearning method (automatic or manual optimisation alike: it
reads the step's loss and the parameters the step left, not the optimiser), that

* the step's loss is finite,
* every parameter and gradient is finite,
* no parameter entry exceeds ``max_abs_parameter`` and the parameters' global L2 norm has not
  grown beyond ``max_norm_growth`` times its value at the start of the fit,
* the gradients' global L2 norm stays below ``max_grad_norm``,

and raises :class:`DivergenceError` naming the step and the quantity. Lightning runs checkpoint
callbacks after every other callback, so a check in ``on_train_batch_end`` /
``on_train_epoch_end`` fails the run before ``ModelCheckpoint`` saves; a final check in
``on_save_checkpoint`` refuses any save of diverged weights that another path (an epoch-end
save, a method that updates weights outside its training step) would make.

Every task adds a default guard (``UnlearnableTask.configure_callbacks``) unless the trainer
already holds one, so configure the limits by listing a ``DivergenceGuard`` in
``trainer.callbacks``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lit_unlearn.validation import check_count, check_positive

__all__ = ["DivergenceError", "DivergenceGuard"]


class DivergenceError(FloatingPointError):
    """Training diverged: a loss, parameter or gradient is non-finite or exploded."""


class DivergenceGuard(Callback):
    """Fail a fit whose loss, parameters or gradients are non-finite or explode.

    Args:
        max_abs_parameter: Largest magnitude a parameter entry may reach (None: no cap).
            Trained recommenders and classifiers here stay below ~1e2; a diverged MF reaches
            1e7 and a diverged AttrCloak 1e12.
        max_norm_growth: Largest ratio of the parameters' global L2 norm to its value at the
            start of the fit (None: no limit). Parameters that start at zero (a fresh offset)
            still count in the global norm through the others.
        max_grad_norm: Largest global L2 norm of the gradients left by a step (None: only
            finiteness is checked).
        check_every_n_steps: Check the parameters and gradients every this many steps (the
            loss is checked every step; every epoch end and every save checks regardless).
    """

    def __init__(
        self,
        max_abs_parameter: float | None = 1e4,
        max_norm_growth: float | None = 1e3,
        max_grad_norm: float | None = 1e8,
        check_every_n_steps: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (
            ("max_abs_parameter", max_abs_parameter),
            ("max_norm_growth", max_norm_growth),
            ("max_grad_norm", max_grad_norm),
        ):
            if value is not None:
                check_positive(name, value)
        if max_norm_growth is not None and max_norm_growth <= 1:
            raise ValueError(f"max_norm_growth must be > 1 (or None), got {max_norm_growth!r}")
        self.max_abs_parameter = max_abs_parameter
        self.max_norm_growth = max_norm_growth
        self.max_grad_norm = max_grad_norm
        self.check_every_n_steps = check_count("check_every_n_steps", check_every_n_steps)
        self._start_norm: float | None = None

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Weights restored from a checkpoint (to resume or to unlearn) are checked before the
        # first step, and the growth limit is relative to them.
        self._start_norm = None
        norm = self._check_parameters(trainer, pl_module, when="at the start of training")
        self._start_norm = norm

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = _step_loss(outputs)
        bad_loss = loss is not None and not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            # Ranks see different batches: decide together, or the rank that raises leaves the
            # others waiting in the next collective.
            bad_loss = trainer.strategy.reduce_boolean_decision(bad_loss, all=False)
        if bad_loss:
            shown = f"{loss.detach().float().item():g}" if loss is not None else "(on another rank)"
            self._fail(trainer, f"non-finite training loss {shown}")
        if trainer.global_step % self.check_every_n_steps == 0:
            # Parameters and gradients are identical on every rank after a synchronised step.
            self._check_parameters(trainer, pl_module, when="after the optimiser step")
            self._check_gradients(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_parameters(trainer, pl_module, when="at the end of the epoch")

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # The last gate: whatever path asked for the save, diverged weights are never written.
        self._check_parameters(trainer, pl_module, when="when saving a checkpoint")

    # ------------------------------------------------------------------ checks
    def _check_parameters(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, when: str
    ) -> float:
        """Raise on a non-finite or exploded parameter; return the parameters' global L2 norm."""
        named = [(n, p.detach()) for n, p in pl_module.named_parameters() if p.numel()]
        if not named:
            return 0.0
        tensors = [p for _, p in named]
        # One host sync for all tensors: per-tensor max-abs and L2 norm, stacked.
        with torch.no_grad():
            max_abs = torch.stack([t.abs().max().float() for t in tensors])
            norms = torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors])
            stats = torch.stack([max_abs, norms]).cpu()
        for (name, _), value in zip(named, stats[0].tolist(), strict=True):
            if not math.isfinite(value):
                self._fail(trainer, f"parameter {name} holds NaN or inf {when}")
        if self.max_abs_parameter is not None:
            worst = int(stats[0].argmax())
            if stats[0, worst] > self.max_abs_parameter:
                self._fail(
                    trainer,
                    f"parameter {named[worst][0]} reached |w| = {float(stats[0, worst]):.3g} "
                    f"{when} (limit max_abs_parameter={self.max_abs_parameter:g})",
                )
        norm = float(stats[1].pow(2).sum().sqrt())
        if (
            self.max_norm_growth is not None
            and self._start_norm is not None
            and self._start_norm > 0
            and norm > self.max_norm_growth * self._start_norm
        ):
            self._fail(
                trainer,
                f"the parameters' L2 norm grew from {self._start_norm:.3g} to {norm:.3g} {when} "
                f"(more than max_norm_growth={self.max_norm_growth:g} times)",
            )
        return norm

    def _check_gradients(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        named = [
            (n, p.grad.detach())
            for n, p in pl_module.named_parameters()
            if p.grad is not None and p.grad.numel()
        ]
        if not named:
            return  # a step that left no gradient (a Newton update, set_to_none after it)
        with torch.no_grad():
            norms = torch.stack([torch.linalg.vector_norm(g.float()) for _, g in named]).cpu()
        for (name, _), value in zip(named, norms.tolist(), strict=True):
            if not math.isfinite(value):
                self._fail(trainer, f"the gradient of {name} holds NaN or inf")
        total = float(norms.pow(2).sum().sqrt())
        if self.max_grad_norm is not None and total > self.max_grad_norm:
            self._fail(
                trainer,
                f"the gradients' L2 norm reached {total:.3g} (limit max_grad_norm="
                f"{self.max_grad_norm:g})",
            )

    @staticmethod
    def _fail(trainer: pl.Trainer, what: str) -> None:
        raise DivergenceError(
            f"training diverged at step {trainer.global_step} (epoch {trainer.current_epoch}): "
            f"{what}. The run stops here and no checkpoint of these weights is saved. Lower the "
            "learning rate (or check the data); the limits are DivergenceGuard's arguments "
            "(list one in trainer.callbacks to change them)."
        )


def _step_loss(outputs: Any) -> Tensor | None:
    """The loss a training step returned (a tensor, or a mapping's ``loss``), if any."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        loss = outputs.get("loss")
        return loss if isinstance(loss, Tensor) else None
    return None


def default_guard(callbacks: list[Callback]) -> list[Callback]:
    """``[DivergenceGuard()]`` unless ``callbacks`` already hold one (then ``[]``).

    Lightning replaces trainer callbacks of the same type as a model's ``configure_callbacks``
    result, so a configured guard must not be shadowed by the default one.
    """
    if any(isinstance(c, DivergenceGuard) for c in callbacks):
        return []
    return [DivergenceGuard()]
