"""Logistic-regression attribute attacker (scikit-learn).

The linear attacker an outside auditor tries first, and the one that exposes an *inverted*
representation most plainly: when the class means of the test users sit on the other side of
those of the training users, a linear model anti-learns and its AUC falls below 0.5 (issue 23).

* features standardised with the training users' statistics (done by :class:`Attacker`);
* ``class_weight="balanced"``: sample weights ``n / (k * count_c)`` so every class counts equally;
* one multinomial (softmax) model for more than two classes (the ``lbfgs`` solver's default
  since scikit-learn 1.5, and what ``multi_class="auto"`` picks before that);
* deterministic: ``lbfgs`` draws nothing at random; ``seed`` is passed as ``random_state``
  anyway so a change of solver stays seeded.

The validation users are not needed (there is no early stopping: ``lbfgs`` runs to
convergence under the L2 penalty ``1 / C``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from lit_unlearn.attacks.base import Attacker, balanced_class_weights, expand_proba

__all__ = ["LogisticRegressionAttacker"]


class LogisticRegressionAttacker(Attacker):
    """L2-regularised (multinomial) logistic regression attribute attacker.

    Args:
        C: Inverse L2 regularisation strength (scikit-learn's ``C``).
        max_iter: Iteration cap of the ``lbfgs`` solver.
        class_weight: ``"balanced"`` gives every class the same total sample weight; ``"none"``
            weights users equally.
        seed: ``random_state`` of the estimator.
    """

    name = "logreg"

    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 1000,
        class_weight: Literal["balanced", "none"] = "balanced",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}")
        if class_weight not in ("balanced", "none"):
            raise ValueError(f"class_weight must be 'balanced' or 'none', got {class_weight!r}")
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.seed = seed
        self.model_: Any = None
        self.classes_: np.ndarray | None = None

    def _fit(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, num_classes: int
    ) -> None:
        from sklearn.linear_model import LogisticRegression

        weight = None
        if self.class_weight == "balanced":
            weight = balanced_class_weights(y, num_classes)[y]
        model = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
        model.fit(X, y, sample_weight=weight)
        self.model_ = model
        self.classes_ = np.asarray(model.classes_, dtype=np.int64)

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        assert self.model_ is not None and self.classes_ is not None and self._num_classes
        return expand_proba(self.model_.predict_proba(X), self.classes_, self._num_classes)
