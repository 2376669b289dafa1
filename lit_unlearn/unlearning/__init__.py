"""The unlearning contract and the base callback every method builds on.

* :mod:`.contract`: :class:`UnlearnableTask` / :class:`RepresentationTask`, what a task offers;
* :mod:`.base`: :class:`UnlearningCallback`, which loads the model to unlearn, freezes what the
  method must not touch and takes over the task's training step;
* :mod:`.calibrated`: null-calibrated discriminant erasure, plain torch math shared by the
  attribute family (``CalibratedErasure``, AttrCloak's final erasure) and the federated one
  (``FederatedErasure``);
* :mod:`.transport`: relabelling transport, each class given a random relabelling's second
  moments (AttrCloak's ``final_transport``: exact covariance matching without its inversion).
"""

from lit_unlearn.unlearning.base import UnlearningCallback
from lit_unlearn.unlearning.contract import (
    RepresentationTask,
    UnlearnableTask,
    UnlearningStep,
    require_task,
)

__all__ = [
    "RepresentationTask",
    "UnlearnableTask",
    "UnlearningCallback",
    "UnlearningStep",
    "require_task",
]
