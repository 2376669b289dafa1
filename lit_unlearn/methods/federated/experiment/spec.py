"""What a FedAU2 table is made of: backbones x methods x attributes x seeds, read from YAML.

A table config names, for each backbone, the experiment config of its Original run
(``configs/experiment/federated/ml100k_*.yaml``: data, backbone, engine, the observing
adversary head); every cell of the table is that config with the method's changes of the
adversary term (``AdversaryTerm`` init_args) and client-side transforms (APM), the cell's
attribute and seed. See ``configs/experiment/federated/fedau2_ml100k_table1.yaml``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = ["Cell", "FederatedTableError", "MethodSpec", "TableSpec", "load_table"]

Kind = Literal["table1", "curves", "gradient"]


class FederatedTableError(ValueError):
    """A table config that cannot run (named field, what is wrong)."""


@dataclass(frozen=True)
class MethodSpec:
    """One method (row group) of a table.

    Attributes:
        name: Row name (``Original``, ``APM``, ``FedAU2``, ``Global``...).
        term: ``AdversaryTerm`` init_args the method sets on every backbone.
        backbone_term: Extra init_args per backbone name (FedRAP's residual input...).
        transforms: Client-side transforms (``class_path`` / ``init_args`` mappings).
        erasure: ``FederatedErasure`` init_args: erase the attribute after the last round (None:
            no erasure; ``{}``: the defaults). Its seed is the cell's.
        targets: Attributes the method is run for (None: the table's). Original and APM do not
            depend on the attribute (the head only observes), so they run once, on the first.
        backbones: Backbones the method runs on (None: all of the table's).
        erase_from: An earlier method whose trained cell (same backbone, attribute and seed;
            for a method with ``targets``, which has one model for every attribute, its cell of
            the first target) this one erases post hoc, from its checkpoint, without another round
            (:class:`~lit_unlearn.methods.federated.unlearn.FederatedErasureUnlearning`, with
            ``erasure``'s settings). The same model as training that method with the erasure
            in the fit, at the cost of the erasure alone; the server's uploads, hence DLG / iDLG,
            are the source cell's.
    """

    name: str
    term: Mapping[str, Any] = field(default_factory=dict)
    backbone_term: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    transforms: Sequence[Mapping[str, Any]] = ()
    erasure: Mapping[str, Any] | None = None
    targets: tuple[str, ...] | None = None
    backbones: tuple[str, ...] | None = None
    erase_from: str | None = None


@dataclass(frozen=True)
class Cell:
    """One run: a backbone, a method, the attribute its head targets, a seed."""

    backbone: str
    method: MethodSpec
    attribute: str
    seed: int

    @property
    def name(self) -> str:
        """Directory-safe id ``{backbone}-{method}-{attribute}-seed{S}``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.method.name)
        return f"{self.backbone}-{safe}-{self.attribute}-seed{self.seed}"


@dataclass(frozen=True)
class TableSpec:
    """A whole table.

    Attributes:
        kind: How it is rendered: ``table1`` (FedAU2 Table 1), ``curves`` (Fig. 3: attacker
            balanced accuracy and NDCG@10 over rounds), ``gradient`` (Fig. 4: DLG / iDLG).
        out: Output directory (``rows.jsonl``, runs, exports, Markdown / CSV / PNG).
        backbones: Backbone name -> its Original experiment config.
        attributes: Attribute -> number of classes, in table order.
        seeds: Seeds (each seeds the engine and ``seed_everything``; the data split is fixed).
        methods: The methods, in table order.
        embedding_every: Rounds between two embedding attacks (FedAU2's external adversary).
        gradient_at_round: Round of the server's DLG / iDLG attack (FedAU2 App. A.2: 100).
        cli_args: Extra ``lit-unlearn fit`` arguments per backbone (e.g. fewer rounds).
        wandb_project: Log the rendered tables to this W&B project (None: no W&B).
        source: The YAML file it was read from.
    """

    kind: Kind
    out: Path
    backbones: Mapping[str, Path]
    attributes: Mapping[str, int]
    seeds: tuple[int, ...]
    methods: tuple[MethodSpec, ...]
    embedding_every: int = 100
    gradient_at_round: int = 100
    cli_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    wandb_project: str | None = None
    source: Path | None = None

    def cells(self) -> list[Cell]:
        """Every run of the table, seed by seed (then backbone, method, attribute): a table
        stopped part-way has whole seeds done."""
        out = []
        for seed in self.seeds:
            for backbone in self.backbones:
                for method in self.methods:
                    if method.backbones is not None and backbone not in method.backbones:
                        continue
                    targets = method.targets or tuple(self.attributes)
                    for attribute in targets:
                        out.append(Cell(backbone, method, attribute, seed))
        return out

    def method(self, name: str) -> MethodSpec:
        """The method called ``name``."""
        for method in self.methods:
            if method.name == name:
                return method
        raise FederatedTableError(f"no method {name!r} in the table")

    def source_cell(self, cell: Cell) -> Cell | None:
        """The trained cell a post-hoc erasure cell erases (None for a cell that trains)."""
        if cell.method.erase_from is None:
            return None
        source = self.method(cell.method.erase_from)
        attribute = cell.attribute
        if source.targets is not None and attribute not in source.targets:
            # A method run for some attributes only (Original, APM: their head only observes)
            # has one model for all: its first target's cell is erased for this attribute.
            attribute = source.targets[0]
        return Cell(cell.backbone, source, attribute, cell.seed)

    def run_dir(self, cell: Cell) -> Path:
        """Where a cell's logs, checkpoints and attack files go."""
        return self.out / "runs" / cell.name

    def cell_config(self, cell: Cell) -> dict[str, Any]:
        """The ``lit-unlearn fit`` config of ``cell`` (the backbone's, changed by the method).

        A post-hoc erasure cell (``erase_from``) gets its source cell's config, fit for one
        step by ``FederatedErasureUnlearning`` on the source's ``last.ckpt``.

        Raises:
            FederatedTableError: The backbone config has no adversary term to change.
        """
        source = self.source_cell(cell)
        if source is not None:
            return self._erasure_config(cell, source)
        path = self.backbones[cell.backbone]
        config = copy.deepcopy(yaml.safe_load(path.read_text()))
        init = config.get("model", {}).get("init_args", {})
        terms = init.get("terms") or []
        if not terms or "AdversaryTerm" not in str(terms[0].get("class_path", "")):
            raise FederatedTableError(
                f"{path}: model.init_args.terms[0] must be an AdversaryTerm (the table changes it)"
            )
        term_args = dict(terms[0].get("init_args") or {})
        term_args["num_classes"] = self.attributes[cell.attribute]
        term_args.update(cell.method.term)
        term_args.update(cell.method.backbone_term.get(cell.backbone, {}))
        terms[0]["init_args"] = term_args
        init["terms"] = terms
        init["attribute"] = cell.attribute
        init["seed"] = cell.seed
        if cell.method.transforms:
            init["transforms"] = [dict(t) for t in cell.method.transforms]
        if cell.method.erasure is not None:
            init["final_erasure"] = {
                "class_path": "lit_unlearn.methods.federated.FederatedErasure",
                "init_args": {**cell.method.erasure, "seed": cell.seed},
            }
        config["seed_everything"] = cell.seed
        run_dir = self.run_dir(cell)
        trainer = config.setdefault("trainer", {})
        trainer["enable_progress_bar"] = False
        trainer["logger"] = {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(self.out / "runs"), "name": cell.name, "version": ""},
        }
        trainer["callbacks"] = [
            *self._run_callbacks(run_dir),
            {
                "class_path": "lit_unlearn.callbacks.GradientInversionAudit",
                "init_args": {"at_round": self.gradient_at_round, "save_dir": str(run_dir)},
            },
        ]
        return config

    def _run_callbacks(self, run_dir: Path) -> list[dict[str, Any]]:
        """Every cell's checkpoint, final MLP / XGBoost audit and periodic embedding attack."""
        return [
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"dirpath": str(run_dir / "checkpoints"), "save_last": True},
            },
            {
                "class_path": "lit_unlearn.callbacks.AttributeAudit",
                "init_args": {"attackers": ["mlp", "xgboost"], "when": ["fit_end"]},
            },
            {
                "class_path": "lit_unlearn.callbacks.EmbeddingAttack",
                "init_args": {"every_n_rounds": self.embedding_every, "save_dir": str(run_dir)},
            },
        ]

    def _erasure_config(self, cell: Cell, source: Cell) -> dict[str, Any]:
        config = self.cell_config(source)
        config["model"]["init_args"].pop("final_erasure", None)
        run_dir = self.run_dir(cell)
        trainer = config["trainer"]
        trainer["max_epochs"] = 1
        trainer["limit_train_batches"] = 1  # the one step that erases
        trainer.pop("max_steps", None)
        trainer["logger"]["init_args"]["name"] = cell.name
        trainer["callbacks"] = [
            *self._run_callbacks(run_dir),
            {
                "class_path": "lit_unlearn.callbacks.FederatedErasureUnlearning",
                "init_args": {
                    "checkpoint": str(self.run_dir(source) / "checkpoints" / "last.ckpt"),
                    "erasure": {
                        "class_path": "lit_unlearn.methods.federated.FederatedErasure",
                        "init_args": {**(cell.method.erasure or {}), "seed": cell.seed},
                    },
                },
            },
        ]
        if source.attribute != cell.attribute:
            # The source's model trained with another attribute's labels: erase this one.
            trainer["callbacks"][-1]["init_args"]["attribute"] = cell.attribute
        return config


