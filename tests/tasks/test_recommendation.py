"""RecommenderTask: losses, negatives, NaN guard, checkpoints, CLI and data-free audits."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from lit_unlearn.cli import build_cli
from lit_unlearn.datamodules import RecommendationData, Synthetic
from lit_unlearn.datamodules.sampling import training_negatives
from lit_unlearn.models import MF
from lit_unlearn.tasks import RecommenderTask
from lit_unlearn.tasks.losses import bce_loss, bpr_loss
from tests.conftest import CONFIGS


def test_bpr_closed_form() -> None:
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[1.0, 3.0], [0.0, -1.0]])
    # -mean(log sigmoid(d)) over d in {1, -1, 0, 1}
    expected = (
        -(2 * math.log(1 / (1 + math.exp(-1))) + math.log(1 / (1 + math.exp(1))) + math.log(0.5))
        / 4
    )
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_bce_closed_form() -> None:
    pos = torch.tensor([0.0])
    neg = torch.tensor([[0.0, 0.0]])
    # three logits at 0: each costs log 2; sum per positive row
    assert bce_loss(pos, neg).item() == pytest.approx(3 * math.log(2), rel=1e-6)


def small_dm(**kwargs: object) -> RecommendationData:
    return RecommendationData(
        source=Synthetic(num_users=60, num_items=40, interactions_per_user=10),
        num_eval_negatives=15,
        **kwargs,  # type: ignore[arg-type]
    )


def fitted(
    tmp_path: Path, epochs: int = 1, **task_kwargs: object
) -> tuple[RecommenderTask, RecommendationData, pl.Trainer]:
    dm = small_dm()
    task = RecommenderTask(MF(dm.num_users, dm.num_items, 8), **task_kwargs)  # type: ignore[arg-type]
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, dm)
    return task, dm, trainer


def test_negatives_avoid_training_positives(tmp_path: Path) -> None:
    task, dm, _ = fitted(tmp_path, num_negatives=30)
    users = torch.as_tensor(dm.split.train[:, 0])
    torch.manual_seed(0)
    neg = task.sample_negatives(users)
    train = {tuple(p) for p in dm.split.train.tolist()}
    hits = sum((int(u), int(i)) in train for u, row in zip(users, neg, strict=True) for i in row)
    # one resampling round: collisions drop from ~25% (10 of 40 items seen) to ~6%
    assert hits / neg.numel() < 0.1
    # small [U, I]: redraws look pairs up in the dense mask, with the sorted keys' draws
    assert task.train_seen_mask.shape == (dm.num_users, dm.num_items)
    assert int(task.train_seen_mask.sum()) == task.train_keys.numel()
    torch.manual_seed(0)
    by_keys = training_negatives(users, dm.num_items, 30, task.train_keys)
    assert torch.equal(by_keys, neg)


def test_nan_loss_stops_with_a_clear_error(tmp_path: Path) -> None:
    dm = small_dm()
    task = RecommenderTask(MF(dm.num_users, dm.num_items, 8))
    with torch.no_grad():
        next(iter(task.model.user_parameters()))[0] = float("nan")
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    # The default DivergenceGuard sees the NaN weight before the first step (issue 22).
    with pytest.raises(FloatingPointError, match=r"user_embedding\.weight holds NaN or inf"):
        trainer.fit(task, dm)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "hinge"}, "loss must be"),
        ({"num_negatives": 0}, "num_negatives"),
        ({"lr": 0.0}, "lr > 0"),
    ],
)
def test_bad_task_args(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RecommenderTask(MF(5, 5, 2), **kwargs)  # type: ignore[arg-type]


def synthetic_mf_args(tmp_path: Path) -> list[str]:
    """CLI arguments for BPR-MF on the synthetic data, everything written under tmp_path."""
    return [
        "--config",
        str(CONFIGS / "trainer" / "cpu.yaml"),
        "--config",
        str(CONFIGS / "data" / "synthetic.yaml"),
        "--config",
        str(CONFIGS / "model" / "mf.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.num_eval_negatives=50",
    ]


def test_cli_checkpoint_resumes_and_reloads(tmp_path: Path) -> None:
    args = synthetic_mf_args(tmp_path)
    cli = build_cli(["fit", *args, "--trainer.max_epochs=1"])
    ckpts = sorted(Path(cli.trainer.log_dir).rglob("last.ckpt"))
    assert ckpts, "no last.ckpt written"
    resumed = build_cli(["fit", *args, "--trainer.max_epochs=2", f"--ckpt_path={ckpts[0]}"])
    assert resumed.trainer.current_epoch == 2
    assert resumed.trainer.global_step == 2 * cli.trainer.global_step
    # hparams saved under the CLI rebuild the backbone without passing it
    task = RecommenderTask.load_from_checkpoint(ckpts[0])
    assert isinstance(task.model, MF) and task.model.num_users == cli.datamodule.num_users


def test_audit_subcommand_on_checkpoint_in_data_free_mode(tmp_path: Path) -> None:
    """The audit command runs on a saved model with data-free data (no interactions read)."""
    args = synthetic_mf_args(tmp_path)
    cli = build_cli(["fit", *args, "--trainer.max_epochs=4", "--model.init_args.lr=0.02"])
    ckpt = next(Path(cli.trainer.log_dir).rglob("last.ckpt"))
    out = tmp_path / "audit"
    build_cli(
        [
            "audit",
            *args,
            "--data.init_args.mode=data_free",
            f"--data.init_args.user_index={ckpt}",
            f"--ckpt_path={ckpt}",
            "--attackers=[mlp]",
            "--attributes=[gender]",
            f"--output_dir={out}",
        ]
    )
    table = pd.read_csv(out / "audit_checkpoint.csv")
    assert table["attribute"].tolist() == ["gender"] and table["attacker"].tolist() == ["mlp"]
    # four epochs on the synthetic data already leak gender well above chance (0.5)
    assert table["balanced_accuracy"].iloc[0] > 0.6
    # the audited representation is exported under the data's raw user ids, for outside audits
    from lit_unlearn.attacks.export import load_exported
    from lit_unlearn.datamodules.index import UserIndex

    users = load_exported(out / "representations_checkpoint.npz", out / "attributes_checkpoint.csv")
    assert users.user_ids == UserIndex.load(ckpt).user_ids and list(users.codes) == ["gender"]
    assert users.shadow is not None and users.representations.shape[0] == len(users.user_ids)
