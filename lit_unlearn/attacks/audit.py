"""Attribute audit: every attacker against every attribute of a user representation.

The protocol (DESIGN.md, "Metrics and evaluation"):

1. For one attribute, users with an unknown code (``-1``) take no part.
2. Labelled **shadow** users (``UserAttributes.shadow``) are the attacker's knowledge. A seeded,
   stratified ``val_fraction`` of them is held out for early stopping / model selection; the
   rest train the attacker. Every class keeps at least one training user.
3. Labelled **non-shadow** users are the test set; the attacker sees them only to be scored.
4. Scores: see :mod:`lit_unlearn.attacks.scores`. The majority baseline uses the most common
   class among all labelled shadow users.

Everything is seeded, so the same embeddings always give the same table.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from torch import Tensor

from lit_unlearn.attacks.base import Attacker, AttackResult, as_features
from lit_unlearn.attacks.knn import KNNAttacker
from lit_unlearn.attacks.logreg import LogisticRegressionAttacker
from lit_unlearn.attacks.mlp import MLPAttacker
from lit_unlearn.attacks.quadratic import QuadraticAttacker
from lit_unlearn.attacks.scores import attack_scores, majority_class
from lit_unlearn.attacks.xgboost import XGBoostAttacker

if TYPE_CHECKING:
    import pandas as pd

    # Annotation only: importing the datamodules package would pull its loaders in too.
    from lit_unlearn.datamodules.containers import UserAttributes

__all__ = [
    "ATTACKERS",
    "attack_attribute",
    "audit_embeddings",
    "default_attackers",
    "make_attacker",
    "results_to_frame",
    "results_to_markdown",
    "shadow_split",
]

#: Attacker classes by the short name used in configs, tables and metric keys.
ATTACKERS: dict[str, Callable[..., Attacker]] = {
    MLPAttacker.name: MLPAttacker,
    XGBoostAttacker.name: XGBoostAttacker,
    LogisticRegressionAttacker.name: LogisticRegressionAttacker,
    KNNAttacker.name: KNNAttacker,
    QuadraticAttacker.name: QuadraticAttacker,
}


def make_attacker(name: str, seed: int = 0, **kwargs: Any) -> Attacker:
    """Build a registered attacker by name.

    Args:
        name: A key of :data:`ATTACKERS` (``"mlp"``, ``"xgboost"``, ``"logreg"``, ``"knn"``,
            ``"quadratic"``).
        seed: The attacker's seed (overridden by an explicit ``seed`` in ``kwargs``).
        **kwargs: Constructor arguments of the attacker class.

    Raises:
        ValueError: Unknown name.
        ImportError: The attacker's optional dependency is missing.
    """
    if name not in ATTACKERS:
        raise ValueError(f"unknown attacker {name!r}; available: {sorted(ATTACKERS)}")
    kwargs.setdefault("seed", seed)
    return ATTACKERS[name](**kwargs)


def default_attackers(seed: int = 0) -> list[Attacker]:
    """The default pair, MLP and XGBoost; MLP only (with a warning) when xgboost is missing."""
    attackers: list[Attacker] = [MLPAttacker(seed=seed)]
    try:
        attackers.append(XGBoostAttacker(seed=seed))
    except ImportError as err:
        warnings.warn(f"auditing with the MLP attacker only: {err}", stacklevel=2)
    return attackers


def shadow_split(
    codes: npt.ArrayLike | Tensor,
    shadow: npt.ArrayLike | Tensor,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split users into attacker-train, attacker-validation and test indices.

    Args:
        codes: Attribute codes ``[num_users]``, ``-1`` unknown.
        shadow: Bool ``[num_users]``, users whose attribute the attacker knows.
        val_fraction: Share of each class's shadow users held out for validation (rounded;
            always leaving that class at least one training user).
        seed: Seed of the validation draw.

    Returns:
        Sorted ``int64`` index arrays ``(train, val, test)``; pairwise disjoint, train and val
        within labelled shadow users, test the labelled non-shadow users.
    """
    if isinstance(codes, Tensor):
        codes = codes.detach().cpu().numpy()
    if isinstance(shadow, Tensor):
        shadow = shadow.detach().cpu().numpy()
    y = np.asarray(codes).astype(np.int64)
    s = np.asarray(shadow).astype(bool)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"codes {y.shape} and shadow {s.shape} must be equal 1-D shapes")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labelled = y >= 0
    shadow_idx = np.flatnonzero(s & labelled)
    test_idx = np.flatnonzero(~s & labelled)
    rng = np.random.default_rng(seed)
    val_parts = []
    # Sorted class order, so the draw depends only on (codes, shadow, seed).
    for c in np.unique(y[shadow_idx]):
        members = shadow_idx[y[shadow_idx] == c]
        n_val = min(math.floor(val_fraction * members.size + 0.5), members.size - 1)
        val_parts.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    train_idx = np.setdiff1d(shadow_idx, val_idx)
    return train_idx.astype(np.int64), val_idx.astype(np.int64), test_idx.astype(np.int64)


