"""DLG on multi-step uploads: K local SGD steps of the head on a moving embedding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lit_unlearn.attacks.gradient_inversion import dlg_attack, idlg_labels


def _uploads(
    n: int = 40,
    d: int = 12,
    lr: float = 0.1,
    drift: float = 0.05,
    random_labels: bool = False,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Tensor], dict[str, Tensor], Tensor, Tensor]:
    """Summed gradients ``-delta / lr`` of ``K`` (2-8) SGD steps per user, as a client uploads.

    The head is first trained on a few users so its predictions are confident (as at round 100
    of a real run); each user's embedding moves a little between local steps. With
    ``random_labels`` every local step uses a fresh random label (an upload that carries no
    label), so no attack can beat chance.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, 2))
    direction = torch.randn(d, generator=g)
    pre = torch.randn(200, d, generator=g)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        F.cross_entropy(head(pre), (pre @ direction > 0).long()).backward()
        opt.step()
    start = {k: v.detach().clone() for k, v in head.named_parameters()}
    labels = torch.randint(0, 2, (n,), generator=g)
    steps = torch.randint(2, 9, (n,), generator=g)
    sums: dict[str, list[Tensor]] = {k: [] for k in start}
    for u in range(n):
        p = {k: v.clone().requires_grad_(True) for k, v in start.items()}
        em = torch.randn(d, generator=g)
        total = {k: torch.zeros_like(v) for k, v in start.items()}
        for _ in range(int(steps[u])):
            y = torch.randint(0, 2, (1,), generator=g) if random_labels else labels[u : u + 1]
            ce = F.cross_entropy(functional_call(head, p, (em.unsqueeze(0),)), y)
            grads = torch.autograd.grad(ce, list(p.values()))
            with torch.no_grad():
                for (k, v), grad in zip(p.items(), grads, strict=True):
                    total[k] += grad
                    v -= lr * grad
            em = em + drift * torch.randn(d, generator=g)
        for k in sums:
            sums[k].append(total[k])
    return head, start, {k: torch.stack(v) for k, v in sums.items()}, labels, steps


def test_default_multistep_dlg_recovers_labels() -> None:
    head, start, grads, labels, steps = _uploads()
    assert (idlg_labels(grads["2.weight"], grads["2.bias"]) == labels).all()
    # GradientInversionAudit's default DLG.
    out = dlg_attack(
        head, start, grads, steps=25, lr=0.1, optimizer="adam", multi_step="mean",
        local_steps=steps, label_search=True,
    )  # fmt: skip
    acc = float((out.labels == labels).double().mean())
    assert acc >= 0.85, acc
    assert out.attempts.min() >= 2  # one run per class at least
    lbfgs = dlg_attack(
        head, start, grads, steps=15, restarts=2, multi_step="mean", local_steps=steps,
        label_search=True,
    )  # fmt: skip
    assert float((lbfgs.labels == labels).double().mean()) >= 0.85


def test_unroll_matches_single_step_when_k_is_one() -> None:
    head, start, grads, _labels, _ = _uploads(n=12)
    one = torch.ones(12, dtype=torch.long)
    a = dlg_attack(head, start, grads, steps=5, local_steps=one, multi_step="mean")
    b = dlg_attack(head, start, grads, steps=5, local_steps=one, local_lr=0.1, multi_step="unroll")
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.loss, b.loss, rtol=1e-6, atol=1e-12)


def test_multistep_dlg_is_chance_without_a_label_in_the_upload() -> None:
    head, start, grads, labels, steps = _uploads(n=60, random_labels=True, seed=1)
    out = dlg_attack(
        head, start, grads, steps=25, lr=0.1, optimizer="adam", multi_step="mean",
        local_steps=steps, label_search=True,
    )  # fmt: skip
    acc = float((out.labels == labels).double().mean())
    # 60 fair coins: 0.5 +- 0.065 (one sd); 0.75 is ~4 sd.
    assert acc <= 0.75, acc


def test_multistep_options_are_checked() -> None:
    head, start, grads, _, steps = _uploads(n=3)
    with pytest.raises(ValueError, match="local_steps"):
        dlg_attack(head, start, grads, multi_step="mean")
    with pytest.raises(ValueError, match="local_lr"):
        dlg_attack(head, start, grads, multi_step="unroll", local_steps=steps)
    with pytest.raises(ValueError, match="multi_step"):
        dlg_attack(head, start, grads, multi_step="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local_steps"):
        dlg_attack(head, start, grads, multi_step="mean", local_steps=torch.ones(5))
