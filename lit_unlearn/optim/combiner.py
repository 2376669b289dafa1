"""The gradient-combiner interface: ``m`` objective gradients in, weights and one direction out.

Combiners decide from the Gramian ``G = J J^T`` (shape ``[m, m]``, float64), never from the
Jacobian ``J`` ``[m, P]`` itself. That keeps the decision cheap (``m`` is tiny, ``P`` is not)
and makes it reproducible in distributed training: once every rank holds the same synchronised
gradients (or the same all-reduced Gramian: Gramians add up over disjoint parameter blocks, so
shards can sum theirs), every rank computes the same weights, because
:meth:`GradientCombiner.weights` is a pure, deterministic function of the Gramian (computed on
the CPU in float64, no randomness, inputs never modified).

Implementations: :class:`~lit_unlearn.optim.mgda.MGDA` (min-norm point, AttrCloak Eq. 24-26),
:class:`~lit_unlearn.optim.fixed.FixedWeights` (the fixed-``alpha_u`` ablation) and
:class:`~lit_unlearn.optim.conflict_averse.ConflictAverse` (DSDA's conflict-averse direction;
its "weights" are the direction's coefficients on the gradients and need not sum to 1).
"""

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from lit_unlearn.optim.grads import gramian

__all__ = ["GradientCombiner", "check_grads", "check_gramian"]


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

    def static_weights(self, m: int) -> Tensor | None:
        """Weights that do not depend on the gradients, or None (the default: they do).

        A caller holding ``m`` losses can then skip the ``m`` per-objective backward passes and
        backpropagate the weighted sum once: the same direction ``w @ J`` at a fraction of the
        cost. Must agree with :meth:`weights` on any Gramian of size ``m``.
        """
        return None

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
        check_grads(grads)
        w = self.weights(gramian(grads)).to(device=grads.device, dtype=grads.dtype)
        return w @ grads.detach(), w

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_grads(grads: Tensor) -> None:
    if grads.dim() != 2 or grads.shape[0] == 0:
        raise ValueError(
            f"grads must be a [m, P] matrix with m >= 1 (one flattened gradient per objective), "
            f"got shape {tuple(grads.shape)}"
        )
    finite = torch.isfinite(grads.detach()).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"grads contains non-finite values (NaN/inf) in objective rows {bad}")


def check_gramian(gramian: Tensor) -> Tensor:
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
