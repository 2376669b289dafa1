"""The AttributeAudit callback inside real (tiny) Lightning runs."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lit_unlearn.attacks import AttackResult
from lit_unlearn.callbacks import AttributeAudit
from lit_unlearn.datamodules.containers import UserAttributes

NUM_USERS = 240
DIM = 8
# Small attacker budgets and one thread each keep every fit below a few seconds.
FAST_ARGS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": 32, "lr": 1e-2, "max_epochs": 50, "patience": 10},
    "xgboost": {"n_estimators": 20, "early_stopping_rounds": 5, "n_jobs": 1},
}


class TinyData(LightningDataModule):
    """User ids as the training data, plus attributes that leak into the initial embeddings."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        gender = rng.integers(0, 2, NUM_USERS)
        age = rng.integers(-1, 3, NUM_USERS)  # some unknown (-1)
        self.initial = torch.as_tensor(rng.normal(size=(NUM_USERS, DIM)), dtype=torch.float32)
        self.initial[:, 0] += 4.0 * torch.as_tensor(gender, dtype=torch.float32)
        self.user_attributes = UserAttributes(
            codes={"gender": torch.as_tensor(gender), "age": torch.as_tensor(age)},
            classes={"gender": ["F", "M"], "age": ["18-24", "25-34", "35+"]},
            shadow=torch.as_tensor(rng.random(NUM_USERS) < 0.5),
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.arange(NUM_USERS)), batch_size=80)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.arange(NUM_USERS)), batch_size=80)


