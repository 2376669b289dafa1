"""A checkpoint meets only the data and model it belongs to (issue 22, class 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_unlearn.callbacks import AttrCloak, FineTune
from lit_unlearn.datamodules import RecommendationData, Synthetic
from lit_unlearn.datamodules.classification import ClassificationData
from lit_unlearn.datamodules.forgetting_data import ForgettingData
from lit_unlearn.datamodules.images import Digits
from lit_unlearn.fingerprint import FINGERPRINT_KEY, CheckpointMismatchError
from lit_unlearn.models import MF
from lit_unlearn.models.classifiers import SmallCNN
from lit_unlearn.tasks import ClassificationTask, RecommenderTask
from lit_unlearn.trainer import UnlearnTrainer


def _trainer(max_epochs: int = 1, callbacks: list[pl.Callback] | None = None) -> UnlearnTrainer:
    return UnlearnTrainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=callbacks,
    )


def _data(
    seed: int = 0,
    num_users: int = 60,
    mode: Literal["data_dependent", "data_free"] = "data_dependent",
    user_index: str | None = None,
) -> RecommendationData:
    source = Synthetic(num_users=num_users, num_items=120, interactions_per_user=12, seed=seed)
    return RecommendationData(
        source,
        mode=mode,
        user_index=user_index,
        protocols=["sampled"],
        num_eval_negatives=20,
        batch_size=128,
    )


def _task(num_users: int = 60) -> RecommenderTask:
    return RecommenderTask(MF(num_users, 120, embedding_dim=8), lr=1e-2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch MF on the seed-0 synthetic set, saved by a real fit."""
    trainer = _trainer()
    trainer.fit(_task(), datamodule=_data())
    path = tmp_path_factory.mktemp("trained") / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_the_checkpoint_holds_a_fingerprint_of_data_and_model(trained: Path) -> None:
    fingerprint = torch.load(trained, weights_only=False)[FINGERPRINT_KEY]
    assert fingerprint["model"]["backbone"] == "lit_unlearn.models.mf.MF"
    assert fingerprint["model"]["config"]["embedding_dim"] == "8"
    content = fingerprint["data"]["content"]
    assert {"user ids", "item ids", "interactions", "attribute gender"} <= set(content)
    assert "seed=0" in fingerprint["data"]["config"]["source"]


def test_the_same_data_and_model_load(trained: Path) -> None:
    _trainer().test(_task(), datamodule=_data(), ckpt_path=str(trained), verbose=False)


def test_test_on_a_differently_seeded_set_is_refused_naming_what_differs(trained: Path) -> None:
    # Same ids (0..59, 0..119) as the stored model: the id comparison alone let this through.
    with pytest.raises(CheckpointMismatchError) as err:
        _trainer().test(_task(), datamodule=_data(seed=1), ckpt_path=str(trained))
    message = str(err.value)
    assert str(trained) in message
    assert "interactions: stored train" in message
    assert "seed=0" in message and "seed=1" in message  # the source setting that explains it


def test_other_sizes_name_the_checkpoint_not_a_raw_size_mismatch(trained: Path) -> None:
    with pytest.raises(CheckpointMismatchError) as err:
        _trainer().test(_task(50), datamodule=_data(num_users=50), ckpt_path=str(trained))
    message = str(err.value)
    assert str(trained) in message
    assert "model.user_embedding.weight: stored shape [60, 8], current [50, 8]" in message
    assert "backbone setting num_users: stored 60, current 50" in message


def test_resuming_a_fit_on_other_data_is_refused(trained: Path) -> None:
    with pytest.raises(CheckpointMismatchError, match="does not belong to this data"):
        _trainer(2).fit(_task(), datamodule=_data(seed=1), ckpt_path=str(trained))


def test_audit_checks_the_checkpoint(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointMismatchError, match="attribute gender"):
        _trainer().audit(
            _task(), _data(seed=1), ckpt_path=str(trained), attackers=["logreg"],
            output_dir=str(tmp_path),
        )  # fmt: skip


def test_attribute_unlearning_checks_the_model_it_loads(trained: Path, tmp_path: Path) -> None:
    cloak = AttrCloak(checkpoint=str(trained), mode="dd")
    with pytest.raises(CheckpointMismatchError, match=str(trained)):
        _trainer(callbacks=[cloak]).fit(_task(), datamodule=_data(seed=1))


def test_data_free_unlearning_of_its_own_model_is_accepted(trained: Path, tmp_path: Path) -> None:
    """No false refusal: data-free mode has no interactions, the attributes still match."""
    data = _data(mode="data_free", user_index=str(trained))
    out = tmp_path / "unlearned"
    cloak = AttrCloak(checkpoint=str(trained), mode="df")
    saver = ModelCheckpoint(dirpath=out, save_last=True)
    trainer = UnlearnTrainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[cloak, saver],
    )  # fmt: skip
    trainer.fit(_task(), datamodule=data)
    # ... and the unlearned model can be tested on the data-dependent config it came from.
    _trainer().test(_task(), datamodule=_data(), ckpt_path=str(out / "last.ckpt"), verbose=False)


