"""What each client of a user-level federated recommender holds: its own training positives.

One client = one user (FedAU2 Sec. 3.1). The interactions of every user are kept grouped by
user (CSR: ``indptr`` / ``items``) so a round can gather its sampled clients' data in one
vectorised step; a client only ever reads its own slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ClientData", "PaddedExamples"]


@dataclass(frozen=True)
class PaddedExamples:
    """Per-client example tensors padded to a common length: ``[C, L, ...]`` plus a mask.

    Attributes:
        columns: Named example tensors, each ``[C, L, ...]`` (row ``c`` is client ``c``'s).
        mask: Bool ``[C, L]``: which entries are real examples (the rest is padding).
    """

    columns: dict[str, Tensor]
    mask: Tensor


@dataclass(frozen=True)
class ClientData:
    """The training positives of every user, grouped by user.

    Attributes:
        indptr: ``[U + 1]`` offsets: user ``u``'s items are ``items[indptr[u]:indptr[u + 1]]``.
        items: ``[E]`` item ids sorted by user.
        num_items: Item count (id range of ``items``).
    """

    indptr: Tensor
    items: Tensor
    num_items: int

    @classmethod
    def from_pairs(cls, pairs: Tensor, num_users: int, num_items: int) -> ClientData:
        """Group training pairs ``[2, E]`` (user, item) by user.

        Raises:
            ValueError: ``pairs`` is not ``[2, E]`` or holds ids outside the given ranges.
        """
        if pairs.ndim != 2 or pairs.shape[0] != 2:
            raise ValueError(f"pairs must be [2, E], got shape {tuple(pairs.shape)}")
        users, items = pairs[0].long().cpu(), pairs[1].long().cpu()
        if users.numel() and (int(users.min()) < 0 or int(users.max()) >= num_users):
            raise ValueError(f"user ids outside [0, {num_users})")
        if items.numel() and (int(items.min()) < 0 or int(items.max()) >= num_items):
            raise ValueError(f"item ids outside [0, {num_items})")
        order = torch.argsort(users * num_items + items, stable=True)
        counts = torch.bincount(users, minlength=num_users)
        indptr = torch.zeros(num_users + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr=indptr, items=items[order], num_items=num_items)

    @property
    def num_users(self) -> int:
        """Number of clients (users)."""
        return int(self.indptr.numel() - 1)

    @property
    def counts(self) -> Tensor:
        """Training interactions per user, ``[U]`` (FedAvg's weights)."""
        return self.indptr[1:] - self.indptr[:-1]

    def positives(self, clients: Tensor) -> PaddedExamples:
        """The positives of ``clients`` padded to the longest: ``columns["item"]`` ``[C, L]``."""
        clients = clients.long().cpu()
        counts = self.counts[clients]
        length = int(counts.max()) if counts.numel() else 0
        offsets = torch.arange(length)
        mask = offsets.unsqueeze(0) < counts.unsqueeze(1)
        index = (self.indptr[clients].unsqueeze(1) + offsets.unsqueeze(0)).clamp_max(
            max(self.items.numel() - 1, 0)
        )
        items = torch.where(mask, self.items[index], torch.zeros_like(index))
        return PaddedExamples(columns={"item": items}, mask=mask)

    def seen(self, clients: Tensor) -> Tensor:
        """Bool ``[C, I]``: which items each of ``clients`` has among its training positives."""
        padded = self.positives(clients)
        seen = torch.zeros(padded.mask.shape[0], self.num_items, dtype=torch.bool)
        rows = torch.arange(padded.mask.shape[0]).unsqueeze(1).expand_as(padded.mask)
        seen[rows[padded.mask], padded.columns["item"][padded.mask]] = True
        return seen

    def rows(self, clients: Tensor) -> Tensor:
        """Multi-hot interaction rows ``[C, I]`` (float) of ``clients``."""
        return self.seen(clients).float()
