"""The table's leakage report and its resume: rendering from fake results, rows.jsonl, restart."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from lit_unlearn.methods.attribute.experiment import load_table, run_table
from lit_unlearn.methods.attribute.experiment import runner as runner_module
from lit_unlearn.methods.attribute.experiment.aggregate import (
    leakage_frame,
    leakage_summary,
    method_summary,
    utility_frame,
)
from lit_unlearn.methods.attribute.experiment.render import leakage_report, write_tables
from lit_unlearn.methods.attribute.experiment.runner import RowResult
from lit_unlearn.methods.attribute.experiment.store import ResultStore, fingerprint
from lit_unlearn.reporting.provenance import PROVENANCE_FIELDS, git_commit, provenance
from tests.conftest import CONFIGS

METHODS = CONFIGS / "method" / "attribute"
ENV = {
    "torch": "2.13.0",
    "threads": 1,
    "device": "cpu",
    "python": "3.11.7",
    "git_commit": "abc123",
    "machine": "CPU, 2 logical CPUs",
    "kernels": "AVX2, MKL_CBWR=unset",
    "date": "2026-12-01T00:00:00+00:00",
}


def _leak(attribute: str, attacker: str, protocol: str, bacc: float, auc: float) -> dict[str, Any]:
    classes = 2 if attribute == "gender" else 7
    chance = 1 / classes
    return {
        "attribute": attribute,
        "attacker": attacker,
        "protocol": protocol,
        "num_classes": classes,
        "n_users": 943 if protocol == "kfold" else 754,
        "balanced_accuracy": bacc,
        "auc": auc,
        "leakage": 2 * abs(auc - 0.5),
        "method_aware_balanced_accuracy": max(bacc, 2 * chance - bacc),
        "chance": chance,
        "n_permutations": 5,
        "null_leakage_mean": 0.02,
        "null_leakage_p95": 0.04,
        "null_balanced_accuracy_mean": chance,
        "null_balanced_accuracy_p95": chance + 0.02,
        "class_aucs": [1 - auc, auc],
    }


def _result(method: str, seed: int, ndcg: float, shift: float) -> RowResult:
    """A fake run: the worst cell is age/logreg/kfold (AUC 0.5 - shift: inverted)."""
    leakage = [
        _leak("gender", "logreg", "shadow", 0.51, 0.52),
        _leak("gender", "logreg", "kfold", 0.50, 0.49),
        _leak("age", "logreg", "shadow", 1 / 7 + 0.01, 0.51),
        _leak("age", "logreg", "kfold", 1 / 7 - shift, 0.5 - shift),
    ]
    audit = [
        {
            "attribute": attribute,
            "attacker": attacker,
            "accuracy": 0.6,
            "balanced_accuracy": 0.55,
            "auc": 0.56,
            "chance": 0.5,
            "majority_accuracy": 0.7,
            "n_train": 150,
            "n_val": 38,
            "n_test": 755,
        }
        for attribute in ("gender", "age")
        for attacker in ("mlp", "xgboost")
    ]
    return RowResult(
        method,
        seconds=0.0 if method == "Original" else 1.5,
        ranking={"test/sampled/ndcg@10": ndcg, "test/full/ndcg@10": ndcg / 4},
        audit=audit,
        seed=seed,
        leakage=leakage,
        provenance={**ENV, "threads": 1 + seed},
    )


def _fake_rows() -> list[RowResult]:
    rows = []
    for seed, (base, df, shift) in enumerate(((0.40, 0.38, 0.20), (0.42, 0.37, 0.30))):
        rows.append(_result("Original", seed, base, 0.0))
        rows.append(_result("AttrCloak-DF", seed, df, shift))
    return rows


def test_leakage_tables_from_fake_results() -> None:
    rows = _fake_rows()
    frame = leakage_frame(rows)
    assert len(frame) == 4 * 4
    df = frame[(frame.method == "AttrCloak-DF") & (frame.attribute == "age")]
    kfold = df[df.protocol == "kfold"].set_index("seed")
    assert kfold.loc[0, "leakage_above_null"] == pytest.approx(0.4 - 0.04)
    assert kfold.loc[1, "bacc_minus_chance"] == pytest.approx(-0.30)
    assert kfold.loc[1, "method_aware_minus_chance"] == pytest.approx(0.30)
    assert kfold.loc[0, "class_aucs"] == "0.7000;0.3000"

    cells = leakage_summary(frame)
    assert len(cells) == 2 * 4  # method x attribute x attacker x protocol
    cell = cells[
        (cells.method == "AttrCloak-DF") & (cells.attribute == "age") & (cells.protocol == "kfold")
    ].iloc[0]
    assert cell["seeds"] == 2
    assert cell["auc"] == pytest.approx(0.25)  # mean of 0.3 and 0.2
    assert cell["leakage"] == pytest.approx(0.5)
    assert cell["null_leakage_p95"] == pytest.approx(0.04)
    assert cell["leakage_above_null"] == pytest.approx(0.46)
    assert cell["max_leakage_above_null"] == pytest.approx(0.56)  # seed 1
    assert cell["bacc_minus_chance"] == pytest.approx(-0.25)

    methods = method_summary(cells, utility_frame(rows)).set_index("method")
    df_line = methods.loc["AttrCloak-DF"]
    assert df_line["worst_leakage_above_null"] == pytest.approx(0.46)
    assert df_line["worst_leakage_cell"] == "age/logreg/kfold"
    assert df_line["max_leakage_above_null"] == pytest.approx(0.56)
    assert df_line["worst_bacc_minus_chance"] == pytest.approx(-0.25)  # signed: below chance
    assert not df_line["within_target"]
    assert df_line["sampled/ndcg@10"] == pytest.approx(0.375)
    assert df_line["sampled/ndcg@10_change_pct"] == pytest.approx(100 * (0.375 - 0.41) / 0.41)
    assert df_line["full/ndcg@10"] == pytest.approx(0.375 / 4)
    original = methods.loc["Original"]
    assert original["sampled/ndcg@10_change_pct"] == 0.0
    # Original: worst cell gender/logreg/shadow, leakage 0.04 - 0.04 = 0 and BAcc 0.01 off
    assert original["worst_leakage_above_null"] == pytest.approx(0.0, abs=1e-12)
    assert bool(original["within_target"])


def test_leakage_markdown_names_its_protocol() -> None:
    rows = _fake_rows()
    context = {
        "attackers": ["logreg", "mlp", "xgboost", "knn"],
        "protocols": ["shadow", "kfold"],
        "permutations": 5,
        "folds": 5,
        "seeds": [0, 1],
        "split": "leave_one_out",
        "ranking_protocols": ["sampled", "full"],
        "eval_negatives": 99,
        "shadow_fraction": 0.2,
        "users": 943,
    }
    text, cells, methods = leakage_report(
        leakage_frame(rows), utility_frame(rows), context, pd.DataFrame([ENV])
    )
    print(text)  # the sample in the report
    assert text.startswith("# Attribute leakage")
    for words in (
        "attackers logreg, mlp, xgboost, knn",
        "`shadow` (attackers train on the 20% shadow users",
        "stratified 5-fold cross-validation",
        "5 label permutation(s)",
        "seeds [0, 1]",
        "split `leave_one_out` on 943 users",
        "`sampled` (the test item against 99 sampled negatives)",
        "`full` (against every item",
        "## Provenance",
        "- threads: 1",
    ):
        assert words in text, words
    line = "| AttrCloak-DF | 0.460 | age/logreg/kfold | 0.560 | -0.250 | age/logreg/kfold | no |"
    assert line in text
    assert "| 0.375 | -8.5 | 0.094 | -8.5 |" in text
    cell_line = "| AttrCloak-DF | age | logreg | kfold | -0.250 | 0.250 | 0.250 | 0.500 | 0.040 |"
    assert cell_line in text
    assert len(cells) == 8 and list(methods["method"]) == ["Original", "AttrCloak-DF"]
    # without a context the header says what the results say
    bare, _, _ = leakage_report(leakage_frame(rows), utility_frame(rows))
    assert "attackers logreg;" in bare and "seeds [0, 1]" in bare and "not recorded" in bare


def test_write_tables_with_provenance(tmp_path: Path) -> None:
    rows = _fake_rows()
    write_tables(rows, tmp_path)
    leakage = pd.read_csv(tmp_path / "leakage.csv")
    assert len(leakage) == 16 and set(PROVENANCE_FIELDS) <= set(leakage.columns)
    assert sorted(set(leakage["threads"])) == [1, 2]  # each run's own
    methods = pd.read_csv(tmp_path / "leakage_methods.csv")
    assert list(methods["threads"]) == ["1; 2", "1; 2"]  # the seeds ran with 1 and 2 threads
    for name in ("privacy.csv", "utility.csv", "leakage_cells.csv"):
        assert (tmp_path / name).is_file()
    assert "- threads: 1; 2" in (tmp_path / "comparison.md").read_text()


def test_write_tables_without_leakage(tmp_path: Path) -> None:
    """A table run with ``leakage_attackers: []`` still renders (the leakage tables empty)."""
    rows = [_result("Original", 0, 0.4, 0.0), _result("U2U-R", 0, 0.3, 0.1)]
    for r in rows:
        r.leakage = []
    write_tables(rows, tmp_path)
    assert "No leakage audit" in (tmp_path / "leakage.md").read_text()
    assert pd.read_csv(tmp_path / "leakage_methods.csv")["worst_leakage_cell"].isna().all()


def test_result_store_round_trip_and_cut_lines(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    assert store.records() == [] and store.done() == {}
    first, second = _fake_rows()[:2]
    first.fingerprint, second.fingerprint = "a", "b"
    store.append(first.to_record())
    store.append(second.to_record())
    back = RowResult.from_record(store.done()[("Original", 0, "a")])
    assert back == first
    # a kill mid-line: the half line is not read, and is cut before the next append
    with store.path.open("a") as f:
        f.write('{"method": "U2U-R", "se')
    assert len(store.records()) == 2
    again = _result("Original", 0, 0.5, 0.0)
    again.fingerprint = "a"
    store.append(again.to_record())
    assert len(store.records()) == 3  # the cut line is gone, the new one whole
    assert store.done()[("Original", 0, "a")]["ranking"]["test/sampled/ndcg@10"] == 0.5  # last wins
    # a damaged line inside the file is an error, not a silent skip
    lines = store.path.read_text().splitlines()
    store.path.write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="line 2 is damaged"):
        store.records()
    store.clear()
    assert store.records() == []


def test_fingerprint_ignores_key_order() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_provenance_fields() -> None:
    env = provenance("cpu")
    assert tuple(env) == PROVENANCE_FIELDS
    assert env["device"] == "cpu" and isinstance(env["threads"], int)
    assert env["kernels"].endswith(f"MKL_CBWR={os.environ.get('MKL_CBWR', 'unset')}")
    assert env["git_commit"] == "unknown" or len(env["git_commit"].removesuffix("-dirty")) == 40
    assert git_commit("/") == "unknown"  # no checkout there
    json.dumps(env)


def test_table_resumes_after_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished (row, seed) runs are read back; a cut line and an edited row run again."""
    out = tmp_path / "out"
    row: dict[str, Any] = {
        "name": "U2U-R",
        "method": str(METHODS / "u2u_r.yaml"),
        "mode": "data_free",
        "epochs": 2,
    }
    table: dict[str, Any] = {
        "trainer": str(CONFIGS / "trainer" / "cpu.yaml"),
        "data": str(CONFIGS / "data" / "synthetic.yaml"),
        "model": str(CONFIGS / "model" / "mf.yaml"),
        "overrides": ["--data.init_args.source.init_args.num_users=200"],
        "checkpoint": None,
        "train_epochs": 1,
        "repeats": 2,
        "out": str(out),
        "mode_overrides": {"data_free": ["--data.init_args.batch_size=1000000"]},
        "leakage_attackers": ["logreg"],
        "leakage_protocols": ["kfold"],
        "permutations": 1,
        "rows": [row],
    }
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(table))
    calls: list[tuple[str, int]] = []
    real_run_row = runner_module.run_row

    def counting(row: Any, checkpoint: Any, spec: Any, data: Any, seed: int) -> Any:
        calls.append((row.name, seed))
        return real_run_row(row, checkpoint, spec, data, seed)

    monkeypatch.setattr(runner_module, "run_row", counting)
    first = run_table(load_table(path))
    assert calls == [("U2U-R", 0), ("U2U-R", 1)] and first.resumed == 0
    store = ResultStore(out)
    assert [(r["method"], r["seed"]) for r in store.records()] == [
        ("Original", 0), ("Original", 1), ("U2U-R", 0), ("U2U-R", 1),
    ]  # fmt: skip
    assert (out / "exports/seed0/U2U-R.npz").is_file() and (out / "original.ckpt").is_file()

    # killed while writing the last line: only that run is repeated, from the same checkpoint
    data = store.path.read_bytes()
    store.path.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1 + 30])
    calls.clear()
    again = run_table(load_table(path))
    assert calls == [("U2U-R", 1)] and again.resumed == 3
    assert len(store.records()) == 4
    # same numbers as the first run for what was read back; every result present once
    assert [(r.method, r.seed) for r in again.rows] == [(r.method, r.seed) for r in first.rows]
    assert again.rows[2].ranking == first.rows[2].ranking
    assert "U2U-R" in again.representations  # from its export

    calls.clear()
    assert run_table(load_table(path)).resumed == 4 and calls == []

    # an edited row is another experiment: run again (the old lines stay, unused)
    row["epochs"] = 3
    path.write_text(yaml.safe_dump(table))
    edited = run_table(load_table(path))
    assert calls == [("U2U-R", 0), ("U2U-R", 1)] and edited.resumed == 2
    assert len(store.records()) == 6

    calls.clear()
    fresh = run_table(load_table(path), fresh=True)
    assert calls == [("U2U-R", 0), ("U2U-R", 1)] and fresh.resumed == 0
    assert len(store.records()) == 4


def test_a_class_smaller_than_the_folds_fails_before_training(tmp_path: Path) -> None:
    table = {
        "trainer": str(CONFIGS / "trainer" / "cpu.yaml"),
        "data": str(CONFIGS / "data" / "synthetic.yaml"),
        "model": str(CONFIGS / "model" / "mf.yaml"),
        "overrides": ["--data.init_args.source.init_args.num_users=150"],  # 3 users under 18
        "out": str(tmp_path / "out"),
        "rows": [{"name": "U2U-R", "method": str(METHODS / "u2u_r.yaml"), "mode": "data_free"}],
    }
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(table))
    with pytest.raises(ValueError, match=r"'age'.*fewer users than the 5 folds.*leakage_folds"):
        run_table(load_table(path))
    assert not (tmp_path / "out" / "original.ckpt").exists()
