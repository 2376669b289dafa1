"""Gaussian variational upper bound on the mutual information between embeddings and an attribute.

This is AttrCloak's attribute-unlearning loss (Wu et al., "Defending against Attribute Inference
Attacks in Post-Training of Recommendation Systems via Unlearning", Sec. III-B and V-A). For one
attribute ``a_j`` with classes ``C_1 .. C_K`` and the user embeddings ``S_k`` of each class:

* Eq. 12 / 27-34: ``I(em; a_j) <= sum_k (|S_k| / |S|) KL(q(em | a_j = C_k) || p(em))``;
* Eq. 13, 14: each class is fitted with a Gaussian ``N(mu_k, Sigma_k)`` (maximum likelihood,
  so the covariance is normalised by ``1 / |S_k|``, not ``1 / (|S_k| - 1)``);
* Eq. 15, 16: the global distribution ``N(mu_g, Sigma_g)`` is fitted to all labelled embeddings
  (``mu_g`` is the size-weighted mean of the class means, ``Sigma_g`` again uses ``1 / |S|``);
* Eq. 17, 18: ``L_j = sum_k w_k KL(N(mu_k, Sigma_k) || N(mu_g, Sigma_g))``, ``w_k = |S_k|/|S|``;
* Eq. 19: ``L = mean_j L_j`` over the attributes to forget.

**A simplification that is exact, not an approximation.** Because the global Gaussian is
moment-matched to the labelled embeddings, the law of total covariance gives
``Sigma_g = sum_k w_k Sigma_k + sum_k w_k (mu_k - mu_g)(mu_k - mu_g)^T``. Substituting it into
Eq. 17 makes the trace and Mahalanobis terms sum to exactly ``d``, so that Eq. 18 collapses to::

    L_j = 0.5 * (log det Sigma_g - sum_k w_k log det Sigma_k)

which is how :func:`gaussian_mi_from_statistics` evaluates it by default (``method="logdet"``):
``K + 1`` batched Cholesky factorisations and no solves. ``method="kl"`` evaluates Eq. 17
literally (used by the tests to check the identity). The identity survives the ridge below
because the same ridge is added to every covariance. It also shows the loss is ``>= 0``
(``log det`` is concave) and zero exactly when every class shares the global mean and
covariance.

**Numerical safety.** Covariances of small classes are singular (``|S_k| <= d``, duplicated rows,
a constant dimension), so every covariance gets the same ridge::

    Sigma <- Sigma + lam * I,   lam = shrinkage * tr(Sigma_g) / d

One ridge for all ``K + 1`` matrices (rather than one per matrix, scaled by each matrix's own
trace) because (i) a class whose covariance is exactly zero (two identical users) still gets a
positive ridge; (ii) the loss stays exactly zero when all classes coincide and the log-det
identity above stays exact; (iii) ``lam`` scales with ``tr(Sigma_g)``, so the loss is invariant to
rescaling all embeddings. It is the same as adding isotropic noise ``N(0, lam I)`` to every
embedding before fitting. ``lam`` is part of the differentiable graph (the loss is one smooth
function of the embeddings). If a Cholesky factorisation still fails (``shrinkage=0`` on singular
data), ``lam`` is raised tenfold up to eight times before a :class:`FloatingPointError` naming
the attribute and class is raised. Statistics are accumulated and factorised in float64 by
default and the loss is cast back to the embeddings' dtype.

**Distributed training.** Everything the loss needs is in three *sufficient statistics* per class
(count, sum, sum of outer products; :func:`sufficient_statistics`). They are additive over users,
so under DDP each rank computes them on its shard, all-reduces (sums) them, and calls
:func:`gaussian_mi_from_statistics`, which gives exactly the single-process loss. (For gradients
to reach the other ranks' rows, use a differentiable all-reduce such as
``torch.distributed.nn.functional.all_reduce``.) The covariance is formed as
``outer / n - mu mu^T``; in float64 the cancellation this implies is negligible unless the
embeddings' mean is ~1e6 standard deviations away from the origin, and the ridge absorbs the tiny
negative eigenvalues it can produce.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = [
    "ClassStatistics",
    "calibrated_covariance_bound",
    "class_statistics",
    "gaussian_covariance_bound",
    "gaussian_kl",
    "gaussian_mi_bound",
    "gaussian_mi_from_statistics",
    "moments_from_statistics",
    "multi_attribute_mi_bound",
    "sufficient_statistics",
]

# Ridge escalation when a Cholesky factorisation fails: x10 per retry, at most this many retries.
_MAX_RETRIES = 8


class ClassStatistics(NamedTuple):
    """Per-class Gaussian fit (Eq. 13, 14).

    Attributes:
        counts: ``[K]`` users per class (floating dtype, exact below 2**53).
        means: ``[K, d]`` class means; zero rows for empty classes.
        covariances: ``[K, d, d]`` class covariances with ``1 / |S_k|`` normalisation; zero for
            empty classes.
    """

    counts: Tensor
    means: Tensor
    covariances: Tensor


def _label(name: str | None) -> str:
    return f"attribute {name!r}" if name is not None else "the attribute"


def _work_dtype(embeddings: Tensor, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        return dtype
    # Cholesky has no half-precision kernels; float32 is the least that works everywhere.
    return torch.promote_types(embeddings.dtype, torch.float32)


def _check_inputs(embeddings: Tensor, codes: Tensor, num_classes: int, name: str | None) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, d], got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}")
    if codes.ndim != 1 or codes.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"codes for {_label(name)} must be [N] with N={embeddings.shape[0]}, "
            f"got shape {tuple(codes.shape)}"
        )
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"codes for {_label(name)} must be integer class codes, got {codes.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes for {_label(name)} must be >= 1, got {num_classes}")
    if codes.numel() and (int(codes.min()) < -1 or int(codes.max()) >= num_classes):
        raise ValueError(
            f"codes for {_label(name)} must lie in [-1, {num_classes}) (-1 = unknown), "
            f"got range [{int(codes.min())}, {int(codes.max())}]"
        )
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(f"embeddings hold NaN or inf (while computing the loss of {_label(name)})")


def sufficient_statistics(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    *,
    dtype: torch.dtype | None = torch.float64,
    name: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class count, sum and sum of outer products, in one pass over the labelled users.

    These are additive over users, which is what makes the loss exact under data parallelism:
    sum them over ranks (all-reduce) and pass them to :func:`gaussian_mi_from_statistics`.

    Args:
        embeddings: ``[N, d]`` user embeddings (differentiable).
        codes: ``[N]`` integer class codes in ``[0, num_classes)``; ``-1`` marks an unknown
            attribute and the user is left out.
        num_classes: Number of classes ``K`` of the attribute.
        dtype: Accumulation dtype (float64 by default); ``None`` keeps the embeddings' dtype
            (promoted to at least float32).
        name: Attribute name, only used in error messages.

    Returns:
        ``(counts [K], sums [K, d], outer_sums [K, d, d])``, all in the accumulation dtype
        (counts too, so the three can be all-reduced alike; exact below 2**53 users).

    Raises:
        ValueError: On malformed shapes, codes outside ``[-1, K)`` or non-finite embeddings.
    """
    _check_inputs(embeddings, codes, num_classes, name)
    work = _work_dtype(embeddings, dtype)
    codes = codes.to(device=embeddings.device, dtype=torch.long)
    labelled = codes >= 0
    x = embeddings[labelled].to(work)
    c = codes[labelled]
    d = embeddings.shape[1]
    counts_int = torch.bincount(c, minlength=num_classes)
    counts = counts_int.to(work)
    sums = x.new_zeros(num_classes, d).index_add(0, c, x)
    # Outer-product sums per class from class-contiguous row blocks: N * d^2 work in total, not
    # K * N * d^2 (a one-hot batched matmul) nor N * d^2 memory (materialising every x x^T).
    order = torch.argsort(c, stable=True)
    blocks = torch.split(x[order], counts_int.tolist())
    outer_sums = torch.stack([block.T @ block for block in blocks])
    return counts, sums, outer_sums


