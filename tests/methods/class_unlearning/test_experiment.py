"""The class-unlearning comparison table: config checks and one tiny run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lit_unlearn.methods.class_unlearning.experiment import (
    TableConfigError,
    data_needed,
    load_table,
    main,
)
from lit_unlearn.methods.class_unlearning.experiment.render import summarize
from tests.conftest import REPO

FAMILY = REPO / "configs" / "experiment" / "class_unlearning"
METHOD = REPO / "configs" / "method" / "class_unlearning"
DIGITS_CNN = str(FAMILY / "digits_cnn.yaml")
SSD = METHOD / "ssd.yaml"
TINY_SAMPLER = {
    "class_path": "lit_unlearn.methods.class_unlearning.LangevinSampler",
    "init_args": {"steps": 4, "skip": 2},
}


def _write(tmp_path: Path, **table: object) -> Path:
    path = tmp_path / "table.yaml"
    path.write_text(
        yaml.safe_dump({"configs": [DIGITS_CNN], "out": str(tmp_path / "out"), **table})
    )
    return path


@pytest.mark.parametrize(
    "name", ["digits_table.yaml", "digits_table_k1.yaml", "mnist5k_table.yaml"]
)
def test_shipped_tables_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # their configs are repository-relative
    spec = load_table(FAMILY / name)
    assert spec.seeds == [0, 1, 2] and [len(r) for r in spec.forget_classes][:3] == [1, 1, 1]
    names = spec.names
    assert names[:2] == ["Original", "Retrain"]
    assert {"SSD", "UNSIR", "DSDA"} <= set(names)
    needs = {r.name: data_needed(r.callback_class) for r in spec.rows}
    assert needs["DSDA"] == "none (source-free)"
    assert needs["SSD"] == "D_r, D_f" and needs["UNSIR"] == "D_r"


def test_ablation_rows_change_one_part_of_dsda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    rows = {r.name: r for r in load_table(FAMILY / "digits_table.yaml").rows}
    full = rows["DSDA"].build(None, 0)
    egds = rows["DSDA-w-EGDS"].build(None, 0)
    assert egds.sampler.method == "egds" and full.sampler.method == "aegds"  # type: ignore[attr-defined]
    # EGDS costs at least 3x AEGDS's score evaluations (the figure AEGDS must meet).
    assert egds.sampler.evals_per_sample >= 3 * full.sampler.evals_per_sample  # type: ignore[attr-defined]
    assert rows["DSDA-wo-disc"].build(None, 0).disc is False  # type: ignore[attr-defined]
    wo_mt = rows["DSDA-wo-mt"].build(None, 0).combiner  # type: ignore[attr-defined]
    assert wo_mt.static_weights(3) is not None and full.combiner.static_weights(3) is None  # type: ignore[attr-defined]
    # The run's seed reaches a callback that takes one, unless the row fixes it.
    assert rows["DSDA"].build(None, 7).seed == 7  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"colour": 1}, "unknown key"),
        ({"forget_classes": []}, "forget_classes"),
        ({"forget_classes": [[]]}, "forget_classes"),
        ({"rows": [{"name": "x", "method": "missing.yaml"}]}, "not found"),
        ({"rows": [{"name": "Retrain", "method": str(METHOD / "ssd.yaml")}]}, "reserved"),
        ({"rows": [{"name": "a", "method": str(METHOD / "ssd.yaml")}] * 2}, "repeated"),
        ({"rows": [{"name": "a", "method": str(METHOD / "ssd.yaml"), "epochs": -1}]}, "epochs"),
        ({"rows": [{"name": "a", "method": str(METHOD / "ssd.yaml"), "colour": 1}]}, "unknown"),
        ({"rows": [{"name": "a", "method": str(SSD), "init_args": {"alpah": 1.0}}]}, "alpah"),
        ({"rows": [{"name": "a", "method": DIGITS_CNN}]}, "exactly one unlearning callback"),
        ({"rows": [{"name": "a", "method": str(SSD), "overrides": ["data.x=3"]}]}, "--key=value"),
        ({"original": False, "retrain": False}, "no row"),
        ({"rows": [{"name": "a", "method": str(SSD), "sizes": [0]}]}, "sizes"),
        ({"configs": ["missing.yaml"]}, "not found"),
    ],
)
def test_bad_tables_are_refused(table: dict, match: str, tmp_path: Path) -> None:
    path = _write(tmp_path, **{"forget_classes": [[0]], **table})
    with pytest.raises(TableConfigError, match=match):
        load_table(path)
    with pytest.raises(TableConfigError, match="does not exist"):
        load_table(tmp_path / "nope.yaml")


def test_tiny_table_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    rows = [
        {"name": "FT", "method": str(METHOD / "finetune.yaml"), "epochs": 1,
         "init_args": {"lr": 0.1}},
        {"name": "SSD", "method": str(SSD), "sizes": [1]},
        {"name": "DSDA", "method": str(METHOD / "dsda.yaml"), "epochs": 1,
         "init_args": {"samples_per_class": 8, "sampler": TINY_SAMPLER}},
    ]  # fmt: skip
    path = _write(
        tmp_path,
        seeds=[0],
        forget_classes=[[3], ["7", "8"]],
        overrides=["--trainer.max_epochs=2"],
        export=True,
        rows=rows,
        wandb_project="lit-unlearn-test",
    )
    main(["--config", str(path)])
    out = tmp_path / "out"
    results = pd.read_csv(out / "results.csv")
    # SSD runs on single-class requests only (its row's sizes).
    first, second = (
        ["Original", "Retrain", "FT", "SSD", "DSDA"],
        ["Original", "Retrain", "FT", "DSDA"],
    )
    assert list(results["method"]) == [*first, *second]
    assert list(results["k"]) == [1] * 5 + [2] * 4
    assert (results.loc[results["method"] == "Retrain", "A_f"] == 0).all()  # never saw 3 / 7, 8
    assert results["MIA"].between(0, 1).all() and (results["total_s"] > results["unlearn_s"]).all()
    dsda = results[results["method"] == "DSDA"]
    assert (dsda["data_needed"] == "none (source-free)").all() and (dsda["score_evals"] == 4).all()
    summary = pd.read_csv(out / "summary.csv", index_col=[0, 1])
    assert list(summary.loc[1].index) == ["Original", "Retrain", "FT", "SSD", "DSDA"]
    report = (out / "report.md").read_text()
    assert "## k = 1" in report and "## k = 2" in report and "entropy" in report
    assert "| DSDA | none (source-free) |" in report
    for png in ("accuracy_time_k1.png", "accuracy_time_k2.png", "samples_DSDA.png"):
        assert (out / png).stat().st_size > 1000, png
    # Outputs for outside audits: logits with the source's image ids, per run.
    npz = np.load(out / "outputs" / "DSDA_seed0_forget7_8.npz")
    assert list(npz["forget_classes"]) == [7, 8] and len(npz["test_ids"]) == 360
    # One offline W&B run holding the tables and the figures.
    assert list((out / "wandb").glob("offline-run-*")), "no W&B run was logged"
    # --render rebuilds the report from results.csv alone (same summary, no training).
    (out / "report.md").unlink()
    main(["--config", str(path), "--render"])
    assert "| Retrain | D_r |" in (out / "report.md").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv", index_col=[0, 1]), summary)
    with pytest.raises(TableConfigError, match="does not exist"):
        main(["--config", str(path), "--render", "--out", str(tmp_path / "empty")])


def test_summary_groups_by_request_size() -> None:
    results = pd.DataFrame(
        {"method": ["A", "A", "A"], "forget": ["1", "2", "1,2"], "A_r": [0.5, 0.7, 0.9],
         "A_f": 0.0, "MIA": 0.1, "acc": 0.5, "unlearn_s": 1.0, "total_s": 2.0}
    )  # fmt: skip
    summary = summarize(results)  # an old results.csv without k / data_needed still renders
    assert summary.loc[(1, "A"), "A_r"] == pytest.approx(0.6)
    assert summary.loc[(2, "A"), "runs"] == 1 and summary.loc[(1, "A"), "data_needed"] == "?"
