"""Lightning callbacks: the public import path of every unlearning method and audit.

The classes live with their method family (:mod:`lit_unlearn.methods`) or their layer
(:mod:`lit_unlearn.unlearning`, :mod:`lit_unlearn.attacks`); this package names them in one place,
so configs say ``class_path: lit_unlearn.callbacks.AttrCloak`` whatever the file layout.
"""

from lit_unlearn.attacks.callback import AttributeAudit
from lit_unlearn.attacks.class_audit import ClassAudit
from lit_unlearn.divergence import DivergenceGuard
from lit_unlearn.methods.attribute import (
    D2DR,
    U2UR,
    AdversarialConfusion,
    AttrCloak,
    AttributeUnlearning,
    CalibratedErasure,
)
from lit_unlearn.methods.class_unlearning import DSDA, GKT, SSD, UNSIR, FineTune
from lit_unlearn.methods.federated.audit import EmbeddingAttack, GradientInversionAudit
from lit_unlearn.methods.federated.unlearn import FederatedErasureUnlearning
from lit_unlearn.methods.interaction import AltEraser, RelativeEarlyStopping, WarmStart
from lit_unlearn.unlearning import UnlearningCallback

__all__ = [
    "D2DR",
    "DSDA",
    "GKT",
    "SSD",
    "U2UR",
    "UNSIR",
    "AdversarialConfusion",
    "AltEraser",
    "AttrCloak",
    "AttributeAudit",
    "AttributeUnlearning",
    "CalibratedErasure",
    "ClassAudit",
    "DivergenceGuard",
    "EmbeddingAttack",
    "FederatedErasureUnlearning",
    "FineTune",
    "GradientInversionAudit",
    "RelativeEarlyStopping",
    "UnlearningCallback",
    "WarmStart",
]