def moments_from_statistics(
    counts: Tensor, sums: Tensor, outer_sums: Tensor
) -> tuple[Tensor, Tensor]:
    """Means (Eq. 13) and ``1/n``-normalised covariances (Eq. 14) from sufficient statistics.

    Args:
        counts: ``[K]`` users per class.
        sums: ``[K, d]`` per-class sums.
        outer_sums: ``[K, d, d]`` per-class sums of ``x x^T``.

    Returns:
        ``(means [K, d], covariances [K, d, d])``; empty classes get zeros. The covariances are
        symmetric up to rounding in ``outer_sums`` (the Cholesky factorisations downstream read
        only the lower triangle, so no extra symmetrisation pass is spent on them).
    """
    n = counts.clamp_min(1.0)
    means = sums / n[:, None]
    cov = torch.baddbmm(
        outer_sums / n[:, None, None], means[:, :, None], means[:, None, :], alpha=-1
    )
    return means, cov


def class_statistics(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    *,
    dtype: torch.dtype | None = torch.float64,
) -> ClassStatistics:
    """Per-class counts, means (Eq. 13) and covariances (Eq. 14) of the labelled embeddings.

    Args:
        embeddings: ``[N, d]`` user embeddings.
        codes: ``[N]`` class codes, ``-1`` = unknown (left out).
        num_classes: Number of classes ``K``.
        dtype: Accumulation dtype, see :func:`sufficient_statistics`.

    Returns:
        A :class:`ClassStatistics` computed from one :func:`sufficient_statistics` pass.
    """
    counts, sums, outer_sums = sufficient_statistics(embeddings, codes, num_classes, dtype=dtype)
    means, covariances = moments_from_statistics(counts, sums, outer_sums)
    return ClassStatistics(counts, means, covariances)


