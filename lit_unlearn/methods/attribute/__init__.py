"""Attribute unlearning in recommenders: hide user attributes from the user representation.

Math (plain torch, no Lightning):

* :mod:`.gaussian_mi`: AttrCloak's Gaussian upper bound on I(representation; attribute)
  (Eq. 12-19), with DDP-reducible sufficient statistics;
* :mod:`.distinguishability`: the U2U / D2D losses of Li et al. (ACM MM 2023);
* :mod:`.retention`: the data-free retention loss (Eq. 21);
* :mod:`.confusion`: cross-fitted fold heads and the confusion divergence (issue 23: every
  user pushed to the boundary of an attacker that never saw it; not in the papers);
* :mod:`lit_unlearn.unlearning.calibrated` (shared with the federated family): null-calibrated
  discriminant erasure (issue 23: removes without inverting); :mod:`.erasure` is its glue.

Glue (Lightning callbacks): :mod:`.base` (the privacy-vs-retention step shared by all three),
:mod:`.attrcloak` (AttrCloak, MGDA-balanced), :mod:`.baselines` (U2U-R, D2D-R),
:mod:`.erasure` (CalibratedErasure, one shot), :mod:`.adversarial` (AdversarialConfusion).
The comparison table (Tables IV-VI, Fig. 4-5): :mod:`.experiment`.
"""

from lit_unlearn.methods.attribute.adversarial import AdversarialConfusion
from lit_unlearn.methods.attribute.attrcloak import AttrCloak
from lit_unlearn.methods.attribute.base import AttributeUnlearning
from lit_unlearn.methods.attribute.baselines import D2DR, U2UR
from lit_unlearn.methods.attribute.erasure import CalibratedErasure

__all__ = [
    "D2DR",
    "U2UR",
    "AdversarialConfusion",
    "AttrCloak",
    "AttributeUnlearning",
    "CalibratedErasure",
]
