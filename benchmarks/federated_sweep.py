"""How fast FedNCF learns under the in-process engine for a client optimiser / aggregation choice.

The FedAU2 paper gives FedNCF's "lr 0.1" but no optimiser, batch size or aggregation rule; this
script measured the choices behind ``configs/experiment/federated/ml100k_fedncf.yaml``
(docs/federated.md quotes it). Protocol: ML-100K as FedAU2 prepares it (users and items >= 5,
gender-balanced users, leave-one-out by time), sampled HR@10 / NDCG@10 on the *validation*
item against 99 fixed negatives, every 50 rounds, seed 0. Example::

    python benchmarks/federated_sweep.py --optimizer adam --lr 0.01 --rounds 400
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.federated_ceiling import load_data
from lit_unlearn.methods.federated import ClientData, FedAvg, InProcessEngine, PointwiseBCE
from lit_unlearn.metrics.ranking import metrics_from_ranks, sampled_ranks
from lit_unlearn.models import NCF, FedRAP, Recommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="../shared/datasets")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--server-lr", type=float, default=1.0)
    parser.add_argument("--rowwise", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", choices=["fedncf", "fedrap"], default="fedncf")
    parser.add_argument("--residual-l2", type=float, default=0.0)
    parser.add_argument("--l1-global", type=float, default=1e-4)
    parser.add_argument(
        "--lr-decay", type=float, default=1.0, help="client lr of round r = lr * decay^(r - 1)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dm = load_data(args.root)  # FedAU2's ML-100K, as the ceiling benchmark reads it
    val = dm._eval_stages()["val"]
    users, pos, negatives = val["pairs"][:, 0], val["pairs"][:, 1], val["negatives"]
    data = ClientData.from_pairs(dm.client_pairs(), dm.num_users, dm.num_items)
    torch.manual_seed(0)
    model: Recommender = (
        NCF(dm.num_users, dm.num_items, 32, hidden_layers=2, scorer="neumf")
        if args.backbone == "fedncf"
        else FedRAP(
            dm.num_users,
            dm.num_items,
            32,
            residual_l2=args.residual_l2,
            l1_global=args.l1_global,
        )
    )
    engine = InProcessEngine(
        model,
        PointwiseBCE(4),
        data,
        local_batch_size=args.batch,
        lr=args.lr,
        optimizer=args.optimizer,
        aggregator=FedAvg(server_lr=args.server_lr, rowwise=args.rowwise),
    )
    start = time.perf_counter()
    for r in range(1, args.rounds + 1):
        if args.lr_decay != 1.0:  # the clients' own parameters (a term keeps its lr)
            rate = args.lr * args.lr_decay ** (r - 1)
            for name, (opt, _) in list(engine.param_optim.items()):
                if not name.startswith("terms."):
                    engine.param_optim[name] = (opt, rate)
        engine.run_round()
        if r % 50 == 0:
            model.eval()
            with torch.no_grad():
                scores = model(users, torch.cat([pos.unsqueeze(1), negatives], dim=1))
            model.train()
            m = metrics_from_ranks(sampled_ranks(scores[:, 0], scores[:, 1:]), [10])
            row = {
                k: round(float(v.float().mean()), 4)
                for k, v in m.items()
                if k in ("hr@10", "ndcg@10")
            }
            row |= {"round": r, "seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