class _CholeskyLogdet(torch.autograd.Function):
    """``log det S`` from a precomputed Cholesky factor, with the ``S^{-1}`` gradient.

    Autograd through ``torch.linalg.cholesky`` costs ~2.5x more than this on CPU for a batch of
    128x128 matrices; ``d log det S / dS = S^{-1}`` is one ``cholesky_inverse`` of a factor we
    already have. First-order only (the unlearning losses never need Hessians).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, matrices: Tensor, factor: Tensor) -> Tensor:
        ctx.save_for_backward(factor)
        return 2.0 * factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (factor,) = ctx.saved_tensors
        return torch.cholesky_inverse(factor) * grad[:, None, None], None


def _scored_classes(counts: Tensor, min_class_size: int, name: str | None) -> Tensor:
    """Indices of the classes with at least ``min_class_size`` users (at least two of them).

    Raises:
        ValueError: Fewer than two such classes.
    """
    kept = torch.nonzero(counts >= max(min_class_size, 1)).flatten()
    if kept.numel() < 2:
        sizes = [int(v) for v in counts.tolist()]
        raise ValueError(
            f"{_label(name)} needs at least 2 classes with >= {max(min_class_size, 1)} labelled "
            f"users for the mutual-information loss, got class sizes {sizes}"
        )
    return kept


def _regularised_factor(
    covs: Tensor, ridge: Tensor, scale: Tensor, labels: list[str], name: str | None
) -> tuple[Tensor, Tensor]:
    """Add ``ridge * I`` and factorise; on failure raise the ridge (x10) and retry."""
    d = covs.shape[-1]
    eye = torch.eye(d, dtype=covs.dtype, device=covs.device)
    # Fallback ridge if the first attempt fails: machine epsilon relative to the embeddings'
    # scale, or 1 when every embedding is identical (then any positive ridge gives loss 0).
    s = float(scale.detach())
    floor = torch.finfo(covs.dtype).eps * (s if s > 0.0 else 1.0)
    lam = ridge
    for attempt in range(_MAX_RETRIES + 1):
        regularised = covs + lam * eye
        factor, info = torch.linalg.cholesky_ex(regularised.detach())
        failed = torch.nonzero(info).flatten()
        if failed.numel() == 0:
            return regularised, factor
        if attempt == _MAX_RETRIES:
            break
        lam = torch.clamp(lam, min=floor) * 10.0
    bad = ", ".join(labels[i] for i in failed.tolist())
    raise FloatingPointError(
        f"Cholesky factorisation of the covariance of {bad} for {_label(name)} failed even with "
        f"ridge {float(lam):.3g} (after {_MAX_RETRIES} increases); the embeddings are degenerate"
    )


def gaussian_kl(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    """Closed-form ``KL(N(mean_p, cov_p) || N(mean_q, cov_q))`` (Eq. 17), batched over ``p``.

    Args:
        mean_p: ``[..., d]`` means of the first Gaussians.
        cov_p: ``[..., d, d]`` their covariances (positive definite).
        mean_q: ``[d]`` mean of the reference Gaussian.
        cov_q: ``[d, d]`` its covariance (positive definite).

    Returns:
        ``[...]`` KL divergences.
    """
    d = mean_p.shape[-1]
    chol_q = torch.linalg.cholesky(cov_q)
    chol_p = torch.linalg.cholesky(cov_p)
    logdet_q = 2.0 * chol_q.diagonal().log().sum()
    logdet_p = 2.0 * chol_p.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    # tr(Sq^{-1} Sp) = ||Lq^{-1} Lp||_F^2 and the Mahalanobis term = ||Lq^{-1} delta||^2.
    delta = (mean_q - mean_p).unsqueeze(-1)
    rhs = torch.cat([chol_p, delta], dim=-1)
    solved = torch.linalg.solve_triangular(chol_q, rhs, upper=False)
    trace = solved[..., :-1].pow(2).sum((-2, -1))
    maha = solved[..., -1].pow(2).sum(-1)
    return 0.5 * (logdet_q - logdet_p - d + trace + maha)


def gaussian_mi_from_statistics(
    counts: Tensor,
    sums: Tensor,
    outer_sums: Tensor,
    *,
    shrinkage: float = 1e-3,
    min_class_size: int = 2,
    method: Literal["logdet", "kl"] = "logdet",
    name: str | None = None,
) -> Tensor:
    """Eq. 18 (the Gaussian MI upper bound of one attribute) from per-class sufficient statistics.

    Classes with fewer than ``min_class_size`` users are dropped entirely, as if their users
    were unlabelled: their weight leaves Eq. 18 (the others are renormalised to sum to one) and
    their users leave the global Gaussian (Eq. 15, 16), which keeps the global fit the mixture of
    the classes that are scored. The rule depends only on the counts, so it is deterministic and
    identical on every DDP rank once the statistics are all-reduced.

    Args:
        counts: ``[K]`` users per class.
        sums: ``[K, d]`` per-class sums of embeddings.
        outer_sums: ``[K, d, d]`` per-class sums of ``x x^T``.
        shrinkage: Ridge ``lam = shrinkage * tr(Sigma_g) / d`` added to every covariance (see
            the module docstring). ``0`` gives the unregularised bound when all covariances are
            non-singular.
        min_class_size: Classes with fewer users are skipped.
        method: ``"logdet"`` (default) uses the exact identity
            ``L = 0.5 (log det Sigma_g - sum_k w_k log det Sigma_k)``; ``"kl"`` evaluates Eq. 17
            term by term (slower; for checking).
        name: Attribute name, only used in error messages.

    Returns:
        Scalar loss in the statistics' dtype, differentiable w.r.t. ``sums`` and ``outer_sums``.

    Raises:
        ValueError: Malformed or non-finite statistics, or fewer than two classes with at least
            ``min_class_size`` users.
        FloatingPointError: A covariance stays non-positive-definite after raising the ridge.
    """
    if counts.ndim != 1 or sums.ndim != 2 or outer_sums.ndim != 3:
        raise ValueError(
            "expected counts [K], sums [K, d], outer_sums [K, d, d], got shapes "
            f"{tuple(counts.shape)}, {tuple(sums.shape)}, {tuple(outer_sums.shape)}"
        )
    k, d = sums.shape
    if counts.shape[0] != k or outer_sums.shape != (k, d, d):
        raise ValueError(
            "inconsistent statistics shapes: "
            f"{tuple(counts.shape)}, {tuple(sums.shape)}, {tuple(outer_sums.shape)}"
        )
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
    if method not in ("logdet", "kl"):
        raise ValueError(f"method must be 'logdet' or 'kl', got {method!r}")
    # One reduction instead of an elementwise isfinite pass over [K, d, d]: NaN and inf
    # propagate through the sum (and an overflowing sum means the statistics are unusable too).
    if not bool(torch.isfinite(counts.sum() + sums.sum() + outer_sums.sum())):
        raise ValueError(f"sufficient statistics of {_label(name)} hold NaN or inf")
    kept = _scored_classes(counts, min_class_size, name)
    if kept.numel() < k:
        counts, sums, outer_sums = counts[kept], sums[kept], outer_sums[kept]
    total = counts.sum()
    weights = counts / total
    # Entry 0 is the global Gaussian of Eq. 15, 16 over the kept classes (moment-matched: its
    # statistics are the sums of the classes'), entries 1..K' the classes (Eq. 13, 14).
    means, covs = moments_from_statistics(
        torch.cat([total.reshape(1), counts]),
        torch.cat([sums.sum(0, keepdim=True), sums]),
        torch.cat([outer_sums.sum(0, keepdim=True), outer_sums]),
    )
    scale = covs[0].diagonal().sum() / d
    ridge = shrinkage * scale
    labels = ["the global distribution"] + [f"class {c}" for c in kept.tolist()]
    regularised, factor = _regularised_factor(covs, ridge, scale, labels, name)
    if method == "logdet":
        logdets = _CholeskyLogdet.apply(regularised, factor)
        loss = 0.5 * (logdets[0] - (weights * logdets[1:]).sum())
    else:
        kl = gaussian_kl(means[1:], regularised[1:], means[0], regularised[0])
        loss = (weights * kl).sum()
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"the mutual-information loss of {_label(name)} is not finite")
    return loss


def gaussian_mi_bound(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    *,
    shrinkage: float = 1e-3,
    dtype: torch.dtype | None = torch.float64,
    min_class_size: int = 2,
    method: Literal["logdet", "kl"] = "logdet",
    name: str | None = None,
) -> Tensor:
    """AttrCloak's attribute-unlearning loss ``L_j`` for one attribute (Eq. 12-18).

    ``sum_k (|S_k|/|S|) KL(N(mu_k, Sigma_k) || N(mu_g, Sigma_g))``, a Gaussian variational upper
    bound on ``I(em; a_j)`` (Eq. 27-34). Equal to :func:`sufficient_statistics` followed by
    :func:`gaussian_mi_from_statistics`.

    Args:
        embeddings: ``[N, d]`` user embeddings (the loss is differentiable w.r.t. them).
        codes: ``[N]`` integer class codes, ``-1`` = unknown (excluded).
        num_classes: Number of classes ``K`` of the attribute.
        shrinkage: Relative ridge, see :func:`gaussian_mi_from_statistics`.
        dtype: Computation dtype (float64 by default); ``None`` = the embeddings' dtype
            (promoted to at least float32). The result is cast back to the embeddings' dtype.
        min_class_size: Classes with fewer labelled users are skipped.
        method: ``"logdet"`` (exact identity, default) or ``"kl"`` (Eq. 17 term by term).
        name: Attribute name for error messages.

    Returns:
        Scalar loss (``>= 0`` up to rounding) in the embeddings' dtype.

    Raises:
        ValueError: Non-finite embeddings, malformed codes, or fewer than two usable classes.
        FloatingPointError: A covariance cannot be factorised even after raising the ridge.
    """
    counts, sums, outer_sums = sufficient_statistics(
        embeddings, codes, num_classes, dtype=dtype, name=name
    )
    loss = gaussian_mi_from_statistics(
        counts,
        sums,
        outer_sums,
        shrinkage=shrinkage,
        min_class_size=min_class_size,
        method=method,
        name=name,
    )
    return loss.to(embeddings.dtype)


def multi_attribute_mi_bound(
    embeddings: Tensor,
    codes: Mapping[str, Tensor],
    num_classes: Mapping[str, int],
    **kwargs: Any,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 19: the mean of :func:`gaussian_mi_bound` over the attributes to forget.

    Args:
        embeddings: ``[N, d]`` user embeddings.
        codes: Attribute name -> ``[N]`` class codes (``-1`` = unknown).
        num_classes: Attribute name -> number of classes; must have the same keys as ``codes``.
        **kwargs: Forwarded to :func:`gaussian_mi_bound` (``shrinkage``, ``dtype``, ...).

    Returns:
        ``(mean loss, {attribute: its loss})``; the per-attribute terms are for logging.

    Raises:
        ValueError: No attributes, or ``codes`` and ``num_classes`` with different keys.
    """
    if not codes:
        raise ValueError("multi_attribute_mi_bound needs at least one attribute")
    if set(codes) != set(num_classes):
        raise ValueError(
            f"codes and num_classes name different attributes: {sorted(codes)} vs "
            f"{sorted(num_classes)}"
        )
    terms = {
        attr: gaussian_mi_bound(embeddings, codes[attr], num_classes[attr], name=attr, **kwargs)
        for attr in codes
    }
    total = torch.stack(list(terms.values())).mean()
    return total, terms


