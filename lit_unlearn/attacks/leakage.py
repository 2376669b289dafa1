"""Leakage from both sides of chance: flip-aware AUC, two protocols, a permutation null.

Balanced accuracy alone hides an *inverted* representation. After attribute unlearning that
matches class statistics over the whole population, the class means of any held-out part of the
users move opposite to those of the rest, so an attacker trained on one part anti-learns on the
other: its balanced accuracy falls *below* chance and looks private, while flipping its
predictions recovers the attribute (issue 23). This module measures what such an attacker
really knows. Everything is plain numpy in, dataclasses out; no Lightning.

**Flip-aware leakage** (:func:`leakage_scores`), from the attacker's scores on held-out users:

* binary attribute: ``2 |AUC - 0.5|`` with AUC the ROC-AUC of the positive-class column;
* ``C > 2`` classes: the mean over the classes present in the labels of the one-vs-rest
  ``2 |AUC_c - 0.5|``. The absolute value is taken *per class*, before averaging: a macro AUC
  (:func:`lit_unlearn.attacks.scores.roc_auc`, reported as the signed ``auc``) can sit at 0.5
  while one class is ranked perfectly and another perfectly inverted, which is leakage 1 on
  both. (:func:`lit_unlearn.attacks.scores.leakage` of :class:`AttackResult` is
  ``2 |macro AUC - 0.5|``, which equals this for binary attributes and is at most this
  otherwise.)

0 means chance from both sides, 1 a perfect ranking, right way round or exactly inverted. The
signed AUC is reported next to it, so below-chance attackers are visible.

**Protocols** (:func:`run_protocol`):

* ``shadow``: the package's audit protocol. The attacker trains on the labelled shadow users, a
  stratified ``val_fraction`` of them held out for validation
  (:func:`~lit_unlearn.attacks.audit.shadow_split`), and is scored on the labelled non-shadow
  users.
* ``kfold``: stratified k-fold cross-validation over all labelled users (default 5 folds,
  seeded shuffle). In each fold the attacker trains on the other folds, a stratified
  ``val_fraction`` of them held out for validation (the same ``shadow_split``), and predicts the
  fold; the out-of-fold predictions of all users are pooled and scored once. Every labelled
  user is predicted exactly once, by an attacker that never saw it. Each class needs at least
  ``n_folds`` users.

**Method-aware attacker** (:func:`flip_rule`, :func:`apply_flips`, :class:`MethodAwareAttacker`):
an attacker that knows the unlearning method may invert. It scores its own validation users; for
every class whose validation AUC is below 0.5 it reverses that class's score ``p_c -> 1 - p_c``,
then renormalises each row to sum 1 (a row whose scores all become 0 is set uniform). For a
binary attribute both columns' AUCs are equal, both flip, and the rule is ``p -> 1 - p`` (the
predicted class swaps). Its predictions (argmax) give ``method_aware_balanced_accuracy``. A
class with no validation user, or whose AUC is undefined or at least 0.5, is left as it is.

**Permutation null** (:func:`measure_leakage`): the same attacker and protocol rerun on
``n_permutations`` seeded permutations of the labels among the labelled users (the features and
the shadow set stay). Their leakage and balanced accuracy give the noise floor: the null mean
and its 95th percentile (linear interpolation). An attribute is "at chance" when its leakage is
within the null's 95th percentile; with 20 permutations this is a rough 5% test.

Command line, for representations exported by ``lit-unlearn audit`` or by anyone else (see
:mod:`lit_unlearn.attacks.export` for the file layout)::

    python -m lit_unlearn.attacks.leakage --representations reps.npz --attributes attrs.csv \\
        --attackers logreg mlp xgboost knn --protocols shadow kfold --permutations 20 --out dir
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from torch import Tensor

from lit_unlearn.attacks.audit import ATTACKERS, make_attacker, shadow_split
from lit_unlearn.attacks.base import Attacker, as_features, as_labels
from lit_unlearn.attacks.scores import balanced_accuracy, binary_auc, chance_level

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_ATTACKERS",
    "PROTOCOLS",
    "LeakageResult",
    "LeakageScores",
    "MethodAwareAttacker",
    "Predictions",
    "apply_flips",
    "audit_leakage",
    "check_folds",
    "flip_rule",
    "leakage_frame",
    "leakage_markdown",
    "leakage_scores",
    "main",
    "measure_leakage",
    "run_protocol",
    "write_leakage_tables",
]

#: The protocols :func:`run_protocol` knows.
PROTOCOLS: tuple[str, ...] = ("shadow", "kfold")
#: The attackers of the command line by default: one linear, one neural, trees, neighbours.
DEFAULT_ATTACKERS: tuple[str, ...] = ("logreg", "mlp", "xgboost", "knn")


# ------------------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class LeakageScores:
    """AUC-based scores of one set of predictions.

    Attributes:
        auc: Signed AUC: binary AUC of the positive-class column, or the one-vs-rest macro AUC
            over the classes present (``nan`` when the labels hold one class). Below 0.5 the
            attacker ranks the wrong way round.
        leakage: Flip-aware leakage (module docstring), in ``[0, 1]``; ``nan`` with ``auc``.
        class_aucs: One-vs-rest AUC per class column (``nan`` for a class absent from the
            labels); for a binary attribute the AUCs of columns 0 and 1.
    """

    auc: float
    leakage: float
    class_aucs: tuple[float, ...]


def leakage_scores(y_true: npt.ArrayLike, proba: npt.ArrayLike) -> LeakageScores:
    """Signed AUC and flip-aware leakage of class scores on labelled users.

    Args:
        y_true: Integer labels ``[n]`` in ``[0, C)``.
        proba: Scores ``[n, C]`` (probabilities or any per-class scores, higher = more likely),
            ``C >= 2``.

    Returns:
        The scores; binary (``C == 2``): ``leakage = 2 |AUC - 0.5|``; multi-class: the mean over
        the classes present in ``y_true`` of ``2 |AUC_c - 0.5|``.

    Raises:
        ValueError: Misaligned shapes, fewer than two columns, labels out of range, no users.
    """
    t, p = _checked(y_true, proba)
    class_aucs = np.array([binary_auc(t == c, p[:, c]) for c in range(p.shape[1])])
    if p.shape[1] == 2:
        auc = binary_auc(t == 1, p[:, 1])
        lk = abs(auc - 0.5) * 2.0
    else:
        present = np.unique(t)
        if present.size < 2:
            auc = lk = float("nan")
        else:
            aucs = class_aucs[present]
            auc = float(np.mean(aucs))
            lk = float(np.mean(np.abs(aucs - 0.5) * 2.0))
    per_class = tuple(float(a) for a in class_aucs)
    return LeakageScores(auc=float(auc), leakage=float(lk), class_aucs=per_class)


def _checked(y_true: npt.ArrayLike, proba: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must be [n, C] with C >= 2, got shape {p.shape}")
    t = as_labels(np.asarray(y_true), p.shape[1], "y_true")
    if t.size != p.shape[0]:
        raise ValueError(f"{t.size} labels for {p.shape[0]} rows of proba")
    if t.size == 0:
        raise ValueError("cannot score an empty set of users")
    return t, p


# ------------------------------------------------------------------------ method-aware flips


def flip_rule(y_val: npt.ArrayLike, proba_val: npt.ArrayLike) -> np.ndarray:
    """Which class scores a method-aware attacker reverses, decided on its validation users.

    Args:
        y_val: Validation labels ``[n_val]`` (may be empty: nothing flips).
        proba_val: The attacker's scores on them ``[n_val, C]``.

    Returns:
        ``bool[C]``: binary, both ``True`` iff the positive-class AUC is below 0.5; multi-class,
        ``True`` for every class whose one-vs-rest AUC is below 0.5 (``nan`` AUCs never flip).
    """
    p = np.asarray(proba_val, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba_val must be [n, C] with C >= 2, got shape {p.shape}")
    if p.shape[0] == 0:
        return np.zeros(p.shape[1], dtype=bool)
    scores = leakage_scores(y_val, p)
    if p.shape[1] == 2:
        return np.full(2, scores.auc < 0.5)  # nan < 0.5 is False
    return np.array([a < 0.5 for a in scores.class_aucs], dtype=bool)


def apply_flips(proba: npt.ArrayLike, flips: npt.ArrayLike) -> np.ndarray:
    """Reverse the flipped classes' scores (``p_c -> 1 - p_c``) and renormalise each row.

    Args:
        proba: Probabilities ``[n, C]`` in ``[0, 1]``.
        flips: ``bool[C]`` from :func:`flip_rule`.

    Returns:
        ``float64[n, C]`` rows summing to 1 (uniform where every score became 0). Nothing
        flipped returns a copy of ``proba``; binary with both flipped swaps the columns.
    """
    p = np.asarray(proba, dtype=np.float64)
    f = np.asarray(flips, dtype=bool)
    if p.ndim != 2 or f.shape != (p.shape[1],):
        raise ValueError(f"flips {f.shape} must have one entry per column of proba {p.shape}")
    if not f.any():
        return p.copy()
    s = np.where(f, 1.0 - p, p)
    total = s.sum(axis=1, keepdims=True)
    uniform = np.full_like(s, 1.0 / s.shape[1])
    return np.where(total > 0, s / np.where(total > 0, total, 1.0), uniform)


class MethodAwareAttacker(Attacker):
    """Wraps an attacker and flips the class scores that rank its validation users inverted.

    ``fit`` trains the wrapped attacker on the training users, scores the validation users and
    keeps :func:`flip_rule`'s decision; ``predict_proba`` returns the wrapped attacker's
    probabilities through :func:`apply_flips`. Without validation users nothing flips. Inside
    :func:`run_protocol` the same rule is applied to the plain attacker's fit (one fit serves
    both), which is what this class does apart from standardising the features twice.

    Args:
        attacker: Any attacker (refit from scratch on every :meth:`fit`).

    Attributes:
        flips_: ``bool[C]`` classes whose scores are reversed.
    """

    name = "method_aware"

    def __init__(self, attacker: Attacker) -> None:
        super().__init__()
        self.attacker = attacker
        self.flips_: np.ndarray | None = None

    def _fit(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, num_classes: int
    ) -> None:
        self.attacker.fit(X, y, X_val, y_val, num_classes)
        if y_val.size:
            self.flips_ = flip_rule(y_val, self.attacker.predict_proba(X_val))
        else:
            self.flips_ = np.zeros(num_classes, dtype=bool)

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        assert self.flips_ is not None
        return apply_flips(self.attacker.predict_proba(X), self.flips_)


# -------------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Predictions:
    """Held-out predictions of one attacker under one protocol.

    Attributes:
        users: Row indices of the scored users (sorted for ``shadow``; fold by fold for
            ``kfold``, each labelled user exactly once per repeat).
        y_true: Their labels.
        proba: The attacker's probabilities ``[len(users), C]``.
        method_aware_proba: The same after the method-aware flips decided on validation users
            (per fold for ``kfold``).
        n_fits: Attacker fits it took (1 for ``shadow``, ``n_folds x repeats`` for ``kfold``).
    """

    users: np.ndarray
    y_true: np.ndarray
    proba: np.ndarray
    method_aware_proba: np.ndarray
    n_fits: int


def run_protocol(
    attacker: Attacker,
    X: npt.ArrayLike | Tensor,
    codes: npt.ArrayLike | Tensor,
    num_classes: int,
    protocol: str = "kfold",
    shadow: npt.ArrayLike | Tensor | None = None,
    n_folds: int = 5,
    val_fraction: float = 0.2,
    seed: int = 0,
    repeats: int = 1,
) -> Predictions:
    """Predict held-out users' attribute with ``attacker`` under ``protocol``.

    Args:
        attacker: Any attacker (refit from scratch for every fold).
        X: Representations ``[num_users, d]``.
        codes: Codes ``[num_users]`` in ``[0, num_classes)``, ``-1`` unknown (not used).
        num_classes: Classes of the attribute.
        protocol: ``"shadow"`` or ``"kfold"`` (module docstring).
        shadow: ``bool[num_users]`` shadow mask; required by ``"shadow"``, unused by ``"kfold"``.
        n_folds: Folds of ``"kfold"`` (``>= 2``).
        val_fraction: Share of the attacker's users held out (per class) for validation: early
            stopping, model selection and the method-aware flips.
        seed: Seed of the folds and of the validation draw.
        repeats: ``"kfold"`` only: run the k-fold this many times with different fold draws
            (seeds ``seed``, ``seed + 1``, ...) and pool every repeat's predictions, so each
            user is scored ``repeats`` times. The fold draw alone moves a balanced accuracy by
            0.01-0.02 on ML-100K (docs/attrcloak.md); pooling averages it out.

    Returns:
        The pooled held-out predictions.

    Raises:
        ValueError: Unknown protocol, misaligned inputs, non-finite ``X``, a missing shadow
            mask, fewer than two classes to learn, no user to test, or (``kfold``) a class with
            fewer users than folds.
    """
    feats = as_features(X)
    raw = codes.detach().cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    y = raw.astype(np.int64)
    if y.shape != (feats.shape[0],):
        raise ValueError(f"codes {y.shape} must be ({feats.shape[0]},), one per row of X")
    if y.size and y.max() >= num_classes:
        raise ValueError(f"code {int(y.max())} >= num_classes {num_classes}")
    if protocol == "shadow":
        if shadow is None:
            raise ValueError("the shadow protocol needs a shadow mask (bool[num_users])")
        train, val, test = shadow_split(y, shadow, val_fraction, seed)
        if np.unique(y[np.concatenate([train, val])]).size < 2:
            raise ValueError(
                "the labelled shadow users hold fewer than 2 classes; an attacker needs 2"
            )
        if test.size == 0:
            raise ValueError("no labelled non-shadow user to test on")
        proba, flipped = _fit_predict(attacker, feats, y, train, val, test, num_classes)
        return Predictions(test, y[test], proba, flipped, n_fits=1)
    if protocol == "kfold":
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
        runs = [
            _kfold(attacker, feats, y, num_classes, n_folds, val_fraction, seed + r)
            for r in range(repeats)
        ]
        if repeats == 1:
            return runs[0]
        return Predictions(
            np.concatenate([p.users for p in runs]),
            np.concatenate([p.y_true for p in runs]),
            np.concatenate([p.proba for p in runs]),
            np.concatenate([p.method_aware_proba for p in runs]),
            n_fits=sum(p.n_fits for p in runs),
        )
    raise ValueError(f"unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}")


def check_folds(
    codes: npt.ArrayLike, n_folds: int, class_names: Sequence[str] | None = None
) -> None:
    """Raise if stratified ``n_folds``-fold cross-validation cannot hold every class in each fold.

    Args:
        codes: Codes ``[n]``, ``-1`` unknown.
        n_folds: Folds (``>= 2``).
        class_names: Names for the message (code ``k`` is ``class_names[k]``).

    Raises:
        ValueError: ``n_folds < 2``, fewer than two classes, or a class with fewer labelled
            users than folds.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, int) or n_folds < 2:
        raise ValueError(f"n_folds must be an int >= 2, got {n_folds!r}")
    y = np.asarray(codes).astype(np.int64)
    counts = np.bincount(y[y >= 0]) if (y >= 0).any() else np.zeros(0, dtype=np.int64)
    present = np.flatnonzero(counts)
    if present.size < 2:
        raise ValueError(f"the labelled users hold {present.size} class(es); at least 2 needed")
    small = [int(c) for c in present if counts[c] < n_folds]
    if small:
        named = [
            f"{class_names[c] if class_names is not None else c!r} ({counts[c]} users)"
            for c in small
        ]
        raise ValueError(
            f"{len(small)} class(es) have fewer users than the {n_folds} folds: "
            f"{', '.join(named)}; use fewer folds or merge the small classes"
        )


