"""Flip-aware leakage, the shadow and k-fold protocols, the permutation null, the CLI (issue 23)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from lit_unlearn.attacks import (
    ATTACKERS,
    KNNAttacker,
    LogisticRegressionAttacker,
    attack_attribute,
    make_attacker,
    shadow_split,
)
from lit_unlearn.attacks import scores as S
from lit_unlearn.attacks.base import Attacker
from lit_unlearn.attacks.export import load_exported, save_exported
from lit_unlearn.attacks.leakage import (
    MethodAwareAttacker,
    apply_flips,
    check_folds,
    flip_rule,
    leakage_scores,
    main,
    measure_leakage,
    run_protocol,
)
from lit_unlearn.attacks.scores import balanced_accuracy


def planted(
    n: int = 400, dim: int = 6, num_classes: int = 2, signal: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users around class means ``signal`` apart (0: pure noise), labels, a 40% shadow mask."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    means = rng.normal(size=(num_classes, dim))
    means *= signal / np.linalg.norm(means, axis=1, keepdims=True)
    return means[y] + rng.normal(size=(n, dim)), y, rng.random(n) < 0.4


def inverted(
    n: int = 400, dim: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary attribute whose class means are mirrored for every user the attacker holds out.

    The shadow-train users carry ``+mu`` for class 1 and ``-mu`` for class 0; the validation and
    test users the opposite (what matching population class statistics does to held-out parts).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    shadow = rng.random(n) < 0.4
    train, _, _ = shadow_split(y, shadow, 0.2, seed)
    side = np.full(n, -1.0)
    side[train] = 1.0
    mu = np.zeros(dim)
    mu[0] = 2.0
    X = rng.normal(size=(n, dim)) + (side * (2 * y - 1))[:, None] * mu
    return X, y, shadow


# ------------------------------------------------------------------------------------ scores


def test_multiclass_leakage_is_the_mean_of_per_class_distances_from_chance() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array(
        [
            [1.0, 1.0, 0.3],  # column 0 ranks class 0 first: AUC_0 = 1
            [1.0, 1.0, 0.3],
            [0.0, 0.0, 0.3],  # column 1 ranks class 1 last: AUC_1 = 0
            [0.0, 0.0, 0.3],
            [0.0, 1.0, 0.3],  # column 2 is constant: AUC_2 = 0.5
            [0.0, 1.0, 0.3],
        ]
    )
    out = leakage_scores(y, scores)
    expected = [roc_auc_score(y == c, scores[:, c]) for c in range(3)]
    assert out.class_aucs == pytest.approx(expected) and expected == [1.0, 0.0, 0.5]
    assert out.auc == pytest.approx(0.5)  # the signed macro AUC sits at chance ...
    assert out.leakage == pytest.approx((1 + 1 + 0) / 3)  # ... but two classes leak fully
    assert S.leakage(S.roc_auc(y, scores)) == pytest.approx(0.0)  # what |macro - 0.5| misses


def test_binary_leakage_is_flip_aware_and_perfect_separation_gives_one() -> None:
    y = np.array([0, 0, 1, 1])
    right = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9]])
    wrong = right[:, ::-1]
    assert leakage_scores(y, right).auc == 1.0 and leakage_scores(y, right).leakage == 1.0
    assert leakage_scores(y, wrong).auc == 0.0 and leakage_scores(y, wrong).leakage == 1.0
    tied = np.full((4, 2), 0.5)
    assert leakage_scores(y, tied).leakage == 0.0


def test_perfectly_separable_users_give_leakage_one_under_both_protocols() -> None:
    X, y, shadow = planted(n=200, signal=30.0)
    for protocol in ("shadow", "kfold"):
        row = measure_leakage(
            make_attacker("logreg"), X, y, 2, protocol=protocol, shadow=shadow, n_permutations=0
        )
        assert row.leakage == 1.0 and row.auc == 1.0 and row.balanced_accuracy == 1.0
        assert np.isnan(row.null_leakage_p95)  # no permutations: no floor


def test_flip_rule_and_the_renormalised_reversal() -> None:
    y_val = np.array([0, 0, 1, 1])
    assert flip_rule(y_val, np.array([[0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]])).all()
    assert not flip_rule(y_val, np.array([[0.8, 0.2], [0.7, 0.3], [0.4, 0.6], [0.1, 0.9]])).any()
    assert not flip_rule(y_val[:0], np.zeros((0, 2))).any()  # no validation users: no flip
    # binary: 1 - p swaps the columns
    p = np.array([[0.7, 0.3], [0.1, 0.9]])
    np.testing.assert_allclose(apply_flips(p, [True, True]), p[:, ::-1])
    # multi-class: reverse the flipped class's score, renormalise the row
    q = np.array([[0.5, 0.3, 0.2], [0.0, 1.0, 0.0]])
    out = apply_flips(q, [False, True, False])
    np.testing.assert_allclose(out[0], np.array([0.5, 0.7, 0.2]) / 1.4)
    np.testing.assert_allclose(out[1], [1 / 3] * 3)  # every score 0 after the flip: uniform
    # multi-class: exactly the classes whose one-vs-rest validation AUC is below 0.5
    rng = np.random.default_rng(0)
    y3 = rng.integers(0, 4, 40)
    scores3 = rng.random((40, 4))
    aucs = S.per_class_auc(y3, scores3)
    assert (aucs < 0.5).any() and (aucs > 0.5).any()
    assert flip_rule(y3, scores3).tolist() == (aucs < 0.5).tolist()


# ------------------------------------------------------------------- inversion vs noise


def test_inverted_signal_leaks_although_balanced_accuracy_is_below_chance() -> None:
    X, y, shadow = inverted()
    row = measure_leakage(
        make_attacker("logreg"),
        X,
        y,
        2,
        "gender",
        protocol="shadow",
        shadow=shadow,
        n_permutations=5,
    )
    assert row.balanced_accuracy < 0.2  # looks "private" to a balanced-accuracy audit
    assert row.auc < 0.1 and row.leakage > 0.8  # but the attribute is there, inverted
    assert row.leakage > row.null_leakage_p95 + 0.5
    assert row.method_aware_balanced_accuracy > 0.85  # flipping recovers it
    assert row.n_users == int((~shadow).sum()) and row.chance == 0.5


def test_method_aware_attacker_flips_only_when_validation_ranks_inverted() -> None:
    X, y, shadow = inverted()
    train, val, test = shadow_split(y, shadow, 0.2, 0)
    plain = make_attacker("logreg").fit(X[train], y[train], X[val], y[val], 2)
    aware = MethodAwareAttacker(make_attacker("logreg"))
    aware.fit(X[train], y[train], X[val], y[val], 2)
    assert aware.flips_ is not None and aware.flips_.all()
    assert balanced_accuracy(y[test], plain.predict_proba(X[test]).argmax(1)) < 0.2
    assert balanced_accuracy(y[test], aware.predict_proba(X[test]).argmax(1)) > 0.85
    Xs, ys, shadow_s = planted()  # a plain signal: nothing to flip, same predictions
    tr, va, te = shadow_split(ys, shadow_s, 0.2, 0)
    aware.fit(Xs[tr], ys[tr], Xs[va], ys[va], 2)
    assert aware.flips_ is not None and not aware.flips_.any()
    base = make_attacker("logreg").fit(Xs[tr], ys[tr], Xs[va], ys[va], 2)
    np.testing.assert_allclose(aware.predict_proba(Xs[te]), base.predict_proba(Xs[te]), atol=1e-6)


def test_noise_leakage_stays_within_the_permutation_null() -> None:
    X, y, _ = planted(signal=0.0)
    row = measure_leakage(make_attacker("logreg"), X, y, 2, protocol="kfold", n_permutations=19)
    assert row.n_permutations == 19 and 0 < row.null_leakage_mean < row.null_leakage_p95
    assert row.leakage <= row.null_leakage_p95
    assert row.balanced_accuracy <= row.null_balanced_accuracy_p95
    assert abs(row.null_balanced_accuracy_mean - 0.5) < 0.03


# ----------------------------------------------------------------------------- protocols


class Recording(Attacker):
    """Logistic regression that records which users (column 0 holds the row id) it trained on."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.inner = LogisticRegressionAttacker()
        self.seen: list[set[int]] = []

    def fit(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any, num_classes: int) -> Attacker:
        self.seen.append({int(i) for i in np.concatenate([X_train[:, 0], X_val[:, 0]])})
        return super().fit(X_train, y_train, X_val, y_val, num_classes)

    def _fit(self, X: Any, y: Any, X_val: Any, y_val: Any, num_classes: int) -> None:
        self.inner.fit(X[:, 1:], y, X_val[:, 1:], y_val, num_classes)

    def _predict_proba(self, X: Any) -> Any:
        return self.inner.predict_proba(X[:, 1:])


