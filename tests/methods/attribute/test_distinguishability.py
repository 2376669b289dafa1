"""U2U / D2D distinguishability losses, their -R combinations, and the Eq. 21 retention loss."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lit_unlearn.methods.attribute.distinguishability import (
    _sample_cross_pairs,
    d2d_loss,
    d2d_r_loss,
    u2u_loss,
    u2u_r_loss,
)
from lit_unlearn.methods.attribute.retention import embedding_regularization


def brute_u2u(x: np.ndarray, c: np.ndarray) -> tuple[float, int]:
    """Sum of squared distances over unordered cross-class pairs, and the pair count."""
    total, pairs = 0.0, 0
    for i, j in itertools.combinations(range(len(c)), 2):
        if c[i] >= 0 and c[j] >= 0 and c[i] != c[j]:
            total += float(((x[i] - x[j]) ** 2).sum())
            pairs += 1
    return total, pairs


def brute_mmd(x: np.ndarray, c: np.ndarray, scales: list[float]) -> float:
    """Biased squared MMD with a sum of Gaussian kernels, averaged over class pairs."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return float(sum(np.exp(-d2 / s) for s in scales).mean())

    classes = sorted(set(c[c >= 0].tolist()))
    vals = [
        k(x[c == a], x[c == a]) + k(x[c == b], x[c == b]) - 2 * k(x[c == a], x[c == b])
        for a, b in itertools.combinations(classes, 2)
    ]
    return float(np.mean(vals))


# ----------------------------------------------------------------------------------------- U2U


def test_u2u_hand_computed() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [9.0, 9.0]])
    c = torch.tensor([0, 0, 1, -1])
    # Cross pairs (0, 2): 4 and (1, 2): 1 + 4 = 5; the unknown user is ignored.
    assert u2u_loss(x, c, 2).item() == pytest.approx(4.5)
    assert u2u_loss(x, c, 2, reduction="sum").item() == pytest.approx(9.0)
    # Three classes on a line: pairs 1, 9 and 4.
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert u2u_loss(x, torch.tensor([0, 1, 2]), 3).item() == pytest.approx(14 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_u2u_exact_matches_brute_force(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(23, 4, generator=gen, dtype=torch.float64) + 5.0
    c = torch.randint(-1, 4, (23,), generator=gen)
    total, pairs = brute_u2u(x.numpy(), c.numpy())
    assert u2u_loss(x, c, 4).item() == pytest.approx(total / pairs, rel=1e-12)
    assert u2u_loss(x, c, 4, reduction="sum").item() == pytest.approx(total, rel=1e-12)


def test_u2u_float32_far_from_origin_stays_accurate() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 8, generator=gen, dtype=torch.float64) + 1e4
    c = torch.arange(2).repeat(20)
    total, pairs = brute_u2u(x.numpy(), c.numpy())
    assert u2u_loss(x.float(), c, 2).item() == pytest.approx(total / pairs, rel=1e-4)


def test_u2u_zero_when_users_coincide_and_gradients_finite() -> None:
    x = torch.ones(6, 3, requires_grad=True)
    loss = u2u_loss(x, torch.tensor([0, 1, 0, 1, 2, 2]), 3)
    loss.backward()
    assert loss.item() == 0.0
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_u2u_gradcheck() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(7, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0, 1, 2, 0, 1, -1, 2])
    assert torch.autograd.gradcheck(lambda e: u2u_loss(e, c, 3), (x,))


def test_u2u_sampled_is_deterministic_and_unbiased() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(60, 3, generator=gen, dtype=torch.float64)
    c = torch.randint(0, 3, (60,), generator=gen)

    def sampled(seed: int, n: int) -> float:
        return u2u_loss(x, c, 3, n, torch.Generator().manual_seed(seed)).item()

    assert sampled(1, 256) == sampled(1, 256)
    assert sampled(1, 256) != sampled(2, 256)
    exact = u2u_loss(x, c, 3).item()
    assert sampled(3, 200_000) == pytest.approx(exact, rel=0.02)
    s = u2u_loss(x, c, 3, 200_000, torch.Generator().manual_seed(3), reduction="sum").item()
    assert s == pytest.approx(u2u_loss(x, c, 3, reduction="sum").item(), rel=0.02)


