"""Flower engine against the in-process engine: the same rounds, equal results, the per-round cost.

Runs the tiny case of the Flower tests on a real deployment on this machine
(:class:`~lit_unlearn.methods.federated.flower_cluster.LocalFlowerCluster`: one
``flower-superlink`` and one ``flower-supernode`` per user on 127.0.0.1, insecure, telemetry
off, the app submitted with ``flwr run``), then the same run config with
:class:`~lit_unlearn.methods.federated.InProcessEngine` in this process, and writes:

* **equality**: the clients sampled per round, and the largest absolute difference between the
  two engines' final global (shared) parameters (float32; the tests assert 1e-6);
* **per-round time**: the ServerApp's wall time per round (send, the nodes' training, receive,
  aggregate), median over ``--rounds`` rounds, against the in-process engine's median over
  ``--engine-rounds`` rounds of the same config, as a ratio; plus the Flower run's set-up time
  (node discovery).

What a Flower round costs here is not the training: Flower 1.42 starts a fresh
``flwr-clientapp`` process per message (importing torch and lit_unlearn), and an idle SuperNode
polls the SuperLink every few seconds. So the ratio says how much a real deployment costs per
round on top of the work, not how fast the engine trains.

Usage::

    python benchmarks/federated_flower.py                 # 4 users x 12 items, 6 rounds (~2 min)
    python benchmarks/federated_flower.py --rounds 3 --out /tmp/flower

Writes ``benchmarks/results/federated_flower_cpu.{json,md}`` (``--out`` sets the path stem).
Needs ``lit_unlearn[flower]`` (Python >= 3.11); without Flower's commands it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def tiny_pairs(num_users: int, num_items: int, seed: int = 0) -> Tensor:
    """``[2, E]`` (user, item) pairs: 3-5 distinct items per user (uneven local batches)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for u in range(num_users):
        n = min(3 + u % 3, num_items)
        items = torch.randperm(num_items, generator=g)[:n]
        rows.append(torch.stack([torch.full((n,), u), items]))
    return torch.cat(rows, dim=1)


def run_config(args: argparse.Namespace, output: Path) -> Any:
    """The run config of the tiny case (the Flower tests' hyperparameters)."""
    from lit_unlearn.methods.federated.flower import FlowerRunConfig

    return FlowerRunConfig(
        num_users=args.users,
        num_items=args.items,
        embedding_dim=8,
        hidden_layers=1,
        scorer="neumf",
        num_negatives=4,
        fraction=args.fraction,
        num_rounds=args.rounds,
        local_epochs=2,
        local_batch_size=4,
        lr=0.1,
        seed=args.seed,
        output_path=str(output),
        node_timeout=120.0,
        round_timeout=120.0,
    )