def test_kfold_pools_every_labelled_user_exactly_once_from_an_attacker_that_never_saw_it() -> None:
    X, y, _ = planted(n=150, num_classes=3)
    y[::7] = -1  # unknown labels take no part
    ids = np.arange(y.size, dtype=np.float64)[:, None]
    attacker = Recording()
    pred = run_protocol(attacker, np.hstack([ids, X]), y, 3, protocol="kfold", n_folds=5)
    labelled = np.flatnonzero(y >= 0)
    assert pred.n_fits == 5 and len(attacker.seen) == 5
    assert np.sort(pred.users).tolist() == labelled.tolist()  # each labelled user once
    np.testing.assert_array_equal(pred.y_true, y[pred.users])
    assert pred.proba.shape == pred.method_aware_proba.shape == (labelled.size, 3)
    sizes = [len(s) for s in attacker.seen]
    folds = np.split(pred.users, np.cumsum([labelled.size - s for s in sizes])[:-1])
    for seen, fold in zip(attacker.seen, folds, strict=True):
        assert seen.isdisjoint(fold.tolist()) and len(seen) + fold.size == labelled.size


def test_repeated_kfold_pools_every_fold_draw() -> None:
    """repeats=R: R k-fold draws (seeds seed, seed + 1, ...), each user scored once per draw;
    R = 1 is the plain k-fold; the result row counts users once and records R."""
    X, y, _ = planted(n=150, num_classes=3)
    ids = np.arange(y.size, dtype=np.float64)[:, None]
    feats = np.hstack([ids, X])
    once = run_protocol(Recording(), feats, y, 3, protocol="kfold", seed=4)
    same = run_protocol(Recording(), feats, y, 3, protocol="kfold", seed=4, repeats=1)
    np.testing.assert_array_equal(once.users, same.users)
    np.testing.assert_array_equal(once.proba, same.proba)
    attacker = Recording()
    pred = run_protocol(attacker, feats, y, 3, protocol="kfold", seed=4, repeats=3)
    assert pred.n_fits == 15 and len(attacker.seen) == 15
    assert np.bincount(pred.users, minlength=y.size).tolist() == [3] * y.size
    second = run_protocol(Recording(), feats, y, 3, protocol="kfold", seed=5)
    np.testing.assert_array_equal(pred.users[: y.size], once.users)  # draw 0: seed 4
    np.testing.assert_array_equal(pred.users[y.size : 2 * y.size], second.users)  # seed 5
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="repeats"):
            run_protocol(Recording(), feats, y, 3, protocol="kfold", repeats=bad)  # type: ignore[arg-type]
    row = measure_leakage(Recording(), feats, y, 3, n_permutations=1, repeats=2)
    assert row.n_users == y.size and row.kfold_repeats == 2
    shadow = np.arange(y.size) % 3 == 0
    row = measure_leakage(
        Recording(), feats, y, 3, protocol="shadow", shadow=shadow, n_permutations=0, repeats=2
    )
    assert row.kfold_repeats == 1  # the shadow split is one fixed draw


