"""U2U-R and D2D-R: the distinguishability-loss baselines of Li et al. (ACM MM 2023).

Y. Li, C. Chen, X. Zheng, Y. Zhang, Z. Han, D. Meng, J. Wang, "Making Users Indistinguishable:
Attribute-wise Unlearning in Recommender Systems", ACM MM 2023 (arXiv:2310.05847), cited as [2] by
AttrCloak. Post-training attribute unlearning is a two-component loss on the user embeddings,
a *distinguishability* loss plus a *regularisation* loss, combined with fixed weights::

    loss = lambda_dist * L_dist + lambda_reg * L_reg

The paper's PDF was not reachable from here, so the definitions below follow the authors' public
code (github.com/oktton/Attribute-wise-Unlearning, ``methods/u2u.py`` and
``methods/d2d_retrain.py``), the authors' follow-up (Chen et al., "Post-Training Attribute
Unlearning in Recommender Systems", arXiv:2403.06737, which reviews D2D as an MMD with radial
kernels) and AttrCloak's description (Sec. VI: "user-to-user (U2U) loss and
distribution-to-distribution (D2D) distance loss ... with regularization loss ... fixed weights").
This module is written from that math, not from the code:

* **U2U** (:func:`u2u_loss`): pull every pair of users with *different* attribute values together.
  The authors' code builds the graph Laplacian ``L = D - A`` with ``A_ij = 1`` for users ``i, j``
  in different classes and minimises ``tr(E^T L E) = sum_{cross pairs} ||e_i - e_j||^2`` (binary
  attributes only: classes 0 and 1). Here the same graph is extended to any number of classes (an
  edge between every two users of different classes) and reduced by default to the *mean* over
  those pairs, so that a fixed weight does not depend on the user count (``reduction="sum"``
  gives the authors' scale). It is evaluated exactly in ``O(N d)`` from per-class sums, or, with
  ``num_pairs``, estimated from uniformly sampled cross-class pairs.
* **D2D** (:func:`d2d_loss`): make the class-conditional embedding distributions close. The authors
  use the (biased, V-statistic) squared MMD with a sum of 5 Gaussian kernels whose bandwidths are
  ``h * 2^{-2..2}``, ``h`` the mean pairwise squared distance (not back-propagated), and, for
  multi-class attributes, sum the MMD of each class to class 0. Here ``kernel="mmd"`` is that
  MMD, averaged over *all* pairs of non-empty classes (so the loss does not depend on which class
  is numbered 0); ``kernel="mean"`` is the cheaper squared distance between class means, i.e. the
  MMD with a linear kernel.
* **-R** (:func:`u2u_r_loss`, :func:`d2d_r_loss`): as AttrCloak runs these baselines, the
  regulariser is the parameter-space L2 to the original embeddings (Eq. 21 of AttrCloak,
  :func:`~lit_unlearn.methods.attribute.retention.embedding_regularization`). Note that the
  authors' public code instead uses a function-space ranking-margin regulariser on each user's
  original top-20 items (introduced in their follow-up paper); that variant needs the model and
  is not here.

Users with code ``-1`` (unknown attribute) are left out. At least two non-empty classes are
required.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

from lit_unlearn.methods.attribute.retention import embedding_regularization

__all__ = ["d2d_loss", "d2d_r_loss", "u2u_loss", "u2u_r_loss"]


def _labelled(
    embeddings: Tensor, codes: Tensor, num_classes: int, what: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate, drop unknown (-1) users; return ``(x, c, counts)`` with ``x`` at >= float32."""
    if embeddings.ndim != 2:
        raise ValueError(f"{what}: embeddings must be [N, d], got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"{what}: embeddings must be floating point, got {embeddings.dtype}")
    if codes.ndim != 1 or codes.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"{what}: codes must be [N] with N={embeddings.shape[0]}, got {tuple(codes.shape)}"
        )
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"{what}: codes must be integer class codes, got {codes.dtype}")
    if num_classes < 1:
        raise ValueError(f"{what}: num_classes must be >= 1, got {num_classes}")
    codes = codes.to(device=embeddings.device, dtype=torch.long)
    if codes.numel() and (int(codes.min()) < -1 or int(codes.max()) >= num_classes):
        raise ValueError(
            f"{what}: codes must lie in [-1, {num_classes}) (-1 = unknown), got range "
            f"[{int(codes.min())}, {int(codes.max())}]"
        )
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(f"{what}: embeddings hold NaN or inf")
    labelled = codes >= 0
    # Half precision loses the small differences these losses are made of.
    work = torch.promote_types(embeddings.dtype, torch.float32)
    x = embeddings[labelled].to(work)
    c = codes[labelled]
    counts = torch.bincount(c, minlength=num_classes)
    if int((counts > 0).sum()) < 2:
        raise ValueError(
            f"{what} needs labelled users in at least 2 classes, got class sizes {counts.tolist()}"
        )
    return x, c, counts


