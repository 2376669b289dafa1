"""Training throughput of the Lightning task against a plain PyTorch loop, plus ML-100K quality.

Same backbone (BPR-MF), same loss, same negative sampling (uniform, training positives
resampled once), same Adam, same batch size, in the same process: the ratio isolates what the
Lightning glue and our loaders cost. Then it trains the configured models for quality and
reports HR/NDCG@10 under both ranking protocols and the attribute-inference audit.

Usage::

    python benchmarks/train_throughput.py                   # CPU, ML-100K from ../shared/datasets
    python benchmarks/train_throughput.py --device cuda     # on a GPU machine
    python benchmarks/train_throughput.py --data synthetic  # no files needed

Writes ``benchmarks/results/train_throughput_<device>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._device import parse_device
from lit_unlearn.datamodules import RecommendationData, Synthetic
from lit_unlearn.datamodules.sampling import training_negatives
from lit_unlearn.datamodules.sources import MovieLens100K
from lit_unlearn.models import MF, NCF
from lit_unlearn.runs import bare_trainer
from lit_unlearn.tasks import RecommenderTask
from lit_unlearn.tasks.losses import bpr_loss

warnings.filterwarnings("ignore")


def make_data(args: argparse.Namespace, batch_size: int) -> RecommendationData:
    source = MovieLens100K(args.data_dir) if args.data == "ml100k" else Synthetic()
    dm = RecommendationData(source=source, batch_size=batch_size, seed=0)
    dm.setup("fit")
    return dm


def plain_loop(
    dm: RecommendationData, batch_size: int, epochs: int, device: torch.device, dim: int
) -> list[float]:
    """The baseline: device-resident tensors, randperm + slicing, no framework."""
    torch.manual_seed(0)
    model = MF(dm.num_users, dm.num_items, dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = torch.as_tensor(dm.split.train, device=device)
    users_all, items_all = train[:, 0].contiguous(), train[:, 1].contiguous()
    keys = torch.unique(users_all * dm.num_items + items_all)
    n = users_all.shape[0]
    times = []
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            u, i = users_all[idx], items_all[idx]
            neg = training_negatives(u, dm.num_items, 1, keys)
            scores = model(u, torch.cat([i.unsqueeze(1), neg], dim=1))
            loss = bpr_loss(scores[:, 0], scores[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module.device)
        self.times.append(time.perf_counter() - self._t0)


def lightning_loop(
    dm: RecommendationData, batch_size: int, epochs: int, device: torch.device, dim: int
) -> list[float]:
    torch.manual_seed(0)
    task = RecommenderTask(MF(dm.num_users, dm.num_items, dim), lr=1e-3)
    timer = EpochTimer()
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    bare_trainer(epochs, callbacks=[timer], accelerator=accelerator).fit(task, dm)
    return timer.times


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def quality(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Train MF and NCF on the data as the configs do; test metrics + attribute audit."""
    from lit_unlearn.attacks.audit import audit_embeddings

    rows = []
    for name, build, lr, epochs in (
        ("MF-64 BPR", lambda dm: MF(dm.num_users, dm.num_items, 64), 2e-3, args.quality_epochs),
        ("NCF-128 BPR", lambda dm: NCF(dm.num_users, dm.num_items, 128), 5e-4, args.quality_epochs),
    ):
        dm = make_data(args, 512)
        pl.seed_everything(0, verbose=False)
        task = RecommenderTask(build(dm), lr=lr, l2_reg=1e-5)
        trainer = bare_trainer(epochs, accelerator="gpu" if device.type == "cuda" else "cpu")
        t0 = time.perf_counter()
        trainer.fit(task, dm)
        fit_s = time.perf_counter() - t0
        metrics = trainer.test(task, dm, verbose=False)[0]
        audit = audit_embeddings(task.user_representation().cpu(), dm.user_attributes, seed=0)
        rows.append(
            {
                "model": name,
                "epochs": epochs,
                "fit_s": fit_s,
                "metrics": {k: float(v) for k, v in metrics.items()},
                "audit": [r.as_dict() for r in audit],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["ml100k", "synthetic"], default="ml100k")
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets")
    )
    parser.add_argument("--device", type=parse_device, default=torch.device("cpu"))
    parser.add_argument(
        "--epochs", type=int, default=6, help="timed epochs per run (first is warm-up)"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 8192])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved plain/Lightning rounds")
    parser.add_argument("--quality-epochs", type=int, default=30)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    device = torch.device(args.device)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    )

    speed = []
    for bs in args.batch_sizes:
        dm = make_data(args, bs)
        plain: list[float] = []
        lit: list[float] = []
        # Interleave rounds so drifting machine load hits both sides alike.
        for _ in range(args.repeats):
            plain += plain_loop(dm, bs, args.epochs, device, args.dim)[1:]
            lit += lightning_loop(dm, bs, args.epochs, device, args.dim)[1:]
        row = {
            "batch_size": bs,
            "plain_s_per_epoch": statistics.median(plain),
            "lightning_s_per_epoch": statistics.median(lit),
            "plain_epochs": plain,
            "lightning_epochs": lit,
        }
        row["ratio"] = row["lightning_s_per_epoch"] / row["plain_s_per_epoch"]
        speed.append(row)
        print({k: v for k, v in row.items() if not k.endswith("epochs")}, flush=True)

    result: dict[str, Any] = {
        "machine": machine,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "data": args.data,
        "dim": args.dim,
        "timed_epochs": (args.epochs - 1) * args.repeats,
        "speed": speed,
    }
    if not args.skip_quality:
        result["quality"] = quality(args, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if device.type == "cuda" else "cpu"
    (out / f"train_throughput_{tag}.json").write_text(json.dumps(result, indent=2))
    (out / f"train_throughput_{tag}.md").write_text(to_markdown(result))
    print(to_markdown(result))


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Training throughput and quality ({result['data']}, {result['machine']})",
        "",
        f"torch {result['torch']}, lightning {result['lightning']}; BPR-MF d={result['dim']}; "
        f"median of {result['timed_epochs']} epochs per side (interleaved rounds, each after one warm-up epoch).",
        "",
        "| batch | plain PyTorch s/epoch | Lightning task s/epoch | ratio |",
        "|---|---|---|---|",
    ]
    for r in result["speed"]:
        lines.append(
            f"| {r['batch_size']} | {r['plain_s_per_epoch']:.4f} | {r['lightning_s_per_epoch']:.4f} | {r['ratio']:.2f}x |"
        )
    for q in result.get("quality", []):
        m = q["metrics"]
        lines += [
            "",
            f"## {q['model']}, {q['epochs']} epochs ({q['fit_s']:.0f} s fit)",
            "",
            "Leave-one-out test split (latest interaction per user); full = ranked against every item the",
            "user has not seen in training/validation; sampled = against 99 fixed sampled negatives (seed 0).",
            "",
            "| protocol | HR@10 | NDCG@10 | HR@5 | NDCG@5 |",
            "|---|---|---|---|---|",
        ]
        for p in ("full", "sampled"):
            lines.append(
                f"| {p} | {m[f'test/{p}/hr@10']:.4f} | {m[f'test/{p}/ndcg@10']:.4f} | "
                f"{m[f'test/{p}/hr@5']:.4f} | {m[f'test/{p}/ndcg@5']:.4f} |"
            )
        lines += [
            "",
            "Attribute inference on the user representation (attackers trained on the 20% shadow users,",
            "measured on the other 80%; seed 0):",
            "",
            "| attribute | attacker | accuracy | balanced acc. | micro-F1 | AUC | chance | majority acc. |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for a in q["audit"]:
            lines.append(
                f"| {a['attribute']} | {a['attacker']} | {a['accuracy']:.3f} | {a['balanced_accuracy']:.3f} | "
                f"{a['micro_f1']:.3f} | {a['auc']:.3f} | {a['chance']:.3f} | {a['majority_accuracy']:.3f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
