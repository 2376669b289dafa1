"""XGBoost attribute attacker.

Gradient-boosted trees are the attacker AttrCloak reports (ML-100K gender 0.763 accuracy before
unlearning). ``xgboost`` is an optional dependency, imported only when an attacker is built:
install ``lit-unlearn[xgboost-cpu]`` (the CPU wheel, no 351 MB NCCL download) or
``lit-unlearn[xgboost-gpu]``.

Details that keep the numbers honest and reproducible:

* sample weights make the classes count equally (``class_weight="balanced"``), on the training
  set and on the validation set used for early stopping;
* early stopping watches the validation part of the shadow set only, and prediction uses the
  best iteration;
* XGBoost needs contiguous labels ``0..k-1``: the classes the shadow users actually hold are
  remapped, and the probabilities expanded back to the attribute's full class list (0 for
  classes never seen);
* ``random_state`` and a fixed thread count (``n_jobs``) make repeated fits identical.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import numpy as np

from lit_unlearn.attacks.base import Attacker, balanced_class_weights

__all__ = ["XGBoostAttacker", "import_xgboost"]


def import_xgboost() -> ModuleType:
    """Import ``xgboost`` or explain how to install it.

    Raises:
        ImportError: ``xgboost`` is not installed.
    """
    try:
        import xgboost
    except ImportError as err:
        raise ImportError(
            "the XGBoost attacker needs the optional dependency `xgboost`: "
            "`pip install lit-unlearn[xgboost-cpu]` (CPU-only wheel) or "
            "`pip install lit-unlearn[xgboost-gpu]` (CUDA build)"
        ) from err
    return xgboost


class XGBoostAttacker(Attacker):
    """Gradient-boosted trees attribute attacker (``xgboost.XGBClassifier``).

    Args:
        n_estimators: Maximum number of boosting rounds.
        max_depth: Maximum tree depth.
        learning_rate: Shrinkage per round.
        subsample: Fraction of training users sampled per tree (seeded by ``seed``).
        class_weight: ``"balanced"`` gives every class the same total sample weight; ``"none"``
            weights users equally.
        early_stopping_rounds: Rounds without improvement of the validation log-loss before
            stopping; ``0`` disables early stopping.
        seed: ``random_state`` of the booster.
        n_jobs: Threads; fixed so results do not depend on the machine's core count.
        device: ``"cpu"`` or ``"cuda"`` (needs a CUDA build of xgboost).

    Raises:
        ImportError: ``xgboost`` is not installed (raised here, not at fit time, so a
            misconfigured audit fails before training starts).
    """

    name = "xgboost"

    def __init__(
        self,
        n_estimators: int = 200,
        max_depth: int = 4,
        learning_rate: float = 0.1,
        subsample: float = 0.8,
        class_weight: Literal["balanced", "none"] = "balanced",
        early_stopping_rounds: int = 20,
        seed: int = 0,
        n_jobs: int = 2,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        import_xgboost()
        for arg, value, low in (
            ("n_estimators", n_estimators, 1),
            ("max_depth", max_depth, 1),
            ("early_stopping_rounds", early_stopping_rounds, 0),
            ("n_jobs", n_jobs, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{arg} must be an int >= {low}, got {value!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not 0 < subsample <= 1:
            raise ValueError(f"subsample must be in (0, 1], got {subsample}")
        if class_weight not in ("balanced", "none"):
            raise ValueError(f"class_weight must be 'balanced' or 'none', got {class_weight!r}")
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.class_weight = class_weight
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.n_jobs = n_jobs
        self.device = device
        self.model_: Any = None
        self.classes_: np.ndarray | None = None

    def _fit(
        self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, num_classes: int
    ) -> None:
        xgb = import_xgboost()
        classes = np.unique(y)
        remap = np.full(num_classes, -1, dtype=np.int64)
        remap[classes] = np.arange(classes.size)
        # Validation users of a class the training users lack cannot be scored in the remapped
        # label space; the shadow split never produces them, direct callers might.
        keep = np.isin(y_val, classes)
        X_val, y_val = X_val[keep], y_val[keep]
        use_val = y_val.size > 0 and self.early_stopping_rounds > 0

        sample_weight = None
        val_weight = None
        if self.class_weight == "balanced":
            sample_weight = balanced_class_weights(y, num_classes)[y]
            # Balanced over the validation users' own classes: early stopping then targets
            # the same class-balanced objective as training.
            val_weight = balanced_class_weights(y_val, num_classes)[y_val]

        model = xgb.XGBClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            tree_method="hist",
            device=self.device,
            random_state=self.seed,
            n_jobs=self.n_jobs,
            early_stopping_rounds=self.early_stopping_rounds if use_val else None,
            eval_metric="logloss" if classes.size == 2 else "mlogloss",
            verbosity=0,
        )
        fit_kwargs: dict[str, Any] = {"sample_weight": sample_weight, "verbose": False}
        if use_val:
            fit_kwargs["eval_set"] = [(X_val, remap[y_val])]
            if val_weight is not None:
                fit_kwargs["sample_weight_eval_set"] = [val_weight]
        model.fit(X, remap[y], **fit_kwargs)
        self.model_ = model
        self.classes_ = classes

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        assert self.model_ is not None and self.classes_ is not None and self._num_classes
        # With early stopping, XGBClassifier.predict_proba uses the best iteration.
        seen = np.asarray(self.model_.predict_proba(X), dtype=np.float64)
        proba = np.zeros((X.shape[0], self._num_classes), dtype=np.float64)
        proba[:, self.classes_] = seen
        return proba
