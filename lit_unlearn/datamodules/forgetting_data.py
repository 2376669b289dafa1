"""The DataModule of interaction unlearning: a per-user split plus forgetting requests."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lit_unlearn.datamodules.forgetting import (
    ForgettingRequest,
    Scenario,
    make_forgetting_request,
)
from lit_unlearn.datamodules.preprocess import IndexedInteractions
from lit_unlearn.datamodules.recommendation import Protocol, RecommendationData
from lit_unlearn.datamodules.sources.base import DataSource
from lit_unlearn.datamodules.splits import Split


class ForgettingData(RecommendationData):
    """Recommender data with AltEraser's forgetting requests (paper 003, section 5.2).

    The interactions are split per user at random (80/20 by default); ``num_forget_users``
    users then ask to forget (see :mod:`lit_unlearn.datamodules.forgetting`). ``train_on``
    decides which training set the loaders serve: ``all`` (``D_a``, the original model) or
    ``remaining`` (``D_r``, retraining and every unlearner). The request itself is identical in
    both, so an original model and its unlearned versions always refer to the same ``D_f``.

    Args:
        source: Where data comes from (default the synthetic set).
        scenario: ``privacy`` (delete half of a user's interactions) or ``noise`` (inject and
            then delete half as many false positives).
        num_forget_users: ``N`` forgetting users.
        forget_seed: Seed of the request (default ``seed``).
        train_on: ``all`` or ``remaining``.
        shuffle_seed: Seed of the training order only (default ``seed``): Retrain* of the paper
            is a retrain with the same initialisation and another training seed.
        attributes: User attributes to encode; default ``["gender"]``. None are needed here:
            ``[]`` works with sources that have no users file.
        rating_threshold: Keep ratings >= this as positives (None keeps all).
        user_k: k-core minimum per user.
        item_k: k-core minimum per item.
        train_ratio: Per-user training share (the rest is test).
        val_ratio: Per-user validation share taken from the rest.
        protocols: Ranking protocols of validation/test.
        num_eval_negatives: Negatives of the sampled protocol.
        batch_size: Training batch size in interactions.
        eval_batch_size: Evaluation batch size.
        download: Allow downloads.
        seed: Seed of the split and evaluation negatives.
        strict_users: Users missing from the users file are an error instead of a warning.
    """

    def __init__(
        self,
        source: DataSource | None = None,
        scenario: Scenario = "noise",
        num_forget_users: int = 64,
        forget_seed: int | None = None,
        train_on: Literal["all", "remaining"] = "all",
        shuffle_seed: int | None = None,
        attributes: list[str] | None = None,
        rating_threshold: float | None = None,
        user_k: int = 1,
        item_k: int = 1,
        train_ratio: float = 0.8,
        val_ratio: float = 0.0,
        protocols: list[Protocol] | None = None,
        num_eval_negatives: int = 99,
        batch_size: int = 4096,
        eval_batch_size: int = 256,
        download: bool = True,
        seed: int = 0,
        strict_users: bool = False,
    ) -> None:
        if scenario not in ("privacy", "noise"):
            raise ValueError(f"scenario must be 'privacy' or 'noise', got {scenario!r}")
        if train_on not in ("all", "remaining"):
            raise ValueError(f"train_on must be 'all' or 'remaining', got {train_on!r}")
        if num_forget_users < 1:
            raise ValueError(f"num_forget_users must be >= 1, got {num_forget_users}")
        super().__init__(
            source=source,
            mode="data_dependent",
            attributes=["gender"] if attributes is None else attributes,
            rating_threshold=rating_threshold,
            user_k=user_k,
            item_k=item_k,
            split="ratio",
            train_ratio=train_ratio,
            val_ratio=val_ratio,
            protocols=protocols if protocols is not None else ["full"],
            num_eval_negatives=num_eval_negatives,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            download=download,
            seed=seed,
            strict_users=strict_users,
        )
        self.scenario: Scenario = scenario
        self.num_forget_users = num_forget_users
        self.forget_seed = seed if forget_seed is None else forget_seed
        self.train_on = train_on
        self._shuffle_seed = seed if shuffle_seed is None else shuffle_seed
        self._request: ForgettingRequest | None = None

    def shuffle_seed(self) -> int:
        return self._shuffle_seed

    def _make_split(self, data: IndexedInteractions) -> Split:
        split = super()._make_split(data)
        seen = np.concatenate([split.train, split.val, split.test])
        self._request = make_forgetting_request(
            split.train,
            num_users=data.num_users,
            num_items=data.num_items,
            scenario=self.scenario,
            num_forget_users=self.num_forget_users,
            seed=self.forget_seed,
            seen=seen,
        )
        train = self._request.original if self.train_on == "all" else self._request.remaining
        return Split(train=train, val=split.val, test=split.test)

    def _trained_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # D_a whatever train_on serves: the original model and its unlearned versions (trained
        # on D_r) belong to the same data.
        split = self.split
        return np.asarray(self.request.original), np.asarray(split.val), np.asarray(split.test)

    # ------------------------------------------------------------------ the request
    @property
    def request(self) -> ForgettingRequest:
        """The forgetting request (loads the data on first access)."""
        self._load()
        assert self._request is not None
        return self._request

    @property
    def forget_pairs(self) -> Tensor:
        """``D_f`` as a LongTensor ``[n_f, 2]``."""
        return torch.as_tensor(self.request.forget)

    @property
    def remaining_pairs(self) -> Tensor:
        """``D_r`` as a LongTensor ``[n_r, 2]``."""
        return torch.as_tensor(self.request.remaining)

    @property
    def original_pairs(self) -> Tensor:
        """``D_a`` as a LongTensor ``[n_a, 2]``."""
        return torch.as_tensor(self.request.original)

    @property
    def forget_users(self) -> Tensor:
        """Ids of the forgetting users, ``[N]``."""
        return torch.as_tensor(self.request.users)
