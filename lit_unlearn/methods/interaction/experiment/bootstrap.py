"""Percentile-bootstrap confidence intervals over users, stratified by repetition (seed).

Recall@10 of 64 forgetting users with one or two test items each moves by several hundredths
from seed to seed; whether a method is "as accurate as Retrain" needs an interval. Each
repetition (a stratum) evaluates its own users; a resample draws, in every stratum, as many
users as it has with replacement, and the statistic is the mean over strata of the stratum
means: the same quantity the tables report (the mean over repetitions of the per-repetition
means). For a difference against Retrain the per-user differences of the same users are
resampled (paired), which is what tells whether a method lies within Retrain's interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from lit_unlearn.methods.interaction.experiment.config import REFERENCE

__all__ = [
    "BOOTSTRAP_LEVEL",
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CI_METRICS",
    "bootstrap_ci",
    "confidence_table",
]

#: Resamples, confidence level and generator seed of every interval in the report.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_SEED = 0
#: The metrics reported with an interval (per-user values kept in every row's ``per_user``).
CI_METRICS = ("recall@10", "ndcg@10")


def bootstrap_ci(
    strata: Sequence[npt.ArrayLike],
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean over strata of the stratum means.

    Args:
        strata: One 1-D array of per-user values per stratum (repetition); none empty.
        resamples: Bootstrap resamples.
        level: Confidence level in (0, 1).
        seed: Seed of the generator (the same seed resamples the same users of equal-sized
            strata, so intervals of several methods use the same draws).

    Returns:
        ``(low, high)``, the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.

    Raises:
        ValueError: No stratum, an empty or non-1-D stratum, ``resamples < 1`` or a level
            outside (0, 1).
    """
    if not strata:
        raise ValueError("bootstrap_ci needs at least one stratum")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for values in strata:
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"every stratum must be a non-empty 1-D array, got shape {x.shape}")
        draws = rng.integers(0, x.size, size=(resamples, x.size))
        total += x[draws].mean(axis=1)
    stats = total / len(strata)
    low, high = np.quantile(stats, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def _per_user(row: Mapping[str, Any], metric: str) -> tuple[list[str], np.ndarray] | None:
    per_user = row.get("per_user")
    if not isinstance(per_user, Mapping) or metric not in per_user:
        return None
    return [str(u) for u in per_user["user"]], np.asarray(per_user[metric], dtype=np.float64)


def confidence_table(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = CI_METRICS,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Intervals of every method's metrics and of its paired difference from Retrain.

    A method gets an interval only when every one of its rows carries per-user values
    (``per_user``: ``user`` ids and one list per metric); the difference also needs Retrain's
    values of the same seed over the same users.

    Returns:
        One row per method (first-appearance order), columns ``{m}_ci_low``, ``{m}_ci_high``,
        ``d_{m}`` (mean over seeds of the mean paired difference), ``d_{m}_ci_low`` and
        ``d_{m}_ci_high`` for each metric ``m``; NaN where a value is unavailable.

    Raises:
        ValueError: A method's users differ from Retrain's in a seed (the pairing is broken).
    """
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    reference = {int(r["seed"]): r for r in rows if r["method"] == REFERENCE}
    table = pd.DataFrame(index=pd.Index(methods, name="method"), dtype=float)
    for metric in metrics:
        for column in ("_ci_low", "_ci_high"):
            table[f"{metric}{column}"] = float("nan")
        for column in ("", "_ci_low", "_ci_high"):
            table[f"d_{metric}{column}"] = float("nan")
    for method in methods:
        own = [r for r in rows if r["method"] == method]
        for metric in metrics:
            values = [_per_user(r, metric) for r in own]
            if any(v is None or v[1].size == 0 for v in values):
                continue
            strata = [v[1] for v in values if v is not None]
            low, high = bootstrap_ci(strata, resamples, level, seed)
            table.loc[method, [f"{metric}_ci_low", f"{metric}_ci_high"]] = [low, high]
            diffs: list[np.ndarray] = []
            for r, v in zip(own, values, strict=True):
                ref = reference.get(int(r["seed"]))
                base = _per_user(ref, metric) if ref is not None else None
                if base is None or v is None:
                    diffs = []
                    break
                if base[0] != v[0]:
                    raise ValueError(
                        f"{method} (seed {r['seed']}) was evaluated on other users than "
                        f"{REFERENCE}: no paired difference"
                    )
                diffs.append(v[1] - base[1])
            if diffs:
                low, high = bootstrap_ci(diffs, resamples, level, seed)
                mean = float(np.mean([d.mean() for d in diffs]))
                table.loc[method, [f"d_{metric}", f"d_{metric}_ci_low", f"d_{metric}_ci_high"]] = [
                    mean,
                    low,
                    high,
                ]
    return table
