"""FedRAP's per-column ensemble attacker finds a planted attribute and not a random one."""

from __future__ import annotations

import torch

from lit_unlearn.methods.federated.audit import column_ensemble_attack


def test_column_ensemble_finds_a_planted_attribute_only() -> None:
    g = torch.Generator().manual_seed(0)
    users, items, dims = 200, 30, 4
    codes = torch.arange(users) % 2
    shadow = torch.zeros(users, dtype=torch.bool)
    shadow[torch.randperm(users, generator=g)[:80]] = True
    noise = torch.randn(users, items, dims, generator=g)
    planted = noise.clone()
    planted[:, :5, :] += 1.5 * (2 * codes.float() - 1).view(-1, 1, 1)  # in every column
    found = column_ensemble_attack(planted, codes, shadow, 2, "gender", hidden=16)
    assert found.attacker == "mlp-columns" and found.n_test == 120
    assert found.balanced_accuracy > 0.9
    blind = column_ensemble_attack(noise, codes, shadow, 2, "gender", hidden=16)
    assert abs(blind.balanced_accuracy - 0.5) < 0.15
