"""DSDA under DDP (CPU gloo, ddp_spawn, 2 processes): one direction on every rank, as on 1.

Every rank synthesises the same samples (same seed, same weights), the sampler gives each rank
a disjoint half of every global batch, and each of the three ``manual_backward`` passes is
all-reduced, so the conflict-averse combiner sees the same gradients on every rank and must
return the same direction; with the same global batch (2 x 10 rows on 2 ranks, 20 rows on 1)
that direction must be the one a single process computes.

Two things differ between 1 and 2 processes by design of DDP, not of DSDA, and are switched off
here: BatchNorm in train mode normalises with per-rank batch statistics (no SyncBatchNorm on
CPU / gloo), so DSDA keeps BatchNorm layers in eval mode during unlearning (running
statistics of the original model; ``freeze_batchnorm``, its default; the probe checks it);
and dropout draws per-rank masks, so it is 0.

Each rank writes the stacked objective gradients, the direction and the weights of every step
(and its synthetic set, centres and final weights) to ``tmp_path``; the assertions compare the
files. Two things had to be right for this (both caught by these tests): L_Disc reads only
M^f, so without a zero-weighted tie to the head its backward left DDP's all-reduce incomplete;
and each loss is a per-rank mean, weighted by n_local * W / n_global to make the average the
global mean when the ranks hold different numbers of retain / forget rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import Digits
from lit_unlearn.methods.class_unlearning.dsda import DSDA
from lit_unlearn.methods.class_unlearning.synthesis import LangevinSampler
from lit_unlearn.models.classifiers import SmallCNN
from lit_unlearn.optim import ConflictAverse
from lit_unlearn.tasks import ClassificationTask

GLOBAL_BATCH = 20
SAMPLES_PER_CLASS = 4  # 40 synthetic samples: 2 global batches per epoch, no wrap-around
EPOCHS = 2  # the stop rule is evaluated after epoch 0 on every rank


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RecordingConflictAverse(ConflictAverse):
    """ConflictAverse that saves its input gradients and output of every call to ``out``."""

    def __init__(self, out: str, c: float = 0.5) -> None:
        super().__init__(c=c)
        self.out = out
        self.calls = 0

    def __call__(self, grads: Tensor) -> tuple[Tensor, Tensor]:
        direction, weights = super().__call__(grads)
        rank, world = _rank_world()
        record = {"grads": grads.clone(), "direction": direction.clone(), "weights": weights}
        torch.save(record, Path(self.out) / f"w{world}_r{rank}_step{self.calls}.pt")
        self.calls += 1
        return direction, weights


class Probe(pl.Callback):
    """Checks BatchNorm stays in eval mode; saves each rank's synthetic set, centres, weights."""

    def __init__(self, out: str, dsda: DSDA) -> None:
        self.out = out
        self.dsda = dsda

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        rank, world = _rank_world()
        syn = trainer.datamodule.dataset("synthetic")  # type: ignore[attr-defined]
        record = {"images": syn.images, "labels": syn.labels, "centres": self.dsda.centres}
        torch.save(record, Path(self.out) / f"w{world}_r{rank}_synthetic.pt")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        for module in pl_module.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                assert not module.training, "DSDA must keep batch norm in eval mode"

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        rank, world = _rank_world()
        record = {
            "state": {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()},
            "steps": trainer.global_step,
            "epochs": trainer.current_epoch,
        }
        torch.save(record, Path(self.out) / f"w{world}_r{rank}_final.pt")


def _unlearn(devices: int, out: Path, strategy: str = "ddp_spawn") -> None:
    torch.manual_seed(0)
    model = SmallCNN(num_classes=10, channels=[8, 16], hidden=32, dropout=0.0)
    task = ClassificationTask(model)
    task.set_input_stats(torch.tensor([0.3]), torch.tensor([0.4]))
    dm = ClassificationData(
        Digits(), forget_classes=[3], mode="source_free", batch_size=GLOBAL_BATCH // devices
    )
    dsda = DSDA(
        lr=1e-3,
        sampler=LangevinSampler(method="aegds", steps=4, skip=2),
        samples_per_class=SAMPLES_PER_CLASS,
        combiner=RecordingConflictAverse(str(out)),
        seed=0,
    )
    pl.Trainer(
        accelerator="cpu", devices=devices, strategy=strategy if devices > 1 else "auto",
        max_epochs=EPOCHS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=out, callbacks=[dsda, Probe(str(out), dsda)],
    ).fit(task, dm)  # fmt: skip


