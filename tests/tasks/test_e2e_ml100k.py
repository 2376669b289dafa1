"""End to end on real MovieLens-100K: train, rank under both protocols, attack the embeddings.

Fails if the recommender stops learning (ranking floors from issue 3) or if the attribute
audit stops finding the gender leakage that trained ML-100K embeddings are known to carry.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning.pytorch as pl
import pytest
import torch

from lit_unlearn.attacks.audit import audit_embeddings
from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.datamodules.sources import MovieLens100K
from lit_unlearn.models import MF
from lit_unlearn.runs import bare_trainer
from lit_unlearn.tasks import RecommenderTask
from tests.conftest import ML100K, SHARED_DATASETS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ML100K.exists(), reason="ML-100K not found beside the repository"),
]


@pytest.fixture(scope="module")
def trained() -> tuple[RecommenderTask, RecommendationData, Mapping[str, float], torch.Tensor]:
    pl.seed_everything(0, verbose=False)
    dm = RecommendationData(
        source=MovieLens100K(str(SHARED_DATASETS)), download=False, batch_size=512, seed=0
    )
    task = RecommenderTask(MF(dm.num_users, dm.num_items, 64), lr=2e-3, l2_reg=1e-5)
    before = task.user_representation().clone()
    trainer = bare_trainer(30, accelerator="cpu")
    trainer.fit(task, dm)
    metrics = trainer.test(task, dm, verbose=False)[0]
    return task, dm, metrics, before


def test_ranking_quality_floors(trained: tuple) -> None:
    _, dm, metrics, _ = trained
    assert dm.num_users == 943 and dm.num_items == 1682
    # Leave-one-out test item; sampled = vs 99 fixed negatives, full = vs all unseen items.
    assert metrics["test/sampled/hr@10"] >= 0.60
    assert metrics["test/full/hr@10"] >= 0.10
    assert metrics["test/sampled/ndcg@10"] > 0.3


def test_attackers_find_gender_leakage_only_after_training(trained: tuple) -> None:
    task, dm, _, before = trained
    after = audit_embeddings(
        task.user_representation(), dm.user_attributes, names=["gender"], seed=0
    )
    best = max(r.balanced_accuracy for r in after)
    assert best > 0.58, [r.as_dict() for r in after]
    # Control: random initial embeddings carry no attribute, attackers sit at chance.
    untrained = audit_embeddings(before, dm.user_attributes, names=["gender"], seed=0)
    assert all(abs(r.balanced_accuracy - 0.5) < 0.07 for r in untrained), [
        r.as_dict() for r in untrained
    ]