def attack_attribute(
    attacker: Attacker,
    X: npt.ArrayLike | Tensor,
    codes: npt.ArrayLike | Tensor,
    shadow: npt.ArrayLike | Tensor,
    num_classes: int,
    attribute: str = "attribute",
    seed: int = 0,
    val_fraction: float = 0.2,
) -> AttackResult:
    """Train ``attacker`` on the shadow users of one attribute and score it on the rest.

    Args:
        attacker: Any :class:`Attacker` (refit from scratch here).
        X: User representations ``[num_users, d]``.
        codes: Attribute codes ``[num_users]``, ``-1`` unknown.
        shadow: Bool ``[num_users]`` shadow mask.
        num_classes: Classes of the attribute (full class list).
        attribute: Name for the result.
        seed: Seed of the train/validation split.
        val_fraction: Share of shadow users held out for early stopping.

    Returns:
        The scores on the labelled non-shadow users.

    Raises:
        ValueError: Non-finite ``X``, mismatched sizes, fewer than two classes among labelled
            shadow users, or no labelled non-shadow user to test on.
    """
    feats = as_features(X)
    train, val, test = shadow_split(codes, shadow, val_fraction, seed)
    y = np.asarray(codes.detach().cpu() if isinstance(codes, Tensor) else codes).astype(np.int64)
    if feats.shape[0] != y.size:
        raise ValueError(f"X has {feats.shape[0]} users but attribute {attribute!r} has {y.size}")
    known = np.concatenate([train, val])
    present = np.unique(y[known])
    if present.size < 2:
        raise ValueError(
            f"attribute {attribute!r}: labelled shadow users hold {present.size} class(es) "
            f"{present.tolist()}; an attacker needs at least 2 (enlarge the shadow set)"
        )
    if test.size == 0:
        raise ValueError(
            f"attribute {attribute!r}: no non-shadow user has a known label, nothing to test on"
        )
    attacker.fit(feats[train], y[train], feats[val], y[val], num_classes)
    proba = attacker.predict_proba(feats[test])
    scores = attack_scores(y[test], proba, majority_class(y[known]))
    return AttackResult(
        attribute=attribute,
        attacker=attacker.name,
        num_classes=num_classes,
        n_train=int(train.size),
        n_val=int(val.size),
        n_test=int(test.size),
        **scores,
    )


def audit_embeddings(
    X: Tensor,
    attributes: UserAttributes,
    attackers: Sequence[Attacker] | None = None,
    names: Sequence[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> list[AttackResult]:
    """Run every attacker against every (selected) attribute.

    Args:
        X: User representations ``[num_users, d]`` (the vectors the model scores with),
            aligned with ``attributes``.
        attributes: Codes, class lists and shadow mask.
        attackers: Attackers to run; default :func:`default_attackers` seeded with ``seed``.
        names: Attributes to audit, default all in ``attributes.names`` order.
        seed: Seed of the shadow train/validation split and of the default attackers.
        val_fraction: Share of shadow users held out for early stopping.

    Returns:
        One result per (attribute, attacker), attributes outermost.

    Raises:
        KeyError: An unknown attribute name (the message lists the available ones).
        ValueError: Bad shapes, non-finite ``X``, or an attribute that cannot be attacked.
    """
    feats = as_features(X)
    if feats.shape[0] != attributes.num_users:
        raise ValueError(
            f"X has {feats.shape[0]} users but the attributes describe {attributes.num_users}"
        )
    selected = list(attributes.names if names is None else names)
    if not selected:
        raise ValueError("no attribute to audit (names is empty)")
    for name in selected:
        attributes.num_classes(name)  # raises KeyError listing the available names
    if len(set(selected)) != len(selected):
        raise ValueError(f"duplicate attribute names in {selected}")
    run = default_attackers(seed) if attackers is None else list(attackers)
    if not run:
        raise ValueError("no attacker to run (attackers is empty)")
    results = []
    for name in selected:
        for attacker in run:
            results.append(
                attack_attribute(
                    attacker,
                    feats,
                    attributes.codes[name],
                    attributes.shadow,
                    attributes.num_classes(name),
                    attribute=name,
                    seed=seed,
                    val_fraction=val_fraction,
                )
            )
    return results


_TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("attribute", "attribute"),
    ("attacker", "attacker"),
    ("num_classes", "classes"),
    ("n_train", "train"),
    ("n_test", "test"),
    ("accuracy", "acc"),
    ("majority_accuracy", "majority acc"),
    ("balanced_accuracy", "bal. acc"),
    ("chance", "chance"),
    ("macro_f1", "macro-F1"),
    ("auc", "AUC"),
    ("leakage", "leakage"),
)


def results_to_markdown(results: Sequence[AttackResult]) -> str:
    """A GitHub-flavoured markdown table, one row per result, floats to 3 decimals.

    Rendered by :func:`lit_unlearn.reporting.markdown_table`, like every table of the package.
    ``leakage`` is ``|AUC - 0.5| * 2``; compare ``bal. acc`` with ``chance`` and ``acc`` with
    ``majority acc``.
    """
    from lit_unlearn.reporting.tables import markdown_table

    frame = results_to_frame(results)[[key for key, _ in _TABLE_COLUMNS]]
    return markdown_table(frame, digits=3, headers=[title for _, title in _TABLE_COLUMNS]) + "\n"


def results_to_frame(results: Sequence[AttackResult]) -> pd.DataFrame:
    """A :class:`pandas.DataFrame` with one row per result and every :class:`AttackResult` field."""
    import pandas as pd  # only needed here; keeps `import lit_unlearn.attacks` light

    columns = ["attribute", "attacker", *AttackResult.metric_names()]
    return pd.DataFrame([r.as_dict() for r in results], columns=columns)
