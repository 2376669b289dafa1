"""The AltEraser comparison's output directory: rows as they finish, resume after a kill,
exports an outside audit can check without re-running, bootstrap intervals, provenance."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lit_unlearn.methods.interaction.experiment import (
    ResumeError,
    RunStore,
    bootstrap_ci,
    confidence_table,
    load_experiment,
    main,
    runner,
)
from lit_unlearn.methods.interaction.experiment.store import read_rows
from tests.conftest import CONFIGS

TABLE = CONFIGS / "experiment" / "interaction" / "alteraser_ml100k_table.yaml"
METHODS = ["--methods", "Warm-Start", "AltEraser[AH-Newton]"]
ROWS = ["Original", "Retrain", "Warm-Start", "AltEraser[AH-Newton]"]
# Differ between two runs of the same rows: times, and the command (its --out).
UNSTABLE = {"seconds", "solver_seconds", "command"}


def _tiny(folder: Path, **changes: Any) -> Path:
    """The shipped table on the synthetic set: 8 forgetting users, d = 8, 3 epochs, 2 passes."""
    spec: dict[str, Any] = yaml.safe_load(TABLE.read_text())
    spec.update(data="configs/data/synthetic_forgetting.yaml", num_forget_users=8, repeats=1)
    spec["training"]["max_epochs"] = 3
    spec["overrides"] = ["--model.init_args.model.init_args.embedding_dim=8"]
    for row in spec["rows"]:
        if row["name"].startswith("AltEraser"):
            row["init_args"] = {"lit_unlearn.callbacks.AltEraser": {"max_passes": 2}}
    spec.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One uninterrupted run (Original, Retrain, Warm-Start, AH-Newton) and its flags."""
    folder = tmp_path_factory.mktemp("whole")
    args = ["--config", str(_tiny(folder)), *METHODS]
    main([*args, f"--out={folder / 'out'}"])
    return folder / "out", args


class _KilledError(Exception):
    """Stands for a kill in the middle of a run."""


def _stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in UNSTABLE} for r in rows]


def test_killed_run_resumes_to_the_rows_of_an_uninterrupted_run(
    whole: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, args = whole
    out = tmp_path / "out"
    fit_row, fit = runner._fit_row, runner._fit
    started: list[str] = []

    def dying(*a: Any, **kw: Any) -> Any:
        started.append(a[1].name)
        if a[1].name == "AltEraser[AH-Newton]":
            raise _KilledError
        return fit_row(*a, **kw)

    monkeypatch.setattr(runner, "_fit_row", dying)
    with pytest.raises(_KilledError):
        main([*args, f"--out={out}"])
    # Every finished row is on disk at once (Retrain first: the others' RBO needs its lists).
    assert [r["method"] for r in read_rows(out / "rows.jsonl")] == [*ROWS[1::-1], "Warm-Start"]
    assert not (out / "report.md").exists()
    checkpoint = out / "checkpoints" / "original_seed0.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    with (out / "rows.jsonl").open("a") as f:  # killed in the middle of writing a line
        f.write('{"seed": 0, "method": "AltEraser[AH-New')

    trained: list[str] = []
    monkeypatch.setattr(runner, "_fit_row", fit_row)

    def counting(*a: Any, **kw: Any) -> Any:
        trained.append("fit")
        return fit(*a, **kw)

    monkeypatch.setattr(runner, "_fit", counting)
    main([*args, f"--out={out}"])
    # Only the missing row trained; the Original came from its checkpoint, untouched.
    assert trained == ["fit"] and checkpoint.stat().st_mtime_ns == stamp
    resumed, uninterrupted = read_rows(out / "rows.jsonl"), read_rows(reference / "rows.jsonl")
    assert _stable(resumed) == _stable(uninterrupted)
    # The report is the same but for the times (Table 5 on); the intervals too, to the last bit.
    tables = [(d / "report.md").read_text().split("## Table 5")[0] for d in (out, reference)]
    assert tables[0] == tables[1] and "## Table 4b" in tables[0]
    summaries = [pd.read_csv(d / "summary.csv", index_col=0) for d in (out, reference)]
    quality = [c for c in summaries[0] if "@" in str(c) or c in ("repredict", "objective")]
    pd.testing.assert_frame_equal(summaries[0][quality], summaries[1][quality])
    # A finished run started again trains nothing and rewrites the same rows.
    monkeypatch.setattr(runner, "_fit", None)
    main([*args, f"--out={out}"])
    assert read_rows(out / "rows.jsonl") == resumed


def test_another_config_is_refused_and_fresh_starts_over(tmp_path: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text((CONFIGS / "data" / "synthetic_forgetting.yaml").read_text())
    path = _tiny(tmp_path, data=str(data))
    out = tmp_path / "out"
    store = RunStore.open(load_experiment(path, out=str(out)))
    store.append({"seed": 0, "method": "Retrain", "seconds": 1.0})
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "original_seed0.ckpt").write_bytes(b"x")
    same = RunStore.open(load_experiment(path, out=str(out)))
    assert same.done(0) == {"Retrain": {"seed": 0, "method": "Retrain", "seconds": 1.0}}
    # Another flag or an edited config file: refused before anything trains, with the reason.
    with pytest.raises(SystemExit, match=r"differs in \['overrides'\].*--fresh"):
        main(["--config", str(path), f"--out={out}", "--override=--data.init_args.seed=3"])
    data.write_text(data.read_text().replace("num_users: 600", "num_users: 500"))
    with pytest.raises(ResumeError, match=r"differs in \['data'\]"):
        RunStore.open(load_experiment(path, out=str(out)))
    fresh = RunStore.open(load_experiment(path, out=str(out)), fresh=True)
    assert fresh.rows() == [] and not (out / "checkpoints" / "original_seed0.ckpt").exists()
    assert RunStore.open(load_experiment(path, out=str(out))).rows() == []  # the new record
    # Rows without a recorded config belong to nobody: refused too.
    (out / "run.json").unlink()
    fresh.append({"seed": 0, "method": "Retrain"})
    with pytest.raises(ResumeError, match="cannot tell which config"):
        RunStore.open(load_experiment(path, out=str(out)))


def test_a_line_cut_short_by_a_kill_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b": [0.1')
    assert read_rows(path) == [{"a": 1}, {"a": 2}]
    read_rows(path, repair=True)
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ResumeError, match="line 2 is damaged"):
        read_rows(path)


