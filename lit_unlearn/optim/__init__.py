"""Optimisation helpers for multi-objective unlearning.

Gradient combiners (:class:`MGDA`, :class:`FixedWeights`) turn ``m`` objective gradients into
weights and one update direction from their Gramian; :func:`flatten_grads`,
:func:`assign_flat_grad` and :func:`gramian` move between ``.grad`` fields and flat vectors.
"""

from lit_unlearn.optim.combiners import (
    MGDA,
    FixedWeights,
    GradientCombiner,
    assign_flat_grad,
    flatten_grads,
    gramian,
)

__all__ = [
    "MGDA",
    "FixedWeights",
    "GradientCombiner",
    "assign_flat_grad",
    "flatten_grads",
    "gramian",
]
