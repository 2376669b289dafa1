"""FedAU2 Table 3: per-step client time of Adv, +SUT, +DSVAE and FedAU2 against the plain step.

FedAU2 (App. D, Table 3) reports the forward, backward and overall time (ms) of a client's
local step for four variants, most likely on FedVAE: *Adv* (adversarial training with a
gradient-reversal layer on every client: Global), *+SUT* (the selective unlearning trigger: a
client whose adversary head mispredicts its own attribute skips the adversarial term), *+DSVAE*
(the dual-stochastic head, Global) and *FedAU2* (SUT + DSVAE): Overall 8.489 / 7.988 / 8.673 /
8.081 ms, FedAU2 -4.8% against Adv. This benchmark measures the same four variants and the
plain client step (no adversary) in the same run, on MovieLens-100K as FedAU2 prepares it,
built from the shipped configs (``configs/experiment/federated/ml100k_fedvae.yaml`` and
``ml100k_fedncf.yaml``: backbone, local loss, client optimiser, the adversary's input width,
classes and learning rate), FedVAE first (Table 3's backbone), then FedNCF.

1. **Head training.** The backbone and both heads (MLP and DSVAE, FedAU2's lambda = 4) are
   first trained with ``InProcessEngine`` for ``--pretrain-rounds`` rounds (default 50) with
   the heads observing (``grl_scale = 0``: trained on the attribute, nothing reversed), as the
   shipped configs run them, so that SUT's trigger sees a head that predicts as in a run (the
   skip rate depends on it; the head's accuracy before and after is reported).
2. **Per-client step** (the Table 3 measurement): one client at a time in plain PyTorch, as a
   client device runs it. A local copy of the backbone (per-user tables holding the client's
   own row only) and of the variant's ``AdversaryTerm`` is loaded with the global state per
   client; the client's examples are the round's (``LocalLoss.examples`` with
   ``InProcessEngine.client_generator``; FedVAE: its interaction row, one step per round;
   FedNCF: minibatches of 64 with 4 negatives per positive); per local step *forward* = the
   local recommendation loss plus the adversarial term, *backward* = ``loss.backward()``,
   *step* = the client's optimisers as the engine runs them (the config's client optimiser on
   the shared side, its private one on the user's own rows; fresh per client and round) and the
   head's own SGD. Adv / +DSVAE call ``AdversaryTerm.forward`` (``trigger="always"``, GRL
   scale ``--grl-scale``, FedAU2: 400). +SUT / FedAU2 run SUT as a Python branch on the same
   modules (:func:`sut_term`): the representation and the head's forward are needed for the
   prediction; a mispredicted client stops there (no cross-entropy, and its backward never
   enters the head or the reversal: its backward graph is the plain step's, counted), a
   correctly predicted one adds ``weight * CE``. Its value equals ``AdversaryTerm`` with
   ``trigger="correct", sut_skip="loss"`` (tested). For each repetition and client the five
   variants run back to back from the same state with the same examples and RNG seed, their
   order rotating (round-robin), so machine load falls on all of them alike.
3. **Batched engine**: ``InProcessEngine.run_round()`` per variant from the same trained state
   and the same sampled clients (``--engine-rounds`` rounds, variants interleaved). There every
   client of a round runs in one ``vmap``: a skipped client's term is multiplied by 0, so SUT
   saves no compute; this shows what it costs there.

Times are medians (ms per local step; per-client steps: wall ``perf_counter`` and the thread's
CPU time ``thread_time``, the steadier estimate on a loaded machine). A SUT variant's steps are
two populations (skipped and unlearning steps), so its per-step time is
``p * median(skipped) + (1 - p) * median(unlearning)`` with ``p`` the measured skip fraction (for
the other variants: the plain median); "Overall" = median of forward + backward per step (the
paper's Overall is Fwd + Bwd), the optimiser step is reported separately. One torch thread.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/fedau2_overhead.py               # both, ~5-10 min
    python benchmarks/fedau2_overhead.py --backbone fedvae --clients 100 --repeats 5
    python benchmarks/fedau2_overhead.py --quick                         # smoke test

Writes ``benchmarks/results/fedau2_overhead_cpu.{json,md}`` (``--out`` sets the path stem).
Without ``<root>/ml-100k`` (or with ``--synthetic``) it runs on a small ``Synthetic`` source and
says so in both files; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lit_unlearn.methods.federated import ClientData, InProcessEngine
from lit_unlearn.methods.federated.adversary import AdversaryTerm, gradient_reversal
from lit_unlearn.methods.federated.objectives import LocalLoss
from lit_unlearn.models.base import Recommender
from lit_unlearn.models.multvae import MultVAE

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = {
    "fedvae": "configs/experiment/federated/ml100k_fedvae.yaml",
    "fedncf": "configs/experiment/federated/ml100k_fedncf.yaml",
}
VARIANTS: tuple[str, ...] = ("Plain", "Adv", "+SUT", "+DSVAE", "FedAU2")
HeadKind = Literal["mlp", "dsvae"]
#: Variant -> (head, SUT trigger); Plain has no adversary.
ADVERSARY: dict[str, tuple[HeadKind, bool]] = {
    "Adv": ("mlp", False),
    "+SUT": ("mlp", True),
    "+DSVAE": ("dsvae", False),
    "FedAU2": ("dsvae", True),
}
#: FedAU2 Table 3 (ms; RTX 4090, "likely FedVAE").
PAPER_MS: dict[str, dict[str, float]] = {
    "Adv": {"fwd": 2.953, "bwd": 5.536, "overall": 8.489},
    "+SUT": {"fwd": 2.876, "bwd": 5.112, "overall": 7.988},
    "+DSVAE": {"fwd": 3.033, "bwd": 5.640, "overall": 8.673},
    "FedAU2": {"fwd": 2.964, "bwd": 5.117, "overall": 8.081},
}
# A small Synthetic source for smoke tests and machines without ML-100K.
SYNTHETIC_ARGS = [
    "--data.init_args.source=lit_unlearn.datamodules.Synthetic",
    "--data.init_args.source.init_args.num_users=200",
    "--data.init_args.source.init_args.num_items=150",
    "--data.init_args.source.init_args.interactions_per_user=12",
    "--data.init_args.num_eval_negatives=5",
]


# ---------------------------------------------------------------------------------- setup
@dataclass
class Setup:
    """One backbone's clients, global model and the shipped config's client settings."""

    backbone: str
    model: Recommender
    local_loss: LocalLoss
    data: ClientData
    labels: Tensor
    input_dim: int
    num_classes: int
    head_lr: float | None
    head_optimizer: Literal["sgd", "adam"]
    engine_kwargs: dict[str, Any]
    data_name: str
    note: str | None
    config: str
    describe: dict[str, Any] = field(default_factory=dict)


def load_setup(backbone: str, root: str, synthetic: bool) -> Setup:
    """The shipped config's data, backbone, local loss and adversary settings (via the CLI)."""
    from lit_unlearn.cli import build_cli

    config = CONFIGS[backbone]
    note = None
    if not synthetic:
        missing = [f for f in ("u.data", "u.user") if not (Path(root) / "ml-100k" / f).is_file()]
        if missing:
            note = (
                f"MovieLens-100K files missing under {root}/ml-100k ({', '.join(missing)}): the "
                "numbers below are on a small Synthetic source, NOT on ML-100K"
            )
            print(f"NOTE: {note}", flush=True)
            synthetic = True
    elif note is None:
        note = "--synthetic: the numbers below are on a small Synthetic source, NOT on ML-100K"
    argv = ["--config", str(REPO / config), "--trainer.logger=false"]
    argv += SYNTHETIC_ARGS if synthetic else [f"--data.init_args.source.init_args.root={root}"]
    cli = build_cli(argv, run=False)
    dm = cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    task = cli.model
    engine = task.build_engine(dm)  # the config's engine: its clients' data and labels
    term = task.terms[0]
    assert isinstance(term, AdversaryTerm)
    head = term.head
    name = (
        "Synthetic (seeded, 200 users x 150 items before filtering)"
        if synthetic
        else "MovieLens-100K (FedAU2: user_k 5, item_k 5, balanced by gender, leave-one-out)"
    )
    return Setup(
        backbone=backbone,
        model=task.model,
        local_loss=task.local_loss,
        data=engine.data,
        labels=engine.labels,
        input_dim=int(getattr(head, "input_dim")),  # noqa: B009 (nn.Module attribute)
        num_classes=int(getattr(head, "num_classes")),  # noqa: B009
        head_lr=term.lr,
        head_optimizer="adam" if term.optimizer == "adam" else "sgd",
        # The task's own engine settings (FedNCF: Adam 0.05 on the private rows, SGD 1.0 on the
        # shared side), so the benchmark's clients are the engine's.
        engine_kwargs=task.engine_settings(),
        data_name=name,
        note=note,
        config=config,
        describe={
            "model": type(task.model).__name__,
            "model_args": {
                k: getattr(task.model, k)
                for k in ("embedding_dim", "hidden", "dropout")
                if isinstance(getattr(task.model, k, None), (int, float))
            },
            "local_loss": type(task.local_loss).__name__,
            "parameters": sum(p.numel() for p in task.model.parameters()),
            "users": engine.data.num_users,
            "items": engine.data.num_items,
            "training_positives": int(engine.data.counts.sum()),
            "clients_per_round": engine.num_sampled,
            "client_optimizer": f"{task.client_optimizer} lr {task.client_lr}"
            + (
                f", private rows {task.private_optimizer or task.client_optimizer} lr "
                f"{task.private_lr if task.private_lr is not None else task.client_lr}"
                if task.private_lr is not None or task.private_optimizer is not None
                else ""
            ),
            "local_batch_size": task.local_batch_size,
            "head_input_dim": int(getattr(head, "input_dim")),  # noqa: B009
            "head_optimizer": f"{term.optimizer} lr {term.lr}",
        },
    )


