"""The AltEraser report command: the experiment YAML, every table row, speed-ups and files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from lit_unlearn.methods.interaction.alteraser import AltEraser
from lit_unlearn.methods.interaction.experiment import (
    ExperimentConfigError,
    aggregate,
    instantiate_callbacks,
    load_experiment,
    main,
)
from lit_unlearn.methods.interaction.plateau import RelativeEarlyStopping
from lit_unlearn.methods.interaction.warm_start import WarmStart
from lit_unlearn.optim.block_solvers import AdamWBlock, AHNewtonBlock, HFNewtonBlock
from tests.conftest import CONFIGS

TABLE = CONFIGS / "experiment" / "interaction" / "alteraser_ml100k_table.yaml"
METHODS = [
    "Original",
    "Retrain",
    "Retrain*",
    "Warm-Start",
    "AltEraser[AdamW]",
    "AltEraser[HF-Newton]",
    "AltEraser[AH-Newton]",
    "AltEraser[AH-Newton]+ELS",
    "AltEraser[AH-Newton-CG]",
]


def _table_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(TABLE.read_text())
    return spec


def _write(tmp_path: Path, spec: dict[str, Any], name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_shipped_table_rows_are_the_committed_protocol() -> None:
    """Every effective hyperparameter of benchmarks/results/alteraser_ml100k_*/ (the values the
    flags --lr 1e-2 --adamw-steps 10 --cg-max-iter 50 --tol 1e-3 --max-passes 20 --rel-delta
    1e-4 --patience 10 --max-epochs 500 once gave), read back from the instantiated callbacks."""
    config = load_experiment(TABLE)
    assert config.names == METHODS
    assert (config.scenario, config.num_forget_users, config.rbo_p) == ("noise", 64, 0.9)
    assert (config.seed, config.repeats, config.max_epochs) == (0, 5, 500)
    built = {r.name: instantiate_callbacks(config.callback_specs(r, None)) for r in config.rows}
    for name in ("Retrain", "Retrain*", "Warm-Start"):
        stop = built[name][-1]
        assert isinstance(stop, RelativeEarlyStopping)
        assert (stop.rel_delta, stop.patience, stop.monitor) == (1e-4, 10, "train/loss_epoch")
        assert config.trainer_kwargs(config.rows[config.names.index(name) - 1]) == {
            "max_epochs": 500
        }
    assert [len(built[n]) for n in ("Retrain", "Retrain*", "Warm-Start")] == [1, 1, 2]
    (warm, _) = built["Warm-Start"]
    assert isinstance(warm, WarmStart) and warm.lr == 1e-2 and warm.weight_decay == 0.0
    solvers = {"AdamW": AdamWBlock, "HF-Newton": HFNewtonBlock, "AH-Newton": AHNewtonBlock}
    for label, kind in solvers.items():
        for suffix in ("", "+ELS") if label == "AH-Newton" else ("",):
            (eraser,) = built[f"AltEraser[{label}]{suffix}"]
            assert isinstance(eraser, AltEraser) and isinstance(eraser.solver, kind)
            assert (eraser.tol, eraser.max_passes, eraser.extrapolate) == (1e-3, 20, suffix != "")
    adamw = built["AltEraser[AdamW]"][0]
    assert isinstance(adamw, AltEraser) and isinstance(adamw.solver, AdamWBlock)
    assert (adamw.solver.lr, adamw.solver.steps) == (1e-2, 10)
    hf = built["AltEraser[HF-Newton]"][0]
    assert isinstance(hf, AltEraser) and isinstance(hf.solver, HFNewtonBlock)
    assert hf.solver.cg_max_iter == 50
    eraser_row = config.rows[config.names.index("AltEraser[AH-Newton]") - 1]
    assert config.trainer_kwargs(eraser_row) == {"max_epochs": 1000, "limit_train_batches": 1}
    assert [r.shuffle_seed_offset for r in config.rows[:2]] == [None, 1000]


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda s: s["rows"][2].update(method="configs/method/interaction/nope.yaml"),
         FileNotFoundError, r"row 'Warm-Start': method config: no file at .*nope\.yaml"),
        (lambda s: s["rows"][3].update(name="Retrain*"), ExperimentConfigError,
         r"duplicate row names \['Retrain\*'\]"),
        (lambda s: s.pop("training"), ExperimentConfigError, r"missing keys \['training'\]"),
        (lambda s: s["training"].pop("stop"), ExperimentConfigError, "exactly max_epochs and stop"),
        (lambda s: s["rows"][1].pop("method"), ExperimentConfigError, r"rows\[1\] needs a method"),
        (lambda s: s.update(lr=0.01), ExperimentConfigError, r"unknown keys \['lr'\]"),
        (lambda s: s["rows"].pop(0), ExperimentConfigError, "needs a 'Retrain' row"),
        (lambda s: s["rows"].append({"name": "Original", "method": s["rows"][0]["method"]}),
         ExperimentConfigError, "'Original' is built in"),
        (lambda s: s["rows"][0].update(init_args={"lit_unlearn.optim.AdamWBlock": {"lr": 1.0}}),
         ExperimentConfigError, "AdamWBlock, which .*retrain.yaml does not use"),
        (lambda s: s["rows"][0].update(
            init_args={"lit_unlearn.callbacks.RelativeEarlyStopping": {"patience": 3}}),
         ExperimentConfigError, "the stop rule is the experiment's training.stop"),
        (lambda s: s["training"]["stop"]["init_args"].update(rel_delta="x"),
         ExperimentConfigError, "callbacks do not instantiate"),
        (lambda s: s.update(repeats="5"), ExperimentConfigError, "repeats must be a int"),
        (lambda s: s.update(scenario="both"), ExperimentConfigError, "scenario must be one of"),
    ],
)  # fmt: skip
def test_bad_experiment_yaml_is_refused_with_the_reason(
    edit: Any, error: type[Exception], match: str, tmp_path: Path
) -> None:
    spec = _table_spec()
    edit(spec)
    with pytest.raises(error, match=match):
        load_experiment(_write(tmp_path, spec))


def test_unknown_methods_and_missing_yaml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ExperimentConfigError, match=r"--methods: \['AltEraser\[SGD\]'\]"):
        load_experiment(TABLE, methods=["AltEraser[SGD]"])
    with pytest.raises(FileNotFoundError, match="experiment config: no file"):
        load_experiment(tmp_path / "none.yaml")
    with pytest.raises(SystemExit):  # --config is required: the protocol lives in the YAML
        main(["--scenario", "noise"])


def test_a_method_config_that_sets_validation_is_refused(tmp_path: Path) -> None:
    method = yaml.safe_load((CONFIGS / "method" / "interaction" / "retrain.yaml").read_text())
    method["trainer"]["limit_val_batches"] = 2
    spec = _table_spec()
    spec["rows"][0]["method"] = str(_write(tmp_path, method, "retrain.yaml"))
    with pytest.raises(ExperimentConfigError, match=r"trainer.limit_val_batches=2"):
        load_experiment(_write(tmp_path, spec))


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
    spec = _table_spec()
    spec.update(data="configs/data/synthetic_forgetting.yaml", num_forget_users=8, repeats=1)
    spec["training"]["max_epochs"] = 3
    spec["overrides"] = ["--model.init_args.model.init_args.embedding_dim=8"]
    for row in spec["rows"]:
        if row["name"].startswith("AltEraser"):
            row["init_args"] = {"lit_unlearn.callbacks.AltEraser": {"max_passes": 2}}
        if row["name"] == "AltEraser[HF-Newton]":
            row["init_args"]["lit_unlearn.optim.HFNewtonBlock"] = {"cg_max_iter": 5}
    main(["--config", str(_write(tmp_path, spec)), f"--out={out}"])
    results = pd.read_csv(out / "results.csv")
    assert list(results["method"]) == list(METHODS)
    # The overrides took: trained rows within 3 epochs, AltEraser within its 2 passes.
    erasers = results["method"].str.startswith("AltEraser")
    assert (results.loc[~erasers, "epochs"] <= 3).all()
    assert (results.loc[erasers, "epochs"] <= 2).all()
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
    # The protocol line reads the instantiated callbacks, not the YAML's text.
    assert (
        "Original / Retrain / Retrain* / Warm-Start stop when the epoch loss improves by < "
        "0.0001 (relative) for 10 epochs" in report
    )
    assert (
        "AltEraser stops when a pass lowers L_Dr by < 0.001 (relative), at most 2 passes" in report
    )
    assert "| Retrain | 0." in report and "| - |" in report  # one rounding and missing rule
    # Every row is in rows.jsonl, with its own export folder (file-safe names, none shared).
    exports = sorted(p.name for p in (out / "exports" / "seed0").iterdir() if p.is_dir())
    assert len(exports) == len(METHODS) and "Retrain_star" in exports
    assert "AltEraser_AH-Newton_plus_ELS" in exports
    assert (out / "rows.jsonl").read_text().count("\n") == len(METHODS)
    assert "| AltEraser[AH-Newton] | 0." in report.split("## Table 4b")[1]


def _rows(seeds: Sequence[int]) -> pd.DataFrame:
    quality = {f"{m}@{k}": 0.5 for m in ("rbo", "recall", "ndcg") for k in (10, 20, 50)}
    return pd.DataFrame(
        [
            {"seed": s, "method": m, "repredict": 0.1, **quality, "seconds": t, "epochs": 3.0}
            for s in seeds
            for m, t in (("Original", 9.0), ("Retrain", 10.0 + s), ("AltEraser[AH-Newton]", 0.5))
        ]
    )


def _config(out: Path) -> list[str]:
    """The flags of a merge: the protocol YAML the rows were run with and the output."""
    return ["--config", str(TABLE), f"--out={out}"]


def test_merge_rebuilds_one_report_from_split_runs(tmp_path: Path) -> None:
    _rows([0, 1, 2]).to_csv(tmp_path / "a.csv", index=False)
    _rows([3, 4]).to_csv(tmp_path / "b.csv", index=False)
    out = tmp_path / "merged"
    main(["--merge", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), *_config(out)])
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
    out = _config(tmp_path / "never")
    with pytest.raises(FileNotFoundError, match="no results file"):
        main(["--merge", str(tmp_path / "a.csv"), str(tmp_path / "nope.csv"), *out])
    with pytest.raises(ValueError, match=r"not a results\.csv"):
        main(["--merge", str(tmp_path / "c.csv"), *out])
    with pytest.raises(ValueError, match=r"more than one file: \[\(1, 'AltEraser"):
        main(["--merge", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), *out])
    assert not (tmp_path / "never").exists()  # nothing written on a refused merge


def test_report_lists_seeds_with_gaps(tmp_path: Path) -> None:
    _rows([0, 2, 5]).to_csv(tmp_path / "a.csv", index=False)
    main(["--merge", str(tmp_path / "a.csv"), *_config(tmp_path / "r")])
    assert "3 repetition(s), seeds 0, 2, 5 " in (tmp_path / "r" / "report.md").read_text()
