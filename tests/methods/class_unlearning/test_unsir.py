"""UNSIR baseline: the error-maximising noise, the retain subset, the callback, real digits."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lit_unlearn.attacks.class_audit import audit_classifier
from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import Digits
from lit_unlearn.methods.class_unlearning.unsir import UNSIR, learn_noise, sample_retain
from lit_unlearn.models.classifiers import SmallCNN
from lit_unlearn.tasks import ClassificationTask

ARGS: dict[str, Any] = dict(accelerator="cpu", logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
# A cheap UNSIR for the mechanics tests (the defaults are tested on real data below).
SMALL: dict[str, Any] = dict(noise_batch=8, noise_steps=3, noise_copies=2, retain_per_class=20)


def _task(seed: int = 0) -> ClassificationTask:
    torch.manual_seed(seed)
    return ClassificationTask(SmallCNN(num_classes=10, channels=[8, 16], hidden=32))


def _fit(task: ClassificationTask, cb: UNSIR, dm: ClassificationData, root: Path) -> None:
    pl.Trainer(max_epochs=0, callbacks=[cb], default_root_dir=root, **ARGS).fit(task, dm)


def test_noise_raises_the_forget_ce_and_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    # Batch norm in front: its running statistics must not move (the model is in eval mode).
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(64, 3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = torch.randn((16, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    target = torch.full((16,), 1)
    model.eval()
    with torch.no_grad():
        ce_start = float(F.cross_entropy(model(start), target))
    model.train()
    gen = torch.Generator().manual_seed(5)
    noise = learn_noise(model, 1, (1, 8, 8), batch=16, steps=25, generator=gen)
    assert noise.shape == (16, 1, 8, 8) and not noise.requires_grad
    model.eval()
    with torch.no_grad():
        ce_noise = float(F.cross_entropy(model(noise), target))
    assert ce_noise > 2 * ce_start + 1, (ce_start, ce_noise)
    # Frozen: same weights and batch-norm statistics, no gradient left, the mode restored.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    model.train()
    learn_noise(model, 1, (1, 8, 8), batch=4, steps=2)
    assert model.training


def test_noise_refuses_a_nan_objective() -> None:
    linear = nn.Linear(64, 3)
    with torch.no_grad():
        linear.weight.fill_(math.nan)
    model = nn.Sequential(nn.Flatten(), linear)
    with pytest.raises(FloatingPointError, match="non-finite noise objective"):
        learn_noise(model, 0, (1, 8, 8), batch=4, steps=3)


def test_sample_retain_takes_per_class_rows_of_the_classes_asked_only() -> None:
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 8)
    rows = sample_retain(labels, [0, 2], 6, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[rows], minlength=3).tolist() == [6, 0, 6]
    assert len(set(rows.tolist())) == 12
    again = sample_retain(labels, [0, 2], 6, torch.Generator().manual_seed(0))
    assert torch.equal(rows, again)
    few = sample_retain(labels, [1], 6, torch.Generator().manual_seed(0))
    assert sorted(few.tolist()) == list(range(10, 15))  # fewer rows than asked: all of them


def test_the_callback_reads_retain_per_class_retain_images_and_no_forget_image(
    tmp_path: Path,
) -> None:
    dm = ClassificationData(Digits(), forget_classes=[3, 5])
    cb, task = UNSIR(**SMALL), _task()
    _fit(task, cb, dm, tmp_path)
    train = dm.dataset("train")
    label_of = dict(zip(train.ids.tolist(), train.labels.tolist(), strict=True))
    assert cb.retain_ids is not None
    labels = torch.tensor([label_of[i] for i in cb.retain_ids.tolist()])
    counts = torch.bincount(labels, minlength=10).tolist()
    assert counts == [20, 20, 20, 0, 20, 0, 20, 20, 20, 20]
    assert len(set(cb.retain_ids.tolist())) == 160
    assert cb.noise is not None and cb.noise_labels is not None
    assert cb.noise.shape == (16, 1, 8, 8) and cb.noise_labels.tolist() == [3] * 8 + [5] * 8
    assert set(cb.noise_ce) == {3, 5} and cb.seconds > 0 and len(cb.epoch_losses) == 2
    assert cb.copies == 2  # noise_copies overrides noise_share
    assert UNSIR.data_needed == ("D_r",)
    assert all(p.grad is None for p in task.parameters())


@pytest.mark.parametrize(
    "bad",
    [{"noise_batch": 0}, {"noise_steps": 0}, {"noise_lr": 0.0}, {"noise_lr": math.nan},
     {"noise_reg": -0.1}, {"noise_copies": 0}, {"retain_per_class": 0}, {"impair_epochs": 0},
     {"impair_lr": -1e-3}, {"repair_epochs": -1}, {"repair_lr": 0.0}, {"batch_size": 0},
     {"repair_batch_size": 0}, {"noise_share": 0.0}, {"noise_share": 1.0}],
)  # fmt: skip
def test_bad_hyperparameters_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        UNSIR(**bad)


def test_repair_can_be_skipped() -> None:
    assert UNSIR(repair_epochs=0).repair_epochs == 0


def test_it_needs_retain_training_data_and_forget_classes(tmp_path: Path) -> None:
    for dm in (
        ClassificationData(Digits(), forget_classes=[3], mode="source_free"),
        ClassificationData(Digits()),
    ):
        with pytest.raises(ValueError, match="retain training data D_r and forget classes"):
            _fit(_task(), UNSIR(**SMALL), dm, tmp_path)


def test_a_nan_model_raises_floating_point_error(tmp_path: Path) -> None:
    task = _task()
    with torch.no_grad():
        task.model.head.bias.fill_(math.nan)
    with pytest.raises(FloatingPointError, match="UNSIR"):
        _fit(task, UNSIR(**SMALL), ClassificationData(Digits(), forget_classes=[3]), tmp_path)


def test_the_same_seed_gives_the_same_weights(tmp_path: Path) -> None:
    dm = ClassificationData(Digits(), forget_classes=[3])
    states = []
    for seed in (0, 0, 1):
        task = _task()
        rng = torch.random.get_rng_state()
        _fit(task, UNSIR(**SMALL, seed=seed), dm, tmp_path)
        assert torch.equal(rng, torch.random.get_rng_state())  # the global RNG is not drawn
        states.append(task.model.state_dict())
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())
    assert not all(torch.equal(v, states[2][k]) for k, v in states[0].items())
    assert not torch.equal(states[0]["head.weight"], _task().model.state_dict()["head.weight"])


def test_unsir_forgets_digit_3_and_keeps_the_rest(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = ClassificationTask(SmallCNN(num_classes=10))
    trainer = pl.Trainer(max_epochs=10, default_root_dir=tmp_path, **ARGS)
    trainer.fit(original, ClassificationData(Digits()))
    trainer.save_checkpoint(tmp_path / "o.ckpt")
    dm = ClassificationData(Digits(), forget_classes=[3])
    original.attach_data(dm)  # audited with C_f = {3}
    before, _ = audit_classifier(original, dm)
    assert before["A_f"] >= 0.9 and before["MIA"] >= 0.5, before  # there is something to forget
    task = ClassificationTask(SmallCNN(num_classes=10))
    cb = UNSIR(str(tmp_path / "o.ckpt"))
    _fit(task, cb, dm, tmp_path)
    after, _ = audit_classifier(task, dm)
    # Measured on this 10-epoch original (torch seeds 0 / 1 / 2): A_f 0, A_r 98.8 / 96.0 /
    # 95.7%, MIA 6 / 5 / 8% (original A_f 97-100%, MIA 82-93%). The same impair / repair without
    # the noise keeps A_f at 81-92%, the SSD repository's lr 1e-4 at 100%; Tarun et al.'s 0.02 /
    # 0.01 forget but leave A_r at 12-43%.
    assert after["A_f"] <= 0.05 and after["A_r"] >= 0.94, after
    assert after["MIA"] <= 0.3, after
    assert cb.noise_ce[3] > 10 and cb.seconds > 0
    assert cb.retain_ids is not None  # noise_share 0.33: the noise is a third of the impair set
    assert cb.copies == round(0.33 / 0.67 * len(cb.retain_ids) / 32) >= 15


# ------------------------------------------------------------------ DDP (2 CPU processes)
class _SaveWeights(pl.Callback):
    def __init__(self, out: str, cb: UNSIR) -> None:
        self.out, self.cb = out, cb

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
        record = {"state": state, "noise": self.cb.noise, "ids": self.cb.retain_ids}
        torch.save(record, Path(self.out) / f"w{trainer.world_size}_r{rank}.pt")


def _unlearn(devices: int, out: Path) -> None:
    task = _task()
    cb = UNSIR(**SMALL)
    pl.Trainer(
        max_epochs=0, devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
        callbacks=[cb, _SaveWeights(str(out), cb)], default_root_dir=out, **ARGS,
    ).fit(task, ClassificationData(Digits(), forget_classes=[3]))  # fmt: skip


@pytest.mark.ddp
def test_every_rank_ends_with_the_single_process_weights(tmp_path: Path) -> None:
    _unlearn(1, tmp_path)
    _unlearn(2, tmp_path)
    one, *two = (torch.load(tmp_path / f"{n}.pt", weights_only=False)
                 for n in ("w1_r0", "w2_r0", "w2_r1"))  # fmt: skip
    for rank in two:
        assert torch.equal(rank["noise"], one["noise"]) and torch.equal(rank["ids"], one["ids"])
        for key, value in one["state"].items():
            assert torch.allclose(rank["state"][key].float(), value.float(), atol=1e-6), key
