"""The covariance term as a simulated held-out attacker: cross-fitted second-moment agreement.

Matching class covariances over the whole population (AttrCloak's Gaussian bound driven to 0)
writes each user's noise into the others' and inverts held-out users' second moments; holding
the bound's sum or its sorted spectrum at a permutation null leaves signal a learned direction
still finds (docs/attrcloak.md, "Second moments invert too" and "Per direction, and held-out
kernel statistics"). What an attacker exploits is *agreement between users it trained on and
users it is tested on, along directions it chose on the former*. This term measures exactly that
and holds it at 0 from both sides.

Every step the labelled users are split at random (stratified by class) into ``P`` parts. In
coordinates whitened by the pooled within-class covariance (not differentiated), each part ``p``
gives each class ``k`` a second-moment deviation ``D_k^p = Sigma_k^p - Sigma_w^p``. For every
ordered pair of parts ``(c, a)``, the ``r`` directions ``v`` with the largest ``|eigenvalue|`` of
``D_k^c`` are chosen on part ``c`` (no gradient) and the agreement

    g_k = mean_{(c, a)} sum_v (v' D_k^c v) (v' D_k^a v)

pairs part ``c``'s deviation along them with part ``a``'s. Because ``a`` played no part in
choosing ``v``, ``E[g_k] = 0`` when the attribute is absent, whatever the selection: positive
means the chosen directions carry the attribute into unseen users (leakage), negative means they
carry it reversed (inversion). The loss is ``sum_k w_k g_k^(1) g_k^(2)`` over two independent
splits: an unbiased estimate of ``sum_k w_k E[g_k]^2`` whose gradient is unbiased for that of
``E[g_k]^2``, so users carrying only label noise feel no pull on average (squaring one split's
``g`` would shrink their noise too, which is the over-equalisation that inverts).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["crossfit_agreement", "crossfit_covariance_loss", "within_class_whitener"]


def within_class_whitener(x: Tensor, codes: Tensor, num_classes: int, ridge: float) -> Tensor:
    """``W`` with ``W Sigma_w W' = I`` for the ridged pooled within-class covariance ``Sigma_w``
    (``ridge`` x its mean variance on the diagonal), computed without gradient.

    Args:
        x: ``[N, d]`` points.
        codes: ``[N]`` class codes (``-1`` = unknown, left out).
        num_classes: ``K``.
        ridge: Relative ridge (``> 0``).

    Returns:
        ``[d, d]`` lower-triangular inverse Cholesky factor.
    """
    with torch.no_grad():
        labelled = codes >= 0
        xs, c = x[labelled], codes[labelled]
        onehot = torch.nn.functional.one_hot(c, num_classes).to(xs.dtype)
        counts = onehot.sum(0).clamp_min(1.0)
        means = (onehot.T @ xs) / counts[:, None]
        centred = xs - means[c]
        cov = centred.T @ centred / max(len(xs), 1)
        scale = cov.diagonal().mean().clamp_min(torch.finfo(xs.dtype).tiny)
        eye = torch.eye(x.shape[1], dtype=xs.dtype, device=xs.device)
        chol = torch.linalg.cholesky(cov + ridge * scale * eye)
        return torch.linalg.solve_triangular(chol, eye, upper=False)


def _stratified_parts(codes: Tensor, num_classes: int, parts: int, gen: torch.Generator) -> Tensor:
    """Each labelled user's part in ``[0, parts)``, classes dealt round-robin after a shuffle."""
    part = torch.full_like(codes, -1)
    for k in range(num_classes):
        members = torch.nonzero(codes == k).flatten()
        if members.numel() == 0:
            continue
        shuffled = members[torch.randperm(members.numel(), generator=gen).to(members.device)]
        offset = int(torch.randint(parts, (1,), generator=gen))
        part[shuffled] = (torch.arange(members.numel(), device=codes.device) + offset) % parts
    return part


def _part_deviations(
    z: Tensor, codes: Tensor, part: Tensor, num_classes: int, parts: int
) -> Tensor:
    """``[P, K, d, d]``: each part's class covariances minus that part's pooled one."""
    labelled = codes >= 0
    group = (part * num_classes + codes)[labelled]
    zs = z[labelled]
    onehot = torch.nn.functional.one_hot(group, parts * num_classes).to(z.dtype)  # [n, G]
    counts = onehot.sum(0)  # [G]
    sums = onehot.T @ zs  # [G, d]
    outer = (onehot.T[:, :, None] * zs[None]).transpose(1, 2) @ zs  # [G, d, d]
    safe = counts.clamp_min(1.0)
    means = sums / safe[:, None]
    covs = outer / safe[:, None, None] - means[:, :, None] * means[:, None, :]
    covs = covs.reshape(parts, num_classes, *covs.shape[1:])
    weights = counts.reshape(parts, num_classes)
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
    pooled = (weights[:, :, None, None] * covs).sum(1, keepdim=True)
    return covs - pooled


