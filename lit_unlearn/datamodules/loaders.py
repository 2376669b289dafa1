"""Batches sliced from whole tensors: one gather per batch instead of per-sample collate.

DESIGN.md measured the default ``DataLoader(TensorDataset(...))`` at 4-44x the plain PyTorch loop
on BPR training, because it indexes and collates sample by sample. :class:`TensorBatchLoader`
shuffles an index tensor once per epoch and slices every column with it, optionally keeping the
columns on the training device. It is not a ``DataLoader``, so Lightning leaves it alone (no
sampler injection); DDP sharding is done here by :class:`ShardedIndexSampler`, whose
``set_epoch`` Lightning calls through the ``sampler`` attribute like for a ``DataLoader``.

:class:`TensorBatchLoader` is resumable (``state_dict`` / ``load_state_dict``, which Lightning
saves with the fit loop): a run resumed from a checkpoint written in the middle of an epoch
continues with the batches the interrupted run had not reached yet, not from the epoch's first
batch again.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from lit_unlearn.datamodules.sampling import build_exclusion_mask


def on_device(batch: object, device: torch.device) -> bool:
    """True when ``batch`` is a dict of tensors all on ``device`` (gathered there already).

    The DataModules' ``transfer_batch_to_device`` returns such a batch as is: Lightning's
    generic collection walk costs measurable time per step on small models.
    """
    return isinstance(batch, dict) and all(
        isinstance(v, Tensor) and v.device == device for v in batch.values()
    )


class ShardedIndexSampler:
    """Yields batches of row indices for one rank, reshuffled every epoch.

    Args:
        num_rows: Rows in the dataset.
        batch_size: Rows per batch.
        shuffle: Reshuffle every epoch (seeded by ``seed + epoch``, identical on every rank, so
            ranks take disjoint shards of the same permutation).
        seed: Base seed.
        rank: This process's rank.
        world_size: Number of processes.
        even_shards: Training mode: every rank gets ``ceil(num_rows / world_size)`` rows,
            wrapping around like ``DistributedSampler``, so all ranks run the same number of
            steps (DDP would hang otherwise). Evaluation uses ``False``: rows ``rank::world_size``
            with no duplicates, so metric sums over ranks equal the single-process sums.
        drop_last: Drop a last batch smaller than ``batch_size``.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = True,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.num_rows = num_rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.even_shards = even_shards
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = epoch

    def _shard_size(self) -> int:
        if self.even_shards:
            return math.ceil(self.num_rows / self.world_size) if self.num_rows else 0
        return len(range(self.rank, self.num_rows, self.world_size))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self) -> Tensor:
        """This rank's row indices for the current epoch."""
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_rows, generator=gen)
        else:
            order = torch.arange(self.num_rows)
        if self.even_shards and self.world_size > 1 and self.num_rows:
            total = self._shard_size() * self.world_size
            if total > self.num_rows:  # wrap around so every rank has the same count
                order = torch.cat([order, order[: total - self.num_rows]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Tensor]:
        idx = self.indices()
        for b in range(len(self)):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]


class TensorBatchLoader:
    """Iterable of ``dict[str, Tensor]`` batches gathered from aligned column tensors.

    Args:
        columns: Equal-length tensors (first dimension = rows).
        sampler: Index batches to gather.
        device: Where to keep the columns; on a GPU this makes each batch one device gather.
    """

    def __init__(
        self,
        columns: dict[str, Tensor],
        sampler: ShardedIndexSampler,
        device: torch.device | str = "cpu",
    ) -> None:
        lengths = {name: int(t.shape[0]) for name, t in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns differ in length: {lengths}")
        if lengths and next(iter(lengths.values())) != sampler.num_rows:
            raise ValueError(f"sampler expects {sampler.num_rows} rows, columns have {lengths}")
        self.device = torch.device(device)
        self.columns = {k: v.to(self.device) for k, v in columns.items()}
        self.sampler = sampler
        # Mirrors DataLoader's attributes that Lightning inspects (epoch seeding, shuffle checks).
        self.batch_sampler = None
        # Batches handed out by the current pass, and the position a checkpoint asked to resume
        # at: (epoch, batches to skip), applied once, only to a pass over that same epoch.
        self._served = 0
        self._resume_at: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        # A generator: this body runs at the first next(), after Lightning has restored the
        # loader's state and called ``sampler.set_epoch`` for the (resumed) epoch.
        skip = 0
        if self._resume_at is not None:
            epoch, batches = self._resume_at
            self._resume_at = None
            if epoch == self.sampler.epoch:
                skip = batches
        self._served = skip
        for b, idx in enumerate(self.sampler):
            if b < skip:
                continue
            idx = idx.to(self.device)
            batch = {k: v.index_select(0, idx) for k, v in self.columns.items()}
            self._served = b + 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The position in the current pass: its epoch and the batches already handed out.

        Lightning fetches no batch ahead from a loader with a length, so at a checkpoint the
        batches handed out are exactly the batches the fit loop consumed.
        """
        return {"epoch": self.sampler.epoch, "batches": self._served}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the next pass over ``state_dict['epoch']`` after its first ``batches``."""
        self._resume_at = (int(state_dict["epoch"]), int(state_dict["batches"]))


class FullRankingLoader:
    """Wraps a user-batch loader and adds the masks the full-ranking protocol needs.

    Each batch gets ``exclude`` (items seen in training, plus validation for test) and
    ``targets`` (the held-out items) as dense ``BoolTensor[B, num_items]`` built from sorted
    interaction keys, so the task needs no knowledge of the data.
    """

    def __init__(
        self,
        users: TensorBatchLoader,
        exclude_keys: Tensor,
        target_keys: Tensor,
        num_items: int,
        device: torch.device,
    ) -> None:
        self.users = users
        self.sampler = users.sampler
        self.batch_sampler = None
        self.exclude_keys = exclude_keys
        self.target_keys = target_keys
        self.num_items = num_items
        self.device = device

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for batch in self.users:
            u = batch["user"]
            yield {
                "user": u.to(self.device),
                "exclude": build_exclusion_mask(u, self.exclude_keys, self.num_items).to(
                    self.device
                ),
                "targets": build_exclusion_mask(u, self.target_keys, self.num_items).to(
                    self.device
                ),
            }
