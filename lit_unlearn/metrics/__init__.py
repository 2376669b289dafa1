"""Recommender ranking evaluation: full-ranking and sampled (1 + 99 negatives) protocols.

Every reported number must name its protocol; use :func:`protocol_prefix` for metric keys such
as ``"test/full/ndcg@10"`` or ``"test/sampled/hr@10"``. Negative sampling is data, not a metric:
:mod:`lit_unlearn.datamodules.sampling`.
"""

from lit_unlearn.metrics.ranking import (
    DEFAULT_KS,
    METRIC_NAMES,
    check_ks,
    full_ranking_values,
    metric_keys,
    metrics_from_hits,
    metrics_from_ranks,
    sampled_ranks,
    sampled_values,
    topk_hits,
)
from lit_unlearn.metrics.ranking_metric import PROTOCOLS, RankingMetrics, protocol_prefix

__all__ = [
    "DEFAULT_KS",
    "METRIC_NAMES",
    "PROTOCOLS",
    "RankingMetrics",
    "check_ks",
    "full_ranking_values",
    "metric_keys",
    "metrics_from_hits",
    "metrics_from_ranks",
    "protocol_prefix",
    "sampled_ranks",
    "sampled_values",
    "topk_hits",
]
