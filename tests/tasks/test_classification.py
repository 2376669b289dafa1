"""ClassificationTask: validation, data hookup errors, normalisation, schedule, metrics."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import Digits, ImageSet, ImageSource, Split
from lit_unlearn.models.classifiers import CifarResNet18, SmallCNN
from lit_unlearn.tasks import ClassificationTask


class Tiny(ImageSource):
    """Random uint8 images, ``per_class`` per class in both splits."""

    name = "tiny"

    def __init__(
        self, classes: int = 4, per_class: int = 6, shape: tuple[int, int, int] = (1, 8, 8)
    ):
        self.classes, self.per_class, self.shape = classes, per_class, shape

    def load(self, split: Split) -> ImageSet:
        gen = torch.Generator().manual_seed(0 if split == "train" else 1)
        n = self.classes * self.per_class
        images = torch.randint(0, 256, (n, *self.shape), generator=gen, dtype=torch.uint8)
        labels = torch.arange(n) % self.classes
        return ImageSet(
            images, labels, tuple(f"c{i}" for i in range(self.classes)), torch.arange(n)
        )


def trainer(**kw: object) -> pl.Trainer:
    args: dict = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    args.update(kw)
    return pl.Trainer(**args)


def test_constructor_validation() -> None:
    cnn = SmallCNN(num_classes=4)
    for kwargs, match in [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"lr": 0.0}, "lr > 0"),
        ({"milestones": [3, 3]}, "milestones"),
        ({"milestones": [0]}, "milestones"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"gamma": 0.0}, "gamma"),
    ]:
        with pytest.raises(ValueError, match=match):
            ClassificationTask(cnn, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Classifier"):
        ClassificationTask(torch.nn.Linear(3, 3))  # type: ignore[arg-type]


def test_backbone_that_does_not_fit_the_data_is_refused_at_setup() -> None:
    dm = ClassificationData(Tiny(classes=4))
    with pytest.raises(ValueError, match="num_classes=4"):
        ClassificationTask(SmallCNN(num_classes=10)).attach_data(dm)
    with pytest.raises(ValueError, match="in_channels=1"):
        ClassificationTask(CifarResNet18(num_classes=4, width=8)).attach_data(dm)
    with pytest.raises(ValueError, match="image_size=8"):
        ClassificationTask(SmallCNN(num_classes=4, image_size=28)).attach_data(dm)
    with pytest.raises(TypeError, match="lacks"):  # a recommender's DataModule
        from lit_unlearn.datamodules import RecommendationData, Synthetic

        ClassificationTask(SmallCNN(num_classes=4)).attach_data(
            RecommendationData(Synthetic(num_users=20, num_items=10, interactions_per_user=4))
        )
    with pytest.raises(ValueError, match="num_classes"):  # through a Trainer: before any step
        trainer(max_steps=1).fit(ClassificationTask(SmallCNN(num_classes=10)), dm)


def test_normalisation_comes_from_train_is_saved_and_equal_for_uint8_and_float() -> None:
    dm = ClassificationData(Tiny())
    task = ClassificationTask(SmallCNN(num_classes=4))
    task.attach_data(dm)
    stats = dm.normalization()
    assert stats is not None
    assert torch.allclose(task.input_mean, stats[0]) and torch.allclose(task.input_std, stats[1])
    state = task.state_dict()
    assert {"input_mean", "input_std", "input_stats_set"} <= set(state)
    x8 = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    assert torch.allclose(task.normalize(x8), task.normalize(x8.float() / 255), atol=1e-6)
    z = task.normalize(dm.dataset("train").images)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-2
    # A restored model keeps its statistics even if the data would give others.
    other = ClassificationTask(SmallCNN(num_classes=4))
    other.restore_weights(state)
    other.attach_data(ClassificationData(Tiny(per_class=9)))
    assert torch.equal(other.input_mean, task.input_mean)


def test_restore_refuses_another_model() -> None:
    task = ClassificationTask(SmallCNN(num_classes=4))
    with pytest.raises(ValueError, match="does not hold a SmallCNN"):
        task.restore_weights(ClassificationTask(SmallCNN(num_classes=10)).state_dict())
    with pytest.raises(ValueError, match="does not hold"):
        task.restore_weights({"model.user_embedding.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="normalisation"):
        task.restore_weights(ClassificationTask(SmallCNN(num_classes=4)).state_dict())


def test_training_reduces_loss_and_schedule_steps_per_epoch() -> None:
    dm = ClassificationData(Tiny(), batch_size=8)
    task = ClassificationTask(SmallCNN(num_classes=4), lr=0.01, milestones=[1, 2], gamma=0.5)
    before = [p.detach().clone() for p in task.parameters()]
    trainer(max_epochs=3).fit(task, dm)
    sch = task.lr_schedulers()
    assert isinstance(sch, torch.optim.lr_scheduler.MultiStepLR)
    assert math.isclose(sch.optimizer.param_groups[0]["lr"], 0.01 * 0.25)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters(), strict=True))


def test_nan_loss_stops_the_run() -> None:
    task = ClassificationTask(SmallCNN(num_classes=4))
    task.set_input_stats(torch.zeros(1), torch.ones(1))
    batch = {"image": torch.full((2, 1, 8, 8), float("nan")), "label": torch.tensor([0, 1])}
    with pytest.raises(FloatingPointError, match="non-finite"):
        task.task_loss(batch)


def test_test_loop_reports_pooled_retain_and_forget_accuracy() -> None:
    dm = ClassificationData(Digits(), forget_classes=["3", 7], eval_batch_size=50)
    task = ClassificationTask(SmallCNN(num_classes=10))
    out = trainer().test(task, dm, verbose=False)[0]
    logits, labels, _ = task.predict_logits(dm.loader("test"))
    hit = logits.argmax(1) == labels
    forget = torch.isin(labels, torch.tensor([3, 7]))
    assert math.isclose(out["test/A_f"], float(hit[forget].float().mean()), abs_tol=1e-6)
    assert math.isclose(out["test/A_r"], float(hit[~forget].float().mean()), abs_tol=1e-6)
    assert math.isclose(out["test/acc"], float(hit.float().mean()), abs_tol=1e-6)
    assert math.isclose(
        out["test/acc_class/3"], float(hit[labels == 3].float().mean()), abs_tol=1e-6
    )


def test_checkpoint_records_the_label_set(tmp_path: Path) -> None:
    dm = ClassificationData(Tiny(), forget_classes=[1])
    task = ClassificationTask(SmallCNN(num_classes=4))
    t = trainer(max_steps=1, default_root_dir=tmp_path)
    t.fit(task, dm)
    t.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=False)
    assert ckpt["lit_unlearn"]["class_names"] == ["c0", "c1", "c2", "c3"]
    assert ckpt["ClassificationData"]["forget_classes"] == [1]
    with pytest.raises(ValueError, match="trained on 4 classes"):
        ClassificationData(Tiny(classes=5)).load_state_dict(ckpt["ClassificationData"])
