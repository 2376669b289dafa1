"""Running the class-unlearning comparison: one Original per seed, every request, every row.

Per seed the Original is trained on every class once (its wall time is the Original's
``unlearn_s``). Per forgetting request Retrain trains the same stack from scratch on the retain
classes, and each method row unlearns the Original's weights through its callback on a
one-device trainer. Every model is audited on the request's data-dependent split by
:func:`~lit_unlearn.attacks.class_audit.audit_classifier` (A_r, A_f, MIA), timed separately, so
``total_s = unlearn_s + audit seconds`` is DSDA's execution time with evaluation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd
import torch

from lit_unlearn.attacks.class_audit import audit_classifier, save_outputs
from lit_unlearn.datamodules.classification import ClassificationData
from lit_unlearn.methods.class_unlearning.experiment.config import (
    RowSpec,
    TableSpec,
    data_needed,
)
from lit_unlearn.runs import bare_trainer, cli_run_objects
from lit_unlearn.tasks.classification import ClassificationTask

__all__ = ["Synthetic", "run_table"]

#: Synthetic samples a source-free row made: (row name, images in [0, 1], labels, class names).
Synthetic = tuple[str, torch.Tensor, torch.Tensor, tuple[str, ...]]


def _objects(
    spec: TableSpec,
    seed: int,
    forget: Sequence[int | str],
    extra_configs: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> tuple[ClassificationTask, ClassificationData, int]:
    args = [
        *spec.overrides,
        *extra,
        f"--seed_everything={seed}",
        f"--data.init_args.seed={seed}",
        f"--data.init_args.forget_classes={json.dumps(list(forget))}",
    ]
    model, data, trainer = cli_run_objects(
        [*spec.configs, *extra_configs], args, ClassificationTask, ClassificationData
    )
    return model, data, int(trainer.max_epochs or 0)


def _timed_fit(task: ClassificationTask, dm: ClassificationData, trainer: pl.Trainer) -> float:
    start = time.perf_counter()
    trainer.fit(task, dm)
    return time.perf_counter() - start


def _record(
    name: str,
    needs: str,
    seed: int,
    forget: Sequence[int | str],
    seconds: float,
    audit: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "method": name,
        "data_needed": needs,
        "seed": seed,
        "forget": ",".join(str(c) for c in forget),
        "k": len(forget),
        "A_r": audit.get("A_r"),
        "A_f": audit.get("A_f"),
        "MIA": audit.get("MIA"),
        "acc": audit.get("acc"),
        "unlearn_s": seconds,
        "total_s": seconds + audit["seconds"],
        **(extra or {}),
    }


def _method_extras(callback: Any) -> dict[str, Any]:
    """Per-run diagnostics a callback exposes (synthesis cost, score evaluations, epochs)."""
    extras: dict[str, Any] = {}
    for key in ("synthesis_s", "score_evals"):
        value = getattr(callback, key, None)
        if isinstance(value, int | float) and value:
            extras[key] = value
    return extras


def _synthetic(name: str, dm: ClassificationData) -> Synthetic | None:
    try:
        data = dm.dataset("synthetic")
    except RuntimeError:  # the row attached none (not a synthesis method)
        return None
    return name, data.images, data.labels, dm.class_names


def run_row(
    spec: TableSpec, row: RowSpec, seed: int, forget: Sequence[int | str], checkpoint: Path
) -> tuple[ClassificationTask, ClassificationData, Any, float]:
    """Unlearn the seed's Original with one row's method; the fitted task, data, callback, s."""
    task, dm, _ = _objects(spec, seed, forget, [str(row.method)], row.overrides)
    callback = row.build(str(checkpoint), seed)
    seconds = _timed_fit(task, dm, bare_trainer(row.epochs, callbacks=[callback]))
    return task, dm, callback, seconds


def run_table(
    spec: TableSpec,
    progress: Callable[[pd.DataFrame], None] | None = None,
) -> tuple[pd.DataFrame, list[Synthetic]]:
    """Every (seed, request, row) trained, unlearned and audited.

    Args:
        spec: The parsed table.
        progress: Called with the results so far after every request (partial results
            survive an interrupted run).

    Returns:
        One row per run, and the synthetic samples of the first seed's first request (one
        entry per row that synthesised any).
    """
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    samples: list[Synthetic] = []

    def export(name: str, seed: int, forget: Sequence[int | str], outputs: Any, dm: Any) -> None:
        if spec.export:
            tag = "_".join(str(c) for c in forget)
            stem = "".join(ch if ch.isalnum() else "_" for ch in name)
            save_outputs(out / "outputs" / f"{stem}_seed{seed}_forget{tag}.npz", outputs, dm)

    for seed in spec.seeds:
        original, dm_all, epochs = _objects(
            spec, seed, [], extra=["--data.init_args.train_on=all",
                                   "--data.init_args.mode=data_dependent"]
        )  # fmt: skip
        original_s = _timed_fit(original, dm_all, bare_trainer(epochs))
        checkpoint = out / f"original_seed{seed}.ckpt"
        torch.save({"state_dict": original.state_dict()}, checkpoint)
        for forget in spec.forget_classes:
            _, dm, _ = _objects(spec, seed, forget, extra=["--data.init_args.mode=data_dependent"])
            dm.load()
            original.attach_data(dm)
            if spec.original:
                audit, outputs = audit_classifier(original, dm, seed=seed)
                rows.append(_record("Original", "-", seed, forget, original_s, audit))
                export("Original", seed, forget, outputs, dm)
            if spec.retrain:
                task, dm_r, epochs = _objects(
                    spec, seed, forget, extra=["--data.init_args.train_on=retain",
                                               "--data.init_args.mode=data_dependent"]
                )  # fmt: skip
                seconds = _timed_fit(task, dm_r, bare_trainer(epochs))
                audit, outputs = audit_classifier(task, dm, seed=seed)
                rows.append(_record("Retrain", "D_r", seed, forget, seconds, audit))
                export("Retrain", seed, forget, outputs, dm)
            for row in (r for r in spec.rows if r.runs_on(forget)):
                task, dm_row, callback, seconds = run_row(spec, row, seed, forget, checkpoint)
                audit, outputs = audit_classifier(task, dm, seed=seed)
                needs = data_needed(callback)
                extras = _method_extras(callback)
                rows.append(_record(row.name, needs, seed, forget, seconds, audit, extras))
                export(row.name, seed, forget, outputs, dm)
                first = seed == spec.seeds[0] and forget == spec.forget_classes[0]
                found = _synthetic(row.name, dm_row) if first else None
                if found is not None:
                    samples.append(found)
            if progress is not None:
                progress(pd.DataFrame(rows))
    return pd.DataFrame(rows), samples
