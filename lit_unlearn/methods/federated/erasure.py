"""Federated null-calibrated erasure: remove an attribute's linear signal from private embeddings.

Adversarial training (FedAU2's GRL) fools the *current* adversary head; it does not remove
what another attacker trained afterwards finds (docs/fedau2.md: on ML-100K the outside MLP's
balanced accuracy stays 0.62 after FedAU2). This step removes the signal itself, once, after
the last round, with the null calibration of issue 23 so held-out users are neither leaked to
nor inverted (:mod:`lit_unlearn.unlearning.calibrated`, steps 1-3), in a protocol a
federated deployment can run:

1. **Statistics by secure aggregation.** Each labelled client ``u`` computes its own
   representation ``z_u`` and contributes ``onehot(y_u)`` (a count), ``onehot(y_u) z_u^T`` (a
   class sum) and ``z_u z_u^T``; the server receives only the sums over clients (secure
   aggregation, Bonawitz et al. 2017), never a row or a label: ``n_k``, ``sum_k``, ``outer``.
   :func:`~lit_unlearn.unlearning.calibrated.discriminant_from_moments` gives the same
   discriminant as the rows would.
2. **The null without the labels.** A permutation of labels needs them; instead the server
   broadcasts the class proportions ``n_k / n`` and every client draws ``R`` pseudo-labels from
   them with its own generator and contributes the same sums under each (``outer`` does not
   depend on the labels). The i.i.d. relabelling is the permutation null up to the class sizes
   varying by ``O(sqrt(n))``.
3. **The shift, applied on the clients.** The server broadcasts the ``[K, d]`` class shifts
   (shrunk deviations along the significant whitened directions) and each client adds its own
   class's to its private representation. The server learns class-level aggregates, which a
   released model's embeddings reveal anyway.

The in-process engine holds every client's state, so it evaluates the sums in one batched
expression; :func:`client_statistics` is the per-client contribution (tests check the sum of
contributions equals the batch). It is linear: what class *covariances* carry stays for
non-linear attackers (docs/fedau2.md measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lit_unlearn.models.base import Recommender
from lit_unlearn.models.fedrap import FedRAP
from lit_unlearn.unlearning.calibrated import (
    class_shifts,
    discriminant_from_moments,
    fold_moments,
    labelled_rows,
    select_ridge,
)
from lit_unlearn.validation import check_count, check_non_negative, check_probability

__all__ = [
    "ClassStatistics",
    "ErasurePlan",
    "ErasureSums",
    "FederatedErasure",
    "apply_user_shift",
    "client_statistics",
]


#: Offset of the clients' fold draws from their pseudo-label draws (separate streams).
_FOLD_STREAM = 1 << 40


@dataclass(frozen=True)
class ClassStatistics:
    """The securely aggregated sums of step 1 (float64).

    Attributes:
        counts: ``[K]`` users per class.
        sums: ``[K, d]`` per-class sums of the representations.
        outer: ``[d, d]`` sum of the users' outer products.
    """

    counts: Tensor
    sums: Tensor
    outer: Tensor

    def __add__(self, other: ClassStatistics) -> ClassStatistics:
        return ClassStatistics(
            self.counts + other.counts, self.sums + other.sums, self.outer + other.outer
        )


def client_statistics(z: Tensor, label: int, num_classes: int) -> ClassStatistics:
    """One client's contribution: its count, class sum and outer product (float64).

    Args:
        z: ``[d]`` the client's representation.
        label: Its class code in ``[0, K)``.
        num_classes: ``K``.
    """
    z = z.detach().to(torch.float64)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    counts[label] = 1.0
    return ClassStatistics(counts, counts[:, None] * z[None, :], torch.outer(z, z))


def _batch_statistics(z: Tensor, onehot: Tensor) -> ClassStatistics:
    """The sum of :func:`client_statistics` over the rows of ``z`` (float64)."""
    return ClassStatistics(onehot.sum(0), onehot.T @ z, z.T @ z)


@dataclass(frozen=True)
class ErasureSums:
    """Everything the clients' secure sum delivers to the server (float64).

    Attributes:
        real: The statistics under the true labels (step 1).
        null_counts: ``[R, K]`` class counts under each pseudo-label replicate (step 2).
        null_sums: ``[R, K, d]`` class sums under each replicate (the outer products do not
            depend on the labels: ``real.outer`` serves every replicate).
        folds: With ``ridge="cv"``: the same statistics per fold (counts ``[F, K]``, sums
            ``[F, K, d]``, outer ``[F, d, d]``), each client in the fold it drew.
    """

    real: ClassStatistics
    null_counts: Tensor
    null_sums: Tensor
    folds: ClassStatistics | None = None

    def __add__(self, other: ErasureSums) -> ErasureSums:
        if (self.folds is None) != (other.folds is None):
            raise ValueError("cannot add sums with per-fold statistics to sums without")
        return ErasureSums(
            self.real + other.real,
            self.null_counts + other.null_counts,
            self.null_sums + other.null_sums,
            None if self.folds is None or other.folds is None else self.folds + other.folds,
        )


@dataclass(frozen=True)
class ErasurePlan:
    """What the server computed and broadcast for one attribute.

    Attributes:
        class_shift: ``[K, d]`` the shift each class's members add to their representation.
        rank: Directions erased.
        shrink: ``[rank]`` fraction of each class deviation removed along each direction.
        eigenvalues: ``[K-1]`` the data's discriminant eigenvalues.
        null_mean: ``[K-1]`` the pseudo-label null's mean same-rank eigenvalue.
        null_quantile: ``[K-1]`` its ``quantile``.
        counts: ``[K]`` labelled users per class.
        ridge: The relative ridge used (chosen by cross-validation with ``ridge="cv"``).
        ridge_scores: With ``ridge="cv"``: the held-out score of each grid ridge.
    """

    class_shift: Tensor
    rank: int
    shrink: Tensor
    eigenvalues: Tensor
    null_mean: Tensor
    null_quantile: Tensor
    counts: Tensor
    ridge: float = 1e-3
    ridge_scores: Tensor | None = None


class FederatedErasure:
    """Null-calibrated erasure of one attribute after the last round (module docstring).

    Args:
        replicates: Pseudo-label draws behind the null eigenvalues (``R``).
        quantile: A direction is erased when its eigenvalue beats this quantile of the null's.
        ridge: Relative ridge of the within-class covariance, or ``"cv"``: chosen from
            :data:`~lit_unlearn.unlearning.calibrated.RIDGE_GRID` by ``folds``-fold
            cross-validation on per-fold sums (:func:`~lit_unlearn.unlearning.calibrated.
            select_ridge`; each client draws its own fold). ``"cv"`` matters when the
            representation is wide for the class sizes (FedVAE's 200 dimensions on 546 users).
        calibrate: ``False`` removes the chosen directions' class deviations entirely (exact
            removal, which inverts held-out users: the ablation).
        seed: Seed of the clients' pseudo-label generators (client ``u`` seeds its own with
            ``(seed, u)``).
        folds: Folds of ``ridge="cv"`` (>= 2).

    Raises:
        ValueError: An argument out of range.
    """

    def __init__(
        self,
        replicates: int = 30,
        quantile: float = 0.95,
        ridge: float | Literal["cv"] = 1e-3,
        calibrate: bool = True,
        seed: int = 0,
        folds: int = 5,
    ) -> None:
        self.replicates = check_count("replicates", replicates)
        self.quantile = check_probability("quantile", quantile, allow_one=False)
        if not self.quantile > 0.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        self.ridge: float | Literal["cv"] = (
            "cv" if ridge == "cv" else check_non_negative("ridge", ridge)
        )
        self.folds = check_count("folds", folds)
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {folds}")
        self.calibrate = bool(calibrate)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed

    def client_draws(self, user: int, proportions: Tensor) -> Tensor:
        """``[R]`` client ``user``'s pseudo-labels, drawn with its own generator.

        They depend only on ``(seed, user)`` and the broadcast proportions, so a deployment's
        client draws exactly what the in-process engine draws for it.
        """
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(user))
        return torch.multinomial(proportions, self.replicates, True, generator=g)

    def client_fold(self, user: int) -> int:
        """The cross-validation fold client ``user`` draws for ``ridge="cv"`` (its own stream)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(user) + _FOLD_STREAM)
        return int(torch.randint(self.folds, (1,), generator=g))

    def pseudo_labels(self, users: Tensor, proportions: Tensor) -> Tensor:
        """``[N, R]`` pseudo-labels, row ``i`` drawn by client ``users[i]``
        (:meth:`client_draws`)."""
        return torch.stack([self.client_draws(int(u), proportions) for u in users.tolist()])

    def contribution(
        self, z: Tensor, users: Tensor, labels: Tensor, proportions: Tensor, num_classes: int
    ) -> ErasureSums:
        """The sums that clients ``users`` (labels ``labels``, representations ``z``) add.

        One client's (``N = 1``) is what it sends; the sum over clients equals the batch's
        (the sums are linear in the rows).

        Args:
            z: ``[N, d]`` the clients' representations.
            users: ``[N]`` their user ids (seed their pseudo-label generators).
            labels: ``[N]`` their class codes, each in ``[0, K)``.
            proportions: ``[K]`` the broadcast class proportions (step 2).
            num_classes: ``K``.

        Raises:
            ValueError: Shapes that do not match, a label outside ``[0, K)``, or proportions
                that are not a distribution over ``K`` classes.
        """
        if z.ndim != 2 or users.shape != (z.shape[0],) or labels.shape != (z.shape[0],):
            raise ValueError(
                f"z [N, d], users [N] and labels [N] expected, got {list(z.shape)}, "
                f"{list(users.shape)}, {list(labels.shape)}"
            )
        if labels.numel() and not (int(labels.min()) >= 0 and int(labels.max()) < num_classes):
            raise ValueError(f"labels must be in [0, {num_classes}), got {labels.tolist()}")
        proportions = proportions.detach().to("cpu", torch.float64)
        if proportions.shape != (num_classes,) or not bool(
            torch.isfinite(proportions).all() and (proportions >= 0).all() and proportions.sum() > 0
        ):
            raise ValueError(f"proportions must be [{num_classes}] weights, got {proportions}")
        rows = z.detach().to("cpu", torch.float64)
        real = _batch_statistics(rows, nn.functional.one_hot(labels.cpu(), num_classes).double())
        if users.numel():
            fake = nn.functional.one_hot(self.pseudo_labels(users, proportions), num_classes)
        else:
            fake = torch.zeros(0, self.replicates, num_classes, dtype=torch.long)
        fake_d = fake.double().permute(1, 0, 2)  # [R, N, K]
        folds = None
        if self.ridge == "cv":
            fold = torch.tensor([self.client_fold(int(u)) for u in users.tolist()])
            moments = fold_moments(rows, labels.cpu(), num_classes, fold.long(), self.folds)
            folds = ClassStatistics(*moments)
        return ErasureSums(real, fake_d.sum(1), fake_d.transpose(1, 2) @ rows, folds)

    def plan_from_sums(self, sums: ErasureSums) -> ErasurePlan:
        """The server's side, from the aggregated sums only: class shifts (steps 1-3).

        Raises:
            ValueError: Sums of another replicate count, fewer than two classes with at least
                two labelled clients, or non-finite sums.
        """
        real = sums.real
        if sums.null_counts.shape[0] != self.replicates:
            raise ValueError(
                f"the sums hold {sums.null_counts.shape[0]} pseudo-label replicates, this "
                f"erasure draws {self.replicates}"
            )
        if int((real.counts >= 2).sum()) < 2:
            raise ValueError(
                "need two classes with >= 2 labelled clients, got class sizes "
                f"{real.counts.long().tolist()}"
            )
        if not all(bool(torch.isfinite(t).all()) for t in (real.sums, real.outer, sums.null_sums)):
            raise ValueError("the aggregated sums hold NaN or inf")
        scores = None
        if self.ridge == "cv":
            if sums.folds is None or sums.folds.counts.shape[0] != self.folds:
                raise ValueError(
                    f"ridge='cv' needs the clients' sums over {self.folds} folds; these hold "
                    f"{'none' if sums.folds is None else sums.folds.counts.shape[0]}"
                )
            ridge, scores = select_ridge(sums.folds.counts, sums.folds.sums, sums.folds.outer)
        else:
            ridge = self.ridge
        vals, vecs, chol, means, mu = discriminant_from_moments(
            real.counts, real.sums, real.outer, ridge
        )
        null = []
        for r in range(self.replicates):
            eigen = discriminant_from_moments(
                sums.null_counts[r], sums.null_sums[r], real.outer, ridge
            )
            null.append(eigen[0])
        null_t = torch.stack(null)
        null_mean = null_t.mean(0)
        null_q = torch.quantile(null_t, self.quantile, dim=0)
        rank, shrink, shift = class_shifts(
            vals, vecs, chol, means, mu, null_mean, null_q, calibrate=self.calibrate
        )
        return ErasurePlan(shift, rank, shrink, vals, null_mean, null_q, real.counts, ridge, scores)

    def plan(self, representation: Tensor, codes: Tensor, num_classes: int) -> ErasurePlan:
        """Steps 1-3 over every client at once (the in-process engine's view).

        Args:
            representation: ``[U, d]`` every client's representation (each row stays with its
                client in a deployment; only the sums of :meth:`contribution` are formed).
            codes: ``[U]`` class codes, ``-1`` = the client has no label (contributes nothing,
                is not moved).
            num_classes: ``K``.

        Raises:
            ValueError: Malformed input, NaN/inf representations, or fewer than two classes
                with at least two labelled clients.
        """
        users, y, z = labelled_rows(representation, codes, num_classes)
        counts = torch.bincount(y, minlength=num_classes).double()
        sums = self.contribution(z, users, y, counts / counts.sum(), num_classes)
        return self.plan_from_sums(sums)

    def shifts(self, plan: ErasurePlan, codes: Tensor) -> Tensor:
        """``[U, d]`` each client's own class shift (zero for clients without a label)."""
        out = torch.zeros(codes.numel(), plan.class_shift.shape[1], dtype=torch.float64)
        known = codes >= 0
        out[known] = plan.class_shift[codes[known].cpu()]
        return out


