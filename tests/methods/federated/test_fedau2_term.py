"""FedAU2's adversary: the heads (MLP / VAE / DSVAE, Eq. 10), the gradient reversal with its
strategies (Global, Pretrain, SUT binary and adaptive Eq. 6), checked against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_unlearn.methods.federated import (
    AdversaryTerm,
    ClientData,
    InProcessEngine,
    PointwiseBCE,
)
from lit_unlearn.methods.federated.heads import AttributeHead, VariationalHead, build_head
from lit_unlearn.models import NCF, FedRAP
from lit_unlearn.models.base import Recommender


class _Fixed(PointwiseBCE):
    """A local loss whose representation is a given leaf tensor (to read its gradient)."""

    def __init__(self, rep: Tensor) -> None:
        super().__init__()
        self.rep = rep

    def representation(self, model: Recommender, batch: dict[str, Tensor]) -> Tensor:
        return self.rep


def _term_grads(term: AdversaryTerm, rep: Tensor, label: int) -> tuple[Tensor, Tensor, Tensor]:
    """(term value, d term / d rep, d term / d head's last weight)."""
    rep = rep.clone().requires_grad_(True)
    term.zero_grad()
    out = term(None, _Fixed(rep), {}, torch.tensor(label))
    out.backward()
    last = [m for m in term.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    grad_rep = rep.grad if rep.grad is not None else torch.zeros_like(rep)
    assert last.weight.grad is not None
    return out.detach(), grad_rep, last.weight.grad.clone()


def _plain_ce_grads(head: torch.nn.Module, rep: Tensor, label: int) -> tuple[Tensor, Tensor]:
    """d CE / d rep and d CE / d last weight of the head without any reversal."""
    rep = rep.clone().requires_grad_(True)
    head.zero_grad()
    F.cross_entropy(head(rep).unsqueeze(0), torch.tensor([label])).backward()
    last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert rep.grad is not None and last.weight.grad is not None
    return rep.grad.clone(), last.weight.grad.clone()


def _term(**kw: object) -> AdversaryTerm:
    torch.manual_seed(0)
    return AdversaryTerm(input_dim=6, num_classes=2, **kw)  # type: ignore[arg-type]


def _label_it_predicts(term: AdversaryTerm, rep: Tensor, right: bool) -> int:
    pred = int(term.head(rep).argmax())
    return pred if right else 1 - pred


def test_global_reversal_is_minus_scale_times_the_ce_gradient() -> None:
    term = _term(grl_scale=400.0, weight=0.5)
    rep = torch.randn(6)
    _, g_rep, g_w = _term_grads(term, rep, 1)
    ce_rep, ce_w = _plain_ce_grads(term.head, rep, 1)
    torch.testing.assert_close(g_rep, -400.0 * 0.5 * ce_rep)
    torch.testing.assert_close(g_w, 0.5 * ce_w)  # the head itself learns normally


def test_observer_head_sends_no_gradient_to_the_representation() -> None:
    term = _term(grl_scale=0.0)
    _, g_rep, g_w = _term_grads(term, torch.randn(6), 0)
    assert torch.count_nonzero(g_rep) == 0 and torch.count_nonzero(g_w) > 0


def test_pretrain_phase_observes_then_reverses() -> None:
    term = _term(grl_scale=10.0, pretrain_rounds=3)
    rep = torch.randn(6)
    for r, reversing in ((0, False), (2, False), (3, True), (7, True)):
        term.start_round(r)
        assert term.reversing is reversing
        _, g_rep, _ = _term_grads(term, rep, 1)
        ce_rep, _ = _plain_ce_grads(term.head, rep, 1)
        expected = -10.0 * ce_rep if reversing else torch.zeros_like(ce_rep)
        torch.testing.assert_close(g_rep, expected)


@pytest.mark.parametrize("right", [True, False])
def test_sut_skip_loss_drops_the_whole_term_for_a_mispredicted_client(right: bool) -> None:
    term = _term(grl_scale=400.0, trigger="correct", sut_skip="loss")
    rep = torch.randn(6)
    label = _label_it_predicts(term, rep, right)
    value, g_rep, g_w = _term_grads(term, rep, label)
    ce_rep, ce_w = _plain_ce_grads(term.head, rep, label)
    if right:
        torch.testing.assert_close(g_rep, -400.0 * ce_rep)
        torch.testing.assert_close(g_w, ce_w)
        assert float(value) > 0
    else:
        assert float(value) == 0.0
        assert torch.count_nonzero(g_rep) == 0 and torch.count_nonzero(g_w) == 0


@pytest.mark.parametrize("right", [True, False])
def test_sut_skip_grl_keeps_training_the_head(right: bool) -> None:
    term = _term(grl_scale=400.0, trigger="correct", sut_skip="grl")
    rep = torch.randn(6)
    label = _label_it_predicts(term, rep, right)
    _, g_rep, g_w = _term_grads(term, rep, label)
    ce_rep, ce_w = _plain_ce_grads(term.head, rep, label)
    torch.testing.assert_close(g_w, ce_w)  # the head learns from every known client
    torch.testing.assert_close(g_rep, -400.0 * ce_rep if right else torch.zeros_like(ce_rep))


def test_adaptive_trigger_gives_every_client_a_reversed_gradient_of_norm_tau() -> None:
    term = _term(trigger="adaptive", tau=0.3, weight=2.0)
    for seed in range(3):
        rep = torch.randn(6, generator=torch.Generator().manual_seed(seed)) * (seed + 1)
        _, g_rep, _ = _term_grads(term, rep, seed % 2)
        ce_rep, _ = _plain_ce_grads(term.head, rep, seed % 2)
        assert math.isclose(float(g_rep.norm()), 0.3, rel_tol=1e-5)
        # Eq. 6: the direction is the reversed cross-entropy gradient's
        cos = F.cosine_similarity(g_rep, -ce_rep, dim=0)
        assert float(cos) > 1 - 1e-5


def test_unknown_label_adds_nothing() -> None:
    term = _term(grl_scale=400.0, trigger="correct", sut_skip="grl")
    value, g_rep, g_w = _term_grads(term, torch.randn(6), -1)
    assert float(value) == 0 and torch.count_nonzero(g_rep) == 0 and torch.count_nonzero(g_w) == 0


def test_dsvae_noise_has_the_documented_law() -> None:
    head = VariationalHead(5, 3, hidden=7, kind="dsvae", noise_variance=4.0)
    torch.manual_seed(0)
    eps1, eps2 = head.sample_noise(torch.zeros(200_000, 5))
    assert eps1 is not None and eps1.shape == (200_000, 3) and eps2.shape == (200_000, 3)
    assert abs(float(eps1.mean()) - 1.0) < 0.02 and abs(float(eps1.var()) - 4.0) < 0.05
    assert abs(float(eps2.mean())) < 0.01 and abs(float(eps2.var()) - 1.0) < 0.02
    inp = VariationalHead(5, 3, hidden=7, kind="dsvae", noise_site="input")
    e1, _ = inp.sample_noise(torch.zeros(4, 5))
    assert e1 is not None and e1.shape == (4, 7)  # one factor per hidden unit (Cor. 3)
    vae = VariationalHead(5, 3, hidden=7, kind="vae")
    assert vae.sample_noise(torch.zeros(4, 5))[0] is None


def test_dsvae_logits_follow_eq10_and_eval_returns_mu() -> None:
    torch.manual_seed(0)
    head = VariationalHead(5, 3, hidden=7)
    x = torch.randn(4, 5)
    eps1, eps2 = torch.randn(4, 3) + 1, torch.randn(4, 3)
    z = F.relu(head.hidden(x))
    expected = head.mu(z) * eps1 + head.sigma(z) * eps2
    torch.testing.assert_close(head(x, noise=(eps1, eps2)), expected)
    inp = VariationalHead(5, 3, hidden=7, noise_site="input")
    e1 = torch.randn(4, 7) + 1
    z = F.relu(inp.hidden(x))
    torch.testing.assert_close(inp(x, noise=(e1, eps2)), inp.mu(z * e1) + inp.sigma(z) * eps2)
    head.eval()
    torch.testing.assert_close(head(x), head.mu(F.relu(head.hidden(x))))
    head.train()
    assert not torch.equal(head(x), head(x))  # fresh noise at every forward


def test_dsvae_flips_the_label_rows_sign_as_cor3_says() -> None:
    """The mu layer's gradient is (p - y) * eps1 * z: the true class's row is negative only
    when eps1 > 0 (probability Phi(1/2) = 0.69 at lambda = 4), so iDLG's sign rule degrades."""
    torch.manual_seed(0)
    head = VariationalHead(4, 2, hidden=8)
    x = torch.randn(4).abs()
    hits = 0
    trials = 400
    for _ in range(trials):
        head.zero_grad()
        F.cross_entropy(head(x).unsqueeze(0), torch.tensor([1])).backward()
        assert head.mu.bias.grad is not None
        hits += int(head.mu.bias.grad.argmin() == 1)
    assert 0.55 < hits / trials < 0.85  # a plain MLP head: 1.0


def test_build_head_and_bad_arguments() -> None:
    assert isinstance(build_head("mlp", 4, 2), AttributeHead)
    assert isinstance(build_head("vae", 4, 2), VariationalHead)
    with pytest.raises(ValueError, match="head must be"):
        build_head("gan", 4, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise_variance"):
        VariationalHead(4, 2, noise_variance=-1.0)
    with pytest.raises(ValueError, match="noise_site"):
        VariationalHead(4, 2, noise_site="hidden")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        VariationalHead(4, 1)
    for kw, match in (
        ({"trigger": "sometimes"}, "trigger"),
        ({"sut_skip": "both"}, "sut_skip"),
        ({"pretrain_rounds": -1}, "pretrain_rounds"),
        ({"tau": float("nan")}, "tau"),
        ({"representation": "items"}, "representation"),
        ({"head_kind": "gan"}, "head must be"),
    ):
        with pytest.raises(ValueError, match=match):
            AdversaryTerm(**kw)


def _engine(term: AdversaryTerm, model_kind: str = "ncf", seed: int = 0) -> InProcessEngine:
    torch.manual_seed(0)
    users, items = 40, 20
    g = torch.Generator().manual_seed(1)
    pairs = torch.cat(
        [
            torch.stack([torch.full((5,), u), torch.randperm(items, generator=g)[:5]])
            for u in range(users)
        ],
        dim=1,
    )
    model = (
        NCF(users, items, 4, hidden_layers=1, scorer="neumf")
        if model_kind == "ncf"
        else FedRAP(users, items, 4, residual_init_std=0.05)
    )
    return InProcessEngine(
        model,
        PointwiseBCE(2),
        ClientData.from_pairs(pairs, users, items),
        labels=torch.arange(users) % 2,
        terms=[term],
        fraction=0.25,
        local_batch_size=8,
        lr=0.05,
        seed=seed,
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"trigger": "correct", "head_kind": "dsvae"},
        {"trigger": "correct", "sut_skip": "grl", "head_kind": "dsvae"},
        {"trigger": "adaptive", "tau": 0.1, "head_kind": "vae"},
        {"pretrain_rounds": 2, "head_kind": "dsvae", "noise_site": "input"},
    ],
)
def test_every_strategy_runs_batched_and_is_seeded(kw: dict[str, object]) -> None:
    def run() -> dict[str, Tensor]:
        torch.manual_seed(0)
        term = AdversaryTerm(input_dim=8, num_classes=2, grl_scale=50.0, lr=0.1, **kw)  # type: ignore[arg-type]
        engine = _engine(term)
        for _ in range(4):
            engine.run_round()
        return {n: p.detach().clone() for n, p in engine.objective.named_parameters()}

    a, b = run(), run()
    for n in a:
        assert torch.isfinite(a[n]).all(), n
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0)


