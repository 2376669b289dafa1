"""Choose ENMF's ``c0`` and dropout (any ENMF init argument) on a validation split (issue 24).

``configs/model/enmf.yaml`` (c0 = 0.5, dropout = 0.7) is tuned for MovieLens; on sparser data
(:func:`lit_unlearn.models.enmf.regime_warning`) choose them here::

    python -m lit_unlearn.methods.interaction.tune \\
        --data configs/data/synthetic_longtail.yaml --model configs/model/enmf.yaml \\
        --grid negative_weight=0.02,0.05,0.1,0.2,0.5 --grid dropout=0.0,0.3,0.7 \\
        --out runs/enmf_tuning_longtail

Protocol, for every grid point (the product of the ``--grid`` values, in the order given):

* model and data are built exactly as the AltEraser comparison builds its Original row
  (:func:`lit_unlearn.runs.cli_objects`, i.e. ``lit-unlearn fit --config <data> --config
  <model>``, ``seed_everything(seed)`` first) with ``--data.init_args.seed=<seed>``,
  ``--data.init_args.train_on=all`` (``D_a``), ``--data.init_args.val_ratio=<val ratio>`` and
  ``--model.init_args.model.init_args.<key>=<value>`` for the point;
* the per-user split keeps the data config's ``train_ratio`` for training and carves the
  validation pairs out of the held-out part (``random_ratio``: the training pairs, and so
  ``D_a`` and the forgetting request, are the comparison's for the same seed);
* training stops as the comparison's does (:data:`STOP`: ``RelativeEarlyStopping`` on
  ``train/loss_epoch``, rel_delta 1e-4, patience 10, within ``--max-epochs``);
* the validation split is then evaluated by the task's own validation loop: full ranking over
  every item outside the user's training items, the user's validation items as targets.

The selection metric (default :data:`DEFAULT_METRIC`, val NDCG@10: position-aware, so it
separates points that Recall@10 ties when users hold one or two validation items, as on sparse
data) is maximised; ties go to the earlier grid point. The test split is never evaluated.
``results.csv`` gets each point's row as soon as it is done (a killed tuner keeps them, and a
rerun with the same settings resumes), ``report.md`` is rewritten after each point.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import math
import re
import shlex
import sys
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Timer

from lit_unlearn.datamodules.forgetting_data import ForgettingData
from lit_unlearn.datamodules.paths import require_path
from lit_unlearn.methods.interaction.experiment.provenance import environment
from lit_unlearn.methods.interaction.plateau import RelativeEarlyStopping
from lit_unlearn.models.enmf import ENMF, ENMFRegimeWarning, regime_warning
from lit_unlearn.runs import bare_trainer, cli_objects
from lit_unlearn.tasks import RecommenderTask

__all__ = [
    "DEFAULT_METRIC",
    "MAX_EPOCHS",
    "STOP",
    "TuneConfig",
    "TuneError",
    "TuneResult",
    "choose",
    "grid_points",
    "main",
    "override_lines",
    "parse_grid",
    "run",
    "tunable_args",
]

PROGRAM = "python -m lit_unlearn.methods.interaction.tune"
#: Maximised on the validation split unless ``--metric`` says otherwise.
DEFAULT_METRIC = "ndcg@10"
#: Validation metrics every row records (plus the selection metric).
RECORDED = ("recall@10", "ndcg@10")
#: The comparison's stop rule (``alteraser_ml100k_table.yaml``, ``training.stop``).
STOP: dict[str, Any] = {"monitor": "train/loss_epoch", "rel_delta": 1e-4, "patience": 10}
#: The comparison's epoch budget (``training.max_epochs``).
MAX_EPOCHS = 500
MODEL_PREFIX = "--model.init_args.model.init_args."
_DATA_PREFIX = "--data.init_args."
# Set by the tuner itself: an --override may not change them.
_CONTROLLED = ("seed", "train_on", "val_ratio")
_METRIC = re.compile(r"(hr|recall|ndcg)@([1-9][0-9]*)")
_LINKED = ("self", "num_users", "num_items")  # linked from the data by the CLI
_FILES = ("results.csv", "report.md", "settings.json")

Value = int | float


class TuneError(ValueError):
    """A grid, metric, ratio, override or output folder the tuner cannot work with."""


# ---------------------------------------------------------------------------- inputs
def tunable_args() -> dict[str, type]:
    """ENMF's init arguments a grid may set (``num_users``/``num_items`` come from the data),
    each with its type (``int`` or ``float``)."""
    hints = typing.get_type_hints(ENMF.__init__)
    return {name: hints[name] for name in hints if name not in (*_LINKED, "return")}


def _number(key: str, text: str, kind: type) -> Value:
    try:
        value = float(text)
    except ValueError:
        raise TuneError(f"grid key {key!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TuneError(f"grid key {key!r}: {text!r} is not a finite number")
    if kind is int:
        if value != int(value):
            raise TuneError(f"grid key {key!r}: {text!r} is not an integer")
        return int(value)
    return value


def parse_grid(specs: Sequence[str]) -> dict[str, tuple[Value, ...]]:
    """``["negative_weight=0.1,0.5", "dropout=0,0.7"]`` as ``{key: values}``, in order.

    Every value is checked by building a small ENMF with it, so a value the model refuses
    fails here, before anything trains.

    Raises:
        TuneError: No entry, an entry without ``=``, a key that is not an ENMF init argument
            (or repeats), an empty or non-numeric value, a repeated value, or a value ENMF
            refuses (e.g. ``dropout=1``).
    """
    if not specs:
        raise TuneError("give at least one --grid KEY=V1,V2,...")
    allowed = tunable_args()
    grid: dict[str, tuple[Value, ...]] = {}
    for spec in specs:
        key, sep, text = (part.strip() for part in spec.partition("="))
        if not sep or not key:
            raise TuneError(f"grid entry {spec!r} must be KEY=V1,V2,...")
        if key not in allowed:
            raise TuneError(
                f"unknown grid key {key!r}: not an ENMF init argument; one of {sorted(allowed)}"
            )
        if key in grid:
            raise TuneError(f"grid key {key!r} is given twice")
        pieces = [p.strip() for p in text.split(",")]
        if not text or any(not p for p in pieces):
            raise TuneError(f"grid key {key!r} has an empty value in {spec!r}")
        values = tuple(_number(key, p, allowed[key]) for p in pieces)
        if len(set(values)) != len(values):
            raise TuneError(f"grid key {key!r} repeats a value in {spec!r}")
        for value in values:
            kwargs: dict[str, Any] = {key: value}
            try:
                ENMF(num_users=2, num_items=2, **kwargs)
            except (ValueError, RuntimeError) as err:
                raise TuneError(f"grid key {key!r}: ENMF refuses {value!r}: {err}") from err
        grid[key] = values
    return grid


def grid_points(grid: Mapping[str, Sequence[Value]]) -> list[dict[str, Value]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _check_metric(metric: str) -> str:
    name = metric.strip().lower()
    if not _METRIC.fullmatch(name):
        raise TuneError(f"metric must be hr@k, recall@k or ndcg@k (e.g. ndcg@10), got {metric!r}")
    return name


def _override(text: str) -> str:
    text = text.strip()
    return text if text.startswith("--") else f"--{text}"


@dataclass(frozen=True)
class TuneConfig:
    """One tuning run (the command-line flags).

    Args:
        data: Data config (a ``ForgettingData``; the comparison's).
        model: Model config (a ``RecommenderTask`` around an ``ENMF``).
        grid: ENMF init arguments and their values (:func:`parse_grid`).
        out: Folder of ``results.csv``, ``report.md`` and ``settings.json``.
        val_ratio: Per-user validation share, taken from the held-out part.
        seed: Seed of the split, the request and the initialisation.
        max_epochs: Epoch budget of the stop rule.
        metric: Validation metric maximised (``ndcg@10``, ``recall@10``, ``hr@20``...).
        overrides: Further ``lit-unlearn`` overrides of the data/model configs.

    Raises:
        TuneError: A ratio outside (0, 1), ``max_epochs < 1``, a bad metric, or an override of
            a value the tuner sets (seed, train_on, val_ratio, a grid key).
    """

    data: str
    model: str
    grid: dict[str, tuple[Value, ...]]
    out: str
    val_ratio: float = 0.1
    seed: int = 0
    max_epochs: int = MAX_EPOCHS
    metric: str = DEFAULT_METRIC
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.grid:
            raise TuneError("the grid is empty: give at least one --grid KEY=V1,V2,...")
        allowed = tunable_args()
        for key, values in self.grid.items():
            if key not in allowed:
                raise TuneError(f"unknown grid key {key!r}: not an ENMF init argument")
            if not values:
                raise TuneError(f"grid key {key!r} has no values")
        if not (math.isfinite(self.val_ratio) and 0.0 < self.val_ratio < 1.0):
            raise TuneError(f"val ratio must be in (0, 1), got {self.val_ratio}")
        if self.max_epochs < 1:
            raise TuneError(f"max epochs must be >= 1, got {self.max_epochs}")
        object.__setattr__(self, "metric", _check_metric(self.metric))
        overrides = tuple(_override(o) for o in self.overrides)
        object.__setattr__(self, "overrides", overrides)
        taken = [f"{_DATA_PREFIX}{k}" for k in _CONTROLLED]
        taken += [f"{MODEL_PREFIX}{k}" for k in self.grid]
        for o in overrides:
            name = o.partition("=")[0]
            if name in taken:
                raise TuneError(
                    f"override {o!r} sets a value the tuner sets (seed, train_on, val_ratio "
                    "and the grid keys have their own flags)"
                )

    @property
    def metrics(self) -> tuple[str, ...]:
        """The validation metrics recorded in every row (selection metric included)."""
        return RECORDED if self.metric in RECORDED else (*RECORDED, self.metric)

    @property
    def columns(self) -> list[str]:
        """The columns of ``results.csv``."""
        metrics = [f"val_{m}" for m in self.metrics]
        return [*self.grid, *metrics, "epochs", "seconds", "train_loss", "error"]


# ---------------------------------------------------------------------------- one point
def _objects(
    config: TuneConfig, point: Mapping[str, Value]
) -> tuple[RecommenderTask, ForgettingData]:
    """Model and data of one point, as the comparison builds its Original row."""
    overrides = [
        f"{_DATA_PREFIX}seed={config.seed}",
        *config.overrides,
        f"{_DATA_PREFIX}train_on=all",
        f"{_DATA_PREFIX}val_ratio={config.val_ratio!r}",
        *override_lines(point),
    ]
    pl.seed_everything(config.seed, verbose=False)
    with warnings.catch_warnings():
        # cli_objects passes args while this command has its own sys.argv: intended here.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        try:
            task, data = cli_objects([config.data, config.model], overrides)
        except ValueError as err:  # e.g. a val ratio that does not fit beside train_ratio
            raise TuneError(f"the data/model configs do not build with {overrides}: {err}") from err
    if not isinstance(data, ForgettingData):
        raise TuneError(
            f"the data config must give a ForgettingData (the comparison's), got "
            f"{type(data).__name__}"
        )
    if not isinstance(task.model, ENMF):
        raise TuneError(f"the model config must give an ENMF, got {type(task.model).__name__}")
    if "full" not in data.protocols:
        raise TuneError(f"the data config must evaluate the full protocol, got {data.protocols}")
    k = int(config.metric.partition("@")[2])
    if k not in task.ks or 10 not in task.ks:
        raise TuneError(
            f"the model config's ks {task.ks} must hold 10 and the metric's cut-off {k}"
        )
    return task, data


@dataclass
class _Fit:
    seconds: float
    epochs: int
    device: torch.device
    train_loss: float


def _fit(task: RecommenderTask, data: ForgettingData, max_epochs: int) -> _Fit:
    """Train on ``D_a`` to the comparison's stop rule (no validation during training)."""
    timer = Timer()
    trainer = bare_trainer(max_epochs, [timer, RelativeEarlyStopping(**STOP)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*configure_optimizers.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(task, datamodule=data)
    loss = trainer.callback_metrics.get("train/loss_epoch")
    return _Fit(
        seconds=timer.time_elapsed("train"),
        epochs=int(trainer.current_epoch),
        device=trainer.strategy.root_device,
        train_loss=float(loss) if loss is not None else math.nan,
    )


def _validate(task: RecommenderTask, data: ForgettingData) -> dict[str, float]:
    """The task's validation loop on the validation split (full protocol): ``{"ndcg@10": ...}``.

    Only ``trainer.validate`` runs: the test loaders are never built.
    """
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        results = trainer.validate(task, datamodule=data, verbose=False)
    prefix = "val/full/"
    return {
        key[len(prefix) :]: float(value)
        for result in results
        for key, value in result.items()
        if key.startswith(prefix)
    }


def tune_point(config: TuneConfig, point: Mapping[str, Value]) -> tuple[dict[str, Any], str]:
    """Train and validate one grid point.

    Returns:
        The ``results.csv`` row (a diverged training, :class:`FloatingPointError`, gives NaN
        metrics and its message in ``error``) and the device it ran on.
    """
    with warnings.catch_warnings():
        # The tuner is the remedy the warning points to; report.md names the regime instead.
        warnings.simplefilter("ignore", ENMFRegimeWarning)
        task, data = _objects(config, point)
        row: dict[str, Any] = dict(point)
        try:
            fit = _fit(task, data, config.max_epochs)
        except FloatingPointError as err:
            row.update({f"val_{m}": math.nan for m in config.metrics})
            row.update(epochs=math.nan, seconds=math.nan, train_loss=math.nan, error=str(err))
            return row, "cpu"
        values = _validate(task, data)
    missing = [m for m in config.metrics if m not in values]
    if missing:
        raise TuneError(f"the validation loop logged no {missing} (got {sorted(values)})")
    row.update({f"val_{m}": values[m] for m in config.metrics})
    row.update(epochs=fit.epochs, seconds=fit.seconds, train_loss=fit.train_loss, error="")
    return row, str(fit.device)


# ---------------------------------------------------------------------------- choosing
def choose(rows: Sequence[Mapping[str, Any]], metric: str) -> Mapping[str, Any] | None:
    """The row of the highest finite ``val_<metric>`` (the first of equal ones); None if none.

    Only the validation column is read; rows with an ``error`` are skipped.
    """
    column = f"val_{_check_metric(metric)}"
    best: Mapping[str, Any] | None = None
    for row in rows:
        value = float(row.get(column, math.nan))
        if row.get("error") or not math.isfinite(value):
            continue
        if best is None or value > float(best[column]):
            best = row
    return best


def _text(value: Value) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def override_lines(point: Mapping[str, Value]) -> list[str]:
    """``--model.init_args.model.init_args.<key>=<value>`` for each of the point's keys."""
    return [f"{MODEL_PREFIX}{k}={_text(v)}" for k, v in point.items()]


def _typed(grid: Mapping[str, Sequence[Value]], point: Mapping[str, Any]) -> dict[str, Value]:
    types = tunable_args()
    return {k: types[k](point[k]) for k in grid}


def chosen_text(config: TuneConfig, best: Mapping[str, Any] | None) -> str:
    """What the command prints: the chosen values and the lines to paste into a config."""
    if best is None:
        return "no grid point finished with a finite validation metric: nothing chosen"
    point = _typed(config.grid, best)
    metric = f"val_{config.metric}"
    values = " ".join(f"{k}={_text(v)}" for k, v in point.items())
    lines = [
        f"chosen by {metric} = {float(best[metric]):.4f} (validation split, seed {config.seed}):"
        f" {values}",
        "model config (model.init_args.model.init_args):",
        *(f"  {k}: {_text(v)}" for k, v in point.items()),
        "overrides (lit-unlearn flags, or an experiment YAML's `overrides:` list):",
        *(f"  - {line}" for line in override_lines(point)),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the run
@dataclass
class TuneResult:
    """Every row of the grid (in grid order) and the chosen one."""

    rows: list[dict[str, Any]]
    best: Mapping[str, Any] | None
    text: str


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _settings(config: TuneConfig) -> dict[str, Any]:
    """What the rows depend on: a rerun into the same ``out`` resumes only if it matches."""
    return {
        "data": config.data,
        "data_sha256": _sha256(config.data),
        "model": config.model,
        "model_sha256": _sha256(config.model),
        "overrides": list(config.overrides),
        "val_ratio": config.val_ratio,
        "seed": config.seed,
        "max_epochs": config.max_epochs,
        "stop": STOP,
        "columns": config.columns,
    }


def _key(grid: Mapping[str, Sequence[Value]], point: Mapping[str, Any]) -> tuple[float, ...]:
    return tuple(float(point[k]) for k in grid)


def _read_rows(path: Path, columns: Sequence[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for c in columns:
                text = raw.get(c) or ""
                row[c] = text if c == "error" else (float(text) if text else math.nan)
            rows.append(row)
    return rows


def _existing(config: TuneConfig, out: Path, fresh: bool) -> dict[tuple[float, ...], dict]:
    """Rows of an earlier run of the same settings in ``out`` (resume), by grid point."""
    settings, results = out / "settings.json", out / "results.csv"
    if fresh:
        for name in _FILES:
            (out / name).unlink(missing_ok=True)
    if results.is_file():
        earlier = json.loads(settings.read_text()) if settings.is_file() else None
        if earlier != _settings(config):
            raise TuneError(
                f"{out} holds a tuning run of other settings (data, model, overrides, val "
                "ratio, seed, max epochs or grid keys): pass --fresh to start over, or "
                "another --out"
            )
        return {_key(config.grid, r): r for r in _read_rows(results, config.columns)}
    out.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(_settings(config), indent=2) + "\n")
    return {}


def _append(path: Path, columns: Sequence[str], row: Mapping[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        if new:
            writer.writeheader()
        writer.writerow({c: row[c] for c in columns})
        f.flush()


def _describe(config: TuneConfig) -> tuple[dict[str, Any], str | None]:
    """The data of the run (sizes, validation split) and the regime warning of the model
    config's own values; builds model and data once without the grid's values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ENMFRegimeWarning)
        task, data = _objects(config, {})
    split = data.split
    train, val = len(split.train), len(split.val)
    if val == 0:
        raise TuneError(
            f"the validation split is empty (val ratio {config.val_ratio}): raise --val-ratio"
        )
    model = task.model
    assert isinstance(model, ENMF)
    users, items = data.num_users, data.num_items
    info = {
        "users": users,
        "items": items,
        "train_pairs": train,
        "per_user": train / users,
        "per_item": train / items,
        "density": train / (users * items),
        "val_pairs": val,
        "val_users": len(set(split.val[:, 0].tolist())),
        "train_ratio": data.train_ratio,
        "model_negative_weight": model.negative_weight,
        "model_dropout": model.dropout,
        "ks": list(task.ks),
    }
    message = regime_warning(users, items, train, model.negative_weight, model.dropout)
    return info, message


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def write_report(
    config: TuneConfig,
    rows: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any] | None,
    info: Mapping[str, Any],
    regime: str | None,
    env: Mapping[str, Any],
    path: Path,
) -> None:
    """``report.md``: protocol, data, environment, every row and the choice."""
    done, total = len(rows), math.prod(len(v) for v in config.grid.values())
    stop = ", ".join(f"{k} {v}" for k, v in STOP.items())
    test_share = 1.0 - info["train_ratio"] - config.val_ratio
    lines = [
        "# ENMF tuning on a validation split",
        "",
        f"- command: `{env['command']}`",
        f"- data `{config.data}`, model `{config.model}`, overrides "
        f"{list(config.overrides) or 'none'}",
        f"- grid: {', '.join(f'{k} = {list(v)}' for k, v in config.grid.items())} "
        f"({done} of {total} points done)",
        f"- seed {config.seed} (split, forgetting request, initialisation)",
        f"- torch {env['torch']}, {env['threads']} threads, device {env['device']}, "
        f"{env['machine']}",
        "",
        "## Protocol",
        "",
        "Each point builds model and data as the AltEraser comparison builds its Original row "
        "(`lit-unlearn fit --config <data> --config <model>`, `seed_everything(seed)` first) "
        "with `--data.init_args.train_on=all` (D_a) and the point's "
        "`--model.init_args.model.init_args.<key>=<value>`, trains with the model config's "
        f"optimiser until `RelativeEarlyStopping` ({stop}) or {config.max_epochs} epochs, "
        "then runs the task's validation loop once.",
        "",
        f"- **Validation split**: per user at random, training {info['train_ratio']:g} / "
        f"validation {config.val_ratio:g} / test {test_share:.3g}; the validation pairs are "
        "carved from the held-out part, so the training pairs (and D_a and the request) are "
        "the comparison's for this seed. The test split is never evaluated.",
        "- **Protocol**: full ranking over every item outside the user's training items "
        "(D_a), the user's validation items as targets; mean over the "
        f"{info['val_users']} users with validation items ({info['val_pairs']} pairs).",
        f"- **Choice**: the highest val {config.metric}; ties go to the earlier point; a "
        "diverged training (error) is skipped.",
        "- Caveat: with the same seed the validation pairs are half of the pairs the "
        "comparison (val_ratio 0) evaluates as test in that repetition; a seed outside the "
        "comparison's repetitions makes them an independent draw instead.",
        "",
        "## Data (training pairs)",
        "",
        f"{info['users']} users x {info['items']} items x {info['train_pairs']} training pairs: "
        f"{info['per_user']:.1f} per user, {info['per_item']:.1f} per item, density "
        f"{info['density']:.2%} (ML-100K training: ~85, ~48, 5.0%).",
        "",
        f"The model config's own values (c0 = {info['model_negative_weight']:g}, dropout = "
        f"{info['model_dropout']:g}): "
        + (f"`regime_warning`: {regime}" if regime else "no regime warning."),
        "",
        "## Results",
        "",
    ]
    header = [*config.grid, *(f"val {m}" for m in config.metrics)]
    header += ["epochs", "seconds", "train loss", "error", "chosen"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_cell(row[c]) for c in config.columns]
        cells.append("**yes**" if best is not None and row is best else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Chosen", "", "```", chosen_text(config, best), "```", ""]
    path.write_text("\n".join(lines))


def run(
    config: TuneConfig,
    fresh: bool = False,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> TuneResult:
    """Tune every grid point of ``config`` into ``config.out`` (resuming an earlier run).

    Args:
        config: The run.
        fresh: Discard ``results.csv``, ``report.md`` and ``settings.json`` of an earlier run.
        command: Recorded in the report (default: this process's command line).
        log: Progress lines.

    Raises:
        TuneError: Bad configs (not a ForgettingData / ENMF, no full protocol, ratios that do
            not fit, an empty validation split), or ``out`` holds another run's rows.
    """
    command = command if command is not None else shlex.join(sys.argv)
    out = Path(config.out)
    info, regime = _describe(config)  # fails on bad configs before anything trains
    done = _existing(config, out, fresh)
    env = environment("cpu", command)
    rows: list[dict[str, Any]] = []
    points = grid_points(config.grid)
    for i, point in enumerate(points, start=1):
        label = " ".join(f"{k}={_text(v)}" for k, v in point.items())
        key = _key(config.grid, point)
        if key in done:
            rows.append(done[key])
            log(f"[{i}/{len(points)}] {label}: kept from {out / 'results.csv'}")
            continue
        row, device = tune_point(config, point)
        env = environment(device, command)
        _append(out / "results.csv", config.columns, row)
        rows.append(row)
        shown = ", ".join(f"val {m} {row[f'val_{m}']:.4f}" for m in config.metrics)
        log(f"[{i}/{len(points)}] {label}: {shown}, {row['epochs']} epochs, {row['seconds']:.1f} s")
        best = choose(rows, config.metric)
        write_report(config, rows, best, info, regime, env, out / "report.md")
    best = choose(rows, config.metric)
    write_report(config, rows, best, info, regime, env, out / "report.md")
    return TuneResult(rows, best, chosen_text(config, best))


# ---------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Choose ENMF hyperparameters (c0 = negative_weight, dropout, ...) on a "
        "validation split, training each grid point as the AltEraser comparison trains its "
        "Original model.",
    )
    p.add_argument("--data", required=True, help="data config (a ForgettingData)")
    p.add_argument("--model", default="configs/model/enmf.yaml", help="model config (an ENMF)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help=f"an ENMF init argument and its values, repeatable; keys: {sorted(tunable_args())}",
    )
    p.add_argument("--val-ratio", type=float, default=0.1, help="per-user validation share")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=MAX_EPOCHS)
    p.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help="validation metric maximised: ndcg@k (default ndcg@10), recall@k or hr@k",
    )
    p.add_argument("--out", required=True, help="folder of results.csv and report.md")
    p.add_argument(
        "--override",
        "--overrides",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        help="lit-unlearn overrides of the data/model configs; leading dashes optional "
        "(data.init_args.source.init_args.root=../shared/datasets)",
    )
    p.add_argument(
        "--fresh", action="store_true", help="discard an earlier run in --out and start over"
    )
    return p


def main(argv: Sequence[str] | None = None) -> TuneResult:
    """``python -m lit_unlearn.methods.interaction.tune ...``: prints the choice."""
    parser = _parser()
    args = parser.parse_args(argv)
    words = list(sys.argv[1:] if argv is None else argv)
    command = f"{PROGRAM} {shlex.join(words)}".rstrip()
    try:
        config = TuneConfig(
            data=str(require_path(args.data, "data config")),
            model=str(require_path(args.model, "model config")),
            grid=parse_grid(args.grid),
            out=args.out,
            val_ratio=args.val_ratio,
            seed=args.seed,
            max_epochs=args.max_epochs,
            metric=args.metric,
            overrides=tuple(args.overrides),
        )
        result = run(config, fresh=args.fresh, command=command)
    except (TuneError, FileNotFoundError) as err:
        parser.error(str(err))
    print(result.text)
    return result


if __name__ == "__main__":
    main()
