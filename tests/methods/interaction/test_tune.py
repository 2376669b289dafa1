"""The ENMF tuner: grid parsing, choosing on the validation split only, files and resume."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_unlearn.datamodules import ForgettingData, Synthetic
from lit_unlearn.methods.interaction import tune
from lit_unlearn.methods.interaction.experiment import load_experiment
from lit_unlearn.methods.interaction.tune import (
    MAX_EPOCHS,
    STOP,
    TuneConfig,
    TuneError,
    choose,
    grid_points,
    main,
    override_lines,
    parse_grid,
)
from lit_unlearn.tasks import RecommenderTask
from tests.conftest import CONFIGS

MODEL = str(CONFIGS / "model" / "enmf.yaml")
TABLE = CONFIGS / "experiment" / "interaction" / "alteraser_ml100k_table.yaml"
SMALL = "--override=--model.init_args.model.init_args.embedding_dim=8"
DATA_YAML = """\
data:
  class_path: lit_unlearn.datamodules.ForgettingData
  init_args:
    source:
      class_path: lit_unlearn.datamodules.Synthetic
      init_args: {num_users: 60, num_items: 40, interactions_per_user: 10, seed: 0}
    scenario: noise
    num_forget_users: 4
    train_on: all
    protocols: [full]
    batch_size: 256
    seed: 0
