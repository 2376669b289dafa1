"""Classifier evaluation and training on 1 and on 2 processes (CPU gloo, ddp_spawn).

Test rows are sharded without padding and per-class counts are sum-reduced, so A_r, A_f and
every per-class accuracy on 2 processes equal the single-process numbers exactly; the input
normalisation is computed from the whole train split on every rank (the same statistics).
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import Digits
from lit_unlearn.models.classifiers import SmallCNN
from lit_unlearn.tasks import ClassificationTask


def make() -> tuple[ClassificationTask, ClassificationData]:
    torch.manual_seed(0)
    # 47 per batch: 360 test rows split unevenly over 2 ranks and over batches.
    dm = ClassificationData(Digits(), forget_classes=[3, 8], eval_batch_size=47, batch_size=32)
    return ClassificationTask(SmallCNN(num_classes=10)), dm


def trainer(devices: int, root: Path, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.ddp
def test_test_metrics_equal_on_one_and_two_processes(tmp_path: Path) -> None:
    task, dm = make()
    trainer(1, tmp_path, max_epochs=2, num_sanity_val_steps=0).fit(task, dm)
    weights = {k: v.clone() for k, v in task.state_dict().items()}
    single = trainer(1, tmp_path).test(task, dm, verbose=False)[0]
    task2, dm2 = make()
    task2.load_state_dict(weights)
    double = trainer(2, tmp_path).test(task2, dm2, verbose=False)[0]
    assert {"test/A_r", "test/A_f", "test/acc_class/3"} <= set(single) == set(double)
    for key, value in single.items():
        assert double[key] == pytest.approx(value, abs=1e-9), key
    assert 0.3 < single["test/A_r"] < 1.0  # trained, and not trivially perfect


@pytest.mark.ddp
def test_ddp_training_moves_the_weights(tmp_path: Path) -> None:
    task, dm = make()
    before = [p.detach().clone() for p in task.model.parameters()]
    trainer(2, tmp_path, max_epochs=1, num_sanity_val_steps=0).fit(task, dm)
    assert bool(task.input_stats_set)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.parameters(), strict=True))