def _pairs(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str)


def test_exports_let_an_outside_audit_recompute_the_rows(whole: tuple[Path, list[str]]) -> None:
    """From the exported files alone (raw ids, numpy): every row's top-50 lists, re-predict
    score and per-user Recall@10 come out as the run recorded them."""
    out, _ = whole
    seed = out / "exports" / "seed0"
    index = json.loads((seed / "index.json").read_text())
    user, item = ({raw: k for k, raw in enumerate(index[key])} for key in ("user_ids", "item_ids"))
    request = json.loads((seed / "request.json").read_text())
    forget, remaining = _pairs(seed / "forget_pairs.csv"), _pairs(seed / "remaining_pairs.csv")
    test = _pairs(seed / "test_pairs.csv")
    assert request["scenario"] == "noise" and len(request["forget_users"]) == 8
    assert set(forget["user_id"]) <= set(request["forget_users"]) and len(forget)
    assert set(request["evaluated_users"]) == set(test["user_id"])
    rows = read_rows(out / "rows.jsonl")
    assert sorted(r["method"] for r in rows) == sorted(ROWS)
    for row in rows:
        folder = out / row["export"]
        arrays = np.load(folder / "embeddings.npz")
        assert list(arrays["user_ids"]) == index["user_ids"]
        p, q, h = arrays["user_embedding.weight"], arrays["item_embedding.weight"], arrays["h"]
        assert p.shape == (len(user), 8) and q.shape == (len(item), 8)
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)
        np.testing.assert_array_equal(state["state_dict"]["model.h"].numpy(), h)
        # Re-predict: the mean score on the deleted pairs.
        u = forget["user_id"].map(user).to_numpy()
        v = forget["item_id"].map(item).to_numpy()
        assert np.mean(((p[u] * h) * q[v]).sum(1)) == pytest.approx(row["repredict"], abs=1e-6)
        lists = _pairs(folder / "topk.csv")
        assert list(dict.fromkeys(lists["user_id"])) == request["forget_users"]
        recall = {}
        for raw in request["forget_users"]:
            scores = (p[user[raw]] * h) @ q.T
            seen = remaining.loc[remaining["user_id"] == raw, "item_id"].map(item).to_numpy()
            scores[seen] = -np.inf
            top = [index["item_ids"][i] for i in np.argsort(-scores, kind="stable")[:50]]
            assert lists.loc[lists["user_id"] == raw, "item_id"].tolist() == top
            targets = set(test.loc[test["user_id"] == raw, "item_id"])
            if targets:
                recall[raw] = len(targets & set(top[:10])) / len(targets)
        per_user = row["per_user"]
        assert per_user["user"] == request["evaluated_users"]
        assert per_user["recall@10"] == pytest.approx([recall[x] for x in per_user["user"]])
        assert np.mean(per_user["recall@10"]) == pytest.approx(row["recall@10"])


