"""Gradient combiners: turn ``m`` objective gradients into one update direction.

Multi-objective unlearning (AttrCloak's dual-objective step, later conflict-averse methods)
computes one gradient per objective over the same shared parameters, stacks them into a
Jacobian ``J`` of shape ``[m, P]`` and asks a :class:`GradientCombiner` for weights ``w`` (shape
``[m]``); the update direction is ``d = w @ J``.

Combiners decide from the Gramian ``G = J J^T`` (shape ``[m, m]``, float64), never from ``J``
itself. That keeps the decision cheap (``m`` is tiny, ``P`` is not) and makes it reproducible in
distributed training: once every rank holds the same synchronised gradients (or the same
all-reduced Gramian: Gramians add up over disjoint parameter blocks, so shards can sum theirs),
every rank computes the same weights, because :meth:`GradientCombiner.weights` is a pure,
deterministic function of the Gramian (computed on the CPU in float64, no randomness, inputs
never modified).

Combiners:

* :class:`MGDA`: the min-norm point of the convex hull of the gradients (Désidéri 2012; Sener &
  Koltun 2018), with AttrCloak's closed form for two objectives (Eq. 24-26) and its clipping of
  the first objective's weight.
* :class:`FixedWeights`: constant weights (the fixed-``alpha_u`` ablation).

Helpers: :func:`gramian`, :func:`flatten_grads` and :func:`assign_flat_grad` move between the
parameters' ``.grad`` fields and the flat vectors the combiners work on.
"""

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "MGDA",
    "FixedWeights",
    "GradientCombiner",
    "assign_flat_grad",
    "flatten_grads",
    "gramian",
]

# Relative threshold under which ``||g_i - g_j||^2`` counts as zero (the two gradients are the
# same up to float64 rounding of the Gramian, so every weighting gives the same direction).
_SAME_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def gramian(grads: Tensor) -> Tensor:
    """Gramian ``G = J J^T`` of stacked objective gradients, in float64.

    Args:
        grads: Jacobian ``J`` of shape ``[m, P]``: one (flattened) gradient per row.

    Returns:
        ``[m, m]`` float64 tensor on ``grads``' device, ``G[i, j] = <g_i, g_j>``.

    Raises:
        ValueError: If ``grads`` is not two-dimensional.
    """
    if grads.dim() != 2:
        raise ValueError(
            f"grads must be a [m, P] matrix (one flattened gradient per row), "
            f"got shape {tuple(grads.shape)}"
        )
    j = grads.detach().to(torch.float64)
    return j @ j.T


def _as_param_list(params: Iterable[Tensor]) -> list[Tensor]:
    plist = list(params)
    if not plist:
        raise ValueError("params is empty: nothing to flatten or assign")
    dtypes = {p.dtype for p in plist}
    devices = {p.device for p in plist}
    if len(dtypes) > 1 or len(devices) > 1:
        raise ValueError(
            "all params must share one dtype and device to form a flat gradient, got dtypes "
            f"{sorted(str(d) for d in dtypes)} and devices {sorted(str(d) for d in devices)}"
        )
    return plist


def flatten_grads(params: Iterable[Tensor]) -> Tensor:
    """Concatenate the ``.grad`` of ``params`` into one flat vector.

    Parameters whose ``.grad`` is ``None`` contribute zeros, so the layout (and length) only
    depends on the parameters, never on which of them received a gradient. Sparse gradients
    are densified. The result is a new tensor: editing it leaves the ``.grad`` fields alone.

    Args:
        params: Parameters (any iterable, e.g. ``module.parameters()``), all of one dtype and
            device.

    Returns:
        1-D tensor of length ``sum(p.numel())`` with the params' dtype and device.

    Raises:
        ValueError: If ``params`` is empty or mixes dtypes/devices.
    """
    plist = _as_param_list(params)
    chunks = []
    for p in plist:
        g = p.grad
        if g is None:
            chunks.append(torch.zeros(p.numel(), dtype=p.dtype, device=p.device))
        else:
            g = g.detach()
            if g.is_sparse:
                g = g.to_dense()
            chunks.append(g.reshape(-1).to(p.dtype))
    return torch.cat(chunks)


