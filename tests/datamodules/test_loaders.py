"""Index sharding and tensor-slicing loaders."""

from __future__ import annotations

import pytest
import torch

from lit_unlearn.datamodules.loaders import ShardedIndexSampler, TensorBatchLoader


def _rows(sampler: ShardedIndexSampler) -> list[int]:
    return [int(i) for batch in sampler for i in batch]


@pytest.mark.parametrize("n", [0, 1, 7, 10, 11])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_shards_partition_rows_without_duplicates(n: int, world: int) -> None:
    rows = []
    for rank in range(world):
        s = ShardedIndexSampler(n, 3, rank=rank, world_size=world, even_shards=False)
        got = _rows(s)
        assert len(s) == -(-len(got) // 3)
        rows += got
    assert sorted(rows) == list(range(n))


@pytest.mark.parametrize("n", [5, 10, 11])
def test_train_shards_have_equal_step_counts_and_cover_all_rows(n: int) -> None:
    samplers = [
        ShardedIndexSampler(n, 2, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)
    ]
    assert len({len(s) for s in samplers}) == 1
    rows = [i for s in samplers for i in _rows(s)]
    assert set(rows) == set(range(n))
    assert len(rows) == 3 * -(-n // 3)  # wrapped padding like DistributedSampler


def test_set_epoch_reshuffles_deterministically() -> None:
    s = ShardedIndexSampler(50, 50, shuffle=True, seed=1)
    first = _rows(s)
    s.set_epoch(1)
    second = _rows(s)
    s.set_epoch(0)
    assert _rows(s) == first
    assert first != second and sorted(first) == sorted(second)


def test_drop_last_and_bad_args() -> None:
    assert len(ShardedIndexSampler(10, 4, drop_last=True)) == 2
    with pytest.raises(ValueError, match="batch_size"):
        ShardedIndexSampler(10, 0)
    with pytest.raises(ValueError, match="rank"):
        ShardedIndexSampler(10, 2, rank=2, world_size=2)


def test_tensor_batch_loader_gathers_aligned_columns() -> None:
    cols = {"a": torch.arange(10), "b": torch.arange(10) * 10}
    loader = TensorBatchLoader(cols, ShardedIndexSampler(10, 4, shuffle=True, seed=0))
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    for b in batches:
        assert torch.equal(b["b"], b["a"] * 10)
    assert sorted(torch.cat([b["a"] for b in batches]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="differ in length"):
        TensorBatchLoader({"a": torch.arange(3), "b": torch.arange(4)}, ShardedIndexSampler(3, 1))