def _pooled_and_class_covariances(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    shrinkage: float,
    dtype: torch.dtype | None,
    min_class_size: int,
    name: str | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(weights [K'], regularised [1 + K', d, d], factor)`` for the covariance-only terms:
    the pooled within-class covariance first, then each scored class's, all ridged by
    ``shrinkage`` x the pooled mean variance; ``factor`` is their (detached) Cholesky."""
    counts, sums, outer_sums = sufficient_statistics(
        embeddings, codes, num_classes, dtype=dtype, name=name
    )
    keep = _scored_classes(counts, min_class_size, name)
    counts, sums, outer_sums = counts[keep], sums[keep], outer_sums[keep]
    _, covs = moments_from_statistics(counts, sums, outer_sums)
    weights = counts / counts.sum()
    pooled = (weights[:, None, None] * covs).sum(0)
    scale = pooled.diagonal().sum() / embeddings.shape[1]
    labels = ["the pooled within-class covariance"] + [f"class {c}" for c in keep.tolist()]
    regularised, factor = _regularised_factor(
        torch.cat([pooled.unsqueeze(0), covs]), shrinkage * scale, scale, labels, name
    )
    return weights, regularised, factor


def _check_permutations(codes: Tensor, permutations: Tensor) -> Tensor:
    """The labelled users' indices; ``permutations`` must be ``[R >= 1, n labelled]``."""
    labelled = torch.nonzero(codes >= 0).flatten()
    if (
        permutations.ndim != 2
        or permutations.shape[0] < 1
        or permutations.shape[1] != labelled.numel()
    ):
        raise ValueError(
            f"permutations must be [R >= 1, {labelled.numel()} labelled users], got "
            f"{list(permutations.shape)}"
        )
    return labelled


def _relabelled(codes: Tensor, labelled: Tensor, perm: Tensor) -> Tensor:
    """``codes`` with the labelled users' labels permuted (class sizes kept)."""
    shuffled = codes.clone()
    shuffled[labelled] = codes[labelled][perm.to(codes.device)]
    return shuffled


def gaussian_covariance_bound(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    *,
    shrinkage: float = 1e-3,
    dtype: torch.dtype | None = torch.float64,
    min_class_size: int = 2,
    name: str | None = None,
) -> Tensor:
    """The covariance part of Eq. 18 alone: ``sum_k w_k KL(N(0, Sigma_k) || N(0, Sigma_w))``.

    ``Sigma_w = sum_k w_k Sigma_k`` is the pooled within-class covariance (not the total
    covariance of Eq. 16, which holds the class means), so the loss sees no class mean and its
    gradient moves no class mean: with ridged covariances
    ``0.5 (log det Sigma_w - sum_k w_k log det Sigma_k)``. AttrCloak's ``privacy_moments:
    covariance`` pairs it with :class:`~lit_unlearn.methods.attribute.erasure.CalibratedErasure`,
    which sets the class means (exact mean matching inverts held-out users; docs/attrcloak.md).

    Args:
        embeddings: ``[N, d]`` user embeddings (differentiable).
        codes: ``[N]`` class codes, ``-1`` = unknown.
        num_classes: ``K``.
        shrinkage: Ridge relative to the pooled covariance's mean variance.
        dtype: Computation dtype.
        min_class_size: Classes with fewer labelled users are skipped.
        name: Attribute name for errors.

    Returns:
        Scalar loss (``>= 0`` up to rounding) in the embeddings' dtype.
    """
    weights, regularised, factor = _pooled_and_class_covariances(
        embeddings, codes, num_classes, shrinkage, dtype, min_class_size, name
    )
    logdets = _CholeskyLogdet.apply(regularised, factor)
    loss = 0.5 * (logdets[0] - (weights * logdets[1:]).sum())
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"the covariance loss of {_label(name)} is not finite")
    return loss.to(embeddings.dtype)