def test_a_checkpoint_without_fingerprint_loads_with_a_warning(
    trained: Path, tmp_path: Path
) -> None:
    old = torch.load(trained, weights_only=False)
    del old[FINGERPRINT_KEY]
    path = tmp_path / "old.ckpt"
    torch.save(old, path)
    with pytest.warns(UserWarning, match="no data/model fingerprint"):
        _trainer().test(_task(), datamodule=_data(), ckpt_path=str(path), verbose=False)
    # Its shapes are still checked, from the state_dict itself.
    with pytest.raises(CheckpointMismatchError, match=r"stored shape \[60, 8\]"):
        _trainer().test(_task(50), datamodule=_data(num_users=50), ckpt_path=str(path))


def test_interaction_unlearning_data_matches_the_original_model() -> None:
    """ForgettingData: the original model (train_on=all) and its unlearners (remaining) agree."""

    def data(train_on: Literal["all", "remaining"]) -> ForgettingData:
        source = Synthetic(num_users=40, num_items=80, interactions_per_user=10, seed=0)
        return ForgettingData(source, num_forget_users=4, train_on=train_on, protocols=["full"])

    assert data("all").fingerprint() == data("remaining").fingerprint()


def test_class_unlearning_checks_the_model_it_loads(tmp_path: Path) -> None:
    def data(seed: int, train_on: Literal["all", "retain"] = "all") -> ClassificationData:
        return ClassificationData(
            Digits(seed=seed), forget_classes=[3], train_on=train_on, batch_size=256
        )

    trainer = _trainer()
    trainer.fit(ClassificationTask(SmallCNN(channels=[4, 8], hidden=16)), datamodule=data(0))
    path = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(path)
    method = FineTune(checkpoint=str(path))
    with pytest.raises(CheckpointMismatchError, match=r"train images: stored"):
        _trainer(callbacks=[method]).fit(
            ClassificationTask(SmallCNN(channels=[4, 8], hidden=16)),
            datamodule=data(1, "retain"),
        )


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "not a readable checkpoint to unlearn"),
        (b"PK\x03\x04 cut off", "not a readable checkpoint to unlearn"),
        (b"\x80\x04\x95garbage", "not a readable checkpoint to unlearn"),
        ("tensor", "expected a dict with a 'state_dict'"),
        ("dict", "expected a dict with a 'state_dict'"),
    ],
    ids=["empty", "truncated-zip", "garbage-pickle", "a-tensor", "a-dict-without-weights"],
)
def test_a_damaged_or_foreign_checkpoint_is_a_clear_error_everywhere(
    trained: Path, tmp_path: Path, content: bytes | str, match: str
) -> None:
    """The unlearning callbacks, audit and ``--ckpt_path`` read checkpoints through
    ``read_checkpoint``: a cut, empty or foreign file is an UnreadableCheckpointError naming
    it (never torch's raw unpickling error), and the model it was meant for is untouched."""
    from lit_unlearn.fingerprint import UnreadableCheckpointError, read_checkpoint

    bad = tmp_path / "bad.ckpt"
    if content == "tensor":
        torch.save(torch.zeros(3), bad)
    elif content == "dict":
        torch.save({"epoch": 3}, bad)
    else:
        assert isinstance(content, bytes)
        bad.write_bytes(content)
    before = trained.read_bytes()
    cloak = AttrCloak(checkpoint=str(bad), mode="dd")
    with pytest.raises(UnreadableCheckpointError, match=match) as err:
        _trainer(callbacks=[cloak]).fit(_task(), datamodule=_data())
    assert err.value.path == str(bad)
    with pytest.raises(UnreadableCheckpointError, match=str(bad)):
        _trainer().audit(
            _task(), _data(), ckpt_path=str(bad), attackers=["logreg"], output_dir=str(tmp_path)
        )
    assert trained.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")
    assert "state_dict" in read_checkpoint(trained)


@pytest.mark.parametrize("error", [MemoryError, OverflowError])
def test_a_record_asking_for_an_absurd_allocation_is_an_unreadable_checkpoint(
    trained: Path, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """Fuzzing found a two-byte overwrite of a checkpoint that makes torch.load raise
    MemoryError (a storage record asking for an absurd size): it is a damaged file, reported as
    one, not an out-of-memory crash."""
    from lit_unlearn.fingerprint import UnreadableCheckpointError, read_checkpoint

    def damaged(*args: object, **kwargs: object) -> None:
        raise error("absurd storage size")

    monkeypatch.setattr(torch, "load", damaged)
    with pytest.raises(UnreadableCheckpointError, match=error.__name__):
        read_checkpoint(trained)
