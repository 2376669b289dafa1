"""Federated round time: the in-process engine (``InProcessEngine``) against a plain-PyTorch loop.

One FedAvg round of FedNCF (FedAU2 Sec. 3.1 / App. A.3) on MovieLens-100K as FedAU2 prepares it
(users and items with >= 5 interactions, users balanced across gender, leave-one-out): 10% of
the clients are sampled, each trains one local epoch in minibatches of 64 (4 sampled negatives
per positive) with its own Adam (lr 0.01, moments per client and round) from the global shared
parameters and its own private user rows, and the server averages the uploads weighted by the
clients' interactions; the clients keep their new private rows. This is the shipped
``configs/experiment/federated/ml100k_fedncf.yaml`` without its observing adversary head.

Two contenders do that same client work in the same process, round by round:

* **engine**: ``InProcessEngine.run_round()``: the round's clients as one ``torch.func.vmap``
  of ``grad`` over per-client copies of the shared parameters (clients with fewer minibatches
  drop out of later steps), a batched Adam, then ``FedAvg`` and the private-row write-back.
  Sampling, the clients' negative draws and shuffles are inside the timer.
* **plain**: a loop over the same clients with the same round seed (the engine's next
  ``plan_round()``, drawn without advancing it): one reusable local model (built once, its
  per-user tables replaced by a single row, as ``tests/methods/federated/test_engine.py``'s
  ``_one_client_reference`` does) whose state is reloaded per client (``copy_`` of the global
  shared parameters and of the client's private rows: no ``deepcopy``), the client's examples
  from ``PointwiseBCE.examples(data, [u], [InProcessEngine.client_generator(seed, u)])``,
  minibatches of 64, ``F.binary_cross_entropy_with_logits`` and ``torch.optim.Adam`` (its state
  cleared per client), then FedAvg by hand (interaction-weighted sum of the deltas) and the
  private rows written back.

The plain side trains its own copy of the model. Before every round it is set to the engine's
state (outside the timers), so both sides start every round from the same parameters. Same
work, checked twice: (1) every measured round is also run by both sides in float64 from the
same state (untimed) and must agree to round-off (``--f64-atol``; ~1e-14 in practice); (2)
after every timed (float32) round the two models are compared, the first measured round must be
``allclose`` within ``--atol`` / ``--rtol``, and every round's largest difference is recorded (in
float32 the sides differ by rounding only, but Adam's ``m / (sqrt(v) + eps)`` enlarges the
rounding of near-zero gradients over a client's local steps to up to ~1e-3). Warm-up rounds (``--warmup``, 2),
then ``--rounds`` measured rounds, the order of the two sides alternating (ABBA). Reported per
torch thread count (``--threads``, fixed with ``torch.set_num_threads``; default 1): medians of
the per-round wall time and process CPU time (the steadier estimator on a shared machine), the
ratio engine / plain (below 1: the engine is faster) and the projection to 800 rounds (FedAU2's
16 epochs x 50 rounds). On a machine whose cores are busy with other work, more intra-op
threads than free cores make both sides far slower and noisier (OpenMP threads wait for each
other): measure with 1 thread there.

Usage::

    python benchmarks/federated_round.py                    # CPU, 1 torch thread, 20 rounds
    python benchmarks/federated_round.py --rounds 50 --threads 1 2   # a row per thread count
    python benchmarks/federated_round.py --device cuda

Writes ``benchmarks/results/federated_round_<device>.{json,md}`` (``--out`` sets the path stem).
Without ``<root>/ml-100k/u.data`` and ``u.user`` it falls back to the ``Synthetic`` source (a
note says so in both files); nothing is downloaded.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.classifier_throughput import device_arg, machine_info
from lit_unlearn.datamodules import FederatedData, Synthetic
from lit_unlearn.datamodules.sources.movielens import MovieLens100K
from lit_unlearn.methods.federated import ClientData, InProcessEngine, PointwiseBCE
from lit_unlearn.models import NCF
from lit_unlearn.models.base import Recommender

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_ROUNDS = 800  # FedAU2: 16 epochs x 50 rounds


# ---------------------------------------------------------------------------------- data
def load_clients(root: str, seed: int) -> tuple[ClientData, str, str | None]:
    """FedAU2's ML-100K clients, or the Synthetic source when the files are missing.

    Returns:
        The clients' data, a description of it, and a note when the fallback was used.
    """
    common: dict[str, Any] = {
        "attributes": ["gender"],
        "protocols": ["sampled"],
        "seed": seed,
        "download": False,
    }
    ml = MovieLens100K(root=root)
    missing = [p for p in ml.interaction_files() + ml.user_files() if not p.is_file()]
    note = None
    if not missing:
        dm = FederatedData(
            source=ml, age_scheme="fedau2", user_k=5, item_k=5, balance="gender", **common
        )
        name = "MovieLens-100K (FedAU2: user_k 5, item_k 5, balanced by gender, leave-one-out)"
    else:
        note = (
            f"MovieLens-100K files missing ({', '.join(str(p) for p in missing)}): the numbers "
            "below are on the Synthetic source (600 users x 400 items), NOT on ML-100K"
        )
        print(f"NOTE: {note}", flush=True)
        dm = FederatedData(source=Synthetic(seed=seed), user_k=5, item_k=5, **common)
        name = "Synthetic (600 x 400, seeded; ML-100K fallback)"
    dm.setup("fit")
    data = ClientData.from_pairs(dm.client_pairs(), dm.num_users, dm.num_items)
    return data, name, note


def build_model(data: ClientData, dim: int, seed: int) -> NCF:
    torch.manual_seed(seed)
    return NCF(data.num_users, data.num_items, dim, hidden_layers=2, scorer="neumf")


# ---------------------------------------------------------------------------------- plain side
class PlainRound:
    """A round as a plain loop over clients: torch.optim.Adam, hand FedAvg, write-back.

    Args:
        model: The plain side's global model (updated in place).
        data: The clients' training positives.
        loss: Draws the clients' examples (the same per-client draws as the engine's).
        lr: Adam's learning rate.
        batch_size: Local minibatch size.
        adam: Keyword arguments of ``torch.optim.Adam`` beyond ``lr`` (``foreach``/``fused``).
        shared_sgd_lr: If set, the shared parameters train with plain SGD at this lr and only
            the private rows with Adam (the shipped FedNCF config's split optimisers).
    """

    def __init__(
        self,
        model: Recommender,
        data: ClientData,
        loss: PointwiseBCE,
        lr: float,
        batch_size: int,
        adam: dict[str, Any],
        shared_sgd_lr: float | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.loss = loss
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        private = {id(p) for p in model.per_user_parameters()}
        self.globals = dict(model.named_parameters())
        self.private_names = [n for n, p in self.globals.items() if id(p) in private]
        self.shared_names = [n for n, p in self.globals.items() if id(p) not in private]
        # One local model for every client: its per-user tables hold the client's row only.
        self.local = copy.deepcopy(model)
        for n in self.private_names:
            module_name, _, attr = n.rpartition(".")
            owner = self.local.get_submodule(module_name) if module_name else self.local
            setattr(owner, attr, nn.Parameter(self.globals[n].detach()[:1].clone()))
        self.locals = dict(self.local.named_parameters())
        adam_params = (
            list(self.local.parameters())
            if shared_sgd_lr is None
            else [self.locals[n] for n in self.private_names]
        )
        self.opt = torch.optim.Adam(adam_params, lr=lr, **adam)
        self.opts: list[torch.optim.Optimizer] = [self.opt]
        if shared_sgd_lr is not None:
            shared = [self.locals[n] for n in self.shared_names]
            self.opts.append(torch.optim.SGD(shared, lr=shared_sgd_lr))
        self.users = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def _load(self, start: dict[str, Tensor], user: int) -> None:
        for n in self.shared_names:
            self.locals[n].copy_(start[n])
        for n in self.private_names:
            self.locals[n].copy_(self.globals[n][user : user + 1])
        self.opt.state.clear()  # a fresh Adam per client and round (moments and step count)

    def run(self, clients: Tensor, round_seed: int) -> tuple[float, int]:
        """Train the round's clients one by one and aggregate; returns (mean loss, steps)."""
        with torch.no_grad():
            start = {n: self.globals[n].detach().clone() for n in self.shared_names}
            acc = {n: torch.zeros_like(start[n]) for n in self.shared_names}
        counts = self.data.counts[clients].double()
        weights = (counts / counts.sum()).tolist()
        total = torch.zeros((), device=self.device)
        steps = 0
        b = self.batch_size
        for w, user in zip(weights, clients.tolist(), strict=True):
            gen = InProcessEngine.client_generator(round_seed, user)
            ex = self.loss.examples(self.data, torch.tensor([user]), [gen])
            n = int(ex.mask.sum())
            items = ex.columns["item"][0, :n].to(self.device)
            labels = ex.columns["label"][0, :n].to(self.device)
            self._load(start, user)
            for lo in range(0, n, b):
                it = items[lo : lo + b]
                logits = self.local(self.users[: it.numel()], it)
                loss = F.binary_cross_entropy_with_logits(logits, labels[lo : lo + b])
                for opt in self.opts:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                for opt in self.opts:
                    opt.step()
                total += loss.detach()
                steps += 1
            with torch.no_grad():
                for name in self.shared_names:
                    acc[name].add_(self.locals[name] - start[name], alpha=w)
                for name in self.private_names:
                    self.globals[name][user] = self.locals[name][0]
        with torch.no_grad():
            for name in self.shared_names:
                self.globals[name].copy_(start[name] + acc[name])
        return float(total) / max(steps, 1), steps


# ---------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float]:
    """``fn()``, its wall time and this process's CPU time (all threads)."""
    _sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0, time.process_time() - c0


def compare(a: Recommender, b: nn.Module, start: dict[str, Tensor]) -> dict[str, float]:
    """Largest |a - b| (all parameters; the shared ones alone) and the round's largest change.

    ``a`` is the engine's model, ``b`` the plain side's, ``start`` the round's starting state.
    """
    private = {id(p) for p in a.per_user_parameters()}
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    diffs = {n: float((pa[n] - pb[n]).detach().abs().max()) for n in pa}
    shared = [d for n, d in diffs.items() if id(pa[n]) not in private]
    change = max(float((pa[n] - start[n]).detach().abs().max()) for n in pa)
    return {
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_shared": max(shared),
        "max_abs_change": change,
    }


def all_close(a: nn.Module, b: nn.Module, atol: float, rtol: float) -> bool:
    pb = dict(b.named_parameters())
    return all(
        torch.allclose(p.detach(), pb[n].detach(), atol=atol, rtol=rtol)
        for n, p in a.named_parameters()
    )


def float64_check(
    model: NCF, data: ClientData, args: argparse.Namespace, clients: Tensor, round_seed: int
) -> dict[str, float]:
    """One round of both sides in float64 from ``model``'s state (untimed, ``model`` unchanged).

    In float32 the two sides differ by rounding only, but Adam's ``m / sqrt(v)`` turns the
    rounding of near-zero gradients into visible parameter differences over a client's local
    steps; in float64 the same round must agree to ~1e-12, which shows the work is the same.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the examples' labels, Adam's step counts
    try:
        m = copy.deepcopy(model).double()
        engine = make_engine(m, data, args)
        pm = copy.deepcopy(m)
        plain = PlainRound(
            pm,
            data,
            PointwiseBCE(args.negatives),
            args.lr,
            args.batch_size,
            {},
            shared_sgd_lr=args.shared_sgd_lr,
        )
        start = {n: p.detach().clone() for n, p in m.named_parameters()}
        update, _ = engine.local_updates(clients, round_seed)
        engine.apply(update)
        plain.run(clients, round_seed)
        return compare(m, pm, start)
    finally:
        torch.set_default_dtype(previous)


def make_engine(model: NCF, data: ClientData, args: argparse.Namespace) -> InProcessEngine:
    return InProcessEngine(
        model,
        PointwiseBCE(args.negatives),
        data,
        fraction=args.fraction,
        local_epochs=1,
        local_batch_size=args.batch_size,
        lr=args.lr if args.shared_sgd_lr is None else args.shared_sgd_lr,
        optimizer="adam" if args.shared_sgd_lr is None else "sgd",
        private_lr=None if args.shared_sgd_lr is None else args.lr,
        private_optimizer=None if args.shared_sgd_lr is None else "adam",
        seed=args.seed,
    )


def run(
    args: argparse.Namespace, threads: int, data: ClientData, device: torch.device
) -> dict[str, Any]:
    """Warm-up and measured rounds of both sides with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    model = build_model(data, args.dim, args.seed).to(device)
    engine = make_engine(model, data, args)
    adam: dict[str, Any] = {} if args.plain_adam == "default" else {args.plain_adam: True}
    plain_model = copy.deepcopy(model)
    plain = PlainRound(
        plain_model,
        data,
        PointwiseBCE(args.negatives),
        args.lr,
        args.batch_size,
        adam,
        shared_sgd_lr=args.shared_sgd_lr,
    )
    print(
        f"torch threads {torch.get_num_threads()}: {engine.num_sampled} clients per round, "
        f"{args.warmup} warm-up + {args.rounds} measured rounds",
        flush=True,
    )

    def sync_plain() -> dict[str, Tensor]:
        """Set the plain model to the engine's state; returns that state (the round's start)."""
        with torch.no_grad():
            for p, q in zip(plain_model.parameters(), model.parameters(), strict=True):
                p.copy_(q)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    rounds: list[dict[str, Any]] = []
    for r in range(args.warmup + args.rounds):
        measured = r >= args.warmup
        first = r == args.warmup
        start = sync_plain()
        state = engine.generator.get_state()
        clients, round_seed = engine.plan_round()  # the engine's next round, not advancing it
        engine.generator.set_state(state)
        f64 = float64_check(model, data, args, clients, round_seed) if measured else None
        if f64 is not None and not f64["max_abs_diff"] <= args.f64_atol:
            raise AssertionError(
                f"round {r}, float64 check: engine and plain differ by "
                f"{f64['max_abs_diff']:.3e} (> {args.f64_atol}): not the same round"
            )

        def do_plain(c: Tensor = clients, s: int = round_seed) -> tuple[float, int]:
            return plain.run(c, s)

        order = ["plain", "engine"] if r % 2 == 0 else ["engine", "plain"]
        out: dict[str, tuple[Any, float, float]] = {}
        for side in order:
            out[side] = timed(engine.run_round if side == "engine" else do_plain, device)
        result = out["engine"][0]
        if not torch.equal(result.clients, clients):
            raise AssertionError("the engine sampled other clients than its planned round")
        check = compare(model, plain_model, start)
        ok = all_close(model, plain_model, args.atol, args.rtol)
        if first and not ok:
            raise AssertionError(
                f"first measured round: engine and plain global parameters differ by "
                f"{check['max_abs_diff']:.3e} (atol {args.atol}, rtol {args.rtol})"
            )
        plain_loss, plain_steps = out["plain"][0]
        row = {
            "round": r,
            "measured": measured,
            "order": order,
            "clients": int(clients.numel()),
            "examples": int(data.counts[clients].sum()) * (1 + args.negatives),
            "client_steps": plain_steps,
            "engine_steps": int(result.steps.max()),
            "engine_s": out["engine"][1],
            "engine_cpu_s": out["engine"][2],
            "plain_s": out["plain"][1],
            "plain_cpu_s": out["plain"][2],
            "engine_loss": result.loss,
            "plain_loss": plain_loss,
            "allclose": ok,
            **check,
            "f64_max_abs_diff": f64["max_abs_diff"] if f64 else None,
        }
        rounds.append(row)
        tag = f"round {r - args.warmup + 1}/{args.rounds}" if measured else f"warm-up {r + 1}"
        print(
            f"  {tag}: engine {row['engine_s']:.3f} s ({row['engine_cpu_s']:.3f} CPU), "
            f"plain {row['plain_s']:.3f} s ({row['plain_cpu_s']:.3f} CPU); "
            f"max |engine - plain| float32 {check['max_abs_diff']:.1e}"
            + (f", float64 {f64['max_abs_diff']:.1e}" if f64 else "")
            + f" (round change {check['max_abs_change']:.1e})",
            flush=True,
        )
    return summarise(args, threads, rounds, engine)


def summarise(
    args: argparse.Namespace,
    threads: int,
    rounds: list[dict[str, Any]],
    engine: InProcessEngine,
) -> dict[str, Any]:
    """One thread count's medians, ratios, projections and same-work checks."""
    timed_rounds = [r for r in rounds if r["measured"]]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in timed_rounds)

    def low(key: str) -> float:
        return min(r[key] for r in timed_rounds)

    out: dict[str, Any] = {
        "threads": threads,
        "threads_during_runs": torch.get_num_threads(),
        "clients_per_round": engine.num_sampled,
        "warmup_rounds": args.warmup,
        "rounds": args.rounds,
        "float64_max_abs_diff": max(r["f64_max_abs_diff"] for r in timed_rounds),
        "first_round_allclose": timed_rounds[0]["allclose"],
        "all_rounds_allclose": all(r["allclose"] for r in timed_rounds),
        "first_round_max_abs_diff": timed_rounds[0]["max_abs_diff"],
        "max_abs_diff": max(r["max_abs_diff"] for r in timed_rounds),
        "median_abs_diff": med("max_abs_diff"),
        "max_abs_diff_shared": max(r["max_abs_diff_shared"] for r in timed_rounds),
        "min_round_change": min(r["max_abs_change"] for r in timed_rounds),
        "max_abs_loss_diff": max(abs(r["engine_loss"] - r["plain_loss"]) for r in timed_rounds),
        "median_client_steps": med("client_steps"),
        "median_engine_steps": med("engine_steps"),
    }
    for side in ("engine", "plain"):
        out[side] = {
            "median_s": med(f"{side}_s"),
            "min_s": low(f"{side}_s"),
            "median_cpu_s": med(f"{side}_cpu_s"),
            f"projected_{PAPER_ROUNDS}_rounds_s": PAPER_ROUNDS * med(f"{side}_s"),
            f"projected_{PAPER_ROUNDS}_rounds_cpu_s": PAPER_ROUNDS * med(f"{side}_cpu_s"),
        }
    out["ratio"] = out["engine"]["median_s"] / out["plain"]["median_s"]
    out["ratio_min"] = out["engine"]["min_s"] / out["plain"]["min_s"]
    out["ratio_cpu_time"] = out["engine"]["median_cpu_s"] / out["plain"]["median_cpu_s"]
    out["per_round"] = rounds
    return out


