"""RankingMetrics on 2 CPU processes (gloo) equals the single-process result.

Rows are sharded ``rank::world_size`` without padding, so every row is evaluated exactly once.
Children write their results to files in ``tmp_path``; the parent compares.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lit_unlearn.datamodules.sampling import interaction_keys, sample_negatives
from lit_unlearn.metrics import RankingMetrics, full_ranking_values, protocol_prefix, sampled_values

pytestmark = pytest.mark.ddp

KS = (1, 5, 10)
NUM_USERS, NUM_ITEMS = 37, 60  # 37 rows: shards of 19 and 18 rows


def _data() -> dict[str, Tensor]:
    """Fixed evaluation data: full-ranking rows and sampled pairs with seeded negatives."""
    g = torch.Generator().manual_seed(1234)
    train = torch.rand(NUM_USERS, NUM_ITEMS, generator=g) < 0.3
    targets = (torch.rand(NUM_USERS, NUM_ITEMS, generator=g) < 0.1) & ~train
    targets[torch.arange(NUM_USERS), torch.randint(0, NUM_ITEMS, (NUM_USERS,), generator=g)] = True
    train &= ~targets
    # Few distinct values (many ties); half the targets get a boost so hr@1 is not trivially 0.
    boost = targets & (torch.rand(NUM_USERS, NUM_ITEMS, generator=g) < 0.5)
    scores = (torch.randint(0, 6, (NUM_USERS, NUM_ITEMS), generator=g) + 2 * boost).float()
    u, i = (train | targets).nonzero(as_tuple=True)
    keys = interaction_keys(u, i, NUM_ITEMS)
    pairs_user, pairs_item = targets.nonzero(as_tuple=True)
    negatives = sample_negatives(pairs_user, keys, NUM_ITEMS, num_negatives=20, seed=5)
    return {
        "scores": scores,
        "train": train,
        "targets": targets,
        "pairs_user": pairs_user,
        "pairs_item": pairs_item,
        "negatives": negatives,
    }


def _full_values(d: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    return full_ranking_values(d["scores"][rows], d["targets"][rows], d["train"][rows], KS)


def _sampled_values(d: dict[str, Tensor], pairs: Tensor) -> dict[str, Tensor]:
    users = d["pairs_user"][pairs]
    pos = d["scores"][users, d["pairs_item"][pairs]]
    neg = d["scores"][users.unsqueeze(1), d["negatives"][pairs]]
    return sampled_values(pos, neg, KS)


def _single_process() -> dict[str, float]:
    d = _data()
    full = RankingMetrics(KS, prefix=protocol_prefix("val", "full"))
    sampled = RankingMetrics(KS, prefix=protocol_prefix("val", "sampled"))
    full.update(_full_values(d, torch.arange(NUM_USERS)))
    sampled.update(_sampled_values(d, torch.arange(d["pairs_user"].numel())))
    return {k: float(v) for k, v in {**full.compute(), **sampled.compute()}.items()}


class _EvalModule(L.LightningModule):
    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.layer = nn.Linear(1, 1)  # DDP refuses modules without parameters
        self.full = RankingMetrics(KS, prefix=protocol_prefix("val", "full"))
        self.sampled = RankingMetrics(KS, prefix=protocol_prefix("val", "sampled"))
        # Same rows as `full`, but all on rank 0: rank 1 never calls update, yet syncs in compute.
        self.lopsided = RankingMetrics(KS, prefix="lopsided/")
        self.data = _data()
        self.seen_rows: list[int] = []
        self.seen_pairs: list[int] = []

    def val_dataloader(self) -> list[DataLoader]:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        rows = torch.arange(NUM_USERS)[rank::world]
        pairs = torch.arange(self.data["pairs_user"].numel())[rank::world]
        # Lightning refuses an empty loader, so rank 1 gets one placeholder row (-1) it skips.
        lopsided = torch.arange(NUM_USERS) if rank == 0 else torch.tensor([-1])
        return [
            DataLoader(TensorDataset(rows), batch_size=4),
            DataLoader(TensorDataset(pairs), batch_size=7),
            DataLoader(TensorDataset(lopsided), batch_size=10),
        ]

    def validation_step(self, batch: list[Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        (idx,) = batch
        if dataloader_idx == 0:
            self.full.update(_full_values(self.data, idx))
            self.seen_rows += idx.tolist()
        elif dataloader_idx == 1:
            self.sampled.update(_sampled_values(self.data, idx))
            self.seen_pairs += idx.tolist()
        elif int(idx[0]) >= 0:
            self.lopsided.update(_full_values(self.data, idx))

    def on_validation_epoch_end(self) -> None:
        metrics = (self.full, self.sampled, self.lopsided)
        result = {k: float(v) for m in metrics for k, v in m.compute().items()}
        for m in metrics:
            m.reset()
        record = {
            "world_size": self.trainer.world_size,
            "result": result,
            "rows": self.seen_rows,
            "pairs": self.seen_pairs,
            "negatives_sum": int(self.data["negatives"].sum()),
        }
        path = Path(self.out_dir) / f"rank{self.trainer.global_rank}.json"
        path.write_text(json.dumps(record))


def test_lightning_ddp_spawn_matches_single_process(tmp_path: Path) -> None:
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
    trainer.validate(_EvalModule(str(tmp_path)), verbose=False)

    expected = _single_process()
    d = _data()
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(rec["world_size"] == 2 for rec in records)
    # Every row / pair evaluated exactly once, on one rank; shards are uneven (19 / 18 rows).
    assert sorted(records[0]["rows"] + records[1]["rows"]) == list(range(NUM_USERS))
    n_pairs = d["pairs_user"].numel()
    assert sorted(records[0]["pairs"] + records[1]["pairs"]) == list(range(n_pairs))
    # Both processes drew the same negatives as the parent.
    assert {rec["negatives_sum"] for rec in records} == {int(d["negatives"].sum())}
    for key, value in list(expected.items()):
        if key.startswith("val/full/"):
            expected["lopsided/" + key.removeprefix("val/full/")] = value
    for rec in records:
        assert set(rec["result"]) == set(expected)
        for key, value in expected.items():
            assert rec["result"][key] == pytest.approx(value, abs=1e-6), key
