"""The comparison table: the YAML spec, its errors, the shipped table, a run end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from lit_unlearn.attacks.export import load_exported
from lit_unlearn.methods.attribute import (
    D2DR,
    U2UR,
    AdversarialConfusion,
    AttrCloak,
    CalibratedErasure,
)
from lit_unlearn.methods.attribute.experiment import LeakageSpec, TableConfigError, load_table
from lit_unlearn.methods.attribute.experiment.__main__ import main, parse_args, table_from_args
from lit_unlearn.optim import MGDA, FixedWeights
from tests.conftest import CONFIGS, REPO

METHODS = CONFIGS / "method" / "attribute"
SHIPPED = CONFIGS / "experiment" / "attribute" / "attrcloak_ml100k_table.yaml"
LEAKAGE_TABLE = CONFIGS / "experiment" / "attribute" / "attrcloak_ml100k_leakage_table.yaml"


def _row(name: str, method: str, mode: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "method": str(METHODS / method), "mode": mode, **extra}


def _table(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "trainer": str(CONFIGS / "trainer" / "cpu.yaml"),
        "data": str(CONFIGS / "data" / "synthetic.yaml"),
        "model": str(CONFIGS / "model" / "mf.yaml"),
        "rows": rows,
        **extra,
    }


def _write(tmp_path: Path, table: dict[str, Any]) -> Path:
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(table))
    return path


def test_comparison_table_on_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "table"
    dd = {"lr": 0.0045, "precision": "float32", "target": "representation"}
    capped = {
        **dd,
        "shrinkage": 1.0,
        "combiner": {"class_path": "lit_unlearn.optim.MGDA", "init_args": {"bounds": [0.0, 0.1]}},
    }
    alphas = [
        _row(
            f"DF alpha_u={a:.1f}",
            "attrcloak_alpha.yaml",
            "data_free",
            epochs=3,
            init_args={
                "combiner": {
                    "class_path": "lit_unlearn.optim.FixedWeights",
                    "init_args": {"weights": [a, 1 - a]},
                }
            },
        )
        for a in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    ]
    methods = [
        "Original", "AttrCloak-DD on the representation",
        "AttrCloak-DD a_u in [0,0.1] shrinkage 1 on the representation", "AttrCloak-DF",
        "U2U-R", "D2D-R",
    ]  # fmt: skip
    table = _table(
        [
            _row(methods[1], "attrcloak_dd.yaml", "data_dependent", epochs=1, init_args=dd),
            _row(methods[2], "attrcloak_dd.yaml", "data_dependent", epochs=1, init_args=capped),
            _row(methods[3], "attrcloak_df.yaml", "data_free", epochs=3),
            _row(methods[4], "u2u_r.yaml", "data_free", epochs=3),
            _row(methods[5], "d2d_r.yaml", "data_free", epochs=3),
            *alphas,
        ],
        checkpoint=None,
        train_epochs=2,
        repeats=2,
        out=str(tmp_path / "not_used"),
        mode_overrides={
            "data_dependent": [
                "--data.init_args.batch_size=100000",
                "--model.init_args.num_negatives=2",
            ],
            "data_free": ["--data.init_args.batch_size=1000000"],
        },
        overrides=["--data.init_args.source.init_args.num_users=200"],
        # the leakage audit, small: two cheap attackers, both protocols, a 1-permutation null
        leakage_attackers=["logreg", "knn"],
        permutations=1,
    )
    main(
        [
            "--config", str(_write(tmp_path, table)), "--out", str(out), "--wandb",
            "--override=--data.init_args.num_eval_negatives=50",
        ]
    )  # fmt: skip
    privacy = pd.read_csv(out / "privacy.csv")
    utility = pd.read_csv(out / "utility.csv")
    # both overrides took effect: 200 users, of whom the attackers test on the non-shadow ones
    assert privacy["n_test"].max() < 200
    assert list(dict.fromkeys(utility["method"]))[:6] == methods
    assert len(utility) == 2 * (6 + 6)  # two seeds x (rows + alpha grid)
    assert all(sorted(g) == [0, 1] for _, g in utility.groupby("method")["seed"])
    # the capped MGDA row never puts more than 0.1 on privacy; the trace mean is reported
    capped_rows = utility[utility.method == methods[2]]
    assert capped_rows["alpha_u_mean"].between(0.0, 0.1 + 1e-6).all()
    # the fixed-alpha rows' weights are the configured ones, at every step
    fixed = utility[utility.method.str.startswith("DF alpha_u=")]
    expected = fixed["method"].str.removeprefix("DF alpha_u=").astype(float)
    assert (fixed["alpha_u_mean"] - expected).abs().max() < 1e-6
    assert set(privacy["attacker"]) == {"mlp", "xgboost"}
    assert set(privacy["attribute"]) == {"gender", "age", "occupation"}
    assert privacy["balanced_accuracy"].between(0.0, 1.0).all()
    ranking = utility[[c for c in utility.columns if "/" in c]].to_numpy()
    assert ((ranking >= 0.0) & (ranking <= 1.0)).all()
    assert utility.loc[utility.method != "Original", "seconds"].gt(0).all()
    assert {"sampled/hr@10", "full/ndcg@10"} <= set(utility.columns)
    text = (out / "comparison.md").read_text()
    assert "| chance |" in text and "AttrCloak-DF" in text and " ± " in text
    assert (out / "fig4_AttrCloak-DF_gender.png").stat().st_size > 1000
    assert any((out / "wandb").glob("offline-run-*"))
    assert not (tmp_path / "not_used" / "privacy.csv").exists()  # --out wins over the YAML
    # the leakage audit of every (row, seed), Original included: 3 attributes x 2 x 2
    leakage = pd.read_csv(out / "leakage.csv")
    assert len(leakage) == len(utility) * 3 * 2 * 2
    assert set(leakage["protocol"]) == {"shadow", "kfold"}
    assert set(leakage["attacker"]) == {"logreg", "knn"}
    assert (leakage["n_permutations"] == 1).all() and leakage["leakage"].between(0, 1).all()
    kfold = leakage[leakage.protocol == "kfold"]
    assert (kfold["n_users"] == 200).all()  # every labelled user, predicted once
    cells = pd.read_csv(out / "leakage_cells.csv")
    assert len(cells) == 12 * 3 * 2 * 2 and set(cells["seeds"]) == {2}
    methods_csv = pd.read_csv(out / "leakage_methods.csv")
    assert list(methods_csv["method"])[:6] == methods
    assert methods_csv.loc[0, "sampled/ndcg@10_change_pct"] == 0.0  # the Original itself
    report = (out / "leakage.md").read_text()
    assert "attackers logreg, knn" in report and "1 label permutation" in report
    assert "seeds [0, 1]" in report and "split `leave_one_out` on 200 users" in report
    assert "`sampled` (the test item against 50 sampled negatives)" in report
    # provenance in every results file
    for frame in (privacy, utility, leakage, methods_csv):
        assert {"torch", "threads", "device", "python", "git_commit", "date"} <= set(frame.columns)
    assert (utility["threads"] == 1).all()  # tests/conftest.py sets one torch thread
    for name in ("comparison.md", "leakage.md"):
        assert "## Provenance" in (out / name).read_text()
    # every run appended as it finished, its representation exported with raw user ids
    lines = (out / "rows.jsonl").read_text().splitlines()
    assert len(lines) == len(utility)
    users = load_exported(out / "exports/seed1/AttrCloak-DF.npz", out / "exports/attributes.csv")
    assert users.representations.shape[0] == 200 and users.shadow is not None
    assert set(users.codes) == {"gender", "age", "occupation"}
    meta = json.loads((out / "exports/seed1/AttrCloak-DF.json").read_text())
    assert meta["provenance"]["threads"] == 1


def test_shipped_table_describes_the_committed_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row of the shipped table instantiates, with the committed table's values."""
    monkeypatch.chdir(REPO)  # the table's paths are relative to the repository root
    spec = load_table(SHIPPED)
    assert spec.repeats == 3 and spec.seeds == [0, 1, 2]
    assert spec.checkpoint == Path("runs/ml100k_ncf/checkpoints/last.ckpt")
    assert spec.mode_overrides == {
        "data_dependent": (
            "--data.init_args.batch_size=1000000",
            "--model.init_args.num_negatives=8",
        ),
        "data_free": ("--data.init_args.batch_size=1000000",),
    }
    callbacks = {row.name: (row, row.build(None, None)) for row in spec.rows}
    for name, bounds, shrinkage in (
        ("AttrCloak-DD on the representation", (0.0, 1.0), 1e-3),
        ("AttrCloak-DD a_u in [0,0.1] shrinkage 3 on the representation", (0.0, 0.1), 3.0),
    ):
        row, cb = callbacks[name]
        assert isinstance(cb, AttrCloak) and isinstance(cb.combiner, MGDA)
        assert (row.mode, row.epochs, cb.requested_mode) == ("data_dependent", 150, "dd")
        assert (cb.lr, cb.precision, cb.target, cb.shrinkage) == (
            0.0045,
            "float32",
            "representation",
            shrinkage,
        )
        assert tuple(cb.combiner.bounds or ()) == bounds
    for name, bounds in (
        ("AttrCloak-DF", (0.1, 1.0)),
        ("AttrCloak-DF a_u in [0.95,0.97]", (0.95, 0.97)),
    ):
        row, cb = callbacks[name]
        assert isinstance(cb, AttrCloak) and isinstance(cb.combiner, MGDA)
        assert (row.mode, row.epochs, cb.requested_mode) == ("data_free", 200, "df")
        assert (cb.lr, cb.precision, cb.target, cb.shrinkage) == (
            0.015,
            "float32",
            "parameters",
            1e-3,
        )
        assert tuple(cb.combiner.bounds or ()) == bounds
    for name, cls in (("U2U-R", U2UR), ("D2D-R", D2DR)):
        row, cb = callbacks[name]
        assert isinstance(cb, cls) and (row.mode, row.epochs, cb.lr) == ("data_free", 200, 0.015)
        assert isinstance(cb.combiner, FixedWeights) and cb.combiner.fixed_weights == [1.0, 1.0]
    for alpha in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        row, cb = callbacks[f"DF alpha_u={alpha:.1f}"]
        assert isinstance(cb, AttrCloak) and isinstance(cb.combiner, FixedWeights)
        assert (row.mode, row.epochs, cb.lr, cb.precision) == ("data_free", 200, 0.015, "float32")
        assert cb.combiner.fixed_weights == pytest.approx([alpha, 1 - alpha], abs=1e-15)
    assert len(callbacks) == len(spec.rows) == 12
    # the leakage audit of these methods is the leakage table's (below): off in this 12-row table
    assert spec.leakage.attackers == () and spec.export


