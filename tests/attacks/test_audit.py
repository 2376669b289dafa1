"""Attribute-inference attackers, their scores and the audit protocol."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
)

from lit_unlearn.attacks import (
    Attacker,
    AttackResult,
    MLPAttacker,
    XGBoostAttacker,
    attack_attribute,
    audit_embeddings,
    default_attackers,
    make_attacker,
    results_to_frame,
    results_to_markdown,
    shadow_split,
)
from lit_unlearn.attacks import scores as S
from lit_unlearn.datamodules.containers import UserAttributes

# Small budgets keep the file fast; the signal in the planted tests is strong enough for them.
FAST: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": 32, "max_epochs": 60, "patience": 10},
    # one thread: on tiny data (and a busy 2-core CI box) OpenMP barriers cost more than they save
    "xgboost": {"n_estimators": 40, "early_stopping_rounds": 10, "n_jobs": 1},
}


def fast_attackers(seed: int = 0) -> list[Attacker]:
    return [make_attacker(name, seed=seed, **kwargs) for name, kwargs in FAST.items()]


def gaussian_users(
    n: int = 600,
    dim: int = 8,
    num_classes: int = 2,
    signal: float = 3.0,
    shadow_frac: float = 0.4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings around per-class means ``signal`` apart (0 = pure noise), labels, shadow mask."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    means = rng.normal(size=(num_classes, dim))
    means *= signal / np.linalg.norm(means, axis=1, keepdims=True)
    X = means[y] + rng.normal(size=(n, dim))
    shadow = rng.random(n) < shadow_frac
    return X.astype(np.float32), y, shadow


def user_attributes(
    codes: dict[str, np.ndarray], num_classes: dict[str, int], shadow: np.ndarray
) -> UserAttributes:
    return UserAttributes(
        codes={k: torch.as_tensor(v, dtype=torch.long) for k, v in codes.items()},
        classes={k: [f"c{i}" for i in range(num_classes[k])] for k in codes},
        shadow=torch.as_tensor(shadow, dtype=torch.bool),
    )


def softmax_rows(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    z = rng.normal(size=(n, c))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------------- scores


def test_scores_hand_computed() -> None:
    y_true = [0, 0, 0, 1]
    y_pred = [0, 0, 1, 1]
    assert S.accuracy(y_true, y_pred) == pytest.approx(0.75)
    assert S.balanced_accuracy(y_true, y_pred) == pytest.approx((2 / 3 + 1) / 2)
    assert S.micro_f1(y_true, y_pred) == pytest.approx(0.75)
    # class 0: tp 2, fp 0, fn 1 -> 4/5; class 1: tp 1, fp 1, fn 0 -> 2/3
    assert S.macro_f1(y_true, y_pred) == pytest.approx((0.8 + 2 / 3) / 2)
    # positives score 0.35 and 0.8 against negatives 0.1, 0.4: 3 of 4 pairs ordered
    assert S.binary_auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie counts half
    assert S.binary_auc([False, True], [0.5, 0.5]) == pytest.approx(0.5)
    assert S.leakage(0.5) == 0.0
    assert S.leakage(0.38) == pytest.approx(0.24)
    assert S.leakage(0.62) == pytest.approx(0.24)
    assert S.leakage(0.0) == S.leakage(1.0) == 1.0
    assert S.chance_level(7) == pytest.approx(1 / 7)
    assert S.majority_class([2, 1, 1, 2, 0]) == 1  # tie between 1 and 2 -> smallest code
    acc, bacc = S.majority_baseline([0, 0, 1, 2], 0)
    assert (acc, bacc) == (pytest.approx(0.5), pytest.approx(1 / 3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_sklearn_binary(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    proba = softmax_rows(rng, 200, 2)
    # coarse scores create ties, which the rank-based AUC must average like sklearn
    proba = np.round(proba, 1)
    pred = rng.integers(0, 2, 200)
    assert S.accuracy(y, pred) == pytest.approx(accuracy_score(y, pred))
    assert S.balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    assert S.micro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="micro"))
    assert S.macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro"))
    assert S.roc_auc(y, proba) == pytest.approx(roc_auc_score(y, proba[:, 1]))


@pytest.mark.parametrize("seed", [0, 1])
def test_scores_match_sklearn_multiclass(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 300)
    proba = softmax_rows(rng, 300, 5)
    pred = proba.argmax(axis=1)
    assert S.balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    assert S.macro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="macro"))
    assert S.micro_f1(y, pred) == pytest.approx(f1_score(y, pred, average="micro"))
    expected = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=range(5))
    assert S.roc_auc(y, proba) == pytest.approx(expected)
    per_class = S.per_class_auc(y, proba)
    for c in range(5):
        assert per_class[c] == pytest.approx(roc_auc_score(y == c, proba[:, c]))


def test_scores_class_absent_from_y_true() -> None:
    rng = np.random.default_rng(3)
    y = rng.choice([0, 1, 3], size=250)  # class 2 of 4 never occurs among the test users
    proba = softmax_rows(rng, 250, 4)
    pred = proba.argmax(axis=1)
    assert (pred == 2).any()  # predictions of the absent class do occur
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about y_pred classes not in y_true
        ref_bacc = balanced_accuracy_score(y, pred)
        ref_macro = f1_score(y, pred, average="macro")
    assert S.balanced_accuracy(y, pred) == pytest.approx(ref_bacc)
    assert S.macro_f1(y, pred) == pytest.approx(ref_macro)
    # one-vs-rest over the classes present in y_true only
    ref_auc = np.mean([roc_auc_score(y == c, proba[:, c]) for c in (0, 1, 3)])
    assert S.roc_auc(y, proba) == pytest.approx(ref_auc)
    assert np.isnan(S.per_class_auc(y, proba)[2])


def test_scores_degenerate_inputs() -> None:
    # One class among the test users: AUC (and so leakage) is undefined, not 0.5.
    proba = np.array([[0.3, 0.7], [0.6, 0.4]])
    assert np.isnan(S.roc_auc([1, 1], proba))
    assert np.isnan(S.leakage(S.roc_auc([1, 1], proba)))
    with pytest.raises(ValueError, match="unknown"):
        S.accuracy([0, -1], [0, 0])
    with pytest.raises(ValueError, match="empty"):
        S.balanced_accuracy([], [])
    with pytest.raises(ValueError, match="column"):
        S.roc_auc([0, 2], proba)


# --------------------------------------------------------------------------------- protocol


def test_shadow_split_is_disjoint_stratified_and_skips_unknown() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(-1, 3, 500)  # about a quarter unknown
    shadow = rng.random(500) < 0.5
    train, val, test = shadow_split(y, shadow, val_fraction=0.2, seed=0)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert set(train) | set(val) == set(np.flatnonzero(shadow & (y >= 0)))
    assert set(test) == set(np.flatnonzero(~shadow & (y >= 0)))
    for c in range(3):
        n_c = np.sum(shadow & (y == c))
        assert np.sum(y[val] == c) == int(np.floor(0.2 * n_c + 0.5))
    again = shadow_split(y, shadow, val_fraction=0.2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(val, shadow_split(y, shadow, val_fraction=0.2, seed=1)[1])
    # a class with one shadow user keeps it for training
    y_small = np.array([0, 0, 0, 0, 0, 1, 0, 1])
    tr, va, _ = shadow_split(y_small, np.array([True] * 6 + [False] * 2), 0.5, seed=0)
    assert 5 in tr and 5 not in va


class SpyAttacker(MLPAttacker):
    """Records which users the protocol shows it, by the user id planted in feature 0."""

    name = "spy"

    def fit(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any, num_classes: int) -> Attacker:
        self.seen_train = np.asarray(X_train)[:, 0].round().astype(int)
        self.seen_val = np.asarray(X_val)[:, 0].round().astype(int)
        return super().fit(X_train, y_train, X_val, y_val, num_classes)

    def predict_proba(self, X: Any) -> np.ndarray:
        self.seen_test = np.asarray(X)[:, 0].round().astype(int)
        return super().predict_proba(X)


def test_protocol_hygiene_users_seen_by_the_attacker() -> None:
    X, y, shadow = gaussian_users(n=300, signal=2.0)
    y = y.copy()
    y[::7] = -1  # unknown labels never reach the attacker
    X = np.concatenate([np.arange(300, dtype=np.float32)[:, None], X], axis=1)
    spy = SpyAttacker(max_epochs=5)
    result = attack_attribute(spy, X, y, shadow, 2, attribute="gender")
    known = y >= 0
    assert set(spy.seen_train) | set(spy.seen_val) == set(np.flatnonzero(shadow & known))
    assert not set(spy.seen_train) & set(spy.seen_val)
    assert set(spy.seen_test) == set(np.flatnonzero(~shadow & known))
    assert (result.n_train, result.n_val, result.n_test) == (
        spy.seen_train.size,
        spy.seen_val.size,
        spy.seen_test.size,
    )
    # standardised with the training users' statistics only
    assert spy._mean is not None
    np.testing.assert_allclose(spy._mean, X[spy.seen_train].astype(np.float64).mean(axis=0))


# --------------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("name", ["mlp", "xgboost"])
@pytest.mark.parametrize("num_classes", [2, 4])
def test_planted_leakage_is_found(name: str, num_classes: int) -> None:
    X, y, shadow = gaussian_users(num_classes=num_classes, signal=4.0, seed=num_classes)
    attacker = make_attacker(name, **FAST[name])
    result = attack_attribute(attacker, X, y, shadow, num_classes, attribute="a")
    assert result.balanced_accuracy > 0.8
    assert result.leakage > 0.8
    assert result.balanced_accuracy > result.chance + 0.3


@pytest.mark.parametrize("name", ["mlp", "xgboost"])
def test_noise_embeddings_stay_near_chance(name: str) -> None:
    X, y, shadow = gaussian_users(n=1000, signal=0.0, shadow_frac=0.4, seed=5)
    attacker = make_attacker(name, **FAST[name])
    result = attack_attribute(attacker, X, y, shadow, 2, attribute="a")
    assert abs(result.balanced_accuracy - result.chance) < 0.1
    assert result.leakage < 0.15


def test_skewed_attribute_majority_baseline() -> None:
    # 80/20 attribute with no signal: accuracy can look good, balanced accuracy must not.
    rng = np.random.default_rng(0)
    y = (rng.random(800) < 0.2).astype(int)
    X = rng.normal(size=(800, 6))
    shadow = rng.random(800) < 0.5
    result = attack_attribute(MLPAttacker(**FAST["mlp"]), X, y, shadow, 2)
    assert result.majority_accuracy == pytest.approx(np.mean(y[~shadow] == 0))
    assert result.majority_balanced_accuracy == pytest.approx(0.5)
    assert abs(result.balanced_accuracy - 0.5) < 0.1


@pytest.mark.parametrize("name", ["mlp", "xgboost"])
def test_flipped_attacker_still_leaks(name: str) -> None:
    # The embedding-attribute relation among test users is the inverse of the shadow users'
    # (e.g. an unlearning method that overshot): AUC far below 0.5 is still leakage.
    X, y, shadow = gaussian_users(signal=4.0, seed=7)
    y_flipped = np.where(shadow, y, 1 - y)
    result = attack_attribute(make_attacker(name, **FAST[name]), X, y_flipped, shadow, 2)
    assert result.auc < 0.15
    assert result.balanced_accuracy < 0.2
    assert result.leakage > 0.7


@pytest.mark.parametrize("name", ["mlp", "xgboost"])
def test_class_missing_from_shadow_set(name: str) -> None:
    X, y, shadow = gaussian_users(num_classes=3, signal=4.0, seed=11)
    shadow = shadow & (y != 1)  # no shadow user of class 1; test users still have it
    attacker = make_attacker(name, **FAST[name])
    result = attack_attribute(attacker, X, y, shadow, 3)
    proba = attacker.predict_proba(X[~shadow])
    assert proba.shape == (int((~shadow).sum()), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(proba[:, 1] == 0.0)
    assert result.num_classes == 3 and result.chance == pytest.approx(1 / 3)
    # the two learnable classes are recovered, class 1 never is: recall (1 + 0 + 1) / 3 or so
    assert 0.5 < result.balanced_accuracy < 0.75


def test_attackers_are_deterministic_and_leave_global_rng_alone() -> None:
    X, y, shadow = gaussian_users(n=400, num_classes=3, signal=1.0, seed=3)
    y2 = (X[:, 0] > 0).astype(int)
    attrs = user_attributes({"a": y, "b": y2}, {"a": 3, "b": 2}, shadow)
    state = torch.get_rng_state()
    first = audit_embeddings(torch.as_tensor(X), attrs, fast_attackers())
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(1234)
    np.random.seed(1234)
    second = audit_embeddings(torch.as_tensor(X), attrs, fast_attackers())
    assert [r.as_dict() for r in first] == [r.as_dict() for r in second]
    # one attacker instance refit across attributes gives the same as fresh instances
    only_b = audit_embeddings(torch.as_tensor(X), attrs, fast_attackers(), names=["b"])
    assert [r.as_dict() for r in only_b] == [r.as_dict() for r in first[2:]]


def test_mlp_variants_and_no_validation() -> None:
    X, y, _ = gaussian_users(n=200, signal=4.0)
    logistic = MLPAttacker(
        layers=1, lr=0.05, batch_size=10_000, max_epochs=100, monitor="balanced_accuracy"
    )
    logistic.fit(X[:150], y[:150], X[150:170], y[150:170], 2)
    assert len(logistic.model_ or []) == 1
    assert S.balanced_accuracy(y[170:], logistic.predict_proba(X[170:]).argmax(1)) > 0.8
    unvalidated = MLPAttacker(max_epochs=7).fit(X[:150], y[:150], None, None, 2)
    assert isinstance(unvalidated, MLPAttacker) and unvalidated.epochs_ == 7
    xgb = XGBoostAttacker(n_estimators=10, class_weight="none", n_jobs=1).fit(
        X[:150], y[:150], None, None, 2
    )
    assert xgb.predict_proba(X[150:]).shape == (50, 2)


# ----------------------------------------------------------------------------------- errors


def test_input_errors() -> None:
    X, y, shadow = gaussian_users(n=120)
    attrs = user_attributes({"gender": y}, {"gender": 2}, shadow)
    bad = torch.as_tensor(X).clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        audit_embeddings(bad, attrs, fast_attackers())
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        MLPAttacker().fit(bad, y, None, None, 2)
    with pytest.raises(KeyError, match="gender"):
        audit_embeddings(torch.as_tensor(X), attrs, fast_attackers(), names=["age"])
    with pytest.raises(ValueError, match="users"):
        audit_embeddings(torch.as_tensor(X[:-1]), attrs, fast_attackers())
    with pytest.raises(ValueError, match="at least 2"):
        attack_attribute(MLPAttacker(), X, np.where(shadow, 0, y), shadow, 2)
    with pytest.raises(ValueError, match="nothing to test on"):
        attack_attribute(MLPAttacker(), X, np.where(shadow, y, -1), shadow, 2)
    with pytest.raises(ValueError, match="at least 2"):
        MLPAttacker().fit(X, np.zeros(len(X), dtype=int), None, None, 2)
    with pytest.raises(ValueError, match=r"codes in \[0, 2\)"):
        MLPAttacker().fit(X, y - 1, None, None, 2)
    with pytest.raises(ValueError, match="unknown attacker"):
        make_attacker("svm")
    with pytest.raises(RuntimeError, match="fit"):
        MLPAttacker().predict_proba(X)
    with pytest.raises(ValueError, match="hidden"):
        MLPAttacker(hidden=0)
    with pytest.raises(ValueError, match="subsample"):
        XGBoostAttacker(subsample=0.0)


def test_missing_xgboost_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xgboost", None)  # makes `import xgboost` fail
    with pytest.raises(ImportError, match=r"pip install lit-unlearn\[xgboost-cpu\]"):
        XGBoostAttacker()
    with pytest.warns(UserWarning, match="MLP attacker only"):
        attackers = default_attackers()
    assert [a.name for a in attackers] == ["mlp"]


# ----------------------------------------------------------------------------------- tables


def test_result_tables() -> None:
    X, y, shadow = gaussian_users(n=200, signal=3.0)
    attrs = user_attributes(
        {"gender": y, "age": (X[:, 1] > 0).astype(int)}, {"gender": 2, "age": 2}, shadow
    )
    results = audit_embeddings(torch.as_tensor(X), attrs, fast_attackers())
    assert [(r.attribute, r.attacker) for r in results] == [
        ("gender", "mlp"),
        ("gender", "xgboost"),
        ("age", "mlp"),
        ("age", "xgboost"),
    ]
    frame = results_to_frame(results)
    assert list(frame.columns) == list(results[0].as_dict())
    assert len(frame) == 4
    assert frame["balanced_accuracy"].tolist() == [r.balanced_accuracy for r in results]
    markdown = results_to_markdown(results)
    lines = markdown.strip().splitlines()
    assert len(lines) == 2 + 4 and "bal. acc" in lines[0] and "leakage" in lines[0]
    assert AttackResult.from_dict(results[0].as_dict()) == results[0]
    assert list(results_to_frame([]).columns) == list(frame.columns)


def test_default_attackers_run() -> None:
    X, y, shadow = gaussian_users(n=200, signal=4.0, seed=2)
    attrs = user_attributes({"gender": y}, {"gender": 2}, shadow)
    results = audit_embeddings(torch.as_tensor(X), attrs, seed=3)
    assert [r.attacker for r in results] == ["mlp", "xgboost"]
    assert all(r.balanced_accuracy > 0.8 for r in results)
