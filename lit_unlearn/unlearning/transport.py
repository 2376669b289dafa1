"""Relabelling transport: give each class the second moments of a random relabelling.

Why exact matching inverts, in the second moments (docs/attrcloak.md "Second moments invert
too"): a method that makes every class's sample covariance equal to the pooled one removes the
class's deviation as *estimated* from its own users, signal plus every user's noise. The
deviations of two disjoint parts of a class then sum to zero, so an attacker that reads the
spread (a quadratic attacker: logistic regression on ``[x, x^2]``) trained on four folds ranks
the fifth the wrong way round (ML-100K, AttrCloak's covariance stage: one-vs-rest AUC 0.27 to
0.36). The first-moment fix, the null-calibrated shrink of :mod:`.calibrated`, needs the
signal's directions; in 128 dimensions with classes of 36 to 670 users the covariances'
signal cannot be located direction by direction (the shrink left kNN above the null).

This module does not try to locate it. It removes all of it and writes back noise of exactly
the size the removal took out:

1. **Whom to imitate**: one random relabelling of the labelled users with the class sizes kept
   (a permutation of the codes), drawn from ``generator``: relabelled class ``k`` is a random
   set of ``n_k`` users of every class.
2. **The map**: class ``k``'s users are moved by the Gaussian optimal-transport (Monge) map
   from their own covariance ``C_k`` to the relabelled class's ``R_k``,
   ``x <- m_k + A_k (x - m_k)`` with ``A_k = C_k^{-1/2} (C_k^{1/2} R_k C_k^{1/2})^{1/2}
   C_k^{-1/2}`` (symmetric, ``A_k C_k A_k = R_k``; the linear map that moves the users least
   in mean square among those that give them covariance ``R_k``). ``moments="both"`` also
   moves the class mean to the relabelled class's mean.
3. **Why it does not invert**: exact removal leaves two parts' class deviations with
   covariance ``-V_k`` (``V_k ~ Var / n_k``, the noise of a class statistic); the relabelled
   class's deviation from the pooled statistic is the same statistic of ``n_k`` random users,
   variance ``V_k (1 - n_k / N)``, shared by both parts: ``-V_k + V_k (1 - n_k / N) ~ 0``.
   After the map each class's statistics are distributed as under a random relabelling,
   which is the permutation null the leakage audit (:mod:`lit_unlearn.attacks.leakage`)
   judges against. The same holds for the class means (``moments="both"``; measured on
   ML-100K's Original: exact mean removal gives 5-fold logistic AUC 0.14 to 0.31, relabelled
   means 0.42 to 0.51 with every cell within the null's 95th percentile + 0.05).
4. **Conditioning**: with ``n_k <= d`` a class covariance is singular, so both sides are
   shrunk towards the pooled within-class covariance ``S_w`` by ``shrinkage`` (``gamma``):
   ``C_k <- (1 - gamma) C_k + gamma S_w`` and the same for ``R_k``. This scales the written
   noise by ``1 - gamma`` along with the removed deviation, so keep it small (0.05 on ML-100K,
   an offline probe on the DF covariance stage's export: 0.5 left the quadratic attacker at
   AUC 0.32 to 0.40 on age and occupation, 0.2 at 0.42, 0.05 at 0.46 to 0.49). A
   representation that does not span its ``d`` dimensions (a singular ``S_w``) is transported
   in the span of ``S_w`` and left as it is outside it.

It is a price paid in movement: the users move by the noise as well as by the signal (about
1.0 in mean squared distance after AttrCloak-DF's covariance stage on ML-100K, against a total
variance of 14 summed over the dimensions), and unlike :mod:`.calibrated` it moves users of an
attribute that carries nothing (the noise is written whatever the labels). Apply it only to
attributes whose second moments were matched or do carry signal. It is Gaussian: each class
gets its own linear map, so structure the classes share beyond their second moments is
distorted differently per class, which a non-linear attacker can read (ML-100K DD: gender MLP
+0.02 to +0.04 balanced accuracy with the transport, +0.005 without).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lit_unlearn.unlearning.calibrated import chain_attributes, labelled_rows

__all__ = [
    "TransportMoments",
    "TransportResult",
    "check_transport_options",
    "gaussian_transport_matrix",
    "relabel_transport",
    "transport_attributes",
]

#: What :func:`relabel_transport` gives the relabelled class: its covariance, or its mean too.
TransportMoments = Literal["covariance", "both"]


@dataclass(frozen=True)
class TransportResult:
    """What one attribute's relabelling transport did.

    Attributes:
        shift: ``[N, d]`` added to the representation (zero rows for unlabelled users).
        relabelled: ``[n_labelled]`` the relabelled codes (the random relabelling imitated),
            in the order of the labelled users.
        maps: ``[K, d, d]`` each class's transport matrix ``A_k`` (identity for a class of
            fewer than two users, which is not moved, and outside the span of the pooled
            within-class covariance).
        sizes: ``[K]`` labelled users per class.
    """

    shift: Tensor
    relabelled: Tensor
    maps: Tensor
    sizes: Tensor


def _sym_sqrt(m: Tensor, inverse: bool = False) -> Tensor:
    """Square root (or inverse square root) of a symmetric positive semi-definite matrix."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    floor = vals.abs().max().clamp_min(torch.finfo(m.dtype).tiny) * torch.finfo(m.dtype).eps
    vals = vals.clamp_min(0.0)
    if inverse:
        if bool((vals <= floor * m.shape[0]).any()):
            raise ValueError(
                "the source covariance of the transport is singular: raise shrinkage "
                "(it mixes in the pooled within-class covariance)"
            )
        root = vals.rsqrt()
    else:
        root = vals.sqrt()
    return (vecs * root) @ vecs.T


