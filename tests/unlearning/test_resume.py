"""Kill a fit at a random step, resume it, get the uninterrupted run's weights, bit for bit.

Every family is run three times from the same seed: straight through; stopped at a step drawn
at random (by SIGTERM, which saves ``last.ckpt`` at that step, or by a crash standing in for
SIGKILL, which leaves only the last epoch-end ``last.ckpt``); and resumed from what the stopped
run left with ``ckpt_path``. The resumed weights must equal the straight run's exactly (CPU,
one process, deterministic). Each new build re-seeds the global RNG as a fresh ``lit-unlearn``
process would, so nothing but the checkpoint carries over from the stopped run.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_unlearn.callbacks import AltEraser, AttrCloak
from lit_unlearn.datamodules import (
    ClassificationData,
    FederatedData,
    ForgettingData,
    RecommendationData,
    Synthetic,
)
from lit_unlearn.datamodules.images import Digits
from lit_unlearn.methods.attribute.baselines import D2DR, U2UR
from lit_unlearn.methods.class_unlearning.dsda import DSDA
from lit_unlearn.methods.class_unlearning.finetune import FineTune
from lit_unlearn.methods.class_unlearning.ssd import SSD
from lit_unlearn.methods.class_unlearning.synthesis import LangevinSampler
from lit_unlearn.methods.federated import FederatedTask, PointwiseBCE
from lit_unlearn.models import ENMF, MF, NCF
from lit_unlearn.models.classifiers import SmallCNN
from lit_unlearn.optim import MGDA, FixedWeights
from lit_unlearn.optim.block_solvers import AHNewtonBlock
from lit_unlearn.tasks import ClassificationTask, RecommenderTask
from lit_unlearn.unlearning.run_guard import SIGTERM_EXIT_CODE

How = Literal["sigterm", "sigkill"]
#: A fresh, seeded (task, data, callbacks) as one ``lit-unlearn fit`` process builds them.
Build = Callable[[], tuple[pl.LightningModule, pl.LightningDataModule, list[Callback]]]


class Killed(BaseException):
    """Stands in for SIGKILL: the process dies mid-step, nothing is saved on the way out."""


def batches_done(trainer: pl.Trainer) -> int:
    """Training batches completed since the fit began (one-shot methods make no optimiser
    step, so ``global_step`` would not count them)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)


class StopAt(Callback):
    """Stop the fit after its ``step``-th training batch: by a real SIGTERM or by dying."""

    def __init__(self, step: int, how: How) -> None:
        self.step, self.how = step, how

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if batches_done(trainer) + 1 == self.step:  # counted after this hook
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler stops the loop
            else:
                raise Killed


def _fit(
    build: Build,
    out: Path,
    max_epochs: int,
    extra: list[Callback] | None = None,
    ckpt_path: Path | None = None,
    **trainer_kw: Any,
) -> tuple[pl.LightningModule, pl.Trainer]:
    task, dm, callbacks = build()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=out,
        callbacks=[
            *callbacks,
            *(extra or []),
            ModelCheckpoint(dirpath=out / "ckpt", save_last=True, enable_version_counter=False),
        ],
        **trainer_kw,
    )
    trainer.fit(task, dm, ckpt_path=str(ckpt_path) if ckpt_path is not None else None)
    return task, trainer


def kill_and_resume(
    build: Build,
    tmp_path: Path,
    max_epochs: int,
    how: How,
    seed: int = 0,
    **trainer_kw: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """Straight weights, resumed weights and the step the stopped run was stopped at.

    The step is drawn (seeded) among the steps after which the stopped run leaves a
    checkpoint to resume from: any step but the last for SIGTERM, which saves where it stops;
    a step after the first epoch for SIGKILL, which leaves the last epoch end's.
    """
    straight, trainer = _fit(build, tmp_path / "straight", max_epochs, **trainer_kw)
    total, per_epoch = batches_done(trainer), int(trainer.num_training_batches)
    first = 1 if how == "sigterm" else per_epoch + 1
    assert total == per_epoch * max_epochs and first < total, "too few steps to stop at"
    step = random.Random(seed).randrange(first, total)
    parts = tmp_path / "parts"
    if how == "sigterm":
        with pytest.raises(SystemExit) as stopped:
            _fit(build, parts, max_epochs, [StopAt(step, how)], **trainer_kw)
        assert stopped.value.code == SIGTERM_EXIT_CODE  # an unfinished fit is not a success
    else:
        with pytest.raises(Killed):
            _fit(build, parts, max_epochs, [StopAt(step, how)], **trainer_kw)
    last = parts / "ckpt" / "last.ckpt"
    assert last.is_file(), f"stopped at step {step} before any checkpoint: pick a later step"
    if how == "sigterm":  # saved at the very step it was stopped at
        loops = torch.load(last, weights_only=False)["loops"]["fit_loop"]
        assert loops["epoch_loop.batch_progress"]["total"]["completed"] == step
    resumed, _ = _fit(build, parts, max_epochs, ckpt_path=last, **trainer_kw)
    return straight.state_dict(), resumed.state_dict(), step


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], step: int) -> None:
    assert a.keys() == b.keys()
    diff = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()}
    assert all(torch.equal(a[k], b[k]) for k in a), f"stopped at step {step}: max |diff| {diff}"


