"""Solvers for one block of AltEraser's alternating scheme (paper 003, Algorithm 1, l. 15/18).

A block is a set of rows of one side (users with items fixed, or items with users fixed) and
its loss. Each solver is a small class selectable from YAML (``class_path``):

* :class:`AdamWBlock`: a few AdamW steps (the paper's 1st-order ablation, AltEraser[AdamW]);
* :class:`HFNewtonBlock`: Hessian-free Newton on the block (AltEraser[HF-Newton]);
* :class:`AHNewtonBlock`: closed-form per-row Hessians solved as a batch of ``d x d`` systems
  (AltEraser[AH-Newton]).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Protocol

import torch
from torch import Tensor

from lit_unlearn.optim.newton import (
    HessianFreeNewton,
    ImplicitSystems,
    LowRankSystems,
    NewtonSystems,
    batched_newton_step,
    batched_pcg_step,
    low_rank_newton_step,
)
from lit_unlearn.validation import check_non_negative, check_positive

__all__ = ["AHNewtonBlock", "AdamWBlock", "BlockProblem", "BlockSolver", "HFNewtonBlock"]


class BlockProblem(Protocol):
    """What a solver needs from a block: its loss and (for AH-Newton) per-row Newton systems."""

    def loss(self, x: Tensor) -> Tensor: ...

    def split_newton_systems(
        self, x: Tensor, low_rank_max_degree: int, start: int = 0, stop: int | None = None
    ) -> tuple[LowRankSystems, NewtonSystems]:
        """Newton systems of rows ``start:stop``: ``(low_rank, dense)``.

        System ``i`` of either half is row ``start + rows[i]``; rows with at most
        ``low_rank_max_degree`` positives are in the low-rank half (``-1``: none are).
        """
        ...

    @property
    def degree(self) -> Tensor:
        """``[R]`` observed pairs per row."""
        ...

    def subset(self, local: Tensor) -> BlockProblem:
        """The block of rows ``local`` (sorted positions) alone."""
        ...

    def implicit_systems(self, x: Tensor, local: Tensor | None = None) -> ImplicitSystems:
        """Newton systems of rows ``local`` (default all) as products, with the shared part."""
        ...


#: Rows below which a degree band of :class:`AHNewtonBlock`'s CG path joins the next band.
_MIN_BAND_ROWS = 2048


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class BlockSolver(ABC):
    """Updates the rows ``x [R, d]`` of a block towards the minimiser of ``problem.loss``."""

    #: Short name used in reports (e.g. ``AltEraser[AH-Newton]``).
    label: str = ""
    #: Whether solving disjoint row subsets separately gives the same result as one solve
    #: (true when the update of a row depends on that row's loss only): AltEraser then shards
    #: rows over DDP ranks.
    separable: bool = False

    @abstractmethod
    def solve(self, problem: BlockProblem, x: Tensor) -> Tensor:
        """Return the updated rows (a new tensor; ``x`` is not modified)."""


class AdamWBlock(BlockSolver):
    """``steps`` full-block AdamW steps (Loshchilov and Hutter, 2019), fresh moments per block.

    Args:
        lr: Learning rate.
        steps: AdamW steps per block solve.
        weight_decay: Decoupled weight decay (the ENMF loss already carries its L2 term).
    """

    label = "AdamW"
    separable = True  # Adam's update is per coordinate and the block loss a sum over rows

    def __init__(self, lr: float = 1e-2, steps: int = 10, weight_decay: float = 0.0) -> None:
        check_positive("lr", lr)  # a comparison alone lets NaN through
        check_non_negative("weight_decay", weight_decay)
        _check_positive_int("steps", steps)
        self.lr = lr
        self.steps = steps
        self.weight_decay = weight_decay

    def solve(self, problem: BlockProblem, x: Tensor) -> Tensor:
        var = x.detach().clone().requires_grad_(True)
        opt = torch.optim.AdamW([var], lr=self.lr, weight_decay=self.weight_decay)
        with torch.enable_grad():
            for _ in range(self.steps):
                opt.zero_grad(set_to_none=True)
                loss = problem.loss(var)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite block loss {float(loss)}")
                loss.backward()
                opt.step()
        return var.detach()


class HFNewtonBlock(BlockSolver):
    """Hessian-free Newton iterations on the whole block (see :class:`HessianFreeNewton`).

    Args:
        iterations: Newton-CG iterations per block solve.
        damping: Initial Levenberg-Marquardt damping.
        cg_max_iter: CG iterations per Newton iteration.
        cg_tol: Relative CG residual tolerance.
    """

    label = "HF-Newton"

    def __init__(
        self,
        iterations: int = 1,
        damping: float = 1e-3,
        cg_max_iter: int = 50,
        cg_tol: float = 1e-6,
    ) -> None:
        _check_positive_int("iterations", iterations)
        _check_positive_int("cg_max_iter", cg_max_iter)
        check_non_negative("damping", damping)  # a comparison alone lets NaN through
        check_positive("cg_tol", cg_tol)
        self.iterations = iterations
        self.damping = damping
        self.cg_max_iter = cg_max_iter
        self.cg_tol = cg_tol

    def solve(self, problem: BlockProblem, x: Tensor) -> Tensor:
        var = x.detach().clone().requires_grad_(True)
        opt = HessianFreeNewton(
            [var], damping=self.damping, cg_max_iter=self.cg_max_iter, cg_tol=self.cg_tol
        )
        for _ in range(self.iterations):
            opt.step(lambda: problem.loss(var))
        return var.detach()


class AHNewtonBlock(BlockSolver):
    """Ad-hoc Newton: closed-form per-row Hessians, one batched solve per chunk.

    For ENMF with the other side fixed every row's loss is an exact quadratic, so one iteration
    lands on the block minimiser (the ALS update). A row with ``n`` observed pairs has a Hessian
    ``A + F^T F`` with ``F`` of rank ``n``; rows with ``n <= low_rank_max_degree`` are solved by
    the Woodbury identity from ``n x n`` systems (:func:`~lit_unlearn.optim.low_rank_newton_step`),
    the others by a batched ``d x d`` Cholesky (:func:`~lit_unlearn.optim.batched_newton_step`).
    Both give the same step up to rounding.

    Args:
        iterations: Newton iterations per block solve.
        damping: Damping added to every row's Hessian.
        chunk_rows: Rows whose systems are built at once (bounds memory at
            ``chunk_rows * d^2`` floats).
        low_rank_max_degree: Rows with at most this many observed pairs take the Woodbury path;
            ``None``: the embedding width ``d`` (where the ``n x n`` system stops being the
            smaller one); ``0``: every row forms its ``d x d`` Hessian.
        cg_max_degree: Rows with at most this many observed pairs are solved by conjugate
            gradient preconditioned with the shared Hessian part
            (:func:`~lit_unlearn.optim.batched_pcg_step`: no Hessian formed or factorised,
            about ``n + 1`` batched products for ``n`` pairs), to a relative residual
            ``cg_tol``; rows it does not finish in ``cg_max_iter`` iterations, and heavier rows,
            take the exact path above. ``0`` (the default, the paper's AH-Newton): exact only.
            With dropout, where the Woodbury path is closed, this is what keeps a pass over
            sparse, long-tail data cheap (docs/alteraser.md, "Sparse data").
        cg_tol: Relative residual ``|H s + g| <= cg_tol |g|`` at which a CG row is done.
        cg_max_iter: CG iterations at most (default ``cg_max_degree + 8``).
    """

    label = "AH-Newton"
    separable = True

    def __init__(
        self,
        iterations: int = 1,
        damping: float = 0.0,
        chunk_rows: int = 8192,
        low_rank_max_degree: int | None = None,
        cg_max_degree: int = 0,
        cg_tol: float = 1e-5,
        cg_max_iter: int | None = None,
    ) -> None:
        _check_positive_int("iterations", iterations)
        _check_positive_int("chunk_rows", chunk_rows)
        check_non_negative("damping", damping)
        for name, value in (
            ("low_rank_max_degree", low_rank_max_degree),
            ("cg_max_degree", cg_max_degree),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not (math.isfinite(cg_tol) and 0 < cg_tol < 1):
            raise ValueError(f"cg_tol must be in (0, 1), got {cg_tol}")
        if cg_max_iter is not None:
            _check_positive_int("cg_max_iter", cg_max_iter)
        if cg_max_degree and damping:
            raise ValueError("cg_max_degree > 0 solves undamped systems: set damping to 0")
        self.iterations = iterations
        self.damping = damping
        self.chunk_rows = chunk_rows
        self.low_rank_max_degree = low_rank_max_degree
        self.cg_max_degree = cg_max_degree
        self.cg_tol = cg_tol
        # n pairs and no dropout: n + 1 iterations at most (batched_pcg_step); a margin for the
        # dropout diagonal and rounding.
        self.cg_max_iter = cg_max_iter if cg_max_iter is not None else cg_max_degree + 8
        #: Rows solved by conjugate gradient and rows solved exactly in the last solve.
        self.last_counts: tuple[int, int] = (0, 0)

    def solve(self, problem: BlockProblem, x: Tensor) -> Tensor:
        x = x.detach().clone()
        for _ in range(self.iterations):
            if self.cg_max_degree == 0:
                self._exact(problem, x)
                self.last_counts = (0, x.shape[0])
                continue
            degree = problem.degree
            heavy = [torch.nonzero(degree > self.cg_max_degree).squeeze(1)]
            # Rows in bands of degree (0-2, 3-8, 9-32, ...): a band iterates about as often as
            # its heaviest row needs, so the light majority of a long-tail side does not pay
            # for the iterations of the few rows near cg_max_degree. A band of fewer than
            # `_MIN_BAND_ROWS` rows joins the next heavier one: on small blocks the cost of an
            # iteration is its ~25 kernel launches, not its arithmetic, so fewer bands win.
            edges = [-1]
            while edges[-1] < self.cg_max_degree:
                edges.append(min(2 if edges[-1] < 2 else 4 * edges[-1], self.cg_max_degree))
            start = edges[0]
            for k, hi in enumerate(edges[1:]):
                band = torch.nonzero((degree > start) & (degree <= hi)).squeeze(1)
                last = k == len(edges) - 2
                if band.numel() == 0 or (band.numel() < _MIN_BAND_ROWS and not last):
                    continue  # empty, or too small alone: its rows go with the next band
                start = hi
                step, done = batched_pcg_step(
                    problem.implicit_systems(x, band), self.cg_tol, min(hi + 8, self.cg_max_iter)
                )
                x.index_add_(0, band[done], step[done])
                # Rows CG did not finish go to the exact path with the heavy ones.
                heavy.append(band[~done])
            heavy_rows = torch.sort(torch.cat(heavy)).values
            self.last_counts = (int(x.shape[0] - heavy_rows.numel()), int(heavy_rows.numel()))
            if heavy_rows.numel():
                part = x[heavy_rows]
                self._exact(problem.subset(heavy_rows), part)
                x[heavy_rows] = part
        return x

    def _exact(self, problem: BlockProblem, x: Tensor) -> None:
        """Exact Newton steps (Woodbury or batched Cholesky) on every row of ``x``, in place."""
        rows = x.shape[0]
        max_degree = x.shape[1] if self.low_rank_max_degree is None else self.low_rank_max_degree
        # 0 means no Woodbury path at all: -1 also sends rows without positives to the dense half.
        max_degree = max_degree or -1
        # Rows are independent given the other side, so chunks can be solved in place.
        for start in range(0, rows, self.chunk_rows):
            stop = min(start + self.chunk_rows, rows)
            low, dense = problem.split_newton_systems(x, max_degree, start, stop)
            if len(low.rows):
                step = low_rank_newton_step(low, self.damping)
                x.index_add_(0, low.rows + start, step)
            if len(dense.rows):
                step = batched_newton_step(dense.hess, dense.grad, self.damping)
                x.index_add_(0, dense.rows + start, step)
