"""Unlearning losses on user embeddings.

* :mod:`~lit_unlearn.losses.gaussian_mi`: AttrCloak's Gaussian upper bound on the mutual
  information between embeddings and an attribute (Eq. 12-19), with DDP-reducible sufficient
  statistics;
* :mod:`~lit_unlearn.losses.retention`: the data-free retention loss (Eq. 21);
* :mod:`~lit_unlearn.losses.distinguishability`: the U2U-R / D2D-R baselines of Li et al.
  (ACM MM 2023).

Plain torch: importing this package does not import lightning.
"""

from lit_unlearn.losses.distinguishability import d2d_loss, d2d_r_loss, u2u_loss, u2u_r_loss
from lit_unlearn.losses.gaussian_mi import (
    ClassStatistics,
    class_statistics,
    gaussian_kl,
    gaussian_mi_bound,
    gaussian_mi_from_statistics,
    moments_from_statistics,
    multi_attribute_mi_bound,
    sufficient_statistics,
)
from lit_unlearn.losses.retention import embedding_regularization

__all__ = [
    "ClassStatistics",
    "class_statistics",
    "d2d_loss",
    "d2d_r_loss",
    "embedding_regularization",
    "gaussian_kl",
    "gaussian_mi_bound",
    "gaussian_mi_from_statistics",
    "moments_from_statistics",
    "multi_attribute_mi_bound",
    "sufficient_statistics",
    "u2u_loss",
    "u2u_r_loss",
]