def apply_user_shift(model: Recommender, shift: Tensor) -> None:
    """Add ``shift [U, d]`` to every user's representation, on the clients' private state.

    A table backbone (NeuMF: ``[GMF row, MLP row]``) gets the shift split over its private
    tables in the order its representation concatenates them; any other backbone (FedVAE: the
    encoder's mean) gets a per-user offset (:meth:`Recommender.enable_user_shift`), a row each
    client keeps.

    Raises:
        ValueError: FedRAP (its audited residual tables do not move), ``shift`` is not
            ``[num_users, representation_dim]``, or a table backbone's private tables do not
            add up to the representation.
    """
    if isinstance(model, FedRAP):
        raise ValueError(
            "FedRAP's audited representation includes its residual tables, which no per-user "
            "shift of the user embedding moves: erasure supports FedNCF and FedVAE"
        )
    expected = (model.num_users, model.representation_dim)
    if tuple(shift.shape) != expected:
        raise ValueError(f"shift must be {list(expected)}, got {list(shift.shape)}")
    with torch.no_grad():
        if not model.representation_is_table:
            offset = model.enable_user_shift()
            offset.add_(shift.to(offset.device, offset.dtype))
            return
        tables = [p for p in model.user_parameters() if p.shape[0] == model.num_users]
        widths = [int(p.shape[1]) for p in tables]
        if sum(widths) != shift.shape[1]:
            raise ValueError(
                f"{type(model).__name__}'s user tables have widths {widths}, the representation "
                f"{shift.shape[1]}"
            )
        for table, part in zip(tables, shift.split(widths, dim=1), strict=True):
            table.add_(part.to(table.device, table.dtype))