def _int(value: Any, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise FederatedTableError(f"{where} must be an int >= {low}, got {value!r}")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FederatedTableError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _method(
    raw: Any, index: int, attributes: Mapping[str, int], backbones: Sequence[str]
) -> MethodSpec:
    where = f"methods[{index}]"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise FederatedTableError(f"{where} must be a mapping with a 'name'")
    unknown = set(raw) - {
        "name",
        "term",
        "backbone_term",
        "transforms",
        "erasure",
        "targets",
        "backbones",
        "erase_from",
    }
    if unknown:
        raise FederatedTableError(f"{where} ({raw['name']}): unknown keys {sorted(unknown)}")
    backbone_term = {str(k): dict(_mapping(v, f"{where}.backbone_term.{k}"))
                     for k, v in _mapping(raw.get("backbone_term"), where).items()}  # fmt: skip
    stray = set(backbone_term) - set(backbones)
    if stray:
        raise FederatedTableError(f"{where}.backbone_term names no backbone: {sorted(stray)}")
    transforms = raw.get("transforms") or []
    if not isinstance(transforms, list) or any(
        not isinstance(t, Mapping) or "class_path" not in t for t in transforms
    ):
        raise FederatedTableError(f"{where}.transforms must be a list of class_path mappings")
    targets = raw.get("targets")
    if targets is not None:
        if not isinstance(targets, list) or not targets:
            raise FederatedTableError(f"{where}.targets must be a non-empty list")
        missing = [t for t in targets if t not in attributes]
        if missing:
            raise FederatedTableError(f"{where}.targets {missing} are not table attributes")
        targets = tuple(str(t) for t in targets)
    only = raw.get("backbones")
    if only is not None:
        if not isinstance(only, list) or not only or any(b not in backbones for b in only):
            raise FederatedTableError(
                f"{where}.backbones must be a non-empty list of the table's backbones "
                f"{list(backbones)}, got {only!r}"
            )
        only = tuple(str(b) for b in only)
    return MethodSpec(
        name=raw["name"],
        term=dict(_mapping(raw.get("term"), f"{where}.term")),
        backbone_term=backbone_term,
        transforms=tuple(dict(t) for t in transforms),
        erasure=(
            None
            if raw.get("erasure") is None
            else dict(_mapping(raw.get("erasure"), f"{where}.erasure"))
        ),
        targets=targets,
        backbones=only,
        erase_from=_erase_from(raw, where),
    )


def _erase_from(raw: Mapping[str, Any], where: str) -> str | None:
    source = raw.get("erase_from")
    if source is None:
        return None
    if not isinstance(source, str):
        raise FederatedTableError(f"{where}.erase_from must name a method, got {source!r}")
    if raw.get("erasure") is None:
        raise FederatedTableError(f"{where}.erase_from needs `erasure` (its settings; {{}})")
    own = [k for k in ("term", "backbone_term", "transforms") if raw.get(k)]
    if own:
        raise FederatedTableError(
            f"{where}.erase_from erases {source!r}'s trained model as it is: drop {own}"
        )
    return source


def _check_sources(methods: Sequence[MethodSpec], attributes: Mapping[str, int]) -> None:
    """A post-hoc erasure names an earlier, training method with every cell it needs."""
    seen: dict[str, MethodSpec] = {}
    for method in methods:
        source = seen.get(method.erase_from) if method.erase_from is not None else None
        if method.erase_from is not None:
            if source is None:
                raise FederatedTableError(
                    f"method {method.name!r}: erase_from {method.erase_from!r} names no earlier "
                    "method"
                )
            if source.erase_from is not None or source.erasure is not None:
                raise FederatedTableError(
                    f"method {method.name!r}: {source.name!r} erases already (one erasure a model)"
                )
            if method.backbones is None and source.backbones is not None:
                raise FederatedTableError(
                    f"method {method.name!r}: {source.name!r} runs on {list(source.backbones)} "
                    "only (set backbones)"
                )
            stray = set(method.backbones or ()) - set(source.backbones or method.backbones or ())
            if stray:
                raise FederatedTableError(
                    f"method {method.name!r}: {source.name!r} does not run on {sorted(stray)}"
                )
        seen[method.name] = method


def load_table(path: str | Path) -> TableSpec:
    """Read and check a table config (paths are relative to the working directory).

    Raises:
        FederatedTableError: A missing file, an unknown key, a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise FederatedTableError(f"table config {path} does not exist")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, Mapping):
        raise FederatedTableError(f"{path}: expected a mapping at the top level")
    allowed = {"kind", "out", "backbones", "attributes", "seeds", "methods", "embedding_every",
               "gradient_at_round", "cli_args", "wandb_project"}  # fmt: skip
    unknown = set(raw) - allowed
    if unknown:
        raise FederatedTableError(f"{path}: unknown keys {sorted(unknown)}")
    kind = raw.get("kind", "table1")
    if kind not in ("table1", "curves", "gradient"):
        raise FederatedTableError(f"kind must be table1, curves or gradient, got {kind!r}")
    backbones = {str(k): Path(v) for k, v in _mapping(raw.get("backbones"), "backbones").items()}
    if not backbones:
        raise FederatedTableError(f"{path}: no backbones")
    for name, config in backbones.items():
        if not config.is_file():
            raise FederatedTableError(f"backbones.{name}: {config} does not exist")
    attributes = {
        str(k): _int(v, f"attributes.{k}", 2)
        for k, v in _mapping(raw.get("attributes"), "attributes").items()
    }
    if not attributes:
        raise FederatedTableError(f"{path}: no attributes (attribute: number of classes)")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise FederatedTableError("seeds must be a non-empty list of ints")
    methods_raw = raw.get("methods")
    if not isinstance(methods_raw, list) or not methods_raw:
        raise FederatedTableError(f"{path}: no methods")
    methods = tuple(_method(m, i, attributes, list(backbones)) for i, m in enumerate(methods_raw))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise FederatedTableError(f"method names repeat: {names}")
    _check_sources(methods, attributes)
    cli_args = {
        str(k): tuple(str(a) for a in (v or []))
        for k, v in _mapping(raw.get("cli_args"), "cli_args").items()
    }
    stray = set(cli_args) - set(backbones)
    if stray:
        raise FederatedTableError(f"cli_args names no backbone: {sorted(stray)}")
    return TableSpec(
        kind=kind,
        out=Path(raw.get("out") or f"benchmarks/results/{path.stem}"),
        backbones=backbones,
        attributes=attributes,
        seeds=tuple(_int(s, "seeds[]") for s in seeds),
        methods=methods,
        embedding_every=_int(raw.get("embedding_every", 100), "embedding_every", 1),
        gradient_at_round=_int(raw.get("gradient_at_round", 100), "gradient_at_round", 1),
        cli_args=cli_args,
        wandb_project=raw.get("wandb_project"),
        source=path,
    )