# ---------------------------------------------------------------------------------- report
def to_markdown(result: dict[str, Any]) -> str:
    info = result["machine_info"]
    la = result["load_average"]
    cfg = result["config"]
    load = (
        f"; 1-min load average {la['start'][0]:.2f} at start, {la['end'][0]:.2f} at end "
        f"({info['cpu_affinity']} usable cores)"
        if la["start"]
        else ""
    )
    threads = ", ".join(str(r["threads"]) for r in result["rows"])
    wall = f"projected_{PAPER_ROUNDS}_rounds_s"
    cpu = f"projected_{PAPER_ROUNDS}_rounds_cpu_s"
    lines = [
        f"# Federated round: InProcessEngine vs plain PyTorch ({result['device']}, {result['machine']})",
        "",
        f"CPU {info['cpu']}, {info['cpu_count']} cores ({info['cpu_affinity']} usable), "
        f"torch {info['torch']}, Python {info['python']}; torch intra-op threads fixed per row "
        f"({threads}), {result['inter_op_threads']} inter-op{load}; total {result['total_s']:.0f} s.",
        "",
    ]
    if la["start"] and max(la["start"][0], la["end"][0]) >= 0.5 * info["cpu_affinity"]:
        lines += [
            f"**The machine was loaded by other jobs during the run** (1-min load average "
            f"{la['start'][0]:.2f} / {la['end'][0]:.2f} on {info['cpu_affinity']} cores): wall "
            "times include waiting for a core; the process CPU time columns are the steadier "
            "estimate, and absolute times on an idle machine will be lower.",
            "",
        ]
    if cfg["data_note"]:
        lines += [f"**NOTE: {cfg['data_note']}.**", ""]
    lines += [
        f"Data: {cfg['data']}: {cfg['users']} clients x {cfg['items']} items, "
        f"{cfg['training_positives']} training positives. Model: {cfg['model']}, "
        f"{cfg['parameters']:,} parameters ({cfg['shared_parameters']:,} shared; the two user "
        f"tables stay on the clients). {cfg['local_loss']}, fraction {cfg['fraction']} "
        f"({cfg['clients_per_round']} clients per round), 1 local epoch, minibatch "
        f"{cfg['local_batch_size']}, "
        + (
            f"Adam lr {cfg['lr']} per client and round"
            if cfg.get("shared_sgd_lr") is None
            else f"SGD lr {cfg['shared_sgd_lr']} on the shared side and Adam lr {cfg['lr']} "
            "(per client and round) on the private rows"
        )
        + ", FedAvg weighted by interactions (`configs/experiment/federated/ml100k_fedncf.yaml`"
        " without its observing adversary head"
        + ("" if cfg.get("shared_sgd_lr") is not None else "; before its 2026-12-06 optimisers")
        + ").",
        "",
        "Protocol: *engine* = `InProcessEngine.run_round()` (sampling, the clients' negative "
        "draws and shuffles, one `vmap(grad)` over the round's clients per local step, "
        + (
            "batched Adam"
            if cfg.get("shared_sgd_lr") is None
            else "batched SGD on the shared side and Adam on the private rows"
        )
        + ", FedAvg, private-row write-back). *plain* = the same clients and round seed, one "
        "client at a time: one reusable local model with one-row user tables, state reloaded "
        "per client (`copy_`), the client's examples from `PointwiseBCE.examples` with "
        "`InProcessEngine.client_generator`, `F.binary_cross_entropy_with_logits`, "
        + ("" if cfg.get("shared_sgd_lr") is None else "`torch.optim.SGD` on the shared side, ")
        + f"`torch.optim.Adam` ({cfg['plain_adam']}; state cleared per client"
        + ("" if cfg.get("shared_sgd_lr") is None else "; the private rows only")
        + "), FedAvg and "
        "write-back by hand. Both sides start every round from the same parameters; "
        f"{cfg['warmup_rounds']} warm-up rounds, then {cfg['rounds']} measured rounds, order "
        "alternating (ABBA); medians over the measured rounds. ratio = engine / plain (below "
        f"1: the engine is faster). Projection: median x {PAPER_ROUNDS} rounds (FedAU2: 16 "
        "epochs x 50 rounds), training only (no evaluation, attacks or checkpoints). Wall time "
        "is what a run takes; process CPU time (all threads) is less sensitive to other "
        "processes' load on a shared machine.",
        "",
        "| threads | engine s/round | plain s/round | **ratio (wall)** | engine CPU s | plain CPU s "
        f"| ratio (CPU) | ratio (min wall) | engine {PAPER_ROUNDS} rounds | plain {PAPER_ROUNDS} rounds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        e, p = r["engine"], r["plain"]
        lines.append(
            f"| {r['threads']} | {e['median_s']:.3f} | {p['median_s']:.3f} | "
            f"**{r['ratio']:.2f}x** | {e['median_cpu_s']:.3f} | {p['median_cpu_s']:.3f} | "
            f"{r['ratio_cpu_time']:.2f}x | {r['ratio_min']:.2f}x | {_hms(e[wall])} | "
            f"{_hms(p[wall])} |"
        )
    lines += [
        "",
        f"{PAPER_ROUNDS}-round projections from the median CPU time instead: "
        + "; ".join(
            f"{r['threads']} thread(s): engine {_hms(r['engine'][cpu])}, plain "
            f"{_hms(r['plain'][cpu])}"
            for r in result["rows"]
        )
        + ".",
        "",
        "Work per round (median): "
        + "; ".join(
            f"{r['threads']} thread(s): {r['median_client_steps']:.0f} client minibatch steps in "
            f"the plain loop, {r['median_engine_steps']:.0f} batched (vmap) steps in the engine "
            "(the longest client's)"
            for r in result["rows"][:1]
        )
        + ".",
        "",
        "Same work: *float64* = every measured round is also run by both sides in float64 "
        "from the same state (untimed, outside the timers) and must agree to round-off "
        f"(asserted <= {cfg['f64_atol']:.0e} per round); *float32* = the timed rounds themselves, "
        "compared after every round over all parameters (shared and the clients' private "
        f"rows; the first measured round asserted allclose with atol {cfg['atol']}, rtol "
        f"{cfg['rtol']}). In float32 the sides differ by rounding only (the float64 rounds "
        f"agree to {max(r['float64_max_abs_diff'] for r in result['rows']):.0e}), but Adam's "
        "m / (sqrt(v) + eps) enlarges the rounding of near-zero gradients over a client's "
        "local steps (up to "
        f"{max(x['engine_steps'] for r in result['rows'] for x in r['per_round'])} here), so "
        "single entries differ by up to "
        f"{max(r['max_abs_diff'] for r in result['rows']):.0e} in some rounds, against a "
        "round's largest change of "
        f"{min(r['min_round_change'] for r in result['rows']):.0e} or more.",
        "",
        "| threads | float64 max abs diff (all rounds) | float32 first round | float32 median "
        "round | float32 max (all params) | float32 max (shared params) | smallest round change "
        "| max mean-loss diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['threads']} | {r['float64_max_abs_diff']:.1e} | "
            f"{r['first_round_max_abs_diff']:.1e} | {r['median_abs_diff']:.1e} | "
            f"{r['max_abs_diff']:.1e} | {r['max_abs_diff_shared']:.1e} | "
            f"{r['min_round_change']:.1e} | {r['max_abs_loss_diff']:.1e} |"
        )
    lines += ["", "Per-round wall s (CPU s), measured rounds in order:", ""]
    for r in result["rows"]:
        timed_rounds = [x for x in r["per_round"] if x["measured"]]
        for name in ("engine", "plain"):
            vals = ", ".join(
                f"{x[f'{name}_s']:.3f} ({x[f'{name}_cpu_s']:.3f})" for x in timed_rounds
            )
            lines.append(f"- {r['threads']} thread(s), {name}: [{vals}]")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def _hms(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


# ---------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--device", type=device_arg, default=torch.device("cpu"), help="cpu, cuda[:i] or auto"
    )
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up rounds (not timed)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1],
        help="torch intra-op thread counts, one row each (fixed; default 1)",
    )
    parser.add_argument(
        "--root", default="../shared/datasets", help="folder holding ml-100k/ (never downloaded)"
    )
    parser.add_argument("--dim", type=int, default=32, help="NCF embedding width")
    parser.add_argument("--negatives", type=int, default=4, help="negatives per positive")
    parser.add_argument("--fraction", type=float, default=0.1, help="clients sampled per round")
    parser.add_argument("--batch-size", type=int, default=64, help="local minibatch size")
    parser.add_argument("--lr", type=float, default=0.01, help="clients' Adam learning rate")
    parser.add_argument(
        "--shared-sgd-lr",
        type=float,
        default=None,
        help="train the shared side with SGD at this lr, Adam (--lr) on the private rows only "
        "(the shipped ml100k_fedncf.yaml: --shared-sgd-lr 1.0 --lr 0.05)",
    )
    parser.add_argument(
        "--plain-adam",
        choices=["default", "foreach", "fused"],
        default="fused",
        help="torch.optim.Adam implementation of the plain loop (fused: the fastest here)",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=1e-2,
        help="float32 check of the first measured round (rounding, enlarged by Adam)",
    )
    parser.add_argument("--rtol", type=float, default=1e-3, help="float32 check")
    parser.add_argument(
        "--f64-atol", type=float, default=1e-9, help="float64 check of every measured round"
    )
    parser.add_argument("--seed", type=int, default=0, help="data, model init and sampling")
    parser.add_argument(
        "--out",
        default=None,
        help="path stem of the .json/.md results (default benchmarks/results/federated_round_<device>)",
    )
    args = parser.parse_args(argv)
    if min(args.rounds, *args.threads, args.dim, args.negatives, args.batch_size) < 1:
        parser.error("--rounds, --threads, --dim, --negatives and --batch-size must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lit_unlearn").setLevel(logging.WARNING)
    device: torch.device = args.device
    info = machine_info(device)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    command = " ".join(["python", "benchmarks/federated_round.py", *(argv or sys.argv[1:])])
    t0 = time.perf_counter()
    t_data = time.perf_counter()
    data, data_name, note = load_clients(args.root, args.seed)
    data_s = time.perf_counter() - t_data
    probe = make_engine(build_model(data, args.dim, args.seed), data, args)
    config: dict[str, Any] = {
        "data": data_name,
        "data_note": note,
        "data_setup_s": data_s,
        "users": data.num_users,
        "items": data.num_items,
        "training_positives": int(data.counts.sum()),
        "model": f"NCF(neumf, d={args.dim}, hidden_layers=2)",
        "parameters": sum(p.numel() for p in probe.model.parameters()),
        "shared_parameters": sum(probe._params[n].numel() for n in probe.shared_names),
        "local_loss": f"PointwiseBCE({args.negatives})",
        "fraction": args.fraction,
        "clients_per_round": probe.num_sampled,
        "local_epochs": 1,
        "local_batch_size": args.batch_size,
        "optimizer": "adam" if args.shared_sgd_lr is None else "sgd shared, adam private",
        "lr": args.lr,
        "shared_sgd_lr": args.shared_sgd_lr,
        "plain_adam": args.plain_adam,
        "warmup_rounds": args.warmup,
        "rounds": args.rounds,
        "atol": args.atol,
        "rtol": args.rtol,
        "f64_atol": args.f64_atol,
    }
    print(
        f"{data_name}: {data.num_users} clients x {data.num_items} items, "
        f"{config['training_positives']} training positives ({data_s:.1f} s to prepare)",
        flush=True,
    )
    rows = [run(args, threads, data, device) for threads in args.threads]
    result: dict[str, Any] = {
        "benchmark": "federated_round",
        "device": str(device),
        "machine": info["machine"],
        "machine_info": info,
        "inter_op_threads": torch.get_num_interop_threads(),
        "load_average": {
            "start": load_start,
            "end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "seed": args.seed,
        "command": command,
        "total_s": time.perf_counter() - t0,
        "config": config,
        "rows": rows,
    }
    stem = Path(args.out) if args.out else RESULTS / f"federated_round_{device.type}"
    if stem.suffix in (".json", ".md"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
