"""The base unlearning callback never lets a run write over the model it unlearns."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_unlearn.callbacks import AttrCloak
from lit_unlearn.optim import FixedWeights
from tests.unlearning.test_contract import AttributesOnly, TableTask, _leaky_table


def _saved_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    table, _ = _leaky_table()
    path = folder / "last.ckpt"
    torch.save({"state_dict": TableTask(table).state_dict()}, path)
    return path


def _fit(tmp_path: Path, checkpoint: Path, dirpath: str) -> None:
    table, codes = _leaky_table()
    cloak = AttrCloak(
        checkpoint=str(checkpoint), mode="df", lr=0.1, combiner=FixedWeights([1.0, 0.0])
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[cloak, ModelCheckpoint(dirpath=dirpath, save_last=True)],
    )
    trainer.fit(TableTask(torch.zeros_like(table)), datamodule=AttributesOnly(codes))


def test_an_output_into_the_input_folder_is_refused_whatever_the_path_looks_like(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _saved_model(tmp_path / "trained" / "checkpoints")
    before = model.read_bytes()
    link = tmp_path / "linked"
    link.symlink_to(model.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for dirpath in (
        str(model.parent),  # the same folder
        "trained/checkpoints",  # relative
        str(tmp_path / "trained" / "x" / ".." / "checkpoints"),  # with ..
        str(link),  # through a symlink
    ):
        with pytest.raises(ValueError, match=r"saves into .* the folder of the checkpoint"):
            _fit(tmp_path, model, dirpath)
        assert model.read_bytes() == before, dirpath  # nothing was written over it
    assert sorted(os.listdir(model.parent)) == ["last.ckpt"]


def test_an_output_elsewhere_runs_and_keeps_the_input(tmp_path: Path) -> None:
    model = _saved_model(tmp_path / "trained")
    before = model.read_bytes()
    _fit(tmp_path, model, str(tmp_path / "unlearned"))
    assert (tmp_path / "unlearned" / "last.ckpt").is_file()
    assert model.read_bytes() == before
