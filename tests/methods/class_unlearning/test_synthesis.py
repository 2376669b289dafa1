"""Langevin synthesis from a classifier (DSDA stage 1): the score, Algorithm 1, the invariants."""

from __future__ import annotations

import math
from typing import Literal

import pytest
import torch
from torch import nn

from lit_unlearn.methods.class_unlearning.synthesis import LangevinSampler, class_score

SHAPE = (1, 3, 3)


def linear_model(k: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(9, k))


def test_score_is_the_analytic_gradient_of_log_softmax() -> None:
    model = linear_model()
    lin = model[1]
    assert isinstance(lin, nn.Linear)
    x = torch.randn(5, *SHAPE)
    y = torch.tensor([0, 1, 2, 3, 1])
    score, logp = class_score(model, x, y)
    p = torch.softmax(lin(x.flatten(1)), dim=1)
    # grad_x log p_y = W_y - sum_k p_k W_k for logits W x + b.
    expected = lin.weight[y] - p @ lin.weight
    assert torch.allclose(score.flatten(1), expected.detach(), atol=1e-6)
    assert torch.allclose(logp, torch.log(p.gather(1, y[:, None]).squeeze(1)).detach(), atol=1e-6)


def _by_hand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, a: float,
             dt: float, gamma: float, mode: str) -> torch.Tensor:  # fmt: skip
    """One AEGDS update from v = 0, written out from Algorithm 1 (lines 7-13) / the spec."""
    d, _ = class_score(model, x, y)
    if mode == "paper":
        x_pred = x + dt * d + math.sqrt(2 * a) * dt * eps
    else:
        x_pred = x + a * dt * d + math.sqrt(2 * a * dt) * eps
    d_pred, _ = class_score(model, x_pred, y)
    v = gamma * torch.zeros_like(x) + a * (0.5 * d + 0.5 * d_pred)
    noise = math.sqrt(2 * a) * dt * eps if mode == "paper" else math.sqrt(2 * a * dt) * eps
    return x + dt * v + noise


@pytest.mark.parametrize("mode", ["paper", "consistent"])
def test_one_aegds_update_is_algorithm_1(mode: str) -> None:
    model = linear_model()
    y = torch.tensor([0, 3, 2])
    x0 = torch.randn(3, *SHAPE)
    sampler = LangevinSampler("aegds", steps=2, skip=2, step_size=0.3, momentum=0.9,
                              mode=mode, noise_scale=1.0)  # type: ignore[arg-type]  # fmt: skip
    out = sampler.sample(model, y, SHAPE, generator=torch.Generator().manual_seed(7), x0=x0)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    expected = _by_hand(model, x0, y, eps, a=0.3, dt=2.0, gamma=0.9, mode=mode)
    assert torch.allclose(out.images, expected, atol=1e-6)
    assert out.score_evals == 2


def test_one_egds_step_is_sgld() -> None:
    model = linear_model()
    y = torch.tensor([1, 2])
    x0 = torch.randn(2, *SHAPE)
    out = LangevinSampler("egds", steps=1, step_size=0.5, noise_scale=0.2).sample(
        model, y, SHAPE, generator=torch.Generator().manual_seed(3), x0=x0
    )
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    score, _ = class_score(model, x0, y)
    assert torch.allclose(out.images, x0 + 0.5 * score + 0.2 * math.sqrt(1.0) * eps, atol=1e-6)


@pytest.mark.parametrize("method", ["egds", "aegds"])
def test_samples_become_likely_under_their_class(method: Literal["egds", "aegds"]) -> None:
    model = linear_model(k=4, seed=1)
    y = torch.arange(4).repeat(16)
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(len(y), *SHAPE, generator=torch.Generator().manual_seed(0))
    _, logp0 = class_score(model, start, y)
    out = LangevinSampler(method, steps=40, skip=4, step_size=0.5, noise_scale=0.01).sample(
        model, y, SHAPE, generator=gen
    )
    assert out.log_prob.mean() > logp0.mean() + 1.0
    assert (torch.softmax(model(out.images), 1).argmax(1) == y).float().mean() > 0.9


def test_bounds_mode_and_parameters_are_respected() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten(),
                          nn.Linear(18, 3))  # fmt: skip
    model.train()
    lo, hi = torch.tensor([-0.5]), torch.tensor([0.75])
    out = LangevinSampler("aegds", steps=10, skip=2, step_size=1.0, noise_scale=1.0).sample(
        model, torch.tensor([0, 1, 2, 0]), SHAPE, bounds=(lo, hi),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert float(out.images.min()) >= -0.5 and float(out.images.max()) <= 0.75
    assert model.training  # restored
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_batches_tracked is not None
    assert int(bn.num_batches_tracked) == 0  # eval mode during synthesis: no statistics update


def test_cost_accounting_and_validation() -> None:
    assert LangevinSampler("egds", steps=100).evals_per_sample == 100
    assert LangevinSampler("aegds", steps=100, skip=5).evals_per_sample == 40
    for kwargs in [{"method": "hmc"}, {"mode": "eq5"}, {"steps": 0}, {"steps": 3, "skip": 5},
                   {"step_size": 0.0}, {"momentum": 1.0}, {"noise_scale": -1.0}]:  # fmt: skip
        with pytest.raises(ValueError):
            LangevinSampler(**kwargs)  # type: ignore[arg-type]
