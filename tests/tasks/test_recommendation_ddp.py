"""The whole evaluation path (DataModule loaders + task + metrics) on 1 and on 2 processes.

Rows are sharded without padding, negatives are fixed in setup and metric states are
sum-reduced, so 2 CPU processes (gloo, ddp_spawn) must give exactly the single-process numbers.
Training with DDP must also run (equal step counts on both ranks) and keep the model in sync.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lit_unlearn.datamodules import RecommendationData, Synthetic
from lit_unlearn.models import MF
from lit_unlearn.tasks import RecommenderTask


def make() -> tuple[RecommenderTask, RecommendationData]:
    dm = RecommendationData(
        source=Synthetic(num_users=101, num_items=80, interactions_per_user=12, seed=3),
        num_eval_negatives=30,
        eval_batch_size=16,
        batch_size=64,
    )
    torch.manual_seed(0)
    return RecommenderTask(MF(dm.num_users, dm.num_items, 16), lr=0.05), dm


def trainer(devices: int, root: Path, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.ddp
def test_validation_metrics_equal_on_one_and_two_processes(tmp_path: Path) -> None:
    task, dm = make()
    trainer(1, tmp_path, max_epochs=2, num_sanity_val_steps=0, limit_val_batches=0).fit(task, dm)
    weights = {k: v.clone() for k, v in task.state_dict().items()}

    single = trainer(1, tmp_path).validate(task, dm, verbose=False)[0]
    task2, dm2 = make()
    task2.load_state_dict(weights)
    double = trainer(2, tmp_path).validate(task2, dm2, verbose=False)[0]
    assert (
        set(single) == set(double)
        and any("full" in k for k in single)
        and any("sampled" in k for k in single)
    )
    for key, value in single.items():
        assert double[key] == pytest.approx(value, abs=1e-6), key
    # The evaluated numbers are not trivial (a trained model beats the worst case).
    assert single["val/sampled/hr@10"] > 0.3


@pytest.mark.ddp
def test_ddp_training_runs_with_equal_steps(tmp_path: Path) -> None:
    task, dm = make()
    before = task.user_representation().clone()
    trainer(2, tmp_path, max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0).fit(task, dm)
    # ddp_spawn sends rank 0's weights back to the parent: training moved them.
    assert not torch.allclose(task.user_representation(), before)


class _RecordBatches(pl.Callback):
    """Writes rank 0's training batches per epoch to a file (ddp_spawn returns no trainer)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.write_text(str(int(trainer.num_training_batches)))


@pytest.mark.ddp
def test_ddp_training_is_not_the_single_process_run_as_the_docs_say(tmp_path: Path) -> None:
    """What README / docs/recommendation.md claim of 2-process training, exactly.

    Each process takes ``batch_size`` rows a step (global batch 2 x batch_size) and draws its
    own negatives: the model differs from a 1-process fit even at that global batch.
    """
    task, dm = make()
    record = tmp_path / "batches"
    fit = {"max_epochs": 1, "num_sanity_val_steps": 0, "limit_val_batches": 0}
    trainer(2, tmp_path, callbacks=[_RecordBatches(record)], **fit).fit(task, dm)
    dm.setup("fit")
    n = len(dm.split.train)
    assert int(record.read_text()) == math.ceil(math.ceil(n / 2) / dm.batch_size)
    single, dm1 = make()
    dm1.batch_size = 2 * dm.batch_size  # the same global batch on one process
    trainer(1, tmp_path, **fit).fit(single, dm1)
    assert not torch.allclose(task.user_representation(), single.user_representation())
