"""ENMF's MovieLens-tuned c0 on much sparser data: the rule, and the task's warning in a fit."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest

from lit_unlearn.datamodules import RecommendationData, Synthetic
from lit_unlearn.models import ENMF, MF
from lit_unlearn.models.enmf import TUNE_COMMAND, ENMFRegimeWarning, regime_warning
from lit_unlearn.tasks import RecommenderTask

# (users, items, training pairs of an 80% per-user split)
ML100K = (943, 1682, 80_000)
ML1M = (6040, 3706, 800_167)
LONGTAIL = (1892, 17390, 76_602)  # configs/data/synthetic_longtail.yaml
FIVE_CORE = (1057, 658, 8_438)  # configs/data/synthetic_longtail_5core.yaml


@pytest.mark.parametrize("sizes", [ML100K, ML1M, (943, 1682, 100_000), (943, 1682, 50_000)])
def test_movielens_sizes_do_not_warn(sizes: tuple[int, int, int]) -> None:
    assert regime_warning(*sizes, negative_weight=0.5, dropout=0.7) is None


def test_long_tail_data_with_movielens_values_warns_and_names_the_tuner() -> None:
    message = regime_warning(*LONGTAIL, negative_weight=0.5, dropout=0.7)
    assert message is not None
    assert "4.4 per item (< 20)" in message and "density 0.23% (< 1%)" in message
    assert "per user" not in message.split("training pairs, ")[1].split(".")[0]  # 40.5 >= 30
    assert TUNE_COMMAND in message and "c0 ~ 10 x density = 0.023" in message
    assert "negative_weight (c0) = 0.5 and dropout = 0.7" in message


def test_five_core_data_warns_on_the_per_user_and_per_item_means() -> None:
    message = regime_warning(*FIVE_CORE, negative_weight=0.5, dropout=0.7)
    assert message is not None
    assert "8.0 interactions per user (< 30)" in message and "12.8 per item (< 20)" in message
    assert "density" not in message.split("training pairs, ")[1].split(".")[0]  # 1.2% >= 1%


def test_only_c0_decides_a_tuned_c0_silences_it_dropout_does_not() -> None:
    assert regime_warning(*LONGTAIL, negative_weight=0.05, dropout=0.7) is None
    assert regime_warning(*LONGTAIL, negative_weight=0.29, dropout=0.7) is None
    assert regime_warning(*LONGTAIL, negative_weight=0.3, dropout=0.0) is not None


def test_thresholds_are_strict_and_empty_data_is_not_judged() -> None:
    # exactly 30 per user, 20 per item, 1% density: not below any threshold
    assert regime_warning(100, 150, 3000, negative_weight=0.5, dropout=0.7) is None
    assert regime_warning(0, 10, 0, negative_weight=0.5, dropout=0.7) is None


def _fit_and_validate(source: Synthetic, backbone: str) -> tuple[list[str], dict[str, float]]:
    data = RecommendationData(
        source=source, attributes=[], split="ratio", protocols=["full"], batch_size=256
    )
    data.setup()
    users, items = data.num_users, data.num_items
    if backbone == "enmf":
        model: MF = ENMF(users, items, embedding_dim=8, negative_weight=0.5, dropout=0.7)
        task = RecommenderTask(model, loss="nonsampling")
    else:
        task = RecommenderTask(MF(users, items, embedding_dim=8))
    n = len(data.split.train)
    stats = {"per_user": n / users, "per_item": n / items, "density": n / (users * items)}
    trainer = pl.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(task, datamodule=data)
        trainer.validate(task, datamodule=data, verbose=False)  # setup again: still once
    return [str(w.message) for w in caught if issubclass(w.category, ENMFRegimeWarning)], stats


def test_a_fit_on_sparse_data_warns_once() -> None:
    sparse = Synthetic(num_users=60, num_items=400, interactions_per_user=5, seed=0)
    messages, stats = _fit_and_validate(sparse, "enmf")
    assert stats["per_user"] < 30
    assert len(messages) == 1 and TUNE_COMMAND in messages[0]


def test_a_fit_on_dense_data_or_with_another_backbone_does_not_warn() -> None:
    dense = Synthetic(num_users=80, num_items=120, interactions_per_user=45, seed=0)
    messages, stats = _fit_and_validate(dense, "enmf")
    assert stats["per_user"] >= 30 and stats["per_item"] >= 20 and stats["density"] >= 0.01
    assert messages == []
    sparse = Synthetic(num_users=60, num_items=400, interactions_per_user=5, seed=0)
    assert _fit_and_validate(sparse, "mf")[0] == []