def test_sut_in_the_engine_matches_the_term_on_one_client() -> None:
    """A round of one client under vmap gives the head the same update as the term alone."""
    term = AdversaryTerm(input_dim=8, num_classes=2, grl_scale=50.0, trigger="correct")
    engine = _engine(term)
    before = engine.model.user_representation().detach().clone()
    engine.run_round(torch.tensor([3]))
    after = engine.model.user_representation().detach()
    changed = (after - before).abs().sum(dim=1) > 0
    assert changed.tolist() == [u == 3 for u in range(40)]  # only the sampled client moves


def test_fedrap_residual_input_is_item_long_and_refused_elsewhere() -> None:
    term = AdversaryTerm(
        input_dim=20, num_classes=2, grl_scale=10.0, representation="residual_mean_dims"
    )
    engine = _engine(term, "fedrap")
    model = engine.model
    assert isinstance(model, FedRAP)
    d_before = model.residual.detach().clone()
    engine.run_round()
    assert not torch.equal(d_before, model.residual.detach())
    bad = AdversaryTerm(input_dim=20, num_classes=2, representation="residual_mean_dims")
    with pytest.raises(ValueError, match="FedRAP"):
        _engine(bad, "ncf").run_round()


def test_a_head_of_the_wrong_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="set AdversaryTerm's input_dim"):
        _engine(AdversaryTerm(input_dim=5, num_classes=2, grl_scale=1.0)).run_round()


