"""FederatedErasureUnlearning: the erasure of a trained federated model, from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_unlearn.datamodules import FederatedData, Synthetic
from lit_unlearn.methods.federated import (
    AdversaryTerm,
    FederatedTask,
    MultinomialELBO,
    PointwiseBCE,
)
from lit_unlearn.methods.federated.audit import GradientInversionAudit
from lit_unlearn.methods.federated.erasure import FederatedErasure
from lit_unlearn.methods.federated.unlearn import FederatedErasureUnlearning
from lit_unlearn.models import NCF, MultVAE


def _dm() -> FederatedData:
    source = Synthetic(num_users=80, num_items=60, interactions_per_user=12, seed=0)
    return FederatedData(
        source=source, attributes=["gender"], rounds_per_epoch=3, num_eval_negatives=9
    )


def _task(
    kind: str, final_erasure: FederatedErasure | None = None, head: bool = False
) -> FederatedTask:
    torch.manual_seed(0)
    terms = [AdversaryTerm(input_dim=16, num_classes=2, lr=0.1)] if head else None
    if kind == "vae":
        return FederatedTask(
            MultVAE(80, 60, embedding_dim=6, hidden=12, dropout=0.5),
            MultinomialELBO(),
            attribute="gender",
            fraction=0.5,
            lr=0.01,
            optimizer="adam",
            final_erasure=final_erasure,
        )
    return FederatedTask(
        NCF(80, 60, 8, hidden_layers=1, scorer="neumf"),
        PointwiseBCE(),
        terms=terms,  # type: ignore[arg-type]
        attribute="gender",
        fraction=0.5,
        lr=0.01,
        optimizer="adam",
        final_erasure=final_erasure,
    )


def _trainer(root: Path, epochs: int, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,  # type: ignore[arg-type]
    )


def _erase_trained(
    root: Path, kind: str, checkpoint: Path, erasure: FederatedErasure
) -> tuple[FederatedTask, FederatedErasureUnlearning, Path]:
    callback = FederatedErasureUnlearning(checkpoint=str(checkpoint), erasure=erasure)
    saver = ModelCheckpoint(dirpath=root / "erased", save_last=True)
    task = _task(kind)
    _trainer(root, 1, limit_train_batches=1, callbacks=[callback, saver]).fit(task, _dm())
    return task, callback, root / "erased" / "last.ckpt"


@pytest.mark.parametrize("kind", ["ncf", "vae"])
def test_erasing_a_trained_checkpoint_equals_the_in_fit_erasure(kind: str, tmp_path: Path) -> None:
    """The same protocol run after training, on the checkpoint, gives the model the fit's
    final_erasure gave (FedVAE: on its eval-mode means, as in the fit)."""

    # Exact removal at a low bar: a few rounds leave too little signal for the calibrated
    # shrink to move anything (the ML-100K runs in docs/fedau2.md use it).
    def erasure() -> FederatedErasure:
        return FederatedErasure(replicates=10, quantile=0.01, calibrate=False, seed=3)

    in_fit = _task(kind, final_erasure=erasure())
    _trainer(tmp_path / "a", 2).fit(in_fit, _dm())
    assert in_fit.erased and in_fit.erasure_plan is not None and in_fit.erasure_plan.rank == 1

    plain = _task(kind)
    trainer = _trainer(tmp_path / "b", 2)
    trainer.fit(plain, _dm())
    trained = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(trained)
    before = plain.user_representation()
    stamp = trained.stat().st_mtime_ns

    task, callback, saved = _erase_trained(tmp_path / "c", kind, trained, erasure())
    assert callback.one_shot_done and callback.plan is not None and task.erased
    torch.testing.assert_close(callback.plan.class_shift, in_fit.erasure_plan.class_shift)
    torch.testing.assert_close(task.user_representation(), in_fit.user_representation())
    codes = task.engine.labels if task.engine is not None else None
    assert codes is not None
    moved = task.user_representation() - before
    assert float(moved.abs().max()) > 0
    torch.testing.assert_close(
        moved, callback.erasure.shifts(callback.plan, codes).to(moved.dtype), atol=1e-6, rtol=0
    )
    # The trained run's round count and client states came along; the checkpoint is untouched.
    assert task.rounds_done == 6
    assert trained.stat().st_mtime_ns == stamp
    # The saved model is the erased one, marked so: it refuses further training and a
    # second erasure.
    state = torch.load(saved, map_location="cpu", weights_only=False)
    for name, value in task.state_dict().items():
        assert torch.equal(state["state_dict"][name], value), name
    with pytest.raises(ValueError, match="erased already"):
        _erase_trained(tmp_path / "d", kind, saved, FederatedErasure(replicates=10))


def test_bad_combinations_are_refused(tmp_path: Path) -> None:
    plain = _task("ncf")
    trainer = _trainer(tmp_path, 1)
    trainer.fit(plain, _dm())
    trained = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(trained)
    callback = FederatedErasureUnlearning(checkpoint=str(trained))
    with pytest.raises(ValueError, match="final_erasure"):
        _trainer(tmp_path / "x", 1, limit_train_batches=1, callbacks=[callback]).fit(
            _task("ncf", final_erasure=FederatedErasure()), _dm()
        )
    no_attribute = FederatedTask(NCF(80, 60, 8, hidden_layers=1, scorer="neumf"))
    with pytest.raises(ValueError, match="attribute"):
        _trainer(tmp_path / "y", 1, limit_train_batches=1, callbacks=[callback]).fit(
            no_attribute, _dm()
        )
    # A checkpoint of another backbone is refused before anything changes.
    with pytest.raises(ValueError):
        _erase_trained(tmp_path / "z", "vae", trained, FederatedErasure())
    with pytest.raises(FileNotFoundError):
        FederatedErasureUnlearning(checkpoint=str(tmp_path / "missing.ckpt"))


def test_resuming_a_finished_fit_with_final_erasure_is_refused_not_a_silent_no_op(
    tmp_path: Path,
) -> None:
    """A fit resumed after its last round runs no step, so final_erasure would never run."""
    plain = _task("ncf")
    trainer = _trainer(tmp_path, 1)
    trainer.fit(plain, _dm())
    trained = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(trained)
    with pytest.raises(ValueError, match="FederatedErasureUnlearning"):
        _trainer(tmp_path / "r", 1).fit(
            _task("ncf", final_erasure=FederatedErasure()), _dm(), ckpt_path=str(trained)
        )
    # Resuming with rounds left still erases after the last one.
    resumed = _task("ncf", final_erasure=FederatedErasure(replicates=5))
    _trainer(tmp_path / "s", 2).fit(resumed, _dm(), ckpt_path=str(trained))
    assert resumed.erased and resumed.rounds_done == 6


def test_gradient_audit_skips_a_fit_that_ran_no_round(tmp_path: Path) -> None:
    """The server's stored uploads are not checkpointed: a fit without a round has nothing to
    attack, and says so instead of failing at its end."""
    plain = _task("ncf", head=True)
    trainer = _trainer(tmp_path, 1)
    trainer.fit(plain, _dm())
    trained = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(trained)
    audit = GradientInversionAudit(at_round=100)
    callback = FederatedErasureUnlearning(checkpoint=str(trained))
    with pytest.warns(UserWarning, match="no upload"):
        _trainer(tmp_path / "g", 1, limit_train_batches=1, callbacks=[callback, audit]).fit(
            _task("ncf", head=True), _dm()
        )
    assert not audit.results


def test_another_attribute_is_erased_with_its_own_labels(tmp_path: Path) -> None:
    """A model whose clients trained with gender labels, erased for age: the plan is the one
    the age labels give (the same as erasing a model that named age as its attribute), and an
    attribute the data does not hold is refused before anything changes."""
    dm = FederatedData(
        source=Synthetic(num_users=80, num_items=60, interactions_per_user=12, seed=0),
        attributes=["gender", "age"],
        age_scheme="fedau2",
        rounds_per_epoch=3,
        num_eval_negatives=9,
    )
    trainer = _trainer(tmp_path, 2)
    trainer.fit(_task("ncf"), dm)
    trained = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(trained)

    def erasure() -> FederatedErasure:
        return FederatedErasure(replicates=10, quantile=0.01, calibrate=False, seed=1)

    callback = FederatedErasureUnlearning(
        checkpoint=str(trained), erasure=erasure(), attribute="age"
    )
    task = _task("ncf")
    _trainer(tmp_path / "a", 1, limit_train_batches=1, callbacks=[callback]).fit(task, dm)
    assert callback.plan is not None and callback.plan.class_shift.shape[0] == 3
    assert callback.plan.rank >= 1

    # Reference: the plan of the same rows under the age codes, as a task with attribute age
    # would make it.
    codes = dm.user_attributes.codes["age"]
    reference = erasure().plan(_representation(trained), codes, 3)
    torch.testing.assert_close(callback.plan.class_shift, reference.class_shift)

    with pytest.raises(ValueError, match="occupation"):
        _trainer(
            tmp_path / "b",
            1,
            limit_train_batches=1,
            callbacks=[FederatedErasureUnlearning(checkpoint=str(trained), attribute="occupation")],
        ).fit(_task("ncf"), dm)


def _representation(checkpoint: Path) -> torch.Tensor:
    task = _task("ncf")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    task.restore_weights(state["state_dict"])
    return task.user_representation()