OBJECTIVES = ("L_R", "L_F", "L_Disc")


@dataclass
class Runs:
    out: Path
    error: str | None  # what the 2-process fit raised, if it did


def _load(out: Path, name: str) -> dict[str, Any]:
    return torch.load(out / f"{name}.pt", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    out = tmp_path_factory.mktemp("dsda_ddp")
    _unlearn(1, out)
    try:
        _unlearn(2, out)
    except Exception as err:  # the ranks' records up to the failure are still compared
        return Runs(out, f"{type(err).__name__}: {err}")
    return Runs(out, None)


def _steps(out: Path, world: int, rank: int) -> list[dict[str, Any]]:
    files = sorted(out.glob(f"w{world}_r{rank}_step*.pt"), key=lambda p: int(p.stem[10:]))
    return [torch.load(f, weights_only=False) for f in files]


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.ddp
def test_every_rank_synthesises_the_same_set_and_takes_the_same_direction(runs: Runs) -> None:
    syn = [_load(runs.out, f"w2_r{r}_synthetic") for r in (0, 1)]
    single = _load(runs.out, "w1_r0_synthetic")
    for key in ("images", "labels", "centres"):
        assert torch.equal(syn[0][key], syn[1][key]), key
        assert torch.allclose(syn[0][key].float(), single[key].float(), atol=1e-6), key
    steps = [_steps(runs.out, 2, r) for r in (0, 1)]
    assert steps[0] and steps[1], f"no step recorded; the 2-process fit raised {runs.error}"
    for s, (a, b) in enumerate(zip(*steps, strict=False)):
        # Every objective's gradient is all-reduced, so rows, weights, direction are bitwise equal.
        for i, name in enumerate(OBJECTIVES):
            assert torch.equal(a["grads"][i], b["grads"][i]), (
                f"step {s}: the {name} gradient differs across ranks (relative difference "
                f"{_rel(a['grads'][i], b['grads'][i]):.2e}): it was not all-reduced"
            )
        assert torch.equal(a["direction"], b["direction"]), f"step {s}: directions differ"
    assert runs.error is None, (
        f"the 2-process fit failed after {len(steps[0])} step(s): {runs.error}"
    )
    assert len(steps[0]) == len(steps[1]) >= 2
    finals = [_load(runs.out, f"w2_r{r}_final") for r in (0, 1)]
    assert finals[0]["steps"] == finals[1]["steps"] == len(steps[0])
    for key, value in finals[0]["state"].items():
        assert torch.equal(value, finals[1]["state"][key]), key


@pytest.mark.ddp
def test_the_ddp_direction_equals_the_single_process_direction(runs: Runs) -> None:
    single, double = _steps(runs.out, 1, 0), _steps(runs.out, 2, 0)
    assert len(single) >= 2 and double
    for s, (a, b) in enumerate(zip(single, double, strict=False)):
        errs = {n: _rel(b["grads"][i], a["grads"][i]) for i, n in enumerate(OBJECTIVES)}
        err = _rel(b["direction"], a["direction"])
        shown = ", ".join(f"{n} {e:.2e}" for n, e in errs.items())
        assert max(errs.values()) < 1e-4 and err < 1e-4, (
            f"step {s}: the 2-process direction is off by {err:.2e} (relative); objective "
            f"gradients off by {shown}"
        )
    assert runs.error is None, f"the 2-process fit failed: {runs.error}"
    assert len(single) == len(double)
    one, two = _load(runs.out, "w1_r0_final"), _load(runs.out, "w2_r0_final")
    assert one["steps"] == two["steps"]
    for key, value in one["state"].items():
        assert torch.allclose(value.float(), two["state"][key].float(), atol=1e-5), key
