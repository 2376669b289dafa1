"""MGDA: the min-norm element of the objective gradients' convex hull (AttrCloak Eq. 24-26)."""

import math
from collections.abc import Sequence
from numbers import Real
from typing import Literal

import torch
from torch import Tensor

from lit_unlearn.optim._simplex import frank_wolfe, min_norm_pair
from lit_unlearn.optim.combiner import GradientCombiner, check_gramian

__all__ = ["MGDA"]


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
        G = check_gramian(gramian)
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
            alpha = min_norm_pair(G, lo, hi)  # scale-free; zero Gramian -> 0.5 clipped
            w = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
        elif scale == 0.0:
            w = torch.full((m,), 1.0 / m, dtype=torch.float64)
        else:
            w = frank_wolfe(G / scale, self.max_iter, self.tol)
        return w

    def __repr__(self) -> str:
        return (
            f"MGDA(bounds={self.bounds}, max_iter={self.max_iter}, tol={self.tol}, "
            f"normalize={self.normalize!r})"
        )
