"""Run a comparison table: train or load the original, unlearn it with every row and seed.

Every row starts from the same checkpoint; the model and data of each run are built by
:func:`~lit_unlearn.runs.cli_objects` from the table's stack plus the row's overrides, exactly as
``lit-unlearn fit`` would, and the callback from the row's method config (see :mod:`.config`).
Each result is evaluated on the test split (HR/NDCG under both ranking protocols) and audited by
attackers trained on the shadow users of the *unlearned* representation (AttrCloak Sec. V-A).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lit_unlearn.attacks.audit import audit_embeddings
from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.methods.attribute.experiment.config import RowSpec, TableSpec
from lit_unlearn.runs import bare_trainer, cli_objects
from lit_unlearn.tasks import RecommenderTask

__all__ = [
    "ORIGINAL",
    "RowResult",
    "TableRun",
    "evaluate",
    "mode_overrides",
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
    """

    method: str
    seconds: float
    ranking: dict[str, float]
    audit: list[dict[str, Any]] = field(default_factory=list)
    alpha_u: float | None = None
    seed: int = 0
    alpha_u_mean: float | None = None


@dataclass
class TableRun:
    """Everything a report needs: the results, the first seed's representations, the data."""

    rows: list[RowResult]
    representations: dict[str, torch.Tensor]
    data: RecommendationData


def evaluate(
    task: RecommenderTask, data: RecommendationData, attributes: list[str] | None, seed: int
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Test-split ranking metrics (both protocols) and the attribute audit of ``task``."""
    metrics = bare_trainer(1).test(task, data, verbose=False)[0]
    ranking = {k: float(v) for k, v in metrics.items()}
    audit = audit_embeddings(
        task.user_representation().cpu(), data.user_attributes, names=attributes, seed=seed
    )
    return ranking, [r.as_dict() for r in audit]


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
        The result and the unlearned user representation (on the CPU).
    """
    task, row_data = cli_objects(spec.configs, mode_overrides(spec, row, checkpoint))
    callback = row.build(str(checkpoint), spec.attributes)
    pl.seed_everything(seed, verbose=False)  # after the build: batch order depends on the seed
    trainer = bare_trainer(row.epochs, callbacks=[callback])
    t0 = time.perf_counter()
    trainer.fit(task, row_data)
    seconds = time.perf_counter() - t0
    # evaluated on the table's data (data-dependent, default batch size) for every row
    ranking, audit = evaluate(task, data, None, seed)
    trace = callback.alpha_trace
    result = RowResult(
        row.name,
        seconds,
        ranking,
        audit,
        alpha_u=None if trace.numel() == 0 else float(trace[-1]),
        seed=seed,
        alpha_u_mean=None if trace.numel() == 0 else float(trace.mean()),
    )
    return result, task.user_representation().cpu()


def run_table(spec: TableSpec, only: Sequence[str] | None = None) -> TableRun:
    """Run the original and every row (or those named in ``only``) for every seed.

    Without ``spec.checkpoint`` the original is trained for ``spec.train_epochs`` and saved as
    ``spec.out / "original.ckpt"``.

    Raises:
        KeyError: ``only`` names a row the table does not have.
    """
    rows = [spec.row(name) for name in only] if only else list(spec.rows)
    spec.out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(spec.seed, verbose=False)
    task, data = cli_objects(spec.configs, spec.overrides)
    checkpoint = spec.checkpoint or spec.out / "original.ckpt"
    if spec.checkpoint is None:
        trainer = bare_trainer(spec.train_epochs)
        t0 = time.perf_counter()
        trainer.fit(task, data)
        print(f"trained the original model in {time.perf_counter() - t0:.1f} s", flush=True)
        trainer.save_checkpoint(checkpoint)
    original = RecommenderTask.load_from_checkpoint(checkpoint)
    results = []
    for seed in spec.seeds:  # the attackers (and their shadow split) change with the seed
        ranking, audit = evaluate(original, data, None, seed)
        results.append(RowResult(ORIGINAL, 0.0, ranking, audit, seed=seed))
    reps = {ORIGINAL: original.user_representation().cpu()}
    for row in rows:
        for seed in spec.seeds:
            result, rep = run_row(row, checkpoint, spec, data, seed)
            results.append(result)
            if seed == spec.seeds[0]:
                reps[row.name] = rep
            print(f"{row.name} (seed {seed}): {result.seconds:.1f} s", flush=True)
    return TableRun(results, reps, data)