def calibrated_covariance_bound(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    permutations: Tensor,
    *,
    low_quantile: float = 0.05,
    shrinkage: float = 1e-3,
    dtype: torch.dtype | None = torch.float64,
    min_class_size: int = 2,
    name: str | None = None,
) -> Tensor:
    """The covariance bound held inside its permutation null's band, not driven to 0.

    With ``B = sum_k w_k KL(N(0, Sigma_k) || N(0, Sigma_w))`` (:func:`gaussian_covariance_bound`)
    and ``B_p`` the same on the
    ``R`` relabellings of the users, the loss is
    ``max(0, B - mean_p B_p) + max(0, quantile_p(B_p, low_quantile) - B)``.

    A class's sample covariance differs from the pooled one by ``~ d^2 / n_k`` even without
    any signal, and matching it exactly (the plain bound driven to 0) writes every member's
    noise into the others, as exact mean matching does for the first moments: held-out users'
    second moments come out *inverted* (on ML-100K, a logistic regression on ``[z, z^2]``
    ranks held-out users' gender at AUC 0.35 after AttrCloak-DD's covariance stage;
    docs/attrcloak.md "Second moments invert too"). Pulling the bound down only to the null's
    mean is the second-moment analogue of the calibrated erasure's
    ``(1 - c)^2 lambda = lambda_null``. The lower edge is there for the optimiser: with a plain
    hinge (no gradient below the null) a momentum optimiser coasts on past it and inverts
    anyway; below the null's ``low_quantile`` (significantly more equal than label noise
    makes classes, the erasure's ``expand``) it is pushed back up, and in between it is left
    alone, so a bound that starts at the noise level is never pushed up into structure. On a
    planted 1.3x variance (400 users, 6 dims, Adam, 300 steps), held-out squared-feature AUC
    0.37-0.42 for exact matching, 0.39-0.44 for the plain hinge, 0.53-0.57 for ``|B - mean|``
    and 0.50-0.52 for this band. One band for the weighted sum, not one per class: the classes
    share the pooled covariance, so pushing one class down to its floor drags the others below
    theirs. The null is recomputed on the current embeddings every call (no gradient flows
    through it).

    Args:
        embeddings, codes, num_classes, shrinkage, dtype, min_class_size, name: As
            :func:`gaussian_covariance_bound`.
        permutations: ``[R, n]`` permutations of the ``n`` labelled users (fixed and seeded by
            the caller, so the null is the same on every rank and step to step).
        low_quantile: The band's lower edge, a quantile of the relabelled bounds.

    Returns:
        Scalar loss, ``>= 0``, in the embeddings' dtype.

    Raises:
        ValueError: ``permutations`` of another shape than ``[R >= 1, n labelled]``, or
            ``low_quantile`` outside ``[0, 1)``.
    """
    if not 0.0 <= low_quantile < 1.0:
        raise ValueError(f"low_quantile must be in [0, 1), got {low_quantile}")
    labelled = _check_permutations(codes, permutations)
    kwargs: dict[str, Any] = {
        "shrinkage": shrinkage,
        "dtype": dtype,
        "min_class_size": min_class_size,
        "name": name,
    }
    # The weighted sum of the classes' KL is the plain bound (one band for the sum: see above).
    bound = gaussian_covariance_bound(embeddings, codes, num_classes, **kwargs)
    with torch.no_grad():
        detached = embeddings.detach()
        nulls = []
        for perm in permutations:
            # relabelling keeps the class sizes, so the same classes are kept and weighted alike
            shuffled = _relabelled(codes, labelled, perm)
            nulls.append(gaussian_covariance_bound(detached, shuffled, num_classes, **kwargs))
        null = torch.stack(nulls)
        floor, low = null.mean(), torch.quantile(null, low_quantile)
    loss = torch.relu(bound - floor) + torch.relu(low - bound)
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"the covariance loss of {_label(name)} is not finite")
    return loss.to(embeddings.dtype)


