"""AltEraser, warm start and the forgetting metrics on the synthetic set (and DDP)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import pytest
import torch

from lit_unlearn.callbacks import AltEraser, RelativeEarlyStopping, WarmStart
from lit_unlearn.datamodules import ForgettingData, Synthetic
from lit_unlearn.methods.interaction.metrics import forgetting_metrics, repredict_score
from lit_unlearn.models import ENMF, MF
from lit_unlearn.optim.block_solvers import AdamWBlock, AHNewtonBlock
from lit_unlearn.runs import bare_trainer
from lit_unlearn.tasks import RecommenderTask


def _data(train_on: Literal["all", "remaining"] = "all") -> ForgettingData:
    source = Synthetic(num_users=150, num_items=120, interactions_per_user=20)
    return ForgettingData(source, num_forget_users=16, train_on=train_on, batch_size=1024)


def _task(seed: int = 0, dropout: float = 0.0) -> RecommenderTask:
    pl.seed_everything(seed, verbose=False)
    model = ENMF(150, 120, embedding_dim=16, negative_weight=0.1, reg=0.01, dropout=dropout)
    return RecommenderTask(model, loss="nonsampling", optimizer="adamw", lr=0.02, ks=[10])


def _trainer(callbacks: list[pl.Callback], max_epochs: int = 200, **kw: Any) -> pl.Trainer:
    return bare_trainer(max_epochs, callbacks, accelerator="cpu", **kw)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    task = _task()
    _trainer([RelativeEarlyStopping(rel_delta=1e-4, patience=5)]).fit(task, datamodule=_data())
    path = tmp_path_factory.mktemp("alteraser") / "original.ckpt"
    torch.save({"state_dict": task.state_dict()}, path)
    return path


def _unlearn(
    original: Path,
    solver: object,
    passes: int = 30,
    extrapolate: bool = False,
    dropout: float = 0.0,
    **kw: object,
) -> tuple[RecommenderTask, AltEraser]:
    task = _task(dropout=dropout)
    eraser = AltEraser(
        str(original),
        solver=solver,  # type: ignore[arg-type]
        max_passes=passes,
        tol=1e-6,
        extrapolate=extrapolate,
    )
    _trainer([eraser], max_epochs=passes, limit_train_batches=1, **kw).fit(
        task, datamodule=_data("remaining")
    )
    return task, eraser


def test_ah_newton_forgets_and_decreases_the_remaining_loss(original: Path) -> None:
    data = _data("remaining")
    data.setup("fit")
    before = _task()
    before.load_state_dict(torch.load(original)["state_dict"])
    task, eraser = _unlearn(original, AHNewtonBlock())
    history = eraser.history
    assert all(b <= a + 1e-3 * abs(a) for a, b in itertools.pairwise(history))
    model: Any = task.model
    original_model: Any = before.model
    remaining = data.remaining_pairs
    assert float(model.objective(remaining).detach()) < float(
        original_model.objective(remaining).detach()
    )
    # Noise scenario: the injected interactions are no longer predicted as positives.
    assert repredict_score(task.model, data.forget_pairs) < 0.5 * repredict_score(
        before.model, data.forget_pairs
    )
    # h and everything but the two embedding tables stay as they were.
    torch.testing.assert_close(task.model.h, before.model.h)


def test_ah_newton_minimises_the_expected_loss_of_a_dropout_backbone(original: Path) -> None:
    # Dropout is not a parameter: the same weights load into a dropout model, whose blocks are
    # the expected loss. Exact block minimisation must decrease it every pass and end at a
    # stationary point of it (not of the loss without dropout).
    task, eraser = _unlearn(original, AHNewtonBlock(), passes=200, dropout=0.7)
    assert all(b <= a + 1e-9 * abs(a) for a, b in itertools.pairwise(eraser.history[1:]))
    data = _data("remaining")
    data.setup("fit")
    model: Any = task.model
    tables = [model.user_embedding.weight, model.item_embedding.weight]
    expected = torch.autograd.grad(model.objective(data.remaining_pairs), tables)
    model.dropout = 0.0
    plain = torch.autograd.grad(model.objective(data.remaining_pairs), tables)
    norm = max(float(g.abs().max()) for g in expected)
    assert norm < 1e-2 * max(float(g.abs().max()) for g in plain), norm


def test_extrapolation_keeps_the_objective_monotone_and_gets_lower_faster(
    original: Path,
) -> None:
    _, plain = _unlearn(original, AHNewtonBlock(), passes=8)
    _, fast = _unlearn(original, AHNewtonBlock(), passes=8, extrapolate=True)
    assert fast.accepted_steps > 0
    # Only steps that lower L_Dr are kept, on top of monotone alternating passes.
    assert all(b <= a for a, b in itertools.pairwise(fast.history[1:]))
    # The first two passes are identical (nothing to extrapolate from yet), then it pulls ahead.
    assert fast.history[:2] == pytest.approx(plain.history[:2])
    assert fast.history[-1] < plain.history[-1]


def test_conjugate_gradient_rows_unlearn_like_the_exact_solver(original: Path) -> None:
    # The sparse-data solver (issue 24) ends where the exact AH-Newton ends, pass for pass.
    exact, exact_eraser = _unlearn(original, AHNewtonBlock(), passes=5, dropout=0.7)
    cg, cg_eraser = _unlearn(
        original, AHNewtonBlock(cg_max_degree=32, cg_tol=1e-8), passes=5, dropout=0.7
    )
    assert cg_eraser.passes == exact_eraser.passes
    torch.testing.assert_close(cg_eraser.history, exact_eraser.history, rtol=1e-5, atol=1e-4)
    for name, value in exact.model.state_dict().items():
        torch.testing.assert_close(cg.model.state_dict()[name], value, rtol=1e-4, atol=1e-5)


def test_alteraser_adamw_also_forgets_but_needs_its_steps(original: Path) -> None:
    data = _data("remaining")
    data.setup("fit")
    before = _task()
    before.load_state_dict(torch.load(original)["state_dict"])
    task, _ = _unlearn(original, AdamWBlock(lr=0.02, steps=5))
    assert repredict_score(task.model, data.forget_pairs) < repredict_score(
        before.model, data.forget_pairs
    )


def test_retrain_reference_metrics_and_warm_start(original: Path) -> None:
    data = _data("remaining")
    retrain = _task()
    _trainer([RelativeEarlyStopping(rel_delta=1e-4, patience=5)]).fit(retrain, datamodule=data)
    test = torch.as_tensor(data.split.test)
    args = (data.forget_users, data.forget_pairs, data.remaining_pairs, test)
    _ref, lists = forgetting_metrics(retrain.model, *args, ks=(10,))
    same, _ = forgetting_metrics(retrain.model, *args, ks=(10,), reference_lists=lists)
    assert same["rbo@10"] == pytest.approx(1.0)
    warm = _task()
    _trainer([WarmStart(str(original), lr=0.02), RelativeEarlyStopping(patience=3)]).fit(
        warm, datamodule=_data("remaining")
    )
    values, _ = forgetting_metrics(warm.model, *args, ks=(10,), reference_lists=lists)
    before = _task()
    before.load_state_dict(torch.load(original)["state_dict"])
    stale, _ = forgetting_metrics(before.model, *args, ks=(10,), reference_lists=lists)
    # Warm start moves the lists towards Retrain's and forgets the noise.
    assert values["rbo@10"] > stale["rbo@10"]
    assert values["repredict"] < stale["repredict"]
    assert 0.0 <= values["recall@10"] <= 1.0


def test_alteraser_rejects_what_it_cannot_unlearn(original: Path) -> None:
    task = RecommenderTask(MF(150, 120, embedding_dim=8))
    with pytest.raises(TypeError, match="ENMF"):
        _trainer([AltEraser()], max_epochs=1).fit(task, datamodule=_data("remaining"))
    with pytest.raises(ValueError, match="train_on"):
        _trainer([AltEraser(str(original))], max_epochs=1).fit(_task(), datamodule=_data("all"))
    with pytest.raises(ValueError, match="max_passes"):
        AltEraser(max_passes=0)
    with pytest.raises(ValueError, match="max_step"):
        AltEraser(extrapolate=True, max_step=0.5)
    with pytest.raises(FileNotFoundError):
        AltEraser("no/such.ckpt")


class _SaveOnRankZero(pl.Callback):
    """Saves the weights inside the (spawned) worker: what the parent gets back is not tested."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0:
            torch.save(pl_module.state_dict(), self.out)


