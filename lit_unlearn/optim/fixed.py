"""Fixed objective weights (AttrCloak's fixed-``alpha_u`` ablation, Fig. 5)."""

import math
from collections.abc import Sequence
from numbers import Real

import torch
from torch import Tensor

from lit_unlearn.optim.combiner import GradientCombiner, check_grads

__all__ = ["FixedWeights"]


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

    def static_weights(self, m: int) -> Tensor:
        """The fixed weights (float64, CPU) for ``m`` objectives: they ignore the gradients.

        Raises:
            ValueError: If ``m != len(weights)``.
        """
        self._check_m(m)
        return torch.tensor(self._weights, dtype=torch.float64)

    def __call__(self, grads: Tensor) -> tuple[Tensor, Tensor]:
        """``(weights @ grads, weights)`` without forming the Gramian (not needed here).

        Raises:
            ValueError: If ``grads`` is not ``[m, P]``, holds non-finite values, or
                ``m != len(weights)``.
        """
        check_grads(grads)
        self._check_m(grads.shape[0])
        w = torch.tensor(self._weights, dtype=grads.dtype, device=grads.device)
        return w @ grads.detach(), w

    def __repr__(self) -> str:
        return f"FixedWeights(weights={self._weights})"