def make_term(setup: Setup, kind: HeadKind, sut: bool, grl_scale: float) -> AdversaryTerm:
    """The variant's adversary: the config's head sizes and lr, FedAU2's GRL scale and lambda."""
    return AdversaryTerm(
        input_dim=setup.input_dim,
        num_classes=setup.num_classes,
        grl_scale=grl_scale,
        lr=setup.head_lr,
        optimizer=setup.head_optimizer,
        trigger="correct" if sut else "always",
        sut_skip="loss",
        head_kind=kind,
        noise_variance=4.0,
    )


def make_engine(setup: Setup, model: Recommender, terms: list[AdversaryTerm]) -> InProcessEngine:
    return InProcessEngine(
        model,
        copy.deepcopy(setup.local_loss),
        setup.data,
        labels=setup.labels,
        terms=list(terms),
        **setup.engine_kwargs,
    )


@torch.no_grad()
def head_accuracy(
    model: Recommender, head: nn.Module, data: ClientData, labels: Tensor, users: Tensor
) -> float:
    """Share of ``users`` whose attribute the head predicts, on the representation a client's
    step feeds it (training mode: dropout, the DSVAE head's noise)."""
    model.train()
    head.train()
    if isinstance(model, MultVAE):
        rep = model.encode(data.rows(users))[0]
    else:
        rep = model.user_representation()[users]
    pred = head(rep).argmax(-1)
    known = labels[users] >= 0
    return float((pred[known] == labels[users][known]).float().mean())