def test_reversing_through_the_mean_is_full_strength_while_the_head_stays_noisy() -> None:
    torch.manual_seed(0)
    term = AdversaryTerm(
        input_dim=6, num_classes=2, grl_scale=400.0, head_kind="dsvae", reverse_through="mean"
    )
    rep = torch.randn(6)
    # The reversal: exactly -scale * dCE(mu logits)/drep, whatever the noise draw.
    x = rep.clone().requires_grad_(True)
    F.cross_entropy(term.head(x, mean=True).unsqueeze(0), torch.tensor([1])).backward()
    assert x.grad is not None
    for seed in range(3):
        torch.manual_seed(seed)
        _, g_rep, g_w = _term_grads(term, rep, 1)
        torch.testing.assert_close(g_rep, -400.0 * x.grad)
        assert torch.count_nonzero(g_w) > 0
    # The head's own gradient (its upload) still goes through the noise: it varies by draw.
    grads = []
    for seed in range(2):
        torch.manual_seed(seed)
        grads.append(_term_grads(term, rep, 1)[2])
    assert not torch.allclose(grads[0], grads[1])


def test_sut_through_the_mean_gates_only_the_reversal_with_grl_skip() -> None:
    torch.manual_seed(0)
    term = AdversaryTerm(
        input_dim=6, num_classes=2, grl_scale=400.0, trigger="correct", sut_skip="loss",
        reverse_through="mean",
    )  # fmt: skip
    rep = torch.randn(6)
    label = _label_it_predicts(term, rep, right=False)
    value, g_rep, g_w = _term_grads(term, rep, label)  # an MLP head: deterministic
    assert float(value) == 0 and torch.count_nonzero(g_rep) == 0 and torch.count_nonzero(g_w) == 0
    with pytest.raises(ValueError, match="reverse_through"):
        AdversaryTerm(reverse_through="both")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- push="confuse"
