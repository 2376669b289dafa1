"""DLG / iDLG label recovery on the adversary head's real uploads of a federated run.

The honest-but-curious server of FedAU2 (App. A.2) keeps each client's latest upload of the
shared adversary head and the global head it started from. This script

* ``record``: trains a federated experiment config (default: FedNCF on ML-100K) for
  ``--rounds`` rounds through the CLI's own parser (so the run is the YAML's), and pickles the
  :class:`~lit_unlearn.methods.federated.UploadRecorder`'s records with the clients' true labels,
  their number of local SGD steps ``K`` (what the server knows from the protocol: batch size,
  negatives per positive and the interaction count FedAvg weights by) and the head;
* ``eval``: loads that pickle and scores attack variants (iDLG, the reference DLG, DLG on the
  mean step, DLG unrolled over ``K`` SGD steps, cosine matching, restarts) on the stored
  uploads, so variants are compared without retraining.

Example::

    OMP_NUM_THREADS=1 python benchmarks/dlg_uploads.py record \\
        --config configs/experiment/federated/ml100k_fedncf.yaml --out /tmp/dlg/fedncf.pkl
    OMP_NUM_THREADS=1 python benchmarks/dlg_uploads.py eval /tmp/dlg/fedncf.pkl
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path
from typing import Any

import torch

from lit_unlearn.attacks.gradient_inversion import (
    dlg_attack,
    evaluate_label_recovery,
    idlg_labels,
)

# name -> dlg_attack keyword arguments (beside the head, params, gradients, local_steps, lr).
VARIANTS: dict[str, dict[str, Any]] = {
    "dlg-reference (sum, l2, 0 restarts)": {"multi_step": "sum", "restarts": 0},
    "dlg sum, l2, 2 restarts (old audit)": {"multi_step": "sum", "restarts": 2},
    "dlg mean, l2, 0 restarts": {"multi_step": "mean", "restarts": 0},
    "dlg mean, l2, 2 restarts": {"multi_step": "mean", "restarts": 2},
    "dlg sum, cosine, 2 restarts": {"multi_step": "sum", "distance": "cosine", "restarts": 2},
    "dlg mean, cosine, 2 restarts": {"multi_step": "mean", "distance": "cosine", "restarts": 2},
    "dlg sum, label search, l2, 0 restarts": {"multi_step": "sum", "label_search": True},
    "dlg mean, label search, l2, 0 restarts": {"multi_step": "mean", "label_search": True},
    "dlg mean, label search, l2, 2 restarts": {
        "multi_step": "mean",
        "label_search": True,
        "restarts": 2,
    },
    "dlg mean, label search, adam 500 (audit default)": {
        "multi_step": "mean",
        "label_search": True,
        "optimizer": "adam",
        "lr": 0.1,
        "steps": 25,
    },
    "dlg unroll, l2, 0 restarts": {"multi_step": "unroll", "restarts": 0},
    "dlg unroll, l2, 2 restarts": {"multi_step": "unroll", "restarts": 2},
    "dlg unroll, cosine, 2 restarts": {
        "multi_step": "unroll",
        "distance": "cosine",
        "restarts": 2,
    },
}


def record(args: argparse.Namespace) -> None:
    from lit_unlearn.cli import build_cli
    from lit_unlearn.methods.federated.audit import GradientInversionAudit, local_sgd_steps

    save = Path(args.out).parent
    cli_args = [
        "--config",
        args.config,
        f"--trainer.max_epochs={args.rounds // 50}",
        f"--trainer.logger.init_args.save_dir={save / 'runs'}",
        "--trainer.check_val_every_n_epoch=1000",
        *args.override,
    ]
    cli = build_cli(cli_args, run=False)
    trainer = cli.trainer
    # Only the server's gradient audit: no checkpoints, no embedding attacks.
    keep = []
    for cb in trainer.callbacks:
        name = type(cb).__name__
        if name == "ModelCheckpoint":
            cb.dirpath = str(save / "checkpoints")
        if name in ("AttributeAudit", "EmbeddingAttack"):
            continue
        if isinstance(cb, GradientInversionAudit):
            cb.save_dir = str(save)
            audit = cb
        keep.append(cb)
    trainer.callbacks = keep
    start = time.perf_counter()
    trainer.fit(cli.model, datamodule=cli.datamodule)
    task, dm = cli.model, cli.datamodule
    assert audit.recorder is not None
    users = [
        u for u in audit.recorder.users() if int(dm.user_attributes.codes[task.attribute][u]) >= 0
    ]
    codes = dm.user_attributes.codes[task.attribute]
    term = task.terms[audit.term]
    payload = {
        "config": args.config,
        "rounds": task.rounds_done,
        "attribute": task.attribute,
        "num_classes": len(dm.user_attributes.classes[task.attribute]),
        "users": users,
        "labels": codes[torch.tensor(users)].cpu(),
        "records": [audit.recorder.latest[u] for u in users],
        "local_steps": local_sgd_steps(task, users),
        "head": term.head,
        "audit_results": [r.as_dict() for r in audit.results],
        "train_seconds": time.perf_counter() - start,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as fh:
        pickle.dump(payload, fh)
    print(f"wrote {args.out}: {len(users)} users, rounds {task.rounds_done}")
    for r in audit.results:
        print(r.attack, r.accuracy)


def evaluate(args: argparse.Namespace) -> None:
    with open(args.pkl, "rb") as fh:
        data = pickle.load(fh)
    records, head = data["records"], data["head"]
    names = list(records[0]["start"])
    params = {n: torch.stack([r["start"][n] for r in records]) for n in names}
    lr = torch.tensor([float(r["lr"][names[0]]) for r in records])
    grads = {n: torch.stack([-r["delta"][n] / r["lr"][n] for r in records]) for n in names}
    steps = data["local_steps"]
    labels, num_classes = data["labels"], data["num_classes"]
    sel = slice(None) if args.users is None else slice(0, args.users)
    params = {n: v[sel] for n, v in params.items()}
    grads = {n: v[sel] for n, v in grads.items()}
    lr, steps, labels = lr[sel], steps[sel], labels[sel]
    print(
        f"{data['config']}: {labels.numel()} users, round {data['rounds']}, K "
        f"min/median/max {int(steps.min())}/{int(steps.median())}/{int(steps.max())}"
    )
    rows = []
    last = [n for n, m in head.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    idlg = idlg_labels(grads[f"{last}.weight"], grads.get(f"{last}.bias"))
    res = evaluate_label_recovery(idlg, labels, num_classes, attack="idlg")
    rows.append({"variant": "idlg", "accuracy": res.accuracy, "bacc": res.balanced_accuracy})
    print(rows[-1], flush=True)
    chosen = VARIANTS if not args.variants else {k: VARIANTS[k] for k in args.variants}
    for name, kwargs in chosen.items():
        t0 = time.perf_counter()
        kwargs = {"steps": args.steps, **kwargs}
        out = dlg_attack(
            head,
            params,
            grads,
            seed=args.seed,
            local_steps=steps,
            local_lr=lr,
            **kwargs,
        )
        res = evaluate_label_recovery(out.labels, labels, num_classes, attack="dlg")
        rows.append(
            {
                "variant": name,
                "accuracy": res.accuracy,
                "bacc": res.balanced_accuracy,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(rows[-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--config", default="configs/experiment/federated/ml100k_fedncf.yaml")
    rec.add_argument("--rounds", type=int, default=100)
    rec.add_argument("--out", default="/tmp/dlg_uploads/fedncf.pkl")
    rec.add_argument("override", nargs="*", help="extra CLI arguments (--key=value)")
    ev = sub.add_parser("eval")
    ev.add_argument("pkl")
    ev.add_argument("--steps", type=int, default=15)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--users", type=int, default=None, help="first N users only")
    ev.add_argument("--variants", nargs="*", default=None)
    ev.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "record":
        record(args)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
