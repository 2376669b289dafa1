"""A diverging run stops with a clear error before it saves anything (issue 22, class 3)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lit_unlearn.callbacks import AttrCloak
from lit_unlearn.datamodules import RecommendationData, Synthetic
from lit_unlearn.divergence import DivergenceError, DivergenceGuard
from lit_unlearn.models import MF
from lit_unlearn.tasks import RecommenderTask
from tests.unlearning.test_contract import AttributesOnly, TableTask, _leaky_table


# ---------------------------------------------------------------------- the guard's checks
def _trainer(step: int = 7) -> Any:
    return SimpleNamespace(global_step=step, current_epoch=1, world_size=1)


def _module(value: float = 0.5) -> nn.Linear:
    module = nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.fill_(value)
    return module


def _after_step(guard: DivergenceGuard, module: nn.Linear, loss: float = 1.0) -> None:
    guard.on_train_batch_end(
        _trainer(), cast(pl.LightningModule, module), torch.tensor(loss), None, 0
    )


def test_a_healthy_step_passes() -> None:
    guard, module = DivergenceGuard(), _module()
    guard.on_train_start(_trainer(0), cast(pl.LightningModule, module))
    _after_step(guard, module)
    guard.on_train_epoch_end(_trainer(), cast(pl.LightningModule, module))


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda m: None, r"step 7 \(epoch 1\): non-finite training loss nan"),
        (lambda m: m.weight.data.fill_(math.nan), r"parameter weight holds NaN or inf"),
        (lambda m: m.bias.data.fill_(2e4), r"parameter bias reached \|w\| = 2e\+04"),
        (lambda m: m.weight.data.fill_(5e3), r"L2 norm grew from .* max_norm_growth=1000"),
        (lambda m: setattr(m.weight, "grad", torch.full((2, 3), math.inf)), r"gradient of weight"),
        (lambda m: setattr(m.weight, "grad", torch.full((2, 3), 1e9)), r"max_grad_norm=1e\+08"),
    ],
    ids=["loss", "nan-parameter", "huge-parameter", "norm-growth", "inf-gradient", "huge-grad"],
)
def test_each_divergence_names_the_step_and_the_quantity(break_it: Any, message: str) -> None:
    guard, module = DivergenceGuard(), _module(0.001)
    guard.on_train_start(_trainer(0), cast(pl.LightningModule, module))
    break_it(module)
    loss = math.nan if "loss" in message else 1.0
    with pytest.raises(DivergenceError, match=message):
        _after_step(guard, module, loss)


def test_a_save_of_diverged_weights_is_refused_whatever_asked_for_it() -> None:
    guard, module = DivergenceGuard(), _module()
    module.weight.data.fill_(math.inf)
    with pytest.raises(DivergenceError, match="when saving a checkpoint"):
        guard.on_save_checkpoint(_trainer(), cast(pl.LightningModule, module), {})


def test_limits_can_be_relaxed() -> None:
    guard = DivergenceGuard(max_abs_parameter=None, max_norm_growth=None, max_grad_norm=None)
    module = _module(0.001)
    guard.on_train_start(_trainer(0), cast(pl.LightningModule, module))
    module.weight.data.fill_(1e9)
    _after_step(guard, module)  # only non-finite values are refused now
    module.weight.data.fill_(math.nan)
    with pytest.raises(DivergenceError):
        _after_step(guard, module)


# ---------------------------------------------------------------------- in real fits
def _data() -> RecommendationData:
    source = Synthetic(num_users=60, num_items=120, interactions_per_user=12, seed=0)
    return RecommendationData(
        source, protocols=["sampled"], num_eval_negatives=20, batch_size=128, attributes=[]
    )


def _fit(lr: float, dirpath: Path, callbacks: list[pl.Callback] | None = None) -> pl.Trainer:
    torch.manual_seed(0)  # the init, so which table the guard names does not depend on test order
    task = RecommenderTask(MF(60, 120, embedding_dim=8), lr=lr)
    checkpoint = ModelCheckpoint(
        dirpath=dirpath, filename="best", monitor="val/sampled/ndcg@10", mode="max", save_last=True
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint, *(callbacks or [])],
    )
    trainer.fit(task, datamodule=_data())
    return trainer


def _checkpoints(folder: Path) -> list[str]:
    """Digests of every checkpoint under ``folder`` (an earlier run's may be moved aside)."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.ckpt"))


def test_a_huge_learning_rate_stops_the_fit_and_keeps_the_earlier_best(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    _fit(1e-2, folder)
    assert {p.name for p in folder.iterdir()} == {"best.ckpt", "last.ckpt"}
    before = _checkpoints(folder)
    # The case: BPR's loss stays finite at lr=1e6 while the embeddings explode.
    # Adam moves every coordinate by ~lr in the first step: both tables reach ~1e6, and the
    # guard names the larger (decided by the init).
    with pytest.raises(DivergenceError, match=r"at step 1 .*(user|item)_embedding.weight reached"):
        _fit(1e6, folder)
    # The earlier best.ckpt / last.ckpt are intact and no checkpoint of the diverged run exists.
    assert _checkpoints(folder) == before


def test_every_task_adds_a_guard_unless_one_is_configured(tmp_path: Path) -> None:
    trainer = _fit(1e-2, tmp_path / "a")
    callbacks: list[pl.Callback] = getattr(trainer, "callbacks")  # noqa: B009 (untyped)
    assert sum(isinstance(c, DivergenceGuard) for c in callbacks) == 1
    mine = DivergenceGuard(max_abs_parameter=1e-3)  # any trained MF breaks it
    with pytest.raises(DivergenceError, match=r"max_abs_parameter=0\.001"):
        _fit(1e-2, tmp_path / "b", callbacks=[mine])


def test_a_manual_optimisation_method_is_stopped_too(tmp_path: Path) -> None:
    """AttrCloak (MGDA, manual optimisation) at a huge learning rate: no unlearned model saved."""
    table, codes = _leaky_table()
    trained = tmp_path / "trained.ckpt"
    torch.save({"state_dict": TableTask(table).state_dict()}, trained)
    out = tmp_path / "unlearned"
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            AttrCloak(checkpoint=str(trained), mode="df", lr=1e9, optimizer="sgd"),
            ModelCheckpoint(dirpath=out, save_last=True),
        ],
    )
    with (
        pytest.warns(UserWarning, match="no data/model fingerprint"),
        pytest.raises(DivergenceError, match=r"training diverged at step \d+"),
    ):
        trainer.fit(TableTask(torch.zeros_like(table)), datamodule=AttributesOnly(codes))
    assert not out.exists() or not any(out.iterdir())