def _ddp_unlearn(
    original: Path, devices: int, out: Path, dropout: float, cg_max_degree: int = 0
) -> None:
    task = _task(dropout=dropout)
    # Four passes: the forget pass, one over all rows, then two with extrapolation (whose
    # accept/reject decision must agree on every rank).
    solver = AHNewtonBlock(cg_max_degree=cg_max_degree, cg_tol=1e-7)
    eraser = AltEraser(str(original), solver=solver, max_passes=4, tol=0.0, extrapolate=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_epochs=4,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[eraser, _SaveOnRankZero(out)],
    )
    trainer.fit(task, datamodule=_data("remaining"))


@pytest.mark.ddp
@pytest.mark.parametrize(
    ("dropout", "cg_max_degree"),
    # 0.7: each rank's rows carry their own ridge; 32: the CG rows (each rank's rows form their
    # own degree bands, so a row's CG budget may differ between 1 and 2 processes: the result
    # agrees to the CG tolerance, not bit for bit)
    [(0.0, 0), (0.7, 0), (0.7, 32)],
)
def test_ddp_two_processes_give_the_single_process_result(
    original: Path, tmp_path: Path, dropout: float, cg_max_degree: int
) -> None:
    _ddp_unlearn(original, 1, tmp_path / "one.pt", dropout, cg_max_degree)
    _ddp_unlearn(original, 2, tmp_path / "two.pt", dropout, cg_max_degree)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for key in one:
        torch.testing.assert_close(one[key], two[key], atol=1e-5, rtol=1e-5)
