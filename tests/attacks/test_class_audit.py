"""ClassAudit: the numbers it reports, the files it writes, source-free runs, the audit command."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from lit_unlearn.attacks.class_audit import ClassAudit, audit_classifier
from lit_unlearn.cli import build_cli
from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import Digits, ImageSet, ImageSource, Split
from lit_unlearn.models.classifiers import SmallCNN
from lit_unlearn.tasks import ClassificationTask
from lit_unlearn.trainer import UnlearnTrainer
from tests.conftest import REPO

DIGITS_CNN = str(REPO / "configs" / "experiment" / "class_unlearning" / "digits_cnn.yaml")


def _trainer(tmp_path: Path, **kw: object) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_audit_numbers_match_a_direct_computation() -> None:
    dm = ClassificationData(Digits(), forget_classes=[3])
    task = ClassificationTask(SmallCNN(num_classes=10))
    task.attach_data(dm)
    result, outputs = audit_classifier(task, dm)
    logits, labels, ids = outputs["test"]
    assert torch.equal(ids, dm.dataset("test").ids)  # raw source ids, every test image once
    hit = logits.argmax(1) == labels
    assert math.isclose(result["A_f"], float(hit[labels == 3].double().mean()), abs_tol=1e-9)
    assert math.isclose(result["A_r"], float(hit[labels != 3].double().mean()), abs_tol=1e-9)
    assert 0.0 <= result["MIA"] <= 1.0 and result["seconds"] > 0
    assert outputs["train"][0].shape[0] == len(dm.dataset("train"))


def test_callback_writes_table_and_exports(tmp_path: Path) -> None:
    dm = ClassificationData(Digits(), forget_classes=["7"])
    audit = ClassAudit(when=["fit_start", "fit_end"], export=True, save_dir=str(tmp_path))
    _trainer(tmp_path, max_steps=2, callbacks=[audit]).fit(
        ClassificationTask(SmallCNN(num_classes=10)), dm
    )
    assert set(audit.results) == {"fit_start", "fit_end"}
    for stage in ("fit_start", "fit_end"):
        assert "A_r" in (tmp_path / f"class_audit_{stage}.md").read_text()
        data = np.load(tmp_path / f"class_outputs_{stage}.npz")
        assert {"test_logits", "test_labels", "test_ids", "train_logits", "class_names"} <= set(
            data.files
        )
        assert list(data["forget_classes"]) == [7]


def test_source_free_audit_has_no_mia_and_no_training_outputs(tmp_path: Path) -> None:
    dm = ClassificationData(Digits(), forget_classes=[1], mode="source_free")
    task = ClassificationTask(SmallCNN(num_classes=10))
    task.set_input_stats(torch.zeros(1), torch.ones(1))
    task.attach_data(dm)
    result, outputs = audit_classifier(task, dm)
    assert "MIA" not in result and set(outputs) == {"test"}


def test_audit_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        ClassAudit(when=["epoch_end"])  # type: ignore[list-item]


def test_audit_command_on_a_classifier_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    common = [
        "--config",
        DIGITS_CNN,
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    ]
    cli = build_cli([*common, "--trainer.max_steps=3", "--trainer.callbacks=[]"], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    ckpt = tmp_path / "m.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    out = tmp_path / "audit"
    build_cli(["audit", *common, f"--ckpt_path={ckpt}", "--data.init_args.forget_classes=[2]",
               f"--output_dir={out}"])  # fmt: skip
    assert (out / "class_audit_checkpoint.csv").exists()
    assert np.load(out / "class_outputs_checkpoint.npz")["train_logits"].shape[1] == 10
    # The checkpoint of a 10-class model refuses to meet a 5-class backbone. (Through the CLI,
    # Lightning rebuilds the model from the checkpoint's own hyperparameters.)
    trainer = UnlearnTrainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"(?s)not belong to this model.*num_classes: stored 10"):
        trainer.audit(
            ClassificationTask(SmallCNN(num_classes=5)),
            ClassificationData(Digits()),
            ckpt_path=str(ckpt),
            output_dir=str(out),
        )
    with pytest.raises(ValueError, match=r"(?s)not belong to this data.*classes: stored 10: 0, 1"):
        trainer.audit(
            ClassificationTask(SmallCNN(num_classes=10)),
            ClassificationData(Tiny5(classes=10, prefix="x")),
            ckpt_path=str(ckpt),
            output_dir=str(out),
        )


class Tiny5(ImageSource):
    """Random 8x8 grey images with named classes."""

    name = "tiny"

    def __init__(self, classes: int = 5, prefix: str = "c") -> None:
        self.classes, self.prefix = classes, prefix

    def load(self, split: Split) -> ImageSet:
        n = 4 * self.classes
        images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
        names = tuple(f"{self.prefix}{i}" for i in range(self.classes))
        return ImageSet(images, torch.arange(n) % self.classes, names, torch.arange(n))
