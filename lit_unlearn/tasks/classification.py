"""The LightningModule that trains and evaluates an image classifier for class unlearning.

Thin glue over a :class:`~lit_unlearn.models.classifiers.Classifier` backbone (M = M^c o M^f,
DSDA Sec. 3.1): cross-entropy training under manual optimisation (so an unlearning callback can
take the step over), SGD or Adam with a multi-step learning-rate schedule, and per-class / A_r /
A_f accuracies from sum-reduced counts (:mod:`lit_unlearn.metrics.classification`).

Input normalisation is part of the model: the per-channel mean and std of the training images
are buffers saved in every checkpoint. Batches carry raw images (uint8 0..255 or float 0..1);
the task scales and normalises them on the device. A source-free unlearning run, which never
reads a training image, therefore still normalises exactly as the model was trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor

from lit_unlearn.metrics.classification import ClassAccuracy, subset_accuracy
from lit_unlearn.models.classifiers.base import Classifier
from lit_unlearn.tasks.loss_tracking import EpochLossTracking
from lit_unlearn.unlearning.contract import UnlearnableTask, UnlearningStep
from lit_unlearn.validation import check_finite

__all__ = ["ClassificationTask", "EvalResult"]

Stage = Literal["val", "test"]


class EvalResult(dict[str, float]):
    """``{"acc", "A_r", "A_f", "acc_class/<name>"...}`` of one evaluation."""


class ClassificationTask(EpochLossTracking, UnlearnableTask):
    """Train an image classifier with cross-entropy; report per-class accuracy, A_r and A_f.

    Args:
        model: The backbone (``SmallCNN``, ``CifarResNet18``, ``VisionTransformer``...). Its
            ``num_classes`` and ``in_channels`` must fit the DataModule (checked at setup).
        optimizer: ``adam`` or ``sgd`` (with ``momentum``).
        lr: Learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 weight decay of the optimiser.
        milestones: Epochs at which the learning rate is multiplied by ``gamma``
            (``MultiStepLR``); empty for a constant rate.
        gamma: Decay factor at each milestone.
        label_smoothing: Cross-entropy label smoothing (0: plain CE, as the paper).
    """

    model: Classifier
    input_mean: Tensor
    input_std: Tensor
    input_stats_set: Tensor

    def __init__(
        self,
        model: Classifier,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(model, Classifier):
            raise TypeError(
                f"model must be a lit_unlearn.models.classifiers.Classifier, got "
                f"{type(model).__name__}"
            )
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            check_finite(name, value)  # `lr <= 0` alone lets NaN through
        if lr <= 0 or weight_decay < 0 or not 0 <= momentum < 1 or not 0 < gamma <= 1:
            raise ValueError(
                "need lr > 0, weight_decay >= 0, 0 <= momentum < 1, 0 < gamma <= 1; got "
                f"{lr}, {weight_decay}, {momentum}, {gamma}"
            )
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        ms = sorted(milestones or [])
        if any(m < 1 for m in ms) or len(set(ms)) != len(ms):
            raise ValueError(f"milestones must be distinct epochs >= 1, got {milestones}")
        # As RecommenderTask: under LightningCLI the hparams are the parsed config (rebuildable);
        # outside it the backbone is a live module and is not pickled into hparams.
        self.save_hyperparameters(
            ignore=None if _given_hyperparameters.get() is not None else ["model"]
        )
        self.model = model
        self.optimizer_name = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.milestones = ms
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        c = model.in_channels
        # Normalisation is model state (saved in checkpoints); set from the train split once.
        self.register_buffer("input_mean", torch.zeros(c))
        self.register_buffer("input_std", torch.ones(c))
        self.register_buffer("input_stats_set", torch.zeros((), dtype=torch.bool))
        self.metrics = torch.nn.ModuleDict(
            {stage: ClassAccuracy(model.num_classes) for stage in ("val", "test")}
        )
        self.class_names: tuple[str, ...] = tuple(str(i) for i in range(model.num_classes))
        self.forget_classes: list[int] = []
        self.last_eval: dict[str, EvalResult] = {}
        self._epoch_loss: list[Any] = [torch.zeros(()), 0]
        self.automatic_optimization = False
        self.unlearning: UnlearningStep | None = None

    # ------------------------------------------------------------------ data hookup
    def setup(self, stage: str) -> None:
        dm = self._trainer.datamodule if self._trainer is not None else None  # type: ignore[attr-defined]
        if dm is not None:
            self.attach_data(dm)

    def attach_data(self, dm: Any) -> None:
        """Check the backbone fits ``dm`` and take its class names, C_f and input statistics.

        Raises:
            TypeError: ``dm`` is no classification DataModule.
            ValueError: Class count or image shape differ from what the backbone was built for.
        """
        needed = ("num_classes", "image_shape", "class_names", "forget_class_indices")
        missing = [m for m in (*needed, "normalization") if not hasattr(type(dm), m)]
        if missing:
            raise TypeError(
                f"ClassificationTask needs a ClassificationData-like DataModule; "
                f"{type(dm).__name__} lacks {missing}"
            )
        num_classes = int(dm.num_classes)
        if num_classes != self.model.num_classes:
            raise ValueError(
                f"the data has {num_classes} classes but {type(self.model).__name__} was built "
                f"with num_classes={self.model.num_classes}: set model.init_args.model."
                f"init_args.num_classes={num_classes}"
            )
        self.model.check_input(tuple(dm.image_shape))
        self.class_names = tuple(dm.class_names)
        self.forget_classes = list(dm.forget_class_indices)
        stats = dm.normalization()
        if stats is not None and not bool(self.input_stats_set):
            self.set_input_stats(*stats)

    def set_input_stats(self, mean: Tensor, std: Tensor) -> None:
        """Fix the per-channel input normalisation (``[C]`` each, in [0, 1] units)."""
        c = self.model.in_channels
        if mean.shape != (c,) or std.shape != (c,) or bool((std <= 0).any()):
            raise ValueError(f"need mean and std of shape ({c},) with std > 0")
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)
        self.input_stats_set.fill_(True)

    @property
    def retain_classes(self) -> list[int]:
        forget = set(self.forget_classes)
        return [c for c in range(self.model.num_classes) if c not in forget]

    # ------------------------------------------------------------------ model
    def normalize(self, images: Tensor) -> Tensor:
        """Raw images (uint8 0..255 or float 0..1) to the backbone's normalised input."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.input_mean[:, None, None]) / self.input_std[:, None, None]

    def forward(self, images: Tensor) -> Tensor:
        """Logits of raw images."""
        return self.model(self.normalize(images))

    def features(self, images: Tensor) -> Tensor:
        """h = M^f(x) of raw images."""
        return self.model.features(self.normalize(images))

    def loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Cross-entropy of a batch ``{"image", "label"}``.

        Raises:
            FloatingPointError: The loss is NaN/inf.
        """
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at step {self.global_step}: lower the "
                "learning rate or check the data"
            )
        return loss

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.unlearning is not None:
            return self.unlearning.training_step(self, batch, batch_idx)
        loss = self.loss(batch)
        opt = self.optimizers()
        assert isinstance(opt, LightningOptimizer)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        self.track_loss("train/loss", loss)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        self.log_epoch_loss()
        if self.unlearning is None:
            # Manual optimisation: Lightning does not step schedulers itself.
            schedulers = self.lr_schedulers()
            for sch in schedulers if isinstance(schedulers, list) else [schedulers]:
                if sch is not None:
                    sch.step()

    def configure_optimizers(self) -> Any:
        if self.unlearning is not None:
            return self.unlearning.configure_optimizer(self)
        params = self.model.parameters()
        opt: torch.optim.Optimizer
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        else:
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if not self.milestones:
            return opt
        sch = torch.optim.lr_scheduler.MultiStepLR(opt, self.milestones, gamma=self.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sch, "interval": "epoch"}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, stage: Stage, batch: dict[str, Tensor]) -> None:
        metric = self.metrics[stage]
        assert isinstance(metric, ClassAccuracy)
        metric.update(self(batch["image"]), batch["label"])

    def _eval_epoch_end(self, stage: Stage) -> None:
        metric = self.metrics[stage]
        assert isinstance(metric, ClassAccuracy)
        correct, total = metric.counts()
        metric.reset()
        result = self.summarize(correct, total)
        self.last_eval[stage] = result
        self.log_dict({f"{stage}/{k}": v for k, v in result.items()}, sync_dist=False)

    def summarize(self, correct: Tensor, total: Tensor) -> EvalResult:
        """Overall, A_r, A_f (with forget classes) and per-class accuracy from counts."""
        k = self.model.num_classes
        result = EvalResult(acc=subset_accuracy(correct, total, list(range(k))))
        if self.forget_classes:
            result["A_r"] = subset_accuracy(correct, total, self.retain_classes)
            result["A_f"] = subset_accuracy(correct, total, self.forget_classes)
        for c in range(k):
            result[f"acc_class/{self.class_names[c]}"] = subset_accuracy(correct, total, [c])
        return result

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    @torch.no_grad()
    def predict_logits(self, batches: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, labels and ids of every batch of ``batches`` (eval mode, on CPU).

        Args:
            batches: Iterable of ``{"image", "label", "index"}`` dicts (a DataModule loader).
        """
        was_training = self.model.training
        self.model.eval()
        logits, labels, ids = [], [], []
        try:
            for batch in batches:
                logits.append(self(batch["image"].to(self.device)).float().cpu())
                labels.append(batch["label"].cpu())
                ids.append(batch["index"].cpu())
        finally:
            self.model.train(was_training)
        if not logits:
            k = self.model.num_classes
            empty = torch.empty(0, dtype=torch.long)
            return torch.empty(0, k), empty, empty
        return torch.cat(logits), torch.cat(labels), torch.cat(ids)

    # ------------------------------------------------------------------ unlearning contract
    def restore_weights(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a trained classifier (its checkpoint's ``state_dict``, normalisation included).

        Raises:
            ValueError: The checkpoint holds another model (missing / unexpected / misshapen
                weights) or no input statistics.
        """
        try:
            self.load_state_dict(dict(state_dict))
        except RuntimeError as err:
            raise ValueError(
                f"the checkpoint does not hold a {type(self.model).__name__} of this shape "
                f"(num_classes={self.model.num_classes}, in_channels={self.model.in_channels}): "
                f"{str(err).splitlines()[0]}"
            ) from err
        if not bool(self.input_stats_set):
            raise ValueError("the checkpoint has no input normalisation statistics")

    def task_loss(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Cross-entropy on a batch (the retain objective L_R of class-unlearning methods)."""
        return self.loss(batch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the data/model fingerprint
        checkpoint["lit_unlearn"] = {
            "task": "classification",
            "num_classes": self.model.num_classes,
            "class_names": list(self.class_names),
            "forget_classes": list(self.forget_classes),
        }
