"""FederatedTask through the CLI: rounds, audits, the gradient leak, exports, resume, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lit_unlearn.cli import build_cli
from lit_unlearn.datamodules import FederatedData, RecommendationData, Synthetic
from lit_unlearn.methods.federated import AdversaryTerm, FederatedTask, PointwiseBCE
from lit_unlearn.methods.federated.audit import GradientInversionAudit
from lit_unlearn.models import NCF

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "experiment" / "federated"


def _fit(tmp_path: Path, *extra: str) -> None:
    config = yaml.safe_load((CONFIG / "synthetic_fedncf.yaml").read_text())
    checkpoint, _, embedding, gradient = config["trainer"]["callbacks"]
    checkpoint["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    embedding["init_args"]["every_n_rounds"] = 10
    gradient["init_args"]["at_round"] = 10
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    build_cli(
        [
            "fit",
            "--config",
            str(tmp_path / "config.yaml"),
            "--data.init_args.source.init_args.num_users=120",
            "--data.init_args.source.init_args.num_items=150",
            "--data.init_args.num_eval_negatives=49",
            "--data.init_args.rounds_per_epoch=10",
            "--model.init_args.fraction=0.25",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *extra,
        ]
    )


def test_fit_trains_audits_and_shows_the_gradient_leak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _fit(tmp_path, "--trainer.max_epochs=2")
    (log_dir,) = list((tmp_path / "synthetic_fedncf").glob("version_*"))
    metrics = pd.read_csv(log_dir / "metrics.csv")
    hr = metrics["val/sampled/hr@10"].dropna().to_numpy()
    assert hr[-1] > 0.35  # 49 sampled negatives: a random ranker scores 0.2
    # The server's attack on a plain adversary head's uploads recovers gender (the known leak).
    attack = pd.read_csv(log_dir / "gradient_attack.csv").set_index("attack")
    idlg = attack.loc["idlg"].to_dict()
    assert float(idlg["accuracy"]) >= 0.85
    assert int(idlg["n_users"]) > 0
    # The outside adversary's embedding attack at rounds 10 and 20, with exports (raw ids).
    for r in (10, 20):
        table = pd.read_csv(log_dir / f"embedding_attack_round{r}.csv")
        assert {"micro_f1", "macro_f1", "balanced_accuracy"} <= set(table.columns)
        npz = np.load(log_dir / f"representations_round{r}.npz")
        assert npz["representation"].shape == (len(npz["user_id"]), 64)
        assert npz["user_id"].dtype.kind == "U" and len(set(npz["user_id"])) == 120
        assert set(npz["attr_gender"]) <= {0, 1}


# FedAdam keeps server moments across rounds (they travel in the checkpoint); the split client
# optimisers (SGD shared, Adam private: FedNCF's ML-100K recipe) reach the engine from the CLI.
SERVER_STATE = (
    "--model.init_args.aggregator=lit_unlearn.methods.federated.FedAdam",
    "--model.init_args.aggregator.init_args.server_lr=0.05",
    "--model.init_args.private_optimizer=adam",
    "--model.init_args.private_lr=0.05",
)


@pytest.mark.parametrize("extra", [(), SERVER_STATE], ids=["fedavg", "fedadam_split_optimisers"])
def test_resume_equals_an_uninterrupted_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    _fit(straight, "--trainer.max_epochs=2", *extra)
    _fit(parts, "--trainer.max_epochs=1", *extra)
    _fit(parts, "--trainer.max_epochs=2", f"--ckpt_path={parts}/ckpt/last.ckpt", *extra)
    a = torch.load(straight / "ckpt" / "last.ckpt", weights_only=False)
    b = torch.load(parts / "ckpt" / "last.ckpt", weights_only=False)
    assert a["lit_unlearn_federated"]["round_index"] == 20
    assert b["lit_unlearn_federated"]["round_index"] == 20
    assert a["global_step"] == 20  # global_step counts rounds
    # the monitored checkpoint is written too (global_step must advance for that)
    assert (straight / "ckpt" / "best.ckpt").exists()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    server = a["lit_unlearn_federated"]["aggregator"]
    if extra:
        assert set(server) == {"m", "v"} and server["m"]  # FedAdam's moments were saved
    else:
        assert server == {}


def _task(attribute: str | None = None) -> FederatedTask:
    model = NCF(50, 40, 8, hidden_layers=1, scorer="neumf")
    return FederatedTask(model, PointwiseBCE(), attribute=attribute)


def test_bad_input_is_refused() -> None:
    import lightning.pytorch as pl

    source = Synthetic(num_users=50, num_items=40, interactions_per_user=10, seed=0)
    with pytest.raises(TypeError, match="FederatedData"):
        pl.Trainer(fast_dev_run=True, logger=False).fit(
            _task(), RecommendationData(source=source, num_eval_negatives=9)
        )
    dm = FederatedData(
        source=source, attributes=["gender"], rounds_per_epoch=2, num_eval_negatives=9
    )
    with pytest.raises(ValueError, match="attribute 'age' is not among"):
        pl.Trainer(fast_dev_run=True, logger=False).fit(_task(attribute="age"), dm)
    with pytest.raises(ValueError, match="AdversaryTerm"):
        pl.Trainer(
            fast_dev_run=True, logger=False, callbacks=[GradientInversionAudit(at_round=1)]
        ).fit(_task(attribute="gender"), dm)
    wrong_head = FederatedTask(
        NCF(50, 40, 4, scorer="neumf"),
        terms=[AdversaryTerm(input_dim=8, num_classes=3)],
        attribute="gender",
    )
    with pytest.raises(ValueError, match="predicts 3 classes, attribute 'gender' has 2"):
        pl.Trainer(fast_dev_run=True, logger=False).fit(wrong_head, dm)
    with pytest.raises(ValueError, match="rounds_per_epoch"):
        FederatedData(source=source, rounds_per_epoch=0)
    with pytest.raises(ValueError, match="data_dependent"):
        FederatedData(source=source, mode="data_free")
    with pytest.raises(ValueError, match="grl_scale"):
        AdversaryTerm(grl_scale=float("nan"))


def test_split_client_optimisers_reach_the_engine() -> None:
    source = Synthetic(num_users=50, num_items=40, interactions_per_user=10, seed=0)
    dm = FederatedData(source=source, rounds_per_epoch=2, num_eval_negatives=9)
    dm.setup("fit")
    task = FederatedTask(
        NCF(50, 40, 8, hidden_layers=1, scorer="neumf"),
        lr=1.0,
        optimizer="sgd",
        private_lr=0.05,
        private_optimizer="adam",
    )
    engine = task.build_engine(dm)
    assert engine.private_names and all("user" in n for n in engine.private_names)
    for name, (opt, rate) in engine.param_optim.items():
        assert (opt, rate) == (("adam", 0.05) if name in engine.private_names else ("sgd", 1.0))
    with pytest.raises(ValueError, match="private_lr"):
        FederatedTask(NCF(50, 40, 8), private_lr=-1.0)
