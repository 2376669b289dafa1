"""AttrCloak-DF step time: the Lightning callback against a plain PyTorch step, same objective.

Both sides compute the Gaussian MI bound over all users' representation (3 attributes), the L2
retention loss, one backward per objective, the MGDA weight (Eq. 26) and an Adam step over the
user-side parameters of the same NCF backbone. The ratio isolates the cost of the Lightning glue.

Usage::

    python benchmarks/attrcloak_step.py                 # ML-100K sizes, CPU
    python benchmarks/attrcloak_step.py --device cuda   # on a GPU machine

Writes ``benchmarks/results/attrcloak_step_<device>.{json,md}``.
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

from lit_unlearn.callbacks import AttrCloak
from lit_unlearn.datamodules import RecommendationData
from lit_unlearn.datamodules.sources import MovieLens100K
from lit_unlearn.losses.gaussian_mi import multi_attribute_mi_bound
from lit_unlearn.losses.retention import embedding_regularization
from lit_unlearn.models import NCF
from lit_unlearn.optim.combiners import MGDA, assign_flat_grad, flatten_grads, gramian
from lit_unlearn.tasks import RecommenderTask

warnings.filterwarnings("ignore")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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
        grads = []
        for i, loss in enumerate((privacy, retention)):
            opt.zero_grad(set_to_none=True)
            loss.backward(retain_graph=i == 0)
            grads.append(flatten_grads(params))
        jac = torch.stack(grads)
        w = combiner.weights(gramian(jac)).to(jac)
        assign_flat_grad(params, w @ jac)
        opt.step()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets")
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    device = torch.device(args.device)
    source = MovieLens100K(args.data_dir)
    dm = RecommendationData(source=source, seed=0)
    torch.manual_seed(0)
    backbone = NCF(dm.num_users, dm.num_items, 128)
    state = {k: v.clone() for k, v in backbone.state_dict().items()}

    plain = plain_steps(backbone, dm.user_attributes, args.steps, device)[5:]

    tmp = Path(args.out) / "_attrcloak_step.ckpt"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    task = RecommenderTask(NCF(dm.num_users, dm.num_items, 128))
    task.model.load_state_dict(state)
    trainer = pl.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_checkpointing=False)
    trainer.fit(task, dm)  # attaches the datamodule state so the checkpoint has the user index
    trainer.save_checkpoint(tmp)
    df = RecommendationData(source=source, mode="data_free", user_index=str(tmp), batch_size=10**6)
    timer = StepTimer()
    cloak = AttrCloak(checkpoint=str(tmp), mode="df", lr=1e-2)
    task = RecommenderTask(NCF(dm.num_users, dm.num_items, 128))
    pl.Trainer(
        max_epochs=args.steps, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[cloak, timer],
    ).fit(task, df)  # fmt: skip
    tmp.unlink()
    lit = timer.times[5:]
    # A second plain run after the Lightning one, so warm-up and machine drift hit both sides.
    torch.manual_seed(0)
    again = NCF(dm.num_users, dm.num_items, 128)
    again.load_state_dict(state)
    plain += plain_steps(again, dm.user_attributes, args.steps, device)[5:]
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    )
    result: dict[str, Any] = {
        "machine": machine,
        "torch": torch.__version__,
        "users": dm.num_users,
        "attributes": dm.user_attributes.names,
        "plain_ms": 1000 * statistics.median(plain),
        "lightning_ms": 1000 * statistics.median(lit),
    }
    result["ratio"] = result["lightning_ms"] / result["plain_ms"]
    tag = "gpu" if device.type == "cuda" else "cpu"
    out = Path(args.out)
    (out / f"attrcloak_step_{tag}.json").write_text(json.dumps(result, indent=2))
    md = (
        f"# AttrCloak-DF step ({machine}, torch {result['torch']})\n\n"
        f"ML-100K users ({result['users']}), NCF-128 user tower, attributes {', '.join(result['attributes'])}; "
        f"MI bound + L2 retention + two backward passes + MGDA (Eq. 26) + Adam. Median of {len(lit)} steps.\n\n"
        "| plain PyTorch ms/step | Lightning callback ms/step | ratio |\n|---|---|---|\n"
        f"| {result['plain_ms']:.2f} | {result['lightning_ms']:.2f} | {result['ratio']:.2f}x |\n"
    )
    (out / f"attrcloak_step_{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
