"""DSDA end to end on real digits, source-free: it forgets without reading a training image."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lit_unlearn.attacks.class_audit import audit_classifier
from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import Digits, ImageSet, Split
from lit_unlearn.methods.class_unlearning.dsda import DSDA
from lit_unlearn.methods.class_unlearning.synthesis import LangevinSampler
from lit_unlearn.models.classifiers import SmallCNN
from lit_unlearn.optim import FixedWeights
from lit_unlearn.tasks import ClassificationTask


class TestOnlyDigits(Digits):
    """Digits that fail loudly if anything asks for the training split."""

    def load(self, split: Split) -> ImageSet:
        if split != "test":
            raise AssertionError(f"source-free unlearning read the {split} split")
        return super().load(split)


def _trainer(tmp_path: Path, **kw: object) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("orig")
    torch.manual_seed(0)
    task = ClassificationTask(SmallCNN(num_classes=10))
    trainer = _trainer(tmp, max_epochs=10)
    trainer.fit(task, ClassificationData(Digits()))
    path = tmp / "original.ckpt"
    trainer.save_checkpoint(path)
    return path


def _unlearn(original: Path, tmp_path: Path, **kwargs: object) -> tuple[ClassificationTask, DSDA]:
    # Seeded here: the run also draws from the global RNG (batch order), so without it the
    # outcome depended on which tests ran before (wo-mt: A_f 0.35 after the dsda variant).
    torch.manual_seed(0)
    dm = ClassificationData(TestOnlyDigits(), forget_classes=[3], mode="source_free")
    task = ClassificationTask(SmallCNN(num_classes=10))
    sampler = LangevinSampler(steps=40, skip=5, step_size=1.0, noise_scale=0.01)
    cb = DSDA(str(original), lr=3e-4, sampler=sampler, samples_per_class=64, **kwargs)  # type: ignore[arg-type]
    _trainer(tmp_path, max_epochs=5, callbacks=[cb]).fit(task, dm)
    return task, cb


@pytest.mark.parametrize("variant", ["dsda", "wo-mt", "wo-disc"])
def test_dsda_forgets_the_class_source_free(original: Path, tmp_path: Path, variant: str) -> None:
    variants: dict[str, dict[str, object]] = {
        "dsda": {},
        "wo-mt": {"combiner": FixedWeights([1.0, 1.0, 1.0])},
        "wo-disc": {"disc": False},
    }
    kwargs = variants[variant]
    task, cb = _unlearn(original, tmp_path, **kwargs)
    full = ClassificationData(Digits(), forget_classes=[3])  # evaluation only, after the fact
    full.load()
    task.attach_data(full)
    result, _ = audit_classifier(task, full, mia=False)
    # The synthetic forget samples are all misclassified when training stops; the real forget
    # test images follow closely for DSDA, less so for the ablations (wo-disc: ~0.14).
    assert result["A_f"] <= (0.1 if variant == "dsda" else 0.3), result
    assert result["A_r"] >= 0.85, result
    assert cb.score_evals == 16 and cb.synthesis_s > 0
    assert task.current_epoch < 5 or result["A_f"] == 0  # the stop rule ends it once forgotten


def test_dsda_needs_forget_classes_and_a_classification_datamodule(
    original: Path, tmp_path: Path
) -> None:
    task = ClassificationTask(SmallCNN(num_classes=10))
    dm = ClassificationData(TestOnlyDigits(), mode="source_free")
    with pytest.raises(ValueError, match="forget classes"):
        _trainer(tmp_path, max_epochs=1, callbacks=[DSDA(str(original))]).fit(task, dm)
    with pytest.raises(ValueError, match="samples_per_class"):
        DSDA(samples_per_class=0)
