"""report.md (Tables 3-5 of paper 003), results.csv and summary.csv of the AltEraser comparison.

Every table goes through :func:`lit_unlearn.reporting.markdown_table`: the package's one
rounding and missing-value rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lit_unlearn.methods.interaction.alteraser import AltEraser
from lit_unlearn.methods.interaction.experiment.config import (
    KS,
    ORIGINAL,
    ExperimentConfig,
    instantiate_callbacks,
)
from lit_unlearn.reporting import markdown_table

__all__ = ["write_report"]


def _table(frame: pd.DataFrame, columns: Sequence[str], digits: int = 4) -> str:
    """The ``method`` index and ``columns`` of the aggregated table."""
    return markdown_table(frame[list(columns)], digits=digits, index=True)


def _backbone_text(frame: pd.DataFrame) -> str:
    """`` (d = 64, c0 = 0.5, reg = 0.01)`` from the rows' backbone columns, ``""`` if absent."""
    names = {"embedding_dim": "d", "negative_weight": "c0", "reg": "reg", "dropout": "dropout"}
    parts = []
    for column, name in names.items():
        if column in frame.columns:
            values = sorted(frame[column].dropna().unique())
            parts.append(f"{name} = " + "/".join(f"{v:g}" for v in values))
    return f" ({', '.join(parts)})" if parts else ""


def _seeds_text(frame: pd.DataFrame) -> str:
    """``5 repetition(s), seeds 0..4``; seeds with gaps are listed one by one."""
    seeds = sorted(int(s) for s in frame["seed"].unique())
    contiguous = seeds == list(range(seeds[0], seeds[-1] + 1))
    listed = f"{seeds[0]}..{seeds[-1]}" if contiguous else ", ".join(map(str, seeds))
    return f"{len(seeds)} repetition(s), seeds {listed}"


def _stop_text(config: ExperimentConfig) -> str:
    """Which rows train to the stop rule, and the rule, from the instantiated callback."""
    trained = [ORIGINAL, *(r.name for r in config.rows if config.is_trained(r))]
    (stop,) = instantiate_callbacks([config.stop])
    rel_delta, patience = getattr(stop, "rel_delta", None), getattr(stop, "patience", None)
    rule = (
        f"stop when the epoch loss improves by < {rel_delta:g} (relative) for {patience} epochs"
        if rel_delta is not None and patience is not None
        else f"stop by {config.stop['class_path']}({config.stop.get('init_args', {})})"
    )
    return f"{' / '.join(trained)} {rule}"


def _eraser_text(config: ExperimentConfig) -> str:
    """AltEraser's stop (tol, max_passes) as its rows instantiate it; ``""`` without one."""
    rules: dict[tuple[float, int], list[str]] = {}
    for row in config.rows:
        for callback in instantiate_callbacks(config.callback_specs(row, None)):
            if isinstance(callback, AltEraser):
                rules.setdefault((callback.tol, callback.max_passes), []).append(row.name)
    texts = [
        f"stops when a pass lowers L_Dr by < {tol:g} (relative), at most {passes} passes"
        + ("" if len(rules) == 1 else f" ({', '.join(names)})")
        for (tol, passes), names in rules.items()
    ]
    return f" AltEraser {'; '.join(texts)}." if texts else ""


def write_report(
    table: pd.DataFrame, rows: Sequence[dict[str, Any]], config: ExperimentConfig, out: Path
) -> str:
    """Write report.md (Tables 3-5), results.csv (per repetition) and summary.csv.

    Returns:
        The text of report.md.
    """
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)
    table.to_csv(out / "summary.csv")
    protocol = (
        f"Data `{config.data}`, scenario **{config.scenario}**, {config.num_forget_users} "
        f"forgetting users, per-user random 80/20 split, {_seeds_text(frame)} (each draws its "
        f"own split, request and initialisation); ENMF from `{config.model}`"
        f"{_backbone_text(frame)}; rows from `{config.path}`. {_stop_text(config)};"
        f"{_eraser_text(config)} Forgetting users only. Re-predict = mean score on D_f; "
        f"RBO@k (Webber's extrapolated, p = {config.rbo_p}) of each user's top-k list (items "
        "outside D_r) against Retrain's; Recall/NDCG@k on the test items, full ranking over all "
        "items outside D_r. Time = Lightning training loop (Timer), data set-up excluded; "
        "speed-up = median Retrain time / median time; speedup_run_* = median, min and max over "
        "repetitions of that repetition's Retrain time / time; solver_seconds = AltEraser's time "
        "inside its passes (the rest of `seconds` is Lightning's loop). Quality = mean over "
        "repetitions, time = median."
    )
    efficiency = ["seconds", "speedup", "speedup_run_median", "speedup_run_min"]
    efficiency += ["speedup_run_max", "epochs"]
    if "solver_seconds" in table:
        efficiency.append("solver_seconds")
    text = "\n\n".join(
        [
            "# AltEraser comparison",
            protocol,
            "## Table 3: consistency (forgetting users, training set)",
            _table(table, ["repredict", "rbo@10", "rbo@20", "rbo@50"]),
            "## Table 4: accuracy (forgetting users, test set)",
            _table(table, [f"{m}@{k}" for m in ("recall", "ndcg") for k in KS]),
            "## Table 5: efficiency",
            _table(table, efficiency, digits=2),
            "L_Dr at the end (the objective on the remaining data, expected over dropout masks; "
            "mean over repetitions):",
            _table(table, ["objective"], digits=2) if "objective" in table else "-",
        ]
    )
    (out / "report.md").write_text(text + "\n")
    return text
