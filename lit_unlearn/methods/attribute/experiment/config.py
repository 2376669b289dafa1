"""The comparison table as one YAML file: which stack, which checkpoint, which rows.

A row names a method config of ``configs/method/attribute/`` (the same file ``lit-unlearn fit
--config ...`` plugs into a trainer/data/model stack) and may override its callback's
``init_args``; the callback is then built by jsonargparse from ``class_path``/``init_args``
exactly as the CLI builds ``trainer.callbacks``. So the table states no hyperparameter of its
own: AttrCloak-DD/DF (Wu et al., Algorithm 1), U2U-R/D2D-R and the fixed-alpha_u ablation
(Fig. 5) get what their configs say, changed only where a row says so.

Schema (paths relative to the working directory)::

    trainer: configs/trainer/cpu.yaml     # the stack cli_objects parses, in this order
    data: configs/data/ml100k.yaml
    model: configs/model/ncf.yaml
    overrides: []                         # CLI overrides applied to every model/data build
    checkpoint: runs/.../last.ckpt        # or null: train the original for train_epochs
    train_epochs: 30
    attributes: null                      # attributes to forget (null: all the data encodes)
    seed: 0                               # seeds seed..seed+repeats-1
    repeats: 1
    out: runs/attribute_unlearning
    wandb_project: lit_unlearn
    mode_overrides:                       # CLI overrides of every row in that data mode
      data_dependent: [--data.init_args.batch_size=1000000]
      data_free: [--data.init_args.batch_size=1000000]
    # the flip-aware leakage audit of every (row, seed), Original included
    # (lit_unlearn.attacks.leakage); leakage_attackers: [] turns it off
    leakage_attackers: [logreg, mlp, xgboost, knn]
    leakage_protocols: [shadow, kfold]
    permutations: 5                       # label permutations of the null floor (0: none)
    leakage_folds: 5                      # folds of the kfold protocol
    leakage_attacker_args: {xgboost: {n_jobs: 1}}   # constructor arguments per attacker
    export: true                          # write each run's representations under out/exports
    rows:
      - name: AttrCloak-DF                # the display name, unique
        method: configs/method/attribute/attrcloak_df.yaml
        mode: data_free                   # or data_dependent
        epochs: 200                       # default: the method config's trainer.max_epochs
        init_args: {lr: 0.015}            # merged into the callback's init_args
        overrides: []                     # further CLI overrides of this row
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from lit_unlearn.attacks.audit import ATTACKERS, make_attacker
from lit_unlearn.attacks.leakage import DEFAULT_ATTACKERS, PROTOCOLS
from lit_unlearn.methods.attribute.base import AttributeUnlearning
from lit_unlearn.runs import build_callbacks, import_object, merge_init_args

__all__ = [
    "DATA_MODES",
    "DataMode",
    "LeakageSpec",
    "RowSpec",
    "TableConfigError",
    "TableSpec",
    "instantiate_callback",
    "load_table",
    "merge_init_args",
]

DataMode = Literal["data_dependent", "data_free"]
DATA_MODES: tuple[DataMode, ...] = ("data_dependent", "data_free")
# The callback mode each data mode admits (AttrCloak's ``mode``; ``auto`` follows the data).
_CALLBACK_MODES: dict[DataMode, tuple[str, ...]] = {
    "data_dependent": ("dd", "auto"),
    "data_free": ("df", "auto"),
}
_TABLE_KEYS = {
    "trainer",
    "data",
    "model",
    "overrides",
    "checkpoint",
    "train_epochs",
    "attributes",
    "seed",
    "repeats",
    "out",
    "wandb_project",
    "mode_overrides",
    "rows",
    "leakage_attackers",
    "leakage_protocols",
    "permutations",
    "leakage_folds",
    "leakage_attacker_args",
    "export",
}
#: Constructor arguments the leakage audit gives its attackers unless the table says otherwise:
#: one XGBoost thread, so the audit neither depends on nor competes for the machine's cores.
DEFAULT_LEAKAGE_ATTACKER_ARGS: dict[str, dict[str, Any]] = {"xgboost": {"n_jobs": 1}}
_ROW_KEYS = {"name", "method", "mode", "epochs", "init_args", "overrides"}


class TableConfigError(ValueError):
    """The table YAML (or a method config it names) is not a valid comparison table."""


@dataclass(frozen=True)
class RowSpec:
    """One row of the table: a callback config, its data mode, its steps and its overrides.

    Attributes:
        name: Display name (unique in the table).
        method: The method config file the callback comes from.
        mode: ``data_dependent`` (retention on the interactions, Eq. 20) or ``data_free``
            (retention = L2 to the original representation, Eq. 21).
        epochs: ``max_epochs`` of the unlearning fit.
        callback: ``{"class_path": ..., "init_args": {...}}`` with the row's overrides merged.
        overrides: CLI overrides of the model/data build of this row only.
    """

    name: str
    method: Path
    mode: DataMode
    epochs: int
    callback: dict[str, Any]
    overrides: tuple[str, ...] = ()

    def build(self, checkpoint: str | None, attributes: list[str] | None) -> AttributeUnlearning:
        """The row's callback, unlearning ``checkpoint`` (the table's, not the config's).

        ``None`` leaves the weights the task starts with (used to validate a row at load).
        """
        config = copy.deepcopy(self.callback)
        config["init_args"] = {
            **config.get("init_args", {}),
            "checkpoint": checkpoint,
            "attributes": attributes,
        }
        return instantiate_callback(config)


@dataclass(frozen=True)
class LeakageSpec:
    """The flip-aware leakage audit of every (row, seed) (:func:`~lit_unlearn.attacks.leakage.
    audit_leakage`): which attackers, under which protocols, with how large a permutation null.

    Attributes:
        attackers: Attacker names (:data:`~lit_unlearn.attacks.audit.ATTACKERS`); empty: no
            leakage audit.
        protocols: ``shadow`` and/or ``kfold``.
        permutations: Label permutations of the null floor (``null_leakage_p95``); 0: none.
        folds: Folds of the ``kfold`` protocol.
        attacker_args: Constructor arguments per attacker name.
    """

    attackers: tuple[str, ...] = DEFAULT_ATTACKERS
    protocols: tuple[str, ...] = PROTOCOLS
    permutations: int = 5
    folds: int = 5
    attacker_args: dict[str, dict[str, Any]] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_LEAKAGE_ATTACKER_ARGS)
    )

    @property
    def enabled(self) -> bool:
        """Whether any attacker runs."""
        return bool(self.attackers)


@dataclass(frozen=True)
class TableSpec:
    """The whole comparison: the stack, the original model, the seeds and the rows."""

    trainer: Path
    data: Path
    model: Path
    rows: tuple[RowSpec, ...]
    overrides: tuple[str, ...] = ()
    checkpoint: Path | None = None
    train_epochs: int = 30
    attributes: list[str] | None = None
    seed: int = 0
    repeats: int = 1
    out: Path = Path("runs/attribute_unlearning")
    wandb_project: str = "lit_unlearn"
    mode_overrides: dict[DataMode, tuple[str, ...]] = field(default_factory=dict)
    leakage: LeakageSpec = field(default_factory=LeakageSpec)
    export: bool = True

    @property
    def configs(self) -> list[str]:
        """The YAML stack in ``--config`` order (later files override earlier ones)."""
        return [str(self.trainer), str(self.data), str(self.model)]

    @property
    def seeds(self) -> list[int]:
        """``seed .. seed + repeats - 1``: unlearning batch order and attackers per repeat."""
        return [self.seed + k for k in range(self.repeats)]

    def row(self, name: str) -> RowSpec:
        """The row called ``name``.

        Raises:
            KeyError: No row has that name.
        """
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row {name!r}; the table has {[r.name for r in self.rows]}")


def instantiate_callback(config: Mapping[str, Any]) -> AttributeUnlearning:
    """Build an attribute-unlearning callback from ``class_path``/``init_args``.

    jsonargparse resolves the class, type-checks and converts every argument and builds
    nested objects (e.g. the ``combiner``) the way ``LightningCLI`` builds
    ``trainer.callbacks`` (:func:`lit_unlearn.runs.build_callbacks`).

    Raises:
        TableConfigError: The class is not an :class:`AttributeUnlearning` or an argument
            does not fit its signature.
    """
    (callback,) = build_callbacks(
        [config], AttributeUnlearning, TableConfigError, message="cannot build callback"
    )
    return cast(AttributeUnlearning, callback)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TableConfigError(f"{where} must be a list of CLI overrides, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item.startswith("--"):
            raise TableConfigError(
                f"{where}: each override is a '--key=value' string, got {item!r}"
            )
    return tuple(value)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TableConfigError(f"{where} must be an integer >= 1, got {value!r}")
    return value


def _existing(value: Any, where: str, what: str) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise TableConfigError(f"{where} must be a path to a {what}, got {value!r}")
    path = Path(value)
    if not path.is_file():
        raise TableConfigError(f"{where}: unknown {what} {str(path)!r} (no such file)")
    return path


def _import(class_path: str, where: str) -> Any:
    return import_object(class_path, TableConfigError, where)


def _method_callback(path: Path, where: str) -> tuple[dict[str, Any], int | None]:
    """The attribute-unlearning callback of a method config and its ``trainer.max_epochs``."""
    text = yaml.safe_load(path.read_text())
    trainer = text.get("trainer", {}) if isinstance(text, dict) else {}
    found = []
    for entry in trainer.get("callbacks", []) or []:
        if not isinstance(entry, dict) or "class_path" not in entry:
            continue
        cls = _import(str(entry["class_path"]), where)
        if isinstance(cls, type) and issubclass(cls, AttributeUnlearning):
            found.append(entry)
    if len(found) != 1:
        raise TableConfigError(
            f"{where}: method config {str(path)!r} must list exactly one attribute-unlearning "
            f"callback under trainer.callbacks, found {len(found)}"
        )
    epochs = trainer.get("max_epochs")
    return copy.deepcopy(found[0]), epochs if isinstance(epochs, int) else None


def _names(value: Any, allowed: Sequence[str], where: str, empty: bool) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TableConfigError(
            f"{where} must be a list of names from {list(allowed)}, got {value!r}"
        )
    names = tuple(value)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise TableConfigError(f"{where}: unknown {unknown}; choose from {list(allowed)}")
    if len(set(names)) != len(names):
        raise TableConfigError(f"{where}: repeated names in {list(names)}")
    if not names and not empty:
        raise TableConfigError(f"{where} must not be empty")
    return names


def _leakage(raw: Mapping[str, Any], path: Path) -> LeakageSpec:
    """The leakage-audit keys of a table YAML; every attacker is built once to check its args."""
    where = f"{path}: "
    attackers = _names(
        raw.get("leakage_attackers", list(DEFAULT_ATTACKERS)),
        sorted(ATTACKERS),
        f"{where}leakage_attackers",
        empty=True,
    )
    protocols = _names(
        raw.get("leakage_protocols", list(PROTOCOLS)),
        PROTOCOLS,
        f"{where}leakage_protocols",
        empty=not attackers,
    )
    permutations = raw.get("permutations", 5)
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 0:
        raise TableConfigError(f"{where}permutations must be an integer >= 0, got {permutations!r}")
    folds = raw.get("leakage_folds", 5)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise TableConfigError(f"{where}leakage_folds must be an integer >= 2, got {folds!r}")
    given = raw.get("leakage_attacker_args") or {}
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise TableConfigError(
            f"{where}leakage_attacker_args maps attacker names to argument mappings, got {given!r}"
        )
    stray = sorted(set(given) - set(attackers))
    if stray:
        raise TableConfigError(
            f"{where}leakage_attacker_args for {stray}, not in leakage_attackers {list(attackers)}"
        )
    args = {
        name: {**DEFAULT_LEAKAGE_ATTACKER_ARGS.get(name, {}), **given.get(name, {})}
        for name in attackers
        if name in given or name in DEFAULT_LEAKAGE_ATTACKER_ARGS
    }
    for name in attackers:  # fail now (bad argument, xgboost missing), not after hours of runs
        try:
            make_attacker(name, **args.get(name, {}))
        except (TypeError, ValueError, ImportError) as err:
            raise TableConfigError(f"{where}leakage attacker {name!r}: {err}") from err
    return LeakageSpec(attackers, protocols, permutations, folds, args)


def _row(raw: Any, index: int) -> RowSpec:
    where = f"rows[{index}]"
    if not isinstance(raw, dict):
        raise TableConfigError(f"{where} must be a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TableConfigError(f"{where} needs a non-empty 'name'")
    where = f"rows[{index}] ({name!r})"
    unknown = set(raw) - _ROW_KEYS
    if unknown:
        raise TableConfigError(
            f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(_ROW_KEYS)}"
        )
    mode = raw.get("mode")
    if mode not in DATA_MODES:
        raise TableConfigError(f"{where}: mode must be one of {list(DATA_MODES)}, got {mode!r}")
    method = _existing(raw.get("method"), f"{where}.method", "method config file")
    callback, config_epochs = _method_callback(method, where)
    init_args = raw.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise TableConfigError(f"{where}.init_args must be a mapping, got {init_args!r}")
    callback["init_args"] = merge_init_args(callback.get("init_args") or {}, init_args)
    callback_mode = callback["init_args"].get("mode", "auto")
    if callback_mode not in _CALLBACK_MODES[mode]:
        # A 'dd' callback on data_free data fails only at setup, after the original model's
        # audit: refuse it while loading instead.
        raise TableConfigError(f"{where}: callback mode {callback_mode!r} cannot run {mode} data")
    epochs = raw.get("epochs", config_epochs)
    if epochs is None:
        raise TableConfigError(f"{where}: no 'epochs' and the method config sets no max_epochs")
    return RowSpec(
        name=name,
        method=method,
        mode=mode,
        epochs=_positive_int(epochs, f"{where}.epochs"),
        callback=callback,
        overrides=_strings(raw.get("overrides"), f"{where}.overrides"),
    )


def load_table(path: str | Path) -> TableSpec:
    """Read and validate a comparison-table YAML (see the module docstring for the schema).

    Raises:
        TableConfigError: Unknown keys, a missing stack or method config file, a row without
            a name, repeated row names, a data mode other than ``data_dependent`` /
            ``data_free``, a callback that is not an attribute-unlearning method or does not
            accept its ``init_args``, a non-positive ``repeats``/``epochs``, or a leakage
            attacker or protocol that does not exist (or whose arguments it refuses).
    """
    path = Path(path)
    if not path.is_file():
        raise TableConfigError(f"no table config {str(path)!r}")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise TableConfigError(f"{path}: the table config must be a mapping")
    unknown = set(raw) - _TABLE_KEYS
    if unknown:
        raise TableConfigError(
            f"{path}: unknown keys {sorted(unknown)}; allowed {sorted(_TABLE_KEYS)}"
        )
    rows_raw = raw.get("rows")
    if not isinstance(rows_raw, list) or not rows_raw:
        raise TableConfigError(f"{path}: 'rows' must be a non-empty list")
    try:
        rows = tuple(_row(r, i) for i, r in enumerate(rows_raw))
    except TableConfigError as err:
        raise TableConfigError(f"{path}: {err}") from err
    names = [r.name for r in rows]
    repeated = sorted({n for n in names if names.count(n) > 1} | ({"Original"} & set(names)))
    if repeated:
        # "Original" is the row of the model before unlearning, which the runner adds itself.
        raise TableConfigError(f"{path}: repeated row names {repeated}")
    for row in rows:  # fail now, not after the original model's audit
        try:
            row.build(None, None)
        except TableConfigError as err:
            raise TableConfigError(f"{path}: row {row.name!r}: {err}") from err
    mode_raw = raw.get("mode_overrides") or {}
    if not isinstance(mode_raw, dict) or set(mode_raw) - set(DATA_MODES):
        raise TableConfigError(
            f"{path}: mode_overrides maps {list(DATA_MODES)} to override lists, got {mode_raw!r}"
        )
    mode_overrides = {
        cast(DataMode, m): _strings(v, f"mode_overrides.{m}") for m, v in mode_raw.items()
    }
    checkpoint = raw.get("checkpoint")
    attributes = raw.get("attributes")
    if attributes is not None and (
        not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes)
    ):
        raise TableConfigError(f"{path}: attributes must be null or a list of names")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TableConfigError(f"{path}: seed must be an integer, got {seed!r}")
    export = raw.get("export", True)
    if not isinstance(export, bool):
        raise TableConfigError(f"{path}: export must be true or false, got {export!r}")
    return TableSpec(
        trainer=_existing(raw.get("trainer"), f"{path}: trainer", "trainer config"),
        data=_existing(raw.get("data"), f"{path}: data", "data config"),
        model=_existing(raw.get("model"), f"{path}: model", "model config"),
        rows=rows,
        overrides=_strings(raw.get("overrides"), f"{path}: overrides"),
        # the checkpoint need not exist yet: `make attrcloak-table` trains it just before
        checkpoint=None if checkpoint is None else Path(checkpoint),
        train_epochs=_positive_int(raw.get("train_epochs", 30), f"{path}: train_epochs"),
        attributes=attributes,
        seed=seed,
        repeats=_positive_int(raw.get("repeats", 1), f"{path}: repeats"),
        out=Path(raw.get("out", "runs/attribute_unlearning")),
        wandb_project=str(raw.get("wandb_project", "lit_unlearn")),
        mode_overrides=mode_overrides,
        leakage=_leakage(raw, path),
        export=export,
    )
