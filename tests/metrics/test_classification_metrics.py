"""ClassAccuracy and subset_accuracy: hand counts, pooling, NaN, and 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lit_unlearn.metrics.classification import ClassAccuracy, subset_accuracy

K = 4


def _one_hot_logits(pred: list[int], k: int = K) -> Tensor:
    """Logits whose argmax is ``pred`` (not one-hot: every entry differs)."""
    logits = torch.arange(k, dtype=torch.float32).repeat(len(pred), 1) * 0.01
    logits[torch.arange(len(pred)), torch.tensor(pred)] = 5.0
    return logits


# labels / predictions counted by hand:
#   class 0: 3 samples, preds 0 0 1 -> 2 correct
#   class 1: 1 sample,  pred  1     -> 1 correct
#   class 2: 4 samples, preds 2 0 3 3 -> 1 correct
#   class 3: none
LABELS = [0, 2, 0, 1, 2, 0, 2, 2]
PREDS = [0, 2, 1, 1, 0, 0, 3, 3]
CORRECT = [2, 1, 1, 0]
TOTAL = [3, 1, 4, 0]


def test_per_class_counts_match_a_hand_count() -> None:
    metric = ClassAccuracy(K)
    metric.update(_one_hot_logits(PREDS), torch.tensor(LABELS))
    correct, total = metric.counts()
    assert correct.tolist() == CORRECT and total.tolist() == TOTAL
    assert correct.dtype == torch.long and total.dtype == torch.long
    acc = metric.compute()
    assert acc.dtype == torch.float64
    assert acc[:3].tolist() == pytest.approx([2 / 3, 1.0, 0.25])
    assert math.isnan(float(acc[3])), "a class without samples has NaN accuracy"


def test_logits_and_predicted_labels_count_alike() -> None:
    from_logits, from_labels = ClassAccuracy(K), ClassAccuracy(K)
    from_logits.update(_one_hot_logits(PREDS), torch.tensor(LABELS))
    from_labels.update(torch.tensor(PREDS), torch.tensor(LABELS))
    for a, b in zip(from_logits.counts(), from_labels.counts(), strict=True):
        assert torch.equal(a, b)


def test_counts_accumulate_over_batches_and_reset() -> None:
    metric = ClassAccuracy(K)
    for lo, hi in ((0, 3), (3, 4), (4, 8)):
        metric.update(torch.tensor(PREDS[lo:hi]), torch.tensor(LABELS[lo:hi]))
    correct, total = metric.counts()
    assert correct.tolist() == CORRECT and total.tolist() == TOTAL
    # counts() returns copies: editing them does not change the state.
    correct += 100
    assert metric.counts()[0].tolist() == CORRECT
    metric.reset()
    assert metric.counts()[1].tolist() == [0] * K


def test_update_replaces_states_instead_of_writing_into_them() -> None:
    # Under CPU ddp_spawn the initial state tensors live in memory shared by every process
    # (Lightning un-shares only parameters and buffers): an in-place `+=` would pool all ranks'
    # counts into one tensor. The DDP test below checks the outcome; this checks the cause fast.
    metric = ClassAccuracy(K)
    before_correct, before_total = metric.correct, metric.total
    metric.update(torch.tensor(PREDS), torch.tensor(LABELS))
    assert before_correct.tolist() == [0] * K and before_total.tolist() == [0] * K
    assert metric.total.tolist() == TOTAL


def test_argmax_ties_take_the_first_class() -> None:
    metric = ClassAccuracy(3)
    metric.update(torch.zeros(2, 3), torch.tensor([0, 1]))  # argmax of equal logits is 0
    assert metric.counts()[0].tolist() == [1, 0, 0]


def test_needs_two_classes() -> None:
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        ClassAccuracy(1)


def test_subset_accuracy_is_pooled_not_a_mean_of_classes() -> None:
    correct, total = torch.tensor(CORRECT), torch.tensor(TOTAL)
    # Classes 0 and 2: (2 + 1) / (3 + 4) pooled = 3/7; the mean of 2/3 and 1/4 would be 11/24.
    pooled = subset_accuracy(correct, total, [0, 2])
    assert pooled == pytest.approx(3 / 7)
    assert pooled != pytest.approx((2 / 3 + 1 / 4) / 2)
    # An unbalanced retain set: 1 of 1 right in class 1 barely moves 100 samples of class 0.
    c, t = torch.tensor([10, 1, 0]), torch.tensor([100, 1, 5])
    assert subset_accuracy(c, t, [0, 1]) == pytest.approx(11 / 101)
    assert subset_accuracy(c, t, [0, 1]) != pytest.approx((0.1 + 1.0) / 2)  # mean of classes
    # One class: its own accuracy; the order of classes does not matter; all classes = overall.
    assert subset_accuracy(correct, total, [1]) == 1.0
    assert subset_accuracy(correct, total, [2, 0]) == pooled
    assert subset_accuracy(correct, total, range(K)) == pytest.approx(4 / 8)
    # A set that includes an empty class pools the others.
    assert subset_accuracy(correct, total, [1, 3]) == 1.0


def test_subset_accuracy_nan_cases() -> None:
    correct, total = torch.tensor(CORRECT), torch.tensor(TOTAL)
    assert math.isnan(subset_accuracy(correct, total, [3])), "no samples"
    assert math.isnan(subset_accuracy(correct, total, [])), "no classes"
    zero = torch.zeros(K, dtype=torch.long)
    assert math.isnan(subset_accuracy(zero, zero, [0, 1]))
    assert subset_accuracy(zero, total, [0, 1]) == 0.0


# ---------------------------------------------------------------------------------------------
# Two processes (gloo, ddp_spawn): the sum-reduced counts equal one process over all rows
# ---------------------------------------------------------------------------------------------

NUM_ROWS, DDP_K = 41, 5  # 41 rows: shards of 21 and 20


def _ddp_data() -> tuple[Tensor, Tensor]:
    """Fixed logits and labels; class 4 has no sample, class 3 only rows on rank 0 (even rows)."""
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 3, (NUM_ROWS,), generator=g)
    labels[0::4] = 3  # rows 0, 4, 8, ...: all on rank 0 under rank::2
    logits = torch.randn(NUM_ROWS, DDP_K, generator=g)
    logits[torch.rand(NUM_ROWS, generator=g) < 0.5, 4] = -10.0
    # Make about half the rows right.
    right = torch.rand(NUM_ROWS, generator=g) < 0.5
    logits[right, labels[right]] = 10.0
    return logits, labels


class _CountModule(L.LightningModule):
    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.layer = nn.Linear(1, 1)  # DDP refuses modules without parameters
        self.acc = ClassAccuracy(DDP_K)
        self.logits, self.labels = _ddp_data()
        self.rows: list[int] = []

    def test_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(TensorDataset(torch.arange(NUM_ROWS)[rank::world]), batch_size=6)

    def test_step(self, batch: list[Tensor], batch_idx: int) -> None:
        (idx,) = batch
        self.acc.update(self.logits[idx], self.labels[idx])
        self.rows += idx.tolist()

    def on_test_epoch_end(self) -> None:
        local = [t.tolist() for t in (self.acc.correct, self.acc.total)]
        correct, total = self.acc.counts()
        after = [t.tolist() for t in (self.acc.correct, self.acc.total)]
        computed = self.acc.compute()
        record = {
            "world_size": self.trainer.world_size,
            "rows": self.rows,
            "local": local,
            "after": after,
            "correct": correct.tolist(),
            "total": total.tolist(),
            "compute": [None if math.isnan(v) else v for v in computed.tolist()],
        }
        path = Path(self.out_dir) / f"rank{self.trainer.global_rank}.json"
        path.write_text(json.dumps(record))


@pytest.mark.ddp
def test_ddp_spawn_counts_equal_single_process(tmp_path: Path) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        use_distributed_sampler=False,  # the default sampler pads shards by repeating rows
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(_CountModule(str(tmp_path)), verbose=False)

    logits, labels = _ddp_data()
    single = ClassAccuracy(DDP_K)
    single.update(logits, labels)
    correct, total = single.counts()
    assert total[3] > 0 and total[4] == 0 and 0 < int(correct.sum()) < NUM_ROWS
    expected = single.compute().tolist()

    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(rec["world_size"] == 2 for rec in records)
    assert sorted(records[0]["rows"] + records[1]["rows"]) == list(range(NUM_ROWS))
    assert len(records[0]["rows"]) == 21 and len(records[1]["rows"]) == 20
    # Each rank counted only its shard (class 3 only on rank 0) ...
    assert records[1]["local"][1][3] == 0 and records[0]["local"][1][3] == int(total[3])
    local_sum = [
        [a + b for a, b in zip(x, y, strict=True)]
        for x, y in zip(records[0]["local"], records[1]["local"], strict=True)
    ]
    assert local_sum == [correct.tolist(), total.tolist()]
    for rec in records:
        # ... counts() returns the totals over both on every rank, and leaves local state alone.
        assert rec["correct"] == correct.tolist() and rec["total"] == total.tolist()
        assert rec["after"] == rec["local"]
        for got, want in zip(rec["compute"], expected, strict=True):
            if math.isnan(want):
                assert got is None
            else:
                assert got == pytest.approx(want, abs=1e-12)
