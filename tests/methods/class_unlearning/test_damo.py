"""DAMO's objectives (DSDA Sec. 3.3): closed forms, stability, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_unlearn.methods.class_unlearning.damo import (
    class_centres,
    default_forget_cap,
    discriminative_loss,
    forget_loss,
    retain_loss,
)


def test_retain_and_forget_losses() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 5.0, 0.0]])
    y = torch.tensor([0, 2])
    ce = F.cross_entropy(logits, y, reduction="none")
    assert torch.isclose(retain_loss(logits, y), ce.mean())
    assert torch.isclose(forget_loss(logits, y), -ce.mean())
    capped = forget_loss(logits, y, cap=1.0)
    assert torch.isclose(capped, -torch.minimum(ce, torch.tensor(1.0)).mean())
    # A capped sample no longer pulls: its gradient is zero.
    z = logits.clone().requires_grad_(True)
    forget_loss(z, y, cap=1.0).backward()
    assert z.grad is not None and torch.all(z.grad[1] == 0) and torch.any(z.grad[0] != 0)
    assert math.isclose(default_forget_cap(10), 5 * math.log(10))
    with pytest.raises(ValueError, match="cap"):
        forget_loss(logits, y, cap=0.0)


def test_class_centres_are_class_means() -> None:
    f = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0]])
    c = class_centres(f, torch.tensor([0, 0, 2]), num_classes=3)
    assert torch.allclose(c, torch.tensor([[2.0, 1.0], [0.0, 0.0], [0.0, 4.0]]))


def _disc_by_hand(h: torch.Tensor, y: int, centres: torch.Tensor, retain: list[int],
                  delta: float, o_p: float, o_n: float) -> float:  # fmt: skip
    cos = lambda a, b: float(F.cosine_similarity(a, b, dim=0))  # noqa: E731
    s_p = cos(centres[y], h)
    a_p = max(o_p - s_p, 0.0)
    total = 0.0
    for j in retain:
        if j != y:
            s_n = cos(centres[j], h)
            total += math.exp(delta * max(s_n - o_n, 0.0) * s_n) * math.exp(-delta * a_p * s_p)
    return math.log(1 + total)


def test_discriminative_loss_matches_eq7_written_out() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 6, generator=gen)
    h = torch.randn(4, 6, generator=gen)
    y = torch.tensor([0, 2, 3, 2])
    retain = [0, 2, 3, 4]  # class 1 is forgotten: never a negative
    got = discriminative_loss(h, y, centres, retain, delta=2.0)
    want = sum(_disc_by_hand(h[i], int(y[i]), centres, retain, 2.0, 1.25, -0.25) for i in range(4))
    assert math.isclose(float(got), want / 4, rel_tol=1e-5)


def test_discriminative_loss_is_stable_at_delta_64_and_pulls_towards_the_centre() -> None:
    centres = torch.eye(3)
    h = torch.tensor([[0.2, 1.0, 0.0]], requires_grad=True)  # near class 1, labelled class 0
    loss = discriminative_loss(h, torch.tensor([0]), centres, [0, 1, 2], delta=64.0)
    assert torch.isfinite(loss) and float(loss) > 10  # huge exp terms, finite log-sum-exp
    loss.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()
    assert float(h.grad[0, 0]) < 0 < float(h.grad[0, 1])  # descent: towards c_0, away from c_1
    aligned = discriminative_loss(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0]), centres,
                                  [0, 1, 2], delta=64.0)  # fmt: skip
    assert float(aligned) < float(loss)
    with pytest.raises(ValueError, match="two retain classes"):
        discriminative_loss(h, torch.tensor([0]), centres, [0])
