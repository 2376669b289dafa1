"""The metric-key scheme: one spelling for every logged or tabulated number.

* ranking: ``{stage}/{protocol}/{metric}@{k}``, e.g. ``test/sampled/ndcg@10`` (the protocol is
  part of the key, so no number is logged without it), built by
  :func:`lit_unlearn.metrics.protocol_prefix`;
* attribute audit: ``audit/{stage}/{attribute}/{attacker}/{metric}``, e.g.
  ``audit/fit_end/gender/mlp/balanced_accuracy``; the ``lit-unlearn audit`` subcommand audits
  at stage ``checkpoint``.
"""

from __future__ import annotations

__all__ = ["audit_key"]


def audit_key(stage: str, attribute: str, attacker: str, metric: str) -> str:
    """``audit/fit_end/gender/mlp/auc`` from its four parts."""
    return f"audit/{stage}/{attribute}/{attacker}/{metric}"
