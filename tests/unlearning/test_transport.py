"""Relabelling transport (lit_unlearn/unlearning/transport.py): the Monge map's closed form, the
class statistics it writes, and the held-out behaviour it exists for: exact covariance matching
inverts a second-order attacker, the transport leaves it at chance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lit_unlearn.attacks.leakage import measure_leakage
from lit_unlearn.attacks.logreg import LogisticRegressionAttacker
from lit_unlearn.methods.attribute.erasure import audited_representation
from lit_unlearn.unlearning.transport import (
    gaussian_transport_matrix,
    relabel_transport,
    transport_attributes,
)
from tests.methods.attribute.test_gaussian_mi import _spread
from tests.methods.attribute.test_unlearning import bare_trainer, df_data, load, trained  # noqa: F401


def _spd(d: int, seed: int, rank: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, rank or d, generator=g, dtype=torch.float64)
    return a @ a.T + (0.0 if rank else 0.1) * torch.eye(d, dtype=torch.float64)


def test_monge_map_closed_form() -> None:
    """``A S A = T`` with ``A`` symmetric PSD, also onto a singular target; the identity when
    the covariances agree; ``sqrt(t / s)`` in one dimension; minimal displacement: no other
    map onto ``T`` tried moves Gaussian samples less."""
    s, t = _spd(6, 0), _spd(6, 1, rank=3)
    a = gaussian_transport_matrix(s, t)
    torch.testing.assert_close(a @ s @ a, t, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(a, a.T)
    assert float(torch.linalg.eigvalsh(a).min()) > -1e-10
    torch.testing.assert_close(gaussian_transport_matrix(s, s), torch.eye(6, dtype=torch.float64))
    one = gaussian_transport_matrix(torch.tensor([[4.0]]), torch.tensor([[9.0]]))
    torch.testing.assert_close(one, torch.tensor([[1.5]]))
    # E|x - A x|^2 = tr((I - A) S (I - A)); any other map onto T: B = T^{1/2} Q S^{-1/2}, Q
    # orthogonal.
    t_full = _spd(6, 2)
    a = gaussian_transport_matrix(s, t_full)
    eye = torch.eye(6, dtype=torch.float64)

    def cost(m: torch.Tensor) -> float:
        return float(torch.trace((eye - m) @ s @ (eye - m).T))

    vals, vecs = torch.linalg.eigh(t_full)
    t_half = (vecs * vals.sqrt()) @ vecs.T
    vals, vecs = torch.linalg.eigh(s)
    s_inv_half = (vecs * vals.rsqrt()) @ vecs.T
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
        other = t_half @ q @ s_inv_half
        torch.testing.assert_close(other @ s @ other.T, t_full)
        assert cost(a) <= cost(other) + 1e-9


def test_monge_map_bad_input() -> None:
    s = _spd(4, 0)
    with pytest.raises(ValueError, match="same"):
        gaussian_transport_matrix(s, s[:3, :3])
    with pytest.raises(ValueError, match="NaN"):
        gaussian_transport_matrix(s, torch.full((4, 4), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="singular"):
        gaussian_transport_matrix(_spd(4, 1, rank=2), s)


def _classes(seed: int = 0, n: int = 300, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * (1 + 0.5 * (y[:, None] == 2))
    y[:7] = -1  # unlabelled users
    return x, y


def _cov(z: torch.Tensor) -> torch.Tensor:
    c = z - z.mean(0)
    return c.T @ c / z.shape[0]


def test_each_class_gets_its_relabelled_class_statistics() -> None:
    """Per class: ``(1 - g) A C_k A + g A S_w A = (1 - g) R_k + g S_w`` (the map between the
    shrunk covariances), the class mean kept (``covariance``) or moved to the relabelled
    class's (``both``); unlabelled users do not move; the relabelling keeps the class sizes;
    the same generator seed gives the same result."""
    x, y = _classes()
    gamma = 0.1
    labelled = y >= 0
    z, yl = x[labelled], y[labelled]
    sizes = torch.bincount(yl, minlength=3)
    s_w = torch.stack([int(sizes[k]) * _cov(z[yl == k]) for k in range(3)]).sum(0) / int(
        labelled.sum()
    )
    for moments in ("covariance", "both"):
        r = relabel_transport(
            x, y, 3, shrinkage=gamma, moments=moments, generator=torch.Generator().manual_seed(5)
        )
        assert torch.equal(r.shift[~labelled], torch.zeros_like(r.shift[~labelled]))
        assert torch.equal(torch.bincount(r.relabelled, minlength=3), sizes)
        new = (x + r.shift)[labelled]
        for k in range(3):
            target = (1 - gamma) * _cov(z[r.relabelled == k]) + gamma * s_w
            a = r.maps[k]
            torch.testing.assert_close(
                (1 - gamma) * _cov(new[yl == k]) + gamma * a @ s_w @ a, target
            )
            centre = z[r.relabelled == k] if moments == "both" else z[yl == k]
            torch.testing.assert_close(new[yl == k].mean(0), centre.mean(0))
        again = relabel_transport(
            x, y, 3, shrinkage=gamma, moments=moments, generator=torch.Generator().manual_seed(5)
        )
        assert torch.equal(again.shift, r.shift)


def test_bad_input_is_a_clear_error() -> None:
    x, y = _classes()
    for kwargs, match in (
        ({"shrinkage": 0.0}, "shrinkage"),
        ({"shrinkage": 1.5}, "shrinkage"),
        ({"moments": "means"}, "moments"),
        ({"rank_tol": 1.0}, "rank_tol"),
    ):
        with pytest.raises(ValueError, match=match):
            relabel_transport(x, y, 3, **kwargs)
    bad = x.clone()
    bad[10, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        relabel_transport(bad, y, 3)
    with pytest.raises(ValueError, match="2 labelled users"):
        relabel_transport(x, torch.where(y == 0, 0, -1), 3)
    with pytest.raises(ValueError, match="num_classes"):
        transport_attributes(x, {"a": y}, {"b": 3})


def test_a_class_of_one_user_is_not_moved_and_attributes_chain() -> None:
    x, y = _classes()
    y = y.clone()
    y[20] = 3  # a fourth class with a single user
    r = relabel_transport(x, y, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(r.maps[3], torch.eye(5, dtype=torch.float64))
    total, per = transport_attributes(
        x, {"a": y, "b": (y + 1) % 4}, {"a": 4, "b": 4}, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(total, per["a"].shift + per["b"].shift)


def _held_out_spread_auc(z: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """5-fold logistic regression on the squared deviations: a second-order attacker."""
    squares = (z - z.mean(0)).square().numpy()
    attacker = LogisticRegressionAttacker()
    return measure_leakage(attacker, squares, y.numpy(), 2, n_permutations=0, seed=seed).auc


def test_exact_matching_inverts_the_spread_and_the_transport_does_not() -> None:
    """Issue 23 in second moments, in closed form: each class mapped onto the pooled
    covariance (exact matching) leaves a held-out second-order attacker below chance on every
    seed; mapped onto a random relabelling's covariance it lands at chance on average, with
    the planted spread gone."""
    exact, transported = [], []
    for seed in range(12):
        x, y = _spread(seed)
        assert _held_out_spread_auc(x, y, seed) > 0.65
        s_w = (
            torch.stack([int((y == k).sum()) * _cov(x[y == k]) for k in (0, 1)]).sum(0) / y.numel()
        )
        matched = x.clone()
        for k in (0, 1):
            rows = x[y == k]
            a = gaussian_transport_matrix(_cov(rows), s_w)
            matched[y == k] = rows.mean(0) + (rows - rows.mean(0)) @ a.T
        exact.append(_held_out_spread_auc(matched, y, seed))
        gen = torch.Generator().manual_seed(seed + 100)
        r = relabel_transport(x, y, 2, shrinkage=0.05, generator=gen)
        transported.append(_held_out_spread_auc(x + r.shift, y, seed))
    # Measured: exact 0.417 +- 0.026 over 16 seeds, transported 0.499 +- 0.040, permuted
    # labels on the untouched data 0.500 +- 0.044 (the null the audit compares against).
    assert sum(exact) / 12 < 0.44 and max(exact) < 0.47
    assert abs(sum(transported) / 12 - 0.5) < 0.03


def test_attrcloak_final_transport_runs_once_on_the_privacy_attributes(
    trained: Path,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """final_transport: after the last step, before the final erasure (the default) or after
    it, on the attributes of the optimised privacy term only; its options are checked when the
    callback is built."""
    from lit_unlearn.methods.attribute import AttrCloak

    def fit(out: Path, **options: Any) -> tuple[AttrCloak, torch.Tensor]:
        cloak = AttrCloak(
            checkpoint=str(trained),
            attributes=["gender", "age"],
            mode="df",
            lr=0.01,
            privacy_moments="covariance",
            final_transport=True,
            **options,
        )
        task = load(trained)
        bare_trainer(out, max_epochs=2, callbacks=[cloak]).fit(task, df_data(trained))
        return cloak, audited_representation(task)

    cloak, _ = fit(tmp_path, privacy_attributes=["gender"], final_erasure=True)
    assert cloak.one_shot_done and cloak.transport_order == "before_erasure"  # the default
    assert set(cloak.transport_results) == {"gender"}
    assert set(cloak.erasure_results) == {"gender", "age"}
    after, rep_after = fit(tmp_path / "after", final_erasure=True, transport_order="after_erasure")
    before, rep_before = fit(tmp_path / "before", final_erasure=True)
    # The relabelling does not depend on the order; the erasure's calibration does, and the
    # class means the transport leaves are the erased ones only with the transport after.
    for other in (after, before):
        assert set(other.transport_results) == {"gender", "age"} and other.erasure_results
        assert torch.equal(
            other.transport_results["gender"].relabelled,
            cloak.transport_results["gender"].relabelled,
        )
    assert not torch.allclose(rep_after, rep_before)
    alone, _ = fit(tmp_path / "alone")  # without the erasure, on every attribute
    assert set(alone.transport_results) == {"gender", "age"} and not alone.erasure_results
    for bad, match in (
        ({"transport_shrinkage": 0.0}, "transport_shrinkage"),
        ({"transport_moments": "means"}, "transport_moments"),
        ({"transport_rank_tol": -0.1}, "transport_rank_tol"),
        ({"transport_order": "never"}, "transport_order"),
    ):
        with pytest.raises(ValueError, match=match):
            AttrCloak(**bad)


def test_a_representation_that_does_not_span_its_dimensions() -> None:
    """A learned representation can be rank-deficient (ML-100K's NCF after the covariance
    stage): the transport works in the span of the pooled within-class covariance and leaves
    the rest, here a constant coordinate and a copy of another, as it is."""
    x, y = _classes()
    x = torch.cat([x, torch.full((x.shape[0], 1), 3.0, dtype=x.dtype), x[:, :1]], dim=1)
    r = relabel_transport(x, y, 3, generator=torch.Generator().manual_seed(0))
    new = x + r.shift
    assert bool(torch.isfinite(new).all())
    torch.testing.assert_close(new[:, 5], x[:, 5])  # the constant stays constant
    torch.testing.assert_close(new[:, 6], new[:, 0])  # the copy stays a copy
    assert float(r.shift.abs().max()) > 0.1
    with pytest.raises(ValueError, match="no within-class spread"):
        relabel_transport(torch.ones_like(x), y, 3)


def test_rank_tol_keeps_the_maps_to_the_leading_directions() -> None:
    """With ``rank_tol`` near 1 only the direction of largest pooled within-class variance is
    transported: every user's shift lies along it."""
    x, y = _classes()
    x = x * torch.tensor([4.0, 1.0, 1.0, 1.0, 1.0], dtype=x.dtype)  # one dominant direction
    r = relabel_transport(x, y, 3, rank_tol=0.5, generator=torch.Generator().manual_seed(0))
    assert float(r.shift[:, 1:].abs().max()) < 0.15 * float(r.shift[:, 0].abs().max())
    full = relabel_transport(x, y, 3, generator=torch.Generator().manual_seed(0))
    assert float(full.shift[:, 1:].abs().max()) > 0.3 * float(full.shift[:, 0].abs().max())