def u2u_loss(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    num_pairs: int | None = None,
    generator: torch.Generator | None = None,
    reduction: Literal["mean", "sum"] = "mean",
) -> Tensor:
    """User-to-user distinguishability loss: squared distances between users of different classes.

    ``sum_{i<j, c_i != c_j} ||e_i - e_j||^2`` over every pair of labelled users from different
    classes (for a binary attribute, the authors' ``tr(E^T L E)`` with the cross-class graph
    Laplacian ``L``), divided by the number of such pairs for ``reduction="mean"``.

    Args:
        embeddings: ``[N, d]`` user embeddings (differentiable).
        codes: ``[N]`` class codes, ``-1`` = unknown (excluded).
        num_classes: Number of classes of the attribute.
        num_pairs: ``None`` (default): exact, over all cross-class pairs, in ``O(N d)`` via
            ``sum_{a<b} sum_{i in a, j in b} ||e_i - e_j||^2
            = sum_a Q_a (M - n_a) - (||sum_a s_a||^2 - sum_a ||s_a||^2)`` with per-class counts
            ``n_a``, sums ``s_a`` and sums of squared norms ``Q_a``; this is cheaper than sampling
            and has no variance. An integer draws that many pairs uniformly (with replacement)
            from the cross-class pairs: an unbiased estimate of the same quantity.
        generator: Random generator for the sampled estimate (sampling runs on its device).
        reduction: ``"mean"`` over cross-class pairs, or ``"sum"`` (the authors' scale).

    Returns:
        Scalar loss in the embeddings' dtype.

    Raises:
        ValueError: Malformed inputs, non-finite embeddings, fewer than 2 non-empty classes,
            ``num_pairs < 1`` or an unknown reduction.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if num_pairs is not None and num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1 or None, got {num_pairs}")
    x, c, counts = _labelled(embeddings, codes, num_classes, "u2u_loss")
    m = x.shape[0]
    n = counts.to(x.dtype)
    pairs = 0.5 * (float(m) ** 2 - float((n * n).sum()))
    if num_pairs is None:
        # Distances are translation invariant; centring first avoids the cancellation of the
        # expanded form when the embeddings sit far from the origin.
        xc = x - x.mean(0).detach()
        sq = xc.pow(2).sum(1)
        q = sq.new_zeros(num_classes).index_add(0, c, sq)
        s = xc.new_zeros(num_classes, x.shape[1]).index_add(0, c, xc)
        total = (q * (m - n)).sum() - (s.sum(0).pow(2).sum() - s.pow(2).sum())
        out = total / pairs if reduction == "mean" else total
    else:
        i, j = _sample_cross_pairs(c, counts, num_pairs, generator)
        mean = (x[i] - x[j]).pow(2).sum(1).mean()
        out = mean if reduction == "mean" else mean * pairs
    return out.to(embeddings.dtype)


def _sample_cross_pairs(
    c: Tensor, counts: Tensor, num_pairs: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Uniform draws (with replacement) from the ordered pairs ``(i, j)`` with ``c_i != c_j``.

    ``i`` is drawn with probability proportional to its number of cross-class partners
    ``M - n_{c_i}``, then ``j`` uniformly among those partners, so every ordered cross pair has
    probability ``1 / (2 * #unordered cross pairs)``: uniform over unordered pairs too.
    """
    device = generator.device if generator is not None else c.device
    out_device = c.device
    c = c.to(device)
    counts = counts.to(device)
    m = c.shape[0]
    partners = m - counts[c]
    i = torch.multinomial(
        partners.to(torch.float64), num_pairs, replacement=True, generator=generator
    )
    ci = c[i]
    # Users sorted by class: class a occupies [start_a, start_a + n_a). A uniform rank among the
    # M - n_a users outside class a is mapped past that block.
    order = torch.argsort(c, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    u = torch.rand(num_pairs, generator=generator, device=device, dtype=torch.float64)
    rank = (u * partners[i]).long().clamp_max(partners[i] - 1)
    rank = rank + (rank >= starts[ci]).long() * counts[ci]
    j = order[rank]
    return i.to(out_device), j.to(out_device)


def _pairwise_sq_dists(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    # The expanded form needs no [n, m, d] temporary; clamping removes rounding negatives.
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_min(0.0)


def d2d_loss(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    kernel: Literal["mean", "mmd"] = "mean",
    bandwidth: float | None = None,
    *,
    num_kernels: int = 5,
    kernel_mul: float = 2.0,
    chunk_size: int = 2048,
) -> Tensor:
    """Distribution-to-distribution distinguishability loss, averaged over pairs of classes.

    For every unordered pair ``(a, b)`` of non-empty classes:

    * ``kernel="mean"``: ``||mu_a - mu_b||^2``, the squared distance between class means (the
      MMD with a linear kernel);
    * ``kernel="mmd"``: the biased squared MMD
      ``mean k(X_a, X_a) + mean k(X_b, X_b) - 2 mean k(X_a, X_b)`` with the multi-bandwidth
      Gaussian kernel ``k(x, y) = sum_m exp(-||x - y||^2 / (h * kernel_mul^(m - num_kernels//2)))``,
      ``m = 0 .. num_kernels - 1`` (the authors' choice is 5 kernels, factor 2).

    The result is the mean over the ``K'(K'-1)/2`` pairs of non-empty classes.

    Args:
        embeddings: ``[N, d]`` user embeddings (differentiable).
        codes: ``[N]`` class codes, ``-1`` = unknown (excluded).
        num_classes: Number of classes of the attribute.
        kernel: ``"mean"`` or ``"mmd"``.
        bandwidth: Base squared length scale ``h`` of the MMD kernel. ``None``: the mean squared
            distance over distinct pairs of labelled users, treated as a constant (no gradient),
            as the authors do. Ignored for ``kernel="mean"``.
        num_kernels: Gaussian kernels summed in the MMD kernel.
        kernel_mul: Ratio between consecutive bandwidths.
        chunk_size: Rows of the ``[N, N]`` kernel matrix formed at once (bounds memory; the
            MMD still costs ``O(N^2 d)`` time and keeps ``O(N^2)`` values for the backward).

    Returns:
        Scalar loss in the embeddings' dtype.

    Raises:
        ValueError: Malformed inputs, non-finite embeddings, fewer than 2 non-empty classes or
            invalid kernel settings.
    """
    if kernel not in ("mean", "mmd"):
        raise ValueError(f"kernel must be 'mean' or 'mmd', got {kernel!r}")
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0 or None, got {bandwidth}")
    if num_kernels < 1 or kernel_mul <= 0 or chunk_size < 1:
        raise ValueError(
            f"need num_kernels >= 1, kernel_mul > 0, chunk_size >= 1; got {num_kernels}, "
            f"{kernel_mul}, {chunk_size}"
        )
    x, c, counts = _labelled(embeddings, codes, num_classes, "d2d_loss")
    present = torch.nonzero(counts > 0).flatten()
    k = present.numel()
    n = counts.to(x.dtype)
    xc = x - x.mean(0).detach()
    if kernel == "mean":
        sums = xc.new_zeros(num_classes, x.shape[1]).index_add(0, c, xc)
        means = sums[present] / n[present, None]
        # K' x K' x d is tiny: take exact differences rather than the expanded form.
        dist = (means[:, None, :] - means[None, :, :]).pow(2).sum(-1)
    else:
        block = _kernel_block_sums(
            xc, c, num_classes, bandwidth, num_kernels, kernel_mul, chunk_size
        )
        block = block[present][:, present]
        nn = n[present]
        within = block.diagonal() / nn.pow(2)
        dist = within[:, None] + within[None, :] - 2.0 * block / (nn[:, None] * nn[None, :])
    # Mean over the strictly upper triangle: each unordered pair of classes once.
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=dist.device), diagonal=1)
    return dist[upper].mean().to(embeddings.dtype)