def _confusion_grad(head: torch.nn.Module, rep: Tensor, goal: Tensor) -> Tensor:
    """d CE(goal, softmax(head(rep))) / d rep, by hand."""
    rep = rep.clone().requires_grad_(True)
    (-(goal * F.log_softmax(head(rep), dim=-1)).sum()).backward()
    assert rep.grad is not None
    return rep.grad.clone()


def test_confusion_descends_the_cross_entropy_to_the_prior_and_trains_the_head_as_reverse() -> None:
    term = _term(grl_scale=40.0, weight=0.5, push="confuse")
    term.observe_labels(torch.tensor([0, 1, 1, 1, -1]))
    torch.testing.assert_close(term.class_prior, torch.tensor([0.25, 0.75]))
    rep = torch.randn(6)
    _, g_rep, g_w = _term_grads(term, rep, 1)
    _, ce_w = _plain_ce_grads(term.head, rep, 1)
    torch.testing.assert_close(g_w, 0.5 * ce_w)  # the head learns exactly as with reverse
    expected = 40.0 * 0.5 * _confusion_grad(term.head, rep, torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(g_rep, expected)
    # the push does not depend on the client's label (only the head's loss does)
    _, g_rep0, _ = _term_grads(term, rep, 0)
    torch.testing.assert_close(g_rep0, expected)
    uniform = _term(grl_scale=40.0, push="confuse", confusion_target="uniform")
    uniform.observe_labels(torch.tensor([0, 1, 1, 1]))
    torch.testing.assert_close(uniform.class_prior, torch.tensor([0.5, 0.5]))
    _, g_u, _ = _term_grads(uniform, rep, 1)
    half = torch.full((2,), 0.5)
    torch.testing.assert_close(g_u, 40.0 * _confusion_grad(uniform.head, rep, half))


@pytest.mark.parametrize("push", ["reverse", "confuse"])
def test_confusion_stops_a_client_at_the_boundary_where_reversal_pushes_it_across(
    push: str,
) -> None:
    # Descending the term's gradient on one client's representation (the head frozen): the
    # reversal drives the head's posterior of the true class toward 0 (inverting it); the
    # confusion drives it to the prior and no further.
    term = _term(grl_scale=1.0, push=push)
    term.observe_labels(torch.tensor([0, 1]))
    rep = torch.randn(6)
    label = int(term.head(rep).argmax())
    for _ in range(600):
        _, g_rep, _ = _term_grads(term, rep, label)
        rep = rep - 2.0 * g_rep
    p_true = float(F.softmax(term.head(rep).detach(), dim=-1)[label])
    if push == "confuse":
        assert abs(p_true - 0.5) < 0.02
    else:
        assert p_true < 0.1


def test_confusion_with_sut_pushes_only_right_predictions_and_adaptive_has_norm_tau() -> None:
    term = _term(grl_scale=10.0, push="confuse", trigger="correct", sut_skip="grl")
    rep = torch.randn(6)
    wrong = 1 - int(term.head(rep).argmax())
    _, g_rep, g_w = _term_grads(term, rep, wrong)
    assert torch.count_nonzero(g_rep) == 0 and torch.count_nonzero(g_w) > 0
    adaptive = _term(push="confuse", trigger="adaptive", tau=0.3)
    _, g_a, _ = _term_grads(adaptive, rep, 0)
    assert math.isclose(float(g_a.norm()), 0.3, rel_tol=1e-5)
    direction = _confusion_grad(adaptive.head, rep, torch.full((2,), 0.5))
    assert float(F.cosine_similarity(g_a, direction, dim=0)) > 1 - 1e-5


def test_confusion_options_are_checked() -> None:
    with pytest.raises(ValueError, match="push"):
        _term(push="invert")
    with pytest.raises(ValueError, match="confusion_target"):
        _term(push="confuse", confusion_target="flat")
    term = _term(push="confuse")
    with pytest.raises(ValueError, match="labelled clients"):
        term.observe_labels(torch.tensor([-1, -1]))
    with pytest.raises(ValueError, match="outside"):
        term.observe_labels(torch.tensor([0, 2]))
    _term(push="reverse").observe_labels(torch.tensor([-1]))  # nothing to learn: no error


def test_confusion_runs_in_the_engine_with_the_clients_prior() -> None:
    torch.manual_seed(0)
    term = AdversaryTerm(
        input_dim=8, num_classes=2, grl_scale=50.0, lr=0.1, push="confuse", head_kind="dsvae"
    )
    engine = _engine(term)
    known = engine.labels[engine.labels >= 0]
    share = float((known == 1).float().mean())
    torch.testing.assert_close(term.class_prior, torch.tensor([1 - share, share]))
    before = engine.model.user_representation().detach().clone()
    for _ in range(3):
        engine.run_round()
    after = engine.model.user_representation().detach()
    assert torch.isfinite(after).all() and not torch.equal(before, after)
