"""The one-command comparison table runs end to end on the synthetic default."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lit_unlearn.experiments.attribute_unlearning import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_comparison_table_on_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "table"
    main(
        [
            "--data", str(CONFIGS / "data" / "synthetic.yaml"),
            "--model", str(CONFIGS / "model" / "mf.yaml"),
            "--trainer", str(CONFIGS / "trainer" / "cpu.yaml"),
            "--override=--data.init_args.source.init_args.num_users=200",
            "--override=--data.init_args.num_eval_negatives=50",
            "--train-epochs", "2", "--df-epochs", "3", "--dd-epochs", "1",
            "--ablation", "--out", str(out), "--wandb",
        ]
    )  # fmt: skip
    privacy = pd.read_csv(out / "privacy.csv")
    utility = pd.read_csv(out / "utility.csv")
    methods = ["Original", "AttrCloak-DD", "AttrCloak-DF", "U2U-R", "D2D-R"]
    assert list(utility["method"])[:5] == methods and len(utility) == 5 + 6  # + alpha grid
    assert set(privacy["attacker"]) == {"mlp", "xgboost"}
    assert set(privacy["attribute"]) == {"gender", "age", "occupation"}
    assert utility.loc[utility.method != "Original", "seconds"].gt(0).all()
    assert {"sampled/hr@10", "full/ndcg@10"} <= set(utility.columns)
    text = (out / "comparison.md").read_text()
    assert "| chance |" in text and "AttrCloak-DF" in text
    assert (out / "fig4_AttrCloak-DF_gender.png").stat().st_size > 1000
    assert any((out / "wandb").glob("offline-run-*"))