def test_shipped_leakage_table_audits_paper_shipped_and_robust_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 23's table: four attackers, both protocols, a 5-permutation null; the paper rows,
    the shipped configs' rows and the robust rows (privacy term on 30% of users per step)."""
    monkeypatch.chdir(REPO)
    spec = load_table(LEAKAGE_TABLE)
    assert spec.repeats == 3 and spec.leakage == LeakageSpec(
        attackers=("logreg", "mlp", "xgboost", "knn"),
        protocols=("shadow", "kfold"),
        permutations=5,
        folds=5,
        attacker_args={"xgboost": {"n_jobs": 1}},
    )
    callbacks = {row.name: (row, row.build(None, None)) for row in spec.rows}
    for name in (
        "AttrCloak-DD robust (30% users per step)",
        "AttrCloak-DF robust (30% users per step)",
    ):
        _, cb = callbacks[name]
        assert isinstance(cb, AttrCloak) and cb.privacy_fraction == 0.3
        assert cb.target == "parameters" and cb.privacy_seed is None  # the run's seed
    paper = [n for n, (_, cb) in callbacks.items() if getattr(cb, "privacy_fraction", 1.0) == 1.0]
    assert {"AttrCloak-DF", "AttrCloak-DD on the representation", "U2U-R", "D2D-R"} <= set(paper)
    assert len(callbacks) == 20
    for name in (
        "AttrCloak-DF covariance + calibrated means + transport",
        "AttrCloak-DD covariance (gender, age) + anchor + calibrated means + transport",
    ):
        cb = callbacks[name][1]
        assert isinstance(cb, AttrCloak) and cb.final_transport and cb.final_erasure
        assert cb.transport_shrinkage == 0.05 and cb.transport_moments == "covariance"
        assert cb.transport_order == "after_erasure"
    confusion = callbacks["AdversarialConfusion-DF (5-fold MLP heads, refreshed every 25 steps)"][1]
    assert isinstance(confusion, AdversarialConfusion) and confusion.refresh_every == 25
    assert confusion.folds == 5 and confusion.bounds == (0.5, 1.0) and confusion.lr == 0.01
    for name in (
        "AttrCloak-DF covariance + calibrated means",
        "AttrCloak-DD covariance + calibrated means",
        "AttrCloak-DD covariance (gender, age) + anchor + calibrated means",
    ):
        cb = callbacks[name][1]
        assert cb.privacy_moments == "covariance" and cb.final_erasure  # type: ignore[attr-defined]
    robust_dd = callbacks["AttrCloak-DD covariance (gender, age) + anchor + calibrated means"][1]
    assert isinstance(robust_dd, AttrCloak) and robust_dd.dd_anchor == 1.0
    assert robust_dd.privacy_attributes == ["gender", "age"] and robust_dd.target == "parameters"
    for name in (
        "AttrCloak-DD covariance (gender, age) + anchor + two-sided per-class erasure",
        "AttrCloak-DF covariance + two-sided per-class erasure",
    ):
        cb = callbacks[name][1]
        assert isinstance(cb, AttrCloak) and cb.final_erasure and cb.erasure_expand
        assert cb.erasure_calibration == "class"
    assert robust_dd.erasure_calibration == "direction" and not robust_dd.erasure_expand
    assert robust_dd.covariance_null == 0
    for name in (
        "AttrCloak-DD covariance (gender, age) at the null + anchor + calibrated means",
        "AttrCloak-DF covariance at the null + calibrated means",
    ):
        cb = callbacks[name][1]
        assert isinstance(cb, AttrCloak) and cb.covariance_null == 8 and cb.final_erasure
    assert isinstance(callbacks["CalibratedErasure"][1], CalibratedErasure)
    assert not callbacks["Exact discriminant removal (calibrate false)"][1].calibrate  # type: ignore[attr-defined]


