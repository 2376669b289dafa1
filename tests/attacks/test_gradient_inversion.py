"""Gradient inversion on an uploaded adversary head: iDLG, DLG (FedAU2 Eq. 4) and their scores.

The uploads are made the way a FedAU2 client makes them: the gradient of one user's
cross-entropy ``CE(h(em_u), y_u)`` with respect to the shared head, one (embedding, label) pair
per user, computed for many users at once with ``vmap``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lit_unlearn.attacks import (
    UNDETERMINED,
    DLGResult,
    LabelRecoveryResult,
    dlg_attack,
    evaluate_label_recovery,
    gradient_from_update,
    idlg_labels,
)
from lit_unlearn.attacks.gradient_inversion import _batched_lbfgs, _MatchObjective

DIM = 32
HIDDEN = 100
# 15 LBFGS steps of 20 iterations: the accuracy of the reference's 300 steps (0.776 vs 0.766 on
# 500 users), at a fraction of the time; users that converge stop long before either bound.
STEPS = 15


class DSVAEHead(nn.Module):
    """FedAU2's DSVAE adversary (Sec. 4.3, Eq. 10), noise on the logits.

    ``z = ReLU(W1 em + b1)``, ``mu = W^mu z``, ``sigma = W^sigma z`` and logits
    ``u = mu * eps1 + sigma * eps2`` with ``eps1 ~ N(1, lam)`` (``lam`` a variance) and
    ``eps2 ~ N(0, I)``, fresh at every forward. ``lam = 0`` is the plain VAE head.
    """

    def __init__(self, num_classes: int, lam: float = 4.0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU())
        self.mu = nn.Linear(HIDDEN, num_classes, bias=False)
        self.sigma = nn.Linear(HIDDEN, num_classes, bias=False)
        self.lam = lam

    def forward(self, em: Tensor) -> Tensor:
        z = self.body(em)
        mu, sigma = self.mu(z), self.sigma(z)
        eps1 = 1.0 + math.sqrt(self.lam) * torch.randn_like(mu)
        return mu * eps1 + sigma * torch.randn_like(sigma)


def _mlp(num_classes: int, seed: int = 0) -> nn.Sequential:
    """FedAU2's MLP adversary: embedding -> 100 -> ReLU -> logits."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, num_classes))


def _dsvae(num_classes: int, lam: float, seed: int = 0) -> DSVAEHead:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DSVAEHead(num_classes, lam)


