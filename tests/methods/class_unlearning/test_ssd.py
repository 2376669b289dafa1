"""SSD baseline: the Fisher diagonal, the dampening rule, and forgetting on real digits."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_unlearn.attacks.class_audit import audit_classifier
from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import Digits
from lit_unlearn.methods.class_unlearning.ssd import SSD, dampen, fisher_diagonal
from lit_unlearn.models.classifiers import SmallCNN
from lit_unlearn.tasks import ClassificationTask


def test_dampen_selects_and_scales_by_the_rule() -> None:
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    imp_d = {"weight": torch.tensor([[1.0, 1.0], [1.0, 0.0]])}
    imp_f = {"weight": torch.tensor([[20.0, 5.0], [11.0, 0.0]])}
    frac = dampen(model, imp_d, imp_f, alpha=10.0, lam=1.0)
    # [0,0]: 20 > 10 -> beta 1/20; [0,1]: 5 < 10 kept; [1,0]: 11 > 10 -> 1/11; [1,1]: 0, kept.
    want = torch.tensor([[2.0 / 20, 2.0], [2.0 / 11, 2.0]])
    assert torch.allclose(model.weight, want) and frac == 0.5


def test_fisher_diagonal_is_the_mean_squared_batch_gradient() -> None:
    torch.manual_seed(0)
    task = ClassificationTask(SmallCNN(num_classes=3))
    task.set_input_stats(torch.zeros(1), torch.ones(1))
    batches = [{"image": torch.rand(4, 1, 8, 8), "label": torch.tensor([0, 1, 2, 0])}
               for _ in range(2)]  # fmt: skip
    fisher = fisher_diagonal(task, batches)
    task.model.eval()
    w = task.model.head.weight
    sq = []
    for b in batches:
        (g,) = torch.autograd.grad(F.cross_entropy(task(b["image"]), b["label"]), [w])
        sq.append(g**2)
    assert torch.allclose(fisher["head.weight"], (sq[0] + sq[1]) / 2, atol=1e-7)
    assert all(p.grad is None for p in task.model.parameters())
    with pytest.raises(ValueError, match="no batch"):
        fisher_diagonal(task, [])


def test_ssd_forgets_digit_3_and_keeps_the_rest(tmp_path: Path) -> None:
    torch.manual_seed(0)
    args: dict = dict(accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=tmp_path)  # fmt: skip
    original = ClassificationTask(SmallCNN(num_classes=10))
    trainer = pl.Trainer(max_epochs=10, **args)
    trainer.fit(original, ClassificationData(Digits()))
    trainer.save_checkpoint(tmp_path / "o.ckpt")
    dm = ClassificationData(Digits(), forget_classes=[3])
    # SSD is very sensitive to alpha (the selection threshold): sweep it as a tuned baseline.
    outcomes = []
    for alpha in (10.0, 30.0, 100.0, 300.0):
        task = ClassificationTask(SmallCNN(num_classes=10))
        cb = SSD(str(tmp_path / "o.ckpt"), alpha=alpha)
        pl.Trainer(max_epochs=0, callbacks=[cb], **args).fit(task, dm)
        result, _ = audit_classifier(task, dm)
        outcomes.append((cb.selected_fraction, result["A_f"], result["A_r"]))
        assert cb.seconds > 0
    fractions = [o[0] for o in outcomes]
    assert fractions == sorted(fractions, reverse=True) and fractions[-1] < fractions[0]
    # The trade-off alpha controls: a low threshold erases the class (and, on this 10-epoch
    # model, much of the rest: no alpha of the grid keeps both), a high one keeps everything.
    assert outcomes[0][1] == 0.0 and outcomes[-1][2] >= 0.95, outcomes
    assert outcomes[-1][1] > outcomes[0][1]
    with pytest.raises(ValueError, match="D and D_f"):
        pl.Trainer(max_epochs=0, callbacks=[SSD(str(tmp_path / "o.ckpt"))], **args).fit(
            ClassificationTask(SmallCNN(num_classes=10)),
            ClassificationData(Digits(), forget_classes=[3], mode="source_free"),
        )
