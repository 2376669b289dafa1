"""AttrCloak step time: the Lightning callback against a plain PyTorch step, same objective.

Both sides compute the Gaussian MI bound over all users' representation (3 attributes), the
retention loss, one backward per objective, the MGDA weight (Eq. 26) and an Adam step over the
user-side parameters of the same NCF backbone. The ratio isolates the cost of the Lightning glue.

- ``--mode df``: retention = L2 to the original representation (Eq. 21), the paper's defaults
  (ridge 1e-3, float64, alpha_u in [0.1, 1]).
- ``--mode dd``: retention = BPR (+ the batch L2) on *every* training pair of ML-100K with eight
  sampled negatives each (a full-data step on Eq. 20), updating the user representation itself
  (``target="representation"``: a per-user offset on the tower output), as
  `configs/experiment/attribute/attrcloak_ml100k_dd.yaml` runs it (ridge 3.0, float32, alpha_u in
  [0, 0.1]). Plain calls the same backbone forward (which scores a batch naming at least half of
  the [U, I] cells through the full score matrix). A third column, "naive", is the same step
  written the obvious way: each pair's user and item rows go through their towers, the scores are
  taken pair by pair and the L2 over the gathered rows.

Usage::

    python benchmarks/attrcloak_step.py                       # DF, ML-100K sizes, CPU
    python benchmarks/attrcloak_step.py --mode dd             # DD, full-data BPR steps
    python benchmarks/attrcloak_step.py --device cuda         # on a GPU machine

Writes ``benchmarks/results/attrcloak_{step,dd_step}_<device>.{json,md}``.
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
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._device import parse_device
from lit_unlearn.callbacks import AttrCloak
from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.datamodules.sampling import dense_seen_mask, interaction_keys, training_negatives
from lit_unlearn.datamodules.sources import MovieLens100K
from lit_unlearn.methods.attribute.gaussian_mi import multi_attribute_mi_bound
from lit_unlearn.methods.attribute.retention import embedding_regularization
from lit_unlearn.models import NCF
from lit_unlearn.optim import MGDA, assign_flat_grad, flatten_grads, gramian
from lit_unlearn.tasks import RecommenderTask
from lit_unlearn.tasks.losses import bpr_loss

warnings.filterwarnings("ignore")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _mgda_step(
    opt: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    losses: list[Tensor],
    combiner: MGDA,
) -> None:
    """One backward per objective, the MGDA weights (Eq. 26), the combined gradient, a step."""
    grads = []
    for i, loss in enumerate(losses):
        opt.zero_grad(set_to_none=True)
        loss.backward(retain_graph=i < len(losses) - 1)
        grads.append(flatten_grads(params))
    jac = torch.stack(grads)
    w = combiner.weights(gramian(jac)).to(jac)
    assign_flat_grad(params, w @ jac)
    opt.step()


def plain_steps(model: NCF, attrs: Any, steps: int, device: torch.device) -> list[float]:
    """The baseline: the same DF objective and update in a bare loop."""
    model = model.to(device)
    params = model.user_parameters()
    for p in model.item_parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(params, lr=1e-2)
    codes = {n: attrs.codes[n].to(device) for n in attrs.names}
    classes = {n: attrs.num_classes(n) for n in attrs.names}
    with torch.no_grad():
        reference = model.user_representation().clone()
    combiner = MGDA(bounds=(0.1, 1.0))
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        rep = model.user_representation()
        privacy, _ = multi_attribute_mi_bound(rep, codes, classes)
        retention = embedding_regularization(rep, reference, reduction="mean")
        _mgda_step(opt, params, [privacy, retention], combiner)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


# The DD setting of configs/experiment/attribute/attrcloak_ml100k_dd.yaml.
DD_LR, DD_SHRINKAGE, DD_BOUNDS, L2_REG, DD_NEGATIVES = 4.5e-3, 3.0, (0.0, 0.1), 1e-5, 8


def _naive_bpr(model: NCF, users: Tensor, items: Tensor) -> Tensor:
    """BPR + batch L2 the obvious way: towers and L2 over every pair's gathered rows."""
    user_rep = model._tower(model.user_tower, model.user_embedding.weight[users])
    if model.user_shift is not None:
        user_rep = user_rep + model.user_shift[users]
    item_rep = model._tower(model.item_tower, model.item_embedding.weight[items])
    scores = (user_rep.unsqueeze(1) * item_rep).sum(-1)
    l2 = model.user_embedding.weight[users].pow(2).sum()
    l2 = l2 + model.item_embedding.weight[items].pow(2).sum()
    return bpr_loss(scores[:, 0], scores[:, 1:]) + L2_REG * l2 / users.numel()


