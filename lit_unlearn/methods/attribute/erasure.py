"""``CalibratedErasure``: one-shot, null-calibrated removal of attributes from user representations.

The Lightning glue of :mod:`lit_unlearn.unlearning.calibrated` (the math and why it does
not invert): at fit start, on the model to unlearn, every attribute's significant discriminant
directions are found against a permutation null and each class's deviation along them is shrunk
by ``1 - sqrt(lambda_null / lambda)``; the result is written as a per-user shift of the
representation (``Recommender.enable_user_shift``; for table backbones, into the user table).
Nothing else changes: items, scorer and towers stay as trained. Needs no interaction (data-free
or data-dependent DataModules both work: it reads the attribute codes and the representation).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor

from lit_unlearn.methods.attribute.base import AttributeUnlearning, Mode
from lit_unlearn.unlearning.calibrated import (
    Calibration,
    ErasureResult,
    check_calibration,
    erase_attributes,
)
from lit_unlearn.unlearning.contract import RepresentationTask
from lit_unlearn.validation import check_count, check_probability

__all__ = ["CalibratedErasure", "add_representation_shift", "audited_representation"]


class CalibratedErasure(AttributeUnlearning):
    """Remove the attributes' linear signal from both sides, in one shot (issue 23).

    Args:
        checkpoint: Trained model to unlearn.
        attributes: Attributes to erase, one after the other (default: all the data encodes).
        mode: ``auto``, ``dd`` or ``df``: only which DataModule is accepted (no interaction is
            read either way).
        permutations: Label permutations behind each attribute's null eigenvalues.
        quantile: A direction is erased when its eigenvalue beats this quantile of the null.
        ridge: Relative ridge of the within-class covariance, or ``"cv"`` (chosen per
            attribute by cross-validation, :func:`~lit_unlearn.unlearning.calibrated.
            select_ridge`; exact for a strongly regularised linear attacker, over-removing for
            a weakly regularised one: docs/fedau2.md).
        calibrate: ``False`` removes the deviations along the chosen directions entirely (the
            exact in-sample removal that inverts held-out users; for the ablation).
        calibration: ``direction`` (one shrink per discriminant direction, pooled over the
            classes) or ``class`` (per class and direction: :mod:`lit_unlearn.unlearning.
            calibrated`, step 2).
        expand: Also expand directions below the permutation null back to it (step 4: what
            an earlier full-population match over-equalised).
        seed: Seed of the permutations (``None``: the run's seed); the same on every rank.
        permute_labels: The negative control: erase labels shuffled among the labelled users
            (see :class:`AttributeUnlearning`); ``None``: the real labels.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        attributes: list[str] | None = None,
        mode: Mode = "auto",
        permutations: int = 30,
        quantile: float = 0.95,
        ridge: float | Literal["cv"] = 1e-3,
        calibrate: bool = True,
        calibration: Calibration = "direction",
        expand: bool = False,
        seed: int | None = None,
        permute_labels: int | None = None,
    ) -> None:
        self.permutations = check_count("permutations", permutations)
        self.quantile = check_probability("quantile", quantile, allow_one=False)
        if not self.quantile > 0.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if ridge != "cv" and (
            isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0.0
        ):
            raise ValueError(f"ridge must be a finite number >= 0 or 'cv', got {ridge!r}")
        if ridge == float("inf"):
            raise ValueError("ridge must be finite")
        self.ridge: float | Literal["cv"] = "cv" if ridge == "cv" else float(ridge)
        self.calibrate = bool(calibrate)
        self.calibration = check_calibration(calibration)
        self.expand = bool(expand)
        # The shift is the representation's own offset: target='representation'.
        super().__init__(
            checkpoint=checkpoint,
            attributes=attributes,
            mode=mode,
            target="representation",
            privacy_seed=seed,
            permute_labels=permute_labels,
        )
        self.results: dict[str, ErasureResult] = {}
        self.seconds = 0.0

    def privacy_loss(self, representation: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Between-class Mahalanobis dispersion per attribute (logged; nothing is optimised).

        ``sum_k (n_k / n) ||mu_k - mu||^2`` in the pooled within-class metric: the linear
        signal a Gaussian attacker sees, before and after the erasure.
        """
        per: dict[str, Tensor] = {}
        for name, codes in self._codes.items():
            keep = codes >= 0
            z, y = representation[keep].double(), codes[keep]
            k = self._num_classes[name]
            onehot = torch.nn.functional.one_hot(y, k).double()
            counts = onehot.sum(0)
            means = onehot.T @ z / counts.clamp_min(1)[:, None]
            resid = z - means[y]
            s_w = resid.T @ resid / z.shape[0]
            ridge = self.results[name].ridge if name in self.results else self.ridge
            if ridge == "cv":  # before the erasure chose one: the default's metric
                ridge = 1e-3
            s_w = s_w + ridge * s_w.diagonal().mean() * torch.eye(
                z.shape[1], dtype=z.dtype, device=z.device
            )
            dev = means - z.mean(0)
            maha = (dev * torch.linalg.solve(s_w, dev.T).T).sum(1)
            per[name] = (counts / counts.sum() * maha).sum().to(representation.dtype)
        return torch.stack(list(per.values())).mean(), per

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        assert isinstance(pl_module, RepresentationTask)
        if self.one_shot_done:  # a resumed fit restored the erased weights: never twice
            return
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(self._subset_seed)
        rep = audited_representation(pl_module)
        with torch.no_grad():
            shift, self.results = erase_attributes(
                rep,
                self._codes,
                self._num_classes,
                permutations=self.permutations,
                quantile=self.quantile,
                ridge=self.ridge,
                calibrate=self.calibrate,
                calibration=self.calibration,
                expand=self.expand,
                generator=gen,
            )
            add_representation_shift(pl_module, shift.to(rep.dtype))
        self.seconds = time.perf_counter() - start
        self.one_shot_done = True

    def configure_optimizer(self, task: RepresentationTask) -> torch.optim.Optimizer | None:
        """A clock (SGD at learning rate 0): the erasure is one shot, but ``global_step`` must
        advance or ModelCheckpoint saves nothing (see AltEraser)."""
        return torch.optim.SGD(self.trainable_parameters(task), lr=0.0)

    def training_step(
        self, task: RepresentationTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        """Log the remaining linear dispersion; change no weight."""
        with torch.no_grad():
            rep = task.representation()
            privacy, per = self.privacy_loss(rep)
        clock = task.optimizers()
        assert isinstance(clock, LightningOptimizer)
        clock.step()
        task.log_dict(
            {
                "unlearn/privacy": privacy,
                **{f"unlearn/privacy/{n}": v for n, v in per.items()},
                **{f"unlearn/erased_rank/{n}": float(r.rank) for n, r in self.results.items()},
            },
            on_step=True,
            on_epoch=False,
        )
        return privacy

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.seconds = float(state_dict.get("seconds", 0.0))

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per attribute: erased rank, eigenvalues, null mean, shrink factors, expansion
        factors (lists), ridge."""
        return {
            n: {
                "rank": r.rank,
                "eigenvalues": r.eigenvalues.tolist(),
                "null_mean": r.null_mean.tolist(),
                "shrink": r.shrink.tolist(),
                "expansion": r.expansion.tolist(),
                "ridge": r.ridge,
            }
            for n, r in self.results.items()
        }


def add_representation_shift(task: RepresentationTask, shift: Tensor) -> None:
    """Add ``shift [N, d]`` to every user's representation, in place.

    Into the per-user offset (``Recommender.enable_user_shift``) when the backbone has one, else
    into the user table of a table backbone (MF, NeuMF without a tower), whose representation
    is that table.

    Raises:
        ValueError: Neither exists (enable the offset first, ``prepare_model``).
    """
    with torch.no_grad():
        offset = task.representation_offset
        if offset is not None:
            offset.add_(shift.to(offset.device, offset.dtype))
            return
        params = task.representation_parameters()
        table = [p for p in params if p.shape == shift.shape]
        if len(table) != 1:
            raise ValueError(
                "a representation shift needs a per-user offset or a single user table; "
                f"{type(task).__name__} exposes shapes {[tuple(p.shape) for p in params]}"
            )
        table[0].add_(shift.to(table[0].device, table[0].dtype))


def audited_representation(task: RepresentationTask) -> Tensor:
    """Every user's representation as the auditors read it: eval mode (no dropout), detached.

    A one-shot erasure plans on this, not on the training-mode forward: with input or tower
    dropout the training-mode rows are noisier, so the null is larger and the shrink too small.
    """
    was_training = task.training
    task.eval()
    try:
        with torch.no_grad():
            return task.representation().detach()
    finally:
        task.train(was_training)