def covariance_divergence_spectra(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    *,
    shrinkage: float = 1e-3,
    dtype: torch.dtype | None = torch.float64,
    min_class_size: int = 2,
    name: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Each class's covariance divergence from the pooled one, direction by direction.

    With ``lambda_kj`` the eigenvalues of ``Sigma_w^{-1} Sigma_k`` (ridged as in
    :func:`gaussian_covariance_bound`), ``KL(N(0, Sigma_k) || N(0, Sigma_w)) =
    0.5 sum_j (lambda_kj - 1 - log lambda_kj)``: the bound is a sum of one divergence per
    generalised eigen-direction. This returns those terms, sorted in decreasing order per
    class, so a spectrum can be compared rank by rank with a permutation null's.

    Args:
        embeddings, codes, num_classes, shrinkage, dtype, min_class_size, name: As
            :func:`gaussian_covariance_bound`.

    Returns:
        ``(weights [K'], divergences [K', d])`` over the ``K'`` scored classes; the weighted sum
        of the divergences is :func:`gaussian_covariance_bound` (in the work dtype).
    """
    weights, regularised, _ = _pooled_and_class_covariances(
        embeddings, codes, num_classes, shrinkage, dtype, min_class_size, name
    )
    # Differentiable factor of the pooled covariance (the one above is detached).
    chol = torch.linalg.cholesky(regularised[0])
    half = torch.linalg.solve_triangular(chol, regularised[1:], upper=False)
    whitened = torch.linalg.solve_triangular(chol, half.transpose(-1, -2), upper=False)
    whitened = 0.5 * (whitened + whitened.transpose(-1, -2))
    # eigvalsh's backward needs no eigen-gap (unlike eigh's eigenvectors), and the ridge keeps
    # every eigenvalue positive.
    lam = torch.linalg.eigvalsh(whitened).clamp_min(torch.finfo(whitened.dtype).tiny)
    divergences = 0.5 * (lam - 1.0 - lam.log())
    return weights, divergences.sort(dim=-1, descending=True).values


def spectral_covariance_band(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    permutations: Tensor,
    *,
    low_quantile: float = 0.05,
    high_quantile: float = 0.5,
    shrinkage: float = 1e-3,
    dtype: torch.dtype | None = torch.float64,
    min_class_size: int = 2,
    name: str | None = None,
) -> Tensor:
    """The covariance bound held in its permutation null's band direction by direction.

    :func:`calibrated_covariance_bound` holds the *sum* of the per-direction divergences
    (:func:`covariance_divergence_spectra`) at the null's: in 128 dimensions with classes of
    a few dozen users the sum's noise (``~ d^2 / n_k``) is far larger than a signal that sits in
    a handful of directions, so the band tolerates it (on ML-100K kNN still reads age at +0.27
    above its null after it). Here each class's divergences, sorted, are compared rank by rank
    with the same ranks of ``R`` relabellings: with ``f_kj`` the ``j``-th largest divergence of
    class ``k`` and ``f^p_kj`` the relabellings',

    ``sum_k w_k sum_j [max(0, f_kj - q_hi(f^p_kj)) + max(0, q_lo(f^p_kj) - f_kj)]``.

    A class whose leading directions stand out of the null's leading directions is pulled
    back to them (the spike, not the noise, pays), and a spectrum flatter than label noise
    makes it (the over-equalised classes whose held-out users invert) is pushed back out. The
    null is recomputed on the current embeddings every call, without gradient.

    Args:
        embeddings, codes, num_classes, shrinkage, dtype, min_class_size, name: As
            :func:`gaussian_covariance_bound`.
        permutations: ``[R, n]`` permutations of the ``n`` labelled users.
        low_quantile: Lower edge of each rank's band, a quantile of the relabellings.
        high_quantile: Upper edge (the median by default: the signal is pulled to the null's
            typical value at that rank, as the calibrated erasure pulls ``lambda`` to the
            null's).

    Returns:
        Scalar loss, ``>= 0``, in the embeddings' dtype.

    Raises:
        ValueError: ``permutations`` of another shape than ``[R >= 1, n labelled]``, or
            quantiles outside ``0 <= low < high <= 1``.
    """
    if not 0.0 <= low_quantile < high_quantile <= 1.0:
        raise ValueError(
            f"quantiles must satisfy 0 <= low < high <= 1, got {low_quantile}, {high_quantile}"
        )
    labelled = _check_permutations(codes, permutations)
    kwargs: dict[str, Any] = {
        "shrinkage": shrinkage,
        "dtype": dtype,
        "min_class_size": min_class_size,
        "name": name,
    }
    weights, spectra = covariance_divergence_spectra(embeddings, codes, num_classes, **kwargs)
    with torch.no_grad():
        detached = embeddings.detach()
        nulls = []
        for perm in permutations:
            # relabelling keeps the class sizes: the same classes, rank for rank comparable
            shuffled = _relabelled(codes, labelled, perm)
            _, spectrum = covariance_divergence_spectra(detached, shuffled, num_classes, **kwargs)
            nulls.append(spectrum)
        null = torch.stack(nulls)
        high = torch.quantile(null, high_quantile, dim=0)
        low = torch.quantile(null, low_quantile, dim=0)
    per_class = (torch.relu(spectra - high) + torch.relu(low - spectra)).sum(-1)
    loss = (weights * per_class).sum()
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"the spectral covariance loss of {_label(name)} is not finite")
    return loss.to(embeddings.dtype)
