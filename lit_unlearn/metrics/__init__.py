"""Recommender ranking evaluation: full-ranking and sampled (1 + 99 negatives) protocols.

Every reported number must name its protocol; use :func:`protocol_prefix` for metric keys such
as ``"test/full/ndcg@10"`` or ``"test/sampled/hr@10"``.
"""

from lit_unlearn.metrics.negatives import (
    DENSE_SEEN_MAX_CELLS,
    build_exclusion_mask,
    dense_seen_mask,
    interaction_keys,
    is_seen,
    sample_negatives,
    training_negatives,
)
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
    "DENSE_SEEN_MAX_CELLS",
    "METRIC_NAMES",
    "PROTOCOLS",
    "RankingMetrics",
    "build_exclusion_mask",
    "check_ks",
    "dense_seen_mask",
    "full_ranking_values",
    "interaction_keys",
    "is_seen",
    "metric_keys",
    "metrics_from_hits",
    "metrics_from_ranks",
    "protocol_prefix",
    "sample_negatives",
    "sampled_ranks",
    "sampled_values",
    "topk_hits",
    "training_negatives",
]
