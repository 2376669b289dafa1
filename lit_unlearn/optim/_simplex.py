"""Min-norm points of a convex hull of gradients, from their Gramian (MGDA's solvers).

``min_w w^T G w`` over the probability simplex: the closed form for two objectives with clipped
weights (AttrCloak Eq. 26) and, for ``m > 2``, an away-step Frank-Wolfe with an exact
active-set (affine) correction, all in float64 on the CPU.
"""

import math

import torch
from torch import Tensor

__all__ = ["frank_wolfe", "min_norm_pair"]

# Relative threshold under which ``||g_i - g_j||^2`` counts as zero (the two gradients are the
# same up to float64 rounding of the Gramian, so every weighting gives the same direction).
_SAME_EPS = 1e-12


def min_norm_pair(G: Tensor, lo: float = 0.0, hi: float = 1.0) -> float:
    """Weight ``alpha`` of objective 0 minimising ``||alpha g_0 + (1 - alpha) g_1||^2``.

    AttrCloak Eq. 26 written with the Gramian (``g_0 = ∇L^AU``, ``g_1 = ∇L^R``)::

        alpha = (g_1 - g_0)^T g_1 / ||g_0 - g_1||^2
              = (G11 - G01) / (G00 - 2 G01 + G11),  clipped to [lo, hi].

    The objective is a convex parabola in ``alpha``, so clipping the unconstrained minimiser is
    the exact box-constrained solution. Identical gradients (zero denominator) give
    ``alpha = 0.5`` clipped into ``[lo, hi]``.
    """
    g00, g01, g11 = float(G[0, 0]), float(G[0, 1]), float(G[1, 1])
    denom = g00 - 2.0 * g01 + g11
    same = denom <= _SAME_EPS * (g00 + g11)  # also true for a zero Gramian
    alpha = 0.5 if same else (g11 - g01) / denom
    return min(max(alpha, lo), hi)


def _best_start(G: Tensor) -> Tensor:
    """Starting point for Frank-Wolfe: the best two-objective min-norm point, or uniform.

    Every pair ``(i, j)`` is solved in closed form (:func:`_min_norm_pair`, vectorised) and the
    pair with the smallest ``w^T G w`` wins unless the uniform weighting is at least as good.
    Ties resolve to uniform, then to the first pair in row-major order (deterministic).
    """
    m = G.shape[0]
    uniform = torch.full((m,), 1.0 / m, dtype=torch.float64)
    uniform_val = float(uniform @ G @ uniform)
    d = torch.diagonal(G)
    di, dj = d[:, None], d[None, :]
    denom = di + dj - 2.0 * G
    same = denom <= _SAME_EPS * (di + dj)
    alpha = torch.where(same, torch.full_like(G, 0.5), (dj - G) / torch.where(same, 1.0, denom))
    alpha = alpha.clamp(0.0, 1.0)
    value = alpha**2 * di + (1 - alpha) ** 2 * dj + 2 * alpha * (1 - alpha) * G
    iu = torch.triu_indices(m, m, offset=1)
    pair_vals = value[iu[0], iu[1]]
    k = int(torch.argmin(pair_vals))
    if float(pair_vals[k]) >= uniform_val - _SAME_EPS:
        return uniform
    i, j = int(iu[0, k]), int(iu[1, k])
    w = torch.zeros(m, dtype=torch.float64)
    w[i] = alpha[i, j]
    w[j] = 1.0 - alpha[i, j]
    return w


def _affine_min(H: Tensor) -> Tensor | None:
    """Minimiser of ``y^T H y`` subject to ``sum y = 1`` (no sign constraint), or ``None``.

    Solves the KKT system ``[[H, 1], [1^T, 0]] [y; -mu] = [0; 1]`` by least squares, which also
    covers a singular ``H`` (affinely dependent gradients): the system of a convex QP with a
    feasible equality constraint is consistent, so any least-squares solution is a minimiser.
    """
    k = H.shape[0]
    K = torch.zeros(k + 1, k + 1, dtype=torch.float64)
    K[:k, :k] = H
    K[:k, k] = 1.0
    K[k, :k] = 1.0
    rhs = torch.zeros(k + 1, 1, dtype=torch.float64)
    rhs[k] = 1.0
    sol = torch.linalg.lstsq(K, rhs, driver="gelsd").solution[:k, 0]
    if not bool(torch.isfinite(sol).all()) or abs(float(sol.sum()) - 1.0) > 1e-9:
        return None
    return sol


