"""The table YAML of the class-unlearning comparison: parsed and checked before any training.

Schema (every path repository-relative or absolute)::

    configs: [configs/experiment/class_unlearning/digits_cnn.yaml]  # the Original's fit stack
    overrides: []                   # extra --key=value for every fit
    seeds: [0, 1, 2]                # one Original per seed
    forget_classes: [[0], [3], [7], [0, 1], [0, 1, 2, 3]]  # requests (indices or names); k = size
    original: true                  # the Original row (the model before unlearning)
    retrain: true                   # Retrain: the Original's schedule on the retain classes only
    rows:                           # one row per unlearning method
      - name: DSDA
        method: configs/method/class_unlearning/dsda.yaml   # its callback + data section
        epochs: 5                   # default: the method config's trainer.max_epochs
        init_args: {lr: 0.0003}     # merged into the callback's init_args
        overrides: []               # extra --key=value for this row's fits
        sizes: [1]                  # only requests of these sizes k (default: every request)
    out: runs/class_unlearning
    export: false                   # per-run model outputs (.npz, source image ids)
    wandb_project: null

A row's method config is put on top of the stack (``lit-unlearn fit --config stack --config
method``), so its ``data`` section (mode, train_on) applies; its one unlearning callback is
built as LightningCLI builds ``trainer.callbacks``, with the row's ``init_args`` merged in, the
Original of the seed as ``checkpoint`` and, when the callback takes one, the run's ``seed``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from lit_unlearn.runs import build_callbacks, import_object, merge_init_args
from lit_unlearn.unlearning.base import UnlearningCallback

__all__ = ["RowSpec", "TableConfigError", "TableSpec", "data_needed", "load_table"]

_KEYS = {"configs", "overrides", "seeds", "forget_classes", "original", "retrain", "rows",
         "out", "export", "wandb_project"}  # fmt: skip
_ROW_KEYS = {"name", "method", "epochs", "init_args", "overrides", "sizes"}
BUILT_IN = ("Original", "Retrain")


class TableConfigError(ValueError):
    """A table YAML that cannot describe the comparison."""


def data_needed(method: Any) -> str:
    """The training data a method reads, as DSDA's Table 1 shows it: ``D_r, D_f`` or ``none``.

    Read from the callback class's ``data_needed`` (a tuple of ``D_r`` / ``D_f``); ``?`` when
    the class does not say.
    """
    needs = getattr(method, "data_needed", None)
    if needs is None:
        return "?"
    return ", ".join(needs) if needs else "none (source-free)"


@dataclass(frozen=True)
class RowSpec:
    """One method row: its method config, epochs, callback spec and extra overrides."""

    name: str
    method: Path
    epochs: int
    callback: dict[str, Any]
    overrides: tuple[str, ...] = ()
    #: init_args the row sets itself (a seed set here is not replaced by the run's).
    row_args: frozenset[str] = frozenset()
    #: Request sizes k the row runs on (None: every request).
    sizes: tuple[int, ...] | None = None

    def runs_on(self, forget: Sequence[object]) -> bool:
        """Whether the row runs on a request of this many classes."""
        return self.sizes is None or len(forget) in self.sizes

    @property
    def callback_class(self) -> type:
        """The unlearning callback class the row runs."""
        return cast(type, import_object(str(self.callback["class_path"]), TableConfigError))

    def build(self, checkpoint: str | None, seed: int | None) -> UnlearningCallback[Any]:
        """The row's callback, unlearning ``checkpoint`` with the run's ``seed``.

        A ``seed`` the row's ``init_args`` set explicitly is kept (the same synthesis for
        every run); otherwise a callback that takes a seed gets the run's.
        """
        spec = copy.deepcopy(self.callback)
        args = dict(spec.get("init_args") or {})
        args["checkpoint"] = checkpoint
        takes_seed = "seed" in inspect.signature(self.callback_class).parameters
        if seed is not None and takes_seed and "seed" not in self.row_args:
            args["seed"] = seed
        spec["init_args"] = args
        (callback,) = build_callbacks(
            [spec], UnlearningCallback, TableConfigError, message=f"row {self.name!r}:"
        )
        return cast(UnlearningCallback[Any], callback)


@dataclass(frozen=True)
class TableSpec:
    """A parsed table YAML (see the module docstring)."""

    configs: list[str]
    out: str
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    forget_classes: list[list[int | str]] = field(default_factory=lambda: [[0]])
    original: bool = True
    retrain: bool = True
    rows: tuple[RowSpec, ...] = ()
    overrides: list[str] = field(default_factory=list)
    export: bool = False
    wandb_project: str | None = None

    @property
    def names(self) -> list[str]:
        """Row names in table order (Original and Retrain first when on)."""
        built_in = [n for n, on in zip(BUILT_IN, (self.original, self.retrain), strict=True) if on]
        return [*built_in, *(r.name for r in self.rows)]


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TableConfigError(f"{where} must be a list of '--key=value' overrides, got {value!r}")
    bad = [v for v in value if not isinstance(v, str) or not v.startswith("--")]
    if bad:
        raise TableConfigError(f"{where}: each override is a '--key=value' string, got {bad!r}")
    return [str(v) for v in value]


def _method_callback(path: Path, where: str) -> tuple[dict[str, Any], int | None]:
    """The one unlearning callback of a method config and its ``trainer.max_epochs``."""
    text = yaml.safe_load(path.read_text(encoding="utf-8"))
    trainer = text.get("trainer", {}) if isinstance(text, dict) else {}
    found = []
    for entry in (trainer or {}).get("callbacks", []) or []:
        if not isinstance(entry, dict) or "class_path" not in entry:
            continue
        cls = import_object(str(entry["class_path"]), TableConfigError, where)
        if isinstance(cls, type) and issubclass(cls, UnlearningCallback):
            found.append(entry)
    if len(found) != 1:
        raise TableConfigError(
            f"{where}: method config {str(path)!r} must list exactly one unlearning callback "
            f"under trainer.callbacks, found {len(found)}"
        )
    epochs = (trainer or {}).get("max_epochs")
    return copy.deepcopy(found[0]), epochs if isinstance(epochs, int) else None


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
    method_raw = raw.get("method")
    if not isinstance(method_raw, str) or not Path(method_raw).is_file():
        raise TableConfigError(f"{where}: method config {method_raw!r} not found")
    method = Path(method_raw)
    callback, config_epochs = _method_callback(method, where)
    init_args = raw.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise TableConfigError(f"{where}.init_args must be a mapping, got {init_args!r}")
    callback["init_args"] = merge_init_args(callback.get("init_args") or {}, init_args)
    epochs = raw.get("epochs", config_epochs)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise TableConfigError(
            f"{where}: epochs must be an integer >= 0 (or set trainer.max_epochs in the method "
            f"config), got {epochs!r}"
        )
    sizes = raw.get("sizes")
    if sizes is not None and (
        not isinstance(sizes, list)
        or not sizes
        or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in sizes)
    ):
        raise TableConfigError(f"{where}: sizes must be a non-empty list of integers >= 1")
    row = RowSpec(
        name=name,
        method=method,
        epochs=epochs,
        callback=callback,
        overrides=tuple(_strings(raw.get("overrides"), f"{where}.overrides")),
        row_args=frozenset(init_args),
        sizes=None if sizes is None else tuple(sizes),
    )
    row.build(None, 0)  # fail now, not after the Original's training
    return row


def load_table(
    path: str | Path,
    seeds: list[int] | None = None,
    out: str | None = None,
    overrides: Sequence[str] = (),
) -> TableSpec:
    """Read and check a table YAML; command-line values replace the file's.

    Raises:
        TableConfigError: Unknown keys, no config / seed / request, a missing stack or method
            config, a method config without exactly one unlearning callback, init_args its
            callback refuses, repeated or reserved row names, negative epochs.
    """
    path = Path(path)
    if not path.is_file():
        raise TableConfigError(f"table config {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise TableConfigError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - _KEYS
    if unknown:
        raise TableConfigError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    configs = [str(c) for c in raw.get("configs") or []]
    if not configs:
        raise TableConfigError(f"{path}: 'configs' names no lit-unlearn fit config")
    missing = [c for c in configs if not Path(c).is_file()]
    if missing:
        raise TableConfigError(f"{path}: config file(s) not found: {missing}")
    requests = raw.get("forget_classes") or []
    if not requests or not all(isinstance(r, list) and r for r in requests):
        raise TableConfigError(
            f"{path}: 'forget_classes' must be a non-empty list of non-empty class lists"
        )
    rows_raw = raw.get("rows") or []
    if not isinstance(rows_raw, list):
        raise TableConfigError(f"{path}: 'rows' must be a list of method rows")
    try:
        rows = tuple(_row(r, i) for i, r in enumerate(rows_raw))
    except TableConfigError as err:
        raise TableConfigError(f"{path}: {err}") from err
    names = [r.name for r in rows]
    clash = sorted({n for n in names if names.count(n) > 1} | (set(BUILT_IN) & set(names)))
    if clash:
        raise TableConfigError(f"{path}: repeated or reserved row names {clash}")
    original, retrain = bool(raw.get("original", True)), bool(raw.get("retrain", True))
    if not (rows or original or retrain):
        raise TableConfigError(f"{path}: no row to run (original, retrain and rows all off)")
    chosen = list(seeds) if seeds else [int(s) for s in raw.get("seeds") or [0]]
    return TableSpec(
        configs=configs,
        out=str(out or raw.get("out") or "runs/class_unlearning"),
        seeds=chosen,
        forget_classes=[list(r) for r in requests],
        original=original,
        retrain=retrain,
        rows=rows,
        overrides=[*_strings(raw.get("overrides"), f"{path}: overrides"), *overrides],
        export=bool(raw.get("export", False)),
        wandb_project=raw.get("wandb_project"),
    )