class TinyModel(LightningModule):
    def __init__(self, initial: Tensor) -> None:
        super().__init__()
        self.users = nn.Embedding.from_pretrained(initial.clone(), freeze=False)
        self.dropout = nn.Dropout(0.5)  # must be off while the representation is read
        self.modes_seen: list[bool] = []

    def user_representation(self) -> Tensor:
        self.modes_seen.append(self.training)
        return self.dropout(self.users.weight)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        loss = self.users(batch[0]).pow(2).mean()
        self.log("train_loss", loss)
        return loss

    def test_step(self, batch: list[Tensor], batch_idx: int) -> None:
        self.log("test_norm", self.users(batch[0]).norm(dim=1).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def make_trainer(tmp_path: Path, callback: AttributeAudit, **kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "logger": CSVLogger(tmp_path),
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [callback],
    }
    options.update(kwargs)
    return Trainer(**options)


def fast_audit(**kwargs: Any) -> AttributeAudit:
    names = kwargs.get("attackers", ["mlp", "xgboost"])
    kwargs.setdefault("attacker_args", {n: FAST_ARGS[n] for n in names if n in FAST_ARGS})
    return AttributeAudit(**kwargs)


def read_metrics(trainer: Trainer) -> dict[str, str]:
    """Last non-empty value of every column of the CSVLogger's metrics.csv."""
    assert trainer.logger is not None and trainer.logger.log_dir is not None
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    values: dict[str, str] = {}
    for row in rows:
        values.update({k: v for k, v in row.items() if v not in ("", None)})
    return values


def test_fit_audits_logs_and_writes_tables(tmp_path: Path) -> None:
    data = TinyData()
    model = TinyModel(data.initial)
    audit = fast_audit(save_dir=str(tmp_path / "audit"))
    trainer = make_trainer(tmp_path, audit)
    trainer.fit(model, datamodule=data)

    assert set(audit.results) == {"fit_start", "fit_end"}
    for results in audit.results.values():
        assert [(r.attribute, r.attacker) for r in results] == [
            ("gender", "mlp"),
            ("gender", "xgboost"),
            ("age", "mlp"),
            ("age", "xgboost"),
        ]
        gender = [r for r in results if r.attribute == "gender"]
        assert all(r.balanced_accuracy > 0.8 for r in gender)  # planted in dimension 0
        age = results[2]
        # unknown ages take no part: train + val + test = users with a known age
        known = int((data.user_attributes.codes["age"] >= 0).sum())
        assert age.n_train + age.n_val + age.n_test == known
    # read in eval mode (no dropout), and the module's mode restored afterwards
    assert model.modes_seen == [False, False]
    assert model.training and model.dropout.training

    metrics = read_metrics(trainer)
    for stage in ("fit_start", "fit_end"):
        for key in ("balanced_accuracy", "auc", "leakage", "majority_accuracy"):
            value = float(metrics[f"audit/{stage}/gender/mlp/{key}"])
            assert value == pytest.approx(getattr(audit.results[stage][0], key))
        table = (tmp_path / "audit" / f"audit_{stage}.md").read_text()
        assert table.startswith(f"# Attribute audit: {stage}") and "| gender | xgboost |" in table
        with open(tmp_path / "audit" / f"audit_{stage}.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == 4


def test_default_save_dir_is_log_dir_and_test_end(tmp_path: Path) -> None:
    data = TinyData()
    audit = fast_audit(attributes=["gender"], attackers=["mlp"], when=["fit_end", "test_end"])
    trainer = make_trainer(tmp_path, audit)
    model = TinyModel(data.initial)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data)
    assert set(audit.results) == {"fit_end", "test_end"}
    assert [r.attribute for r in audit.results["test_end"]] == ["gender"]
    assert trainer.log_dir is not None
    log_dir = Path(trainer.log_dir)
    assert (log_dir / "audit_fit_end.md").exists() and (log_dir / "audit_test_end.csv").exists()
    assert not (log_dir / "audit_fit_start.md").exists()


def test_fast_dev_run_skips(tmp_path: Path) -> None:
    data = TinyData()
    audit = fast_audit(save_dir=str(tmp_path / "audit"))
    trainer = make_trainer(tmp_path, audit, fast_dev_run=True)
    trainer.fit(TinyModel(data.initial), datamodule=data)
    assert audit.results == {}
    assert not (tmp_path / "audit").exists()


def test_state_dict_round_trip_and_resume(tmp_path: Path) -> None:
    data = TinyData()
    first = fast_audit(attackers=["mlp"], save_dir=str(tmp_path / "a"))
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(
        tmp_path, first, enable_checkpointing=True, callbacks=[first, ckpt], max_epochs=1
    )
    trainer.fit(TinyModel(data.initial), datamodule=data)

    state = first.state_dict()
    assert isinstance(state["results"]["fit_start"][0], dict)  # plain data in checkpoints
    copy = fast_audit(attackers=["mlp"])
    copy.load_state_dict(state)
    assert copy.results == first.results
    assert all(isinstance(r, AttackResult) for r in copy.results["fit_end"])

    # Resume: fit_start is not re-audited (the restored one describes the real start).
    resumed = fast_audit(attackers=["mlp"], save_dir=str(tmp_path / "b"))
    trainer2 = make_trainer(tmp_path, resumed, max_epochs=2)
    trainer2.fit(
        TinyModel(data.initial), datamodule=data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
    )
    assert resumed.results["fit_start"] == first.results["fit_start"]
    assert "fit_end" in resumed.results
    assert not (tmp_path / "b" / "audit_fit_start.md").exists()
    assert (tmp_path / "b" / "audit_fit_end.md").exists()


def test_init_validation() -> None:
    with pytest.raises(ValueError, match="unknown attacker"):
        AttributeAudit(attackers=["mlp", "svm"])
    with pytest.raises(ValueError, match="unknown stage"):
        AttributeAudit(when=["fit_start", "epoch_end"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="must not be empty"):
        AttributeAudit(attackers=[])
    with pytest.raises(ValueError, match="duplicate"):
        AttributeAudit(attackers=["mlp", "mlp"])
    with pytest.raises(ValueError, match="list of names"):
        AttributeAudit(attributes="gender")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not in attackers"):
        AttributeAudit(attackers=["mlp"], attacker_args={"xgboost": {}})
    with pytest.raises(ValueError, match="hidden"):
        AttributeAudit(attackers=["mlp"], attacker_args={"mlp": {"hidden": 0}})
    with pytest.raises(ValueError, match="unexpected keyword"):
        AttributeAudit(attackers=["mlp"], attacker_args={"mlp": {"depth": 3}})
    with pytest.raises(ValueError, match="seed"):
        AttributeAudit(seed=1.5)  # type: ignore[arg-type]
    a, b = AttributeAudit(attackers=["mlp"]), AttributeAudit(attackers=["mlp"], when=["fit_end"])
    assert a.state_key != b.state_key


def test_missing_xgboost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xgboost", None)
    with pytest.warns(UserWarning, match="skipping attacker 'xgboost'"):
        audit = AttributeAudit()
    assert audit.attackers == ["mlp"]
    with pytest.raises(ImportError, match="xgboost-cpu"):
        AttributeAudit(attackers=["xgboost"])


def test_run_errors(tmp_path: Path) -> None:
    data = TinyData()

    class NoHook(TinyModel):
        user_representation = None  # type: ignore[assignment]

    with pytest.raises(TypeError, match="user_representation"):
        make_trainer(tmp_path, fast_audit()).fit(NoHook(data.initial), datamodule=data)

    with pytest.raises(KeyError, match="occupation"):
        trainer = make_trainer(tmp_path, fast_audit(attributes=["occupation"]))
        trainer.fit(TinyModel(data.initial), datamodule=data)

    class NoAttributes(TinyData):
        user_attributes = None  # type: ignore[assignment]

        def __init__(self) -> None:
            LightningDataModule.__init__(self)

    with pytest.raises(RuntimeError, match="user_attributes"):
        make_trainer(tmp_path, fast_audit()).fit(TinyModel(data.initial), datamodule=NoAttributes())


class DumpResults(Callback):
    """Writes each rank's audit results after the audit, to compare ranks from the parent."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        audit = next(c for c in trainer.callbacks if isinstance(c, AttributeAudit))  # type: ignore[attr-defined]
        path = Path(self.out_dir) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(audit.state_dict(), sort_keys=True))


@pytest.mark.ddp
def test_ddp_ranks_agree_and_rank_zero_writes(tmp_path: Path) -> None:
    data = TinyData()
    audit = fast_audit(attributes=["gender"], save_dir=str(tmp_path / "audit"))
    trainer = make_trainer(
        tmp_path,
        audit,
        strategy="ddp_spawn",
        devices=2,
        callbacks=[audit, DumpResults(str(tmp_path))],
    )
    trainer.fit(TinyModel(data.initial), datamodule=data)
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0 == rank1
    assert set(rank0["results"]) == {"fit_start", "fit_end"}
    assert (tmp_path / "audit" / "audit_fit_end.csv").exists()
