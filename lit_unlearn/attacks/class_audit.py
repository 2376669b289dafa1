"""Class-unlearning audit as a Lightning callback: A_r, A_f, per-class accuracy and the MIA.

Add it to a classifier run (training, retraining or unlearning) or call it on a checkpoint
(``lit-unlearn audit``)::

    trainer:
      callbacks:
        - class_path: lit_unlearn.callbacks.ClassAudit
          init_args: {when: [fit_end], export: true}

It measures the paper's numbers (DSDA, paper 004, Sec. 4.1) on the model as it is:

* ``A_r`` / ``A_f``: test accuracy pooled over the retain / forget classes' test images;
* ``MIA``: :func:`~lit_unlearn.attacks.membership.entropy_mia` with retain-train members, all
  test images as non-members, scored on the forget-train images (only where training data is
  loaded: a source-free run cannot compute it, audit its checkpoint in data-dependent mode);
* per-class test accuracy, and ``seconds`` the audit took (so a run's time with and without
  evaluation can both be reported).

Metrics go to every logger as ``audit/{stage}/{metric}``; the table is written as
``class_audit_{stage}.md`` / ``.csv``. With ``export=True`` the model outputs it measured are
written to ``class_outputs_{stage}.npz`` (logits, labels and the images' ids in the source's own
order, per split, plus class names and the forget classes) so anyone can re-check them with
their own attacker. Under DDP every rank evaluates all rows (evaluation mode, deterministic) and
rank 0 alone logs and writes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lit_unlearn.attacks.membership import entropy_mia
from lit_unlearn.reporting.tables import markdown_table
from lit_unlearn.reporting.tracking import log_metrics

__all__ = ["ClassAudit", "ClassAuditStage", "audit_classifier", "save_outputs"]

ClassAuditStage = Literal["fit_start", "fit_end", "test_end"]
_STAGES: tuple[str, ...] = ("fit_start", "fit_end", "test_end")


class ClassAudit(Callback):
    """Measures A_r, A_f, per-class accuracy and the entropy MIA of a classifier.

    Args:
        when: Moments to audit: ``fit_start`` (the model before training / unlearning),
            ``fit_end`` and ``test_end``.
        mia: Compute the MIA when training data is loaded.
        export: Write the measured outputs as ``class_outputs_{stage}.npz``.
        seed: Seed of the MIA's logistic regression.
        save_dir: Where tables go (default: the logger's directory, else ``.``).
        verbose: Print the table.
    """

    def __init__(
        self,
        when: list[ClassAuditStage] | None = None,
        mia: bool = True,
        export: bool = False,
        seed: int = 0,
        save_dir: str | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__()
        stages = list(when) if when is not None else ["fit_end"]
        unknown = [s for s in stages if s not in _STAGES]
        if unknown:
            raise ValueError(f"when: unknown stage(s) {unknown}; choose from {list(_STAGES)}")
        self.when = stages
        self.mia = mia
        self.export = export
        self.seed = seed
        self.save_dir = save_dir
        self.verbose = verbose
        #: The last audit's numbers per stage (what was logged).
        self.results: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "fit_start" in self.when:
            self.run(trainer, pl_module, "fit_start")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "fit_end" in self.when:
            self.run(trainer, pl_module, "fit_end")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "test_end" in self.when:
            self.run(trainer, pl_module, "test_end")

    # ------------------------------------------------------------------ the audit
    def run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> dict[str, float]:
        """Audit ``pl_module`` now; log, write and return the numbers.

        Raises:
            TypeError: The module is no classifier task or the data no ClassificationData.
        """
        dm = getattr(trainer, "datamodule", None)
        for member in ("dataset", "loader", "forget_class_indices", "has_training_data"):
            if not hasattr(dm, member):
                raise TypeError(
                    f"ClassAudit needs a ClassificationData DataModule (missing {member!r}), "
                    f"got {type(dm).__name__}"
                )
        if not hasattr(pl_module, "predict_logits") or not hasattr(pl_module, "summarize"):
            raise TypeError(
                f"ClassAudit audits a ClassificationTask, got {type(pl_module).__name__}"
            )
        assert dm is not None
        result, outputs = audit_classifier(pl_module, dm, mia=self.mia, seed=self.seed)
        self.results[stage] = result
        if trainer.is_global_zero:
            log_metrics(
                trainer.loggers,
                {f"audit/{stage}/{k}": v for k, v in result.items()},
                step=trainer.global_step,
            )
            out_dir = self.save_dir or trainer.log_dir or "."
            self._write(out_dir, stage, result)
            if self.export:
                self._export(out_dir, stage, outputs, dm)
            if self.verbose:
                print(f"class audit ({stage}):\n{_frame(result).pipe(markdown_table, digits=4)}")
        return result

    @staticmethod
    def _write(out_dir: str, stage: str, result: dict[str, float]) -> None:
        os.makedirs(out_dir, exist_ok=True)
        frame = _frame(result)
        frame.to_csv(Path(out_dir) / f"class_audit_{stage}.csv", index=False)
        (Path(out_dir) / f"class_audit_{stage}.md").write_text(
            "Test accuracy on retain (A_r) / forget (A_f) classes, pooled over their test "
            "images; MIA: fraction of forget-train images an entropy logistic regression "
            "(retain-train vs test) calls member.\n\n" + markdown_table(frame, digits=4) + "\n",
            encoding="utf-8",
        )

    @staticmethod
    def _export(out_dir: str, stage: str, outputs: dict[str, Any], dm: Any) -> None:
        save_outputs(Path(out_dir) / f"class_outputs_{stage}.npz", outputs, dm)


def save_outputs(
    path: str | Path, outputs: dict[str, tuple[Tensor, Tensor, Tensor]], dm: Any
) -> Path:
    """Write what an audit measured as ``.npz`` for outside re-checks.

    Per split: ``{split}_logits``, ``{split}_labels`` and ``{split}_ids`` (the source's image
    ids), plus ``class_names`` and ``forget_classes``.
    """
    arrays: dict[str, Any] = {
        "class_names": np.asarray(dm.class_names),
        "forget_classes": np.asarray(dm.forget_class_indices, dtype=np.int64),
    }
    for split, (logits, labels, ids) in outputs.items():
        arrays[f"{split}_logits"] = logits.numpy()
        arrays[f"{split}_labels"] = labels.numpy()
        arrays[f"{split}_ids"] = ids.numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def audit_classifier(
    task: Any, dm: Any, mia: bool = True, seed: int = 0
) -> tuple[dict[str, float], dict[str, tuple[Tensor, Tensor, Tensor]]]:
    """A_r, A_f, per-class accuracy and (with training data and forget classes) the MIA.

    Args:
        task: A :class:`~lit_unlearn.tasks.ClassificationTask` (``predict_logits``,
            ``summarize``).
        dm: Its :class:`~lit_unlearn.datamodules.ClassificationData` (set up or not).
        mia: Compute the entropy MIA when the training split is loaded.
        seed: Seed of the MIA's logistic regression.

    Returns:
        The numbers (``seconds``: the audit's wall time) and the outputs measured, per split:
        ``(logits, labels, ids)``.
    """
    start = time.perf_counter()
    outputs: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    def predict(part: str) -> tuple[Tensor, Tensor, Tensor]:
        loader = dm.loader(part, "all", device=task.device, shard=False)
        out: tuple[Tensor, Tensor, Tensor] = task.predict_logits(loader)
        outputs[part] = out
        return out

    test_logits, test_labels, _ = predict("test")
    k = int(test_logits.shape[1])
    hit = (test_logits.argmax(dim=1) == test_labels).long()
    correct = torch.bincount(test_labels, weights=hit, minlength=k).long()
    total = torch.bincount(test_labels, minlength=k)
    result = dict(task.summarize(correct, total))
    forget = list(dm.forget_class_indices)
    if mia and dm.has_training_data and forget:
        train_logits, train_labels, _ = predict("train")
        is_forget = torch.isin(train_labels, torch.tensor(forget))
        attack = entropy_mia(
            train_logits[~is_forget], test_logits, train_logits[is_forget], seed=seed
        )
        result["MIA"] = attack.mia
        result["MIA_attack_bacc"] = attack.attack_train_accuracy
    result["seconds"] = time.perf_counter() - start
    return result, outputs


def _frame(result: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"metric": k, "value": v} for k, v in result.items()])