def check_transport_options(
    shrinkage: float, moments: str, rank_tol: float, prefix: str = ""
) -> None:
    """Raise ``ValueError`` for options :func:`relabel_transport` cannot take (``prefix``
    names them as the caller's config does, e.g. ``transport_``)."""
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError(f"{prefix}shrinkage must be in (0, 1], got {shrinkage}")
    if moments not in ("covariance", "both"):
        raise ValueError(f"{prefix}moments must be 'covariance' or 'both', got {moments!r}")
    if not 0.0 <= rank_tol < 1.0:
        raise ValueError(f"{prefix}rank_tol must be in [0, 1), got {rank_tol}")


def gaussian_transport_matrix(source: Tensor, target: Tensor) -> Tensor:
    """Monge map between centred Gaussians, ``N(0, source) -> N(0, target)``.

    ``A = S^{-1/2} (S^{1/2} T S^{1/2})^{1/2} S^{-1/2}``: symmetric positive semi-definite, with
    ``A S A = T``; of the linear maps that give covariance ``T`` it moves a Gaussian's samples
    least in mean square (Dowson & Landau 1982; Olkin & Pukelsheim 1982).

    Args:
        source: ``[d, d]`` symmetric positive definite.
        target: ``[d, d]`` symmetric positive semi-definite.

    Returns:
        ``[d, d]`` the map, in the inputs' dtype.

    Raises:
        ValueError: Shapes that are not the same square, non-finite entries, or a singular
            source.
    """
    if source.ndim != 2 or source.shape[0] != source.shape[1] or target.shape != source.shape:
        raise ValueError(
            f"source and target must be the same [d, d], got {tuple(source.shape)} and "
            f"{tuple(target.shape)}"
        )
    if not bool(torch.isfinite(source).all() and torch.isfinite(target).all()):
        raise ValueError("transport covariances hold NaN or inf")
    half = _sym_sqrt(source)
    inv_half = _sym_sqrt(source, inverse=True)
    middle = _sym_sqrt(half @ target @ half)
    a = inv_half @ middle @ inv_half
    return (a + a.T) / 2