def in_process(config: Any, pairs: Tensor, rounds: int) -> tuple[Any, list[list[int]], list[float]]:
    """The in-process engine over the same config: the engine after ``config.num_rounds``
    rounds, its clients per round, and the wall time of each of ``rounds`` rounds (the first
    ``config.num_rounds`` of them are the compared ones; the rest continue the run)."""
    from lit_unlearn.methods.federated import ClientData

    model = config.build_model()
    data = ClientData.from_pairs(pairs, config.num_users, config.num_items)
    engine = config.build_engine(model, data)
    clients: list[list[int]] = []
    seconds: list[float] = []
    reference = None
    for r in range(max(rounds, config.num_rounds)):
        t0 = time.perf_counter()
        result = engine.run_round()
        seconds.append(time.perf_counter() - t0)
        if r < config.num_rounds:
            clients.append(result.clients.tolist())
        if r + 1 == config.num_rounds:
            reference = {n: p.detach().clone() for n, p in engine.objective.named_parameters()}
    assert reference is not None
    return reference, clients, seconds


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from lit_unlearn.methods.federated.flower import write_app
    from lit_unlearn.methods.federated.flower_cluster import LocalFlowerCluster

    torch.set_num_threads(1)
    pairs = tiny_pairs(args.users, args.items, args.seed)
    with tempfile.TemporaryDirectory(prefix="lit_unlearn_flower_") as tmp:
        root = Path(tmp)
        data = root / "pairs.npz"
        np.savez(data, pairs=pairs.numpy())
        output = root / "result.pt"
        config = run_config(args, output)
        t0 = time.perf_counter()
        with LocalFlowerCluster(root / "cluster") as cluster:
            cluster.start(list(range(args.users)), data)
            started = time.perf_counter() - t0
            result = cluster.run(write_app(root / "app", config), output, timeout=args.timeout)
        total = time.perf_counter() - t0
    if "error" in result:
        raise RuntimeError(f"the Flower run failed: {result['error']}")
    reference, clients, engine_seconds = in_process(config, pairs, args.engine_rounds)
    diffs = [
        float((result["shared"][n].float() - reference[n].float()).abs().max())
        for n in result["shared"]
    ]
    flower_s = [float(s) for s in result["round_seconds"]]
    flower_median = statistics.median(flower_s)
    engine_median = statistics.median(engine_seconds)
    from lit_unlearn.reporting.provenance import provenance

    return {
        "benchmark": "federated_flower",
        "provenance": provenance("cpu"),
        "command": " ".join(["python", "benchmarks/federated_flower.py", *sys.argv[1:]]),
        "args": vars(args),
        "config": config.to_user_config(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "equal": {
            "same_clients": result["clients"] == clients,
            "clients_flower": result["clients"],
            "clients_in_process": clients,
            "max_abs_diff_shared": max(diffs) if diffs else float("nan"),
        },
        "flower": {
            "round_seconds": flower_s,
            "median_round_s": flower_median,
            "setup_seconds": float(result.get("setup_seconds", float("nan"))),
            "cluster_start_s": started,
            "total_s": total,
        },
        "in_process": {
            "rounds": len(engine_seconds),
            "round_seconds": engine_seconds,
            "median_round_s": engine_median,
        },
        "ratio_median": flower_median / engine_median,
    }


def to_markdown(res: dict[str, Any]) -> str:
    prov = res["provenance"]
    eq, fl, ip = res["equal"], res["flower"], res["in_process"]
    machine = prov.get("machine") or prov.get("cpu") or "unknown machine"
    lines = [
        "# Flower engine vs the in-process engine (the tiny case)",
        "",
        f"Machine: {machine}; torch {prov.get('torch', '?')}, Python {prov.get('python', '?')}, "
        f"1 torch thread; commit `{prov.get('git_commit', '?')}`, {prov.get('date', '?')}. "
        f"Written by `{res['command']}`; protocol in its docstring.",
        "",
        f"Case: {res['args']['users']} users x {res['args']['items']} items (3-5 positives per "
        f"user), NeuMF d = 8, fraction {res['args']['fraction']}, 2 local epochs, minibatches "
        f"of 4, SGD 0.1, seed {res['args']['seed']}; Flower: one `flower-superlink` and "
        f"{res['args']['users']} `flower-supernode`s on 127.0.0.1 (insecure), `flwr run`.",
        "",
        "| | Flower (real SuperLink + SuperNodes) | in-process engine | ratio |",
        "|---|---|---|---|",
        f"| median s / round | {fl['median_round_s']:.3f} ({len(fl['round_seconds'])} rounds) | "
        f"{ip['median_round_s'] * 1e3:.2f} ms ({ip['rounds']} rounds) | "
        f"**{res['ratio_median']:.0f}x** |",
        f"| set-up | node discovery {fl['setup_seconds']:.1f} s; processes started in "
        f"{fl['cluster_start_s']:.1f} s; whole run {fl['total_s']:.1f} s | - | - |",
        "",
        f"Same clients every round: **{eq['same_clients']}** ({eq['clients_flower']}). Largest "
        f"absolute difference of the final global parameters after {len(eq['clients_flower'])} "
        f"rounds: **{eq['max_abs_diff_shared']:.1e}** (float32).",
        "",
        "Where the time goes: Flower 1.42 starts a fresh `flwr-clientapp` process for every "
        "message (it imports torch and lit_unlearn), and an idle SuperNode polls the SuperLink "
        "every few seconds, so a round costs seconds whatever the model; the in-process engine "
        "trains the round's clients as one batch. Use Flower for deployments, the in-process "
        "engine for research runs.",
        "",
        "Flower rounds (s): " + ", ".join(f"{s:.2f}" for s in fl["round_seconds"]),
        "",
    ]
    if res.get("load_average"):
        la = res["load_average"]
        lines.insert(3, f"1-min load average at the end: {la[0]:.2f}, the Flower processes "
                     "themselves included (a SuperLink, the SuperNodes and a `flwr-clientapp` "
                     "per message); above the core count, wall times include waiting for a core.\n")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=4, help="users (one SuperNode each)")
    parser.add_argument("--items", type=int, default=12, help="items")
    parser.add_argument("--fraction", type=float, default=0.5, help="clients sampled per round")
    parser.add_argument("--rounds", type=int, default=6, help="Flower rounds")
    parser.add_argument("--engine-rounds", type=int, default=50, help="in-process rounds timed")
    parser.add_argument("--seed", type=int, default=3, help="run seed")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the run")
    parser.add_argument("--out", default=None, help="path stem of the .json / .md results")
    args = parser.parse_args(argv)
    for name in ("users", "items", "rounds", "engine_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    from lit_unlearn.methods.federated.flower_cluster import missing_commands

    args = parse_args(argv)
    missing = missing_commands()
    if missing:
        print(
            f"Flower's commands {missing} are not installed beside {sys.executable}: "
            "pip install -c constraints.txt -e '.[flower]' (Python >= 3.11)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    res = measure(args)
    stem = Path(args.out) if args.out else RESULTS / "federated_flower_cpu"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2))
    stem.with_suffix(".md").write_text(to_markdown(res))
    print(to_markdown(res))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}", flush=True)
    return res


if __name__ == "__main__":
    main()