"""


@pytest.fixture
def data_yaml(tmp_path: Path) -> str:
    path = tmp_path / "data.yaml"
    path.write_text(DATA_YAML)
    return str(path)


@pytest.fixture
def no_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any use of the test split fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the tuner touched the test split")

    monkeypatch.setattr(ForgettingData, "test_dataloader", refuse)
    monkeypatch.setattr(RecommenderTask, "test_step", refuse)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_2x1_grid_writes_both_rows_and_picks_the_best(
    data_yaml: str, tmp_path: Path, no_test_split: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tune"
    argv = [
        "--data", data_yaml, "--model", MODEL,
        "--grid", "negative_weight=0.1,0.5", "--grid", "dropout=0.0",
        "--max-epochs", "2", "--out", str(out), SMALL,
    ]  # fmt: skip
    result = main(argv)
    rows = _rows(out / "results.csv")
    assert [(r["negative_weight"], r["dropout"]) for r in rows] == [("0.1", "0.0"), ("0.5", "0.0")]
    assert list(rows[0]) == [
        "negative_weight", "dropout", "val_recall@10", "val_ndcg@10",
        "epochs", "seconds", "train_loss", "error",
    ]  # fmt: skip
    assert all(r["epochs"] == "2" and r["error"] == "" for r in rows)
    ndcg = [float(r["val_ndcg@10"]) for r in rows]
    assert all(0 < v <= 1 for v in ndcg)
    best = max(range(2), key=lambda i: (ndcg[i], -i))
    assert result.best is not None and result.best["negative_weight"] == [0.1, 0.5][best]
    printed = capsys.readouterr().out
    chosen = override_lines({"negative_weight": [0.1, 0.5][best], "dropout": 0.0})
    assert all(f"  - {line}" in printed for line in chosen)
    assert f"negative_weight: {[0.1, 0.5][best]}" in printed
    report = (out / "report.md").read_text()
    for phrase in (
        "full ranking over every item outside the user's training items",
        "The test split is never evaluated",
        "validation 0.1",
        "seed 0",
        f"torch {torch.__version__}",
        "threads",
        "**yes**",
        "`regime_warning`",  # 60 x 40 with ~8 pairs per user is far from MovieLens
    ):
        assert phrase in report, phrase

    # A rerun with the same settings keeps the rows (nothing trains); other settings are refused.
    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished point was trained again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tune, "_fit", no_training)
        again = main(argv)
    assert again.best is not None and again.best["negative_weight"] == [0.1, 0.5][best]
    assert len(_rows(out / "results.csv")) == 2
    with pytest.raises(SystemExit):
        main([*argv, "--seed", "1"])
    assert "holds a tuning run of other settings" in capsys.readouterr().err


def _fake_training(monkeypatch: pytest.MonkeyPatch, metrics: dict[float, dict[str, float]]) -> None:
    """No training; the validation loop returns ``metrics[c0]`` (and a test metric that would
    pick the other point, which the tuner must not see)."""

    def fit(task: RecommenderTask, data: ForgettingData, max_epochs: int) -> Any:
        return tune._Fit(seconds=0.0, epochs=1, device=torch.device("cpu"), train_loss=0.0)

    def validate(task: RecommenderTask, data: ForgettingData) -> dict[str, float]:
        return dict(metrics[float(getattr(task.model, "negative_weight"))])  # noqa: B009

    monkeypatch.setattr(tune, "_fit", fit)
    monkeypatch.setattr(tune, "_validate", validate)


@pytest.mark.parametrize(("metric", "chosen"), [("ndcg@10", 0.1), ("recall@10", 0.5)])
def test_the_choice_follows_the_selected_validation_metric_only(
    data_yaml: str,
    tmp_path: Path,
    no_test_split: None,
    monkeypatch: pytest.MonkeyPatch,
    metric: str,
    chosen: float,
) -> None:
    _fake_training(
        monkeypatch,
        {
            0.1: {"recall@10": 0.20, "ndcg@10": 0.30},
            0.5: {"recall@10": 0.25, "ndcg@10": 0.10},
        },
    )
    config = TuneConfig(
        data=data_yaml, model=MODEL, grid={"negative_weight": (0.1, 0.5)},
        out=str(tmp_path / metric), metric=metric,
        overrides=("model.init_args.model.init_args.embedding_dim=8",),
    )  # fmt: skip
    result = tune.run(config, log=lambda line: None)
    assert result.best is not None and result.best["negative_weight"] == chosen
    assert f"chosen by val_{metric}" in result.text


def test_choose_skips_failed_rows_and_keeps_the_first_of_ties() -> None:
    rows: list[dict[str, Any]] = [
        {"c": 0, "val_ndcg@10": 0.9, "error": "non-finite training loss"},
        {"c": 1, "val_ndcg@10": math.nan, "error": ""},
        {"c": 2, "val_ndcg@10": 0.4, "error": ""},
        {"c": 3, "val_ndcg@10": 0.4, "error": ""},
        {"c": 4, "val_ndcg@10": 0.3, "error": "", "test_ndcg@10": 1.0},
    ]
    best = choose(rows, "ndcg@10")
    assert best is not None and best["c"] == 2
    assert choose(rows[:2], "ndcg@10") is None


def test_grid_parsing_types_values_and_orders_points() -> None:
    grid = parse_grid(["negative_weight=0.05, 0.5", "dropout=0,0.7", "embedding_dim=8"])
    assert grid == {"negative_weight": (0.05, 0.5), "dropout": (0.0, 0.7), "embedding_dim": (8,)}
    assert isinstance(grid["embedding_dim"][0], int)
    points = grid_points(grid)
    assert points[:2] == [
        {"negative_weight": 0.05, "dropout": 0.0, "embedding_dim": 8},
        {"negative_weight": 0.05, "dropout": 0.7, "embedding_dim": 8},
    ]
    assert len(points) == 4
    assert override_lines(points[0]) == [
        "--model.init_args.model.init_args.negative_weight=0.05",
        "--model.init_args.model.init_args.dropout=0.0",
        "--model.init_args.model.init_args.embedding_dim=8",
    ]


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        ([], "at least one --grid"),
        (["lr=0.1"], r"unknown grid key 'lr': not an ENMF init argument; one of \["),
        (["num_users=5"], "unknown grid key 'num_users'"),
        (["dropout"], "must be KEY=V1,V2"),
        (["=0.1"], "must be KEY=V1,V2"),
        (["dropout="], "empty value"),
        (["dropout=0.1,,0.3"], "empty value"),
        (["dropout=abc"], "'abc' is not a number"),
        (["dropout=nan"], "not a finite number"),
        (["embedding_dim=8.5"], "'8.5' is not an integer"),
        (["dropout=0.1", "dropout=0.2"], "given twice"),
        (["dropout=0.1,0.10"], "repeats a value"),
        (["dropout=1.0"], "ENMF refuses 1.0"),
        (["negative_weight=1.5"], "ENMF refuses 1.5"),
    ],
)
def test_bad_grids_raise(specs: list[str], match: str) -> None:
    with pytest.raises(TuneError, match=match):
        parse_grid(specs)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"val_ratio": 0.0}, r"val ratio must be in \(0, 1\)"),
        ({"val_ratio": 1.0}, r"val ratio must be in \(0, 1\)"),
        ({"val_ratio": math.nan}, r"val ratio must be in \(0, 1\)"),
        ({"max_epochs": 0}, "max epochs must be >= 1"),
        ({"metric": "auc@10"}, "metric must be hr@k, recall@k or ndcg@k"),
        ({"grid": {}}, "the grid is empty"),
        ({"grid": {"dropout": ()}}, "has no values"),
        ({"grid": {"lr": (0.1,)}}, "unknown grid key 'lr'"),
        ({"overrides": ("--data.init_args.train_on=remaining",)}, "sets a value the tuner sets"),
        ({"overrides": ("data.init_args.seed=3",)}, "sets a value the tuner sets"),
        ({"overrides": ("--model.init_args.model.init_args.dropout=0.5",)}, "tuner sets"),
    ],
)
def test_bad_settings_raise(change: dict[str, Any], match: str) -> None:
    settings: dict[str, Any] = {
        "data": "d.yaml", "model": MODEL, "grid": {"dropout": (0.0, 0.7)}, "out": "x",
    }  # fmt: skip
    with pytest.raises(TuneError, match=match):
        TuneConfig(**{**settings, **change})


def test_the_command_line_reports_bad_inputs_as_usage_errors(
    data_yaml: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--data", data_yaml, "--out", str(tmp_path / "o")]
    for extra, message in (
        (["--grid", "lr=0.1"], "unknown grid key 'lr'"),
        (["--grid", "dropout=0.1", "--val-ratio", "1.5"], "val ratio must be in (0, 1)"),
        (["--grid", "dropout=0.1", "--val-ratio", "0.3"], "train + val must be <= 1"),
        ([], "at least one --grid"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, *extra])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.csv").exists()


def test_the_validation_split_keeps_the_comparisons_training_pairs_and_request() -> None:
    """Carved from the held-out part: D_a, D_f and the training pairs are the comparison's."""

    def data(val_ratio: float) -> ForgettingData:
        source = Synthetic(num_users=60, num_items=40, interactions_per_user=10, seed=0)
        return ForgettingData(source, num_forget_users=4, val_ratio=val_ratio, seed=3)

    plain, tuned = data(0.0), data(0.1)
    assert torch.equal(plain.original_pairs, tuned.original_pairs)
    assert torch.equal(plain.forget_pairs, tuned.forget_pairs)
    assert len(plain.split.val) == 0 and len(tuned.split.val) > 0
    held_out = {tuple(p) for p in plain.split.test.tolist()}
    val, test = {tuple(p) for p in tuned.split.val.tolist()}, tuned.split.test.tolist()
    assert val <= held_out and val.isdisjoint(tuple(p) for p in test)


def test_the_stop_rule_and_budget_are_the_comparisons() -> None:
    table = load_experiment(TABLE)
    assert table.stop["class_path"] == "lit_unlearn.callbacks.RelativeEarlyStopping"
    assert table.stop["init_args"] == STOP
    assert table.max_epochs == MAX_EPOCHS
