"""Repetitions into one table: quality means (with bootstrap intervals), time medians,
speed-ups over Retrain, and the environments the times were measured in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lit_unlearn.methods.interaction.experiment.bootstrap import confidence_table
from lit_unlearn.methods.interaction.experiment.config import BACKBONE, ORIGINAL, REFERENCE
from lit_unlearn.methods.interaction.experiment.provenance import PROVENANCE
from lit_unlearn.methods.interaction.experiment.store import read_rows

__all__ = ["aggregate", "merge"]


def aggregate(rows: Sequence[dict[str, Any]], order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean quality over repetitions, median time, speed-up = median Retrain time / time.

    Args:
        rows: Per-repetition rows (``seed``, ``method``, metrics, ``seconds``, ``epochs``).
        order: Table order of the methods (the experiment's rows); methods not in it follow in
            the order they first appear. None: the order they first appear.
    """
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "per_user"} for r in rows])
    skip = {"seed", "method", "seconds", "solver_seconds", "epochs", "export"}
    skip |= {*BACKBONE, *PROVENANCE}
    quality = [
        c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
    ]
    grouped = frame.groupby("method", sort=False)
    table = grouped[quality].mean()
    table["seconds"] = grouped["seconds"].median()
    table["epochs"] = grouped["epochs"].median()
    if "solver_seconds" in frame:
        table["solver_seconds"] = grouped["solver_seconds"].median()
    retrain = float(table["seconds"][REFERENCE])
    table["speedup"] = retrain / table["seconds"]
    # Per repetition, Retrain's time over the method's (both measured minutes apart in the same
    # run): less sensitive to the machine's load drifting over a long run than the ratio of
    # medians, and its spread shows how far one run can be trusted.
    per_run = frame.pivot_table(index="seed", columns="method", values="seconds")
    ratios = per_run.rdiv(per_run[REFERENCE], axis=0)
    table["speedup_run_median"] = ratios.median()
    table["speedup_run_min"] = ratios.min()
    table["speedup_run_max"] = ratios.max()
    run_columns = ["speedup", "speedup_run_median", "speedup_run_min", "speedup_run_max"]
    if ORIGINAL in table.index:  # trained on D_a: not an unlearner, no speed-up
        table.loc[ORIGINAL, run_columns] = float("nan")
    if any("per_user" in r for r in rows):
        table = table.join(confidence_table(rows))
    for column in PROVENANCE:  # what the times were measured on, every value met
        if column in frame:
            table[column] = grouped[column].agg(_distinct)
    if order is None:
        return table
    listed = [m for m in order if m in table.index]
    return table.reindex(listed + [m for m in table.index if m not in listed])


def _distinct(values: pd.Series) -> str:
    return " | ".join(dict.fromkeys(str(v) for v in values.dropna()))


def _read(path: Path) -> pd.DataFrame:
    """A ``results.csv``, or a ``rows.jsonl`` (per-user values kept in a ``per_user`` column)."""
    if Path(path).suffix == ".jsonl":
        return pd.DataFrame(read_rows(Path(path)))
    return pd.read_csv(path)


def merge(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Rows of several ``results.csv`` or ``rows.jsonl`` files (repetitions run in separate
    invocations; only ``rows.jsonl`` keeps the per-user values the confidence intervals need).

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: A file lacks the ``seed``/``method``/``seconds`` columns, or two files hold
            the same (seed, method) row: a repetition would be counted twice.
    """
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--merge: no results file at {path}")
        frame = _read(path)
        missing = {"seed", "method", "seconds"} - set(frame.columns)
        if missing:
            raise ValueError(f"--merge: {path} is not a results.csv (no {sorted(missing)} column)")
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    twice = rows[rows.duplicated(["seed", "method"], keep=False)]
    if len(twice):
        seeds = twice["seed"].astype(int).tolist()
        pairs = sorted(set(zip(seeds, twice["method"].astype(str), strict=True)))
        raise ValueError(f"--merge: (seed, method) rows in more than one file: {pairs}")
    rows = rows.sort_values("seed", kind="stable")
    return [
        {str(k): v for k, v in r.items() if isinstance(v, dict) or not pd.isna(v)}
        for r in rows.to_dict("records")
    ]