def assign_flat_grad(params: Iterable[Tensor], flat: Tensor) -> None:
    """Write a flat vector back into the ``.grad`` of ``params`` (inverse of :func:`flatten_grads`).

    Existing dense gradients are overwritten in place (so optimiser state and DDP bucket views
    that alias them stay valid); missing (``None``) or sparse ones are replaced by a fresh dense
    tensor that does not alias ``flat``.

    Args:
        params: The same parameters, in the same order, as given to :func:`flatten_grads`.
        flat: 1-D tensor of length ``sum(p.numel())``; cast to the params' dtype and device.

    Raises:
        ValueError: If ``params`` is empty, mixes dtypes/devices, or ``flat`` has the wrong
            shape.
    """
    plist = _as_param_list(params)
    total = sum(p.numel() for p in plist)
    if flat.dim() != 1 or flat.numel() != total:
        raise ValueError(
            f"flat must be a 1-D tensor with {total} elements (the params' total size), "
            f"got shape {tuple(flat.shape)}"
        )
    with torch.no_grad():
        offset = 0
        for p in plist:
            n = p.numel()
            chunk = flat[offset : offset + n].detach().view_as(p).to(device=p.device, dtype=p.dtype)
            offset += n
            if p.grad is None or p.grad.is_sparse:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)


# --------------------------------------------------------------------------------------------
# Interface
# --------------------------------------------------------------------------------------------


class GradientCombiner(ABC):
    """Maps ``m`` objective gradients to weights and one combined direction.

    Subclasses implement :meth:`weights` (Gramian in, weights out); :meth:`__call__` builds the
    Gramian, asks for the weights and forms the direction ``d = w @ J``.
    """

    @abstractmethod
    def weights(self, gramian: Tensor) -> Tensor:
        """Weights of the objectives from their Gramian.

        Must be deterministic and pure: no randomness, no in-place edits of ``gramian``.

        Args:
            gramian: ``G = J J^T``, shape ``[m, m]`` (float64 recommended).

        Returns:
            Float64 weights of shape ``[m]`` on ``gramian``'s device.
        """

    def __call__(self, grads: Tensor) -> tuple[Tensor, Tensor]:
        """Combine stacked objective gradients.

        Args:
            grads: Jacobian ``J`` of shape ``[m, P]`` (one flattened gradient per objective).

        Returns:
            ``(direction, weights)``: ``direction = weights @ J`` of shape ``[P]`` and the
            weights of shape ``[m]``, both in ``grads``' dtype and on its device (the weights are
            exactly the ones the direction was formed with). Both are detached: combiners are
            not differentiated through.

        Raises:
            ValueError: If ``grads`` is not ``[m, P]`` with ``m >= 1`` or holds non-finite values.
        """
        _check_grads(grads)
        w = self.weights(gramian(grads)).to(device=grads.device, dtype=grads.dtype)
        return w @ grads.detach(), w

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_grads(grads: Tensor) -> None:
    if grads.dim() != 2 or grads.shape[0] == 0:
        raise ValueError(
            f"grads must be a [m, P] matrix with m >= 1 (one flattened gradient per objective), "
            f"got shape {tuple(grads.shape)}"
        )
    finite = torch.isfinite(grads.detach()).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"grads contains non-finite values (NaN/inf) in objective rows {bad}")


def _check_gramian(gramian: Tensor) -> Tensor:
    """Validate a Gramian; return a symmetrised float64 CPU copy."""
    if gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1] or gramian.shape[0] == 0:
        raise ValueError(
            f"gramian must be a square [m, m] matrix with m >= 1, got shape {tuple(gramian.shape)}"
        )
    G = gramian.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(G).all()):
        raise ValueError(
            "gramian contains non-finite values (NaN/inf): an objective's gradient is "
            "non-finite or overflows float64 when squared"
        )
    diag = torch.diagonal(G)
    if bool((diag < 0).any()):
        raise ValueError(
            f"gramian must be positive semi-definite (G = J J^T), but its diagonal "
            f"{diag.tolist()} has negative entries"
        )
    return (G + G.T) / 2


# --------------------------------------------------------------------------------------------
# MGDA
# --------------------------------------------------------------------------------------------


def _min_norm_pair(G: Tensor, lo: float = 0.0, hi: float = 1.0) -> float:
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


def _frank_wolfe(G: Tensor, max_iter: int, tol: float, init: Tensor | None = None) -> Tensor:
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


