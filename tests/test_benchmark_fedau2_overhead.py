"""The FedAU2 Table 3 benchmark: SUT's branch really skips, and the script runs end to end."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.fedau2_overhead import (
    VARIANTS,
    ClientDevice,
    Setup,
    backward_nodes,
    client_batches,
    main,
    make_term,
    sut_term,
)
from lit_unlearn.methods.federated import ClientData, MultinomialELBO, PointwiseBCE
from lit_unlearn.methods.federated.adversary import AdversaryTerm
from lit_unlearn.methods.federated.heads import AttributeHead
from lit_unlearn.methods.federated.objectives import LocalLoss
from lit_unlearn.models import NCF, MultVAE
from lit_unlearn.models.base import Recommender

USERS, ITEMS = 6, 24


def _setup(backbone: str, label: int = 1) -> Setup:
    """A tiny client population (random interactions) with every label ``label``."""
    torch.manual_seed(0)
    pairs = torch.stack(
        [torch.arange(USERS).repeat_interleave(8), torch.randint(0, ITEMS, (USERS * 8,))]
    )
    data = ClientData.from_pairs(pairs.unique(dim=1), USERS, ITEMS)
    model: Recommender
    loss: LocalLoss
    if backbone == "fedvae":
        model, loss, dim, size = MultVAE(USERS, ITEMS, 6, hidden=10), MultinomialELBO(), 6, None
    else:
        model, loss, dim, size = NCF(USERS, ITEMS, 4, scorer="neumf"), PointwiseBCE(4), 8, 16
    return Setup(
        backbone=backbone,
        model=model,
        local_loss=loss,
        data=data,
        labels=torch.full((USERS,), label),
        input_dim=dim,
        num_classes=2,
        head_lr=0.1,
        head_optimizer="sgd",
        engine_kwargs={"lr": 0.01, "optimizer": "adam", "local_batch_size": size, "seed": 0},
        data_name="tiny",
        note=None,
        config="none",
    )


def _mispredicting(term: AdversaryTerm) -> AdversaryTerm:
    """The MLP head always predicts class 0 (every label is 1: it gets every client wrong); its
    last layer's weights stay non-zero, so a gradient does flow back through it."""
    head = term.head
    assert isinstance(head, AttributeHead)
    with torch.no_grad():
        head.out.weight.mul_(1e-3)
        head.out.bias.copy_(torch.tensor([10.0, -10.0]))
    return term


@pytest.mark.parametrize("backbone", ["fedvae", "fedncf"])
@pytest.mark.parametrize("kind", ["mlp", "dsvae"])
def test_sut_branch_equals_the_adversary_term(backbone: str, kind: str) -> None:
    """Value and gradients as ``AdversaryTerm(trigger="correct", sut_skip="loss")``; None where
    that term is 0 (the DSVAE head's noise makes both cases occur over the seeds)."""
    setup = _setup(backbone, label=0)
    term = make_term(setup, kind, True, 400.0)  # type: ignore[arg-type]
    batch, _ = client_batches(setup, 2, round_seed=1)[0]
    label = torch.tensor(0)
    outcomes = set()

    def grads_of(value: torch.Tensor) -> list[torch.Tensor]:
        setup.model.zero_grad(set_to_none=True)
        term.zero_grad(set_to_none=True)
        value.backward()
        params = [*term.parameters(), *setup.model.parameters()]
        return [p.grad.clone() if p.grad is not None else torch.zeros(()) for p in params]

    for seed in range(12):
        torch.manual_seed(seed)
        ours = sut_term(term, setup.model, setup.local_loss, batch, label)
        torch.manual_seed(seed)
        reference = term(setup.model, setup.local_loss, batch, label)
        outcomes.add(ours is None)
        if ours is None:
            assert float(reference.detach()) == 0.0
            continue
        torch.testing.assert_close(ours, reference)
        for a, b in zip(grads_of(ours), grads_of(reference), strict=True):
            torch.testing.assert_close(a, b)
    if kind == "dsvae":
        assert outcomes == {True, False}


def test_client_device_runs_the_private_rows_under_their_own_optimiser() -> None:
    """FedNCF's split optimisers (SGD on the shared side, Adam on the user's row), as the engine
    runs them: under the reversal's x400 gradient the private row moves by at most Adam's first
    step (its lr), while SGD moves the shared side in proportion to its gradient. Before the
    device took ``private_*`` from the config, every parameter ran SGD at the shared lr and the
    benchmark's FedNCF diverged within a few local steps."""
    setup = _setup("fedncf", label=1)
    setup.engine_kwargs.update(lr=1.0, optimizer="sgd", private_lr=0.05, private_optimizer="adam")
    term = make_term(setup, "mlp", False, 400.0)
    device = ClientDevice(setup, term, False, fused=False)
    kinds = {type(opt).__name__: opt for opt in device.opts}
    assert set(kinds) == {"SGD", "Adam"}
    private = {id(device.locals[n]) for n in device.private_names}
    adam_params = {id(p) for g in kinds["Adam"].param_groups for p in g["params"]}
    assert adam_params == private and kinds["Adam"].param_groups[0]["lr"] == 0.05
    assert kinds["SGD"].param_groups[0]["lr"] == 1.0
    state = {n: p.detach().clone() for n, p in setup.model.named_parameters()}
    head = {n: p.detach().clone() for n, p in term.head.state_dict().items()}
    device.load(state, head, user=2)
    before = {n: device.locals[n].detach().clone() for n in device.private_names}
    batch, mask = client_batches(setup, 2, round_seed=1)[0]
    device.step(batch, mask, torch.tensor(1), count=False)
    for n in device.private_names:
        moved = (device.locals[n].detach() - before[n]).abs().max().item()
        assert 0.0 < moved <= 0.05 + 1e-6, (n, moved)