def plain_dd_steps(
    model: NCF, attrs: Any, pairs: Tensor, steps: int, device: torch.device, naive: bool
) -> list[float]:
    """The DD baseline: MI bound vs full-data BPR, MGDA, Adam, in a bare loop."""
    model = model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    params = [model.enable_user_shift()]  # the representation itself is the variable
    params[0].requires_grad_(True)
    opt = torch.optim.Adam(params, lr=DD_LR)
    codes = {n: attrs.codes[n].to(device) for n in attrs.names}
    classes = {n: attrs.num_classes(n) for n in attrs.names}
    users, pos = pairs[0].to(device), pairs[1].to(device)
    seen = dense_seen_mask(
        interaction_keys(users, pos, model.num_items), model.num_users, model.num_items
    )  # as RecommenderTask does for a small [U, I]
    combiner = MGDA(bounds=DD_BOUNDS)
    times = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        rep = model.user_representation()
        privacy, _ = multi_attribute_mi_bound(
            rep, codes, classes, shrinkage=DD_SHRINKAGE, dtype=torch.float32
        )
        neg = training_negatives(users, model.num_items, DD_NEGATIVES, seen)
        items = torch.cat([pos.unsqueeze(1), neg], dim=1)
        if naive:
            retention = _naive_bpr(model, users, items)
        else:
            scores = model(users, items)
            retention = bpr_loss(scores[:, 0], scores[:, 1:])
            retention = retention + L2_REG * model.l2_batch(users, items.reshape(-1))
        _mgda_step(opt, params, [privacy, retention], combiner)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        _sync(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        _sync(pl_module.device)
        self.times.append(time.perf_counter() - self._t0)


def _lightning_steps(
    mode: str, dm: RecommendationData, source: Any, state: dict[str, Tensor], args: Any
) -> list[float]:
    """The AttrCloak callback on a fresh task loaded with the same weights."""
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "_attrcloak_step.ckpt"
    task = RecommenderTask(
        NCF(dm.num_users, dm.num_items, 128), l2_reg=L2_REG, num_negatives=DD_NEGATIVES
    )
    task.model.load_state_dict(state)
    trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_checkpointing=False)
    trainer.fit(task, dm)  # attaches the datamodule state so the checkpoint has the user index
    trainer.save_checkpoint(tmp)
    if mode == "df":
        data = RecommendationData(
            source=source, mode="data_free", user_index=str(tmp), batch_size=10**6
        )
        cloak = AttrCloak(checkpoint=str(tmp), mode="df", lr=1e-2)
    else:
        data = RecommendationData(source=source, seed=0, batch_size=10**6)
        cloak = AttrCloak(
            checkpoint=str(tmp),
            mode="dd",
            lr=DD_LR,
            shrinkage=DD_SHRINKAGE,
            precision="float32",
            combiner=MGDA(bounds=DD_BOUNDS),
            target="representation",
        )
    timer = StepTimer()
    task = RecommenderTask(
        NCF(dm.num_users, dm.num_items, 128), l2_reg=L2_REG, num_negatives=DD_NEGATIVES
    )
    pl.Trainer(
        max_epochs=args.steps, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[cloak, timer],
    ).fit(task, data)  # fmt: skip
    tmp.unlink()
    return timer.times[5:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets")
    )
    parser.add_argument("--mode", choices=["df", "dd"], default="df")
    parser.add_argument("--device", type=parse_device, default=torch.device("cpu"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    device = torch.device(args.device)
    source = MovieLens100K(args.data_dir)
    dm = RecommendationData(source=source, seed=0)
    dm.setup("fit")
    torch.manual_seed(0)
    backbone = NCF(dm.num_users, dm.num_items, 128)
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    pairs = dm.train_graph

    def plain_run(naive: bool = False) -> list[float]:
        torch.manual_seed(0)
        model = NCF(dm.num_users, dm.num_items, 128)
        model.load_state_dict(state)
        if args.mode == "df":
            return plain_steps(model, dm.user_attributes, args.steps, device)[5:]
        return plain_dd_steps(model, dm.user_attributes, pairs, args.steps, device, naive)[5:]

    # Plain runs before and after the Lightning one, so warm-up and machine drift hit both sides.
    plain = plain_run()
    naive = plain_run(naive=True) if args.mode == "dd" else []
    lit = _lightning_steps(args.mode, dm, source, state, args)
    plain += plain_run()
    if args.mode == "dd":
        naive += plain_run(naive=True)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    )
    result: dict[str, Any] = {
        "mode": args.mode,
        "machine": machine,
        "torch": torch.__version__,
        "users": dm.num_users,
        "pairs": int(pairs.shape[1]),
        "attributes": dm.user_attributes.names,
        "plain_ms": 1000 * statistics.median(plain),
        "lightning_ms": 1000 * statistics.median(lit),
    }
    result["ratio"] = result["lightning_ms"] / result["plain_ms"]
    tag = "gpu" if device.type == "cuda" else "cpu"
    out = Path(args.out)
    if args.mode == "df":
        title = "AttrCloak-DF step"
        what = "MI bound + L2 retention + two backward passes + MGDA (Eq. 26) + Adam"
        head = "| plain PyTorch ms/step | Lightning callback ms/step | ratio |\n|---|---|---|\n"
        row = f"| {result['plain_ms']:.2f} | {result['lightning_ms']:.2f} | {result['ratio']:.2f}x |\n"
        stem = f"attrcloak_step_{tag}"
    else:
        result["naive_ms"] = 1000 * statistics.median(naive)
        result["naive_over_lightning"] = result["naive_ms"] / result["lightning_ms"]
        title = "AttrCloak-DD step (full-data BPR)"
        what = (
            f"MI bound (ridge {DD_SHRINKAGE}, float32) + BPR with {DD_NEGATIVES} sampled "
            f"negatives and the batch L2 over all {result['pairs']} training pairs + two backward "
            f"passes + MGDA (alpha_u in {list(DD_BOUNDS)}) + Adam on the user representation "
            "(a per-user offset on the tower output)"
        )
        head = (
            "| naive PyTorch ms/step | plain PyTorch ms/step | Lightning callback ms/step | "
            "Lightning / plain | naive / Lightning |\n|---|---|---|---|---|\n"
        )
        row = (
            f"| {result['naive_ms']:.1f} | {result['plain_ms']:.1f} | {result['lightning_ms']:.1f} "
            f"| {result['ratio']:.2f}x | {result['naive_over_lightning']:.2f}x |\n"
        )
        stem = f"attrcloak_dd_step_{tag}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    md = (
        f"# {title} ({machine}, torch {result['torch']})\n\n"
        f"ML-100K users ({result['users']}), NCF-128 user tower, attributes "
        f"{', '.join(result['attributes'])}; {what}. Median of {len(lit)} steps "
        f"(plain: {len(plain)}, two runs around the Lightning one).\n\n" + head + row
    )
    (out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
