"""Scores for attribute-inference attacks, in plain numpy.

An attribute attacker is judged on users it never trained on. Accuracy alone flatters it on
skewed attributes (ML-100K is 71% male, so "always male" scores 0.71), so every attack reports:

* **balanced accuracy**: mean per-class recall over the classes present in ``y_true`` (the same
  definition as :func:`sklearn.metrics.balanced_accuracy_score`); chance is ``1 / #classes``;
* **micro-F1** (equal to accuracy for single-label multi-class, reported for comparison with
  papers that quote it) and **macro-F1** (over classes present in ``y_true`` or ``y_pred``, as
  :func:`sklearn.metrics.f1_score` with ``average="macro"``);
* **AUC**: binary ROC-AUC, or the one-vs-rest macro average over the classes present in
  ``y_true`` for multi-class attributes;
* **leakage** ``= |AUC - 0.5| * 2``: 0 at chance, 1 when the attribute is fully recovered, from
  either side. An attacker at AUC 0.38 leaks as much as one at 0.62, because flipping its
  predictions recovers the attribute just as well; "unlearned" means close to chance from both
  sides.
* the **majority baseline**: the accuracy (and balanced accuracy, ``1 / #classes present``) of an
  attacker that always predicts the most common class among its training users.

Functions take integer labels and ``(n, C)`` probability arrays; torch tensors on the CPU are
accepted too (anything :func:`numpy.asarray` understands).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "accuracy",
    "attack_scores",
    "balanced_accuracy",
    "binary_auc",
    "chance_level",
    "leakage",
    "macro_f1",
    "majority_baseline",
    "majority_class",
    "micro_f1",
    "per_class_auc",
    "roc_auc",
]


def _labels(y: npt.ArrayLike, name: str = "y_true") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    integral = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
    if arr.size and not integral and not np.all(np.mod(arr, 1) == 0):
        raise ValueError(f"{name} must hold integer class codes")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        # -1 means "unknown" in UserAttributes; such users must be filtered before scoring,
        # otherwise they would silently count as a class of their own.
        raise ValueError(f"{name} holds negative codes; drop unknown (-1) labels before scoring")
    return out


def _pair(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in length")
    if t.size == 0:
        raise ValueError("cannot score an empty set of users")
    return t, p


def accuracy(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Fraction of correct predictions.

    Args:
        y_true: Integer labels ``[n]``.
        y_pred: Integer predictions ``[n]``.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def balanced_accuracy(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Mean per-class recall over the classes present in ``y_true``.

    A class absent from ``y_true`` has no recall and is left out (as sklearn does), rather than
    counted as 0 (as ``torchmetrics`` ``MulticlassAccuracy(average="macro")`` does), so an
    attacker is not punished for a class the test users happen not to contain.

    Args:
        y_true: Integer labels ``[n]``.
        y_pred: Integer predictions ``[n]``.

    Returns:
        Balanced accuracy in ``[0, 1]``.
    """
    t, p = _pair(y_true, y_pred)
    classes = np.unique(t)
    recalls = [np.mean(p[t == c] == c) for c in classes]
    return float(np.mean(recalls))


