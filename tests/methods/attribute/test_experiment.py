"""The one-command comparison table runs end to end on the synthetic default."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lit_unlearn.methods.attribute.experiment import main, parse_args
from tests.conftest import CONFIGS


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
            "--dd-bounds", "0.0,1.0", "0.0,0.1,1.0", "--dd-batch-size", "100000", "--repeats", "2",
            "--dd-target", "representation", "--dd-negatives", "2",
            "--ablation", "--out", str(out), "--wandb",
        ]
    )  # fmt: skip
    privacy = pd.read_csv(out / "privacy.csv")
    utility = pd.read_csv(out / "utility.csv")
    # both overrides took effect: 200 users, of whom the attackers test on the non-shadow ones
    assert privacy["n_test"].max() < 200
    methods = [
        "Original", "AttrCloak-DD on the representation",
        "AttrCloak-DD a_u in [0,0.1] shrinkage 1 on the representation", "AttrCloak-DF",
        "U2U-R", "D2D-R",
    ]  # fmt: skip
    assert list(dict.fromkeys(utility["method"]))[:6] == methods
    assert len(utility) == 2 * (6 + 6)  # two seeds x (rows + alpha grid)
    assert all(sorted(g) == [0, 1] for _, g in utility.groupby("method")["seed"])
    # the capped MGDA row never puts more than 0.1 on privacy; the trace mean is reported
    capped = utility[utility.method == methods[2]]
    assert capped["alpha_u_mean"].between(0.0, 0.1 + 1e-6).all()
    assert set(privacy["attacker"]) == {"mlp", "xgboost"}
    assert set(privacy["attribute"]) == {"gender", "age", "occupation"}
    assert utility.loc[utility.method != "Original", "seconds"].gt(0).all()
    assert {"sampled/hr@10", "full/ndcg@10"} <= set(utility.columns)
    text = (out / "comparison.md").read_text()
    assert "| chance |" in text and "AttrCloak-DF" in text and " ± " in text
    assert (out / "fig4_AttrCloak-DF_gender.png").stat().st_size > 1000
    assert any((out / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize(
    "argv",
    [
        ["--repeats", "0"],
        ["--dd-batch-size", "0"],
        ["--dd-negatives", "0"],
        ["--dd-target", "weights"],
        ["--dd-bounds", "0.1"],
        ["--df-bounds", "0,1,x"],
        ["--dd-bounds", "a,b"],
    ],
)
def test_bad_table_arguments_exit_with_a_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_repeated_overrides_all_apply() -> None:
    # Each --override=... adds one; the last must not silently replace the earlier ones.
    args = parse_args(
        ["--override=--data.init_args.seed=3", "--override=--data.init_args.batch_size=64"]
    )
    assert args.override == ["--data.init_args.seed=3", "--data.init_args.batch_size=64"]
