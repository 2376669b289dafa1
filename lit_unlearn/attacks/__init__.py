"""Attacks that test whether forgetting happened.

Attribute inference on user representations: an attacker (MLP or XGBoost) trains on the shadow
users whose attributes it knows and predicts everyone else's; :func:`audit_embeddings` runs every
attacker on every attribute and returns :class:`AttackResult` rows (balanced accuracy, AUC,
flip-aware leakage, majority and chance baselines).

``xgboost`` is imported only when an :class:`XGBoostAttacker` is built.
"""

from lit_unlearn.attacks.audit import (
    ATTACKERS,
    attack_attribute,
    audit_embeddings,
    default_attackers,
    make_attacker,
    results_to_frame,
    results_to_markdown,
    shadow_split,
)
from lit_unlearn.attacks.base import Attacker, AttackResult
from lit_unlearn.attacks.mlp import MLPAttacker
from lit_unlearn.attacks.xgboost import XGBoostAttacker

__all__ = [
    "ATTACKERS",
    "AttackResult",
    "Attacker",
    "MLPAttacker",
    "XGBoostAttacker",
    "attack_attribute",
    "audit_embeddings",
    "default_attackers",
    "make_attacker",
    "results_to_frame",
    "results_to_markdown",
    "shadow_split",
]