def _corrective_step(G: Tensor, w: Tensor) -> Tensor:
    """Wolfe's minor cycles: move ``w`` to the min-norm point of its support's affine hull.

    With ``S = supp(w)`` and ``y`` the affine minimiser over ``S`` (:func:`_affine_min`): if
    ``y > 0`` on ``S``, ``w = y`` (the exact minimum over the face ``conv(S)``, where the KKT
    equalities ``(G w)_i = w^T G w`` hold for all ``i`` in ``S``); otherwise step from ``w``
    towards ``y`` until the first weight reaches zero, drop it and repeat. Convexity makes
    every accepted move non-increasing in ``w^T G w``; a numerically useless ``y`` (worse than
    ``w``) stops the cycle and leaves ``w`` as is.
    """
    m = G.shape[0]
    for _ in range(m):
        support = torch.nonzero(w > 0).flatten()
        if support.numel() <= 1:
            break
        H = G[support][:, support]
        y = _affine_min(H)
        w_s = w[support]
        if y is None or float(y @ H @ y) > float(w_s @ H @ w_s):
            break
        if bool((y > 0).all()):
            w = torch.zeros(m, dtype=torch.float64)
            w[support] = y
            break
        shrink = y <= 0
        ratios = torch.full_like(w_s, math.inf)
        ratios[shrink] = w_s[shrink] / (w_s[shrink] - y[shrink])
        k = int(torch.argmin(ratios))
        theta = min(float(ratios[k]), 1.0)
        w_s = (w_s + theta * (y - w_s)).clamp_min(0.0)
        w_s[k] = 0.0  # the blocking weight leaves the support
        w = torch.zeros(m, dtype=torch.float64)
        w[support] = w_s
        w = w / w.sum()
    return w


def frank_wolfe(G: Tensor, max_iter: int, tol: float, init: Tensor | None = None) -> Tensor:
    """Minimise ``w^T G w`` over the probability simplex by corrective Frank-Wolfe.

    Sener & Koltun (2018), Algorithm 2, solves the MGDA problem with Frank-Wolfe (Jaggi 2013):
    move from ``w`` towards the vertex ``e_s`` with the smallest ``(G w)_s`` with an exact line
    search between the two points. Plain Frank-Wolfe converges as ``O(1/k)`` and leaves small
    positive crumbs on objectives that should get no weight, so each iteration here

    1. takes the Frank-Wolfe step, or an *away step* from the active vertex with the largest
       ``(G w)_v`` when that violates the KKT conditions more (Lacoste-Julien & Jaggi 2015),
       both with exact line search on the quadratic;
    2. then a fully-corrective step (:func:`_corrective_step`, the minor cycles of Wolfe's 1976
       min-norm-point algorithm) that jumps to the min-norm point of the current support's
       affine hull, dropping weights that turn negative on the way.

    The stopping rule is the KKT condition of the QP: with ``g = G w`` and ``f = w^T g``,
    ``f - min_i g_i <= tol`` (Frank-Wolfe gap) and ``max_{i: w_i > 0} g_i - f <= tol``
    (complementary slackness), in units of the largest ``G_ii`` (``G`` is pre-normalised).

    Args:
        G: Symmetric PSD float64 Gramian, already normalised (largest diagonal entry 1).
        max_iter: Iteration budget.
        tol: KKT tolerance.
        init: Starting weights on the simplex; :func:`_best_start` if ``None``.

    Returns:
        Float64 weights on the simplex.
    """
    w = (_best_start(G) if init is None else init.to(torch.float64)).clone()
    for _ in range(max_iter):
        g = G @ w
        f = float(w @ g)
        s = int(torch.argmin(g))
        fw_gap = f - float(g[s])
        g_active = torch.where(w > 0, g, torch.full_like(g, -math.inf))
        v = int(torch.argmax(g_active))
        away_gap = float(g[v]) - f
        if max(fw_gap, away_gap) <= tol:
            break
        if fw_gap >= away_gap:
            # Towards e_s: w + gamma (e_s - w), gamma in [0, 1].
            direction = -w
            direction[s] += 1.0
            gamma_max = 1.0
        else:
            # Away from e_v: w + gamma (w - e_v), gamma in [0, w_v / (1 - w_v)].
            wv = float(w[v])
            direction = w.clone()
            direction[v] -= 1.0
            gamma_max = wv / (1.0 - wv) if wv < 1.0 else 0.0
        # Exact line search: f(w + gamma d) = f + 2 gamma d^T G w + gamma^2 d^T G d.
        slope = float(direction @ g)
        curvature = float(direction @ G @ direction)
        if curvature > 0:
            gamma = min(max(-slope / curvature, 0.0), gamma_max)
        else:
            gamma = gamma_max if slope < 0 else 0.0
        if gamma <= 0.0:
            break  # no descent left along either direction (numerically converged)
        w = w + gamma * direction
        if fw_gap < away_gap and gamma >= gamma_max:
            w[v] = 0.0  # drop step: exactly zero, leaves the active set
        w = w.clamp_min(0.0)
        w = _corrective_step(G, w / w.sum())
    return w
