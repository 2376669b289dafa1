"""k-nearest-neighbour attribute attacker (scikit-learn).

A non-parametric attacker: it makes no assumption about where the classes lie, only that users
with the same attribute sit near each other. It complements the linear attacker, which sees a
shift of class means, and the trees, which see axis-aligned structure.

* features standardised with the training users' statistics (done by :class:`Attacker`), so no
  embedding dimension dominates the Euclidean distance by its scale alone;
* neighbours weighted by inverse distance (``weights="distance"``);
* ``k`` chosen on the validation part of the attacker's users from a small grid (``ks``) by
  balanced accuracy, ties going to the larger ``k`` (the smoother vote); without validation
  users the middle value of the grid is used. ``k`` never exceeds the number of training users;
* ``class_weight="balanced"``: each class's vote is multiplied by ``n / (k * count_c)`` (its
  training users' inverse frequency) and the row renormalised, so a majority class does not win
  by headcount alone; ``"none"`` keeps the raw distance-weighted vote.

The attacker is deterministic (``seed`` is accepted for the common interface only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from lit_unlearn.attacks.base import Attacker, balanced_class_weights, expand_proba
from lit_unlearn.attacks.scores import balanced_accuracy

__all__ = ["KNNAttacker"]


class KNNAttacker(Attacker):
    """Distance-weighted k-nearest-neighbour attribute attacker.

    Args:
        ks: Candidate neighbour counts; the one with the best validation balanced accuracy is
            kept.
        class_weight: ``"balanced"`` reweights each class's vote by its inverse training
            frequency; ``"none"`` uses the plain vote.
        seed: Unused (the attacker draws nothing at random); kept for the common interface.
        n_jobs: Threads of the neighbour search.

    Attributes:
        k_: The chosen neighbour count after :meth:`fit`.
    """

    name = "knn"

    def __init__(
        self,
        ks: Sequence[int] = (5, 11, 21, 41),
        class_weight: Literal["balanced", "none"] = "balanced",
        seed: int = 0,
        n_jobs: int = 1,
    ) -> None:
        super().__init__()
        grid = [int(k) for k in ks]
        if not grid or any(isinstance(k, bool) or k < 1 for k in ks):
            raise ValueError(f"ks must be a non-empty list of ints >= 1, got {ks!r}")
        if class_weight not in ("balanced", "none"):
            raise ValueError(f"class_weight must be 'balanced' or 'none', got {class_weight!r}")
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
            raise ValueError(f"n_jobs must be an int >= 1, got {n_jobs!r}")
        self.ks = tuple(sorted(set(grid)))
        self.class_weight = class_weight
        self.seed = seed
        self.n_jobs = n_jobs
        self.k_: int = 0
        self.model_: Any = None
        self.classes_: np.ndarray | None = None
        self.vote_weight_: np.ndarray | None = None

    def _fit(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, num_classes: int
    ) -> None:
        from sklearn.neighbors import KNeighborsClassifier

        classes = np.unique(y)
        self.classes_ = classes
        if self.class_weight == "balanced":
            self.vote_weight_ = balanced_class_weights(y, num_classes)[classes]
        else:
            self.vote_weight_ = np.ones(classes.size)
        candidates = sorted({min(k, y.size) for k in self.ks})
        if y_val.size == 0:
            chosen = candidates[len(candidates) // 2]
        else:
            # The largest k wins ties: iterate from large to small and keep strict improvements.
            best = -1.0
            chosen = candidates[-1]
            for k in reversed(candidates):
                self.model_ = KNeighborsClassifier(
                    n_neighbors=k, weights="distance", n_jobs=self.n_jobs
                ).fit(X, y)
                self.k_ = k
                pred = np.argmax(self._predict_proba(X_val), axis=1)
                score = balanced_accuracy(y_val, pred)
                if score > best:
                    best, chosen = score, k
        self.k_ = chosen
        self.model_ = KNeighborsClassifier(
            n_neighbors=chosen, weights="distance", n_jobs=self.n_jobs
        ).fit(X, y)

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        assert self.model_ is not None and self.classes_ is not None and self._num_classes
        assert self.vote_weight_ is not None
        votes = np.asarray(self.model_.predict_proba(X), dtype=np.float64) * self.vote_weight_
        total = votes.sum(axis=1, keepdims=True)
        # Every row has at least one neighbour with a positive weight, so total > 0.
        return expand_proba(votes / total, self.classes_, self._num_classes)