def test_every_results_file_names_its_environment(whole: tuple[Path, list[str]]) -> None:
    out, _ = whole
    threads, version = torch.get_num_threads(), torch.__version__
    results = pd.read_csv(out / "results.csv")
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    for frame in (results, summary):
        assert (frame["torch"] == version).all() and (frame["threads"] == threads).all()
        assert (frame["device"] == "cpu").all() and frame["machine"].str.contains("CPU").all()
        assert frame["command"].str.contains("--methods Warm-Start").all()
    assert "per_user" not in results
    doc = json.loads((out / "summary.json").read_text())
    (env,) = doc["environment"]
    assert env == {
        "torch": version,
        "threads": threads,
        "device": "cpu",
        "machine": results["machine"][0],
    }
    assert doc["commands"] == [results["command"][0]] and doc["bootstrap"]["resamples"] == 2000
    assert set(doc["methods"]) == set(ROWS)
    assert doc["methods"]["Retrain"]["d_recall@10"] == 0.0
    report = (out / "report.md").read_text()
    assert f"- torch: `{version}`" in report and f"- torch threads: `{threads}`" in report
    assert f"`{results['command'][0]}`" in report
    node = platform.node()
    if len(node) > 3:  # no host name anywhere
        for text in (report, (out / "results.csv").read_text(), json.dumps(doc)):
            assert node not in text


def test_bootstrap_of_a_constant_is_degenerate_and_covers_the_mean() -> None:
    low, high = bootstrap_ci([np.full(64, 0.25), np.full(10, 0.25)])
    assert low == high == pytest.approx(0.25)
    rng = np.random.default_rng(1)
    strata = [rng.binomial(1, 0.2, size=64) / rng.integers(1, 3, size=64) for _ in range(5)]
    low, high = bootstrap_ci(strata)
    point = np.mean([s.mean() for s in strata])
    assert low < point < high and high - low < 0.2
    assert bootstrap_ci(strata) == (low, high)  # a fixed generator seed
    assert bootstrap_ci(strata, level=0.5)[1] - bootstrap_ci(strata, level=0.5)[0] < high - low
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([np.array([])])


def _row(seed: int, method: str, recall: list[float], users: list[str]) -> dict[str, Any]:
    quality = {f"{m}@{k}": 0.5 for m in ("rbo", "recall", "ndcg") for k in (10, 20, 50)}
    return {
        "seed": seed,
        "method": method,
        "repredict": 0.1,
        **quality,
        "recall@10": float(np.mean(recall)),
        "seconds": 1.0,
        "epochs": 1.0,
        "per_user": {"user": users, "recall@10": recall},
    }


def test_paired_difference_is_zero_for_identical_values_and_refuses_other_users() -> None:
    users = ["1", "2", "3", "4"]
    rows = [
        _row(s, m, [0.0, 0.5, 1.0, 0.5], users)
        for s in (0, 1)
        for m in ("Retrain", "AltEraser[AH-Newton]")
    ]
    rows.append(_row(0, "Better", [1.0, 1.0, 1.0, 1.0], users))
    table = confidence_table(rows, metrics=["recall@10"])
    same = table.loc["AltEraser[AH-Newton]"]
    assert (same["d_recall@10"], same["d_recall@10_ci_low"], same["d_recall@10_ci_high"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert same["recall@10_ci_low"] < 0.5 < same["recall@10_ci_high"]
    better = table.loc["Better"]
    assert better["d_recall@10"] == 0.5 and better["d_recall@10_ci_low"] > 0.0
    with pytest.raises(ValueError, match="other users than Retrain"):
        confidence_table([*rows, _row(1, "Better", [1.0] * 4, ["1", "2", "3", "9"])])


def test_merge_of_rows_jsonl_keeps_the_intervals(tmp_path: Path) -> None:
    users = [str(u) for u in range(6)]
    for name, seeds in (("a", (0, 1)), ("b", (2,))):
        with (tmp_path / f"{name}.jsonl").open("w") as f:
            for seed in seeds:
                for method, values in (
                    ("Original", [0.0, 0.0, 0.5, 0.0, 1.0, 0.0]),
                    ("Retrain", [0.0, 1.0, 0.5, 0.0, 1.0, 0.0]),
                    ("AltEraser[AH-Newton]", [0.0, 1.0, 0.5, 1.0, 1.0, 0.0]),
                ):
                    f.write(json.dumps(_row(seed, method, values, users)) + "\n")
    out = tmp_path / "merged"
    args = ["--config", str(TABLE), f"--out={out}"]
    main(["--merge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), *args])
    report = (out / "report.md").read_text()
    assert "| AltEraser[AH-Newton] | 0.583 [" in report and "ΔRecall@10 vs Retrain [CI]" in report
    assert "| Retrain | 0.417 [0.222, 0.639] | +0.000 [+0.000, +0.000] | 0.500 | - |" in report
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert summary.loc["AltEraser[AH-Newton]", "d_recall@10"] == pytest.approx(1 / 6)
    assert (summary["torch"] == "not recorded").all()  # these rows never said
    # results.csv files hold no per-user values: the report says so instead of intervals.
    main(["--merge", str(out / "results.csv"), *[a.replace("merged", "csv") for a in args]])
    assert "no intervals" in (tmp_path / "csv" / "report.md").read_text()