class MGDA(GradientCombiner):
    """Multiple-gradient descent: the min-norm element of the gradients' convex hull.

    Solves (Désidéri 2012; Sener & Koltun 2018, Eq. 3; AttrCloak Eq. 24)::

        min_w  || sum_i w_i g_i ||^2 = w^T G w   s.t.  w_i >= 0,  sum_i w_i = 1.

    If the minimum is zero the point is Pareto-stationary; otherwise ``d = sum_i w_i g_i``
    satisfies ``<d, g_i> >= ||d||^2 > 0`` for every objective (KKT of the QP), so a step along
    ``-d`` decreases all objectives to first order.

    * ``m == 2`` uses the closed form of AttrCloak Eq. 25-26, with ``g_0 = ∇L^AU`` (objective 0,
      unlearning) and ``g_1 = ∇L^R`` (objective 1, retention)::

          alpha_u = (G11 - G01) / (G00 - 2 G01 + G11),  clipped to ``bounds`` (default [0, 1]),
          weights = [alpha_u, 1 - alpha_u].

      AttrCloak clips ``alpha_u`` to ``[0, 1]`` with the recommendation loss (data-dependent) and
      to ``[0.1, 1]`` with the regularisation loss (data-free). Identical gradients (zero
      denominator) give ``alpha_u = 0.5`` clipped into the bounds.
    * ``m > 2`` runs Frank-Wolfe on the Gramian (Sener & Koltun 2018, Algorithm 2, exact line
      search), with away steps and Wolfe's fully-corrective minor cycles so that it converges in
      few iterations and puts exact zeros where the optimum does, from the best closed-form pair
      or the uniform weights, until the KKT conditions hold to ``tol`` or ``max_iter``
      iterations. Box constraints are not
      supported there: ``bounds`` must be ``None``.
    * A zero Gramian (all gradients zero) gives uniform weights (``m == 2``: ``0.5`` clipped into
      ``bounds``); the result is never NaN.

    Args:
        normalize: ``none`` (the paper's MGDA on raw gradients) or ``l2`` (solve on unit
            gradients, Sener & Koltun 2018 Sec. 3.2; the returned weights then apply to the raw
            gradients and no longer sum to 1).
        bounds: ``(lo, hi)`` with ``0 <= lo <= hi <= 1``: the interval the FIRST objective's
            weight is clipped to (two objectives only). ``None`` means ``(0, 1)`` for two
            objectives and is required for ``m != 2``.
        max_iter: Frank-Wolfe iteration budget (``m > 2``), at least 1.
        tol: KKT tolerance of Frank-Wolfe, relative to the largest squared gradient norm
            ``max_i ||g_i||^2``; finite and ``>= 0``.

    Raises:
        ValueError: On invalid hyperparameters.
    """

    def __init__(
        self,
        bounds: tuple[float, float] | None = None,
        max_iter: int = 250,
        tol: float = 1e-9,
        normalize: Literal["none", "l2"] = "none",
    ) -> None:
        if bounds is not None:
            if isinstance(bounds, str | bytes) or not isinstance(bounds, Sequence):
                raise ValueError(f"bounds must be None or a pair (lo, hi), got {bounds!r}")
            if len(bounds) != 2 or not all(
                isinstance(b, Real) and not isinstance(b, bool) for b in bounds
            ):
                raise ValueError(f"bounds must be a pair of numbers (lo, hi), got {bounds!r}")
            lo, hi = float(bounds[0]), float(bounds[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi <= 1.0):
                raise ValueError(
                    f"bounds (lo, hi) must satisfy 0 <= lo <= hi <= 1 (they bound the first "
                    f"objective's weight alpha_u, e.g. (0.1, 1.0) for AttrCloak-DF), got {bounds!r}"
                )
            bounds = (lo, hi)
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        if (
            isinstance(tol, bool)
            or not isinstance(tol, Real)
            or not math.isfinite(float(tol))
            or tol < 0
        ):
            raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
        if normalize not in ("none", "l2"):
            raise ValueError(f"normalize must be 'none' or 'l2', got {normalize!r}")
        self.bounds: tuple[float, float] | None = bounds
        self.max_iter: int = max_iter
        self.tol: float = float(tol)
        self.normalize: Literal["none", "l2"] = normalize

    def weights(self, gramian: Tensor) -> Tensor:
        """Min-norm weights on the simplex (see the class docstring).

        Args:
            gramian: ``G = J J^T``, shape ``[m, m]``; converted to float64, not modified.

        Returns:
            Float64 weights of shape ``[m]`` on ``gramian``'s device, ``w >= 0``, ``sum w = 1``.

        Raises:
            ValueError: If ``gramian`` is not square, is non-finite, has a negative diagonal,
                or ``bounds`` is set and ``m != 2``.
        """
        G = _check_gramian(gramian)
        if self.normalize == "l2":
            # Sener & Koltun's "l2" normalisation: solve on unit gradients, so the weights
            # reflect directions only, then map back onto the raw gradients.
            norms = torch.sqrt(torch.clamp(torch.diagonal(G), min=0.0))
            inv = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
            unit = self._simplex_weights(G * inv[:, None] * inv[None, :])
            return (unit * inv).to(gramian.device)
        return self._simplex_weights(G).to(gramian.device)

    def _simplex_weights(self, G: Tensor) -> Tensor:
        m = G.shape[0]
        if self.bounds is not None and m != 2:
            raise ValueError(
                f"MGDA bounds={self.bounds} constrain the first of exactly two objectives, but "
                f"got m={m} objectives; use bounds=None for m != 2"
            )
        scale = float(torch.diagonal(G).max())
        if m == 1:
            w = torch.ones(1, dtype=torch.float64)
        elif m == 2:
            lo, hi = self.bounds if self.bounds is not None else (0.0, 1.0)
            alpha = _min_norm_pair(G, lo, hi)  # scale-free; zero Gramian -> 0.5 clipped
            w = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
        elif scale == 0.0:
            w = torch.full((m,), 1.0 / m, dtype=torch.float64)
        else:
            w = _frank_wolfe(G / scale, self.max_iter, self.tol)
        return w

    def __repr__(self) -> str:
        return (
            f"MGDA(bounds={self.bounds}, max_iter={self.max_iter}, tol={self.tol}, "
            f"normalize={self.normalize!r})"
        )


# --------------------------------------------------------------------------------------------
# Fixed weights
# --------------------------------------------------------------------------------------------


class FixedWeights(GradientCombiner):
    """Constant weights, whatever the gradients (AttrCloak's fixed-``alpha_u`` ablation, Fig. 5).

    The ablation sets ``weights = [alpha_u, 1 - alpha_u]`` for
    ``alpha_u in {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}`` in the static objective of AttrCloak Eq. 22.
    The weights are returned as given (not normalised).

    Args:
        weights: One finite, non-negative weight per objective, at least one positive. The
            number of objectives at call time must equal ``len(weights)``.

    Raises:
        ValueError: On an empty list, non-numbers, negative/non-finite values or all zeros.
    """

    def __init__(self, weights: list[float]) -> None:
        if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
            raise ValueError(f"weights must be a list of numbers, got {weights!r}")
        if len(weights) == 0:
            raise ValueError("weights must hold one weight per objective, got an empty list")
        for i, x in enumerate(weights):
            if isinstance(x, bool) or not isinstance(x, Real):
                raise ValueError(f"weights[{i}] must be a number, got {x!r}")
            if not math.isfinite(float(x)) or x < 0:
                raise ValueError(f"weights[{i}] must be finite and >= 0, got {x!r}")
        if not any(float(x) > 0 for x in weights):
            raise ValueError(f"at least one weight must be positive, got {list(weights)!r}")
        self._weights = [float(x) for x in weights]

    @property
    def fixed_weights(self) -> list[float]:
        """The configured weights (a copy)."""
        return list(self._weights)

    def _check_m(self, m: int) -> None:
        if m != len(self._weights):
            raise ValueError(
                f"FixedWeights has {len(self._weights)} weights {self._weights} but got {m} "
                f"objectives; give one weight per objective"
            )

    def weights(self, gramian: Tensor) -> Tensor:
        """The fixed weights, float64, on ``gramian``'s device (only its shape is used).

        Raises:
            ValueError: If ``gramian`` is not ``[m, m]`` with ``m == len(weights)``.
        """
        if gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1]:
            raise ValueError(
                f"gramian must be a square [m, m] matrix, got shape {tuple(gramian.shape)}"
            )
        self._check_m(gramian.shape[0])
        return torch.tensor(self._weights, dtype=torch.float64, device=gramian.device)

    def __call__(self, grads: Tensor) -> tuple[Tensor, Tensor]:
        """``(weights @ grads, weights)`` without forming the Gramian (not needed here).

        Raises:
            ValueError: If ``grads`` is not ``[m, P]``, holds non-finite values, or
                ``m != len(weights)``.
        """
        _check_grads(grads)
        self._check_m(grads.shape[0])
        w = torch.tensor(self._weights, dtype=grads.dtype, device=grads.device)
        return w @ grads.detach(), w

    def __repr__(self) -> str:
        return f"FixedWeights(weights={self._weights})"
