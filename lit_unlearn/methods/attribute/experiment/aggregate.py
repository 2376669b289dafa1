"""The table's numbers as DataFrames: privacy per attacker, utility per run, seed summaries.

The leakage audit (issue 23) adds :func:`leakage_frame` (every attribute x attacker x protocol
of every run), :func:`leakage_summary` (its seed means per method, attribute, attacker,
protocol) and :func:`method_summary` (one line per method: the worst cell and the ranking cost).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lit_unlearn.methods.attribute.experiment.runner import ORIGINAL, RowResult
from lit_unlearn.reporting.provenance import PROVENANCE_FIELDS

__all__ = [
    "BACC_TOLERANCE",
    "LEAKAGE_TOLERANCE",
    "METRICS",
    "PROTOCOLS",
    "leakage_frame",
    "leakage_summary",
    "mean_sd",
    "method_summary",
    "privacy_frame",
    "provenance_frame",
    "tables",
    "utility_frame",
]

METRICS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")
PROTOCOLS = ("sampled", "full")
#: Issue 23's targets: every cell's leakage within the null's 95th percentile + 0.05 ...
LEAKAGE_TOLERANCE = 0.05
#: ... and balanced accuracy within 0.03 of chance, from both sides.
BACC_TOLERANCE = 0.03
_LEAKAGE_KEYS = ("method", "attribute", "attacker", "protocol")


def privacy_frame(rows: Sequence[RowResult]) -> pd.DataFrame:
    """One row per method, seed, attribute and attacker (AttrCloak Table IV's cells, per seed)."""
    return pd.DataFrame(
        [
            {
                "method": r.method,
                "seed": r.seed,
                "attribute": a["attribute"],
                "attacker": a["attacker"],
                "accuracy": a["accuracy"],
                "balanced_accuracy": a["balanced_accuracy"],
                "auc": a["auc"],
                "chance": a["chance"],
                "majority_accuracy": a["majority_accuracy"],
                "bacc_minus_chance": a["balanced_accuracy"] - a["chance"],
                # the attacker's sample sizes: shadow users it trains / selects on, users it
                # is scored on (small attribute classes make the balanced accuracy noisy)
                "n_train": a["n_train"],
                "n_val": a["n_val"],
                "n_test": a["n_test"],
            }
            for r in rows
            for a in r.audit
        ]
    )


def utility_frame(rows: Sequence[RowResult]) -> pd.DataFrame:
    """One row per method and seed: wall time, alpha_u (last, mean), HR/NDCG per protocol."""
    return pd.DataFrame(
        [
            {
                "method": r.method,
                "seed": r.seed,
                "seconds": r.seconds,
                "alpha_u": r.alpha_u,
                "alpha_u_mean": r.alpha_u_mean,
                **{
                    f"{p}/{m}": r.ranking.get(f"test/{p}/{m}", float("nan"))
                    for p in PROTOCOLS
                    for m in METRICS
                },
            }
            for r in rows
        ]
    )


def tables(rows: Sequence[RowResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(privacy_frame(rows), utility_frame(rows))``."""
    return privacy_frame(rows), utility_frame(rows)


def mean_sd(values: pd.Series, digits: int = 3) -> str:
    """``mean`` or ``mean ± sd`` (sample sd) when several seeds were run."""
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def provenance_frame(rows: Sequence[RowResult]) -> pd.DataFrame:
    """One row per method and seed: where and how it ran (:data:`PROVENANCE_FIELDS`)."""
    return pd.DataFrame(
        [
            {
                "method": r.method,
                "seed": r.seed,
                **{k: r.provenance.get(k) for k in PROVENANCE_FIELDS},
            }
            for r in rows
        ],
        columns=["method", "seed", *PROVENANCE_FIELDS],
    )


_LEAKAGE_COLUMNS = (
    "method",
    "seed",
    "attribute",
    "attacker",
    "protocol",
    "num_classes",
    "n_users",
    "chance",
    "balanced_accuracy",
    "bacc_minus_chance",
    "method_aware_balanced_accuracy",
    "method_aware_minus_chance",
    "auc",
    "leakage",
    "n_permutations",
    "null_leakage_mean",
    "null_leakage_p95",
    "leakage_above_null",
    "null_balanced_accuracy_mean",
    "null_balanced_accuracy_p95",
    "class_aucs",
)


def leakage_frame(rows: Sequence[RowResult]) -> pd.DataFrame:
    """One row per method, seed, attribute, attacker and protocol of the leakage audit.

    Every :class:`~lit_unlearn.attacks.leakage.LeakageResult` field, plus
    ``bacc_minus_chance``, ``method_aware_minus_chance`` and ``leakage_above_null``
    (``leakage - null_leakage_p95``); ``class_aucs`` as ``a;b;c``.
    """
    records = []
    for r in rows:
        for a in r.leakage:
            records.append(
                {
                    **{k: a.get(k) for k in _LEAKAGE_COLUMNS},
                    "method": r.method,
                    "seed": r.seed,
                    "bacc_minus_chance": a["balanced_accuracy"] - a["chance"],
                    "method_aware_minus_chance": a["method_aware_balanced_accuracy"] - a["chance"],
                    "leakage_above_null": a["leakage"] - a["null_leakage_p95"],
                    "class_aucs": ";".join(f"{float(c):.4f}" for c in a.get("class_aucs") or ()),
                }
            )
    return pd.DataFrame(records, columns=list(_LEAKAGE_COLUMNS))


def leakage_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed means per method x attribute x attacker x protocol (first-appearance order).

    Columns: ``seeds``, ``chance``, the means of ``bacc_minus_chance``,
    ``method_aware_minus_chance``, ``auc``, ``leakage``, ``null_leakage_p95`` and
    ``leakage_above_null``, and ``max_leakage_above_null`` (the largest over seeds).
    """
    columns = [
        *_LEAKAGE_KEYS,
        "seeds",
        "chance",
        "bacc_minus_chance",
        "method_aware_minus_chance",
        "auc",
        "leakage",
        "null_leakage_p95",
        "leakage_above_null",
        "max_leakage_above_null",
    ]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    grouped = frame.groupby(list(_LEAKAGE_KEYS), sort=False)
    summary = grouped.agg(
        seeds=("seed", "nunique"),
        chance=("chance", "first"),
        bacc_minus_chance=("bacc_minus_chance", "mean"),
        method_aware_minus_chance=("method_aware_minus_chance", "mean"),
        auc=("auc", "mean"),
        leakage=("leakage", "mean"),
        null_leakage_p95=("null_leakage_p95", "mean"),
        leakage_above_null=("leakage_above_null", "mean"),
        max_leakage_above_null=("leakage_above_null", "max"),
    ).reset_index()
    return summary[columns]


def _worst(group: pd.DataFrame, column: str, absolute: bool) -> tuple[float, str]:
    """The cell of ``group`` with the largest ``column`` (or ``|column|``) and where it is."""
    values = group[column].abs() if absolute else group[column]
    if values.notna().sum() == 0:
        return float("nan"), ""
    cell = group.iloc[int(np.nanargmax(values.to_numpy(dtype=float)))]
    return float(cell[column]), f"{cell['attribute']}/{cell['attacker']}/{cell['protocol']}"


def method_summary(summary: pd.DataFrame, utility: pd.DataFrame) -> pd.DataFrame:
    """One row per method: the worst leakage cell, the worst balanced accuracy, the ranking cost.

    Args:
        summary: :func:`leakage_summary`.
        utility: :func:`utility_frame`.

    Returns:
        Per method (the utility frame's order): ``worst_leakage_above_null`` (the largest seed
        mean of ``leakage - null p95`` over every attribute, attacker and protocol) and its
        cell, ``max_leakage_above_null`` (the largest over seeds too), ``worst_bacc_minus_chance``
        (the seed mean of ``BAcc - chance`` farthest from 0, signed) and its cell,
        ``within_target`` (issue 23: the first <= :data:`LEAKAGE_TOLERANCE` and the second
        within :data:`BACC_TOLERANCE`), the means of ``sampled/ndcg@10`` and ``full/ndcg@10``
        and their change from the Original's in percent.
    """
    means = utility.groupby("method", sort=False)[["sampled/ndcg@10", "full/ndcg@10"]].mean()
    base: dict[str, float] | None = (
        {str(k): float(v) for k, v in means[means.index == ORIGINAL].iloc[0].items()}
        if ORIGINAL in means.index
        else None
    )
    records = []
    for method in means.index:
        group = summary[summary["method"] == method]
        worst_leak, leak_at = _worst(group, "leakage_above_null", absolute=False)
        worst_bacc, bacc_at = _worst(group, "bacc_minus_chance", absolute=True)
        record = {
            "method": method,
            "worst_leakage_above_null": worst_leak,
            "worst_leakage_cell": leak_at,
            "max_leakage_above_null": (
                float(group["max_leakage_above_null"].max()) if len(group) else float("nan")
            ),
            "worst_bacc_minus_chance": worst_bacc,
            "worst_bacc_cell": bacc_at,
            "within_target": (
                bool(worst_leak <= LEAKAGE_TOLERANCE and abs(worst_bacc) <= BACC_TOLERANCE)
                if len(group) and not (np.isnan(worst_leak) or np.isnan(worst_bacc))
                else None
            ),
        }
        for protocol in ("sampled", "full"):
            value = float(means.loc[method, f"{protocol}/ndcg@10"])
            record[f"{protocol}/ndcg@10"] = value
            ref = base[f"{protocol}/ndcg@10"] if base is not None else float("nan")
            record[f"{protocol}/ndcg@10_change_pct"] = (
                100.0 * (value - ref) / ref if ref and not np.isnan(ref) else float("nan")
            )
        records.append(record)
    return pd.DataFrame(records)
