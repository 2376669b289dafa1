"""Null-calibrated discriminant erasure: the math (closed form, invariants, inversion) and the
one-shot callback (writes a shift, never twice, refuses bad input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lit_unlearn.attacks.leakage import measure_leakage
from lit_unlearn.attacks.logreg import LogisticRegressionAttacker
from lit_unlearn.methods.attribute import CalibratedErasure
from lit_unlearn.methods.attribute.erasure import audited_representation
from lit_unlearn.methods.attribute.gaussian_mi import (
    calibrated_covariance_bound,
    spectral_covariance_band,
)
from lit_unlearn.models import NCF
from lit_unlearn.tasks import RecommenderTask
from lit_unlearn.unlearning.calibrated import (
    MAX_EXPANSION,
    calibrated_erasure,
    class_coordinates,
    class_shifts,
    discriminant_eigen,
    erase_attributes,
    select_ridge,
)
from tests.methods.attribute.test_unlearning import bare_trainer, df_data, load, trained  # noqa: F401


def planted(n: int = 600, d: int = 32, strength: float = 1.0, seed: int = 0):
    """A binary attribute (35% / 65%) shifting the representation along one direction."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.35).long()
    direction = torch.randn(d, generator=g)
    x = torch.randn(n, d, generator=g) + strength * y[:, None] * direction / direction.norm()
    return x, y


def kfold_auc(x: torch.Tensor, y: torch.Tensor) -> float:
    r = measure_leakage(LogisticRegressionAttacker(), x, y, 2, protocol="kfold", n_permutations=0)
    return r.auc


def test_moves_only_the_erased_whitened_coordinates() -> None:
    """W^T B = I and the shift lies in span(B): the complement (I - B W^T) x never changes."""
    x, y = planted()
    vals, vecs, chol, _, _ = discriminant_eigen(x.double(), y, 2)
    assert vals.shape == (1,) and vecs.shape == (32, 1) and float(vals[0]) > 0
    w = torch.linalg.solve_triangular(chol.T, vecs, upper=True)
    b = chol @ vecs
    torch.testing.assert_close(w.T @ b, torch.eye(1, dtype=torch.float64))
    res = calibrated_erasure(x, y, 2, generator=torch.Generator().manual_seed(0))
    assert res.rank == 1 and 0 < float(res.shrink[0]) < 1
    shift = res.shift.double()
    # (float32 shift: 1e-6)
    torch.testing.assert_close(shift - shift @ w @ b.T, torch.zeros_like(shift), atol=1e-6, rtol=0)
    # The population mean does not move; each class by its class_shift; deviation is what stays.
    torch.testing.assert_close(
        shift.mean(0), torch.zeros(32, dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        shift[y == 1][0], res.class_shift[1].to(shift.dtype), atol=1e-6, rtol=0
    )
    z = x.double() + shift
    torch.testing.assert_close(z[y == 1].mean(0) - z.mean(0), res.deviation[1], atol=1e-5, rtol=0)
    # Every member of a class moves by the same vector (a class shift, not a per-user edit).
    assert torch.allclose(shift[y == 1], shift[y == 1][0].expand_as(shift[y == 1]), atol=1e-7)


def test_shrink_is_one_minus_root_null_ratio_and_calibrate_false_removes_all() -> None:
    x, y = planted()
    gen = torch.Generator().manual_seed(1)
    res = calibrated_erasure(x, y, 2, generator=gen, permutations=20)
    expect = 1 - (res.null_mean[0] / res.eigenvalues[0]).sqrt()
    torch.testing.assert_close(res.shrink[0], expect)
    exact = calibrated_erasure(x, y, 2, generator=torch.Generator().manual_seed(1), calibrate=False)
    z = (x + exact.shift).double()
    # Exact removal: the class means along the discriminant direction are equal in-sample.
    _, vecs, chol, _, _ = discriminant_eigen(x.double(), y, 2)
    w = torch.linalg.solve_triangular(chol.T, vecs, upper=True)
    proj = z @ w
    assert abs(float(proj[y == 1].mean() - proj[y == 0].mean())) < 1e-6


def test_calibrated_removal_lands_at_chance_where_exact_removal_inverts() -> None:
    """The issue's signature on a planted signal: exact in-sample removal ranks held-out users
    the wrong way round (5-fold logistic regression), the calibrated shrink does not."""
    for seed in (0, 1, 2):
        x, y = planted(seed=seed)
        assert kfold_auc(x, y) > 0.68
        gen = torch.Generator().manual_seed(seed)
        exact = calibrated_erasure(x, y, 2, generator=gen, calibrate=False)
        calibrated = calibrated_erasure(x, y, 2, generator=torch.Generator().manual_seed(seed))
        assert kfold_auc(x + exact.shift, y) < 0.40
        assert abs(kfold_auc(x + calibrated.shift, y) - 0.5) < 0.06


def test_noise_is_mostly_left_alone() -> None:
    """Labels independent of the representation: a direction beats the null's 95th percentile
    about one time in twenty, and then the calibrated shrink is small (the eigenvalue is near
    the null's mean), so the representation barely moves."""
    x, _ = planted(strength=0.0)
    fired = 0
    for seed in range(10):
        y = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(seed))
        res = calibrated_erasure(x, y, 3, generator=torch.Generator().manual_seed(seed))
        if res.rank:
            fired += 1
            assert float(res.shrink.max()) < 0.35
            assert float(res.shift.pow(2).sum(1).mean()) < 0.01 * float(x.var(0).sum())
        else:
            assert not res.shift.any()
    assert fired <= 3


