"""Lightning callbacks: unlearning methods that plug into a Trainer, and audits."""

from lit_unlearn.callbacks.alteraser import AltEraser
from lit_unlearn.callbacks.attrcloak import AttrCloak
from lit_unlearn.callbacks.attribute_audit import AttributeAudit
from lit_unlearn.callbacks.attribute_unlearning import AttributeUnlearning
from lit_unlearn.callbacks.distinguishability import D2DR, U2UR
from lit_unlearn.callbacks.plateau import RelativeEarlyStopping
from lit_unlearn.callbacks.unlearning import UnlearningCallback
from lit_unlearn.callbacks.warm_start import WarmStart

__all__ = [
    "D2DR",
    "U2UR",
    "AltEraser",
    "AttrCloak",
    "AttributeAudit",
    "AttributeUnlearning",
    "RelativeEarlyStopping",
    "UnlearningCallback",
    "WarmStart",
]