# ---------------------------------------------------------------------- plain recommendation
def _recommender() -> tuple[pl.LightningModule, pl.LightningDataModule, list[Callback]]:
    pl.seed_everything(0, verbose=False)
    dm = RecommendationData(
        source=Synthetic(num_users=120, num_items=80, seed=0),
        attributes=["gender"],
        batch_size=64,
        num_eval_negatives=20,
    )
    return RecommenderTask(MF(120, 80, 8), lr=0.01), dm, []


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_plain_recommendation_training(tmp_path: Path, how: How) -> None:
    # 52 steps an epoch: SIGTERM lands mid-epoch (the loader resumes at the next batch and
    # the training negatives' RNG is restored), SIGKILL resumes from the last epoch end.
    a, b, step = kill_and_resume(_recommender, tmp_path, 4, how)
    assert_identical(a, b, step)


# ---------------------------------------------------------------------- attribute unlearning
ATTRIBUTE_SOURCE: dict[str, Any] = {
    "num_users": 120,
    "num_items": 80,
    "interactions_per_user": 15,
    "attribute_signal": 1.5,
    "seed": 2,
}


def _attribute_data(mode: str, user_index: Path | None = None) -> RecommendationData:
    return RecommendationData(
        source=Synthetic(**ATTRIBUTE_SOURCE),
        mode=mode,  # type: ignore[arg-type]
        user_index=str(user_index) if user_index is not None else None,
        attributes=["gender", "age"],
        batch_size=10_000 if mode == "data_free" else 128,
        num_eval_negatives=20,
    )


@pytest.fixture(scope="module")
def trained_recommenders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An MF and an NCF trained on the leaky synthetic data (the models to unlearn)."""
    root = tmp_path_factory.mktemp("trained")
    out: dict[str, Path] = {}
    for name in ("mf", "ncf"):
        pl.seed_everything(0, verbose=False)
        dm = _attribute_data("data_dependent")
        backbone = MF(120, 80, 16) if name == "mf" else NCF(120, 80, 16, hidden_layers=1)
        task = RecommenderTask(backbone, lr=0.02)
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            default_root_dir=root,
        )
        trainer.fit(task, dm)
        out[name] = root / f"{name}.ckpt"
        trainer.save_checkpoint(out[name])
    return out


@pytest.mark.parametrize(
    ("method", "how"),
    [
        ("attrcloak-df", "sigterm"),
        ("attrcloak-df", "sigkill"),
        ("attrcloak-dd", "sigterm"),
        ("u2u-r", "sigkill"),
        ("d2d-r", "sigterm"),
    ],
)
def test_attribute_unlearning(
    trained_recommenders: dict[str, Path], tmp_path: Path, method: str, how: How
) -> None:
    ncf = method == "attrcloak-df"  # the case: NCF, data-free, MGDA
    ckpt = trained_recommenders["ncf" if ncf else "mf"]
    data_free = method != "attrcloak-dd"

    def build() -> tuple[pl.LightningModule, pl.LightningDataModule, list[Callback]]:
        pl.seed_everything(0, verbose=False)
        backbone = NCF(120, 80, 16, hidden_layers=1) if ncf else MF(120, 80, 16)
        task = RecommenderTask(backbone, lr=0.02)
        dm = _attribute_data("data_free" if data_free else "data_dependent", ckpt)
        cb: Callback
        if method == "attrcloak-df":
            cb = AttrCloak(str(ckpt), mode="df", lr=0.05, combiner=MGDA(bounds=(0.5, 0.97)))
        elif method == "attrcloak-dd":
            cb = AttrCloak(str(ckpt), mode="dd", lr=0.01)
        elif method == "u2u-r":
            cb = U2UR(str(ckpt), lr=0.05, num_pairs=64)
        else:
            cb = D2DR(str(ckpt), lr=0.05)
        return task, dm, [cb]

    # Data-free: one step per epoch (every user in one batch); DD: 15 steps an epoch.
    epochs = 12 if data_free else 3
    a, b, step = kill_and_resume(build, tmp_path, epochs, how, limit_val_batches=0)
    assert_identical(a, b, step)


def test_the_data_free_reference_is_the_original_model_after_a_resume(
    trained_recommenders: dict[str, Path], tmp_path: Path
) -> None:
    """The issue's symptom: the retention loss read 0 at the first resumed step."""
    ckpt = trained_recommenders["mf"]
    seen: list[float] = []

    class Retention(Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            seen.append(float(trainer.callback_metrics["unlearn/retention"]))

    def build() -> tuple[pl.LightningModule, pl.LightningDataModule, list[Callback]]:
        pl.seed_everything(0, verbose=False)
        cloak = AttrCloak(str(ckpt), mode="df", lr=0.05, combiner=FixedWeights([0.5, 0.5]))
        dm = _attribute_data("data_free", ckpt)
        return RecommenderTask(MF(120, 80, 16), lr=0.02), dm, [cloak, Retention()]

    _, _, step = kill_and_resume(build, tmp_path, 6, "sigterm", limit_val_batches=0)
    straight, parts = seen[:6], seen[6:]
    resumed = parts[step:]  # the stopped run logged steps 1..step
    assert resumed == straight[step:], (step, straight, parts)
    assert resumed[0] > 0.0


# ---------------------------------------------------------------------- interaction unlearning
@pytest.fixture(scope="module")
def trained_enmf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("enmf")
    pl.seed_everything(0, verbose=False)
    task = _enmf_task()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
    )
    trainer.fit(task, _forgetting_data("all"))
    path = root / "enmf.ckpt"
    trainer.save_checkpoint(path)
    return path


