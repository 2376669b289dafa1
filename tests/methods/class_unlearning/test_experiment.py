"""The Original / Retrain / Fine-tune table: config checks and one tiny run end to end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from lit_unlearn.methods.class_unlearning.experiment import (
    TableConfigError,
    load_table,
    main,
)
from tests.conftest import REPO

FAMILY = REPO / "configs" / "experiment" / "class_unlearning"
DIGITS_CNN = str(FAMILY / "digits_cnn.yaml")


def _write(tmp_path: Path, **table: object) -> Path:
    path = tmp_path / "table.yaml"
    path.write_text(
        yaml.safe_dump({"configs": [DIGITS_CNN], "out": str(tmp_path / "out"), **table})
    )
    return path


@pytest.mark.parametrize("name", ["digits_table.yaml", "mnist5k_table.yaml"])
def test_shipped_tables_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # their configs are repository-relative
    config = load_table(FAMILY / name)
    assert config.seeds == [0, 1, 2] and len(config.forget_classes) == 3
    assert [f.name for f in config.finetune] == ["Fine-tune (lr 0.02)", "Fine-tune (lr 0.1)"]


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"colour": 1}, "unknown key"),
        ({"methods": ["original", "ssd"]}, "unknown method"),
        ({"forget_classes": []}, "forget_classes"),
        ({"forget_classes": [[]]}, "forget_classes"),
        ({"finetune": {"epochs": 0}}, "epochs"),
        ({"finetune": {"learning_rate": 0.1}}, "finetune"),
        ({"finetune": [{"lr": 0.1}, {"lr": 0.2}]}, "distinct names"),
        ({"configs": ["missing.yaml"]}, "not found"),
    ],
)
def test_bad_tables_are_refused(table: dict, match: str, tmp_path: Path) -> None:
    path = _write(tmp_path, **{"forget_classes": [[0]], **table})
    with pytest.raises(TableConfigError, match=match):
        load_table(path)
    with pytest.raises(TableConfigError, match="does not exist"):
        load_table(tmp_path / "nope.yaml")


def test_tiny_table_end_to_end(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        seeds=[0],
        forget_classes=[[3], ["7"]],
        overrides=["--trainer.max_epochs=2"],
        finetune=[{"name": "FT", "epochs": 1, "lr": 0.1}],
    )
    main(["--config", str(path)])
    out = tmp_path / "out"
    results = pd.read_csv(out / "results.csv")
    assert list(results["method"]) == ["Original", "Retrain", "FT"] * 2
    assert (results.loc[results["method"] == "Retrain", "A_f"] == 0).all()  # never saw class 3/7
    assert results["MIA"].between(0, 1).all() and (results["total_s"] > results["unlearn_s"]).all()
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert list(summary.index) == ["Original", "Retrain", "FT"]
    assert summary.loc["Retrain", "runs"] == 2
    report = (out / "report.md").read_text()
    assert "| Retrain |" in report and "entropy" in report
    # --render rebuilds the report from results.csv alone (same summary, no training).
    (out / "report.md").unlink()
    main(["--config", str(path), "--render"])
    assert "| Retrain |" in (out / "report.md").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv", index_col=0), summary)
    with pytest.raises(TableConfigError, match="does not exist"):
        main(["--config", str(path), "--render", "--out", str(tmp_path / "empty")])
