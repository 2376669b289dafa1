"""The AltEraser report command: every table row, the speed-up columns and the files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from lit_unlearn.methods.interaction.experiment import METHODS, aggregate, main


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
    # AltEraser rows time their passes, inside the Timer's training time; other rows do not.
    erasers = results["method"].str.startswith("AltEraser")
    solver = results.loc[erasers, "solver_seconds"]
    assert (solver > 0).all() and (solver <= results.loc[erasers, "seconds"]).all()
    assert results.loc[~erasers, "solver_seconds"].isna().all()
    for title in ("Table 3", "Table 4", "Table 5", "speedup_run_median"):
        assert title in report


def _rows(seeds: Sequence[int]) -> pd.DataFrame:
    quality = {f"{m}@{k}": 0.5 for m in ("rbo", "recall", "ndcg") for k in (10, 20, 50)}
    return pd.DataFrame(
        [
            {"seed": s, "method": m, "repredict": 0.1, **quality, "seconds": t, "epochs": 3.0}
            for s in seeds
            for m, t in (("Original", 9.0), ("Retrain", 10.0 + s), ("AltEraser[AH-Newton]", 0.5))
        ]
    )


def test_merge_rebuilds_one_report_from_split_runs(tmp_path: Path) -> None:
    _rows([0, 1, 2]).to_csv(tmp_path / "a.csv", index=False)
    _rows([3, 4]).to_csv(tmp_path / "b.csv", index=False)
    out = tmp_path / "merged"
    main(["--merge", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), f"--out={out}"])
    merged = pd.read_csv(out / "results.csv")
    assert sorted(merged["seed"].unique()) == [0, 1, 2, 3, 4] and len(merged) == 15
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert summary.loc["Retrain", "seconds"] == 12.0  # median of 10..14 over both files
    assert summary.loc["AltEraser[AH-Newton]", "speedup"] == 24.0
    assert "5 repetition(s), seeds 0..4" in (out / "report.md").read_text()


def test_merge_refuses_missing_foreign_and_overlapping_files(tmp_path: Path) -> None:
    _rows([0, 1]).to_csv(tmp_path / "a.csv", index=False)
    _rows([1, 2]).to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "c.csv", index=False)
    out = f"--out={tmp_path / 'never'}"
    with pytest.raises(FileNotFoundError, match="no results file"):
        main(["--merge", str(tmp_path / "a.csv"), str(tmp_path / "nope.csv"), out])
    with pytest.raises(ValueError, match=r"not a results\.csv"):
        main(["--merge", str(tmp_path / "c.csv"), out])
    with pytest.raises(ValueError, match=r"more than one file: \[\(1, 'AltEraser"):
        main(["--merge", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), out])
    assert not (tmp_path / "never").exists()  # nothing written on a refused merge


def test_report_lists_seeds_with_gaps(tmp_path: Path) -> None:
    _rows([0, 2, 5]).to_csv(tmp_path / "a.csv", index=False)
    main(["--merge", str(tmp_path / "a.csv"), f"--out={tmp_path / 'r'}"])
    assert "3 repetition(s), seeds 0, 2, 5 " in (tmp_path / "r" / "report.md").read_text()
