"""Shared optimisation layer: gradient combiners and second-order (Newton) solvers.

* :mod:`~lit_unlearn.optim.grads`: ``.grad`` fields <-> flat vectors, the Gramian;
* :mod:`~lit_unlearn.optim.combiner`: the :class:`GradientCombiner` interface (Gramian in,
  weights out); :mod:`~lit_unlearn.optim.mgda` (:class:`MGDA`),
  :mod:`~lit_unlearn.optim.fixed` (:class:`FixedWeights`) and
  :mod:`~lit_unlearn.optim.conflict_averse` (:class:`ConflictAverse`, DSDA's DAMO direction)
  implement it;
* :mod:`~lit_unlearn.optim.newton`: batched, low-rank (Woodbury) and Hessian-free Newton steps.

Method-specific solvers live with their method (AltEraser's block solvers in
:mod:`lit_unlearn.optim.block_solvers`).
"""

from lit_unlearn.optim.block_solvers import AdamWBlock, AHNewtonBlock, BlockSolver, HFNewtonBlock
from lit_unlearn.optim.combiner import GradientCombiner
from lit_unlearn.optim.conflict_averse import ConflictAverse
from lit_unlearn.optim.fixed import FixedWeights
from lit_unlearn.optim.grads import assign_flat_grad, flatten_grads, gramian
from lit_unlearn.optim.mgda import MGDA
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
    "ConflictAverse",
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
