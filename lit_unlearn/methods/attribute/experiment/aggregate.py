"""The table's numbers as DataFrames: privacy per attacker, utility per run, seed summaries."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from lit_unlearn.methods.attribute.experiment.runner import RowResult

__all__ = ["METRICS", "PROTOCOLS", "mean_sd", "privacy_frame", "tables", "utility_frame"]

METRICS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")
PROTOCOLS = ("sampled", "full")


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
