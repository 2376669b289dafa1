"""The cross-fitted second-moment agreement: zero on average without signal, its sign telling
leakage from inversion, and held at 0 it neither leaks nor inverts."""

from __future__ import annotations

import pytest
import torch

from lit_unlearn.methods.attribute.crossfit import (
    crossfit_agreement,
    crossfit_covariance_loss,
    within_class_whitener,
)
from lit_unlearn.methods.attribute.gaussian_mi import gaussian_covariance_bound


def _spread(
    seed: int, n: int = 600, d: int = 16, factor: float = 1.8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 (40%) ``factor`` times wider along one direction hidden in a random rotation."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.4).long()
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[:, 0] *= 1 + (factor - 1) * y
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return x @ q, y


def _agreements(x: torch.Tensor, y: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    whitener = within_class_whitener(x, y, 2, 0.05)
    z = (x - x.mean(0)) @ whitener.T
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([crossfit_agreement(z, y, 2, gen) for _ in range(draws)])  # [draws, K]


def test_agreement_is_zero_on_average_without_signal_positive_with_it_negative_when_matched() -> (
    None
):
    """Labels that carry nothing: the mean over splits is within noise of 0 (the testing part
    never chose the directions, so selection does not bias it). A planted spread: clearly
    positive. The same data after exact covariance matching (each class mapped onto the pooled
    covariance): clearly negative, the inversion."""
    x, y = _spread(0)
    y_noise = y[torch.randperm(y.numel(), generator=torch.Generator().manual_seed(1))]
    noise = _agreements(x, y_noise, 60, 2)[:, 1]
    assert abs(float(noise.mean())) < 3 * float(noise.std()) / 60**0.5
    planted = _agreements(x, y, 30, 3)[:, 1]
    assert float(planted.mean()) > 5 * float(planted.std()) / 30**0.5
    matched = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([matched], lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        gaussian_covariance_bound(matched, y, 2).backward()
        opt.step()
    inverted = _agreements(matched.detach(), y, 30, 4)[:, 1]
    assert float(inverted.mean()) < -3 * float(inverted.std()) / 30**0.5


def test_loss_is_differentiable_and_rejects_bad_input() -> None:
    x, y = _spread(1, n=90, d=5)
    y[:4] = -1
    xr = x.clone().requires_grad_(True)
    loss, g = crossfit_covariance_loss(xr, y, 2, torch.Generator().manual_seed(0))
    loss.backward()
    assert xr.grad is not None and bool(torch.isfinite(xr.grad).all())
    assert float(xr.grad[:4].abs().max()) == 0.0  # unknown users take no part
    assert g.shape == (2,)
    # more splits per factor: the same kind of value, averaged (finite, differentiable)
    averaged, _ = crossfit_covariance_loss(xr, y, 2, torch.Generator().manual_seed(0), splits=3)
    assert bool(torch.isfinite(averaged))
    gen = torch.Generator().manual_seed(0)
    for bad in ({"directions": 0}, {"parts": 1}, {"splits": 0}, {"ridge": 0.0}):
        with pytest.raises(ValueError, match="directions"):
            crossfit_covariance_loss(x, y, 2, gen, **bad)
    with pytest.raises(ValueError, match="NaN"):
        crossfit_covariance_loss(torch.full_like(x, float("nan")), y, 2, gen)
    with pytest.raises(ValueError, match="codes"):
        crossfit_covariance_loss(x, y + 2, 2, gen)
    with pytest.raises(ValueError, match="codes"):
        crossfit_covariance_loss(x, y[:10], 2, gen)


@pytest.mark.slow
def test_held_at_zero_neither_leaks_nor_inverts_where_exact_matching_inverts() -> None:
    """Free per-user coordinates (Adam, 300 steps) with a planted spread: exact covariance
    matching inverts the held-out (5-fold) squared-feature and kNN attackers on every seed; the
    cross-fitted agreement held at 0 leaves them at chance."""
    from lit_unlearn.attacks import ATTACKERS
    from lit_unlearn.attacks.leakage import measure_leakage

    def auc(z: torch.Tensor, y: torch.Tensor, attacker: str, seed: int) -> float:
        return measure_leakage(
            ATTACKERS[attacker](), z.numpy(), y.numpy(), 2, n_permutations=0, seed=seed
        ).auc

    exact: dict[str, list[float]] = {"quadratic": [], "knn": []}
    held: dict[str, list[float]] = {"quadratic": [], "knn": []}
    for seed in range(3):
        x0, y = _spread(seed, d=32, factor=2.2)
        for kind, out in (("exact", exact), ("held", held)):
            x = x0.clone().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=0.01)
            gen = torch.Generator().manual_seed(seed)
            for _ in range(300):
                opt.zero_grad()
                if kind == "exact":
                    loss = gaussian_covariance_bound(x, y, 2)
                else:
                    loss = crossfit_covariance_loss(x, y, 2, gen)[0]
                loss.backward()
                opt.step()
            for attacker in out:
                out[attacker].append(auc(x.detach(), y, attacker, seed))
    for attacker in ("quadratic", "knn"):
        assert max(exact[attacker]) < 0.45, exact
        assert abs(sum(held[attacker]) / 3 - 0.5) < 0.035 and min(held[attacker]) > 0.47, held