def _f1_counts(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Classes that occur in either labels or predictions, as sklearn's unique_labels does; a
    # class predicted but never true has F1 = 0 (it only adds false positives).
    classes = np.union1d(t, p)
    tp = np.array([np.sum((p == c) & (t == c)) for c in classes], dtype=np.float64)
    fp = np.array([np.sum((p == c) & (t != c)) for c in classes], dtype=np.float64)
    fn = np.array([np.sum((p != c) & (t == c)) for c in classes], dtype=np.float64)
    return tp, fp, fn


def micro_f1(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Micro-averaged F1 (pooled counts over classes); equals accuracy for single-label data.

    Args:
        y_true: Integer labels ``[n]``.
        y_pred: Integer predictions ``[n]``.

    Returns:
        Micro-F1 in ``[0, 1]``.
    """
    t, p = _pair(y_true, y_pred)
    tp, fp, fn = (x.sum() for x in _f1_counts(t, p))
    return float(2 * tp / (2 * tp + fp + fn))


def macro_f1(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Unweighted mean of per-class F1 over classes present in ``y_true`` or ``y_pred``.

    Args:
        y_true: Integer labels ``[n]``.
        y_pred: Integer predictions ``[n]``.

    Returns:
        Macro-F1 in ``[0, 1]``.
    """
    t, p = _pair(y_true, y_pred)
    tp, fp, fn = _f1_counts(t, p)
    # F1 = 2TP / (2TP + FP + FN); the denominator is > 0 for every class in the union.
    return float(np.mean(2 * tp / (2 * tp + fp + fn)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing their average rank (scipy's "average")."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_group = np.empty(xs.shape, dtype=bool)
    new_group[:1] = True
    new_group[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], xs.size)
    # Positions start..end-1 (0-based) hold ranks start+1..end; their mean is (start+1+end)/2.
    group_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(xs.size, dtype=np.float64)
    ranks[order] = group_rank[np.cumsum(new_group) - 1]
    return ranks


def binary_auc(positive: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """ROC-AUC of ``score`` for a boolean target (Mann-Whitney U with tie correction).

    Args:
        positive: Boolean ``[n]``, the positive class.
        score: Real ``[n]``, higher means more likely positive.

    Returns:
        AUC in ``[0, 1]``, or ``nan`` when only one class is present (AUC is undefined then).
    """
    pos = np.asarray(positive, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    if pos.shape != s.shape or pos.ndim != 1:
        raise ValueError(f"positive {pos.shape} and score {s.shape} must be equal 1-D shapes")
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _proba(y_true: npt.ArrayLike, proba: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = _labels(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != t.size:
        raise ValueError(f"proba must be [n, C] with n = {t.size}, got shape {p.shape}")
    if p.shape[1] < 2:
        raise ValueError(f"proba needs at least 2 class columns, got {p.shape[1]}")
    if t.size == 0:
        raise ValueError("cannot score an empty set of users")
    if t.max() >= p.shape[1]:
        raise ValueError(f"label {int(t.max())} has no column in proba [n, {p.shape[1]}]")
    return t, p


def per_class_auc(y_true: npt.ArrayLike, proba: npt.ArrayLike) -> np.ndarray:
    """One-vs-rest AUC of every class column.

    Args:
        y_true: Integer labels ``[n]``.
        proba: Class probabilities (or any per-class scores) ``[n, C]``.

    Returns:
        ``float64[C]``; ``nan`` for classes absent from ``y_true`` (or when it holds one class).
    """
    t, p = _proba(y_true, proba)
    return np.array([binary_auc(t == c, p[:, c]) for c in range(p.shape[1])])


def roc_auc(y_true: npt.ArrayLike, proba: npt.ArrayLike) -> float:
    """Binary ROC-AUC, or one-vs-rest macro AUC over the classes present in ``y_true``.

    With two columns this is the AUC of the positive-class column ``proba[:, 1]`` (as
    :func:`sklearn.metrics.roc_auc_score` on binary data).

    Args:
        y_true: Integer labels ``[n]``.
        proba: Class probabilities ``[n, C]``.

    Returns:
        AUC in ``[0, 1]``, ``nan`` when ``y_true`` holds a single class.
    """
    t, p = _proba(y_true, proba)
    if p.shape[1] == 2:
        return binary_auc(t == 1, p[:, 1])
    aucs = per_class_auc(t, p)
    present = np.unique(t)
    if present.size < 2:
        return float("nan")
    return float(np.mean(aucs[present]))


def leakage(auc: float) -> float:
    """Flip-aware distance from chance, ``|AUC - 0.5| * 2``.

    0 means the attacker is at chance; 1 means it ranks every user perfectly, either the right
    way round or exactly inverted (which a flipped attacker recovers just as well). For
    multi-class attributes this is applied to the macro one-vs-rest AUC.

    Args:
        auc: An AUC in ``[0, 1]`` (``nan`` passes through).

    Returns:
        Leakage in ``[0, 1]``.
    """
    return float(abs(auc - 0.5) * 2.0)


def chance_level(num_classes: int) -> float:
    """Balanced accuracy (and accuracy on balanced data) of uniform random guessing.

    Args:
        num_classes: Number of classes of the attribute.

    Returns:
        ``1 / num_classes``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return 1.0 / num_classes


def majority_class(y_train: npt.ArrayLike) -> int:
    """Most frequent label among the attacker's training users (smallest code on ties).

    Args:
        y_train: Integer labels ``[n]``.

    Returns:
        The majority class code.
    """
    t = _labels(y_train, "y_train")
    if t.size == 0:
        raise ValueError("no training labels to take a majority from")
    return int(np.argmax(np.bincount(t)))


def majority_baseline(y_test: npt.ArrayLike, majority: int) -> tuple[float, float]:
    """Accuracy and balanced accuracy of always predicting ``majority`` on the test users.

    Args:
        y_test: Integer labels of the test users ``[n]``.
        majority: The class always predicted (the training majority).

    Returns:
        ``(accuracy, balanced_accuracy)``; the latter is ``1 / #classes present in y_test`` when
        ``majority`` is among them, else 0.
    """
    t = _labels(y_test, "y_test")
    pred = np.full_like(t, majority)
    return accuracy(t, pred), balanced_accuracy(t, pred)


def attack_scores(y_true: npt.ArrayLike, proba: npt.ArrayLike, majority: int) -> dict[str, float]:
    """Every score of one attack, predictions taken as ``argmax(proba)``.

    Args:
        y_true: Integer labels of the test users ``[n]``.
        proba: Attacker probabilities ``[n, C]``, ``C`` the attribute's number of classes.
        majority: The training majority class, for the majority baseline.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``micro_f1``, ``macro_f1``, ``auc``, ``leakage``,
        ``chance``, ``majority_accuracy`` and ``majority_balanced_accuracy``.
    """
    t, p = _proba(y_true, proba)
    pred = np.argmax(p, axis=1)
    auc = roc_auc(t, p)
    maj_acc, maj_bacc = majority_baseline(t, majority)
    return {
        "accuracy": accuracy(t, pred),
        "balanced_accuracy": balanced_accuracy(t, pred),
        "micro_f1": micro_f1(t, pred),
        "macro_f1": macro_f1(t, pred),
        "auc": auc,
        "leakage": leakage(auc),
        "chance": chance_level(p.shape[1]),
        "majority_accuracy": maj_acc,
        "majority_balanced_accuracy": maj_bacc,
    }