def test_unlabelled_users_do_not_move_and_attributes_chain() -> None:
    x, y = planted()
    codes = y.clone()
    codes[:50] = -1
    res = calibrated_erasure(x, codes, 2, generator=torch.Generator().manual_seed(0))
    assert not res.shift[:50].any() and res.shift[50:].any()
    g2 = (torch.arange(x.shape[0]) % 3).long()
    total, per = erase_attributes(
        x, {"a": codes, "b": g2}, {"a": 2, "b": 3}, generator=torch.Generator().manual_seed(0)
    )
    assert set(per) == {"a", "b"} and total.shape == x.shape


def aged(seed: int = 0, n: int = 900, d: int = 16):
    """Seven classes of ML-100K's age sizes; only the two largest carry a mean shift (opposite,
    size-weighted to a zero population mean: the others' deviations are noise)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [310, 198, 194, 80, 54, 36, 28]
    y = torch.cat([torch.full((s,), k) for k, s in enumerate(sizes)])
    y = y[torch.randperm(y.numel(), generator=g)]
    means = torch.zeros(7, d)
    means[0] = 0.5 * torch.randn(d, generator=g)
    means[1] = -means[0] * sizes[0] / sizes[1]
    return torch.randn(y.numel(), d, generator=g) + means[y], y


def test_class_calibration_closed_form_and_invariants() -> None:
    """Per class and direction, c_kj = 1 - sqrt(null_kj / t_kj^2) against the relabellings' own
    class coordinates; the shifts stay in the erased coordinates and, re-centred, leave the
    population mean where it was; the eigenvalues are the size-weighted squared coordinates."""
    x, y = aged()
    z = x.double()
    vals, vecs, chol, means, mu = discriminant_eigen(z, y, 7)
    counts = torch.bincount(y, minlength=7).double()
    t = class_coordinates(vecs, chol, means, mu)
    torch.testing.assert_close((counts[:, None] / counts.sum() * t.square()).sum(0), vals)
    res = calibrated_erasure(
        x, y, 7, calibration="class", generator=torch.Generator().manual_seed(0)
    )
    assert res.rank >= 1 and res.shrink.shape == (7, res.rank)
    gen = torch.Generator().manual_seed(0)
    perms = [torch.randperm(y.numel(), generator=gen) for _ in range(30)]
    null = [discriminant_eigen(z, y[p], 7) for p in perms]
    null_class = torch.stack([class_coordinates(*e[1:]).square() for e in null]).mean(0)
    expect = 1 - (null_class[:, : res.rank] / t[:, : res.rank].square()).clamp(0, 1).sqrt()
    torch.testing.assert_close(res.shrink, expect)
    shift = res.shift.double()
    torch.testing.assert_close(
        shift.mean(0), torch.zeros(16, dtype=torch.float64), atol=1e-6, rtol=0
    )
    w = torch.linalg.solve_triangular(chol.T, vecs[:, : res.rank], upper=True)
    b = chol @ vecs[:, : res.rank]
    torch.testing.assert_close(shift - shift @ w @ b.T, torch.zeros_like(shift), atol=1e-6, rtol=0)
    # Classes at their noise level (no planted shift) keep far more than the pooled shrink
    # removes; the signal classes lose about as much.
    pooled = calibrated_erasure(x, y, 7, generator=torch.Generator().manual_seed(0))
    assert pooled.rank == res.rank
    assert float(res.shrink[3:, 0].mean()) < 0.5 * float(pooled.shrink[0])
    with pytest.raises(ValueError, match="calibration"):
        calibrated_erasure(x, y, 7, calibration="user")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counts"):
        class_shifts(vals, vecs, chol, means, mu, vals, vals * 0, null_class=null_class)


def test_class_calibration_equals_the_pooled_one_for_two_classes() -> None:
    """With two classes both deviations are one coordinate scaled by the class sizes, in the data
    and in every relabelling: the per-class shrink is the per-direction one."""
    x, y = planted()
    one = calibrated_erasure(x, y, 2, generator=torch.Generator().manual_seed(4))
    per = calibrated_erasure(
        x, y, 2, calibration="class", generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(per.shrink, one.shrink.expand(2, -1))
    torch.testing.assert_close(per.shift, one.shift, atol=1e-6, rtol=0)


def overequalised(seed: int, pull: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Label noise only, then every class pulled ``pull`` of the way to the population mean
    in-sample: the class means are closer than label noise puts them (what a full-population
    match leaves), and held-out users are ranked the wrong way round."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(600, generator=g) < 0.35).long()
    x = torch.randn(600, 8, generator=g)
    dev = torch.stack([x[y == k].mean(0) for k in (0, 1)]) - x.mean(0)
    return x - pull * dev[y], y


def test_expansion_puts_an_overequalised_direction_back_at_the_null() -> None:
    """Step 4: below the null's low quantile, the class deviations are multiplied by
    sqrt(null / lambda) (at most MAX_EXPANSION); the inversion goes, and no direction is
    expanded where the data are at the noise level."""
    before, after = [], []
    for seed in range(10):
        x, y = overequalised(seed)
        res = calibrated_erasure(
            x, y, 2, expand=True, generator=torch.Generator().manual_seed(seed)
        )
        assert res.rank == 0 and res.expanded.shape == (1,)
        if not bool(res.expanded[0]):
            continue
        ratio = float(res.null_mean[0] / res.eigenvalues[0])
        assert float(res.expansion[0]) == pytest.approx(min(ratio**0.5, MAX_EXPANSION))
        z = (x + res.shift).double()
        vals = discriminant_eigen(z, y, 2)[0]
        target = float(res.eigenvalues[0]) * float(res.expansion[0]) ** 2
        assert float(vals[0]) == pytest.approx(target, rel=1e-4)
        torch.testing.assert_close(res.shift.mean(0), torch.zeros(8), atol=1e-6, rtol=0)
        before.append(kfold_auc(x, y))
        after.append(kfold_auc(x + res.shift, y))
    assert len(before) >= 5
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    assert mean_before < 0.46  # inverted
    assert abs(mean_after - 0.5) < 0.5 * abs(mean_before - 0.5)
    # Pure label noise: almost never below the low quantile, and never with expand=False.
    fired = 0
    for seed in range(10):
        x, _ = planted(strength=0.0, seed=seed)
        y = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(seed))
        res = calibrated_erasure(
            x, y, 3, expand=True, generator=torch.Generator().manual_seed(seed)
        )
        fired += int(res.expanded.any())
        plain = calibrated_erasure(x, y, 3, generator=torch.Generator().manual_seed(seed))
        assert not plain.expanded.any() and plain.expanded.numel() == 2
    assert fired <= 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "at least 2 classes"),
        ({"permutations": 0}, "permutations"),
        ({"quantile": 1.0}, "quantile"),
        ({"ridge": -1.0}, "ridge"),
        ({"ridge": "auto"}, "ridge"),
        ({"ridge": "cv", "folds": 1}, "folds"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict, match: str) -> None:
    x, y = planted(n=60, d=4)
    args = {"num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        calibrated_erasure(x, y, **args)


def test_bad_representations_and_classes() -> None:
    x, y = planted(n=60, d=4)
    with pytest.raises(ValueError, match="NaN"):
        calibrated_erasure(x.index_fill(0, torch.tensor([0]), float("nan")), y, 2)
    with pytest.raises(ValueError, match="two classes"):
        calibrated_erasure(x, torch.zeros_like(y), 2)  # every user in one class
    with pytest.raises(ValueError, match="beyond num_classes"):
        calibrated_erasure(x, y + 1, 2)
    for bad in ({"permutations": 0}, {"quantile": 0.0}, {"ridge": float("nan")}, {"ridge": "x"}):
        with pytest.raises(ValueError):
            CalibratedErasure(**bad)
    assert CalibratedErasure(ridge="cv").ridge == "cv"
    with pytest.raises(ValueError, match="calibration"):
        CalibratedErasure(calibration="users")  # type: ignore[arg-type]


def test_cross_validated_ridge_on_rows_is_the_moments_choice() -> None:
    """``ridge="cv"`` picks from random folds of the rows what :func:`select_ridge` picks from
    those folds' sums; on wide data with low-variance noise directions it beats the tiny ridge."""
    g = torch.Generator().manual_seed(0)
    n, d, k = 300, 120, 8
    y = torch.randint(0, 2, (n,), generator=g)
    scale = torch.cat([torch.full((k,), 3.0), torch.full((d - k,), 0.3)])
    x = torch.randn(n, d, generator=g) * scale
    direction = torch.zeros(d)
    direction[:k] = torch.randn(k, generator=g)
    x = x + (2 * y[:, None] - 1) * direction / direction.norm()
    result = calibrated_erasure(x, y, 2, ridge="cv", generator=torch.Generator().manual_seed(3))
    fold = torch.randperm(n, generator=torch.Generator().manual_seed(3)) % 5
    z = x.double()
    onehot_f = torch.nn.functional.one_hot(fold, 5).double()
    onehot_y = torch.nn.functional.one_hot(y, 2).double()
    chosen, scores = select_ridge(
        onehot_f.T @ onehot_y,
        torch.einsum("nf,nk,nd->fkd", onehot_f, onehot_y, z),
        torch.einsum("nf,nd,ne->fde", onehot_f, z, z),
    )
    assert result.ridge == chosen > 1e-3
    assert float(scores.max()) > float(scores[0])
    fixed = calibrated_erasure(x, y, 2, generator=torch.Generator().manual_seed(3))
    # The tiny ridge's null, spread over every whitened noise direction, hides the signal.
    assert fixed.ridge == 1e-3 and result.rank == 1
    assert float(result.shrink[0]) > (float(fixed.shrink[0]) if fixed.rank else 0.0)


