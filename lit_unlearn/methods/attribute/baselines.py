"""U2U-R and D2D-R (Li et al., "Making Users Indistinguishable: Attribute-wise Unlearning in
Recommender Systems", ACM MM 2023): data-free baselines of AttrCloak with fixed weights.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from lit_unlearn.methods.attribute.base import AttributeUnlearning, Mode
from lit_unlearn.methods.attribute.distinguishability import d2d_loss, u2u_loss
from lit_unlearn.optim import FixedWeights, GradientCombiner
from lit_unlearn.validation import check_non_negative


class _FixedWeightBaseline(AttributeUnlearning):
    """Distinguishability loss + L2 regularisation with fixed weights (single objective)."""

    def __init__(
        self,
        checkpoint: str | None = None,
        attributes: list[str] | None = None,
        mode: Mode = "df",
        distinguishability_weight: float = 1.0,
        regularization_weight: float = 1.0,
        lr: float = 1e-3,
        reg_reduction: Literal["sum", "mean"] = "mean",
        privacy_fraction: float = 1.0,
        privacy_seed: int | None = None,
        permute_labels: int | None = None,
    ) -> None:
        # Named here: FixedWeights would only say "weights[0]".
        check_non_negative("distinguishability_weight", distinguishability_weight)
        check_non_negative("regularization_weight", regularization_weight)
        combiner: GradientCombiner = FixedWeights(
            [distinguishability_weight, regularization_weight]
        )
        super().__init__(
            checkpoint=checkpoint,
            attributes=attributes,
            mode=mode,
            combiner=combiner,
            lr=lr,
            reg_reduction=reg_reduction,
            privacy_fraction=privacy_fraction,
            privacy_seed=privacy_seed,
            permute_labels=permute_labels,
        )

    def _average(self, per_attribute: dict[str, Tensor]) -> Tensor:
        return torch.stack(list(per_attribute.values())).mean()


class U2UR(_FixedWeightBaseline):
    """User-to-user distinguishability (pull users of different classes together) + L2.

    Args:
        checkpoint: Trained model to unlearn.
        attributes: Attributes to forget (default: all).
        mode: ``df`` as in the paper (``dd`` uses the recommendation loss instead of L2).
        distinguishability_weight: Fixed weight of the U2U loss.
        regularization_weight: Fixed weight of the retention loss.
        lr: Adam learning rate over user-side parameters.
        reg_reduction: Reduction of the L2 regularisation.
        num_pairs: Cross-class user pairs sampled per attribute and step; ``None`` uses the
            exact mean over all cross-class pairs (O(N d) from per-class sums).
        seed: Seed of the pair sampling.
        privacy_fraction: Share of users the U2U loss sees per step (fresh random subset;
            ``1.0`` = the paper; see :class:`AttributeUnlearning`).
        privacy_seed: Seed of the per-step subsets (``None``: the run's seed).
        permute_labels: The negative control: unlearn labels shuffled among the labelled users
            (see :class:`AttributeUnlearning`); ``None``: the real labels.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        attributes: list[str] | None = None,
        mode: Mode = "df",
        distinguishability_weight: float = 1.0,
        regularization_weight: float = 1.0,
        lr: float = 1e-3,
        reg_reduction: Literal["sum", "mean"] = "mean",
        num_pairs: int | None = None,
        seed: int = 0,
        privacy_fraction: float = 1.0,
        privacy_seed: int | None = None,
        permute_labels: int | None = None,
    ) -> None:
        super().__init__(
            checkpoint,
            attributes,
            mode,
            distinguishability_weight,
            regularization_weight,
            lr,
            reg_reduction,
            privacy_fraction,
            privacy_seed,
            permute_labels,
        )
        if num_pairs is not None and num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
        self.num_pairs = num_pairs
        self.seed = seed
        self._generator: torch.Generator | None = None
        # The pair sampler's state from the checkpoint a fit resumes from (set on first use).
        self._resumed_generator: Tensor | None = None

    def privacy_loss(self, representation: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self._generator is None or self._generator.device != representation.device:
            # Same seed on every rank: identical pairs, identical loss.
            self._generator = torch.Generator(device=representation.device).manual_seed(self.seed)
            if self._resumed_generator is not None:
                # Resumed: continue the uninterrupted run's pair sequence, not the seed's start.
                self._generator.set_state(self._resumed_generator)
                self._resumed_generator = None
        per = {
            n: u2u_loss(
                representation,
                c,
                self._num_classes[n],
                num_pairs=self.num_pairs,
                generator=self._generator,
            )
            for n, c in self._codes.items()
        }
        return self._average(per), per

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._generator is not None:
            state["pair_generator"] = self._generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._generator = None
        self._resumed_generator = state_dict.get("pair_generator")


class D2DR(_FixedWeightBaseline):
    """Distribution-to-distribution distinguishability (class distributions together) + L2.

    Args:
        checkpoint: Trained model to unlearn.
        attributes: Attributes to forget (default: all).
        mode: ``df`` as in the paper.
        distinguishability_weight: Fixed weight of the D2D loss.
        regularization_weight: Fixed weight of the retention loss.
        lr: Adam learning rate over user-side parameters.
        reg_reduction: Reduction of the L2 regularisation.
        kernel: ``mean`` (distance of class means) or ``mmd`` (Gaussian-kernel MMD).
        privacy_fraction: Share of users the D2D loss sees per step (fresh random subset;
            ``1.0`` = the paper; see :class:`AttributeUnlearning`).
        privacy_seed: Seed of the per-step subsets (``None``: the run's seed).
        permute_labels: The negative control: unlearn labels shuffled among the labelled users
            (see :class:`AttributeUnlearning`); ``None``: the real labels.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        attributes: list[str] | None = None,
        mode: Mode = "df",
        distinguishability_weight: float = 1.0,
        regularization_weight: float = 1.0,
        lr: float = 1e-3,
        reg_reduction: Literal["sum", "mean"] = "mean",
        kernel: Literal["mean", "mmd"] = "mean",
        privacy_fraction: float = 1.0,
        privacy_seed: int | None = None,
        permute_labels: int | None = None,
    ) -> None:
        super().__init__(
            checkpoint,
            attributes,
            mode,
            distinguishability_weight,
            regularization_weight,
            lr,
            reg_reduction,
            privacy_fraction,
            privacy_seed,
            permute_labels,
        )
        self.kernel = kernel

    def privacy_loss(self, representation: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        per = {
            n: d2d_loss(representation, c, self._num_classes[n], kernel=self.kernel)
            for n, c in self._codes.items()
        }
        return self._average(per), per
