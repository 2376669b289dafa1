"""The attacker interface and the result of one attribute-inference attack.

An :class:`Attacker` is a small classifier trained on the attacker's *shadow* users (whose
attribute it knows) and asked to predict the attribute of everyone else from their embeddings.
The base class owns what every attacker must do the same way, so subclasses only write the
model:

* input checks (finite features, labels in range, at least two classes to learn from);
* standardisation with the **training** users' statistics only, so nothing about the test users
  leaks into the attacker before it is measured;
* probabilities always returned as ``[n, num_classes]``, with zero columns for classes the
  shadow set happened not to contain.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from torch import Tensor

__all__ = [
    "AttackResult",
    "Attacker",
    "as_features",
    "as_labels",
    "balanced_class_weights",
    "expand_proba",
]


@dataclass(frozen=True)
class AttackResult:
    """Scores of one attacker against one attribute, measured on held-out (non-shadow) users.

    Attributes:
        attribute: Attribute name (``gender``, ``age``, ...).
        attacker: Attacker name (``mlp``, ``xgboost``).
        num_classes: Classes of the attribute (its full class list, not only those seen).
        n_train: Shadow users the attacker trained on.
        n_val: Shadow users held out for early stopping / model selection.
        n_test: Non-shadow users with a known label the attack is measured on.
        accuracy: Test accuracy.
        balanced_accuracy: Mean per-class recall over classes present in the test labels.
        micro_f1: Micro-F1 (equals accuracy for single-label data).
        macro_f1: Macro-F1.
        auc: Binary AUC or one-vs-rest macro AUC (``nan`` if the test users hold one class).
        leakage: ``|auc - 0.5| * 2``: 0 at chance, 1 fully recovered (also when flipped).
        chance: ``1 / num_classes``, the balanced accuracy of random guessing.
        majority_accuracy: Test accuracy of always predicting the shadow majority class.
        majority_balanced_accuracy: Its balanced accuracy (``1 / #classes present``).
    """

    attribute: str
    attacker: str
    num_classes: int
    n_train: int
    n_val: int
    n_test: int
    accuracy: float
    balanced_accuracy: float
    micro_f1: float
    macro_f1: float
    auc: float
    leakage: float
    chance: float
    majority_accuracy: float
    majority_balanced_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        """Plain ``dict`` of every field (JSON/CSV friendly, used for checkpoint state)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackResult:
        """Inverse of :meth:`as_dict`; unknown keys raise so stale state is noticed."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown AttackResult field(s) {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def metric_names(cls) -> list[str]:
        """Names of the numeric fields (everything but ``attribute`` and ``attacker``)."""
        return [f.name for f in fields(cls) if f.name not in ("attribute", "attacker")]


def as_features(X: npt.ArrayLike | Tensor, name: str = "X") -> np.ndarray:
    """Features as a finite ``float64[n, d]`` array.

    Raises:
        ValueError: Not 2-D, or NaN/inf present (a diverged model must not be audited as if it
            were private: NaN embeddings would make every attacker look like chance).
    """
    if isinstance(X, Tensor):
        X = X.detach().cpu().double().numpy()
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [num_users, dim], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(
            f"{name} holds NaN/inf in {bad} row(s); cannot audit non-finite embeddings"
        )
    return arr


def as_labels(y: npt.ArrayLike | Tensor, num_classes: int, name: str = "y") -> np.ndarray:
    """Labels as ``int64[n]`` in ``[0, num_classes)``."""
    if isinstance(y, Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"{name} must hold codes in [0, {num_classes}); got [{arr.min()}, {arr.max()}] "
            "(drop unknown (-1) labels first)"
        )
    return arr


def balanced_class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """``n / (k * count_c)`` per class (sklearn's "balanced"), 0 for absent classes.

    ``k`` counts only the classes present, so the weights of the present classes average to 1
    over samples, like sklearn's ``compute_class_weight`` restricted to the seen classes.
    """
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = y.size / (present.sum() * counts[present])
    return weights


def expand_proba(seen: npt.ArrayLike, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Probabilities over the classes a model saw, widened to the attribute's full class list.

    Args:
        seen: ``[n, len(classes)]`` probabilities, columns in the order of ``classes``.
        classes: Sorted codes of the classes the model was trained on.
        num_classes: Classes of the attribute.

    Returns:
        ``float64[n, num_classes]``, zero columns for the classes the model never saw.
    """
    arr = np.asarray(seen, dtype=np.float64)
    proba = np.zeros((arr.shape[0], num_classes), dtype=np.float64)
    proba[:, classes] = arr
    return proba


class Attacker(ABC):
    """Attribute-inference attacker: ``fit`` on shadow users, ``predict_proba`` on the others.

    Subclasses implement :meth:`_fit` and :meth:`_predict_proba` on standardised features. A
    second :meth:`fit` starts from scratch (same seed -> same model), so one instance can attack
    several attributes in turn.
    """

    #: Short name used in result tables, metric keys and the callback's ``attackers`` list.
    name: ClassVar[str] = "attacker"

    def __init__(self) -> None:
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._num_classes: int | None = None

    def fit(
        self,
        X_train: npt.ArrayLike | Tensor,
        y_train: npt.ArrayLike | Tensor,
        X_val: npt.ArrayLike | Tensor | None,
        y_val: npt.ArrayLike | Tensor | None,
        num_classes: int,
    ) -> Attacker:
        """Train on shadow-train users; use the validation users only for early stopping.

        Args:
            X_train: Features ``[n_train, d]``.
            y_train: Codes ``[n_train]`` in ``[0, num_classes)``.
            X_val: Features ``[n_val, d]`` for model selection, or ``None``/empty to train for
                the full budget without early stopping.
            y_val: Codes ``[n_val]``, or ``None``.
            num_classes: Classes of the attribute (its whole class list), so probabilities have
                a column for every class even if the shadow set misses some.

        Returns:
            ``self``.

        Raises:
            ValueError: Non-finite features, labels out of range, mismatched lengths, or fewer
                than two classes in ``y_train`` (nothing to discriminate).
        """
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        Xtr = as_features(X_train, "X_train")
        ytr = as_labels(y_train, num_classes, "y_train")
        if Xtr.shape[0] != ytr.size:
            raise ValueError(f"X_train has {Xtr.shape[0]} rows but y_train {ytr.size} labels")
        present = np.unique(ytr)
        if present.size < 2:
            raise ValueError(
                f"the attacker's training users hold {present.size} class(es) {present.tolist()}; "
                "at least 2 are needed to train an attribute classifier"
            )
        if X_val is None or y_val is None:
            Xv = np.empty((0, Xtr.shape[1]))
            yv = np.empty(0, dtype=np.int64)
        else:
            Xv = as_features(X_val, "X_val")
            yv = as_labels(y_val, num_classes, "y_val")
            if Xv.shape[0] != yv.size:
                raise ValueError(f"X_val has {Xv.shape[0]} rows but y_val {yv.size} labels")
            if Xv.shape[0] and Xv.shape[1] != Xtr.shape[1]:
                raise ValueError(f"X_val has dim {Xv.shape[1]}, X_train {Xtr.shape[1]}")
            Xv = Xv.reshape(-1, Xtr.shape[1])
        # Training-set statistics only: the test users must not shape the attacker.
        self._mean = Xtr.mean(axis=0)
        scale = Xtr.std(axis=0)
        # Constant features (e.g. a dead embedding dimension) would divide by zero.
        scale[scale < 1e-12] = 1.0
        self._scale = scale
        self._num_classes = num_classes
        self._fit(self._standardise(Xtr), ytr, self._standardise(Xv), yv, num_classes)
        return self

    def predict_proba(self, X: npt.ArrayLike | Tensor) -> np.ndarray:
        """Class probabilities for users ``X``.

        Args:
            X: Features ``[n, d]``.

        Returns:
            ``float64[n, num_classes]``, rows summing to 1; classes absent from the training
            users get probability 0.
        """
        if self._mean is None or self._scale is None or self._num_classes is None:
            raise RuntimeError(f"{type(self).__name__} must be fit before predict_proba")
        Z = as_features(X)
        if Z.shape[1] != self._mean.size:
            raise ValueError(f"X has dim {Z.shape[1]}, the attacker was fit on {self._mean.size}")
        proba = np.asarray(self._predict_proba(self._standardise(Z)), dtype=np.float64)
        if proba.shape != (Z.shape[0], self._num_classes):
            raise RuntimeError(
                f"{type(self).__name__} returned proba {proba.shape}, "
                f"expected {(Z.shape[0], self._num_classes)}"
            )
        return proba

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        assert self._mean is not None and self._scale is not None
        return (X - self._mean) / self._scale

    @abstractmethod
    def _fit(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, num_classes: int
    ) -> None:
        """Train on standardised features; ``X_val`` may have zero rows (no early stopping)."""

    @abstractmethod
    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``[n, num_classes]`` probabilities for standardised features."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments (public attributes), for reprs and reports."""
        return {
            k: v for k, v in vars(self).items() if not k.startswith("_") and not k.endswith("_")
        }