def test_callback_writes_the_shift_once_and_keeps_items(
    trained: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Data-free, one shot: the representation changes by the erasure, items do not, and a
    second fit of the same callback (as after a resume) does not apply it again."""
    task = load(trained)
    before = task.representation().detach().clone()
    items = [p.detach().clone() for p in task.model.item_parameters()]
    cb = CalibratedErasure(checkpoint=str(trained), attributes=["gender"], seed=0)
    bare_trainer(tmp_path, max_epochs=1, callbacks=[cb]).fit(task, df_data(trained))
    after = task.representation().detach()
    assert cb.one_shot_done and "gender" in cb.results
    torch.testing.assert_close(after - before, cb.results["gender"].shift, atol=1e-5, rtol=0)
    for b, a in zip(items, task.model.item_parameters(), strict=True):
        assert torch.equal(b, a)
    summary = cb.summary()["gender"]
    assert summary["rank"] == cb.results["gender"].rank >= 1
    # The flag travels in the callback's state (checkpoints): a resumed fit, whose restored
    # weights already hold the shift, computes and applies nothing.
    again = CalibratedErasure(checkpoint=str(trained), attributes=["gender"], seed=0)
    again.load_state_dict(cb.state_dict())
    assert again.one_shot_done
    task2 = load(trained)
    bare_trainer(tmp_path / "again", max_epochs=1, callbacks=[again]).fit(task2, df_data(trained))
    assert again.results == {}
    torch.testing.assert_close(task2.representation().detach(), before, atol=0, rtol=0)


def test_covariance_bound_sees_no_class_mean() -> None:
    """Shifting whole classes changes nothing; its gradient moves no class mean; it is zero when
    the classes share one covariance and positive when they do not."""
    from lit_unlearn.methods.attribute.gaussian_mi import gaussian_covariance_bound

    x, y = planted(d=8)
    base = gaussian_covariance_bound(x, y, 2)
    moved = x + (y[:, None] == 1) * torch.full((8,), 3.0)
    torch.testing.assert_close(gaussian_covariance_bound(moved, y, 2), base, atol=1e-5, rtol=0)
    xr = x.clone().requires_grad_(True)
    gaussian_covariance_bound(xr, y, 2).backward()
    assert xr.grad is not None
    for k in (0, 1):
        assert float(xr.grad[y == k].sum(0).abs().max()) < 1e-5
    same = torch.randn(600, 8, generator=torch.Generator().manual_seed(3))
    assert float(gaussian_covariance_bound(same, y, 2)) < 0.05
    scaled = same * (1 + 2 * (y[:, None] == 1))  # class 1 three times wider
    assert float(gaussian_covariance_bound(scaled, y, 2)) > 1.0


def test_attrcloak_final_erasure_runs_once_after_the_last_step(
    trained: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """privacy_moments 'covariance' + final_erasure: the erasure runs once, after the last
    epoch's step and before its checkpoint, and only the covariance loss is optimised."""
    from lit_unlearn.methods.attribute import AttrCloak

    def fit(epochs: int, out: Path, **erasure: Any) -> AttrCloak:
        cloak = AttrCloak(
            checkpoint=str(trained),
            attributes=["gender"],
            mode="df",
            lr=0.01,
            privacy_moments="covariance",
            final_erasure=True,
            **erasure,
        )
        bare_trainer(out, max_epochs=epochs, callbacks=[cloak]).fit(load(trained), df_data(trained))
        return cloak

    cloak = fit(3, tmp_path)
    assert cloak.one_shot_done and set(cloak.erasure_results) == {"gender"}
    result = cloak.erasure_results["gender"]
    assert result.shrink.ndim == 1 and not result.expanded.any()
    with pytest.raises(ValueError, match="privacy_moments"):
        AttrCloak(privacy_moments="means")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calibration"):
        AttrCloak(erasure_calibration="users")  # type: ignore[arg-type]
    # The erasure's options reach it: per class (a [K, rank] shrink), two-sided.
    cloak = fit(2, tmp_path / "class", erasure_calibration="class", erasure_expand=True)
    result = cloak.erasure_results["gender"]
    assert result.shrink.shape == (2, result.rank) and result.expanded.shape == (1,)
    # covariance_null: the covariance term is held in its permutation null's band, with the
    # same seeded permutations every step.
    cloak = fit(2, tmp_path / "null", covariance_null=4)
    perms = cloak._null_permutations["gender"]
    labelled = int((cloak._codes["gender"] >= 0).sum())
    assert perms.shape == (4, labelled)
    task = load(trained)
    rep = task.representation().detach()
    _, per = cloak.privacy_loss(rep)
    expect = calibrated_covariance_bound(
        rep, cloak._codes["gender"], 2, perms, shrinkage=cloak.shrinkage, dtype=torch.float64
    )
    torch.testing.assert_close(per["gender"], expect.to(per["gender"].dtype))
    assert torch.equal(cloak._null_permutations["gender"], perms)  # drawn once
    # ...or its spectrum rank by rank (covariance_band: spectrum), with the same permutations.
    cloak = fit(2, tmp_path / "spectrum", covariance_null=4, covariance_band="spectrum")
    assert torch.equal(cloak._null_permutations["gender"], perms)
    _, per = cloak.privacy_loss(rep)
    expect = spectral_covariance_band(
        rep, cloak._codes["gender"], 2, perms, shrinkage=cloak.shrinkage, dtype=torch.float64
    )
    torch.testing.assert_close(per["gender"], expect.to(per["gender"].dtype))
    for bad, match in (
        ({"covariance_band": "trace"}, "covariance_band"),
        ({"covariance_null": -1}, ">= 0"),
        ({"covariance_null": True}, "int"),
        ({"covariance_null": 4, "privacy_moments": "both"}, "privacy_moments: covariance"),
    ):
        with pytest.raises(ValueError, match=match):
            AttrCloak(**bad)


def test_attrcloak_crossfit_term_draws_its_splits_from_seed_step_and_attribute(
    trained: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """privacy_moments 'crossfit': the optimised term is crossfit_covariance_loss with a split
    seeded by the run's seed, the step and the attribute (so every rank and a resumed run draw
    the same); it trains; bad options fail at construction."""
    import zlib

    from lit_unlearn.methods.attribute import AttrCloak
    from lit_unlearn.methods.attribute.crossfit import crossfit_covariance_loss

    cloak = AttrCloak(
        checkpoint=str(trained),
        attributes=["gender"],
        mode="df",
        lr=0.01,
        privacy_moments="crossfit",
        crossfit_directions=2,
        final_erasure=True,
    )
    task = load(trained)
    before = task.representation().detach().clone()
    bare_trainer(tmp_path, max_epochs=3, callbacks=[cloak]).fit(task, df_data(trained))
    assert cloak._step == 2 and cloak.one_shot_done
    rep = task.representation().detach()
    assert not torch.equal(rep, before)
    _, per = cloak.privacy_loss(rep)
    seed = (cloak._subset_seed * 1_000_003 + 2 * 7_919 + zlib.crc32(b"gender")) % (2**63)
    expect, _ = crossfit_covariance_loss(
        rep, cloak._codes["gender"], 2, torch.Generator().manual_seed(seed), directions=2
    )
    torch.testing.assert_close(per["gender"], expect.to(per["gender"].dtype))
    for bad, match in (
        ({"crossfit_parts": 1}, ">= 2"),
        ({"crossfit_directions": 0}, "crossfit_directions"),
        ({"privacy_moments": "crossfitted"}, "privacy_moments"),
    ):
        with pytest.raises(ValueError, match=match):
            AttrCloak(**bad)


def test_erasures_plan_on_the_eval_mode_representation() -> None:
    """With dropout in the user tower, the training-mode forward is a noisy draw: the one-shot
    erasures read the representation as audited (eval mode) and leave the mode as it was."""
    task = RecommenderTask(NCF(30, 20, 8, hidden_layers=2, dropout=0.5, scorer="dot"))
    task.train()
    first, second = audited_representation(task), audited_representation(task)
    assert torch.equal(first, second)  # no dropout draw
    assert task.training and task.model.training  # the mode is restored
    task.eval()
    torch.testing.assert_close(first, task.representation().detach())