def crossfit_agreement(
    z: Tensor,
    codes: Tensor,
    num_classes: int,
    generator: torch.Generator,
    *,
    directions: int = 4,
    parts: int = 3,
) -> Tensor:
    """One split's ``g_k`` for every class (see the module docstring).

    Args:
        z: ``[N, d]`` whitened, centred representations (differentiable).
        codes: ``[N]`` class codes, ``-1`` = unknown.
        num_classes: ``K``.
        generator: Draws the split (seeded by the caller: the same on every rank).
        directions: ``r``, directions chosen per class and part.
        parts: ``P >= 2``.

    Returns:
        ``[K]`` agreements (0 for classes with fewer than ``P`` labelled users).
    """
    part = _stratified_parts(codes, num_classes, parts, generator)
    dev = _part_deviations(z, codes, part, num_classes, parts)  # [P, K, d, d]
    r = min(directions, z.shape[1])
    total = torch.zeros(num_classes, dtype=z.dtype, device=z.device)
    for c in range(parts):
        with torch.no_grad():
            values, vectors = torch.linalg.eigh(dev[c])
            order = values.abs().argsort(dim=-1, descending=True)[:, :r]  # [K, r]
            chosen = torch.gather(vectors, 2, order[:, None, :].expand(-1, vectors.shape[1], -1))
            selected = torch.gather(values, 1, order)  # [K, r]: part c's own deviation
        for a in range(parts):
            if a != c:
                tested = torch.einsum("kdr,kde,ker->kr", chosen, dev[a], chosen)
                total = total + (selected * tested).sum(-1)
    sizes = torch.bincount(codes[codes >= 0], minlength=num_classes)
    return torch.where(sizes >= parts, total / (parts * (parts - 1)), torch.zeros_like(total))


def crossfit_covariance_loss(
    embeddings: Tensor,
    codes: Tensor,
    num_classes: int,
    generator: torch.Generator,
    *,
    directions: int = 4,
    parts: int = 3,
    splits: int = 1,
    ridge: float = 0.05,
    dtype: torch.dtype | None = torch.float64,
) -> tuple[Tensor, Tensor]:
    """``sum_k w_k g_k^(1) g_k^(2)`` over two independent sets of splits (module docstring).

    Args:
        embeddings: ``[N, d]`` representations (differentiable).
        codes: ``[N]`` class codes, ``-1`` = unknown.
        num_classes: ``K``.
        generator: Draws both splits.
        directions: Directions chosen per class and part.
        parts: Parts per split (``>= 2``).
        splits: Splits averaged into each of the two factors. The gradient is unbiased for
            any number, but its noise falls as ``1 / sqrt(splits)``, and a momentum optimiser
            turns zero-mean noise into full-size steps that wander the users about (one split
            of halves with 16 directions: -28% NDCG@10 on ML-100K).
        ridge: Relative ridge of the whitening.
        dtype: Computation dtype (``None``: the embeddings').

    Returns:
        ``(loss, g)``: the scalar loss in the embeddings' dtype, and the first split's ``[K]``
        agreements for logging.

    Raises:
        ValueError: Bad ``directions`` / ``parts`` / ``ridge``, non-finite embeddings, or codes
            of another length or outside ``[-1, K)``.
    """
    if directions < 1 or parts < 2 or splits < 1 or ridge <= 0:
        raise ValueError(
            f"need directions >= 1, parts >= 2, splits >= 1 and ridge > 0, got {directions}, "
            f"{parts}, {splits}, {ridge}"
        )
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError("the embeddings contain NaN or inf")
    if codes.shape != embeddings.shape[:1] or bool(((codes < -1) | (codes >= num_classes)).any()):
        raise ValueError(
            f"codes must be [N] = [{embeddings.shape[0]}] with values -1 or in [0, {num_classes})"
        )
    work = dtype or torch.promote_types(embeddings.dtype, torch.float32)
    x = embeddings.to(work)
    whitener = within_class_whitener(x, codes, num_classes, ridge)
    z = (x - x[codes >= 0].mean(0).detach()) @ whitener.T
    draws = [
        crossfit_agreement(z, codes, num_classes, generator, directions=directions, parts=parts)
        for _ in range(2 * splits)
    ]
    first = torch.stack(draws[:splits]).mean(0)
    second = torch.stack(draws[splits:]).mean(0)
    counts = torch.bincount(codes[codes >= 0], minlength=num_classes).to(work)
    weights = counts / counts.sum().clamp_min(1.0)
    loss = (weights * first * second).sum()
    return loss.to(embeddings.dtype), first.detach()
