"""Recommender data served to a user-level federated task: one training "batch" per round."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_unlearn.datamodules.recommendation import RecommendationData

__all__ = ["FederatedData", "RoundLoader"]


class RoundLoader:
    """A sized iterable of ``{"round": tensor(r)}`` batches, ``rounds_per_epoch`` per epoch.

    Each element is one federated round; the task runs the whole round in its training step.
    Lightning shows a progress bar over the rounds and evaluates every
    ``check_val_every_n_epoch`` epochs, i.e. every ``rounds_per_epoch * n`` rounds.
    """

    def __init__(self, rounds_per_epoch: int) -> None:
        self.rounds_per_epoch = rounds_per_epoch
        # Mirrors DataLoader's attributes that Lightning inspects.
        self.batch_sampler = None

    def __len__(self) -> int:
        return self.rounds_per_epoch

    def __iter__(self) -> Any:
        for r in range(self.rounds_per_epoch):
            yield {"round": torch.tensor(r)}


class FederatedData(RecommendationData):
    """:class:`RecommendationData` whose training loader yields rounds instead of pairs.

    The clients' data is the training split (``split.train``, grouped by user by the task);
    evaluation, attributes, protocols and preprocessing are the parent's. FedAU2's data
    (App. A.1): ``user_k: 5, item_k: 5, balance: gender, split: leave_one_out`` and
    ``age_scheme: fedau2``.

    Args:
        rounds_per_epoch: Rounds per Lightning epoch (``max_epochs * rounds_per_epoch`` rounds
            in all).
        **kwargs: :class:`RecommendationData`'s arguments.
    """

    def __init__(self, rounds_per_epoch: int = 50, **kwargs: Any) -> None:
        if isinstance(rounds_per_epoch, bool) or not isinstance(rounds_per_epoch, int):
            raise ValueError(f"rounds_per_epoch must be an int >= 1, got {rounds_per_epoch!r}")
        if rounds_per_epoch < 1:
            raise ValueError(f"rounds_per_epoch must be >= 1, got {rounds_per_epoch}")
        if kwargs.get("mode", "data_dependent") != "data_dependent":
            raise ValueError(
                "FederatedData trains clients on their data: mode must be data_dependent"
            )
        super().__init__(**kwargs)
        self.rounds_per_epoch = rounds_per_epoch

    def train_dataloader(self) -> RoundLoader:  # type: ignore[override]
        return RoundLoader(self.rounds_per_epoch)

    def client_pairs(self) -> Tensor:
        """The training pairs ``[2, E]`` (user, item): what the clients hold."""
        return self.train_graph
