"""How fast FedNCF learns under the in-process engine for a client optimiser / aggregation choice.

The FedAU2 paper gives FedNCF's "lr 0.1" but no optimiser, batch size or aggregation rule; this
script measured the choices behind ``configs/experiment/federated/ml100k_fedncf.yaml``
(docs/federated.md quotes it). Protocol: ML-100K as FedAU2 prepares it (users and items >= 5,
gender-balanced users, leave-one-out by time), sampled HR@10 / NDCG@10 on the *validation*
item against 99 fixed negatives, every 50 rounds, seed 0. Example::

    python benchmarks/federated_sweep.py --optimizer adam --lr 0.01 --rounds 400
    # the shipped FedNCF optimisers: SGD on the shared side, Adam on the private user row
    python benchmarks/federated_sweep.py --user-lr 0.05 --shared-optimizer sgd --shared-lr 1.0
    # FedVAE with SGD clients and a FedAdam server
    python benchmarks/federated_sweep.py --backbone fedvae --optimizer sgd --lr 0.01 \
        --server fedadam --server-lr 0.01
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.federated_ceiling import load_data, sampled_metrics
from lit_unlearn.methods.federated import (
    ClientData,
    FedAdam,
    FedAvg,
    InProcessEngine,
    LocalLoss,
    MultinomialELBO,
    PointwiseBCE,
)
from lit_unlearn.models import NCF, FedRAP, MultVAE, Recommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="../shared/datasets")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument(
        "--shared-optimizer",
        choices=["sgd", "adam"],
        default=None,
        help="optimiser of the shared parameters (default: --optimizer)",
    )
    parser.add_argument(
        "--shared-lr", type=float, default=None, help="lr of the shared parameters (default: --lr)"
    )
    parser.add_argument(
        "--user-lr", type=float, default=None, help="lr of the private rows (default: --lr)"
    )
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--server-lr", type=float, default=1.0)
    parser.add_argument("--rowwise", action="store_true")
    parser.add_argument(
        "--server", choices=["fedavg", "fedadam"], default="fedavg", help="aggregation rule"
    )
    parser.add_argument("--server-tau", type=float, default=1e-3, help="FedAdam's epsilon")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", choices=["fedncf", "fedrap", "fedvae"], default="fedncf")
    parser.add_argument("--residual-l2", type=float, default=0.0)
    parser.add_argument("--l1-global", type=float, default=1e-4)
    parser.add_argument(
        "--lr-decay", type=float, default=1.0, help="client lr of round r = lr * decay^(r - 1)"
    )
    parser.add_argument(
        "--user-lr-decay",
        type=float,
        default=1.0,
        help="with --user-lr: the private rows' lr of round r = user_lr * decay^(r - 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dm = load_data(args.root)  # FedAU2's ML-100K, as the ceiling benchmark reads it
    val = dm._eval_stages()["val"]
    graph = dm.client_pairs()
    data = ClientData.from_pairs(dm.client_pairs(), dm.num_users, dm.num_items)
    torch.manual_seed(0)
    model: Recommender
    loss: LocalLoss = PointwiseBCE(4)
    if args.backbone == "fedncf":
        model = NCF(dm.num_users, dm.num_items, 32, hidden_layers=2, scorer="neumf")
    elif args.backbone == "fedrap":
        model = FedRAP(
            dm.num_users,
            dm.num_items,
            32,
            residual_l2=args.residual_l2,
            l1_global=args.l1_global,
        )
    else:  # ml100k_fedvae.yaml's MultVAE and ELBO
        model = MultVAE(dm.num_users, dm.num_items, 200, hidden=600, dropout=0.5)
        loss = MultinomialELBO(beta=0.2, anneal_rounds=200)
    engine = InProcessEngine(
        model,
        loss,
        data,
        local_batch_size=None if args.backbone == "fedvae" else args.batch,
        local_epochs=args.local_epochs,
        fraction=args.fraction,
        lr=args.lr,
        optimizer=args.optimizer,
        aggregator=(
            FedAvg(server_lr=args.server_lr, rowwise=args.rowwise)
            if args.server == "fedavg"
            else FedAdam(server_lr=args.server_lr, rowwise=args.rowwise, tau=args.server_tau)
        ),
    )
    if args.user_lr is not None:
        for name in engine.private_names:
            engine.param_optim[name] = (engine.param_optim[name][0], args.user_lr)
    for name in engine.shared_names:
        if not name.startswith("terms."):
            opt, rate = engine.param_optim[name]
            engine.param_optim[name] = (
                args.shared_optimizer or opt,
                rate if args.shared_lr is None else args.shared_lr,
            )
    start = time.perf_counter()
    for r in range(1, args.rounds + 1):
        if args.lr_decay != 1.0:  # the clients' own parameters (a term keeps its lr)
            rate = (args.lr if args.shared_lr is None else args.shared_lr) * args.lr_decay ** (
                r - 1
            )
            for name, (opt, _) in list(engine.param_optim.items()):
                if not name.startswith("terms.") and (
                    args.user_lr is None or name not in engine.private_names
                ):
                    engine.param_optim[name] = (opt, rate)
        if args.user_lr is not None and args.user_lr_decay != 1.0:
            for name in engine.private_names:
                opt, _ = engine.param_optim[name]
                engine.param_optim[name] = (opt, args.user_lr * args.user_lr_decay ** (r - 1))
        engine.run_round()
        if r % 50 == 0:
            row: dict[str, float | int] = {
                k: round(v, 4) for k, v in sampled_metrics(model, val, graph).items()
            }
            row |= {"round": r, "seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
