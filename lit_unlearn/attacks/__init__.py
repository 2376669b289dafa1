"""Attacks that test whether forgetting happened.

Attribute inference on user representations: an attacker (MLP, XGBoost, logistic regression,
kNN, or logistic regression on the features and their squares, which reads second moments)
trains on the shadow users whose attributes it knows and predicts everyone else's;
:func:`audit_embeddings` runs every attacker on every attribute and returns :class:`AttackResult`
rows (balanced accuracy, AUC, flip-aware leakage, majority and chance baselines).
:mod:`lit_unlearn.attacks.leakage` measures leakage from both sides of chance under the shadow
and k-fold protocols with a permutation-null floor, also on exported representations
(``python -m lit_unlearn.attacks.leakage``).

Gradient inversion on an uploaded adversary head (federated attribute unlearning, FedAU2):
:func:`dlg_attack` and :func:`idlg_labels` recover each user's label from its gradient, and
:func:`evaluate_label_recovery` scores them against chance and the majority class.

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
from lit_unlearn.attacks.gradient_inversion import (
    UNDETERMINED,
    DLGResult,
    LabelRecoveryResult,
    dlg_attack,
    evaluate_label_recovery,
    gradient_from_update,
    idlg_labels,
)
from lit_unlearn.attacks.knn import KNNAttacker
from lit_unlearn.attacks.logreg import LogisticRegressionAttacker
from lit_unlearn.attacks.mlp import MLPAttacker
from lit_unlearn.attacks.quadratic import QuadraticAttacker
from lit_unlearn.attacks.xgboost import XGBoostAttacker

__all__ = [
    "ATTACKERS",
    "UNDETERMINED",
    "AttackResult",
    "Attacker",
    "DLGResult",
    "KNNAttacker",
    "LabelRecoveryResult",
    "LogisticRegressionAttacker",
    "MLPAttacker",
    "QuadraticAttacker",
    "XGBoostAttacker",
    "attack_attribute",
    "audit_embeddings",
    "default_attackers",
    "dlg_attack",
    "evaluate_label_recovery",
    "gradient_from_update",
    "idlg_labels",
    "make_attacker",
    "results_to_frame",
    "results_to_markdown",
    "shadow_split",
]
