"""Lightning callbacks: unlearning methods that plug into a Trainer, and audits."""

from lit_unlearn.callbacks.attrcloak import AttrCloak
from lit_unlearn.callbacks.attribute_audit import AttributeAudit
from lit_unlearn.callbacks.attribute_unlearning import AttributeUnlearning
from lit_unlearn.callbacks.distinguishability import D2DR, U2UR
from lit_unlearn.callbacks.unlearning import UnlearningCallback

__all__ = [
    "D2DR",
    "U2UR",
    "AttrCloak",
    "AttributeAudit",
    "AttributeUnlearning",
    "UnlearningCallback",
]