def _users(n: int, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` embeddings ``N(0, I)`` and labels holding every class about equally often."""
    gen = torch.Generator().manual_seed(seed)
    em = torch.randn(n, DIM, generator=gen)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    return em, labels


def _uploads(
    head: nn.Module,
    em: Tensor,
    labels: Tensor,
    params: dict[str, Tensor] | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Each client's gradient of ``CE(h(em_u), y_u)`` w.r.t. the head (per-user ``params`` if
    given), one noise draw per client for a stochastic head."""
    shared = params is None
    p = {k: v.detach() for k, v in head.named_parameters()} if shared else params
    assert p is not None
    num_classes = int(head(em[:1]).shape[1])
    targets = nn.functional.one_hot(labels, num_classes).to(em.dtype)

    def ce(pp: dict[str, Tensor], e: Tensor, t: Tensor) -> Tensor:
        out = functional_call(head, pp, (e.unsqueeze(0),))
        return -(t * torch.log_softmax(out, dim=-1)).sum()

    dims = {k: (None if shared else 0) for k in p}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return vmap(grad(ce), in_dims=(dims, 0, 0), randomness="different")(p, em, targets)


def _accuracy(pred: Tensor, labels: Tensor) -> float:
    return float((pred.cpu() == labels).double().mean())


# ---------------------------------------------------------------------------------------------
# iDLG
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_idlg_recovers_every_label_of_a_relu_mlp_head(num_classes: int) -> None:
    head = _mlp(num_classes, seed=num_classes)
    em, labels = _users(300, num_classes, seed=1)
    g = _uploads(head, em, labels)
    for pred in (
        idlg_labels(g["2.weight"]),
        idlg_labels(g["2.weight"], g["2.bias"]),
        idlg_labels(g["2.weight"], g["2.bias"], strict=True),
    ):
        assert pred.dtype == torch.long and pred.shape == (300,)
        assert torch.equal(pred, labels)
    # One user given without the batch dimension.
    assert idlg_labels(g["2.weight"][7], g["2.bias"][7]).tolist() == [int(labels[7])]


def test_idlg_bias_alone_decides_when_every_relu_is_dead() -> None:
    # h = 0 makes dL/dW zero; dL/db = p - y still has its single negative entry.
    weight = torch.zeros(4, 3, 10)
    bias = torch.tensor([[-0.7, 0.3, 0.4], [0.2, 0.1, -0.3], [0.5, -0.5, 0.0], [0.1, 0.2, -0.3]])
    assert idlg_labels(weight, bias).tolist() == [0, 2, 1, 2]
    assert idlg_labels(weight).tolist() == [UNDETERMINED] * 4


def test_idlg_on_dsvae_mu_gradient_follows_the_eps1_sign_flips() -> None:
    """``eps1 ~ N(1, lam)`` flips each class row of ``dL/dW^mu`` (Cor. 3): for two classes the
    argmin is right with probability ``P(eps1_0 + eps1_1 > 0) = Phi(sqrt(2 / lam))``."""
    n, lam = 4000, 4.0
    head = _dsvae(2, lam)
    em, labels = _users(n, 2, seed=2)
    g = _uploads(head, em, labels, seed=3)
    expected = 0.5 * (1.0 + math.erf(math.sqrt(2.0 / lam) / math.sqrt(2.0)))  # 0.760
    assert _accuracy(idlg_labels(g["mu.weight"]), labels) == pytest.approx(expected, abs=0.035)
    # The strict sign rule ("exactly one negative row") is broken for about
    # 1 - q^2 - (1 - q)^2 = 0.43 of the users, q = P(eps1 > 0) = Phi(1/2).
    strict = idlg_labels(g["mu.weight"], strict=True)
    q = 0.5 * (1.0 + math.erf(0.5 / math.sqrt(2.0)))
    assert float((strict == UNDETERMINED).double().mean()) == pytest.approx(
        1.0 - q**2 - (1.0 - q) ** 2, abs=0.035
    )
    # Without eps1 (the plain VAE head) the mu path is deterministic and iDLG exact (Cor. 2).
    vae = _dsvae(2, lam=0.0)
    g_vae = _uploads(vae, em[:500], labels[:500], seed=3)
    assert torch.equal(idlg_labels(g_vae["mu.weight"]), labels[:500])


def test_idlg_reads_the_label_the_gradient_was_computed_for() -> None:
    head = _mlp(2)
    em, labels = _users(400, 2, seed=4)
    other = torch.randint(0, 2, (400,), generator=torch.Generator().manual_seed(5))
    g = _uploads(head, em, other)
    pred = idlg_labels(g["2.weight"], g["2.bias"])
    assert torch.equal(pred, other)
    # Against the true labels: only the agreement of two independent labelings (~chance).
    assert _accuracy(pred, labels) == pytest.approx(_accuracy(other, labels))
    assert 0.4 < _accuracy(pred, labels) < 0.6


def test_idlg_zero_gradient_is_undetermined_and_scored_as_a_miss() -> None:
    pred = idlg_labels(torch.zeros(6, 2, HIDDEN), torch.zeros(6, 2))
    assert pred.tolist() == [UNDETERMINED] * 6
    result = evaluate_label_recovery(pred, torch.tensor([0, 1, 0, 1, 1, 1]), 2, attack="idlg")
    assert result.accuracy == 0.0 and result.balanced_accuracy == 0.0
    assert result.n_undetermined == 6


def test_idlg_survives_a_multi_step_local_update() -> None:
    """Every SGD step on the same sample has the same sign pattern, so their sum does too."""
    head = _mlp(3, seed=6)
    em, labels = _users(40, 3, seed=7)
    before = {k: v.detach().clone() for k, v in head.named_parameters()}
    lr, after = 0.1, []
    for u in range(40):
        client = copy.deepcopy(head)
        opt = torch.optim.SGD(client.parameters(), lr=lr)
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(client(em[u : u + 1]), labels[u : u + 1]).backward()
            opt.step()
        after.append({k: v.detach().clone() for k, v in client.named_parameters()})
    uploaded = {k: torch.stack([a[k] for a in after]) for k in before}
    g = gradient_from_update(before, uploaded, lr)
    assert torch.equal(idlg_labels(g["2.weight"], g["2.bias"]), labels)


# ---------------------------------------------------------------------------------------------
# DLG
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3])
def test_dlg_recovers_labels_from_a_plain_mlp_head(num_classes: int) -> None:
    head = _mlp(num_classes, seed=10 + num_classes)
    em, labels = _users(48, num_classes, seed=11)
    g = _uploads(head, em, labels)
    res = dlg_attack(head, None, g, steps=STEPS, restarts=2, seed=0)
    score = evaluate_label_recovery(res.labels, labels, num_classes, attack="dlg")
    assert score.accuracy >= 0.85, score
    assert score.balanced_accuracy >= 0.85, score
    # A user whose gradient is matched has its label recovered, and once the match is tight
    # its embedding too (the attack's own loss tells the server which users to trust).
    scale = sum(v.double().pow(2).flatten(1).sum(1) for v in g.values())
    matched = res.loss <= 1e-4 * scale
    assert float(matched.double().mean()) >= 0.75
    assert torch.equal(res.labels[matched], labels[matched])
    tight = res.loss <= 1e-8 * scale
    assert float(tight.double().mean()) >= 0.5
    assert torch.allclose(res.embeddings[tight], em[tight].double(), atol=1e-2)
    # Restarts only for users that were not matched, at most 3 attempts each.
    assert int(res.attempts.min()) == 1 and int(res.attempts.max()) <= 3


def test_dlg_without_restarts_is_the_reference_attack() -> None:
    head = _mlp(2, seed=12)
    em, labels = _users(48, 2, seed=11)
    g = _uploads(head, em, labels)
    res = dlg_attack(head, None, g, steps=STEPS)
    assert isinstance(res, DLGResult)
    assert res.labels.shape == (48,) and res.labels.dtype == torch.long
    assert res.label_probs.shape == (48, 2) and res.embeddings.shape == (48, DIM)
    assert res.loss.shape == (48,) and res.loss.dtype == torch.float64
    assert torch.equal(res.attempts, torch.ones(48, dtype=torch.long))
    assert torch.allclose(res.label_probs.sum(1), torch.ones(48, dtype=torch.float64))
    assert bool((res.iterations <= STEPS * 20).all())
    # One start per user: clearly better than chance, worse than with restarts.
    assert _accuracy(res.labels, labels) >= 0.7


def test_dlg_uses_each_users_parameters_at_upload() -> None:
    """Users upload at different rounds: each gradient belongs to its own head parameters."""
    head = _mlp(2, seed=13)
    em, labels = _users(24, 2, seed=14)
    gen = torch.Generator().manual_seed(15)
    params = {
        k: v.detach() + 0.3 * v.detach().abs().mean() * torch.randn(24, *v.shape, generator=gen)
        for k, v in head.named_parameters()
    }
    g = _uploads(head, em, labels, params=params)
    res = dlg_attack(head, params, g, steps=STEPS, restarts=2)
    assert _accuracy(res.labels, labels) >= 0.85
    # Pretending every upload came from the current head explains the uploads far worse.
    wrong = dlg_attack(head, None, g, steps=3)
    assert float(wrong.loss.median()) > 100 * float(res.loss.median())


def test_dlg_is_near_chance_against_a_dsvae_head() -> None:
    head = _dsvae(2, lam=4.0, seed=16)
    em, labels = _users(64, 2, seed=17)
    g = _uploads(head, em, labels, seed=18)
    # The noise keeps L-BFGS from converging; more steps change nothing but the runtime.
    res = dlg_attack(head, None, g, steps=5)
    score = evaluate_label_recovery(res.labels, labels, 2)
    # 64 users at chance: accuracy 0.5 +- 0.0625 (one standard deviation). Near chance from
    # both sides: a systematically flipped answer would leak the label just as well.
    assert 0.3 <= score.accuracy <= 0.7, score
    assert 0.3 <= score.balanced_accuracy <= 0.7, score
    assert score.chance == 0.5


def test_dlg_on_a_zero_gradient_returns_the_heads_own_prediction() -> None:
    """A zero upload is explained by any ``em'`` with ``softmax(y') = h(em')``: DLG returns the
    head's prediction at its dummy embedding, which knows nothing of the user (chance)."""
    head = _mlp(2, seed=19)
    _, labels = _users(64, 2, seed=20)
    zeros = {k: torch.zeros(64, *v.shape) for k, v in head.named_parameters()}
    res = dlg_attack(head, None, zeros, steps=5, restarts=1)
    explained = res.loss < 1e-8
    assert float(explained.double().mean()) >= 0.9
    with torch.no_grad():
        predicted = head(res.embeddings.float()).argmax(1)
    assert torch.equal(res.labels[explained], predicted[explained])
    assert 0.3 <= _accuracy(res.labels, labels) <= 0.7


def test_dlg_reads_the_label_the_gradient_was_computed_for() -> None:
    head = _mlp(2, seed=21)
    em, labels = _users(32, 2, seed=22)
    other = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(23))
    res = dlg_attack(head, None, _uploads(head, em, other), steps=STEPS, restarts=1)
    assert _accuracy(res.labels, other) >= 0.85
    agreement = _accuracy(other, labels)
    assert abs(_accuracy(res.labels, labels) - agreement) <= 0.15


def test_dlg_is_deterministic_and_leaves_the_caller_alone() -> None:
    head = _dsvae(3, lam=4.0, seed=24)
    em, labels = _users(6, 3, seed=25)
    g = _uploads(head, em, labels)
    state = torch.random.get_rng_state()
    before = copy.deepcopy(head.state_dict())
    first = dlg_attack(head, None, g, steps=2, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(v, before[k]) for k, v in head.state_dict().items())
    assert next(head.parameters()).dtype == torch.float32
    torch.manual_seed(1234)  # the global RNG must not matter
    again = dlg_attack(head, None, g, steps=2, seed=7)
    for f in dataclasses.fields(DLGResult):
        assert torch.equal(getattr(first, f.name), getattr(again, f.name)), f.name
    other = dlg_attack(head, None, g, steps=2, seed=8)
    assert not torch.equal(first.embeddings, other.embeddings)


def test_fixed_noise_holds_a_stochastic_heads_draws_across_evaluations() -> None:
    head = _dsvae(2, lam=4.0, seed=33).double()
    em, labels = _users(4, 2, seed=34)
    g = {k: v.double() for k, v in _uploads(head, em.double(), labels).items()}
    params = {k: v.detach() for k, v in head.named_parameters()}
    dims: dict[str, int | None] = dict.fromkeys(params)
    x = torch.randn(4, DIM + 2, dtype=torch.float64, generator=torch.Generator().manual_seed(35))
    fixed = _MatchObjective(head, params, dims, g, DIM, "different", fixed_noise=True)
    assert torch.equal(fixed(x)[0], fixed(x)[0])
    fresh = _MatchObjective(head, params, dims, g, DIM, "different")
    assert not torch.equal(fresh(x)[0], fresh(x)[0])
    # Still a function of the seed alone.
    runs = [dlg_attack(head, None, g, steps=2, fixed_noise=True, seed=3) for _ in range(2)]
    assert torch.equal(runs[0].embeddings, runs[1].embeddings)


def test_dlg_users_do_not_interact() -> None:
    """Attacking the users in chunks of 3 gives the same trajectories as all at once."""
    head = _mlp(3, seed=26)
    em, labels = _users(8, 3, seed=27)
    g = _uploads(head, em, labels)
    together = dlg_attack(head, None, g, steps=1)
    chunked = dlg_attack(head, None, g, steps=1, chunk_size=3)
    assert torch.allclose(together.embeddings, chunked.embeddings, atol=1e-6)
    assert torch.equal(together.iterations, chunked.iterations)
    # A single user may be given without the batch dimension.
    single = dlg_attack(head, None, {k: v[0] for k, v in g.items()}, steps=1)
    assert single.labels.shape == (1,)


@pytest.mark.parametrize(
    ("steps", "max_iter", "history_size"),
    [(1, 20, 100), (1, 2, 100), (3, 4, 100), (1, 14, 5)],
    ids=["one-step", "max-eval-bound", "paused-steps", "history-wraps"],
)
def test_batched_lbfgs_follows_torch_lbfgs_for_every_user(
    steps: int, max_iter: int, history_size: int
) -> None:
    """Per user the vectorised L-BFGS is ``torch.optim.LBFGS(lr=1)`` stepped ``steps`` times:
    same first step, two-loop direction, max_eval bound, curvature test and pauses."""
    head = _mlp(2, seed=28).double()
    em, labels = _users(5, 2, seed=29)
    g = {k: v.double() for k, v in _uploads(head, em.double(), labels).items()}
    params = {k: v.detach() for k, v in head.named_parameters()}
    dims: dict[str, int | None] = dict.fromkeys(params)
    x0 = torch.randn(5, DIM + 2, generator=torch.Generator().manual_seed(30), dtype=torch.float64)
    objective = _MatchObjective(head, params, dims, g, DIM, "error")
    x, _, _ = _batched_lbfgs(objective, x0, steps, max_iter, 1.0, history_size, 1e-7, 1e-9)
    for u in range(5):
        xu = x0[u : u + 1].clone().requires_grad_(True)
        single = _MatchObjective(
            head, params, dims, {k: v[u : u + 1] for k, v in g.items()}, DIM, "error"
        )
        opt = torch.optim.LBFGS([xu], lr=1, max_iter=max_iter, history_size=history_size)

        def closure(xu: Tensor = xu, single: _MatchObjective = single) -> Tensor:
            value, gradient = single(xu.detach())
            xu.grad = gradient
            return value.sum()

        for _ in range(steps):
            opt.step(closure)
        assert torch.allclose(x[u], xu.detach()[0], atol=1e-6, rtol=0), u


def test_dlg_from_an_sgd_update_equals_the_gradient() -> None:
    head = _mlp(2, seed=31)
    em, labels = _users(3, 2, seed=32)
    before = {k: v.detach().clone() for k, v in head.named_parameters()}
    after: list[dict[str, Tensor]] = []
    for u in range(3):
        client = copy.deepcopy(head)
        nn.functional.cross_entropy(client(em[u : u + 1]), labels[u : u + 1]).backward()
        with torch.no_grad():
            for p in client.parameters():
                assert p.grad is not None
                p.sub_(0.5 * p.grad)
        after.append({k: v.detach() for k, v in client.named_parameters()})
    g = gradient_from_update(before, {k: torch.stack([a[k] for a in after]) for k in before}, 0.5)
    expected = _uploads(head, em, labels)
    for k in expected:
        assert torch.allclose(g[k], expected[k], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


def test_evaluate_label_recovery_by_hand() -> None:
    result = evaluate_label_recovery(
        torch.tensor([0, 1, 1, UNDETERMINED, 2]), np.array([0, 1, 0, 0, 2]), 3, attack="idlg"
    )
    assert isinstance(result, LabelRecoveryResult)
    assert result.accuracy == pytest.approx(3 / 5)
    # Recalls: class 0 -> 1/3 (one of three), class 1 -> 1, class 2 -> 1.
    assert result.balanced_accuracy == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert result.chance == pytest.approx(1 / 3)
    assert result.majority_class == 0
    assert result.majority_accuracy == pytest.approx(3 / 5)
    assert result.majority_balanced_accuracy == pytest.approx(1 / 3)
    assert (result.n_users, result.n_undetermined, result.num_classes) == (5, 1, 3)
    row = result.as_dict()
    assert row["attack"] == "idlg" and set(row) == {f.name for f in dataclasses.fields(result)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.accuracy = 1.0  # type: ignore[misc]
    # The server's own majority (e.g. from the users it knows) may differ from the truth's.
    other = evaluate_label_recovery([0, 1, 1, 0, 2], [0, 1, 0, 0, 2], 3, majority=1)
    assert other.majority_class == 1 and other.majority_accuracy == pytest.approx(1 / 5)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _mlp_grads(users: int = 2) -> tuple[nn.Sequential, dict[str, Tensor]]:
    head = _mlp(2)
    return head, {k: torch.zeros(users, *v.shape) for k, v in head.named_parameters()}


def _without(d: dict[str, Tensor], key: str) -> dict[str, Tensor]:
    return {k: v for k, v in d.items() if k != key}


def _bad_dlg_calls() -> list[tuple[str, dict[str, Any], str]]:
    head, g = _mlp_grads()
    nan = dict(g, **{"0.bias": torch.full_like(g["0.bias"], math.nan)})
    return [
        ("missing", {"gradients": _without(g, "2.bias")}, r"missing \['2\.bias'\]"),
        ("unknown", {"gradients": dict(g, extra=torch.zeros(2))}, r"unknown \['extra'\]"),
        ("shape", {"gradients": dict(g, **{"2.bias": torch.zeros(2, 3)})}, "shape"),
        ("mixed", {"gradients": dict(g, **{"2.bias": torch.zeros(2)})}, "per user"),
        ("nan", {"gradients": nan}, "NaN/inf"),
        ("empty", {"gradients": {}}, "empty"),
        ("no-users", {"gradients": {k: v[:0] for k, v in g.items()}}, "no users"),
        ("params-users", {"params": {k: v[:1] for k, v in g.items()}}, "users"),
        ("params-keys", {"params": _without(dict(head.named_parameters()), "0.weight")}, "keys"),
        ("steps", {"steps": 0}, "steps"),
        ("restarts", {"restarts": -1}, "restarts"),
        ("lr", {"lr": 0.0}, "lr"),
        ("randomness", {"randomness": "sometimes"}, "randomness"),
        ("dtype", {"dtype": torch.int64}, "dtype"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [c[1:] for c in _bad_dlg_calls()],
    ids=[c[0] for c in _bad_dlg_calls()],
)
def test_dlg_rejects_bad_input(kwargs: dict[str, Any], match: str) -> None:
    head, g = _mlp_grads()
    call: dict[str, Any] = {"params": None, "gradients": g, "steps": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        dlg_attack(head, call.pop("params"), call.pop("gradients"), **call)


def test_dlg_rejects_a_head_with_one_output() -> None:
    head = nn.Sequential(nn.Linear(DIM, 4), nn.ReLU(), nn.Linear(4, 1))
    g = {k: torch.zeros(2, *v.shape) for k, v in head.named_parameters()}
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        dlg_attack(head, None, g, steps=1)


@pytest.mark.parametrize(
    ("weight", "bias", "match"),
    [
        (torch.zeros(2, 2, 3, 4), None, "weight_grad must be"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 2), "bias_grad has shape"),
        (torch.full((2, 3, 4), math.inf), None, "NaN/inf"),
        (torch.zeros(2, 1, 4), None, "num_classes must be >= 2"),
        (torch.zeros(0, 3, 4), None, "no users"),
    ],
    ids=["ndim", "bias-shape", "inf", "one-class", "no-users"],
)
def test_idlg_rejects_bad_input(weight: Tensor, bias: Tensor | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        idlg_labels(weight, bias)


@pytest.mark.parametrize(
    ("recovered", "labels", "num_classes", "kwargs", "match"),
    [
        ([0, 1], [0, 1], 1, {}, "num_classes must be"),
        ([0, 1], [0, 1, 1], 2, {}, "differ in length"),
        ([], [], 2, {}, "empty"),
        ([0, 1], [0, 2], 2, {}, "labels must be codes"),
        ([0, -2], [0, 1], 2, {}, "recovered must be codes"),
        ([0, 1], [0, 1], 2, {"majority": 2}, "majority"),
        ([[0, 1]], [[0, 1]], 2, {}, "1-D"),
        ([0.5, 1.0], [0, 1], 2, {}, "integer"),
    ],
    ids=["one-class", "length", "empty", "label-range", "pred-range", "majority", "2d", "float"],
)
def test_evaluate_rejects_bad_input(
    recovered: Any, labels: Any, num_classes: int, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_label_recovery(recovered, labels, num_classes, **kwargs)


def test_gradient_from_update_rejects_bad_input() -> None:
    w = {"w": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match="lr must be > 0"):
        gradient_from_update(w, w, 0.0)
    with pytest.raises(ValueError, match="different parameters"):
        gradient_from_update(w, {"v": torch.zeros(2, 3)}, 0.1)
    with pytest.raises(ValueError, match="before"):
        gradient_from_update(w, {"w": torch.zeros(3, 2)}, 0.1)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize(
    "kind", ["mlp", "vae", "dsvae-logits", "dsvae-input"], ids=lambda k: str(k)
)
@pytest.mark.parametrize("per_user", [True, False], ids=["per-user", "shared"])
def test_structured_objective_equals_the_generic_one(
    kind: str, distance: str, per_user: bool
) -> None:
    """The first layer's gradient formed by hand (never materialised) gives the generic
    path's value and gradient, noise draws included (the same RNG replay)."""
    from lit_unlearn.methods.federated.heads import build_head

    head_kind, _, site = kind.partition("-")
    torch.manual_seed(40)
    head = build_head(head_kind, 24, 3, hidden=16, noise_site=site or "logits").double()  # type: ignore[arg-type]
    users = 5
    g = torch.Generator().manual_seed(41)
    params = {
        k: v.detach()
        + (0.1 * torch.randn(users, *v.shape, generator=g, dtype=v.dtype) if per_user else 0)
        for k, v in head.named_parameters()
    }
    dims: dict[str, int | None] = dict.fromkeys(params, 0 if per_user else None)
    observed = {
        k: torch.randn(users, *head.get_parameter(k).shape, generator=g, dtype=torch.float64)
        for k in params
    }
    x = torch.randn(users, 24 + 3, generator=g, dtype=torch.float64)
    out = []
    for structured in (False, True):
        torch.manual_seed(42)  # the fixed noise is replayed from the state at construction
        objective = _MatchObjective(
            head, params, dims, observed, 24, "different", fixed_noise=True,
            distance=distance, structured=structured,  # type: ignore[arg-type]
        )  # fmt: skip
        out.append(objective(x))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-9, atol=1e-9)


def test_structured_dlg_recovers_what_the_generic_dlg_recovers() -> None:
    """On FedAU2's heads ``dlg_attack`` takes the structured path by itself: the same labels
    and losses as the generic one; a head it does not fit is refused when it is forced."""
    from lit_unlearn.methods.federated.heads import AttributeHead, VariationalHead

    for head in (AttributeHead(DIM, 2, hidden=HIDDEN), VariationalHead(DIM, 2, hidden=HIDDEN)):
        em, labels = _users(6, 2, seed=43)
        g = _uploads(head, em, labels)
        runs = [
            dlg_attack(head, None, g, steps=2, optimizer="adam", lr=0.1, label_search=True,
                       structured=s)
            for s in (False, None)
        ]  # fmt: skip
        assert torch.equal(runs[0].labels, runs[1].labels)
        torch.testing.assert_close(runs[0].loss, runs[1].loss, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="structured"):
        dlg_attack(_mlp(2), None, _uploads(_mlp(2), em, labels), steps=1, structured=True)
    with pytest.raises(ValueError, match="structured"):
        dlg_attack(
            AttributeHead(DIM, 2, hidden=HIDDEN), None,
            _uploads(AttributeHead(DIM, 2, hidden=HIDDEN), em, labels),
            steps=1, structured=True, multi_step="unroll", local_steps=2, local_lr=0.1,
        )  # fmt: skip
