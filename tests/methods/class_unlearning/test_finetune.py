"""FineTune: what it needs from the data, and that it forgets when it is allowed to."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lit_unlearn.attacks.class_audit import audit_classifier
from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import Digits
from lit_unlearn.methods.class_unlearning import FineTune
from lit_unlearn.models.classifiers import SmallCNN
from lit_unlearn.tasks import ClassificationTask


def _trainer(tmp_path: Path, **kw: object) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("orig")
    torch.manual_seed(0)
    task = ClassificationTask(SmallCNN(num_classes=10))
    trainer = _trainer(tmp, max_epochs=8, enable_checkpointing=False)
    trainer.fit(task, ClassificationData(Digits()))
    path = tmp / "ckpt" / "original.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_finetune_needs_retain_training_data(original: Path, tmp_path: Path) -> None:
    for dm, match in [
        (ClassificationData(Digits(), forget_classes=[3]), "train_on=retain"),
        (ClassificationData(Digits(), forget_classes=[3], train_on="retain", mode="source_free"),
         "data_dependent"),
    ]:  # fmt: skip
        trainer = _trainer(tmp_path, max_steps=1, callbacks=[FineTune(str(original))])
        with pytest.raises(ValueError, match=match):
            trainer.fit(ClassificationTask(SmallCNN(num_classes=10)), dm)
    with pytest.raises(ValueError, match="momentum"):
        FineTune(momentum=1.0)
    with pytest.raises(FileNotFoundError):
        FineTune(str(tmp_path / "missing.ckpt"))


def test_finetune_refuses_to_save_over_the_model_it_unlearns(original: Path) -> None:
    before = original.read_bytes()
    trainer = _trainer(
        original.parent, max_steps=1, callbacks=[FineTune(str(original)),
        pl.callbacks.ModelCheckpoint(dirpath=original.parent, save_last=True)],
    )  # fmt: skip
    dm = ClassificationData(Digits(), forget_classes=[3], train_on="retain")
    with pytest.raises(ValueError, match="folder of the checkpoint it unlearns"):
        trainer.fit(ClassificationTask(SmallCNN(num_classes=10)), dm)
    assert original.read_bytes() == before


def test_finetune_starts_from_the_original_and_forgets(original: Path, tmp_path: Path) -> None:
    dm = ClassificationData(Digits(), forget_classes=[3], train_on="retain")
    task = ClassificationTask(SmallCNN(num_classes=10))
    ft = FineTune(str(original), lr=0.1, optimizer="sgd")
    trainer = _trainer(tmp_path, max_epochs=4, enable_checkpointing=False, callbacks=[ft])
    trainer.fit(task, dm)
    audit, _ = audit_classifier(task, dm)
    start = ClassificationTask(SmallCNN(num_classes=10))
    start.restore_weights(torch.load(original, weights_only=False)["state_dict"])
    start.attach_data(dm)
    before, _ = audit_classifier(start, dm)
    assert before["A_f"] > 0.9  # the Original knows the class ...
    assert audit["A_f"] < before["A_f"] - 0.5  # ... and fine-tuning on D_r at lr 0.1 erases it
    assert audit["A_r"] > 0.5  # far above chance (0.1), though lr 0.1 costs retain accuracy
    assert task.unlearning is None  # the callback hands the task back after fit