def _enmf_task() -> RecommenderTask:
    model = ENMF(100, 80, embedding_dim=8, negative_weight=0.1, reg=0.01, dropout=0.3)
    return RecommenderTask(model, loss="nonsampling", optimizer="adamw", lr=0.02, ks=[10])


def _forgetting_data(train_on: Literal["all", "remaining"]) -> ForgettingData:
    source = Synthetic(num_users=100, num_items=80, interactions_per_user=15)
    return ForgettingData(source, num_forget_users=8, train_on=train_on, batch_size=1024)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_alteraser(trained_enmf: Path, tmp_path: Path, how: How) -> None:
    def build() -> tuple[pl.LightningModule, pl.LightningDataModule, list[Callback]]:
        pl.seed_everything(0, verbose=False)
        eraser = AltEraser(str(trained_enmf), solver=AHNewtonBlock(), max_passes=10, tol=0.0)
        return _enmf_task(), _forgetting_data("remaining"), [eraser]

    a, b, step = kill_and_resume(
        build, tmp_path, 10, how, limit_train_batches=1, limit_val_batches=0
    )
    assert_identical(a, b, step)


# ---------------------------------------------------------------------- class unlearning
@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cnn")
    pl.seed_everything(0, verbose=False)
    task = ClassificationTask(SmallCNN(num_classes=10))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
    )
    trainer.fit(task, ClassificationData(Digits()))
    path = root / "cnn.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize(("method", "how"), [("dsda", "sigterm"), ("finetune", "sigkill")])
def test_class_unlearning(trained_cnn: Path, tmp_path: Path, method: str, how: How) -> None:
    def build() -> tuple[pl.LightningModule, pl.LightningDataModule, list[Callback]]:
        pl.seed_everything(0, verbose=False)
        task = ClassificationTask(SmallCNN(num_classes=10))
        cb: Callback
        if method == "dsda":
            # Stage 1 synthesises from the model: on resume, from the original one.
            dm = ClassificationData(Digits(), forget_classes=[3], mode="source_free")
            sampler = LangevinSampler(steps=10, skip=2, step_size=1.0, noise_scale=0.01)
            cb = DSDA(str(trained_cnn), lr=3e-4, sampler=sampler, samples_per_class=16)
        else:
            dm = ClassificationData(Digits(), forget_classes=[3], train_on="retain")
            cb = FineTune(str(trained_cnn), lr=0.01)
        return task, dm, [cb]

    a, b, step = kill_and_resume(build, tmp_path, 3, how, limit_val_batches=0)
    assert_identical(a, b, step)


def test_a_one_shot_edit_is_never_applied_twice(trained_cnn: Path, tmp_path: Path) -> None:
    def build() -> tuple[pl.LightningModule, pl.LightningDataModule, list[Callback]]:
        pl.seed_everything(0, verbose=False)
        dm = ClassificationData(Digits(), forget_classes=[3])
        return ClassificationTask(SmallCNN(num_classes=10)), dm, [SSD(str(trained_cnn))]

    # SSD dampens at fit start; its steps change no weight. Resumed, it must not dampen the
    # restored (already dampened) weights again.
    a, b, step = kill_and_resume(
        build, tmp_path, 2, "sigterm", limit_train_batches=4, limit_val_batches=0
    )
    assert_identical(a, b, step)


# ---------------------------------------------------------------------- federated engine
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_federated_engine(tmp_path: Path, how: How) -> None:
    def build() -> tuple[pl.LightningModule, pl.LightningDataModule, list[Callback]]:
        pl.seed_everything(0, verbose=False)
        source = Synthetic(num_users=60, num_items=50, interactions_per_user=10, seed=0)
        dm = FederatedData(source=source, rounds_per_epoch=4, num_eval_negatives=9)
        model = NCF(60, 50, 8, hidden_layers=1, scorer="neumf")
        return FederatedTask(model, PointwiseBCE(), fraction=0.25), dm, []

    a, b, step = kill_and_resume(build, tmp_path, 3, how, limit_val_batches=0)
    assert_identical(a, b, step)
