"""What the federated backbones reach when trained centrally on the same data: the ceiling.

Issue 18 asks the federated Originals for sampled HR@10 >= 0.60 (FedNCF) and >= 0.62 (FedVAE)
on ML-100K as FedAU2 prepares it. This script trains the *same* models centrally (every
user's training interactions pooled, no clients, no aggregation) on the *same* split, so the
federated numbers can be read against what the model family reaches at all here:

- NCF (NeuMF, d = 32, 2 MLP layers): binary cross-entropy with 4 uniform negatives per positive
  redrawn each epoch (one redraw of a negative that is a positive, as the federated
  ``PointwiseBCE``), Adam, minibatches of 256.
- MultVAE (d = 200, hidden 600, dropout 0.5): Mult-VAE's ELBO on interaction rows, beta
  annealed to 0.2 over the first half of the epochs, Adam, minibatches of 64 users.

Protocol: FedAU2's ML-100K (users and items >= 5, gender-balanced users: 546 x 1,204;
leave-one-out by time). Sampled HR@10 / NDCG@10 against the 99 fixed negatives of the
federated DataModule, on the validation item every epoch and on the test item; reported per
seed: the test item at the epoch of best validation HR@10 (model selection on validation, as
the federated runs' ``best.ckpt``) and at the last epoch. Medians over seeds. Example::

    python benchmarks/federated_ceiling.py --seeds 0 1 2

Writes ``benchmarks/results/federated_ceiling_cpu.{json,md}`` (docs/federated.md quotes it).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_unlearn.datamodules import FederatedData
from lit_unlearn.datamodules.sources.movielens import MovieLens100K
from lit_unlearn.metrics.ranking import metrics_from_ranks, sampled_ranks
from lit_unlearn.models import NCF, MultVAE, Recommender
from lit_unlearn.models.multvae import history_rows

RESULTS = Path(__file__).parent / "results"


def load_data(root: str) -> FederatedData:
    """FedAU2's ML-100K as the federated configs build it (``ml100k_fedncf.yaml``)."""
    dm = FederatedData(
        source=MovieLens100K(root=root),
        attributes=["gender"],
        age_scheme="fedau2",
        user_k=5,
        item_k=5,
        balance="gender",
        protocols=["sampled"],
        download=False,
        seed=0,
    )
    dm.setup("fit")
    return dm


def sampled_metrics(
    model: Recommender, stage: dict[str, Tensor], graph: Tensor
) -> dict[str, float]:
    """Sampled HR@10 / NDCG@10 of ``stage``'s held-out item against its 99 fixed negatives."""
    users, pos, negatives = stage["pairs"][:, 0], stage["pairs"][:, 1], stage["negatives"]
    model.eval()
    with torch.no_grad():
        scores = model(users, torch.cat([pos.unsqueeze(1), negatives], dim=1), graph=graph)
    model.train()
    m = metrics_from_ranks(sampled_ranks(scores[:, 0], scores[:, 1:]), [10])
    return {k: float(m[k].float().mean()) for k in ("hr@10", "ndcg@10")}


def negatives_for(pairs: Tensor, num_items: int, k: int, g: torch.Generator) -> Tensor:
    """``k`` uniform negatives per positive, one redraw of those that are positives."""
    seen = torch.zeros(int(pairs[:, 0].max()) + 1, num_items, dtype=torch.bool)
    seen[pairs[:, 0], pairs[:, 1]] = True
    users = pairs[:, 0].repeat_interleave(k)
    neg = torch.randint(0, num_items, (users.numel(),), generator=g)
    redraw = torch.randint(0, num_items, (users.numel(),), generator=g)
    return torch.where(seen[users, neg], redraw, neg)


def ncf_epoch(
    model: NCF,
    opt: torch.optim.Optimizer,
    pairs: Tensor,
    num_items: int,
    g: torch.Generator,
    batch: int,
) -> None:
    """One epoch of NCF's log loss on all users' positives and 4 fresh negatives each."""
    k = 4
    neg = negatives_for(pairs, num_items, k, g)
    users = torch.cat([pairs[:, 0], pairs[:, 0].repeat_interleave(k)])
    items = torch.cat([pairs[:, 1], neg])
    labels = torch.cat([torch.ones(pairs.shape[0]), torch.zeros(neg.numel())])
    order = torch.randperm(users.numel(), generator=g)
    for start in range(0, users.numel(), batch):
        b = order[start : start + batch]
        loss = F.binary_cross_entropy_with_logits(model(users[b], items[b]), labels[b])
        opt.zero_grad()
        loss.backward()
        opt.step()