def test_cross_pair_sampler_is_uniform_over_cross_pairs() -> None:
    c = torch.tensor([0, 0, 0, 1, 2, 2])
    counts = torch.bincount(c)
    i, j = _sample_cross_pairs(c, counts, 60_000, torch.Generator().manual_seed(6))
    assert (c[i] != c[j]).all()
    pairs = [(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist(), strict=True)]
    expected = {p for p in itertools.combinations(range(6), 2) if c[p[0]] != c[p[1]]}
    freq = {p: pairs.count(p) / len(pairs) for p in expected}
    assert set(pairs) == expected
    assert all(abs(f - 1 / len(expected)) < 0.01 for f in freq.values())


def test_u2u_errors() -> None:
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        u2u_loss(x, torch.tensor([1, 1, -1, 1]), 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        u2u_loss(torch.full((4, 2), float("nan")), torch.tensor([0, 1, 0, 1]), 2)
    with pytest.raises(ValueError, match="num_pairs"):
        u2u_loss(x, torch.tensor([0, 1, 0, 1]), 2, num_pairs=0)
    with pytest.raises(ValueError, match=r"\[-1, 2\)"):
        u2u_loss(x, torch.tensor([0, 1, 0, 2]), 2)


# ----------------------------------------------------------------------------------------- D2D


def test_d2d_mean_hand_computed() -> None:
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [5.0, 5.0]])
    c = torch.tensor([0, 0, 1, 1, -1])
    # Means (1, 0) and (0, 2): 1 + 4.
    assert d2d_loss(x, c, 2).item() == pytest.approx(5.0)
    # Three classes with means 0, 1 and 3 on a line: pairs 1, 9, 4; class 3 is empty.
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert d2d_loss(x, torch.tensor([0, 1, 2]), 4).item() == pytest.approx(14 / 3)


