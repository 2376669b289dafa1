"""report.md (Tables 3-5 of paper 003), results.csv, summary.csv and summary.json of the
AltEraser comparison, each naming the torch version, threads, device, machine and command.

Every table goes through :func:`lit_unlearn.reporting.markdown_table`: the package's one
rounding and missing-value rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lit_unlearn.methods.interaction.alteraser import AltEraser
from lit_unlearn.methods.interaction.experiment.bootstrap import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CI_METRICS,
)
from lit_unlearn.methods.interaction.experiment.config import (
    KS,
    ORIGINAL,
    REFERENCE,
    ExperimentConfig,
    instantiate_callbacks,
)
from lit_unlearn.methods.interaction.experiment.provenance import (
    PROVENANCE,
    command_line,
    environment,
)
from lit_unlearn.reporting import markdown_table
from lit_unlearn.reporting.tables import MISSING, format_cell

__all__ = ["NOT_RECORDED", "write_report"]

#: Provenance of rows written before it was recorded (a merge of old results.csv files).
NOT_RECORDED = "not recorded"


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


def _signed(value: Any) -> str:
    text = format_cell(value, 3)
    return text if text == MISSING or text.startswith("-") else f"+{text}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _with_ci(table: pd.DataFrame, method: str, column: str, signed: bool = False) -> str:
    """``0.212 [0.180, 0.240]`` (``+0.005 [-0.010, +0.020]`` for a difference)."""
    show = _signed if signed else (lambda v: format_cell(v, 3))
    text = show(table.at[method, column])
    low, high = table.at[method, f"{column}_ci_low"], table.at[method, f"{column}_ci_high"]
    if not _finite(low) or not _finite(high):
        return text
    return f"{text} [{show(low)}, {show(high)}]"


def _ci_table(table: pd.DataFrame) -> str:
    """Recall@10 / NDCG@10 with intervals, and their paired differences from Retrain."""
    columns: dict[str, tuple[str, bool]] = {}
    for metric in CI_METRICS:
        name, k = metric.split("@")
        title = {"recall": "Recall", "ndcg": "NDCG"}.get(name, name) + f"@{k}"
        columns[f"{title} [95% CI]"] = (metric, False)
        columns[f"Δ{title} vs {REFERENCE} [CI]"] = (f"d_{metric}", True)
    frame = pd.DataFrame(
        {
            title: [_with_ci(table, m, column, signed) for m in table.index]
            for title, (column, signed) in columns.items()
        },
        index=table.index,
    )
    return markdown_table(frame, index=True)


def _environment_lines(frame: pd.DataFrame, command: str) -> list[str]:
    """Where the rows were measured (every value met) and what wrote the report."""
    names = {
        "torch": "torch",
        "threads": "torch threads",
        "device": "device",
        "machine": "machine",
    }
    lines = []
    for column, name in names.items():
        values = _distinct(frame, column)
        lines.append(f"- {name}: {', '.join(f'`{v}`' for v in values) or NOT_RECORDED}")
    commands = _distinct(frame, "command")
    lines.append("- command(s) that ran the rows:" if commands else f"- command: {NOT_RECORDED}")
    lines += [f"  - `{c}`" for c in commands]
    here = environment("cpu", command)
    lines.append(
        f"- report written by `{command}` (torch `{here['torch']}`, {here['threads']} threads, "
        f"`{here['machine']}`)"
    )
    return lines


def _distinct(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame:
        return []
    return list(dict.fromkeys(str(v) for v in frame[column].dropna()))


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _json_value(value.item())
    return value


def _summary_json(table: pd.DataFrame, frame: pd.DataFrame, command: str) -> str:
    measured = frame.reindex(columns=list(PROVENANCE[:-1])).drop_duplicates()
    summary = {
        "environment": [
            {k: _json_value(v) for k, v in r.items()} for r in measured.to_dict("records")
        ],
        "commands": _distinct(frame, "command"),
        "written_by": {k: v for k, v in environment("cpu", command).items() if k != "device"},
        "bootstrap": {
            "resamples": BOOTSTRAP_RESAMPLES,
            "level": BOOTSTRAP_LEVEL,
            "seed": BOOTSTRAP_SEED,
            "over": "evaluated forgetting users, stratified by seed; d_* paired vs Retrain",
        },
        "methods": {
            str(m): {str(k): _json_value(v) for k, v in r.items()}
            for m, r in table.to_dict("index").items()
        },
    }
    return json.dumps(summary, indent=1, allow_nan=False) + "\n"


def write_report(
    table: pd.DataFrame,
    rows: Sequence[dict[str, Any]],
    config: ExperimentConfig,
    out: Path,
    command: str | None = None,
) -> str:
    """Write report.md (Tables 3-5), results.csv (per repetition), summary.csv, summary.json.

    Args:
        table: :func:`~.aggregate.aggregate` of ``rows``.
        rows: Per-repetition rows (their ``per_user`` values are not written to the CSV).
        config: The experiment.
        out: Output folder.
        command: The command writing the report (default: this process's).

    Returns:
        The text of report.md.
    """
    command = command if command is not None else command_line()
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "per_user"} for r in rows])
    table = table.copy()
    for column in PROVENANCE:  # every CSV names what it was measured with
        if column not in frame:
            frame[column] = NOT_RECORDED
        if column not in table:
            table[column] = NOT_RECORDED
    frame.to_csv(out / "results.csv", index=False)
    table.to_csv(out / "summary.csv")
    (out / "summary.json").write_text(_summary_json(table, frame, command))
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
        "repetitions, time = median. Intervals: 95% percentile bootstrap over the evaluated "
        f"forgetting users ({BOOTSTRAP_RESAMPLES} resamples, users drawn with replacement within "
        f"each repetition, generator seed {BOOTSTRAP_SEED}); Δ = paired difference from "
        f"{REFERENCE} on the same users."
    )
    has_ci = f"{CI_METRICS[0]}_ci_low" in table and table[f"{CI_METRICS[0]}_ci_low"].notna().any()
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
            "## Table 4b: accuracy with 95% bootstrap intervals (forgetting users, test set)",
            _ci_table(table)
            if has_ci
            else "No per-user values in these rows (a merge of results.csv files): no intervals.",
            "## Table 5: efficiency",
            _table(table, efficiency, digits=2),
            "L_Dr at the end (the objective on the remaining data, expected over dropout masks; "
            "mean over repetitions):",
            _table(table, ["objective"], digits=2) if "objective" in table else "-",
            "## Environment",
            "\n".join(_environment_lines(frame, command)),
        ]
    )
    (out / "report.md").write_text(text + "\n")
    return text
