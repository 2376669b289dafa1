"""Selective Synaptic Dampening (SSD; Foster, Schoepf & Brintrup, AAAI 2024): a DSDA baseline.

Retrain-free and one-shot, but it needs both D (the full training data) and D_f: every
parameter's importance is the diagonal of the empirical Fisher information, the mean over
batches of the squared gradient of the cross-entropy,

    []_D,k = mean_batches (d CE / d theta_k)^2   on D,      []_Df,k  on D_f,

parameters much more important for the forget data than for all data are selected and damped:

    theta_k <- beta_k theta_k,  beta_k = min(lambda []_D,k / []_Df,k, 1)  if []_Df,k > alpha []_D,k.

Defaults are the SSD repository's: alpha (selection weighting) 10, lambda (dampening) 1.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_unlearn.tasks.classification import ClassificationTask
from lit_unlearn.unlearning.base import UnlearningCallback
from lit_unlearn.validation import check_finite

__all__ = ["SSD", "dampen", "fisher_diagonal"]


def fisher_diagonal(
    task: ClassificationTask, batches: Iterable[dict[str, Tensor]]
) -> dict[str, Tensor]:
    """Mean over batches of the squared CE gradient of every backbone parameter.

    The model is put in eval mode (batch-norm statistics are not updated by an importance
    estimate) and restored afterwards; no ``.grad`` is left behind.
    """
    params = {n: p for n, p in task.model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    was = task.model.training
    task.model.eval()
    try:
        for batch in batches:
            logits = task(batch["image"].to(task.device))
            loss = F.cross_entropy(logits, batch["label"].to(task.device))
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    sums[name] += g.detach() ** 2
            count += 1
    finally:
        task.model.train(was)
    if count == 0:
        raise ValueError("fisher_diagonal: no batch to estimate importances from")
    return {n: s / count for n, s in sums.items()}


@torch.no_grad()
def dampen(
    model: nn.Module,
    importance_all: dict[str, Tensor],
    importance_forget: dict[str, Tensor],
    alpha: float = 10.0,
    lam: float = 1.0,
) -> float:
    """Damp the selected parameters in place; return the fraction of parameters selected."""
    selected = total = 0
    for name, p in model.named_parameters():
        if name not in importance_all:
            continue
        imp_d, imp_f = importance_all[name], importance_forget[name]
        chosen = imp_f > alpha * imp_d
        beta = torch.where(imp_f > 0, lam * imp_d / imp_f.clamp_min(1e-300), torch.ones_like(p))
        p.mul_(torch.where(chosen, beta.clamp(max=1.0), torch.ones_like(p)))
        selected += int(chosen.sum())
        total += p.numel()
    return selected / max(total, 1)


class SSD(UnlearningCallback[ClassificationTask]):
    """SSD applied once at fit start (run it with ``trainer.max_epochs: 0``).

    Needs a data-dependent ``ClassificationData`` (D and D_f). The wall time of the two
    importance passes and the dampening is :attr:`seconds`. Very sensitive to ``alpha``: on
    digits (SmallCNN trained 30 epochs, forget class 3) the repository's 10 selects 36% of the
    weights and drops A_r to 13%, 100 gives A_f 0 and A_r 99.1%, 1000 forgets nothing; on a
    10-epoch model 30 gives A_f 0 / A_r 67% and 100 already keeps 86% of the class.

    Args:
        checkpoint: The trained classifier to unlearn.
        alpha: Selection weighting (SSD's 10; their ViT runs use 5).
        lam: Dampening constant lambda (SSD's 1).
        batch_size: Batch size of the importance passes.
    """

    task_kind = ClassificationTask
    #: Training data the method reads (DSDA's Table 1 column).
    data_needed: ClassVar[tuple[str, ...]] = ("D_r", "D_f")

    def __init__(
        self,
        checkpoint: str | None = None,
        alpha: float = 10.0,
        lam: float = 1.0,
        batch_size: int = 128,
    ) -> None:
        super().__init__(checkpoint=checkpoint)
        check_finite("alpha", alpha)  # a comparison alone lets NaN through
        check_finite("lam", lam)
        if alpha <= 0 or lam <= 0 or batch_size < 1:
            raise ValueError(f"need alpha > 0, lam > 0, batch_size >= 1; got {alpha}, {lam}")
        self.alpha, self.lam, self.batch_size = alpha, lam, batch_size
        self.seconds = 0.0
        self.selected_fraction = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        task = pl_module
        assert isinstance(task, ClassificationTask)
        dm: Any = trainer.datamodule  # type: ignore[attr-defined]
        if getattr(dm, "mode", None) != "data_dependent" or not task.forget_classes:
            raise ValueError("SSD needs D and D_f: data_dependent mode and forget classes")
        if self.one_shot_done:  # a resumed fit restored the dampened weights: never twice
            return
        start = time.perf_counter()
        imp_all = fisher_diagonal(
            task, dm.loader("train", "all", batch_size=self.batch_size, device=task.device)
        )
        imp_f = fisher_diagonal(
            task, dm.loader("train", "forget", batch_size=self.batch_size, device=task.device)
        )
        self.selected_fraction = dampen(task.model, imp_all, imp_f, self.alpha, self.lam)
        self.seconds = time.perf_counter() - start
        self.one_shot_done = True

    def training_step(
        self, task: ClassificationTask, batch: dict[str, Tensor], batch_idx: int
    ) -> Tensor:
        """SSD changes no weight after the dampening: a step (``max_epochs > 0``) only reports
        the cross-entropy of the dampened model on the batch."""
        with torch.no_grad():
            loss = task.task_loss(batch)
        task.track_loss("train/loss", loss)
        return loss