def _kernel_block_sums(
    x: Tensor,
    c: Tensor,
    num_classes: int,
    bandwidth: float | None,
    num_kernels: int,
    kernel_mul: float,
    chunk_size: int,
) -> Tensor:
    """``[K, K]`` sums of the multi-bandwidth Gaussian kernel over pairs of users in two classes."""
    m = x.shape[0]
    sq = x.pow(2).sum(1)
    if bandwidth is None:
        with torch.no_grad():
            # Mean squared distance over the M(M-1) ordered distinct pairs, in O(M d).
            total = 2.0 * m * sq.sum() - 2.0 * x.sum(0).pow(2).sum()
            h = float(total) / max(m * (m - 1), 1)
        if not h > 0:  # every labelled embedding identical: any bandwidth gives MMD 0
            h = 1.0
    else:
        h = float(bandwidth)
    scales = [h * kernel_mul ** (i - num_kernels // 2) for i in range(num_kernels)]
    onehot = torch.nn.functional.one_hot(c, num_classes).to(x.dtype)
    block = x.new_zeros(num_classes, num_classes)
    for start in range(0, m, chunk_size):
        rows = slice(start, min(start + chunk_size, m))
        dist = _pairwise_sq_dists(x[rows], x, sq[rows], sq)
        kern = torch.exp(-dist / scales[0])
        for s in scales[1:]:
            kern = kern + torch.exp(-dist / s)
        block = block + onehot[rows].T @ (kern @ onehot)
    return block


def _as_attributes(
    codes: Tensor | Mapping[str, Tensor], num_classes: int | Mapping[str, int]
) -> dict[str, tuple[Tensor, int]]:
    if isinstance(codes, Tensor):
        if not isinstance(num_classes, int):
            raise ValueError("a single codes tensor needs an int num_classes")
        return {"attribute": (codes, num_classes)}
    if isinstance(num_classes, int):
        raise ValueError("a mapping of codes needs a mapping of num_classes")
    if not codes:
        raise ValueError("at least one attribute is needed")
    if set(codes) != set(num_classes):
        raise ValueError(
            f"codes and num_classes name different attributes: {sorted(codes)} vs "
            f"{sorted(num_classes)}"
        )
    return {name: (codes[name], num_classes[name]) for name in codes}


def _combine(
    dist_terms: dict[str, Tensor],
    current: Tensor,
    reference: Tensor,
    lambda_dist: float,
    lambda_reg: float,
    reg_reduction: Literal["sum", "mean"],
) -> tuple[Tensor, dict[str, Tensor]]:
    dist = torch.stack(list(dist_terms.values())).mean()
    reg = embedding_regularization(current, reference, reduction=reg_reduction)
    total = lambda_dist * dist + lambda_reg * reg
    parts = {"distinguishability": dist, "regularization": reg}
    if len(dist_terms) > 1:
        parts.update({f"distinguishability/{name}": v for name, v in dist_terms.items()})
    return total, parts


def u2u_r_loss(
    current: Tensor,
    reference: Tensor,
    codes: Tensor | Mapping[str, Tensor],
    num_classes: int | Mapping[str, int],
    *,
    lambda_dist: float = 1.0,
    lambda_reg: float = 1.0,
    reg_reduction: Literal["sum", "mean"] = "sum",
    num_pairs: int | None = None,
    generator: torch.Generator | None = None,
    reduction: Literal["mean", "sum"] = "mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """U2U-R: ``lambda_dist * U2U + lambda_reg * ||E - E_orig||^2`` with fixed weights.

    Args:
        current: ``[N, d]`` embeddings being unlearned.
        reference: ``[N, d]`` original embeddings (detached inside).
        codes: ``[N]`` class codes of one attribute, or attribute name -> codes; with several
            attributes the distinguishability term is their mean (as AttrCloak's Eq. 19).
        num_classes: Class count, or attribute name -> class count (same keys as ``codes``).
        lambda_dist: Fixed weight of the distinguishability loss.
        lambda_reg: Fixed weight of the regularisation loss.
        reg_reduction: Reduction of :func:`embedding_regularization`.
        num_pairs: See :func:`u2u_loss`.
        generator: See :func:`u2u_loss`.
        reduction: See :func:`u2u_loss`.

    Returns:
        ``(total, parts)`` with ``parts["distinguishability"]``, ``parts["regularization"]`` and,
        for several attributes, ``parts["distinguishability/<name>"]`` (unweighted, for logging).
    """
    terms = {
        name: u2u_loss(current, attr_codes, k, num_pairs, generator, reduction)
        for name, (attr_codes, k) in _as_attributes(codes, num_classes).items()
    }
    return _combine(terms, current, reference, lambda_dist, lambda_reg, reg_reduction)


def d2d_r_loss(
    current: Tensor,
    reference: Tensor,
    codes: Tensor | Mapping[str, Tensor],
    num_classes: int | Mapping[str, int],
    *,
    lambda_dist: float = 1.0,
    lambda_reg: float = 1.0,
    reg_reduction: Literal["sum", "mean"] = "sum",
    kernel: Literal["mean", "mmd"] = "mean",
    bandwidth: float | None = None,
    num_kernels: int = 5,
    kernel_mul: float = 2.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """D2D-R: ``lambda_dist * D2D + lambda_reg * ||E - E_orig||^2`` with fixed weights.

    Args:
        current: ``[N, d]`` embeddings being unlearned.
        reference: ``[N, d]`` original embeddings (detached inside).
        codes: ``[N]`` class codes of one attribute, or attribute name -> codes; with several
            attributes the distinguishability term is their mean.
        num_classes: Class count, or attribute name -> class count.
        lambda_dist: Fixed weight of the distinguishability loss.
        lambda_reg: Fixed weight of the regularisation loss.
        reg_reduction: Reduction of :func:`embedding_regularization`.
        kernel: See :func:`d2d_loss`.
        bandwidth: See :func:`d2d_loss`.
        num_kernels: See :func:`d2d_loss`.
        kernel_mul: See :func:`d2d_loss`.

    Returns:
        ``(total, parts)`` as :func:`u2u_r_loss`.
    """
    terms = {
        name: d2d_loss(
            current,
            attr_codes,
            k,
            kernel,
            bandwidth,
            num_kernels=num_kernels,
            kernel_mul=kernel_mul,
        )
        for name, (attr_codes, k) in _as_attributes(codes, num_classes).items()
    }
    return _combine(terms, current, reference, lambda_dist, lambda_reg, reg_reduction)