def vae_epoch(
    model: MultVAE,
    opt: torch.optim.Optimizer,
    rows: Tensor,
    beta: float,
    g: torch.Generator,
    batch: int,
) -> None:
    """One epoch of Mult-VAE's ELBO (``nll + beta * KL``) over the users' interaction rows."""
    order = torch.randperm(rows.shape[0], generator=g)
    for start in range(0, rows.shape[0], batch):
        nll, kl, _ = model.elbo_terms(rows[order[start : start + batch]])
        loss = (nll + beta * kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def run(dm: FederatedData, backbone: str, seed: int, epochs: int) -> dict[str, Any]:
    """Train one backbone centrally with one seed; the curve and the selected test numbers."""
    stages = dm._eval_stages()
    pairs = dm.client_pairs().T.contiguous()  # [n, 2] (user, item)
    graph = dm.client_pairs()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model: Recommender
    if backbone == "ncf":
        model = NCF(dm.num_users, dm.num_items, 32, hidden_layers=2, scorer="neumf")
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    else:
        model = MultVAE(dm.num_users, dm.num_items, 200, hidden=600, dropout=0.5)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        rows = history_rows(graph, None, dm.num_users, dm.num_items)
    curve: list[dict[str, Any]] = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        if isinstance(model, NCF):
            ncf_epoch(model, opt, pairs, dm.num_items, g, batch=256)
        else:
            assert isinstance(model, MultVAE)
            beta = 0.2 * min(1.0, epoch / max(1, epochs // 2))
            vae_epoch(model, opt, rows, beta, g, batch=64)
        val = sampled_metrics(model, stages["val"], graph)
        test = sampled_metrics(model, stages["test"], graph)
        curve.append({"epoch": epoch, "val": val, "test": test})
    best = max(curve, key=lambda c: c["val"]["hr@10"])
    return {
        "backbone": backbone,
        "seed": seed,
        "epochs": epochs,
        "seconds": round(time.perf_counter() - start, 1),
        "best_epoch": best["epoch"],
        "test_at_best_val": best["test"],
        "test_last": curve[-1]["test"],
        "val_best": best["val"],
        "curve": curve,
    }


def render(rows: list[dict[str, Any]], machine: str) -> str:
    """The Markdown table docs/federated.md quotes (medians over seeds)."""
    lines = [
        "# Federated backbones trained centrally on FedAU2's ML-100K (the ceiling)",
        "",
        f"Machine: {machine}. Written by `python benchmarks/federated_ceiling.py`; protocol in",
        "its docstring: sampled HR@10 / NDCG@10 (99 fixed negatives) on the test item, at the",
        "epoch of best validation HR@10 and at the last epoch; medians over seeds (min-max).",
        "",
        "| backbone | seeds | epochs | test HR@10 at best val | test NDCG@10 at best val "
        "| test HR@10 last | best val HR@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for backbone in sorted({r["backbone"] for r in rows}):
        rs = [r for r in rows if r["backbone"] == backbone]

        def cell(values: list[float]) -> str:
            return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

        lines.append(
            f"| {backbone} | {len(rs)} | {rs[0]['epochs']} "
            f"| {cell([r['test_at_best_val']['hr@10'] for r in rs])} "
            f"| {cell([r['test_at_best_val']['ndcg@10'] for r in rs])} "
            f"| {cell([r['test_last']['hr@10'] for r in rs])} "
            f"| {cell([r['val_best']['hr@10'] for r in rs])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="../shared/datasets")
    parser.add_argument(
        "--backbones", nargs="+", choices=["ncf", "multvae"], default=["ncf", "multvae"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20, help="NCF's epochs")
    parser.add_argument("--vae-epochs", type=int, default=200, help="MultVAE's epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "federated_ceiling_cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dm = load_data(args.root)
    rows = []
    for backbone in args.backbones:
        for seed in args.seeds:
            epochs = args.epochs if backbone == "ncf" else args.vae_epochs
            row = run(dm, backbone, seed, epochs)
            print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
            rows.append(row)
    machine = (
        f"{platform.processor() or platform.machine()}, {args.threads} thread(s), "
        f"torch {torch.__version__}, CPU"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "rows": rows}, indent=1)
    )
    args.out.with_suffix(".md").write_text(render(rows, machine))
    print(render(rows, machine))


if __name__ == "__main__":
    main()