def test_shadow_protocol_scores_the_non_shadow_users() -> None:
    X, y, shadow = planted()
    pred = run_protocol(make_attacker("knn"), X, y, 2, protocol="shadow", shadow=shadow)
    assert pred.users.tolist() == np.flatnonzero(~shadow).tolist() and pred.n_fits == 1


# ----------------------------------------------------------------------------- attackers


@pytest.mark.parametrize("name", ["logreg", "knn"])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_new_attackers_beat_chance_on_separable_data(name: str, num_classes: int) -> None:
    assert name in ATTACKERS
    X, y, shadow = planted(n=500, num_classes=num_classes, signal=4.0)
    result = attack_attribute(make_attacker(name, seed=1), X, y, shadow, num_classes)
    assert result.attacker == name
    assert result.balanced_accuracy > 1 / num_classes + 0.35 and result.auc > 0.9
    # seeded and deterministic: a second attacker gives the same probabilities
    train, val, test = shadow_split(y, shadow, 0.2, 0)
    a, b = make_attacker(name, seed=1), make_attacker(name, seed=1)
    pa = a.fit(X[train], y[train], X[val], y[val], num_classes).predict_proba(X[test])
    pb = b.fit(X[train], y[train], X[val], y[val], num_classes).predict_proba(X[test])
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_allclose(pa.sum(axis=1), 1.0)