def pretrain(
    setup: Setup, rounds: int, users: Tensor, grl_scale: float
) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Train the backbone with both heads observing (``grl_scale`` 0) for ``rounds`` rounds.

    Returns:
        The backbone's state, each head's state (``mlp``, ``dsvae``) and what was done.
    """
    observers = {k: make_term(setup, k, False, 0.0) for k in ("mlp", "dsvae")}
    everyone = torch.arange(setup.data.num_users)

    def accuracy() -> dict[str, dict[str, float]]:
        return {
            k: {
                "benchmark_clients": head_accuracy(
                    setup.model, t.head, setup.data, setup.labels, users
                ),
                "all_clients": head_accuracy(
                    setup.model, t.head, setup.data, setup.labels, everyone
                ),
            }
            for k, t in observers.items()
        }

    before = accuracy()
    engine = make_engine(setup, setup.model, list(observers.values()))
    t0 = time.perf_counter()
    losses = [engine.run_round().loss for _ in range(rounds)]
    seconds = time.perf_counter() - t0
    after = accuracy()
    state = {n: p.detach().clone() for n, p in setup.model.state_dict().items()}
    heads = {
        k: {n: p.detach().clone() for n, p in t.head.state_dict().items()}
        for k, t in observers.items()
    }
    info = {
        "rounds": rounds,
        "seconds": seconds,
        "clients_per_round": engine.num_sampled,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "head_accuracy_before": before,
        "head_accuracy_after": after,
        "grl_scale_benchmarked": grl_scale,
    }
    print(
        f"  pretrained {rounds} rounds in {seconds:.1f} s; head accuracy on all clients: "
        f"mlp {before['mlp']['all_clients']:.3f} -> {after['mlp']['all_clients']:.3f}, dsvae "
        f"{before['dsvae']['all_clients']:.3f} -> {after['dsvae']['all_clients']:.3f}",
        flush=True,
    )
    return state, heads, info


# ---------------------------------------------------------------------------------- a client
def sut_term(
    term: AdversaryTerm,
    model: Recommender,
    local_loss: LocalLoss,
    batch: dict[str, Tensor],
    label: Tensor,
) -> Tensor | None:
    """SUT (FedAU2 Sec. 4.2, binary trigger) as a client device runs it: a Python branch.

    The head's forward on the reversed representation gives the prediction; a client it gets
    wrong (or whose label is unknown) skips the rest, returning None: no cross-entropy, and
    nothing of the head or the reversal enters its backward. A client it gets right returns
    ``weight * CE``. Same value as ``AdversaryTerm(trigger="correct", sut_skip="loss")``.
    """
    rep = term.head_input(model, local_loss, batch)
    logits = term.head(gradient_reversal(rep, term.grl_scale))
    target = label.clamp_min(0).reshape(1)
    if int(label) < 0 or int(logits.detach().argmax(-1)) != int(target[0]):
        return None
    return term.weight * F.cross_entropy(logits.unsqueeze(0), target)


def backward_nodes(loss: Tensor) -> int:
    """Distinct autograd nodes reachable from ``loss`` (the work its backward walks)."""
    seen: set[Any] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return len(seen)


def local_copy(model: Recommender) -> tuple[Recommender, list[str], list[str]]:
    """A client's copy of the backbone: its per-user tables hold one row (the client's, id 0).

    Returns:
        The copy, the shared and the private parameter names.
    """
    private = {id(p) for p in model.per_user_parameters()}
    named = dict(model.named_parameters())
    private_names = [n for n, p in named.items() if id(p) in private]
    shared_names = [n for n, p in named.items() if id(p) not in private]
    local = copy.deepcopy(model)
    for n in private_names:
        module_name, _, attr = n.rpartition(".")
        owner = local.get_submodule(module_name) if module_name else local
        setattr(owner, attr, nn.Parameter(named[n].detach()[:1].clone()))
    local.train()
    return local, shared_names, private_names


Batch = tuple[dict[str, Tensor], Tensor]


def client_batches(setup: Setup, user: int, round_seed: int) -> list[Batch]:
    """The client's local minibatches of one round (the engine's draws for it)."""
    gen = InProcessEngine.client_generator(round_seed, user)
    ex = setup.local_loss.examples(setup.data, torch.tensor([user]), [gen])
    n = int(ex.mask[0].sum())
    size = setup.engine_kwargs["local_batch_size"] if setup.local_loss.batched else None
    size = n if size is None else int(size)
    return [
        ({k: v[0, lo : lo + size] for k, v in ex.columns.items()}, ex.mask[0, lo : lo + size])
        for lo in range(0, n, size)
    ]


class ClientDevice:
    """One variant's client: local backbone, local loss, term and optimisers, reused per client.

    Args:
        setup: The backbone's setup (global model, loss, the config's client optimiser).
        term: The variant's adversary (None: the plain step).
        sut: Run SUT's branch (:func:`sut_term`) instead of the term's forward.
        fused: Use the fused Adam kernel for the backbone (the fastest on this CPU).
    """

    def __init__(
        self, setup: Setup, term: AdversaryTerm | None, sut: bool, fused: bool = True
    ) -> None:
        self.local, self.shared_names, self.private_names = local_copy(setup.model)
        self.local_loss = copy.deepcopy(setup.local_loss)
        self.term = term
        self.sut = sut
        self.globals = dict(setup.model.named_parameters())
        self.locals = dict(self.local.named_parameters())
        lr = float(setup.engine_kwargs["lr"])
        kind = setup.engine_kwargs["optimizer"]
        private_lr = setup.engine_kwargs.get("private_lr")
        private_lr = lr if private_lr is None else float(private_lr)
        private_kind = setup.engine_kwargs.get("private_optimizer") or kind
        private = [self.locals[n] for n in self.private_names]
        params = [self.locals[n] for n in self.shared_names]
        head_params = list(term.parameters()) if term is not None else []
        own_head_opt = term is not None and term.lr is not None
        if not own_head_opt:
            params += head_params
        # As the engine's clients: the shared side (and a head without its own lr) under the
        # client optimiser, the client's private rows under theirs (FedNCF: Adam 0.05).
        groups = [(params, kind, lr), (private, private_kind, private_lr)]
        self.opts: list[torch.optim.Optimizer] = [
            torch.optim.Adam(ps, lr=rate, fused=True if fused else None)
            if opt == "adam"
            else torch.optim.SGD(ps, lr=rate)
            for ps, opt, rate in groups
            if ps
        ]
        self.head_opt: torch.optim.Optimizer | None = None
        if term is not None and own_head_opt:
            assert term.lr is not None
            self.head_opt = (
                torch.optim.SGD(head_params, lr=term.lr)
                if term.optimizer == "sgd"
                else torch.optim.Adam(head_params, lr=term.lr)
            )

    @torch.no_grad()
    def load(self, state: dict[str, Tensor], head: dict[str, Tensor] | None, user: int) -> None:
        """The round's start: the global shared state, the client's own rows, fresh optimisers."""
        for n in self.shared_names:
            self.locals[n].copy_(state[n])
        for n in self.private_names:
            self.locals[n].copy_(state[n][user : user + 1])
        if self.term is not None and head is not None:
            for n, p in self.term.head.state_dict().items():
                p.copy_(head[n])
        for opt in self.opts:
            opt.state.clear()
        if self.head_opt is not None:
            self.head_opt.state.clear()

    def step(
        self, batch: dict[str, Tensor], mask: Tensor, label: Tensor, count: bool
    ) -> dict[str, Any]:
        """One local step, timed: forward, backward, optimiser step (wall and thread CPU s)."""
        clock, cpu = time.perf_counter, time.thread_time
        skipped: bool | None = None
        w0, c0 = clock(), cpu()
        loss = self.local_loss.loss(self.local, batch, mask)
        if self.term is not None:
            if self.sut:
                extra = sut_term(self.term, self.local, self.local_loss, batch, label)
                skipped = extra is None
                if extra is not None:
                    loss = loss + extra
            else:
                loss = loss + self.term(self.local, self.local_loss, batch, label)
        w1, c1 = clock(), cpu()
        nodes = backward_nodes(loss) if count else None  # untimed
        w1b, c1b = clock(), cpu()
        loss.backward()
        w2, c2 = clock(), cpu()
        for opt in self.opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if self.head_opt is not None:
            self.head_opt.step()
            self.head_opt.zero_grad(set_to_none=True)
        w3, c3 = clock(), cpu()
        return {
            "fwd": w1 - w0,
            "bwd": w2 - w1b,
            "opt": w3 - w2,
            "fwd_cpu": c1 - c0,
            "bwd_cpu": c2 - c1b,
            "opt_cpu": c3 - c2,
            "skipped": skipped,
            "nodes": nodes,
            "loss": float(loss.detach()),
        }


def build_devices(setup: Setup, grl_scale: float, fused: bool = True) -> dict[str, ClientDevice]:
    devices = {"Plain": ClientDevice(setup, None, False, fused)}
    for name, (kind, sut) in ADVERSARY.items():
        devices[name] = ClientDevice(setup, make_term(setup, kind, sut, grl_scale), sut, fused)
    return devices


def bench_clients(
    setup: Setup,
    state: dict[str, Tensor],
    heads: dict[str, dict[str, Tensor]],
    users: list[int],
    repeats: int,
    warmup: int,
    grl_scale: float,
    seed: int,
) -> dict[str, list[dict[str, Any]]]:
    """Every variant's timed local steps over ``users`` x ``repeats``, variants round-robin."""
    devices = build_devices(setup, grl_scale)
    steps: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    plan = [(-1, u) for u in users[:warmup]] + [(r, u) for r in range(repeats) for u in users]
    for i, (r, user) in enumerate(plan):
        round_seed = seed * 1_000 + max(r, 0)
        batches = client_batches(setup, user, round_seed)
        label = setup.labels[user]
        k = i % len(VARIANTS)
        for name in VARIANTS[k:] + VARIANTS[:k]:
            device = devices[name]
            head = heads[ADVERSARY[name][0]] if name in ADVERSARY else None
            device.load(state, head, user)
            torch.manual_seed(round_seed * 100_003 + user)  # same dropout / noise per variant
            for s, (batch, mask) in enumerate(batches):
                rec = device.step(batch, mask, label, count=r == 0)
                if r >= 0:
                    steps[name].append({**rec, "repeat": r, "user": user, "step": s})
        if (i + 1) % max(1, len(plan) // 4) == 0:
            print(f"  client steps: {i + 1}/{len(plan)} client-rounds", flush=True)
    return steps


# ---------------------------------------------------------------------------------- summaries
def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _components(rows: list[dict[str, Any]], cpu: bool) -> dict[str, float]:
    sfx = "_cpu" if cpu else ""
    fwd = [r["fwd" + sfx] for r in rows]
    bwd = [r["bwd" + sfx] for r in rows]
    opt = [r["opt" + sfx] for r in rows]
    return {
        "fwd_ms": 1e3 * _med(fwd),
        "bwd_ms": 1e3 * _med(bwd),
        "overall_ms": 1e3 * _med([a + b for a, b in zip(fwd, bwd, strict=True)]),
        "opt_ms": 1e3 * _med(opt),
        "total_ms": 1e3 * _med([a + b + c for a, b, c in zip(fwd, bwd, opt, strict=True)]),
    }


def summarise_steps(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's per-step medians (wall and CPU); SUT: a mix of its two populations."""
    out: dict[str, Any] = {"steps": len(rows)}
    flags = [r["skipped"] for r in rows if r["skipped"] is not None]
    nodes = [r["nodes"] for r in rows if r["nodes"] is not None]
    out["backward_nodes_median"] = _med(nodes) if nodes else None
    out["mean_wall"] = {
        k: 1e3 * statistics.fmean(r[k] for r in rows) if rows else float("nan")
        for k in ("fwd", "bwd", "opt")
    }
    if not flags:
        out["wall"] = _components(rows, cpu=False)
        out["cpu"] = _components(rows, cpu=True)
        out["skip_fraction"] = None
        return out
    skipped = [r for r in rows if r["skipped"]]
    run = [r for r in rows if not r["skipped"]]
    p = len(skipped) / len(rows)
    out["skip_fraction"] = p
    out["skipped_steps"] = len(skipped)
    clients = {(r["repeat"], r["user"]) for r in rows}
    any_run = {(r["repeat"], r["user"]) for r in run}
    out["client_rounds_fully_skipped"] = 1 - len(any_run) / len(clients) if clients else None
    for clock, cpu in (("wall", False), ("cpu", True)):
        parts = {"skipped": _components(skipped, cpu), "unlearning": _components(run, cpu)}
        out[f"{clock}_skipped"] = parts["skipped"]
        out[f"{clock}_unlearning"] = parts["unlearning"]
        mix = {}
        for key in parts["skipped"]:
            a, b = parts["skipped"][key], parts["unlearning"][key]
            mix[key] = b if not skipped else a if not run else p * a + (1 - p) * b
        out[clock] = mix
    out["backward_nodes_skipped"] = _med([r["nodes"] for r in skipped if r["nodes"] is not None])
    out["backward_nodes_unlearning"] = _med([r["nodes"] for r in run if r["nodes"] is not None])
    return out


def relative(summary: dict[str, dict[str, Any]], clock: str, key: str) -> dict[str, Any]:
    """Each variant's ``key`` relative to Plain and to Adv (percent)."""
    plain = summary["Plain"][clock][key]
    adv = summary["Adv"][clock][key]
    return {
        v: {
            "vs_plain_pct": 100 * (summary[v][clock][key] / plain - 1),
            "vs_adv_pct": 100 * (summary[v][clock][key] / adv - 1),
        }
        for v in VARIANTS
    }


# ---------------------------------------------------------------------------------- engine
def bench_engine(
    setup: Setup,
    state: dict[str, Tensor],
    heads: dict[str, dict[str, Tensor]],
    rounds: int,
    warmup: int,
    grl_scale: float,
    start_round: int,
) -> dict[str, Any]:
    """``run_round()`` per variant from the same state and clients, variants interleaved."""
    engines: dict[str, InProcessEngine] = {}
    for name in VARIANTS:
        model = copy.deepcopy(setup.model)
        terms = []
        if name in ADVERSARY:
            kind, sut = ADVERSARY[name]
            term = make_term(setup, kind, sut, grl_scale)
            term.head.load_state_dict(heads[kind])
            terms.append(term)
        engines[name] = make_engine(setup, model, terms)
    starts = {
        name: {n: p.detach().clone() for n, p in e.objective.state_dict().items()}
        for name, e in engines.items()
    }
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu_times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    seed = int(setup.engine_kwargs["seed"])
    for r in range(-warmup, rounds):
        k = r % len(VARIANTS)
        for name in VARIANTS[k:] + VARIANTS[:k]:
            engine = engines[name]
            engine.objective.load_state_dict(starts[name])  # the trained state, every round
            engine.generator.manual_seed(seed * 7_919 + 1_000 + r)  # the same clients
            engine.round_index = start_round
            c0, t0 = time.process_time(), time.perf_counter()
            engine.run_round()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if r >= 0:
                times[name].append(wall)
                cpu_times[name].append(cpu)
    out: dict[str, Any] = {"rounds": rounds, "warmup_rounds": warmup}
    out["clients_per_round"] = next(iter(engines.values())).num_sampled
    out["variants"] = {
        v: {
            "median_s": _med(times[v]),
            "median_cpu_s": _med(cpu_times[v]),
            "min_s": min(times[v]) if times[v] else float("nan"),
            "rounds_s": times[v],
        }
        for v in VARIANTS
    }
    for v in VARIANTS:
        s = out["variants"][v]
        s["vs_plain_pct"] = 100 * (s["median_s"] / out["variants"]["Plain"]["median_s"] - 1)
        s["vs_adv_pct"] = 100 * (s["median_s"] / out["variants"]["Adv"]["median_s"] - 1)
        s["cpu_vs_adv_pct"] = 100 * (s["median_cpu_s"] / out["variants"]["Adv"]["median_cpu_s"] - 1)
    return out


# ---------------------------------------------------------------------------------- one backbone
def run_backbone(backbone: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    setup = load_setup(backbone, args.root, args.synthetic)
    print(
        f"{backbone}: {setup.data_name}: {setup.data.num_users} clients x "
        f"{setup.data.num_items} items ({time.perf_counter() - t0:.1f} s to prepare)",
        flush=True,
    )
    gen = torch.Generator().manual_seed(args.seed)
    n = min(args.clients, setup.data.num_users)
    users = torch.randperm(setup.data.num_users, generator=gen)[:n].sort().values
    state, heads, pre = pretrain(setup, args.pretrain_rounds, users, args.grl_scale)
    setup.local_loss.start_round(args.pretrain_rounds)  # e.g. FedVAE's annealed beta
    load_avg = [os.getloadavg()] if hasattr(os, "getloadavg") else []
    t1 = time.perf_counter()
    steps = bench_clients(
        setup, state, heads, users.tolist(), args.repeats, args.warmup, args.grl_scale, args.seed
    )
    client_s = time.perf_counter() - t1
    load_avg += [os.getloadavg()] if hasattr(os, "getloadavg") else []
    summary = {v: summarise_steps(steps[v]) for v in VARIANTS}
    for v in VARIANTS:
        summary[v]["losses_finite"] = all(
            torch.isfinite(torch.tensor(r["loss"])).item() for r in steps[v]
        )
    t2 = time.perf_counter()
    engine = bench_engine(
        setup,
        state,
        heads,
        args.engine_rounds,
        args.engine_warmup,
        args.grl_scale,
        args.pretrain_rounds,
    )
    engine_s = time.perf_counter() - t2
    load_avg += [os.getloadavg()] if hasattr(os, "getloadavg") else []
    result = {
        "backbone": backbone,
        "config": setup.config,
        "data": setup.data_name,
        "data_note": setup.note,
        "setup": setup.describe,
        "clients": n,
        "repeats": args.repeats,
        "warmup_clients": args.warmup,
        "grl_scale": args.grl_scale,
        "pretrain": pre,
        "client_steps": {
            "seconds": client_s,
            "variants": summary,
            "relative_wall_overall": relative(summary, "wall", "overall_ms"),
            "relative_cpu_overall": relative(summary, "cpu", "overall_ms"),
            "relative_wall_total": relative(summary, "wall", "total_ms"),
            "relative_cpu_total": relative(summary, "cpu", "total_ms"),
        },
        "engine": {**engine, "seconds": engine_s},
        "load_average": load_avg,
        "seconds": time.perf_counter() - t0,
    }
    print(backbone_markdown(result), flush=True)
    return result


# ---------------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{x:+.1f}%"


def _table(result: dict[str, Any], clock: str, paper_rows: bool) -> list[str]:
    cs = result["client_steps"]
    s = cs["variants"]
    rel = cs[f"relative_{clock}_overall"]
    rel_total = cs[f"relative_{clock}_total"]
    lines = [
        "| Time / ms | Plain | Adv | +SUT | +DSVAE | FedAU2 |",
        "|---|---|---|---|---|---|",
    ]
    for label, key in (
        ("Fwd", "fwd_ms"),
        ("Bwd", "bwd_ms"),
        ("**Overall** (Fwd+Bwd)", "overall_ms"),
    ):
        lines.append(
            f"| {label} | " + " | ".join(f"{s[v][clock][key]:.3f}" for v in VARIANTS) + " |"
        )
    lines.append(
        "| Overall vs Plain | " + " | ".join(_pct(rel[v]["vs_plain_pct"]) for v in VARIANTS) + " |"
    )
    lines.append(
        "| **Overall vs Adv** | "
        + " | ".join(f"**{_pct(rel[v]['vs_adv_pct'])}**" for v in VARIANTS)
        + " |"
    )
    lines.append(
        "| Optimiser step | " + " | ".join(f"{s[v][clock]['opt_ms']:.3f}" for v in VARIANTS) + " |"
    )
    lines.append(
        "| Total (Fwd+Bwd+step) | "
        + " | ".join(f"{s[v][clock]['total_ms']:.3f}" for v in VARIANTS)
        + " |"
    )
    lines.append(
        "| Total vs Adv | " + " | ".join(_pct(rel_total[v]["vs_adv_pct"]) for v in VARIANTS) + " |"
    )
    if paper_rows:
        paper = {v: PAPER_MS.get(v) for v in VARIANTS}
        lines.append(
            "| *Paper* Fwd / Bwd / Overall | "
            + " | ".join(
                f"*{p['fwd']:.3f} / {p['bwd']:.3f} / {p['overall']:.3f}*" if p else "-"
                for p in paper.values()
            )
            + " |"
        )
        adv = PAPER_MS["Adv"]["overall"]
        lines.append(
            "| *Paper* Overall vs Adv | "
            + " | ".join(
                f"*{_pct(100 * (p['overall'] / adv - 1))}*" if p else "-" for p in paper.values()
            )
            + " |"
        )
    return lines


def backbone_markdown(result: dict[str, Any]) -> str:
    cs = result["client_steps"]
    s = cs["variants"]
    pre = result["pretrain"]
    d = result["setup"]
    eng = result["engine"]
    la = result["load_average"]
    lines = [
        f"## {result['backbone']} ({d['model']} {d['model_args']}, {d['local_loss']})",
        "",
    ]
    if result["data_note"]:
        lines += [f"**NOTE: {result['data_note']}.**", ""]
    lines += [
        f"Data: {result['data']}: {d['users']} clients x {d['items']} items, "
        f"{d['training_positives']} training positives; config `{result['config']}` (client "
        f"optimiser {d['client_optimizer']}, minibatch {d['local_batch_size'] or 'the whole row'}"
        f"; adversary head input {d['head_input_dim']}, hidden 100, own {d['head_optimizer']}); "
        f"GRL scale {result['grl_scale']:g}, DSVAE lambda 4. Benchmark clients: "
        f"{result['clients']} sampled users x {result['repeats']} repetitions "
        f"({result['warmup_clients']} warm-up clients untimed); "
        f"{s['Plain']['steps']} local steps per variant.",
        "",
        f"Head training before the benchmark: {pre['rounds']} rounds of `InProcessEngine` "
        f"({pre['clients_per_round']} clients per round, {pre['seconds']:.0f} s) with the MLP "
        "and the DSVAE head both observing (grl_scale 0), the config's head learning rate. "
        "Their accuracy before -> after (training-mode forward, as SUT sees it; all "
        f"{d['users']} clients / the benchmark clients): "
        + ", ".join(
            f"{k.upper()} {pre['head_accuracy_before'][k]['all_clients']:.3f} -> "
            f"{pre['head_accuracy_after'][k]['all_clients']:.3f} / "
            f"{pre['head_accuracy_before'][k]['benchmark_clients']:.3f} -> "
            f"{pre['head_accuracy_after'][k]['benchmark_clients']:.3f}"
            for k in ("mlp", "dsvae")
        )
        + " (chance about 0.5: the users are balanced by gender).",
        "",
        "### Per-client local step (plain PyTorch, one client at a time), thread CPU time",
        "",
        "Thread CPU time (`time.thread_time`): the headline on this loaded machine, where a "
        "step's wall time includes waiting for a core (see the wall-time table below).",
        "",
        *_table(result, "cpu", paper_rows=True),
        "",
        f"SUT skipped {s['+SUT']['skip_fraction']:.1%} of +SUT's steps (MLP head) and "
        f"{s['FedAU2']['skip_fraction']:.1%} of FedAU2's (DSVAE head). Skipped / unlearning "
        "step medians (CPU ms, Fwd / Bwd / Overall): "
        + "; ".join(
            f"{v}: skipped {s[v]['cpu_skipped']['fwd_ms']:.3f} / "
            f"{s[v]['cpu_skipped']['bwd_ms']:.3f} / {s[v]['cpu_skipped']['overall_ms']:.3f}, "
            f"unlearning {s[v]['cpu_unlearning']['fwd_ms']:.3f} / "
            f"{s[v]['cpu_unlearning']['bwd_ms']:.3f} / "
            f"{s[v]['cpu_unlearning']['overall_ms']:.3f}"
            for v in ("+SUT", "FedAU2")
        )
        + ". Backward graph (autograd nodes, median per step): "
        + ", ".join(f"{v} {s[v]['backward_nodes_median']:.0f}" for v in ("Plain", "Adv", "+DSVAE"))
        + "; "
        + ", ".join(
            f"{v} skipped {s[v]['backward_nodes_skipped']:.0f} / unlearning "
            f"{s[v]['backward_nodes_unlearning']:.0f}"
            for v in ("+SUT", "FedAU2")
        )
        + " (a skipped step's backward is the plain step's).",
        "",
        "Same steps, wall time (`perf_counter`; on a loaded machine a longer interval is more "
        "often preempted, so the median of a sum can exceed the sum of the medians):",
        "",
        *_table(result, "wall", paper_rows=False),
        "",
        f"### Batched engine (`InProcessEngine.run_round()`, {eng['clients_per_round']} "
        f"clients per round, all in one vmap)",
        "",
        f"Median of {eng['rounds']} rounds per variant ({eng['warmup_rounds']} warm-up), every "
        "round from the same trained state and the same sampled clients, variants interleaved.",
        "",
        "| | Plain | Adv | +SUT | +DSVAE | FedAU2 |",
        "|---|---|---|---|---|---|",
        "| s / round (wall) | "
        + " | ".join(f"{eng['variants'][v]['median_s']:.3f}" for v in VARIANTS)
        + " |",
        "| s / round (process CPU) | "
        + " | ".join(f"{eng['variants'][v]['median_cpu_s']:.3f}" for v in VARIANTS)
        + " |",
        "| vs Plain (wall) | "
        + " | ".join(_pct(eng["variants"][v]["vs_plain_pct"]) for v in VARIANTS)
        + " |",
        "| vs Adv (wall) | "
        + " | ".join(_pct(eng["variants"][v]["vs_adv_pct"]) for v in VARIANTS)
        + " |",
        "| vs Adv (CPU) | "
        + " | ".join(_pct(eng["variants"][v]["cpu_vs_adv_pct"]) for v in VARIANTS)
        + " |",
        "",
    ]
    if la:
        lines += [
            "1-min load average: "
            + ", ".join(f"{x[0]:.2f}" for x in la)
            + " (before the client steps, after them, after the engine rounds).",
            "",
        ]
    return "\n".join(lines)


def summary_table(result: dict[str, Any]) -> list[str]:
    """Table 3's layout for every measured backbone (thread CPU ms per step), then the paper."""
    lines = [
        "Summary (per-client local step, thread CPU ms, medians; Overall = Fwd + Bwd; "
        "details and wall times per backbone below):",
        "",
        "| Backbone | Time / ms | Plain | Adv | +SUT | +DSVAE | FedAU2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in result["backbones"]:
        s = b["client_steps"]["variants"]
        rel = b["client_steps"]["relative_cpu_overall"]
        name = f"{b['backbone']} ({b['clients']} clients x {b['repeats']})"
        for label, key in (("Fwd", "fwd_ms"), ("Bwd", "bwd_ms"), ("Overall", "overall_ms")):
            lines.append(
                f"| {name} | {label} | "
                + " | ".join(f"{s[v]['cpu'][key]:.3f}" for v in VARIANTS)
                + " |"
            )
        lines.append(
            f"| {name} | Overall vs Adv | "
            + " | ".join(f"**{_pct(rel[v]['vs_adv_pct'])}**" for v in VARIANTS)
            + " |"
        )
        lines.append(
            f"| {name} | SUT skipped | - | - | {s['+SUT']['skip_fraction']:.0%} | - | "
            f"{s['FedAU2']['skip_fraction']:.0%} |"
        )
        eng = b["engine"]["variants"]
        lines.append(
            f"| {name} | engine round vs Adv | "
            + " | ".join(_pct(eng[v]["cpu_vs_adv_pct"]) for v in VARIANTS)
            + " |"
        )
    adv = PAPER_MS["Adv"]["overall"]
    for label, key in (("Fwd", "fwd"), ("Bwd", "bwd"), ("Overall", "overall")):
        lines.append(
            f"| *paper (GPU)* | {label} | - | "
            + " | ".join(f"*{PAPER_MS[v][key]:.3f}*" for v in VARIANTS[1:])
            + " |"
        )
    lines.append(
        "| *paper (GPU)* | Overall vs Adv | - | "
        + " | ".join(f"*{_pct(100 * (PAPER_MS[v]['overall'] / adv - 1))}*" for v in VARIANTS[1:])
        + " |"
    )
    return lines


def to_markdown(result: dict[str, Any]) -> str:
    prov = result["provenance"]
    paper = " / ".join(
        f"{v} {PAPER_MS[v]['fwd']:.3f} / {PAPER_MS[v]['bwd']:.3f} / {PAPER_MS[v]['overall']:.3f}"
        for v in PAPER_MS
    )
    loaded = [
        la[0]
        for b in result["backbones"]
        for la in b["load_average"]
        if la  # [1, 5, 15]-min
    ]
    lines = [
        "# FedAU2 Table 3: per-step overhead of Adv, +SUT, +DSVAE, FedAU2 (cpu)",
        "",
        f"Machine: {prov['machine']}; torch {prov['torch']}, Python {prov['python']}; "
        f"{result['threads']} torch thread (OMP_NUM_THREADS={result['omp_num_threads']}); "
        f"commit `{prov['git_commit']}`, {prov['date']}; backbones "
        f"{', '.join(b['backbone'] for b in result['backbones'])}; total "
        f"{result['total_s']:.0f} s.",
        "",
    ]
    if loaded and max(loaded) >= 0.5 * (os.cpu_count() or 1):
        lines += [
            f"**The machine was loaded by other jobs** (1-min load average {min(loaded):.2f} to "
            f"{max(loaded):.2f} on {os.cpu_count()} CPUs): wall times include waiting for a "
            "core; the thread CPU-time tables are the steadier estimate, and every variant of "
            "a client runs back to back in rotating order so the load falls on all alike.",
            "",
        ]
    lines += [*summary_table(result), ""]
    lines += [
        "Paper (FedAU2 Table 3, RTX 4090, likely FedVAE), Fwd / Bwd / Overall ms: "
        f"{paper}; FedAU2 -4.8% and +SUT -5.9% Overall against Adv, +DSVAE +2.2%.",
        "",
        "Protocol: each variant's local step as a client device runs it, one client at a "
        "time (forward = local recommendation loss + adversarial term; backward = "
        "`loss.backward()`; the optimiser step reported separately). Plain = no adversary; "
        "Adv = `AdversaryTerm` (GRL on every client, MLP head); +SUT = the binary trigger as a "
        "Python branch: a mispredicted client skips the cross-entropy and its whole backward "
        "through the head and the reversal; +DSVAE = Global with the DSVAE head; FedAU2 = SUT + "
        "DSVAE. A SUT column's time is p x median(skipped steps) + (1 - p) x median(unlearning "
        "steps), p the measured skip fraction; the other columns are medians. Overall = median "
        "of Fwd + Bwd per step.",
        "",
    ]
    for b in result["backbones"]:
        lines += [backbone_markdown(b), ""]
    lines += [f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backbone", choices=["fedvae", "fedncf", "both"], default="both")
    parser.add_argument("--clients", type=int, default=200, help="sampled benchmark clients")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions over the clients")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up clients (untimed)")
    parser.add_argument(
        "--pretrain-rounds", type=int, default=50, help="engine rounds training the heads"
    )
    parser.add_argument("--engine-rounds", type=int, default=10, help="timed engine rounds")
    parser.add_argument("--engine-warmup", type=int, default=1, help="warm-up engine rounds")
    parser.add_argument("--grl-scale", type=float, default=400.0, help="GRL epsilon (FedAU2 400)")
    parser.add_argument(
        "--root", default=str(REPO.parent / "shared" / "datasets"), help="folder with ml-100k/"
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="a small Synthetic source instead of ML-100K"
    )
    parser.add_argument("--seed", type=int, default=0, help="client sample and round seeds")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 6 clients, 1 repetition, 2 head-training and 1 engine round",
    )
    parser.add_argument(
        "--out", default=None, help="path stem (default benchmarks/results/fedau2_overhead_cpu)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.repeats, args.warmup = min(args.clients, 6), 1, 1
        args.pretrain_rounds, args.engine_rounds, args.engine_warmup = 2, 1, 0
    if min(args.clients, args.repeats, args.engine_rounds) < 1:
        parser.error("--clients, --repeats and --engine-rounds must be >= 1")
    if min(args.warmup, args.pretrain_rounds, args.engine_warmup) < 0:
        parser.error("--warmup, --pretrain-rounds and --engine-warmup must be >= 0")
    if not args.grl_scale > 0:
        parser.error("--grl-scale must be > 0 (0 reverses nothing: no adversarial training)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from lit_unlearn.reporting.provenance import provenance

    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lit_unlearn"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)
    command = " ".join(["python", "benchmarks/fedau2_overhead.py", *(argv or sys.argv[1:])])
    backbones = ["fedvae", "fedncf"] if args.backbone == "both" else [args.backbone]
    t0 = time.perf_counter()
    rows = [run_backbone(b, args) for b in backbones]
    result: dict[str, Any] = {
        "benchmark": "fedau2_overhead",
        "provenance": provenance("cpu"),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "command": command,
        "args": {k: v for k, v in vars(args).items()},
        "paper_ms": PAPER_MS,
        "total_s": time.perf_counter() - t0,
        "backbones": rows,
    }
    stem = Path(args.out) if args.out else RESULTS / "fedau2_overhead_cpu"
    if stem.suffix in (".json", ".md"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(to_markdown(result))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}", flush=True)
    return result


if __name__ == "__main__":
    main()
