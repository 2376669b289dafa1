"""Null-calibrated discriminant erasure: remove an attribute's linear signal without inverting it.

Why exact removal inverts (docs/attrcloak.md "Why full-population matching inverts"): a user's
representation is ``s y + n``; any method that makes the population's class means equal shifts
the classes by the *estimated* difference ``s + n_bar``, which carries every user's noise. The
class differences of the parts of the population then sum to zero: an attacker trained on four
folds learns the negative of the fifth's and ranks it the wrong way round.

This module removes only what the estimate can tell from noise, and only by the amount that
leaves held-out parts uncorrelated:

1. **Where**: the discriminant directions of the attribute (generalised eigenvectors of the
   between-class scatter against the within-class covariance, ``S_b v = lambda S_w v``; at most
   ``K - 1``) whose eigenvalue beats the same-rank eigenvalue of label-permuted data (the
   ``quantile`` of ``permutations`` seeded permutations). Directions at the noise level are left
   alone: erasing them would only write the noise in.
2. **How far**: along direction ``j`` each class's deviation from the population mean is shrunk
   by ``c_j = 1 - sqrt(lambda_null_j / lambda_j)`` (``lambda_null_j`` the permutations' mean):
   with ``lambda_j`` estimating ``S + V`` (signal plus the estimate's noise) and ``lambda_null``
   estimating ``V``, this is the ``c`` at which the retained signal ``(1 - c) s`` and the
   injected anti-correlation ``-c n_bar`` cancel in the covariance of two parts' class
   differences, ``(1 - c)^2 S - c (2 - c) V = 0``. Exact removal (``c = 1``, as LEACE or
   mean matching) is ``calibrate=False``, kept for the ablation.

   ``lambda_j = sum_k (n_k / n) t_kj^2`` pools the classes (``t_kj`` class ``k``'s deviation
   along whitened coordinate ``j``); each class's own noise is ``~ 1 / n_k``, so one shrink per
   direction is too large for classes of a few dozen users (mostly noise: inverted, age's
   under-18 and oldest groups at one-vs-rest AUC 0.39-0.43 on ML-100K) and too small for the
   large ones. ``calibration="class"`` solves the same equation per class and direction,
   ``c_kj = 1 - sqrt(E_null[t_kj^2] / t_kj^2)``, the null's class coordinates measured along its
   own discriminant, then re-centres the shifts so the population mean stays put. For two
   classes the two calibrations coincide (both deviations are the same coordinate up to the
   ratio of the class sizes).
3. **Without side effects**: each class moves along ``B = L V`` (``S_w = L L^T``) and the
   deviation is measured along ``W = L^{-T} V`` (``W^T B = I``): only the chosen whitened
   coordinates change, so no within-class correlation carries the removed difference into the
   other directions (moving along the discriminant direction itself does, and *raised* gender
   leakage to 0.83 in our study).

4. **From the other side** (``expand=True``): a direction whose eigenvalue falls *below* the
   null's ``1 - quantile`` quantile holds class means closer together than label noise would
   put them: the signature of an earlier full-population match (e.g. AttrCloak's covariance
   stage on ML-100K age: 3 of 6 directions at 0.58-0.81 of the null mean), along which held-out
   parts are anti-correlated and a weakly regularised linear attacker ranks the small classes
   the wrong way round after the erasure. The same equation with ``S < 0`` gives ``c < 0``:
   the class deviations are expanded by ``sqrt(lambda_null / lambda)`` (at most
   :data:`MAX_EXPANSION`), which puts the direction back at the null from below as step 2 does
   from above.

It is linear: first moments along a few directions. Non-linear attackers can still find what
covariance differences carry (see the docs' table); the shift is label-dependent, as any
attribute unlearning of a representation that keeps the users' other structure must be.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import torch
from torch import Tensor

__all__ = [
    "CALIBRATIONS",
    "Calibration",
    "ErasureResult",
    "calibrated_erasure",
    "chain_attributes",
    "check_calibration",
    "class_coordinates",
    "class_shifts",
    "discriminant_eigen",
    "discriminant_from_moments",
    "erase_attributes",
    "expansion_shifts",
    "fold_moments",
    "labelled_rows",
    "scatter_from_moments",
    "select_ridge",
]


#: Largest factor ``expand=True`` multiplies a direction's class deviations by: a direction
#: matched (almost) exactly has (almost) nothing left to expand, and its tiny eigenvalue would
#: otherwise turn the ratio into a blow-up of rounding noise.
MAX_EXPANSION = 2.0

#: How far each class moves along a chosen direction: one shrink per direction, pooled over the
#: classes, or one per class and direction (module docstring, step 2).
Calibration = Literal["direction", "class"]
CALIBRATIONS: tuple[Calibration, ...] = ("direction", "class")


@dataclass(frozen=True)
class ErasureResult:
    """What one attribute's erasure did.

    Attributes:
        shift: ``[N, d]`` added to the representation (zero rows for unlabelled users).
        eigenvalues: ``[K-1]`` discriminant eigenvalues of the data, descending.
        null_mean: ``[K-1]`` mean same-rank eigenvalue of the label permutations.
        null_quantile: ``[K-1]`` their ``quantile``.
        rank: Directions erased (the leading eigenvalues above ``null_quantile``).
        shrink: ``[rank]`` the fraction of each class deviation removed along each direction
            (``calibration="direction"``), or ``[K, rank]`` per class and direction
            (``"class"``).
        class_shift: ``[K, d]`` the shift of each class (every labelled member moves by it).
        deviation: ``[K, d]`` each class mean's deviation from the population mean after the
            erasure (the calibrated target :class:`AttrCloak` can match, ``mean_target``).
        ridge: The relative ridge used (the chosen one with ``ridge="cv"``).
        expanded: ``[K-1]`` bool, the directions whose class deviations were expanded
            (``expand=True``: eigenvalue below the null's ``1 - quantile`` quantile).
        expansion: ``[K-1]`` the factor each direction's class deviations were multiplied by
            (1 where not expanded).
    """

    shift: Tensor
    eigenvalues: Tensor
    null_mean: Tensor
    null_quantile: Tensor
    rank: int
    shrink: Tensor
    class_shift: Tensor
    deviation: Tensor
    ridge: float = 1e-3
    expanded: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    expansion: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))


def _check(x: Tensor, codes: Tensor, num_classes: int) -> None:
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(
            f"representation must be a floating [N, d] tensor, got {x.dtype} {tuple(x.shape)}"
        )
    if codes.shape != (x.shape[0],) or codes.is_floating_point():
        raise ValueError(
            f"codes must be integer [N={x.shape[0]}], got {codes.dtype} {tuple(codes.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("representation holds NaN or inf")
    if num_classes < 2:
        raise ValueError(f"an attribute needs at least 2 classes, got {num_classes}")
    if codes.numel() and int(codes.max()) >= num_classes:
        raise ValueError(f"codes reach {int(codes.max())}, beyond num_classes={num_classes}")


def discriminant_eigen(
    z: Tensor, y: Tensor, num_classes: int, ridge: float = 1e-3
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Discriminant eigenpairs of labelled rows ``z`` (float64 recommended).

    Args:
        z: ``[n, d]`` labelled representations.
        y: ``[n]`` codes in ``[0, K)``.
        num_classes: ``K``.
        ridge: Added to ``S_w``, relative to its mean variance (keeps it invertible when
            ``d`` approaches the class sizes).

    Returns:
        ``(eigenvalues [K-1] descending, V [d, K-1] orthonormal in whitened space,
        L [d, d] with S_w + ridge = L L^T, class means [K, d], population mean [d])``. Classes
        without users get the population mean (no deviation).
    """
    n = z.shape[0]
    onehot = torch.nn.functional.one_hot(y, num_classes).to(z.dtype)
    counts = onehot.sum(0)
    mu = z.mean(0)
    means = (onehot.T @ z + (counts == 0).to(z.dtype)[:, None] * mu) / counts.clamp_min(1)[:, None]
    dev = (means - mu) * counts.sqrt()[:, None]
    s_b = dev.T @ dev / n
    resid = z - means[y]
    s_w = resid.T @ resid / n
    vals, vecs, chol = _whitened_eigen(s_b, s_w, num_classes, ridge)
    return vals, vecs, chol, means, mu


def discriminant_from_moments(
    counts: Tensor, sums: Tensor, outer: Tensor, ridge: float = 1e-3
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """:func:`discriminant_eigen` from sums alone (what secure aggregation can give a server).

    With ``n_k`` users, ``sum_k = sum_{y_u = k} z_u`` and ``outer = sum_u z_u z_u^T``:
    ``S_b = sum_k n_k (m_k - mu)(m_k - mu)^T / n`` and
    ``S_w = (outer - sum_k n_k m_k m_k^T) / n``, the same matrices as from the rows (up to
    rounding: compute the sums in float64).

    Args:
        counts: ``[K]`` users per class.
        sums: ``[K, d]`` per-class sums of the representations.
        outer: ``[d, d]`` sum of every labelled user's outer product.
        ridge: As :func:`discriminant_eigen`.

    Returns:
        As :func:`discriminant_eigen`.
    """
    num_classes = sums.shape[0]
    s_b, s_w, means, mu = scatter_from_moments(counts, sums, outer)
    vals, vecs, chol = _whitened_eigen(s_b, s_w, num_classes, ridge)
    return vals, vecs, chol, means, mu


def scatter_from_moments(
    counts: Tensor, sums: Tensor, outer: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(S_b, S_w, class means [K, d], population mean [d])`` from the sums of
    :func:`discriminant_from_moments` (a class without users gets the population mean).

    Raises:
        ValueError: No labelled user.
    """
    n = counts.sum()
    if not float(n) > 0:
        raise ValueError("no labelled user in the statistics")
    mu = sums.sum(0) / n
    empty = (counts == 0).to(sums.dtype)[:, None]
    means = (sums + empty * mu) / counts.clamp_min(1)[:, None]
    dev = (means - mu) * counts.sqrt()[:, None]
    s_b = dev.T @ dev / n
    s_w = (outer - (means * counts[:, None]).T @ means) / n
    return s_b, (s_w + s_w.T) / 2, means, mu


def fold_moments(
    z: Tensor, y: Tensor, num_classes: int, fold: Tensor, folds: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-fold ``(counts [F, K], class sums [F, K, d], outer products [F, d, d])`` of rows
    ``z`` (float64) with codes ``y`` in folds ``fold``: :func:`select_ridge`'s input."""
    onehot_f = torch.nn.functional.one_hot(fold, folds).to(z.dtype)
    onehot_y = torch.nn.functional.one_hot(y, num_classes).to(z.dtype)
    return (
        onehot_f.T @ onehot_y,
        torch.einsum("nf,nk,nd->fkd", onehot_f, onehot_y, z),
        torch.einsum("nf,nd,ne->fde", onehot_f, z, z),
    )


#: The relative ridges :func:`select_ridge` chooses from (``S_w + r * mean variance * I``).
RIDGE_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


def select_ridge(
    fold_counts: Tensor,
    fold_sums: Tensor,
    fold_outer: Tensor,
    grid: tuple[float, ...] = RIDGE_GRID,
) -> tuple[float, Tensor]:
    """The ridge whose discriminant separates held-out users best (cross-validated, from sums).

    The calibrated shrink ``1 - sqrt(lambda_null / lambda)`` is exact in the metric the
    discriminant is formed in. With ``d`` near the class sizes a tiny ridge whitens noise
    directions as much as the signal's: the null eigenvalue, spread over all ``d`` whitened
    directions, is large, the shrink small, and an attacker who (trained on few users) cannot use
    those directions still reads most of the signal (FedVAE's 200-wide means on ML-100K: shrink
    0.3, attacker 0.56 after the erasure of an Original). This picks the metric a regularised
    linear attacker would use: for each ridge ``r`` and fold ``f`` the discriminant
    ``W = L^{-T} V`` is formed from the other folds' sums and scored on fold ``f`` by the
    Fisher criterion ``tr((W^T S_w^f W)^{-1} W^T S_b^f W)``; the ridge with the best mean score
    wins. Only the clients' per-fold sums are read (each client's fold is its own draw).

    Args:
        fold_counts: ``[F, K]`` labelled users per fold and class.
        fold_sums: ``[F, K, d]`` per-fold class sums.
        fold_outer: ``[F, d, d]`` per-fold sums of outer products.
        grid: The candidate relative ridges.

    Returns:
        ``(best ridge, mean held-out score per grid entry [len(grid)])``.

    Raises:
        ValueError: An empty grid, or no fold whose own users and the rest's each hold two
            classes with at least two users.
    """
    if not grid or any(not (r >= 0 and r < float("inf")) for r in grid):
        raise ValueError(f"grid must hold finite ridges >= 0, got {grid}")
    total = (fold_counts.sum(0), fold_sums.sum(0), fold_outer.sum(0))
    num_classes = fold_counts.shape[1]
    scores = torch.zeros(len(grid), dtype=torch.float64)
    used = 0
    for f in range(fold_counts.shape[0]):
        held = (fold_counts[f], fold_sums[f], fold_outer[f])
        rest = (total[0] - held[0], total[1] - held[1], total[2] - held[2])
        if int((held[0] >= 2).sum()) < 2 or int((rest[0] >= 2).sum()) < 2:
            continue  # a fold without two classes scores nothing
        used += 1
        s_b, s_w, _, _ = scatter_from_moments(*held)
        for i, ridge in enumerate(grid):
            _, vecs, chol, _, _ = discriminant_from_moments(*rest, ridge=ridge)
            w = torch.linalg.solve_triangular(chol.T, vecs, upper=True)
            between, within = w.T @ s_b @ w, w.T @ s_w @ w
            eye = torch.eye(within.shape[0], dtype=within.dtype)
            within = within + 1e-12 * within.diagonal().mean().clamp_min(1e-300) * eye
            scores[i] += torch.trace(torch.linalg.solve(within, between))
    if used == 0:
        raise ValueError(
            f"ridge selection needs a fold whose users and the rest's each hold two classes "
            f"with >= 2 users; per-fold class sizes {fold_counts.long().tolist()} (K = "
            f"{num_classes}): use fewer folds or a fixed ridge"
        )
    scores /= used
    return float(grid[int(scores.argmax())]), scores


def _whitened_eigen(
    s_b: Tensor, s_w: Tensor, num_classes: int, ridge: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Eigenpairs of ``L^{-1} S_b L^{-T}`` with ``S_w + ridge = L L^T`` (leading ``K - 1``)."""
    d = s_w.shape[0]
    scale = s_w.diagonal().mean().clamp_min(torch.finfo(s_w.dtype).tiny)
    s_w = s_w + ridge * scale * torch.eye(d, dtype=s_w.dtype, device=s_w.device)
    chol = torch.linalg.cholesky(s_w)
    eye = torch.eye(d, dtype=s_w.dtype, device=s_w.device)
    inv = torch.linalg.solve_triangular(chol, eye, upper=False)
    m = inv @ s_b @ inv.T
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    k = min(num_classes - 1, d)
    return vals.flip(0)[:k], vecs.flip(1)[:, :k], chol


def labelled_rows(x: Tensor, codes: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Check the input and keep the labelled users: ``(indices, codes, rows in float64, CPU)``.

    Raises:
        ValueError: Malformed or non-finite input, or fewer than two classes with at least two
            labelled users.
    """
    _check(x, codes, num_classes)
    labelled = torch.nonzero(codes >= 0).flatten()
    y = codes[labelled].cpu()
    sizes = torch.bincount(y, minlength=num_classes)
    if int((sizes >= 2).sum()) < 2:
        raise ValueError(
            f"need two classes with >= 2 labelled users, got class sizes {sizes.tolist()}"
        )
    return labelled, y, x.detach()[labelled].to("cpu", torch.float64)


def class_coordinates(vecs: Tensor, chol: Tensor, means: Tensor, mu: Tensor) -> Tensor:
    """``[K, K-1]``: each class mean's deviation along each whitened discriminant coordinate.

    ``t_kj = (m_k - mu)^T W_j`` with ``W = L^{-T} V`` (:func:`discriminant_eigen`'s output);
    the eigenvalues are their size-weighted squares, ``lambda_j = sum_k (n_k / n) t_kj^2``.
    """
    return (means - mu) @ torch.linalg.solve_triangular(chol.T, vecs, upper=True)


def calibrated_erasure(
    x: Tensor,
    codes: Tensor,
    num_classes: int,
    *,
    permutations: int = 30,
    quantile: float = 0.95,
    ridge: float | Literal["cv"] = 1e-3,
    calibrate: bool = True,
    calibration: Calibration = "direction",
    expand: bool = False,
    generator: torch.Generator | None = None,
    folds: int = 5,
) -> ErasureResult:
    """One attribute's null-calibrated erasure (module docstring, steps 1-3).

    Args:
        x: ``[N, d]`` representations (not modified).
        codes: ``[N]`` class codes, ``-1`` = unknown (unlabelled users are not moved).
        num_classes: ``K``.
        permutations: Label permutations behind the null eigenvalues (>= 1).
        quantile: A direction is erased when its eigenvalue exceeds this quantile of the null's.
        ridge: Relative ridge of ``S_w``, or ``"cv"``: chosen by :func:`select_ridge` over
            ``folds`` random folds of the labelled users. The shrink is exact in the metric
            of the ridge only: ``"cv"`` suits a strongly regularised (few-shot) linear attacker
            and over-removes for a weakly regularised one (docs/fedau2.md).
        calibrate: ``False`` removes the deviations along the chosen directions entirely
            (``c = 1``: exact in-sample removal, which inverts held-out users).
        calibration: ``"direction"`` (one shrink per direction) or ``"class"`` (per class and
            direction, against the permutations' own class coordinates; module docstring).
        expand: Also expand the directions below the null's ``1 - quantile`` quantile back
            to the null (module docstring, step 4).
        generator: CPU generator of the folds (first) and permutations (seeded: identical on
            every DDP rank).
        folds: Folds of ``ridge="cv"`` (>= 2).

    Returns:
        The :class:`ErasureResult`; ``shift`` in ``x``'s dtype and device.

    Raises:
        ValueError: Malformed input, fewer than two users in two classes,
            ``permutations < 1`` or an unknown ``calibration``.
    """
    check_calibration(calibration)
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    labelled, y, z = labelled_rows(x, codes, num_classes)
    if ridge == "cv":
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ValueError(f"folds must be an int >= 2, got {folds!r}")
        fold = torch.randperm(y.numel(), generator=generator) % folds
        ridge, _ = select_ridge(*fold_moments(z, y, num_classes, fold, folds))
    elif (
        isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not 0 <= ridge < math.inf
    ):
        raise ValueError(f"ridge must be a finite number >= 0 or 'cv', got {ridge!r}")
    vals, vecs, chol, means, mu = discriminant_eigen(z, y, num_classes, ridge)
    perms = [torch.randperm(y.numel(), generator=generator) for _ in range(permutations)]
    null_vals, null_coords = [], []
    for p in perms:
        eigen = discriminant_eigen(z, y[p], num_classes, ridge)
        null_vals.append(eigen[0])
        if calibration == "class":  # the relabelling's class coordinates, along its own axes
            null_coords.append(class_coordinates(*eigen[1:]).square())
    null = torch.stack(null_vals)
    null_mean = null.mean(0)
    null_q = torch.quantile(null, quantile, dim=0)
    null_class = torch.stack(null_coords).mean(0) if null_coords else None
    rank, shrink, class_shift = class_shifts(
        vals,
        vecs,
        chol,
        means,
        mu,
        null_mean,
        null_q,
        calibrate=calibrate,
        null_class=null_class,
        counts=torch.bincount(y, minlength=num_classes).to(z.dtype),
    )
    expanded = torch.zeros_like(vals, dtype=torch.bool)
    expansion = torch.ones_like(vals)
    if expand and calibrate:
        null_low = torch.quantile(null, 1.0 - quantile, dim=0)
        expanded, expansion, widen = expansion_shifts(
            vals, vecs, chol, means, mu, null_mean, null_low, skip=rank
        )
        class_shift = class_shift + widen
    shift = torch.zeros_like(x, memory_format=torch.contiguous_format)
    if rank > 0 or bool(expanded.any()):
        shift[labelled] = class_shift[y].to(x.dtype).to(x.device)
    # The population mean does not move (the class shifts are size-weighted deviations).
    return ErasureResult(
        shift,
        vals,
        null_mean,
        null_q,
        rank,
        shrink,
        class_shift,
        means - mu + class_shift,
        float(ridge),
        expanded,
        expansion,
    )


def check_calibration(calibration: object) -> Calibration:
    """``calibration`` if it names one of :data:`CALIBRATIONS`.

    Raises:
        ValueError: Anything else.
    """
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {list(CALIBRATIONS)}, got {calibration!r}")
    return calibration


def class_shifts(
    vals: Tensor,
    vecs: Tensor,
    chol: Tensor,
    means: Tensor,
    mu: Tensor,
    null_mean: Tensor,
    null_quantile: Tensor,
    *,
    calibrate: bool = True,
    null_class: Tensor | None = None,
    counts: Tensor | None = None,
) -> tuple[int, Tensor, Tensor]:
    """Steps 1-3 of the module docstring from the discriminant and its null.

    Args:
        vals, vecs, chol, means, mu: :func:`discriminant_eigen`'s (or
            :func:`discriminant_from_moments`') output for the real labels.
        null_mean: ``[K-1]`` mean same-rank eigenvalue under relabelled data.
        null_quantile: ``[K-1]`` the threshold a direction must beat.
        calibrate: ``False``: shrink by 1 (exact removal, for the ablation).
        null_class: ``[K, K-1]`` mean squared class coordinate under relabelled data
            (:func:`class_coordinates` of each relabelling, along its own discriminant): given,
            each class gets its own shrink per direction (``calibration="class"``).
        counts: ``[K]`` users per class; required with ``null_class`` (the per-class shifts
            are re-centred so their size-weighted mean, the population mean's move, is zero).

    Returns:
        ``(rank, shrink, class_shift [K, d])``: the leading run of eigenvalues above the
        threshold, the fraction removed (``[rank]`` per direction, or ``[K, rank]`` per class
        and direction with ``null_class``), and the shift every member of class ``k`` gets
        (``-`` its deviation's shrunk part along the chosen whitened coordinates).

    Raises:
        ValueError: ``null_class`` without ``counts``, or either of the wrong shape.
    """
    # The leading run of eigenvalues above the null (a direction below it ends the run: the
    # later ones are ranked by noise).
    rank = int((vals > null_quantile).to(torch.int64).cumprod(0).sum())
    num_classes = means.shape[0]
    if null_class is not None:
        if counts is None:
            raise ValueError("per-class calibration needs the class sizes (counts)")
        if null_class.shape != (num_classes, vals.shape[0]) or counts.shape != (num_classes,):
            raise ValueError(
                f"null_class must be [K={num_classes}, {vals.shape[0]}] and counts [K], got "
                f"{list(null_class.shape)} and {list(counts.shape)}"
            )
    if rank == 0:
        empty = (0,) if null_class is None or not calibrate else (num_classes, 0)
        return 0, torch.zeros(empty, dtype=vals.dtype), torch.zeros_like(means)
    v = vecs[:, :rank]
    measure = torch.linalg.solve_triangular(chol.T, v, upper=True)  # W = L^{-T} V
    move = chol @ v  # B = L V, W^T B = I
    coords = (means - mu) @ measure  # [K, rank]
    if not calibrate:
        shrink = torch.ones(rank, dtype=vals.dtype)
    elif null_class is None:
        shrink = 1.0 - (null_mean[:rank] / vals[:rank]).clamp(min=0.0, max=1.0).sqrt()
    else:
        # c_kj = 1 - sqrt(null / observed): a class whose deviation is at its noise level
        # (a few dozen users) keeps it, as the null would; an empty class has none to shrink.
        observed = coords.square()
        ratio = torch.where(
            observed > 0,
            null_class[:, :rank] / observed.clamp_min(torch.finfo(vals.dtype).tiny),
            1.0,
        )
        shrink = 1.0 - ratio.clamp(min=0.0, max=1.0).sqrt()
    removed = coords * shrink  # [K, rank] (shrink broadcasts per direction or is per class)
    if null_class is not None and calibrate:
        assert counts is not None
        weights = counts.to(removed.dtype) / counts.sum().clamp_min(1)
        removed = removed - weights @ removed  # the population mean does not move
    return rank, shrink, -(removed @ move.T)


def expansion_shifts(
    vals: Tensor,
    vecs: Tensor,
    chol: Tensor,
    means: Tensor,
    mu: Tensor,
    null_mean: Tensor,
    null_low: Tensor,
    *,
    skip: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Step 4 of the module docstring: expand over-equalised directions back to the null.

    Args:
        vals, vecs, chol, means, mu: :func:`discriminant_eigen`'s output for the real labels.
        null_mean: ``[K-1]`` mean same-rank eigenvalue under relabelled data.
        null_low: ``[K-1]`` the null's low quantile a direction must fall below.
        skip: The leading directions left alone (those :func:`class_shifts` shrinks).

    Returns:
        ``(expanded [K-1] bool, factor [K-1], class_shift [K, d])``: which directions were
        expanded, the factor ``min(sqrt(lambda_null / lambda), MAX_EXPANSION)`` (1 elsewhere),
        and each class's shift ``(factor - 1) t_kj B_j`` summed over them (size-weighted mean
        zero, as the class deviations are).
    """
    expanded = vals < null_low
    expanded[:skip] = False
    factor = torch.ones_like(vals)
    if not bool(expanded.any()):
        return expanded, factor, torch.zeros_like(means)
    ratio = null_mean[expanded] / vals[expanded].clamp_min(torch.finfo(vals.dtype).tiny)
    factor[expanded] = ratio.sqrt().clamp(min=1.0, max=MAX_EXPANSION)
    v = vecs[:, expanded]
    coords = (means - mu) @ torch.linalg.solve_triangular(chol.T, v, upper=True)
    return expanded, factor, (coords * (factor[expanded] - 1.0)) @ (chol @ v).T


def erase_attributes(
    x: Tensor,
    codes: Mapping[str, Tensor],
    num_classes: Mapping[str, int],
    **kwargs: object,
) -> tuple[Tensor, dict[str, ErasureResult]]:
    """Erase several attributes one after the other (each on the already-erased representation).

    Args:
        x: ``[N, d]`` representations.
        codes: Attribute -> ``[N]`` codes.
        num_classes: Attribute -> ``K``.
        **kwargs: Forwarded to :func:`calibrated_erasure`.

    Returns:
        ``(total shift [N, d], {attribute: its result})``.
    """
    if set(codes) != set(num_classes) or not codes:
        raise ValueError(
            f"codes and num_classes must name the same attributes, got {sorted(codes)}"
        )
    return chain_attributes(
        x,
        codes,
        lambda rep, name: calibrated_erasure(rep, codes[name], num_classes[name], **kwargs),  # type: ignore[arg-type]
    )


class _Shifted(Protocol):
    @property
    def shift(self) -> Tensor: ...


_R = TypeVar("_R", bound=_Shifted)


def chain_attributes(
    x: Tensor, codes: Mapping[str, Tensor], step: Callable[[Tensor, str], _R]
) -> tuple[Tensor, dict[str, _R]]:
    """Apply a per-attribute edit to each attribute in turn, each on the representation the
    previous ones left (an edit's ``shift`` is added before the next attribute's is planned).

    Args:
        x: ``[N, d]`` representations (not modified).
        codes: Attribute -> codes; only its keys and their order are used.
        step: ``(current representation, attribute) -> result`` with a ``shift [N, d]``.

    Returns:
        ``(total shift [N, d], {attribute: its result})``.
    """
    current = x.detach().clone()
    results: dict[str, _R] = {}
    for name in codes:
        result = step(current, name)
        current = current + result.shift
        results[name] = result
    return current - x.detach(), results
