"""The whole-data (non-sampling) loss of ENMF and its closed-form block Newton systems.

ENMF (Chen et al., "Efficient Neural Matrix Factorization without Sampling for Recommendation",
TOIS 2020) scores ``y_uv = h^T (p_u * q_v)`` and regresses *every* user-item entry: observed
entries towards 1 with weight 1, missing ones towards 0 with a uniform weight ``c0``. AltEraser
(Liu et al., paper 003, Eq. 1) writes the same weighted least squares with an L2 penalty:

    L = sum_{(u,v) in D} (1 - y_uv)^2 + c0 * sum_{(u,v) not in D} y_uv^2 + reg (|P|^2 + |Q|^2)
      = const + sum_{(u,v) in D} [(1 - c0) y_uv^2 - 2 y_uv]                       (positive term)
              + c0 * sum_{k,l} h_k h_l (P^T P)_{kl} (Q^T Q)_{kl}                  (missing term)
              + reg (|P|^2 + |Q|^2).

The missing term is the ENMF trick: it costs ``O((m + n) d^2)`` instead of ``O(m n d)`` and never
builds the ``m x n`` matrix. The constant (the number of observed entries) is dropped.

With ``h`` and one side fixed, the loss of a single row (a user with ``Q`` fixed, or an item with
``P`` fixed) is an exact quadratic in that row, ``x``: with ``o = h * (other row)``,

    L_r(x) = sum_{o in pos(r)} [(1 - c0)(x^T o)^2 - 2 x^T o] + c0 x^T G x + reg |x|^2,
    G = sum_{all others} o o^T,
    grad_r = H_r x - 2 sum_{o in pos(r)} o,
    H_r    = 2 [(1 - c0) sum_{o in pos(r)} o o^T + c0 G + reg I].

These per-row ``d x d`` Hessians are what AltEraser's ad-hoc (AH) Newton solves in batches
(paper 003, section 4.3); one Newton step per row is the exact block minimiser (ALS).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_unlearn.optim.newton import NewtonSystems

__all__ = [
    "RowBlock",
    "enmf_objective",
    "missing_term",
    "positive_term",
    "row_newton_systems",
]


def _check_weight(negative_weight: float) -> None:
    if not 0.0 <= negative_weight <= 1.0:
        raise ValueError(f"negative_weight (c0) must be in [0, 1], got {negative_weight}")


def positive_term(user_vec: Tensor, item_vec: Tensor, h: Tensor, negative_weight: float) -> Tensor:
    """``sum_pairs [(1 - c0) y^2 - 2 y]`` over observed pairs given as aligned rows ``[N, d]``."""
    _check_weight(negative_weight)
    y = (user_vec * h * item_vec).sum(dim=-1)
    return ((1.0 - negative_weight) * y.square() - 2.0 * y).sum()


def missing_term(
    user_vec: Tensor,
    item_vec: Tensor,
    h: Tensor,
    negative_weight: float,
    user_weight: Tensor | None = None,
) -> Tensor:
    """``c0 * sum_u w_u sum_v y_uv^2`` over every user-item entry, in ``O((m + n) d^2)``.

    Args:
        user_vec: User embeddings ``[M, d]`` (all users, or a batch of them).
        item_vec: Item embeddings ``[K, d]`` (all items).
        h: Prediction layer ``[d]``.
        negative_weight: ``c0``.
        user_weight: Optional per-row weights ``[M]`` (a training batch carries ``1 / n_u`` per
            interaction so that an epoch sums to the whole term exactly).
    """
    _check_weight(negative_weight)
    pu = user_vec if user_weight is None else user_vec * user_weight.unsqueeze(-1)
    gram_u = pu.T @ user_vec
    gram_i = item_vec.T @ item_vec
    return negative_weight * (torch.outer(h, h) * gram_u * gram_i).sum()


def enmf_objective(
    user_emb: Tensor,
    item_emb: Tensor,
    h: Tensor,
    pairs: Tensor,
    negative_weight: float,
    reg: float,
) -> Tensor:
    """The full ENMF loss ``L_D(P, Q, h)`` of the module docstring on pairs ``[N, 2]``."""
    pos = positive_term(user_emb[pairs[:, 0]], item_emb[pairs[:, 1]], h, negative_weight)
    miss = missing_term(user_emb, item_emb, h, negative_weight)
    return pos + miss + reg * (user_emb.square().sum() + item_emb.square().sum())


def _hessians(
    o: Tensor,
    row_idx: Tensor,
    other_idx: Tensor,
    num_rows: int,
    positive_weight: float,
    constant: Tensor,
    bucket: int,
) -> tuple[Tensor, Tensor]:
    """``constant + positive_weight * sum_{o in pos(r)} o o^T`` for every row, by degree.

    Rows are sorted by degree and taken ``bucket`` at a time; each bucket's positives are
    gathered into a zero-padded ``[bucket, max_degree, d]`` block and multiplied by its transpose
    with ``baddbmm``, which adds the constant part in the same kernel and writes straight into
    the output (no separate fill of ``R d^2`` floats). Dense batched matmuls run several times
    faster than a sparse ``[R, K] x [K, d^2]`` product on CPU (measured: 0.15 s against 1.0 s for
    6040 users, 0.8M pairs, d = 64), sorting by degree keeps the padding small, and padding
    points at an appended zero row, so no mask multiplication is needed.

    Returns:
        ``(H [R, d, d], rows [R])``: ``H[i]`` is the Hessian of row ``rows[i]`` (degree order).
    """
    d = o.shape[1]
    # sqrt of the weight folded into the gathered rows: (a o)(a o)^T = a^2 o o^T.
    padded = torch.cat([o * positive_weight**0.5, o.new_zeros(1, d)])
    zero_row = o.shape[0]
    order = torch.argsort(row_idx, stable=True)
    others = other_idx[order]
    degree = torch.bincount(row_idx, minlength=num_rows)
    start = torch.cumsum(degree, 0) - degree
    by_degree = torch.argsort(degree)
    # Built and returned in degree order: every bucket is a contiguous slice written in place,
    # and the caller scatters its [R, d] steps back instead of permuting R d x d Hessians.
    hess = o.new_empty(num_rows, d, d)
    # Python ints once: a .max() per bucket would synchronise with the device every time.
    sorted_degree = degree[by_degree].tolist()
    last = max(others.numel() - 1, 0)
    for lo in range(0, num_rows, bucket):
        rows = by_degree[lo : lo + bucket]
        out = hess[lo : lo + rows.numel()]
        width = max(sorted_degree[lo : lo + bucket], default=0)
        if width == 0:
            out.copy_(constant.expand_as(out))
            continue
        offsets = torch.arange(width, device=o.device)
        idx = start[rows].unsqueeze(1) + offsets
        valid = offsets < degree[rows].unsqueeze(1)
        block = padded[torch.where(valid, others[idx.clamp_max(last)], zero_row)]
        torch.baddbmm(constant.expand_as(out), block.transpose(1, 2), block, out=out)
    return hess, by_degree


def row_newton_systems(
    rows_vec: Tensor,
    other_vec: Tensor,
    h: Tensor,
    row_idx: Tensor,
    other_idx: Tensor,
    negative_weight: float,
    reg: float,
    bucket: int = 64,
    gram: Tensor | None = None,
) -> NewtonSystems:
    """Closed-form Hessians and gradients of the per-row losses ``L_r`` (module docstring).

    ``O(nnz d^2)`` work in dense batched matmuls, no per-row Python loop (see
    :func:`_hessians`); the gradient is ``H x - 2 sum_{o in pos(r)} o``.

    Args:
        rows_vec: Current embeddings of the ``R`` rows being solved, ``[R, d]``.
        other_vec: The fixed side's embeddings, ``[K, d]`` (all of them: ``G`` needs every one).
        h: Prediction layer ``[d]``.
        row_idx: For each observed pair touching these rows, the row's position in ``rows_vec``,
            ``[E]``.
        other_idx: The pair's other-side id, ``[E]``.
        negative_weight: ``c0``.
        reg: L2 coefficient.
        bucket: Rows per batched matmul.
        gram: ``G = (other_vec * h)^T (other_vec * h)`` if the caller has it already.

    Returns:
        :class:`NewtonSystems` ``(H [R, d, d], grad [R, d], rows [R])`` of ``L_r`` at
        ``rows_vec``, in degree order (system ``i`` is row ``rows[i]``).
    """
    _check_weight(negative_weight)
    num_rows, d = rows_vec.shape
    o = other_vec * h
    if gram is None:
        gram = o.T @ o
    eye = torch.eye(d, dtype=o.dtype, device=o.device)
    constant = 2.0 * (negative_weight * gram + reg * eye)
    hess, rows = _hessians(
        o, row_idx, other_idx, num_rows, 2.0 * (1.0 - negative_weight), constant, bucket
    )
    pos_sum = torch.zeros_like(rows_vec).index_add_(0, row_idx, o[other_idx])[rows]
    grad = torch.baddbmm(-2.0 * pos_sum.unsqueeze(-1), hess, rows_vec[rows].unsqueeze(-1))
    return NewtonSystems(hess, grad.squeeze(-1), rows)


class RowBlock:
    """The loss of a block of rows (users with items fixed, or the reverse) as a function of them.

    AltEraser's sub-problem (Algorithm 1, lines 13-18): minimise ``L_{D_r}`` over the rows
    ``rows`` of one side while the other side and ``h`` stay fixed. Terms not involving these
    rows are constant and left out, so ``loss(x)`` is ``sum_r L_r(x_r)``.

    Args:
        other_vec: The fixed side, ``[K, d]``.
        h: Prediction layer ``[d]``.
        rows: Ids of the rows being solved, ``[R]`` (sorted, unique).
        pairs: Observed ``(row id, other id)`` pairs of the remaining data for this side,
            ``[E, 2]``; pairs of rows outside ``rows`` are ignored.
        negative_weight: ``c0``.
        reg: L2 coefficient.
    """

    def __init__(
        self,
        other_vec: Tensor,
        h: Tensor,
        rows: Tensor,
        pairs: Tensor,
        negative_weight: float,
        reg: float,
    ) -> None:
        _check_weight(negative_weight)
        self.other_vec = other_vec.detach()
        self.h = h.detach()
        self.rows = rows
        self.negative_weight = negative_weight
        self.reg = reg
        ids = torch.cat([rows, pairs[:, 0]])
        size = int(ids.max()) + 1 if ids.numel() else 0
        position = torch.full((size,), -1, dtype=torch.long, device=rows.device)
        position[rows] = torch.arange(rows.numel(), device=rows.device)
        local = position[pairs[:, 0]]
        keep = local >= 0
        self.row_idx = local[keep]
        self.other_idx = pairs[keep, 1]
        o = self.other_vec * self.h
        self._gram = o.T @ o

    @property
    def num_rows(self) -> int:
        return int(self.rows.numel())

    def loss(self, x: Tensor) -> Tensor:
        """``sum_r L_r(x_r)`` for ``x`` of shape ``[R, d]`` (differentiable twice)."""
        o = self.other_vec[self.other_idx] * self.h
        y = (x[self.row_idx] * o).sum(dim=-1)
        pos = ((1.0 - self.negative_weight) * y.square() - 2.0 * y).sum()
        miss = self.negative_weight * ((x @ self._gram) * x).sum()
        return pos + miss + self.reg * x.square().sum()

    def newton_systems(self, x: Tensor, start: int = 0, stop: int | None = None) -> NewtonSystems:
        """Per-row Newton systems of rows ``start:stop`` at ``x [R, d]`` (closed form).

        Returns :class:`NewtonSystems` with ``H [stop - start, d, d]``, ``grad [stop - start, d]``
        and ``rows`` counted from ``start``; chunking the rows bounds memory at
        ``(stop - start) d^2`` floats.
        """
        stop = self.num_rows if stop is None else stop
        if start == 0 and stop == self.num_rows:
            row_idx, other_idx = self.row_idx, self.other_idx
        else:
            keep = (self.row_idx >= start) & (self.row_idx < stop)
            row_idx, other_idx = self.row_idx[keep] - start, self.other_idx[keep]
        return row_newton_systems(
            x[start:stop],
            self.other_vec,
            self.h,
            row_idx,
            other_idx,
            self.negative_weight,
            self.reg,
            gram=self._gram,
        )
