"""DSDA: source-free class unlearning by synthesis (AEGDS) and DAMO (paper 004, Sec. 3).

Lightning glue over :mod:`.synthesis`, :mod:`.damo` and the combiner
:class:`~lit_unlearn.optim.ConflictAverse`. At fit start (the model is on its device by
then) the callback draws ``samples_per_class`` inputs of every class from the original model
(stage 1), attaches them to the source-free DataModule as its only training data, and fixes the
class centres of L_Disc; each step then backpropagates L_R, L_F and L_Disc separately (one
``manual_backward`` each, all-reduced under DDP), combines the three gradients with the
combiner (Theorem 3.3: the conflict-averse direction; ``FixedWeights([1, 1, 1])`` is
DSDA-wo-mt) and steps. Training stops once no synthetic forget sample is classified as its
class (the spec's stop rule) or at ``max_epochs``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lit_unlearn.methods.class_unlearning.damo import (
    class_centres,
    default_forget_cap,
    discriminative_loss,
    forget_loss,
    retain_loss,
)
from lit_unlearn.methods.class_unlearning.synthesis import LangevinSampler
from lit_unlearn.optim.combiner import GradientCombiner
from lit_unlearn.optim.conflict_averse import ConflictAverse
from lit_unlearn.optim.grads import assign_flat_grad, flatten_grads
from lit_unlearn.tasks.classification import ClassificationTask
from lit_unlearn.unlearning.base import UnlearningCallback
from lit_unlearn.validation import check_finite, check_positive

__all__ = ["DSDA"]


class DSDA(UnlearningCallback[ClassificationTask]):
    """Source-free class unlearning: synthesise every class from the model, then DAMO.

    Args:
        checkpoint: The trained classifier to unlearn.
        lr: Learning rate of the unlearning optimiser.
        optimizer: ``adam`` or ``sgd``.
        sampler: Stage-1 sampler (AEGDS by default; ``method: egds`` is DSDA-w-EGDS).
        samples_per_class: Synthetic samples drawn for every class.
        combiner: How the three gradients become one direction (``ConflictAverse`` = DAMO;
            ``FixedWeights`` = DSDA-wo-mt).
        disc: Use L_Disc (False = DSDA-wo-disc: L_R and L_F only).
        forget_cap_factor: Cap of the per-sample forget CE, in units of log K (None: the
            paper's unbounded -CE).
        delta: Scale of L_Disc.
        o_p: Positive optimum of L_Disc.
        o_n: Negative optimum of L_Disc.
        stop_when_forgotten: End training once every synthetic forget sample is misclassified.
        freeze_batchnorm: Keep batch-norm layers in eval mode during DAMO (running statistics
            of the original model). Synthetic batches would otherwise replace them with the
            statistics of samples that are not images of the data (on digits: A_r 97.5 -> 97.6
            with it), and under DDP each rank would normalise with its own batch statistics.
        seed: Seed of the synthesis.
    """

    task_kind = ClassificationTask
    #: Training data the method reads (DSDA's Table 1 column).
    data_needed: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        checkpoint: str | None = None,
        lr: float = 1e-4,
        optimizer: Literal["adam", "sgd"] = "adam",
        sampler: LangevinSampler | None = None,
        samples_per_class: int = 256,
        combiner: GradientCombiner | None = None,
        disc: bool = True,
        forget_cap_factor: float | None = 5.0,
        delta: float = 64.0,
        o_p: float = 1.25,
        o_n: float = -0.25,
        stop_when_forgotten: bool = True,
        freeze_batchnorm: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(checkpoint=checkpoint, lr=lr, optimizer=optimizer)
        if samples_per_class < 1:
            raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
        if forget_cap_factor is not None:
            check_positive("forget_cap_factor", forget_cap_factor)
        check_positive("delta", delta)  # L_Disc's scale
        check_finite("o_p", o_p)
        check_finite("o_n", o_n)
        self.sampler = sampler or LangevinSampler()
        self.samples_per_class = samples_per_class
        self.combiner = combiner or ConflictAverse(c=0.5)
        self.disc = disc
        self.forget_cap_factor = forget_cap_factor
        self.delta, self.o_p, self.o_n = delta, o_p, o_n
        self.stop_when_forgotten = stop_when_forgotten
        self.freeze_batchnorm = freeze_batchnorm
        self.seed = seed
        self.centres: Tensor | None = None
        #: Seconds of stage 1 (synthesis) and the score evaluations per sample it cost.
        self.synthesis_s = 0.0
        self.score_evals = 0

    # ------------------------------------------------------------------ stage 1
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = getattr(trainer, "datamodule", None)
        if stage == "fit" and not hasattr(dm, "attach_synthetic"):
            raise TypeError(
                f"DSDA trains on synthetic samples attached to a ClassificationData, got "
                f"{type(dm).__name__}"
            )
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        task = pl_module
        assert isinstance(task, ClassificationTask)
        dm: Any = trainer.datamodule  # type: ignore[attr-defined]
        if not task.forget_classes:
            raise ValueError("DSDA needs forget classes: set data.init_args.forget_classes")
        start = time.perf_counter()
        k = task.model.num_classes
        labels = torch.arange(k, device=task.device).repeat_interleave(self.samples_per_class)
        mean, std = task.input_mean, task.input_std
        bounds = ((0 - mean) / std, (1 - mean) / std)  # [0, 1] pixels in normalised units
        gen = torch.Generator(device=task.device).manual_seed(self.seed)
        # Stage 1 reads the model to unlearn: on resume that is the original model, not the
        # restored half-unlearned one (same seed, same weights: the same synthetic set).
        with self.original_weights(task):
            result = self.sampler.sample(task.model, labels, dm.image_shape, bounds, gen)
            with torch.no_grad():
                was = task.model.training
                task.model.eval()
                retain = torch.isin(labels, torch.tensor(task.retain_classes, device=labels.device))
                feats = task.model.features(result.images[retain])
                task.model.train(was)
        raw = (result.images * std[:, None, None] + mean[:, None, None]).clamp(0, 1)
        dm.attach_synthetic(raw, labels)
        self.centres = class_centres(feats, labels[retain], k).detach()
        self.synthesis_s = time.perf_counter() - start
        self.score_evals = result.score_evals

    # ------------------------------------------------------------------ stage 2
    def objectives(self, task: ClassificationTask, batch: dict[str, Tensor]) -> list[Tensor]:
        """[L_R, L_F(, L_Disc)] on one synthetic batch (zero where a part is absent)."""
        images, labels = batch["image"], batch["label"]
        forget = torch.isin(labels, torch.tensor(task.forget_classes, device=labels.device))
        x = task.normalize(images)
        h = task.model.features(x)
        logits = task.model.head(h)
        zero = logits.sum() * 0.0  # keeps every objective attached to the whole graph
        # Each loss is a mean over this rank's retain / forget rows; DDP averages the ranks'
        # gradients, which is the global mean only if every rank holds as many such rows.
        # Weighting by n_local * W / n_global makes the average exactly the global mean.
        w_r, w_f = self._global_weights(task, int((~forget).sum()), int(forget.sum()))
        l_r = retain_loss(logits[~forget], labels[~forget]) * w_r if bool((~forget).any()) else zero
        cap = (
            None
            if self.forget_cap_factor is None
            else default_forget_cap(task.model.num_classes, self.forget_cap_factor)
        )
        l_f = forget_loss(logits[forget], labels[forget], cap) * w_f if bool(forget.any()) else zero
        losses = [l_r, l_f]
        if self.disc:
            assert self.centres is not None
            l_d = zero
            if bool((~forget).any()):
                centres = self.centres.to(h.device)
                l_d = discriminative_loss(
                    h[~forget], labels[~forget], centres, task.retain_classes,
                    self.delta, self.o_p, self.o_n,
                ) * w_r  # fmt: skip
            # L_Disc reads only M^f: "+ zero" gives the head a zero gradient, so DDP's
            # all-reduce covers every parameter in every backward (it would otherwise leave
            # each rank its own L_Disc gradient, then fail on the next step).
            losses.append(l_d + zero)
        for name, loss in zip(("L_R", "L_F", "L_Disc"), losses, strict=False):
            if not torch.isfinite(loss):
                raise FloatingPointError(f"DSDA: non-finite {name} {loss.item()}: lower lr")
        return losses

    def _global_weights(
        self, task: ClassificationTask, n_retain: int, n_forget: int
    ) -> tuple[float, float]:
        """``n_local * W / n_global`` for the retain and the forget rows (1, 1 on one process)."""
        if self.world_size <= 1:
            return 1.0, 1.0
        local = torch.tensor([n_retain, n_forget], dtype=torch.float64, device=task.device)
        total = task.trainer.strategy.reduce(local.clone(), reduce_op="sum")
        weights = local * self.world_size / torch.as_tensor(total).clamp_min(1)
        return float(weights[0]), float(weights[1])

    def training_step(
        self, task: ClassificationTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        if self.freeze_batchnorm:  # Lightning puts the model in train mode every epoch
            for module in task.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        losses = self.objectives(task, batch)
        opt = task.optimizers()
        assert not isinstance(opt, list)
        params = [p for p in self.trainable_parameters(task) if p.requires_grad]
        static = self.combiner.static_weights(len(losses))
        if static is not None:  # fixed weights: one backward of the weighted sum
            opt.zero_grad(set_to_none=True)
            w = static.to(losses[0].device, losses[0].dtype)
            task.manual_backward(sum(wi * li for wi, li in zip(w, losses, strict=True)))
        else:
            grads = []
            for i, loss in enumerate(losses):
                opt.zero_grad(set_to_none=True)
                task.manual_backward(loss, retain_graph=i < len(losses) - 1)
                grads.append(flatten_grads(params))
            direction, _ = self.combiner(torch.stack(grads))
            assign_flat_grad(params, direction)
        opt.step()
        total = sum(loss.detach() for loss in losses)
        assert isinstance(total, Tensor)
        task.track_loss("train/loss", total)
        return total

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.stop_when_forgotten:
            return
        task = pl_module
        assert isinstance(task, ClassificationTask)
        dm: Any = trainer.datamodule  # type: ignore[attr-defined]
        logits, labels, _ = task.predict_logits(
            dm.loader("synthetic", "forget", device=task.device, shard=False)
        )
        forgotten = bool(len(labels)) and bool((logits.argmax(1) != labels).all())
        # One decision for every rank (Lightning does not sync should_stop): a rank that stops
        # alone would leave the others waiting in an all-reduce.
        if trainer.strategy.reduce_boolean_decision(forgotten, all=True):
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "synthesis_s": self.synthesis_s}
