"""Run a comparison table: train or load the original, unlearn it with every row and seed.

Every row starts from the same checkpoint; the model and data of each run are built by
:func:`~lit_unlearn.runs.cli_objects` from the table's stack plus the row's overrides, exactly as
``lit-unlearn fit`` would, and the callback from the row's method config (see :mod:`.config`).
Each result is evaluated on the test split (HR/NDCG under both ranking protocols) and audited by
attackers trained on the shadow users of the *unlearned* representation (AttrCloak Sec. V-A), then
by the flip-aware leakage audit (:func:`lit_unlearn.attacks.leakage.audit_leakage`: the table's
``leakage_attackers`` under its ``leakage_protocols``, with a ``permutations``-label null floor),
which also sees an attribute that is inverted rather than removed (issue 23).

Every (row, seed), the Original's included, is appended to ``out/rows.jsonl`` as it finishes,
with its provenance (torch, threads, device, Python, git commit, host, date) and its
representation exported under ``out/exports/``; a restarted table skips what is already there
(:mod:`.store`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lit_unlearn.attacks.audit import audit_embeddings
from lit_unlearn.attacks.leakage import audit_leakage, check_folds
from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.methods.attribute.experiment.config import LeakageSpec, RowSpec, TableSpec
from lit_unlearn.methods.attribute.experiment.store import (
    ResultStore,
    export_representation,
    fingerprint,
    load_representation,
    original_record,
    row_record,
)
from lit_unlearn.reporting.provenance import provenance
from lit_unlearn.runs import bare_trainer, cli_objects
from lit_unlearn.tasks import RecommenderTask

__all__ = [
    "ORIGINAL",
    "RowResult",
    "TableRun",
    "check_leakage",
    "describe",
    "evaluate",
    "leakage_audit",
    "mode_overrides",
    "run_original",
    "run_row",
    "run_table",
]

#: Name of the row of the model before unlearning.
ORIGINAL = "Original"


@dataclass
class RowResult:
    """One (row, seed): wall time, ranking metrics, audit records and the alpha_u trace summary.

    Attributes:
        method: The row's display name.
        seconds: Wall time of the unlearning fit (0 for the original).
        ranking: ``test/{protocol}/{metric}`` -> value.
        audit: One :meth:`~lit_unlearn.attacks.audit.AuditResult.as_dict` per attribute and
            attacker.
        alpha_u: The privacy weight of the last step (None without steps).
        seed: The seed of the unlearning fit and of the attackers.
        alpha_u_mean: The mean privacy weight over all steps.
        leakage: One :meth:`~lit_unlearn.attacks.leakage.LeakageResult.as_dict` per attribute,
            attacker and protocol (empty when the table runs no leakage audit).
        audit_seconds: Wall time of both audits.
        provenance: :func:`~lit_unlearn.reporting.provenance.provenance` of the run.
        export: The exported representation (``.npz`` relative to the output directory).
        fingerprint: The hash a restart matches to skip this run (:mod:`.store`).
    """

    method: str
    seconds: float
    ranking: dict[str, float]
    audit: list[dict[str, Any]] = field(default_factory=list)
    alpha_u: float | None = None
    seed: int = 0
    alpha_u_mean: float | None = None
    leakage: list[dict[str, Any]] = field(default_factory=list)
    audit_seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    export: str | None = None
    fingerprint: str = ""

    def to_record(self) -> dict[str, Any]:
        """The result as one JSON-able line of ``rows.jsonl``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RowResult:
        """A result back from its line (keys this version does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass
class TableRun:
    """Everything a report needs: the results, the first seed's representations, the data.

    Attributes:
        rows: Every (row, seed) result, the Original's first.
        representations: Row name -> user representation of the first seed (a resumed row
            without its export is missing).
        data: The table's data.
        context: :func:`describe` of the run (the report's header).
        resumed: How many results were read back from ``rows.jsonl`` instead of run.
    """

    rows: list[RowResult]
    representations: dict[str, torch.Tensor]
    data: RecommendationData
    context: dict[str, Any] = field(default_factory=dict)
    resumed: int = 0


def evaluate(
    task: RecommenderTask, data: RecommendationData, attributes: list[str] | None, seed: int
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Test-split ranking metrics (both protocols) and the attribute audit of ``task``."""
    ranking, _ = _test(task, data)
    return ranking, _audit(task, data, attributes, seed)


def _test(task: RecommenderTask, data: RecommendationData) -> tuple[dict[str, float], str]:
    """Test-split ranking metrics and the device they were computed on."""
    trainer = bare_trainer(1)
    metrics = trainer.test(task, data, verbose=False)[0]
    return {k: float(v) for k, v in metrics.items()}, str(trainer.strategy.root_device)


def _audit(
    task: RecommenderTask, data: RecommendationData, attributes: list[str] | None, seed: int
) -> list[dict[str, Any]]:
    audit = audit_embeddings(
        task.user_representation().cpu(), data.user_attributes, names=attributes, seed=seed
    )
    return [r.as_dict() for r in audit]


def leakage_audit(
    representation: torch.Tensor,
    data: RecommendationData,
    leakage: LeakageSpec,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The flip-aware leakage audit of one representation, every attribute of ``data``.

    Attackers, protocols, null permutations and folds as ``leakage`` says, seeded with ``seed``
    (the attackers, folds, validation draws and permutations); the shadow protocol uses the
    data's shadow users, as the existing audit does.

    Returns:
        One :meth:`~lit_unlearn.attacks.leakage.LeakageResult.as_dict` per attribute, attacker
        and protocol (none when ``leakage`` runs no attacker).
    """
    if not leakage.enabled:
        return []
    attributes = data.user_attributes
    results = audit_leakage(
        representation.detach().cpu(),
        {n: attributes.codes[n] for n in attributes.names},
        {n: attributes.num_classes(n) for n in attributes.names},
        attackers=leakage.attackers,
        protocols=leakage.protocols,
        shadow=attributes.shadow,
        n_permutations=leakage.permutations,
        n_folds=leakage.folds,
        seed=seed,
        attacker_args=leakage.attacker_args,
        log=log,
    )
    return [r.as_dict() for r in results]


def check_leakage(spec: TableSpec, data: RecommendationData) -> None:
    """Raise now if the k-fold protocol cannot run on the data (a class smaller than the folds).

    Raises:
        ValueError: An attribute with a class of fewer labelled users than ``leakage_folds``.
    """
    if not spec.leakage.enabled or "kfold" not in spec.leakage.protocols:
        return
    attributes = data.user_attributes
    for name in attributes.names:
        try:
            check_folds(
                attributes.codes[name].numpy(), spec.leakage.folds, attributes.classes[name]
            )
        except ValueError as err:
            raise ValueError(
                f"attribute {name!r}: {err} (leakage_folds in the table YAML)"
            ) from err


def describe(spec: TableSpec, data: RecommendationData) -> dict[str, Any]:
    """The protocol of a table run, for the report headers: audit, seeds, split, ranking."""
    return {
        "attackers": list(spec.leakage.attackers),
        "protocols": list(spec.leakage.protocols),
        "permutations": spec.leakage.permutations,
        "folds": spec.leakage.folds,
        "seeds": spec.seeds,
        "split": str(data.split_kind),
        "ranking_protocols": list(data.protocols),
        "eval_negatives": int(data.num_eval_negatives),
        "shadow_fraction": float(data.shadow_fraction),
        "users": int(data.num_users),
    }


def mode_overrides(spec: TableSpec, row: RowSpec, checkpoint: Path) -> list[str]:
    """The CLI overrides of one row's model/data build, later ones winning.

    The table's own, then what the data mode needs (data-free: the DataModule serves user
    indices of ``checkpoint``'s users instead of interactions, Eq. 21), then the table's
    per-mode overrides, then the row's.
    """
    needed = (
        ["--data.init_args.mode=data_free", f"--data.init_args.user_index={checkpoint}"]
        if row.mode == "data_free"
        else []
    )
    return [*spec.overrides, *needed, *spec.mode_overrides.get(row.mode, ()), *row.overrides]


def run_row(
    row: RowSpec,
    checkpoint: Path,
    spec: TableSpec,
    data: RecommendationData,
    seed: int,
) -> tuple[RowResult, torch.Tensor]:
    """Unlearn ``checkpoint`` with one row and seed; evaluate ranking and the audit (same seed).

    Returns:
        The result (with its leakage audit and provenance; no export or fingerprint yet) and
        the unlearned user representation (on the CPU).
    """
    task, row_data = cli_objects(spec.configs, mode_overrides(spec, row, checkpoint))
    callback = row.build(str(checkpoint), spec.attributes)
    pl.seed_everything(seed, verbose=False)  # after the build: batch order depends on the seed
    trainer = bare_trainer(row.epochs, callbacks=[callback])
    t0 = time.perf_counter()
    trainer.fit(task, row_data)
    seconds = time.perf_counter() - t0
    env = provenance(trainer.strategy.root_device)  # where (and how) the unlearning ran
    # evaluated on the table's data (data-dependent, default batch size) for every row
    ranking, _ = _test(task, data)
    t1 = time.perf_counter()
    audit = _audit(task, data, None, seed)
    rep = task.user_representation().detach().cpu()
    leakage = leakage_audit(rep, data, spec.leakage, seed)
    trace = callback.alpha_trace
    result = RowResult(
        row.name,
        seconds,
        ranking,
        audit,
        alpha_u=None if trace.numel() == 0 else float(trace[-1]),
        seed=seed,
        alpha_u_mean=None if trace.numel() == 0 else float(trace.mean()),
        leakage=leakage,
        audit_seconds=time.perf_counter() - t1,
        provenance=env,
    )
    return result, rep


def run_original(
    original: RecommenderTask, spec: TableSpec, data: RecommendationData, seed: int
) -> RowResult:
    """The Original row of one seed: ranking, both audits (seeded), provenance."""
    ranking, device = _test(original, data)
    env = provenance(device)
    t0 = time.perf_counter()
    audit = _audit(original, data, None, seed)
    rep = original.user_representation().detach().cpu()
    leakage = leakage_audit(rep, data, spec.leakage, seed)
    return RowResult(
        ORIGINAL,
        0.0,
        ranking,
        audit,
        seed=seed,
        leakage=leakage,
        audit_seconds=time.perf_counter() - t0,
        provenance=env,
    )


def run_table(
    spec: TableSpec,
    only: Sequence[str] | None = None,
    fresh: bool = False,
    log: Callable[[str], None] = print,
) -> TableRun:
    """Run the original and every row (or those named in ``only``) for every seed.

    Without ``spec.checkpoint`` the original is trained for ``spec.train_epochs`` and saved as
    ``spec.out / "original.ckpt"`` (reused by a restart unless ``fresh``).

    Each finished (row, seed) is appended to ``spec.out / "rows.jsonl"`` (and, with
    ``spec.export``, its representation written under ``spec.out / "exports"``) at once; the
    (row, seed) runs already there with the current fingerprint are read back instead of run
    (:mod:`.store`), unless ``fresh``.

    Args:
        spec: The table.
        only: Row names to run (default all).
        fresh: Forget ``rows.jsonl`` (and a trained ``original.ckpt``) and run everything.
        log: Progress lines.

    Raises:
        KeyError: ``only`` names a row the table does not have.
        ValueError: The leakage audit's k-fold protocol cannot run on the data.
    """
    rows = [spec.row(name) for name in only] if only else list(spec.rows)
    spec.out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(spec.out)
    if fresh:
        store.clear()
    pl.seed_everything(spec.seed, verbose=False)
    task, data = cli_objects(spec.configs, spec.overrides)
    check_leakage(spec, data)  # before any training: a class too small for the folds
    checkpoint = spec.checkpoint or spec.out / "original.ckpt"
    if spec.checkpoint is None and (fresh or not checkpoint.is_file()):
        trainer = bare_trainer(spec.train_epochs)
        t0 = time.perf_counter()
        trainer.fit(task, data)
        log(f"trained the original model in {time.perf_counter() - t0:.1f} s")
        trainer.save_checkpoint(checkpoint)
    elif spec.checkpoint is None:
        log(f"reusing the original model {checkpoint} (--fresh retrains it)")
    original = RecommenderTask.load_from_checkpoint(checkpoint)
    done = {} if fresh else store.done()
    results: list[RowResult] = []
    reps: dict[str, torch.Tensor] = {ORIGINAL: original.user_representation().detach().cpu()}
    resumed = 0

    def finish(result: RowResult, rep: torch.Tensor | None, key: str) -> None:
        result.fingerprint = key
        if spec.export and rep is not None:
            result.export = export_representation(
                spec.out, result.method, result.seed, rep, data, result.provenance
            )
        store.append(result.to_record())
        results.append(result)

    original_key = fingerprint(original_record(spec, checkpoint))
    for seed in spec.seeds:  # the attackers (and their shadow split) change with the seed
        record = done.get((ORIGINAL, seed, original_key))
        if record is not None:
            results.append(RowResult.from_record(record))
            resumed += 1
            continue
        finish(run_original(original, spec, data, seed), reps[ORIGINAL], original_key)
        log(f"{ORIGINAL} (seed {seed}): audited in {results[-1].audit_seconds:.1f} s")
    for row in rows:
        key = fingerprint(row_record(spec, row, checkpoint))
        for seed in spec.seeds:
            record = done.get((row.name, seed, key))
            if record is not None:
                result = RowResult.from_record(record)
                results.append(result)
                resumed += 1
                rep = load_representation(spec.out, result.export)
                if seed == spec.seeds[0] and rep is not None:
                    reps[row.name] = rep
                log(f"{row.name} (seed {seed}): done before, read from {store.path}")
                continue
            result, rep = run_row(row, checkpoint, spec, data, seed)
            finish(result, rep, key)
            if seed == spec.seeds[0]:
                reps[row.name] = rep
            log(
                f"{row.name} (seed {seed}): {result.seconds:.1f} s, audited in "
                f"{result.audit_seconds:.1f} s"
            )
    return TableRun(results, reps, data, describe(spec, data), resumed)