def test_knn_picks_k_on_validation_and_new_attackers_fill_unseen_classes() -> None:
    X, y, shadow = planted(n=300)
    train, val, _ = shadow_split(y, shadow, 0.2, 0)
    knn = KNNAttacker(ks=(3, 7, 500))
    knn.fit(X[train], y[train], X[val], y[val], 3)
    assert knn.k_ in (3, 7, min(500, train.size))
    assert (knn.predict_proba(X[:5])[:, 2] == 0).all()  # class 2 never seen: probability 0
    lr = LogisticRegressionAttacker().fit(X[train], y[train], None, None, 3)
    assert lr.predict_proba(X[:5]).shape == (5, 3) and (lr.predict_proba(X[:5])[:, 2] == 0).all()
    with pytest.raises(ValueError, match="ks"):
        KNNAttacker(ks=())
    with pytest.raises(ValueError, match="C must be"):
        LogisticRegressionAttacker(C=0.0)


# ---------------------------------------------------------------------- files and the CLI


def write_exports(tmp_path: Path, n: int = 240) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """An outside auditor's files: ids in another order in the CSV, some unknown ages."""
    X, gender, _ = planted(n=n, signal=3.0)
    age = np.random.default_rng(1).integers(0, 3, n)
    ids = np.array([f"u{1000 + i}" for i in range(n)])
    reps = tmp_path / "reps.npz"
    X = X.astype(np.float32)
    np.savez(reps, user_ids=ids, representations=X)
    order = np.random.default_rng(2).permutation(n)
    ages = np.array(["a", "b", "c"], dtype=object)[age]
    ages[::11] = ""
    frame = pd.DataFrame(
        {"uid": ids[order], "gender": np.array(["F", "M"])[gender][order], "age": ages[order]}
    )
    attrs = tmp_path / "attrs.csv"
    frame.to_csv(attrs, index=False)
    return reps, attrs, X, gender


def test_cli_round_trip_on_exported_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reps, attrs, X, gender = write_exports(tmp_path)
    out = tmp_path / "out"
    argv = f"--representations {reps} --attributes {attrs} --attackers logreg knn --protocols"
    argv += f" shadow kfold --permutations 2 --folds 3 --id-column uid --out {out}"
    results = main([*argv.split(), "--attacker-args", '{"knn": {"ks": [3, 9]}}'])
    table = pd.read_csv(out / "leakage.csv")
    assert len(results) == len(table) == 2 * 2 * 2
    assert set(zip(table.attribute, table.attacker, table.protocol, strict=True)) == {
        (a, k, p) for a in ("gender", "age") for k in ("logreg", "knn") for p in ("shadow", "kfold")
    }
    assert (out / "leakage.md").read_text().startswith("# Attribute leakage")
    assert "| gender | logreg | kfold |" in capsys.readouterr().out
    g = table[table.attribute == "gender"]
    assert (g.leakage > g.null_leakage_p95).all() and (g.balanced_accuracy > 0.8).all()
    age_kfold = table[(table.attribute == "age") & (table.protocol == "kfold")]
    assert (age_kfold.n_users == 240 - 22).all()  # every 11th age is unknown
    # the ids were matched: the same numbers as the functions on the aligned arrays
    direct = measure_leakage(
        make_attacker("logreg"), X, gender, 2, protocol="kfold", n_permutations=2, n_folds=3
    )
    row = g[(g.attacker == "logreg") & (g.protocol == "kfold")].iloc[0]
    assert row.leakage == pytest.approx(direct.leakage)
    assert row.null_leakage_p95 == pytest.approx(direct.null_leakage_p95)


def test_export_round_trip_keeps_ids_labels_and_shadow(tmp_path: Path) -> None:
    X, y, shadow = planted(n=30)
    codes = {"age": np.where(np.arange(30) % 5 == 0, -1, y), "gender": 1 - y}
    classes = {"age": ["Under 18", "18-24"], "gender": ["M", "F"]}  # not sorted on purpose
    ids = [str(7 * i) for i in range(30)]
    save_exported(tmp_path / "r.npz", tmp_path / "a.csv", ids, X, codes, classes, shadow)
    users = load_exported(tmp_path / "r.npz", tmp_path / "a.csv")
    assert users.user_ids == ids and users.shadow is not None
    np.testing.assert_array_equal(users.shadow, shadow)
    np.testing.assert_allclose(users.representations, X.astype(np.float32))
    for name in codes:
        names_in = [classes[name][c] if c >= 0 else "" for c in codes[name]]
        names_out = [users.classes[name][c] if c >= 0 else "" for c in users.codes[name]]
        assert names_in == names_out
    assert users.classes["age"] == sorted(classes["age"])


