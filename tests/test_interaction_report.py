"""The AltEraser report command: every table row, the speed-up columns and the files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lit_unlearn.experiments.interaction_unlearning import METHODS, aggregate, main


def test_aggregate_speedups_per_run_and_of_medians() -> None:
    times = {"Original": (9.0, 9.0), "Retrain": (10.0, 30.0), "AltEraser[AH-Newton]": (1.0, 1.0)}
    rows = [
        {"seed": seed, "method": m, "repredict": 0.1 * seed, "seconds": t[seed], "epochs": 5.0}
        for m, t in times.items()
        for seed in (0, 1)
    ]
    table = aggregate(rows)
    assert list(table.index) == ["Original", "Retrain", "AltEraser[AH-Newton]"]
    ah = table.loc["AltEraser[AH-Newton]"]
    assert ah["seconds"] == 1.0 and ah["speedup"] == 20.0  # median Retrain 20 s / median 1 s
    assert (ah["speedup_run_min"], ah["speedup_run_max"]) == (10.0, 30.0)
    assert ah["speedup_run_median"] == 20.0 and ah["repredict"] == pytest.approx(0.05)
    assert table.loc["Retrain", "speedup_run_median"] == 1.0
    assert table["speedup"].isna().tolist() == [True, False, False]  # Original has none


def test_report_command_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "report"
    main(
        [
            "--data=configs/data/synthetic_forgetting.yaml",
            "--num-forget-users=8",
            "--max-epochs=3",
            "--max-passes=2",
            "--cg-max-iter=5",
            f"--out={out}",
            "--override=--model.init_args.model.init_args.embedding_dim=8",
        ]
    )
    results = pd.read_csv(out / "results.csv")
    assert list(results["method"]) == list(METHODS)
    assert results[["repredict", "rbo@10", "recall@10", "ndcg@10"]].notna().all().all()
    assert (results.loc[results["method"] == "Retrain", "rbo@10"] == 1.0).all()
    # Every row names its backbone; the report's protocol line repeats it.
    assert (results["embedding_dim"] == 8).all() and (results["negative_weight"] == 0.5).all()
    report = (out / "report.md").read_text()
    assert "(d = 8, c0 = 0.5, reg = 0.01, dropout = 0.7)" in report
    assert results["objective"].notna().all() and (results["dropout"] == 0.7).all()
    assert "embedding_dim" not in pd.read_csv(out / "summary.csv").columns
    for title in ("Table 3", "Table 4", "Table 5", "speedup_run_median"):
        assert title in report