@pytest.mark.parametrize("backbone", ["fedvae", "fedncf"])
def test_sut_skip_does_the_plain_steps_work(backbone: str) -> None:
    """A head that mispredicts every client: SUT's steps are skipped, their backward graph is the
    plain step's, the backbone ends where the plain client's does and the head gets no gradient."""
    setup = _setup(backbone, label=1)
    state = {n: p.detach().clone() for n, p in setup.model.named_parameters()}
    plain = ClientDevice(setup, None, sut=False)
    sut = ClientDevice(setup, _mispredicting(make_term(setup, "mlp", True, 400.0)), sut=True)
    adv = ClientDevice(setup, _mispredicting(make_term(setup, "mlp", False, 400.0)), sut=False)
    assert sut.term is not None
    head_before = [p.detach().clone() for p in sut.term.parameters()]
    user = 3
    batches = client_batches(setup, user, round_seed=5)
    records: dict[str, list[dict[str, Any]]] = {}
    for name, device in (("plain", plain), ("sut", sut), ("adv", adv)):
        device.load(state, None, user)
        torch.manual_seed(7)
        records[name] = [device.step(b, m, setup.labels[user], count=True) for b, m in batches]
    assert all(r["skipped"] for r in records["sut"])
    assert all(r["skipped"] is None for r in records["plain"] + records["adv"])
    for rp, rs, ra in zip(records["plain"], records["sut"], records["adv"], strict=True):
        assert rs["nodes"] == rp["nodes"] < ra["nodes"]
    for (n, p), q in zip(plain.local.named_parameters(), sut.local.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=n)
    assert all(p.grad is None for p in sut.term.parameters())
    for before, after in zip(head_before, sut.term.parameters(), strict=True):
        assert torch.equal(before, after)
    # The adversarial client did move differently (the reversal reached the representation).
    moved = [
        not torch.allclose(p, q)
        for p, q in zip(plain.local.parameters(), adv.local.parameters(), strict=True)
    ]
    assert any(moved)


def test_backward_nodes_counts_the_graph() -> None:
    x = torch.ones(3, requires_grad=True)
    assert backward_nodes((x * 2).sum()) == 3  # SumBackward, MulBackward, AccumulateGrad
    assert backward_nodes(x.detach().sum()) == 0


@pytest.fixture
def restore_process_state() -> Iterator[None]:
    """main() sets torch's thread count and quietens loggers: undo it for later tests."""
    threads = torch.get_num_threads()
    names = ("lightning.pytorch", "lightning.fabric", "lit_unlearn")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    torch.set_num_threads(threads)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restore_process_state")
def test_quick_run_on_synthetic_writes_json_and_markdown(tmp_path: Path) -> None:
    stem = tmp_path / "fedau2"
    result = main(["--quick", "--synthetic", "--backbone", "fedncf", "--out", str(stem)])
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data == json.loads(json.dumps(result))
    assert data["threads"] == 1 and {"machine", "torch", "git_commit"} <= set(data["provenance"])
    (row,) = data["backbones"]
    assert row["backbone"] == "fedncf" and "Synthetic" in row["data_note"]
    steps = row["client_steps"]["variants"]
    assert list(steps) == list(VARIANTS)
    assert len({steps[v]["steps"] for v in VARIANTS}) == 1  # the same steps for every variant
    for v in VARIANTS:
        assert steps[v]["wall"]["overall_ms"] > 0 and steps[v]["losses_finite"]
    for v, full in (("+SUT", "Adv"), ("FedAU2", "+DSVAE")):
        assert 0 <= steps[v]["skip_fraction"] <= 1
        if steps[v]["skipped_steps"]:
            assert steps[v]["backward_nodes_skipped"] == steps["Plain"]["backward_nodes_median"]
        if steps[v]["skipped_steps"] < steps[v]["steps"]:
            assert steps[v]["backward_nodes_unlearning"] == steps[full]["backward_nodes_median"]
    assert set(row["engine"]["variants"]) == set(VARIANTS)
    md = stem.with_suffix(".md").read_text()
    assert "| Time / ms | Plain | Adv | +SUT | +DSVAE | FedAU2 |" in md
    assert "8.489" in md and "NOT on ML-100K" in md and "Batched engine" in md