def _case(tmp_path: Path, problem: str) -> tuple[Path, Path]:
    X, y, _ = planted(n=40)
    ids = np.array([str(i) for i in range(40)])
    frame = pd.DataFrame({"user_id": ids, "gender": np.array(["F", "M"])[y]})
    if problem == "missing user":
        frame.loc[0, "user_id"] = "ghost"
    elif problem == "nan":
        X[3, 1] = np.nan
    elif problem == "one class":
        frame["gender"] = "F"
    elif problem == "empty":
        frame["gender"] = ""
    elif problem == "duplicate":
        frame.loc[1, "user_id"] = "0"
    elif problem == "shadow":
        frame["shadow"] = "maybe"
    np.savez(tmp_path / "r.npz", user_ids=ids, representations=X)
    if problem == "no key":
        np.savez(tmp_path / "r.npz", ids=ids, representations=X)
    frame.to_csv(tmp_path / "a.csv", index=False)
    return tmp_path / "r.npz", tmp_path / "a.csv"


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing user", r"1 user\(s\) of .* have no representation .*ghost"),
        ("nan", r"1 user\(s\) have NaN/inf features \(e.g. \['3'\]\)"),
        ("one class", r"attribute 'gender' .* 1 class\(es\) \['F'\]"),
        ("empty", r"attribute 'gender' .* 0 class\(es\)"),
        ("duplicate", r"1 duplicate id\(s\), e.g. \['0'\]"),
        ("shadow", r"column 'shadow' holds \['maybe'\]"),
        ("no key", r"missing array\(s\) \['user_ids'\]"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, problem: str, message: str) -> None:
    reps, attrs = _case(tmp_path, problem)
    with pytest.raises(ValueError, match=message):
        load_exported(reps, attrs)


def test_cli_reports_small_classes_and_bad_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    reps, attrs = _case(tmp_path, "none")
    frame = pd.read_csv(attrs, dtype=str)
    frame.loc[:2, "gender"] = "X"  # a class of 3 users cannot fill 5 folds
    frame.to_csv(attrs, index=False)
    base = ["--representations", str(reps), "--attributes", str(attrs), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--attackers", "logreg", "--protocols", "kfold", "--permutations", "0"])
    assert exit_info.value.code == 2
    assert "'X' (3 users)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--columns", "height"])
    assert "no attribute column(s) ['height']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--attackers", "logreg", "--attacker-args", '{"knn": {"ks": [3]}}'])
    assert "--attacker-args for ['knn']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="fewer users than the 5 folds"):
        check_folds(np.array([0] * 10 + [1] * 4), 5)
    X, y, _ = planted(n=40)
    with pytest.raises(ValueError, match="needs a shadow mask"):
        run_protocol(make_attacker("logreg"), X, y, 2, protocol="shadow")
    with pytest.raises(ValueError, match="unknown protocol"):
        run_protocol(make_attacker("logreg"), X, y, 2, protocol="loo")


# ------------------------------------------------------------------------ lit-unlearn audit


def test_audit_subcommand_exports_representations_and_runs_the_leakage_audit(
    tmp_path: Path,
) -> None:
    from lit_unlearn.trainer import UnlearnTrainer
    from tests.attacks.test_callback import TinyData, TinyModel

    data = TinyData()
    trainer = UnlearnTrainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    out = tmp_path / "audit"
    with pytest.warns(UserWarning, match="no user index"):
        rows = trainer.audit(
            TinyModel(data.initial),
            data,
            attributes=["gender"],
            attackers=["logreg"],
            output_dir=str(out),
            protocols=["shadow", "kfold"],
            permutations=2,
        )
    assert len(rows) == 1 + 2 and rows[1]["protocol"] == "shadow"
    users = load_exported(out / "representations_checkpoint.npz", out / "attributes_checkpoint.csv")
    assert users.user_ids == [str(i) for i in range(240)] and list(users.codes) == ["gender"]
    np.testing.assert_allclose(users.representations, data.initial.numpy(), atol=1e-6)
    np.testing.assert_array_equal(users.shadow, data.user_attributes.shadow.numpy())
    leak = pd.read_csv(out / "leakage_checkpoint.csv")
    assert leak.protocol.tolist() == ["shadow", "kfold"] and (leak.leakage > 0.8).all()
