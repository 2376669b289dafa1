"""Optimisation helpers: gradient combiners and 2nd-order (Newton) block solvers.

Gradient combiners (:class:`MGDA`, :class:`FixedWeights`) turn ``m`` objective gradients into
weights and one update direction from their Gramian; :func:`flatten_grads`,
:func:`assign_flat_grad` and :func:`gramian` move between ``.grad`` fields and flat vectors.
"""

from lit_unlearn.optim.block_solvers import (
    AdamWBlock,
    AHNewtonBlock,
    BlockSolver,
    HFNewtonBlock,
)
from lit_unlearn.optim.combiners import (
    MGDA,
    FixedWeights,
    GradientCombiner,
    assign_flat_grad,
    flatten_grads,
    gramian,
)
from lit_unlearn.optim.newton import (
    HessianFreeNewton,
    LowRankSystems,
    NewtonSystems,
    batched_newton_step,
    conjugate_gradient,
    low_rank_newton_step,
)

__all__ = [
    "MGDA",
    "AHNewtonBlock",
    "AdamWBlock",
    "BlockSolver",
    "FixedWeights",
    "GradientCombiner",
    "HFNewtonBlock",
    "HessianFreeNewton",
    "LowRankSystems",
    "NewtonSystems",
    "assign_flat_grad",
    "batched_newton_step",
    "conjugate_gradient",
    "flatten_grads",
    "gramian",
    "low_rank_newton_step",
]