def relabel_transport(
    x: Tensor,
    codes: Tensor,
    num_classes: int,
    *,
    shrinkage: float = 0.05,
    moments: TransportMoments = "covariance",
    generator: torch.Generator | None = None,
    rank_tol: float = 1e-6,
) -> TransportResult:
    """One attribute's relabelling transport (module docstring, steps 1-4).

    Args:
        x: ``[N, d]`` representations (not modified).
        codes: ``[N]`` class codes, ``-1`` = unknown (unlabelled users are not moved).
        num_classes: ``K``.
        shrinkage: ``gamma`` in ``(0, 1]``: share of the pooled within-class covariance mixed
            into both sides of each class's map (step 4).
        moments: ``covariance`` (class means kept: pair it with the calibrated erasure of the
            means) or ``both`` (the class mean moved to the relabelled class's too).
        generator: CPU generator of the relabelling (seeded: identical on every DDP rank).
        rank_tol: Directions whose pooled within-class variance is below ``rank_tol`` times
            the largest are left as they are (no user spreads along them).

    Returns:
        :class:`TransportResult`.

    Raises:
        ValueError: Malformed or non-finite input, ``shrinkage`` outside ``(0, 1]``, an unknown
            ``moments``, fewer than two classes of two users, or no within-class spread at all.
    """
    check_transport_options(shrinkage, moments, rank_tol)
    labelled, y, z = labelled_rows(x, codes, num_classes)
    n, d = z.shape
    sizes = torch.bincount(y, minlength=num_classes)
    relabelled = y[torch.randperm(n, generator=generator)]

    def stats(labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
        rows = z[labels == k]
        mean = rows.mean(0)
        centred = rows - mean
        return mean, centred.T @ centred / rows.shape[0]

    own = [stats(y, k) if int(sizes[k]) >= 2 else None for k in range(num_classes)]
    s_w = sum(
        (int(sizes[k]) * s[1] for k, s in enumerate(own) if s is not None),
        torch.zeros(d, d, dtype=z.dtype),
    ) / float(sum(int(sizes[k]) for k, s in enumerate(own) if s is not None))
    # A learned representation need not span its d dimensions (ML-100K's NCF: the pooled
    # within-class covariance has eigenvalues at 1e-15 of its largest after AttrCloak's
    # covariance stage). No user spreads along those directions, so there is nothing to
    # transport there: the maps act on the span of S_w and are the identity on the rest.
    vals, vecs = torch.linalg.eigh((s_w + s_w.T) / 2)
    keep = vals > rank_tol * vals.max().clamp_min(torch.finfo(z.dtype).tiny)
    if not bool(keep.any()):
        raise ValueError("the labelled users have no within-class spread to transport")
    basis = vecs[:, keep]  # [d, r]
    sub_w = basis.T @ s_w @ basis
    new = z.clone()
    maps = torch.eye(d, dtype=z.dtype).repeat(num_classes, 1, 1)
    outside = torch.eye(d, dtype=z.dtype) - basis @ basis.T
    for k, s in enumerate(own):
        if s is None:
            continue  # one user: no covariance to transport, and no spread to leak
        mean, cov = s
        r_mean, r_cov = stats(relabelled, k)
        a = gaussian_transport_matrix(
            (1.0 - shrinkage) * basis.T @ cov @ basis + shrinkage * sub_w,
            (1.0 - shrinkage) * basis.T @ r_cov @ basis + shrinkage * sub_w,
        )
        maps[k] = basis @ a @ basis.T + outside
        rows = y == k
        centre = r_mean if moments == "both" else mean
        new[rows] = centre + (z[rows] - mean) @ maps[k].T
    shift = torch.zeros_like(x, dtype=x.dtype)
    shift[labelled] = (new - z).to(x.device, x.dtype)
    return TransportResult(shift=shift, relabelled=relabelled, maps=maps, sizes=sizes)


def transport_attributes(
    x: Tensor,
    codes: Mapping[str, Tensor],
    num_classes: Mapping[str, int],
    **kwargs: object,
) -> tuple[Tensor, dict[str, TransportResult]]:
    """Transport several attributes one after the other (each on the already-moved
    representation, as :func:`~lit_unlearn.unlearning.calibrated.erase_attributes`).

    Args:
        x: ``[N, d]`` representations.
        codes: Attribute -> ``[N]`` codes.
        num_classes: Attribute -> ``K``.
        **kwargs: Forwarded to :func:`relabel_transport` (one ``generator`` draws every
            attribute's relabelling in turn).

    Returns:
        ``(total shift [N, d], {attribute: its result})``.
    """
    if not codes or set(codes) - set(num_classes):
        raise ValueError(
            f"every attribute of codes needs num_classes, got {sorted(codes)} and "
            f"{sorted(num_classes)}"
        )
    return chain_attributes(
        x,
        codes,
        lambda rep, name: relabel_transport(rep, codes[name], num_classes[name], **kwargs),  # type: ignore[arg-type]
    )
