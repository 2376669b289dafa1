"""The conflict-averse direction of DSDA's DAMO (paper 004, Theorem 3.2-3.3, Eq. 8-14).

Given objective gradients g_1..g_m and their weighted sum g_T = sum_i lambda_i g_i, DAMO moves
along the d that maximises the worst objective's first-order decrease within a ball around g_T::

    d* = argmax_d  min_i <g_i, d>   s.t.  ||d - g_T|| <= c ||g_T||,   c in [0, 1).

Its Lagrangian dual (Eq. 10-14; the same construction as CAGrad, Liu et al. NeurIPS 2021, with
CAGrad's average gradient g_0 replaced by g_T) is a convex problem over the simplex::

    w* = argmin_{w in simplex}  g_w^T g_T + sqrt(phi) ||g_w||,   g_w = sum_i w_i g_i,
    phi = c^2 ||g_T||^2,
    d*  = g_T + sqrt(phi) g_w* / ||g_w*||.

Everything is a function of the Gramian G = J J^T: g_w^T g_T = w^T G lambda,
||g_w||^2 = w^T G w, ||g_T||^2 = lambda^T G lambda, so :class:`ConflictAverse` is a
:class:`~lit_unlearn.optim.combiner.GradientCombiner` whose "weights" are the coefficients of
d* on the gradients, ``lambda + sqrt(phi) w* / ||g_w*||`` (they do not sum to 1). The dual is
solved by accelerated projected gradient (FISTA with backtracking) on the simplex in float64,
from the uniform weights, until the Frank-Wolfe duality gap is below ``tol``; deterministic,
so every DDP rank holding the same synchronised gradients computes the same direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lit_unlearn.optim.combiner import GradientCombiner, check_gramian

__all__ = ["ConflictAverse", "conflict_averse_weights", "project_simplex"]


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v`` onto the probability simplex (sort-based, exact)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, len(v) + 1)
    rho = int(np.nonzero(u - css / k > 0)[0][-1])
    theta = css[rho] / (rho + 1.0)
    return np.maximum(v - theta, 0.0)


def conflict_averse_weights(
    G: np.ndarray, lam: np.ndarray, c: float, max_iter: int = 2000, tol: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """Solve the dual of Eq. 8 on a Gramian: ``(coefficients of d*, w*)``.

    Args:
        G: Symmetric PSD Gramian ``[m, m]`` (float64).
        lam: Weights of g_T ``[m]`` (non-negative).
        c: Radius factor in [0, 1).
        max_iter: FISTA iteration budget.
        tol: Stop when the Frank-Wolfe gap ``<grad, w> - min(grad)`` falls below ``tol`` times
            the problem's scale (``max_i ||g_i|| * ||g_T||``).

    Returns:
        ``coef`` with ``d* = coef @ J`` and the dual optimum ``w*`` (uniform when the radius is
        zero or every gradient vanishes).
    """
    m = G.shape[0]
    w0 = np.full(m, 1.0 / m)
    gt2 = float(lam @ G @ lam)
    if c == 0.0 or gt2 <= 0.0:
        return lam.copy(), w0  # d* = g_T: no ball to move in, or nothing to move
    s = c * math.sqrt(gt2)  # sqrt(phi)
    b = G @ lam
    scale = math.sqrt(max(float(np.max(np.diag(G))), 0.0) * gt2)
    # Smoothing of ||g_w|| at 0 (a Pareto-stationary hull point), far below float64 noise of the
    # answer; the objective stays convex.
    eps2 = (1e-14 * math.sqrt(max(float(np.max(np.diag(G))), 1e-300))) ** 2

    def value(w: np.ndarray) -> float:
        return float(b @ w + s * math.sqrt(max(float(w @ G @ w), 0.0) + eps2))

    def grad(w: np.ndarray) -> np.ndarray:
        norm = math.sqrt(max(float(w @ G @ w), 0.0) + eps2)
        return b + s * (G @ w) / norm

    w, y, t, step = w0.copy(), w0.copy(), 1.0, 1.0 / max(float(np.max(np.abs(G))), 1e-300)
    for _ in range(max_iter):
        g = grad(w)
        if float(g @ w - g.min()) <= tol * scale:
            break
        gy, fy = grad(y), value(y)
        while True:  # backtracking on the quadratic upper bound at y
            nxt = project_simplex(y - step * gy)
            diff = nxt - y
            if value(nxt) <= fy + float(gy @ diff) + float(diff @ diff) / (2 * step) + 1e-300:
                break
            step *= 0.5
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        if value(nxt) > value(w):  # monotone restart keeps FISTA from oscillating
            if t == 1.0:  # no progress from w itself: w is optimal to round-off
                break
            y, t = w.copy(), 1.0
            continue
        y = nxt + ((t - 1) / t_next) * (nxt - w)
        w, t = nxt, t_next
        step *= 2.0  # let the step grow back after backtracking
    gw = math.sqrt(max(float(w @ G @ w), 0.0))
    if gw <= 1e-12 * math.sqrt(max(float(np.max(np.diag(G))), 0.0)):
        # g_w* = 0: the hull holds 0 (Pareto-stationary), no d improves every objective; keep
        # the ball's centre g_T rather than a direction of round-off.
        return lam.copy(), w
    return lam + (s / gw) * w, w


class ConflictAverse(GradientCombiner):
    """DAMO's conflict-averse direction (DSDA Theorem 3.3; CAGrad with g_0 = g_T).

    Args:
        c: Radius of the ball around g_T, relative to ||g_T||, in [0, 1) (spec: 0.5, CAGrad's
            default). ``c = 0`` returns g_T itself.
        target_weights: lambda_i of g_T = sum_i lambda_i g_i (DSDA's lambda_1..3); ``None``
            weights every objective 1, as the spec decides (lambda_1 = lambda_2 = lambda_3 = 1).
        rescale: Divide the direction by 1 + c (CAGrad's optional rescaling; off in DSDA).
        max_iter: Iteration budget of the dual solver.
        tol: Relative duality-gap tolerance of the dual solver.

    Raises:
        ValueError: On invalid hyperparameters, or a Gramian whose size differs from the
            number of target weights.
    """

    def __init__(
        self,
        c: float = 0.5,
        target_weights: Sequence[float] | None = None,
        rescale: bool = False,
        max_iter: int = 2000,
        tol: float = 1e-8,
    ) -> None:
        if not (isinstance(c, int | float) and 0.0 <= float(c) < 1.0):
            raise ValueError(f"c must lie in [0, 1) (the ball radius relative to ||g_T||), got {c}")
        if target_weights is not None:
            lam = [float(x) for x in target_weights]
            if not lam or any(not math.isfinite(x) or x < 0 for x in lam) or sum(lam) <= 0:
                raise ValueError(
                    f"target_weights must be finite, >= 0 and not all 0, got {target_weights}"
                )
        if max_iter < 1 or not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"need max_iter >= 1 and finite tol >= 0, got {max_iter}, {tol}")
        self.c = float(c)
        self.target_weights = None if target_weights is None else lam
        self.rescale = rescale
        self.max_iter = max_iter
        self.tol = tol

    def target(self, m: int) -> np.ndarray:
        """lambda for ``m`` objectives."""
        if self.target_weights is None:
            return np.ones(m)
        if len(self.target_weights) != m:
            raise ValueError(
                f"ConflictAverse has {len(self.target_weights)} target weights but got {m} "
                "objectives"
            )
        return np.asarray(self.target_weights, dtype=np.float64)

    def weights(self, gramian: Tensor) -> Tensor:
        G = check_gramian(gramian).numpy()
        coef, _ = conflict_averse_weights(
            G, self.target(G.shape[0]), self.c, max_iter=self.max_iter, tol=self.tol
        )
        if self.rescale:
            coef = coef / (1.0 + self.c)
        return torch.from_numpy(coef).to(device=gramian.device)

    def static_weights(self, m: int) -> Tensor | None:
        if self.c == 0.0:
            lam = self.target(m) / (1.0 + self.c if self.rescale else 1.0)
            return torch.from_numpy(lam)
        return None

    def __repr__(self) -> str:
        return (
            f"ConflictAverse(c={self.c}, target_weights={self.target_weights}, "
            f"rescale={self.rescale})"
        )