def _kfold(
    attacker: Attacker,
    feats: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    n_folds: int,
    val_fraction: float,
    seed: int,
) -> Predictions:
    from sklearn.model_selection import StratifiedKFold

    check_folds(y, n_folds)
    labelled = np.flatnonzero(y >= 0)
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    users, probas, flipped = [], [], []
    for _, held in folds.split(labelled, y[labelled]):
        rest = np.zeros(y.size, dtype=bool)
        rest[labelled] = True
        rest[labelled[held]] = False
        # The fold's other users play the shadow set: the same inner split as the shadow
        # protocol, so its test part is exactly this fold.
        train, val, test = shadow_split(y, rest, val_fraction, seed)
        proba, flip = _fit_predict(attacker, feats, y, train, val, test, num_classes)
        users.append(test)
        probas.append(proba)
        flipped.append(flip)
    idx = np.concatenate(users)
    return Predictions(idx, y[idx], np.concatenate(probas), np.concatenate(flipped), n_fits=n_folds)


def _fit_predict(
    attacker: Attacker,
    feats: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    attacker.fit(feats[train], y[train], feats[val], y[val], num_classes)
    proba = attacker.predict_proba(feats[test])
    flips = (
        flip_rule(y[val], attacker.predict_proba(feats[val]))
        if val.size
        else np.zeros(num_classes, dtype=bool)
    )
    return proba, apply_flips(proba, flips)


# ---------------------------------------------------------------------------- one attribute


@dataclass(frozen=True)
class LeakageResult:
    """Leakage of one attribute to one attacker under one protocol, with its noise floor.

    Attributes:
        attribute: Attribute name.
        attacker: Attacker name.
        protocol: ``"shadow"`` or ``"kfold"``.
        num_classes: Classes of the attribute.
        n_users: Users scored (non-shadow labelled users, or every labelled user for kfold).
        balanced_accuracy: Balanced accuracy of ``argmax(proba)``.
        auc: Signed AUC (binary, or one-vs-rest macro); below 0.5 means inverted.
        leakage: Flip-aware leakage (:func:`leakage_scores`).
        method_aware_balanced_accuracy: Balanced accuracy after the method-aware flips.
        chance: ``1 / num_classes``.
        n_permutations: Label permutations behind the null columns (0: they are ``nan``).
        null_leakage_mean: Mean leakage on permuted labels.
        null_leakage_p95: Its 95th percentile, the floor "at chance" is judged against.
        null_balanced_accuracy_mean: Mean balanced accuracy on permuted labels.
        null_balanced_accuracy_p95: Its 95th percentile.
        class_aucs: One-vs-rest AUC per class (:class:`LeakageScores`).
        kfold_repeats: Fold draws pooled under ``kfold`` (1 for ``shadow``).
    """

    attribute: str
    attacker: str
    protocol: str
    num_classes: int
    n_users: int
    balanced_accuracy: float
    auc: float
    leakage: float
    method_aware_balanced_accuracy: float
    chance: float
    n_permutations: int
    null_leakage_mean: float
    null_leakage_p95: float
    null_balanced_accuracy_mean: float
    null_balanced_accuracy_p95: float
    class_aucs: tuple[float, ...]
    kfold_repeats: int = 1

    @property
    def leakage_above_null(self) -> float:
        """``leakage - null_leakage_p95``: > 0 means more leakage than label noise explains."""
        return self.leakage - self.null_leakage_p95

    def as_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of every field."""
        return asdict(self)


def measure_leakage(
    attacker: Attacker,
    X: npt.ArrayLike | Tensor,
    codes: npt.ArrayLike | Tensor,
    num_classes: int,
    attribute: str = "attribute",
    protocol: str = "kfold",
    shadow: npt.ArrayLike | Tensor | None = None,
    n_permutations: int = 20,
    n_folds: int = 5,
    val_fraction: float = 0.2,
    seed: int = 0,
    repeats: int = 1,
) -> LeakageResult:
    """Attack one attribute under one protocol and measure the permutation-null floor.

    Args:
        attacker: Any attacker; the same instance (same seed) serves the permuted runs.
        X: Representations ``[num_users, d]``.
        codes: Codes ``[num_users]``, ``-1`` unknown.
        num_classes: Classes of the attribute.
        attribute: Name for the result.
        protocol: ``"shadow"`` or ``"kfold"``.
        shadow: Shadow mask (``"shadow"`` protocol).
        n_permutations: Label permutations for the null (0 skips it).
        n_folds: Folds of ``"kfold"``.
        val_fraction: Validation share of the attacker's users.
        seed: Seed of folds, validation draws and permutations
            (``numpy.random.default_rng(seed)``: the same permutations for every attacker and
            protocol).
        repeats: ``kfold`` fold draws pooled (:func:`run_protocol`), for the data and for
            every permutation.

    Returns:
        The result row.

    Raises:
        ValueError: As :func:`run_protocol`, or ``n_permutations < 0``.
    """
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int):
        raise ValueError(f"n_permutations must be an int, got {n_permutations!r}")
    if n_permutations < 0:
        raise ValueError(f"n_permutations must be >= 0, got {n_permutations}")
    feats = as_features(X)
    raw = codes.detach().cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    y = raw.astype(np.int64)

    def run(labels: np.ndarray) -> Predictions:
        return run_protocol(
            attacker,
            feats,
            labels,
            num_classes,
            protocol,
            shadow,
            n_folds,
            val_fraction,
            seed,
            repeats if protocol == "kfold" else 1,
        )

    pred = run(y)
    scores = leakage_scores(pred.y_true, pred.proba)
    bacc = balanced_accuracy(pred.y_true, np.argmax(pred.proba, axis=1))
    aware = balanced_accuracy(pred.y_true, np.argmax(pred.method_aware_proba, axis=1))

    rng = np.random.default_rng(seed)
    labelled = np.flatnonzero(y >= 0)
    null_leak, null_bacc = [], []
    for _ in range(n_permutations):
        perm = y.copy()
        perm[labelled] = rng.permutation(y[labelled])
        p = run(perm)
        null_leak.append(leakage_scores(p.y_true, p.proba).leakage)
        null_bacc.append(balanced_accuracy(p.y_true, np.argmax(p.proba, axis=1)))
    return LeakageResult(
        attribute=attribute,
        attacker=attacker.name,
        protocol=protocol,
        num_classes=num_classes,
        n_users=int(np.unique(pred.users).size),
        balanced_accuracy=bacc,
        auc=scores.auc,
        leakage=scores.leakage,
        method_aware_balanced_accuracy=aware,
        chance=chance_level(num_classes),
        n_permutations=n_permutations,
        null_leakage_mean=_mean(null_leak),
        null_leakage_p95=_p95(null_leak),
        null_balanced_accuracy_mean=_mean(null_bacc),
        null_balanced_accuracy_p95=_p95(null_bacc),
        class_aucs=scores.class_aucs,
        kfold_repeats=repeats if protocol == "kfold" else 1,
    )


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _p95(values: Sequence[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


# ------------------------------------------------------------------------- many attributes


def audit_leakage(
    X: npt.ArrayLike | Tensor,
    codes: Mapping[str, npt.ArrayLike | Tensor],
    num_classes: Mapping[str, int],
    attackers: Sequence[str | Attacker] = DEFAULT_ATTACKERS,
    protocols: Sequence[str] = PROTOCOLS,
    shadow: npt.ArrayLike | Tensor | None = None,
    n_permutations: int = 20,
    n_folds: int = 5,
    val_fraction: float = 0.2,
    seed: int = 0,
    attacker_args: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    repeats: int = 1,
) -> list[LeakageResult]:
    """:func:`measure_leakage` for every attribute x attacker x protocol.

    Args:
        X: Representations ``[num_users, d]``.
        codes: ``attribute -> codes[num_users]`` (``-1`` unknown), in the order to report.
        num_classes: ``attribute -> number of classes``.
        attackers: Attacker names (:data:`~lit_unlearn.attacks.audit.ATTACKERS`, built with
            ``seed`` and ``attacker_args``) or built attackers.
        protocols: Protocols to run.
        shadow: Shadow mask, required when ``"shadow"`` is among the protocols.
        n_permutations: Label permutations of the null.
        n_folds: Folds of ``"kfold"``.
        val_fraction: Validation share of the attacker's users.
        seed: Seed of attackers, folds, validation draws and permutations.
        attacker_args: Constructor arguments per attacker name.
        log: Called with one line per finished row (progress), e.g. ``print``.
        repeats: ``kfold`` fold draws pooled per cell (:func:`run_protocol`).

    Returns:
        One row per (attribute, attacker, protocol), attributes outermost.

    Raises:
        ValueError: Unknown protocol or attacker, nothing to run, a missing shadow mask, or
            an attribute that cannot be attacked (including a class smaller than ``n_folds``
            under ``kfold``, checked for every attribute before any attacker runs).
        ImportError: A named attacker's optional dependency is missing.
    """
    feats = as_features(X)
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(f"protocols {list(protocols)}: choose one or more of {list(PROTOCOLS)}")
    if "shadow" in protocols and shadow is None:
        raise ValueError("the shadow protocol needs a shadow mask")
    if not codes:
        raise ValueError("no attribute to audit")
    if "kfold" in protocols:
        for name, c in codes.items():
            labels = c.detach().cpu().numpy() if isinstance(c, Tensor) else np.asarray(c)
            try:
                check_folds(labels, n_folds)
            except ValueError as err:
                raise ValueError(f"attribute {name!r}: {err}") from err
    args = dict(attacker_args or {})
    built: list[Attacker] = []
    for a in attackers:
        if isinstance(a, Attacker):
            built.append(a)
        elif a in ATTACKERS:
            built.append(make_attacker(a, seed=seed, **dict(args.get(a, {}))))
        else:
            raise ValueError(f"unknown attacker {a!r}; available: {sorted(ATTACKERS)}")
    if not built:
        raise ValueError("no attacker to run")
    results = []
    for name, c in codes.items():
        for attacker in built:
            for protocol in protocols:
                start = time.perf_counter()
                row = measure_leakage(
                    attacker,
                    feats,
                    c,
                    num_classes[name],
                    attribute=name,
                    protocol=protocol,
                    shadow=shadow,
                    n_permutations=n_permutations,
                    n_folds=n_folds,
                    val_fraction=val_fraction,
                    seed=seed,
                    repeats=repeats,
                )
                results.append(row)
                if log is not None:
                    log(
                        f"{name} / {attacker.name} / {protocol}: bal. acc "
                        f"{row.balanced_accuracy:.3f} (chance {row.chance:.3f}), AUC "
                        f"{row.auc:.3f}, leakage {row.leakage:.3f} (null p95 "
                        f"{row.null_leakage_p95:.3f}) [{time.perf_counter() - start:.1f} s]"
                    )
    return results


# ---------------------------------------------------------------------------------- tables

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("attribute", "attribute"),
    ("attacker", "attacker"),
    ("protocol", "protocol"),
    ("n_users", "users"),
    ("chance", "chance"),
    ("balanced_accuracy", "bal. acc"),
    ("null_balanced_accuracy_p95", "null bal. acc p95"),
    ("method_aware_balanced_accuracy", "method-aware bal. acc"),
    ("auc", "AUC"),
    ("leakage", "leakage"),
    ("null_leakage_mean", "null leakage mean"),
    ("null_leakage_p95", "null leakage p95"),
    ("leakage_above_null", "leakage - null p95"),
)


def leakage_frame(results: Sequence[LeakageResult]) -> pd.DataFrame:
    """Every field of every row, plus ``leakage_above_null``; ``class_aucs`` as ``a;b;c``."""
    import pandas as pd

    names = [f.name for f in fields(LeakageResult)]
    records = []
    for r in results:
        d = r.as_dict()
        d["class_aucs"] = ";".join(f"{a:.4f}" for a in r.class_aucs)
        d["leakage_above_null"] = r.leakage_above_null
        records.append(d)
    return pd.DataFrame(records, columns=[*names, "leakage_above_null"])


def leakage_markdown(results: Sequence[LeakageResult]) -> str:
    """A Markdown table, one row per result, floats to 3 decimals (trailing newline)."""
    from lit_unlearn.reporting.tables import markdown_table

    frame = leakage_frame(results)[[key for key, _ in _COLUMNS]]
    return markdown_table(frame, digits=3, headers=[title for _, title in _COLUMNS]) + "\n"


def write_leakage_tables(
    results: Sequence[LeakageResult], out_dir: str | Path, stem: str = "leakage"
) -> tuple[Path, Path]:
    """Write ``{stem}.md`` (with a legend) and ``{stem}.csv`` (every field) into ``out_dir``.

    Returns:
        The paths of the Markdown and CSV files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / f"{stem}.md", out / f"{stem}.csv"
    n_perm = sorted({r.n_permutations for r in results})
    legend = (
        "Leakage = 2|AUC - 0.5| (binary) or the class mean of one-vs-rest 2|AUC_c - 0.5|: 0 at "
        "chance from both sides, 1 fully recovered (also when inverted). AUC < 0.5: the "
        "attacker ranks the wrong way round. Method-aware: scores of classes whose validation "
        "AUC is below 0.5 reversed. Null: the same attacker and protocol on "
        f"{'/'.join(map(str, n_perm))} label permutation(s); leakage within the null's 95th "
        "percentile is at chance.\n\n"
    )
    md.write_text(f"# Attribute leakage\n\n{legend}{leakage_markdown(results)}", encoding="utf-8")
    leakage_frame(results).to_csv(csv, index=False)
    return md, csv


# ------------------------------------------------------------------------------ command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lit_unlearn.attacks.leakage",
        description=(
            "Flip-aware attribute leakage of exported user representations: balanced accuracy, "
            "signed AUC, 2|AUC-0.5| leakage, a method-aware (flipping) attacker and a "
            "permutation-null floor, under the shadow and k-fold protocols."
        ),
    )
    parser.add_argument(
        "--representations",
        required=True,
        help=".npz with user_ids [n] (raw ids) and representations [n, d]",
    )
    parser.add_argument(
        "--attributes",
        required=True,
        help=".csv with a user id column, attribute columns of class names (empty = unknown) "
        "and optionally a 0/1 'shadow' column",
    )
    parser.add_argument("--out", required=True, help="output folder for leakage.md / .csv")
    parser.add_argument(
        "--attackers", nargs="+", default=list(DEFAULT_ATTACKERS), choices=sorted(ATTACKERS)
    )
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--permutations", type=int, default=20, help="label permutations (null)")
    parser.add_argument("--folds", type=int, default=5, help="folds of the kfold protocol")
    parser.add_argument(
        "--repeats", type=int, default=1, help="kfold fold draws pooled per cell (repeated k-fold)"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.2, help="validation share of attacker users"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--attacker-args",
        type=json.loads,
        default={},
        help='constructor arguments per attacker as JSON, e.g. \'{"xgboost": {"n_jobs": 1}, '
        '"mlp": {"max_epochs": 100}}\'',
    )
    parser.add_argument("--id-column", default=None, help="id column (default user_id / first)")
    parser.add_argument(
        "--columns", nargs="+", default=None, help="attribute columns (default all others)"
    )
    parser.add_argument(
        "--shadow-fraction",
        type=float,
        default=0.2,
        help="share of users drawn as shadow set (stratified on the first attribute) when the "
        "CSV has no 'shadow' column",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> list[LeakageResult]:
    """Command-line entry point (``python -m lit_unlearn.attacks.leakage --help``).

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The result rows (also written to ``--out`` as ``leakage.md`` / ``leakage.csv``).

    Raises:
        SystemExit: Bad arguments or inputs (status 2, with the reason).
    """
    from lit_unlearn.attacks.export import load_exported
    from lit_unlearn.datamodules.splits import shadow_mask

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        attacker_args = _attacker_args(args.attacker_args, args.attackers)
        users = load_exported(args.representations, args.attributes, args.id_column, args.columns)
        if "kfold" in args.protocols:
            for name, codes in users.codes.items():
                try:
                    check_folds(codes, args.folds, users.classes[name])
                except ValueError as err:
                    raise ValueError(f"attribute {name!r}: {err}") from err
        shadow = users.shadow
        if shadow is None and "shadow" in args.protocols:
            first = next(iter(users.codes.values()))
            shadow = shadow_mask(
                first, len(users.user_ids), fraction=args.shadow_fraction, seed=args.seed
            )
            print(
                f"no 'shadow' column: drew {int(shadow.sum())} shadow users "
                f"({args.shadow_fraction:.0%}, seed {args.seed})",
                file=sys.stderr,
            )
        attackers = list(dict.fromkeys(args.attackers))
        if args.attackers == list(DEFAULT_ATTACKERS) and "xgboost" not in _available():
            warnings.warn("xgboost is not installed: running without it", stacklevel=1)
            attackers.remove("xgboost")
        labelled = {n: int((c >= 0).sum()) for n, c in users.codes.items()}
        print(
            f"{len(users.user_ids)} users, dim {users.representations.shape[1]}, labelled "
            f"{labelled}",
            file=sys.stderr,
        )
        results = audit_leakage(
            users.representations,
            users.codes,
            users.num_classes,
            attackers=attackers,
            protocols=args.protocols,
            shadow=shadow,
            n_permutations=args.permutations,
            n_folds=args.folds,
            val_fraction=args.val_fraction,
            seed=args.seed,
            attacker_args=attacker_args,
            log=lambda line: print(line, file=sys.stderr, flush=True),
            repeats=args.repeats,
        )
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        parser.error(str(err))
    md, csv = write_leakage_tables(results, args.out)
    print(leakage_markdown(results), end="")
    print(f"wrote {md} and {csv}", file=sys.stderr)
    return results


def _attacker_args(raw: Any, attackers: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ValueError(f"--attacker-args must map attacker names to objects, got {raw!r}")
    stray = sorted(set(raw) - set(attackers))
    if stray:
        raise ValueError(f"--attacker-args for {stray}, which are not in --attackers {attackers}")
    return raw


def _available() -> set[str]:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return set(ATTACKERS) - {"xgboost"}
    return set(ATTACKERS)


if __name__ == "__main__":
    main()