def test_d2d_mmd_hand_computed() -> None:
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    c = torch.tensor([0, 1])
    # One Gaussian kernel, h = 1: k(0,0) + k(1,1) - 2 k(0,1) = 2 - 2 / e.
    got = d2d_loss(x, c, 2, "mmd", bandwidth=1.0, num_kernels=1).item()
    assert got == pytest.approx(2 - 2 / math.e, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_d2d_mmd_matches_brute_force(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(17, 3, generator=gen, dtype=torch.float64)
    c = torch.randint(-1, 3, (17,), generator=gen)
    xs, cs = x.numpy(), c.numpy()
    lab = xs[cs >= 0]
    d2 = ((lab[:, None] - lab[None]) ** 2).sum(-1)
    h = d2.sum() / (len(lab) * (len(lab) - 1))  # the default bandwidth
    want = brute_mmd(xs, cs, [h * 2.0**i for i in range(-2, 3)])
    assert d2d_loss(x, c, 3, "mmd").item() == pytest.approx(want, rel=1e-10)
    assert d2d_loss(x, c, 3, "mmd", chunk_size=4).item() == pytest.approx(want, rel=1e-10)
    want_fixed = brute_mmd(xs, cs, [0.7 * 3.0**i for i in range(-1, 2)])
    got = d2d_loss(x, c, 3, "mmd", bandwidth=0.7, num_kernels=3, kernel_mul=3.0).item()
    assert got == pytest.approx(want_fixed, rel=1e-10)


@pytest.mark.parametrize("kernel", ["mean", "mmd"])
def test_d2d_zero_when_groups_coincide(kernel: str) -> None:
    base = torch.randn(10, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x = torch.cat([base, base, base])
    c = torch.arange(3).repeat_interleave(10)
    assert abs(d2d_loss(x, c, 3, kernel).item()) < 1e-12  # type: ignore[arg-type]


@pytest.mark.parametrize("kernel", ["mean", "mmd"])
def test_d2d_relabel_invariance_gradients_and_gradcheck(kernel: str) -> None:
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(9, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.tensor([0, 1, 2, 0, 1, 2, 0, -1, 1])
    loss = d2d_loss(x, c, 3, kernel)  # type: ignore[arg-type]
    relabelled = d2d_loss(x, torch.tensor([2, 0, 1, -1])[c], 3, kernel)  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(relabelled.item(), rel=1e-12)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # A fixed bandwidth: the default one is a constant of the data, not differentiated.
    assert torch.autograd.gradcheck(
        lambda e: d2d_loss(e, c, 3, kernel, bandwidth=1.3),  # type: ignore[arg-type]
        (x.detach().requires_grad_(True),),
    )


def test_d2d_identical_embeddings_give_finite_zero() -> None:
    x = torch.ones(6, 2, requires_grad=True)
    loss = d2d_loss(x, torch.tensor([0, 1, 0, 1, 0, 1]), 2, "mmd")
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_d2d_errors() -> None:
    x = torch.randn(4, 2)
    c = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        d2d_loss(x, torch.tensor([0, 0, -1, 0]), 2)
    with pytest.raises(ValueError, match="kernel"):
        d2d_loss(x, c, 2, "rbf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bandwidth"):
        d2d_loss(x, c, 2, "mmd", bandwidth=0.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        d2d_loss(torch.full((4, 2), float("inf")), c, 2)


# ---------------------------------------------------------------------- retention and the -R


def test_embedding_regularization() -> None:
    ref = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    cur = torch.tensor([[1.0, 2.0], [1.0, 0.0]], requires_grad=True)
    loss = embedding_regularization(cur, ref)
    assert loss.item() == pytest.approx(6.0)  # 1 + 4 + 0 + 1
    assert embedding_regularization(cur, ref, "mean").item() == pytest.approx(3.0)
    loss.backward()
    assert ref.grad is None  # the reference is detached
    assert cur.grad is not None
    torch.testing.assert_close(cur.grad, 2 * (cur - ref).detach())
    with pytest.raises(ValueError, match="differs"):
        embedding_regularization(cur, ref[:1])
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        embedding_regularization(cur[0], ref[0])


def test_u2u_r_and_d2d_r_combine_with_fixed_weights() -> None:
    gen = torch.Generator().manual_seed(9)
    ref = torch.randn(12, 3, generator=gen)
    cur = (ref + 0.1 * torch.randn(12, 3, generator=gen)).requires_grad_(True)
    c = torch.arange(2).repeat(6)
    reg = embedding_regularization(cur, ref).item()

    total, parts = u2u_r_loss(cur, ref, c, 2, lambda_dist=0.5, lambda_reg=3.0)
    assert parts["distinguishability"].item() == pytest.approx(u2u_loss(cur, c, 2).item())
    assert parts["regularization"].item() == pytest.approx(reg)
    assert total.item() == pytest.approx(0.5 * u2u_loss(cur, c, 2).item() + 3.0 * reg)

    total, parts = d2d_r_loss(cur, ref, c, 2, lambda_dist=2.0, lambda_reg=0.1, kernel="mmd")
    assert total.item() == pytest.approx(2.0 * d2d_loss(cur, c, 2, "mmd").item() + 0.1 * reg)
    total.backward()
    assert cur.grad is not None and torch.isfinite(cur.grad).all()

    # Several attributes: the distinguishability term is their mean, each one logged.
    c2 = torch.arange(3).repeat(4)
    total, parts = d2d_r_loss(cur, ref, {"a": c, "b": c2}, {"a": 2, "b": 3}, lambda_reg=0.0)
    mean = 0.5 * (d2d_loss(cur, c, 2).item() + d2d_loss(cur, c2, 3).item())
    assert total.item() == pytest.approx(mean)
    assert set(parts) == {
        "distinguishability",
        "regularization",
        "distinguishability/a",
        "distinguishability/b",
    }
    with pytest.raises(ValueError, match="different attributes"):
        u2u_r_loss(cur, ref, {"a": c}, {"b": 2})


def test_u2u_r_sampled_is_seeded() -> None:
    gen = torch.Generator().manual_seed(10)
    ref = torch.randn(30, 2, generator=gen)
    c = torch.randint(0, 2, (30,), generator=gen)
    a, _ = u2u_r_loss(ref, ref, c, 2, num_pairs=64, generator=torch.Generator().manual_seed(0))
    b, _ = u2u_r_loss(ref, ref, c, 2, num_pairs=64, generator=torch.Generator().manual_seed(0))
    assert a.item() == b.item()
