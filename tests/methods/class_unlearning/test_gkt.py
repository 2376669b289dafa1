"""GKT baseline: attention maps, the gate, the generator's range, the student reset, determinism,
and zero-shot forgetting of a digit without reading a training image."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lit_unlearn.attacks.class_audit import audit_classifier
from lit_unlearn.datamodules import ClassificationData
from lit_unlearn.datamodules.images import Digits, ImageSet, Split
from lit_unlearn.methods.class_unlearning.gkt import (
    GKT,
    ActivationRecorder,
    Generator,
    attention_loss,
    attention_map,
    default_attention_layers,
    forget_gate,
    kl_divergence,
    reinitialise,
)
from lit_unlearn.models.classifiers import CifarResNet18, SmallCNN, VisionTransformer
from lit_unlearn.tasks import ClassificationTask

# Tiny settings for the unit tests (the real-data test uses its own budget).
TINY: dict = dict(
    pseudo_batches=2, batch_size=16, generator_width=8, student_steps=2, threshold=0.3
)


class SplitGuardDigits(Digits):
    """Digits that fail loudly if anything asks for the training split."""

    def load(self, split: Split) -> ImageSet:
        if split != "test":
            raise AssertionError(f"source-free unlearning read the {split} split")
        return super().load(split)


def _trainer(tmp_path: Path, **kw: object) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _task(forget: list[int] | None = None, seed: int = 0) -> ClassificationTask:
    torch.manual_seed(seed)
    task = ClassificationTask(SmallCNN(num_classes=4))
    task.set_input_stats(torch.tensor([0.3]), torch.tensor([0.4]))
    task.forget_classes = [1] if forget is None else forget
    return task


# ---------------------------------------------------------------------- attention transfer
def test_attention_map_closed_form_and_normalisation() -> None:
    # Two channels of a 1x2 map: mean of squares = [(1 + 9) / 2, (4 + 16) / 2] = [5, 10].
    x = torch.tensor([[[[1.0, 2.0]], [[3.0, -4.0]]]])
    want = torch.tensor([[5.0, 10.0]]) / math.sqrt(125.0)
    assert torch.allclose(attention_map(x), want)
    a = attention_map(torch.randn(3, 5, 4, 4))
    assert a.shape == (3, 16) and torch.allclose(a.norm(dim=1), torch.ones(3))
    # Scale-free, sign-free; an all-zero map stays zero (no NaN).
    y = torch.randn(2, 3, 4, 4)
    assert torch.allclose(attention_map(-3 * y), attention_map(y), atol=1e-6)
    assert torch.equal(attention_map(torch.zeros(1, 2, 3, 3)), torch.zeros(1, 9))
    with pytest.raises(ValueError, match="B, C, H, W"):
        attention_map(torch.randn(2, 8))


def test_attention_loss_sums_layer_mean_squared_differences() -> None:
    s = [torch.tensor([[[[1.0, 0.0]]]]), torch.randn(2, 3, 2, 2)]
    t = [torch.tensor([[[[0.0, 1.0]]]]), s[1].clone()]
    # Layer 1: maps [1, 0] vs [0, 1] -> mean((1, -1)^2) = 1; layer 2 identical -> 0.
    assert torch.allclose(attention_loss(s, t), torch.tensor(1.0))
    with pytest.raises(ValueError, match="as many"):
        attention_loss(s, t[:1])


def test_kl_is_forward_kl_teacher_to_student() -> None:
    t, s = torch.randn(5, 4), torch.randn(5, 4)
    p, q = torch.softmax(t, 1), torch.softmax(s, 1)
    per = (p * (p.log() - q.log())).sum(1)
    assert torch.allclose(kl_divergence(s, t, reduction="batchmean"), per.mean(), atol=1e-6)
    assert torch.allclose(kl_divergence(s, t), per.mean() / 4, atol=1e-6)  # authors' mean
    assert torch.allclose(
        kl_divergence(s, t, temperature=2.0, reduction="batchmean"),
        (torch.softmax(t / 2, 1) * (torch.log_softmax(t / 2, 1) - torch.log_softmax(s / 2, 1)))
        .sum(1)
        .mean(),
        atol=1e-6,
    )
    assert float(kl_divergence(t, t)) == pytest.approx(0.0, abs=1e-7)


def test_default_attention_layers_per_backbone() -> None:
    assert default_attention_layers(SmallCNN(), (1, 8, 8)) == ["conv.2", "conv.6"]
    assert default_attention_layers(SmallCNN(image_size=28), (1, 28, 28)) == ["conv.2", "conv.6"]
    resnet = CifarResNet18(width=4)
    assert default_attention_layers(resnet, (3, 16, 16)) == ["layer1", "layer2", "layer3", "layer4"]
    vit = VisionTransformer(image_size=8, patch_size=4, dim=12, depth=1, heads=2)
    assert default_attention_layers(vit, (3, 8, 8)) == []  # no spatial maps: KL only
    assert resnet.training  # the probe restores the mode
    rec = ActivationRecorder(resnet, ["layer2"])
    resnet(torch.randn(2, 3, 16, 16))
    assert [m.shape for m in rec.maps()] == [torch.Size([2, 8, 8, 8])]
    rec.remove()
    with pytest.raises(ValueError, match="not sub-modules"):
        ActivationRecorder(resnet, ["layer9"])


# ---------------------------------------------------------------------- the gate
def test_gate_keeps_exactly_the_samples_below_threshold_on_every_forget_class() -> None:
    probs = torch.tensor([
        [0.970, 0.005, 0.005, 0.020],  # both forget classes (1, 2) low: kept
        [0.970, 0.020, 0.005, 0.005],  # class 1 too likely: dropped
        [0.970, 0.005, 0.020, 0.005],  # class 2 too likely: dropped
        [0.100, 0.000, 0.000, 0.900],  # kept
        [0.000, 0.500, 0.500, 0.000],  # dropped
    ])  # fmt: skip
    logits = probs.clamp_min(1e-12).log() + 3.0  # softmax is shift invariant
    mask = forget_gate(logits, torch.tensor([1, 2]), 0.01)
    assert mask.tolist() == [True, False, False, True, False]
    # Equals the rule computed by hand on random logits, for one and two forget classes.
    logits = torch.randn(200, 5) * 4
    p = torch.softmax(logits, 1)
    for forget in ([0], [1, 3]):
        want = (p[:, forget] <= 0.05).all(1)
        assert torch.equal(forget_gate(logits, torch.tensor(forget), 0.05), want)
    assert bool(forget_gate(logits, torch.tensor([0]), 1.0).all())  # threshold 1: no gate


# ---------------------------------------------------------------------- the generator
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 10, 14)])
def test_generator_stays_inside_the_valid_normalised_range(shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    c = shape[0]
    mean, std = torch.linspace(0.2, 0.5, c), torch.linspace(0.2, 0.3, c)
    low, high = (0 - mean) / std, (1 - mean) / std
    gen = Generator(shape, low, high, z_dim=16, width=8)
    for scale in (1.0, 100.0):  # saturating latents stay in range too
        x = gen(torch.randn(32, 16) * scale)
        assert x.shape == (32, *shape)
        lo, hi = x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3))
        assert bool((lo >= low - 1e-5).all()) and bool((hi <= high + 1e-5).all())
        raw = x * std[:, None, None] + mean[:, None, None]  # back to [0, 1] pixels
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    assert x.std() > 0  # not a constant image
    with pytest.raises(ValueError, match="low < high"):
        Generator(shape, high, low)


# ---------------------------------------------------------------------- the method
def test_gkt_resets_the_student_and_leaves_the_teacher_untouched() -> None:
    task = _task()
    original = copy.deepcopy(task.state_dict())
    cb = GKT(**TINY)
    cb.unlearn(task, (1, 8, 8))
    assert cb.teacher is not None and not cb.teacher.training
    for name, value in cb.teacher.state_dict().items():
        assert torch.equal(value, original[f"model.{name}"]), name
    assert not any(p.requires_grad for p in cb.teacher.parameters())
    # Every student weight was re-initialised and then trained; normalisation is kept.
    for name, p in task.model.named_parameters():
        assert not torch.equal(p, original[f"model.{name}"]), name
    assert torch.equal(task.input_mean, original["input_mean"])
    assert torch.equal(task.input_std, original["input_std"])
    assert all(p.grad is None for p in task.model.parameters())
    assert cb.seconds > 0 and 0 < cb.gate_fraction <= 1
    assert cb.layers == ["conv.2", "conv.6"] and math.isfinite(cb.final_student_loss)


@pytest.mark.parametrize(
    "model",
    [
        SmallCNN(num_classes=3),
        CifarResNet18(num_classes=3, in_channels=1, width=4),
        VisionTransformer(
            num_classes=3, in_channels=1, image_size=8, patch_size=4, dim=12, depth=1, heads=2
        ),
    ],
)
def test_reinitialise_changes_every_parameter(model: nn.Module) -> None:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.123)  # as if trained
    torch.manual_seed(1)
    reinitialise(model)
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    changed = [n for n in after if not torch.equal(after[n], torch.full_like(after[n], 0.123))]
    assert sorted(changed) == sorted(after)
    torch.manual_seed(1)
    reinitialise(model)
    assert all(torch.equal(p, after[n]) for n, p in model.named_parameters())  # seeded
    assert before.keys() == after.keys()


def test_same_seed_same_student_other_seed_another() -> None:
    states = []
    for seed in (3, 3, 4):
        task = _task()
        rng = torch.get_rng_state()
        GKT(seed=seed, **TINY).unlearn(task, (1, 8, 8))
        assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
        states.append(task.state_dict())
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())
    assert any(not torch.equal(v, states[2][k]) for k, v in states[0].items())


def test_gkt_runs_on_a_resnet_with_attention_on_its_stages() -> None:
    torch.manual_seed(0)
    task = ClassificationTask(CifarResNet18(num_classes=3, width=4))
    task.set_input_stats(torch.full((3,), 0.5), torch.full((3,), 0.25))
    task.forget_classes = [0]
    cb = GKT(**{**TINY, "threshold": 1.0})  # no gate: an untrained teacher filters nothing
    cb.unlearn(task, (3, 8, 8))
    assert cb.layers == ["layer1", "layer2", "layer3", "layer4"] and cb.gate_fraction == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pseudo_batches": 0}, {"batch_size": 0}, {"z_dim": 0}, {"student_steps": 0},
        {"generator_width": 1}, {"max_empty": 0}, {"pseudo_batches": 2.5},
        {"generator_lr": 0.0}, {"student_lr": -1e-3}, {"temperature": 0.0},
        {"clip": float("inf")}, {"beta": -1.0}, {"beta": float("nan")},
        {"threshold": -0.1}, {"threshold": 1.5}, {"kl_reduction": "sum"},
        {"attention_layers": "conv"}, {"attention_layers": [""]},
    ],
)  # fmt: skip
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GKT(**kwargs)


def test_refuses_missing_forget_classes_bad_layers_and_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="forget classes"):
        GKT(**TINY).unlearn(_task(forget=[]), (1, 8, 8))
    with pytest.raises(ValueError, match="not sub-modules"):
        GKT(attention_layers=["nope"], **TINY).unlearn(_task(), (1, 8, 8))
    with pytest.raises(ValueError, match="not \\[B, C, H, W\\]"):
        GKT(attention_layers=["fc"], **TINY).unlearn(_task(), (1, 8, 8))
    task = _task()
    with torch.no_grad():
        task.model.head.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="teacher output"):
        GKT(**TINY).unlearn(task, (1, 8, 8))
    # A teacher that is sure of the forget class everywhere: the gate never opens.
    task = _task(forget=[0])
    with torch.no_grad():
        task.model.head.weight.zero_()
        task.model.head.bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
    with pytest.raises(RuntimeError, match="gate removed every pseudo-sample"):
        GKT(max_empty=3, **TINY).unlearn(task, (1, 8, 8))
    with pytest.raises(ValueError, match="forget classes"):
        _trainer(tmp_path, max_epochs=0, callbacks=[GKT(**TINY)]).fit(
            ClassificationTask(SmallCNN(num_classes=10)),
            ClassificationData(SplitGuardDigits(), mode="source_free"),
        )


# ---------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("orig")
    torch.manual_seed(0)
    task = ClassificationTask(SmallCNN(num_classes=10))
    trainer = _trainer(tmp, max_epochs=10)
    trainer.fit(task, ClassificationData(Digits()))
    path = tmp / "original.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_gkt_forgets_digit_3_source_free(original: Path, tmp_path: Path) -> None:
    dm = ClassificationData(SplitGuardDigits(), forget_classes=[3], mode="source_free")
    task = ClassificationTask(SmallCNN(num_classes=10))
    cb = GKT(str(original), pseudo_batches=12, batch_size=128, generator_width=16, seed=0)
    _trainer(tmp_path, max_epochs=0, callbacks=[cb]).fit(task, dm)
    assert dm.dataset("synthetic").images.shape[1:] == (1, 8, 8)  # the last gated batch
    full = ClassificationData(Digits(), forget_classes=[3])  # evaluation only, after the fact
    full.load()
    task.attach_data(full)
    result, _ = audit_classifier(task, full, mia=False)
    # Measured: A_f 0, A_r 0.82 / 0.76 / 0.81 (seeds 0 / 1 / 2). A no-op keeps A_f ~1;
    # a broken student (never trained from its fresh init) sits near chance (1/9 on C_r).
    assert result["A_f"] <= 0.05, result
    assert result["A_r"] >= 0.6, result
    assert 0.3 < cb.gate_fraction < 1.0 and cb.seconds > 0