def test_ablation_configs_under_benchmark_results_build_their_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The configs that rerun issue 23's committed ablations (the spectral covariance band, the
    cross-fitted agreement) still parse and build callbacks with the options they measured."""
    monkeypatch.chdir(REPO)
    results = REPO / "benchmarks" / "results"
    spectral = load_table(results / "attrcloak_ml100k_spectral_band" / "config.yaml")
    assert "quadratic" in spectral.leakage.attackers and spectral.repeats == 3
    for row in spectral.rows:
        cb = row.build(None, None)
        assert isinstance(cb, AttrCloak) and cb.covariance_band == "spectrum"
        assert cb.covariance_null == 8 and cb.final_erasure
    crossfit = load_table(results / "attrcloak_ml100k_crossfit" / "config.yaml")
    built = {row.name: row.build(None, None) for row in crossfit.rows}
    assert len(built) == 5
    for cb in built.values():
        assert isinstance(cb, AttrCloak) and cb.privacy_moments == "crossfit" and cb.final_erasure
    best = built["DD crossfit P2 r64 S8"]
    assert isinstance(best, AttrCloak)
    assert (best.crossfit_parts, best.crossfit_directions, best.crossfit_splits) == (2, 64, 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: t["rows"][0].update(method="configs/method/attribute/nope.yaml"),
            "unknown method config",
        ),
        (lambda t: t["rows"][0].pop("name"), "needs a non-empty 'name'"),
        (lambda t: t["rows"][0].update(name="  "), "needs a non-empty 'name'"),
        (lambda t: t["rows"].append(dict(t["rows"][0])), "repeated row names"),
        (lambda t: t["rows"][0].update(name="Original"), "repeated row names"),
        (lambda t: t["rows"][0].update(mode="dd"), "mode must be one of"),
        (lambda t: t["rows"][0].update(mode="data_dependent"), "cannot run data_dependent"),
        (lambda t: t["rows"][0].update(init_args={"lrate": 0.1}), "cannot build callback"),
        (lambda t: t["rows"][0].update(init_args={"precision": "half"}), "cannot build callback"),
        (lambda t: t["rows"][0].update(epochs=0), "epochs must be an integer >= 1"),
        (lambda t: t["rows"][0].update(flavour="x"), "unknown keys ['flavour']"),
        (lambda t: t["rows"][0].update(overrides="--x=1"), "list of CLI overrides"),
        (lambda t: t["rows"][0].update(method=str(CONFIGS / "model" / "mf.yaml")), "exactly one"),
        (lambda t: t.update(rows=[]), "non-empty list"),
        (lambda t: t.update(repeats=0), "repeats must be an integer >= 1"),
        (lambda t: t.update(model="configs/model/nope.yaml"), "unknown model config"),
        (lambda t: t.update(mode_overrides={"online": []}), "mode_overrides"),
        (lambda t: t.update(epochs=3), "unknown keys ['epochs']"),
        (lambda t: t.update(leakage_attackers=["svm"]), "leakage_attackers: unknown ['svm']"),
        (lambda t: t.update(leakage_attackers="logreg"), "must be a list of names"),
        (lambda t: t.update(leakage_protocols=["holdout"]), "unknown ['holdout']"),
        (lambda t: t.update(leakage_protocols=[]), "leakage_protocols must not be empty"),
        (lambda t: t.update(permutations=-1), "permutations must be an integer >= 0"),
        (lambda t: t.update(leakage_folds=1), "leakage_folds must be an integer >= 2"),
        (
            lambda t: t.update(leakage_attackers=["logreg"], leakage_attacker_args={"mlp": {}}),
            "leakage_attacker_args for ['mlp']",
        ),
        (
            lambda t: t.update(leakage_attacker_args={"knn": {"ks": []}}),
            "leakage attacker 'knn'",
        ),
        (lambda t: t.update(export="yes"), "export must be true or false"),
    ],
)
def test_bad_table_configs_name_the_problem(tmp_path: Path, change: Any, message: str) -> None:
    table = _table([_row("AttrCloak-DF", "attrcloak_df.yaml", "data_free")])
    change(table)
    with pytest.raises(TableConfigError, match=None) as info:
        load_table(_write(tmp_path, table))
    assert message in str(info.value)


def test_a_row_defaults_to_its_method_configs_epochs(tmp_path: Path) -> None:
    spec = load_table(_write(tmp_path, _table([_row("U2U-R", "u2u_r.yaml", "data_free")])))
    assert spec.rows[0].epochs == 200  # configs/method/attribute/u2u_r.yaml's max_epochs


def test_run_level_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _table([_row("D2D-R", "d2d_r.yaml", "data_free")], overrides=["--a=1"]))
    spec = table_from_args(
        parse_args(
            [
                "--config",
                str(path),
                "--repeats",
                "2",
                "--seed",
                "5",
                "--override=--b=2",
                "--override=--c=3",
            ]
        )
    )
    # every repeated --override applies, after the YAML's (the last must not replace the rest)
    assert spec.seeds == [5, 6] and spec.overrides == ("--a=1", "--b=2", "--c=3")
    with pytest.raises(TableConfigError, match="--rows"):
        table_from_args(parse_args(["--config", str(path), "--rows", "U2U-R"]))
    with pytest.raises(SystemExit):
        parse_args(["--config", str(path), "--repeats", "0"])
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no flag restates a method hyperparameter any more
        parse_args(["--config", str(path), "--dd-lr", "0.1"])
