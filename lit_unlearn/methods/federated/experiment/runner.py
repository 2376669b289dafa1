"""Run a table's cells, one ``lit-unlearn fit`` + test each, and keep what they measured.

Each cell is fit in this process from its generated config (``<out>/configs/<cell>.yaml``)
and tested on the last round's model (the table reports the model the federation ends with,
not a checkpoint picked on validation). Its record, appended to ``<out>/rows.jsonl`` as soon as
it is done, holds the test ranking under both protocols, the embedding attacker on every
attribute at every attack round (FedAU2's outside adversary), the MLP / XGBoost audit, the
server's DLG / iDLG at ``gradient_at_round``, the validation NDCG over rounds, the wall time and
the provenance; the final user representations are exported with raw user ids
(``<out>/exports/<cell>.npz``). A restarted table skips every cell whose record has the same
config fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lit_unlearn.datamodules.federated import FederatedData
from lit_unlearn.methods.federated.experiment.spec import Cell, FederatedTableError, TableSpec
from lit_unlearn.methods.federated.task import FederatedTask
from lit_unlearn.reporting.jsonl import JsonlStore
from lit_unlearn.reporting.provenance import provenance
from lit_unlearn.runs import cli_run_objects

__all__ = ["config_fingerprint", "recorded", "run_cell", "run_table"]


def config_fingerprint(config: dict[str, Any], cli_args: tuple[str, ...]) -> str:
    """A short hash of everything that decides a cell's numbers (config + CLI arguments)."""
    text = json.dumps([config, list(cli_args)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _callback(trainer: Any, name: str) -> Any:
    for cb in trainer.callbacks:
        if type(cb).__name__ == name:
            return cb
    raise RuntimeError(f"the cell's trainer has no {name} callback")


def _curve(metrics_csv: Path) -> list[dict[str, float]]:
    """Validation ranking over rounds from the cell's CSV log."""
    if not metrics_csv.is_file():
        return []
    frame = pd.read_csv(metrics_csv)
    cols = [c for c in frame.columns if c.startswith("val/")]
    if not cols:
        return []
    frame = frame.dropna(subset=cols, how="all")
    return [
        {"round": int(row["step"]) + 1, **{c: float(row[c]) for c in cols if pd.notna(row[c])}}
        for _, row in frame.iterrows()
    ]


def _erasure(task: FederatedTask) -> dict[str, Any] | None:
    """What the final erasure did (None when the cell has none)."""
    plan = task.erasure_plan
    if plan is None:
        return None
    return {
        "rank": plan.rank,
        "shrink": plan.shrink.tolist(),
        "eigenvalues": plan.eigenvalues.tolist(),
        "null_mean": plan.null_mean.tolist(),
        "null_quantile": plan.null_quantile.tolist(),
        "class_shift_norm": plan.class_shift.norm(dim=1).tolist(),
        "ridge": plan.ridge,
    }


def run_cell(
    spec: TableSpec, cell: Cell, source_record: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fit and test one cell; return its record (nothing is appended here).

    Args:
        spec: The table.
        cell: The cell.
        source_record: For a post-hoc erasure cell (``erase_from``), the record of the trained
            cell it erases: its uploads' DLG / iDLG, its attacks before the last round, its
            validation curve and its training time carry over.

    Raises:
        FederatedTableError: A post-hoc erasure cell without its source's record or checkpoint.
    """
    config = spec.cell_config(cell)
    source = spec.source_cell(cell)
    if source is not None:
        checkpoint = spec.run_dir(source) / "checkpoints" / "last.ckpt"
        if source_record is None or not checkpoint.is_file():
            raise FederatedTableError(
                f"{cell.name} erases the trained model of {source.name}, but its "
                f"{'checkpoint ' + str(checkpoint) if source_record else 'record'} is missing "
                "(runs/ are not kept between machines): forget its record (remove its line "
                "from rows.jsonl, or --fresh) and run the table again"
            )
    run_dir = spec.run_dir(cell)
    if run_dir.exists():
        # A cell without a record was killed part-way: start it over (its record decides).
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    config_path = spec.out / "configs" / f"{cell.name}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    extra = spec.cli_args.get(cell.backbone, ())
    task, data, trainer = cli_run_objects(
        [str(config_path)], extra, FederatedTask, FederatedData, logger=True
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    fit_seconds = time.perf_counter() - start
    tested = trainer.test(task, datamodule=data, verbose=False)
    test = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    embedding = _callback(trainer, "EmbeddingAttack")
    attacks = {
        int(r): [res.as_dict() for res in results] for r, results in embedding.history.items()
    }
    audit = _callback(trainer, "AttributeAudit")
    audits = [r.as_dict() for r in audit.results.get("fit_end", [])]
    final_round = int(task.rounds_done)
    export = spec.out / "exports" / f"{cell.name}.npz"
    produced = run_dir / f"representations_round{final_round}.npz"
    if produced.is_file():
        export.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(produced, export)
    record = {
        "backbone": cell.backbone,
        "method": cell.method.name,
        "attribute": cell.attribute,
        "seed": cell.seed,
        "fingerprint": config_fingerprint(config, extra),
        "rounds": final_round,
        "fit_seconds": fit_seconds,
        "seconds_per_round": fit_seconds / max(final_round, 1),
        "test": test,
        "attacks": attacks,
        "audit": audits,
        "gradient": [],
        "curve": _curve(run_dir / "metrics.csv"),
        "erasure": _erasure(task),
        "export": str(export) if export.is_file() else None,
        "config": str(config_path),
        "provenance": provenance(),
    }
    if source is None:
        record["gradient"] = [
            r.as_dict() for r in _callback(trainer, "GradientInversionAudit").results
        ]
        return record
    assert source_record is not None
    # The trained model is the source's: its rounds, uploads and curve; the erasure only
    # changes the final representation (attacked again at the final round, after it).
    earlier = {int(r): v for r, v in source_record["attacks"].items() if int(r) < final_round}
    total = float(source_record["fit_seconds"]) + fit_seconds
    record.update(
        derived_from=source.name,
        erasure_seconds=fit_seconds,
        fit_seconds=total,
        seconds_per_round=total / max(final_round, 1),
        attacks={**earlier, **attacks},
        gradient=carried_gradient(source, cell, source_record),
        curve=source_record["curve"],
    )
    return record


def carried_gradient(
    source: Cell, cell: Cell, source_record: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The source's DLG / iDLG results a post-hoc erasure cell reports as its own.

    The uploads are the source's; their head learnt the source's attribute, so its DLG / iDLG
    recover that one. A cell erasing another attribute reports none (they would read as the
    recovery of its own attribute).
    """
    if source.attribute != cell.attribute:
        return []
    return list(source_record["gradient"])


def _selected(spec: TableSpec, cell: Cell, only: set[str]) -> bool:
    return selected(spec, cell.backbone, cell.method.name, cell.attribute, only)


def selected(spec: TableSpec, backbone: str, method: str, attribute: str, only: set[str]) -> bool:
    """Whether ``--only`` picks this (backbone, method, attribute): each axis ``only`` names
    narrows that axis, the others stay whole."""
    axes = (
        (set(spec.backbones), backbone),
        ({m.name for m in spec.methods}, method),
        (set(spec.attributes), attribute),
    )
    return all(not (names & only) or value in only for names, value in axes)


def recorded(spec: TableSpec) -> list[dict[str, Any]]:
    """The records of the table's current cells, in cell order (what ``--render-only`` draws).

    A record counts when its cell and config fingerprint match a cell of ``spec`` (the last one
    wins); records of an earlier config of a cell (another fingerprint) are left out, as are
    cells without a record.
    """
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in JsonlStore(spec.out).records():
        latest[(r["backbone"], r["method"], r["attribute"], int(r["seed"]), r["fingerprint"])] = r
    out = []
    for cell in spec.cells():
        fp = config_fingerprint(spec.cell_config(cell), spec.cli_args.get(cell.backbone, ()))
        record = latest.get((cell.backbone, cell.method.name, cell.attribute, cell.seed, fp))
        if record is not None:
            out.append(record)
    return out


def run_table(
    spec: TableSpec, only: set[str] | None = None, fresh: bool = False
) -> list[dict[str, Any]]:
    """Run every cell not already in ``rows.jsonl`` (resume); return the table's records.

    Args:
        spec: The table.
        only: Run only the cells these names select (others are kept as recorded): names of
            backbones, methods and attributes, each kind narrowing its own axis (``{"FedVAE",
            "FedAU2", "gender"}`` = FedVAE's FedAU2 cells for gender); a kind not named is
            not narrowed.
        fresh: Forget the recorded cells first.
    """
    store = JsonlStore(spec.out)
    if fresh:
        store.clear()

    def key(backbone: str, method: str, attribute: str, seed: int, fp: str) -> tuple[Any, ...]:
        return backbone, method, attribute, seed, fp

    done = {
        key(r["backbone"], r["method"], r["attribute"], int(r["seed"]), r["fingerprint"]): r
        for r in store.records()
    }

    def cell_key(cell: Cell) -> tuple[Any, ...]:
        fp = config_fingerprint(spec.cell_config(cell), spec.cli_args.get(cell.backbone, ()))
        return key(cell.backbone, cell.method.name, cell.attribute, cell.seed, fp)

    def run(cell: Cell) -> dict[str, Any]:
        source = spec.source_cell(cell)
        source_record = None
        if source is not None:
            # A post-hoc erasure needs its trained cell: run it first when it has no record.
            source_record = done.get(cell_key(source))
            if source_record is None:
                source_record = run(source)
        print(f"[fedau2 table] {cell.name}", flush=True)
        record = run_cell(spec, cell, source_record)
        store.append(record)
        done[cell_key(cell)] = record
        return record

    records = []
    for cell in spec.cells():
        k = cell_key(cell)
        if k in done:
            records.append(done[k])
            continue
        if only is not None and not _selected(spec, cell, only):
            continue
        records.append(run(cell))
    return records
