"""The experiment YAML of the AltEraser comparison and the rows it builds from method configs.

An experiment YAML (``configs/experiment/interaction/alteraser_ml100k_table.yaml``) names the
data and model fit configs, the request (scenario, number of forgetting users), the repetitions,
the training protocol (``max_epochs`` and a stop-rule callback), the RBO persistence and the
rows, each a display name and a ``lit-unlearn fit`` method config
(``configs/method/interaction/*.yaml``). A row's callbacks are instantiated from the method
config's ``trainer.callbacks`` (``class_path``/``init_args``) by jsonargparse, the parser
LightningCLI uses, so a row runs what ``lit-unlearn fit --config <method yaml>`` runs, with
three documented changes: the original checkpoint fills ``checkpoint: null``; a callback of
the stop rule's class is replaced by the experiment's stop rule (with its ``max_epochs``), so
Original, Retrain, Retrain* and Warm-Start stop alike (paper 003, section 5.1: "early stopping
with patience 10"); and a row's ``init_args`` overrides apply.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml

from lit_unlearn.datamodules.paths import require_path
from lit_unlearn.runs import build_callbacks, import_object

__all__ = [
    "BACKBONE",
    "KS",
    "ORIGINAL",
    "REFERENCE",
    "ExperimentConfig",
    "ExperimentConfigError",
    "Row",
    "instantiate_callbacks",
    "load_experiment",
]

#: The model trained on all data ``D_a``: always the first row, built from the data/model configs.
ORIGINAL = "Original"
#: The row every RBO list and speed-up is measured against (paper 003: retraining on ``D_r``).
REFERENCE = "Retrain"
SCENARIOS = ("noise", "privacy")
#: The cut-offs of RBO@k, Recall@k and NDCG@k (paper 003, Tables 3-4).
KS = (10, 20, 50)
#: Backbone hyperparameters recorded in every row, so results.csv and the report name the model
#: they were measured with even after the config file changes.
BACKBONE = ("embedding_dim", "negative_weight", "reg", "dropout")
_TOP_KEYS = {
    "data",
    "model",
    "overrides",
    "scenario",
    "num_forget_users",
    "seed",
    "repeats",
    "rbo_p",
    "out",
    "training",
    "rows",
}
_ROW_KEYS = {"name", "method", "init_args", "shuffle_seed_offset"}
# Trainer settings bare_trainer fixes for every row (no validation, logger or checkpointing:
# timing-friendly); a method config may restate them but not ask for something else.
_BARE_TRAINER = {
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "limit_val_batches": 0,
}


class ExperimentConfigError(ValueError):
    """An experiment YAML, or a method config it names, that cannot describe the table."""


def _import(class_path: str) -> type:
    obj = import_object(class_path, ExperimentConfigError)
    if not isinstance(obj, type):
        raise ExperimentConfigError(f"class_path {class_path!r} is not a class")
    return obj


def _is_spec(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("class_path"), str)


@dataclass(frozen=True)
class Row:
    """One table row: a method config plus the experiment's changes.

    Attributes:
        name: Display name (the ``method`` column of the tables).
        method: The ``lit-unlearn fit`` method config.
        trainer: Its ``trainer`` section without ``callbacks``.
        callbacks: Its ``trainer.callbacks`` specs, the row's ``init_args`` overrides applied.
        shuffle_seed_offset: Train with ``shuffle_seed = seed + offset`` (Retrain*), or None.
    """

    name: str
    method: Path
    trainer: dict[str, Any]
    callbacks: list[dict[str, Any]]
    shuffle_seed_offset: int | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """A parsed experiment YAML (run-level CLI flags already applied).

    Attributes:
        path: The YAML file.
        data: Data fit config (must configure a ``ForgettingData``).
        model: Model fit config (an ENMF ``RecommenderTask`` for AltEraser).
        overrides: Further ``--key=value`` overrides of the data/model configs.
        scenario: ``noise`` or ``privacy``.
        num_forget_users: Users in the forgetting request.
        seed: Seed of the first repetition.
        repeats: Repetitions (seeds ``seed .. seed + repeats - 1``).
        rbo_p: RBO persistence.
        out: Output directory.
        max_epochs: Epoch budget of the rows trained to the stop rule.
        stop: The stop-rule callback spec.
        rows: The rows after Original, in table order.
        methods: Row names to run (the reference always runs), or None for all.
    """

    path: Path
    data: str
    model: str
    overrides: tuple[str, ...]
    scenario: str
    num_forget_users: int
    seed: int
    repeats: int
    rbo_p: float
    out: str
    max_epochs: int
    stop: dict[str, Any]
    rows: tuple[Row, ...]
    methods: tuple[str, ...] | None = field(default=None)

    @property
    def names(self) -> list[str]:
        """Every row name in table order, Original first."""
        return [ORIGINAL, *(r.name for r in self.rows)]

    def selected(self) -> list[Row]:
        """The rows to run: all, or those in ``methods`` plus the reference."""
        if self.methods is None:
            return list(self.rows)
        return [r for r in self.rows if r.name in self.methods or r.name == REFERENCE]

    def is_trained(self, row: Row) -> bool:
        """Whether the row trains to the stop rule (its method has a callback of that class)."""
        stop = _import(self.stop["class_path"])
        return any(_import(c["class_path"]) is stop for c in row.callbacks)

    def callback_specs(self, row: Row, checkpoint: str | None) -> list[dict[str, Any]]:
        """The row's callback specs: the stop rule swapped in, ``checkpoint: null`` filled.

        Args:
            row: The row.
            checkpoint: The original model's checkpoint; None leaves ``checkpoint`` unset.
        """
        stop = _import(self.stop["class_path"])
        specs = []
        for spec in row.callbacks:
            spec = copy.deepcopy(self.stop if _import(spec["class_path"]) is stop else spec)
            args = spec.setdefault("init_args", {})
            if checkpoint is not None and "checkpoint" in args and args["checkpoint"] is None:
                args["checkpoint"] = checkpoint
            specs.append(spec)
        return specs

    def trainer_kwargs(self, row: Row) -> dict[str, Any]:
        """Keyword arguments of :func:`lit_unlearn.runs.bare_trainer` for ``row``."""
        kwargs = {k: v for k, v in row.trainer.items() if k not in _BARE_TRAINER}
        if self.is_trained(row):
            kwargs["max_epochs"] = self.max_epochs
        kwargs.setdefault("max_epochs", self.max_epochs)
        return kwargs


def instantiate_callbacks(specs: Sequence[Mapping[str, Any]]) -> list[pl.Callback]:
    """Callbacks from ``class_path``/``init_args`` specs, as LightningCLI builds them.

    Raises:
        ExperimentConfigError: A spec names no callback class or gives it bad arguments.
    """
    return build_callbacks(specs, pl.Callback, ExperimentConfigError)


def _override(node: Any, target: type, values: Mapping[str, Any]) -> int:
    """Update the ``init_args`` of every spec of class ``target`` in ``node``; count them."""
    hits = 0
    if isinstance(node, list):
        return sum(_override(n, target, values) for n in node)
    if not isinstance(node, dict):
        return 0
    if _is_spec(node) and _import(node["class_path"]) is target:
        node.setdefault("init_args", {}).update(copy.deepcopy(dict(values)))
        hits += 1
    for value in node.values():
        hits += _override(value, target, values)
    return hits


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ExperimentConfigError(f"{what} {path} is not valid YAML: {err}") from err
    if not isinstance(content, dict):
        raise ExperimentConfigError(f"{what} {path} must be a mapping")
    return content


def _typed(value: Any, kind: type, key: str, path: Path) -> Any:
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ExperimentConfigError(f"{path}: {key} must be a {kind.__name__}, got {value!r}")
    return value


def _row(entry: Any, index: int, path: Path, stop: type) -> Row:
    if not isinstance(entry, dict):
        raise ExperimentConfigError(f"{path}: rows[{index}] must be a mapping, got {entry!r}")
    unknown = set(entry) - _ROW_KEYS
    if unknown:
        raise ExperimentConfigError(f"{path}: rows[{index}] has unknown keys {sorted(unknown)}")
    for key in ("name", "method"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ExperimentConfigError(f"{path}: rows[{index}] needs a {key} (a string)")
    name = entry["name"]
    what = f"row {name!r}: method config"
    method = require_path(entry["method"], what, anchor=path)
    spec = _read_yaml(method, what)
    trainer = spec.get("trainer")
    if not isinstance(trainer, dict):
        raise ExperimentConfigError(f"row {name!r}: {method} has no trainer section")
    callbacks = trainer.get("callbacks")
    if not isinstance(callbacks, list) or not all(_is_spec(c) for c in callbacks):
        raise ExperimentConfigError(
            f"row {name!r}: {method} has no trainer.callbacks list of class_path specs"
        )
    callbacks = copy.deepcopy(callbacks)
    for callback in callbacks:
        _import(callback["class_path"])
    overrides = entry.get("init_args", {})
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ExperimentConfigError(
            f"row {name!r}: init_args must map a class_path to its init_args overrides"
        )
    for class_path, values in overrides.items():
        if _import(class_path) is stop:
            raise ExperimentConfigError(
                f"row {name!r}: the stop rule is the experiment's training.stop, not a row's"
            )
        if not _override(callbacks, _import(class_path), values):
            raise ExperimentConfigError(
                f"row {name!r}: init_args override for {class_path}, which {method} does not use"
            )
    for key, value in trainer.items():
        if key in _BARE_TRAINER and value != _BARE_TRAINER[key]:
            raise ExperimentConfigError(
                f"row {name!r}: {method} sets trainer.{key}={value!r}; the experiment runs every "
                f"row with {key}={_BARE_TRAINER[key]!r}"
            )
    offset = entry.get("shuffle_seed_offset")
    if offset is not None:
        offset = _typed(offset, int, f"rows[{index}].shuffle_seed_offset", path)
    rest = {k: v for k, v in trainer.items() if k != "callbacks"}
    return Row(name, method, rest, callbacks, offset)


def load_experiment(
    path: str | Path,
    scenario: str | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    out: str | None = None,
    methods: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
) -> ExperimentConfig:
    """Parse and check an experiment YAML; the keyword arguments override it (run-level flags).

    Relative file names (the YAML itself, data, model, method configs) are read from the
    working directory, as ``lit-unlearn --config`` reads them; one that does not exist there is
    looked up in the repository root of the experiment YAML (the folder holding its
    ``configs/``), then in the checkout the package runs from
    (:func:`lit_unlearn.datamodules.paths.resolve_path`), so a run works from any directory.

    Args:
        path: The experiment YAML.
        scenario: Overrides ``scenario``.
        repeats: Overrides ``repeats``.
        seed: Overrides ``seed``.
        out: Overrides ``out``.
        methods: Run only these rows (and the reference).
        overrides: Appended to the YAML's ``overrides``.

    Raises:
        FileNotFoundError: The YAML, or a config it names, does not exist (every location tried
            is listed).
        ExperimentConfigError: A missing, unknown or ill-typed field, duplicate row names, no
            Retrain row, a method config without callbacks, an override of a class the
            method does not use, or an unknown ``methods`` name.
    """
    file = require_path(path, "experiment config")
    spec = _read_yaml(file, "experiment config")
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise ExperimentConfigError(f"{file}: unknown keys {sorted(unknown)}")
    missing = {"data", "model", "training", "rows"} - set(spec)
    if missing:
        raise ExperimentConfigError(f"{file}: missing keys {sorted(missing)}")
    training = spec["training"]
    if not isinstance(training, dict) or set(training) != {"max_epochs", "stop"}:
        raise ExperimentConfigError(f"{file}: training needs exactly max_epochs and stop")
    stop = training["stop"]
    if not _is_spec(stop):
        raise ExperimentConfigError(f"{file}: training.stop must be a class_path/init_args spec")
    instantiate_callbacks([stop])  # fail here, not after the original model trained
    max_epochs = _typed(training["max_epochs"], int, "training.max_epochs", file)
    entries = spec["rows"]
    if not isinstance(entries, list) or not entries:
        raise ExperimentConfigError(f"{file}: rows must be a non-empty list")
    stop_class = _import(stop["class_path"])
    rows = tuple(_row(e, i, file, stop_class) for i, e in enumerate(entries))
    names = [r.name for r in rows]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ExperimentConfigError(f"{file}: duplicate row names {twice}")
    if ORIGINAL in names:
        raise ExperimentConfigError(f"{file}: {ORIGINAL!r} is built in (the model on D_a)")
    if REFERENCE not in names:
        raise ExperimentConfigError(f"{file}: needs a {REFERENCE!r} row (RBO/speed-up reference)")
    if methods is not None:
        strange = sorted(set(methods) - set(names))
        if strange:
            raise ExperimentConfigError(f"--methods: {strange} are not rows of {file}: {names}")
    scenario = scenario if scenario is not None else spec.get("scenario", "noise")
    if scenario not in SCENARIOS:
        raise ExperimentConfigError(f"{file}: scenario must be one of {SCENARIOS}, got {scenario}")
    listed = spec.get("overrides", [])
    if not isinstance(listed, list) or not all(isinstance(o, str) for o in listed):
        raise ExperimentConfigError(f"{file}: overrides must be a list of strings")
    data = _typed(spec["data"], str, "data", file)
    model = _typed(spec["model"], str, "model", file)
    config = ExperimentConfig(
        path=file,
        data=str(require_path(data, f"{file}: data config", anchor=file)),
        model=str(require_path(model, f"{file}: model config", anchor=file)),
        overrides=(*listed, *overrides),
        scenario=scenario,
        num_forget_users=_typed(spec.get("num_forget_users", 64), int, "num_forget_users", file),
        seed=_typed(seed if seed is not None else spec.get("seed", 0), int, "seed", file),
        repeats=_typed(
            repeats if repeats is not None else spec.get("repeats", 1), int, "repeats", file
        ),
        rbo_p=_typed(spec.get("rbo_p", 0.9), float, "rbo_p", file),
        out=_typed(out if out is not None else spec.get("out", "runs/alteraser"), str, "out", file),
        max_epochs=max_epochs,
        stop=copy.deepcopy(stop),
        rows=rows,
        methods=tuple(methods) if methods is not None else None,
    )
    if config.repeats < 1 or config.max_epochs < 1 or config.num_forget_users < 1:
        raise ExperimentConfigError(f"{file}: repeats, max_epochs, num_forget_users must be >= 1")
    if not 0.0 < config.rbo_p < 1.0:
        raise ExperimentConfigError(f"{file}: rbo_p must lie in (0, 1), got {config.rbo_p}")
    return config
