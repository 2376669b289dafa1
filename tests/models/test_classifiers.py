"""Tests of the image classifier backbones in :mod:`lit_unlearn.models.classifiers`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lit_unlearn.models.classifiers import (
    CifarResNet18,
    Classifier,
    SmallCNN,
    VisionTransformer,
)
from lit_unlearn.models.classifiers.resnet import BasicBlock
from lit_unlearn.models.classifiers.vit import TransformerBlock

# Small widths keep every test well under a second on one CPU thread; the default sizes are
# tested where the test is about them (parameter count, default shapes).
Factory = Callable[[], Classifier]

BACKBONES: dict[str, Factory] = {
    "resnet": lambda: CifarResNet18(num_classes=5, in_channels=3, width=4, image_size=16),
    "cnn-8": lambda: SmallCNN(num_classes=5, image_size=8, channels=[4, 8], hidden=16),
    "cnn-28": lambda: SmallCNN(num_classes=5, image_size=28, channels=[4, 8], hidden=16),
    "vit": lambda: VisionTransformer(
        num_classes=5, image_size=16, patch_size=4, dim=16, depth=2, heads=2, dropout=0.1
    ),
}
FEATURE_DIM = {"resnet": 32, "cnn-8": 16, "cnn-28": 16, "vit": 16}


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    # Tiny tensors: intra-op threads only add contention on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=list(BACKBONES))
def backbone(request: pytest.FixtureRequest) -> tuple[str, Classifier]:
    torch.manual_seed(0)
    return request.param, BACKBONES[request.param]()


def batch(model: Classifier, size: int = 3, seed: int = 0) -> torch.Tensor:
    """A random image batch of the shape ``model`` expects."""
    side = model.image_size or 16
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(size, model.in_channels, side, side, generator=gen)


def _block(stage: torch.nn.Sequential, index: int) -> BasicBlock:
    """Block ``index`` of a ResNet stage, typed."""
    block = stage[index]
    assert isinstance(block, BasicBlock)
    return block


# ---------------------------------------------------------------------------- shapes
def test_interface_attributes(backbone: tuple[str, Classifier]) -> None:
    name, model = backbone
    assert isinstance(model, Classifier)
    assert model.num_classes == 5
    assert model.in_channels == (3 if name in ("resnet", "vit") else 1)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 5
    assert model.feature_dim == FEATURE_DIM[name]


def test_forward_and_feature_shapes(backbone: tuple[str, Classifier]) -> None:
    name, model = backbone
    x = batch(model, size=3)
    assert model.features(x).shape == (3, FEATURE_DIM[name])
    assert model(x).shape == (3, 5)
    assert model(x[:1]).shape == (1, 5)  # a single-image batch also works in train mode


def test_forward_is_head_of_features(backbone: tuple[str, Classifier]) -> None:
    _, model = backbone
    model.eval()
    x = batch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.features(x)))


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 3, 28, 28), (2, 3, 8, 8), (2, 3, 17, 23)])
def test_resnet_takes_any_size(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(0)
    model = CifarResNet18(num_classes=10, width=4)
    assert model.image_size is None
    model.check_input(shape)
    assert model(torch.randn(shape)).shape == (2, 10)


def test_resnet18_default_size_and_parameter_count() -> None:
    torch.manual_seed(0)
    model = CifarResNet18()
    n_params = sum(p.numel() for p in model.parameters())
    assert 11.1e6 < n_params < 11.3e6  # 11,173,962: the CIFAR ResNet-18 every paper reports
    assert model.feature_dim == 512
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_width_scales_stages() -> None:
    model = CifarResNet18(width=8, in_channels=1, num_classes=3)
    assert model.feature_dim == 64
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 8
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [_block(stage, 0).conv1.out_channels for stage in stages] == [8, 16, 32, 64]


def test_resnet_shortcuts_only_on_shape_change() -> None:
    model = CifarResNet18(width=4)
    # stage 1 keeps 4 channels at stride 1: identity shortcuts; stages 2-4 project their first.
    assert isinstance(_block(model.layer1, 0).shortcut, torch.nn.Identity)
    for stage in (model.layer2, model.layer3, model.layer4):
        assert isinstance(_block(stage, 0).shortcut, torch.nn.Sequential)
        assert isinstance(_block(stage, 1).shortcut, torch.nn.Identity)


@pytest.mark.parametrize(("image_size", "pools", "side"), [(8, 1, 4), (28, 2, 7), (32, 2, 8)])
def test_small_cnn_pooling_follows_image_size(image_size: int, pools: int, side: int) -> None:
    model = SmallCNN(image_size=image_size)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == pools
    assert model.output_side == side
    assert model.fc[1].in_features == 64 * side * side
    assert model.feature_dim == 128
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, image_size, image_size)).shape == (2, 10)


def test_small_cnn_three_blocks_on_mnist() -> None:
    # 28 -> 14 -> 7, and 7 < 8 so the third block is not pooled.
    model = SmallCNN(image_size=28, channels=[4, 4, 4], hidden=8)
    assert model.output_side == 7
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_vit_default_size() -> None:
    torch.manual_seed(0)
    model = VisionTransformer()
    assert model.num_patches == 64
    assert model.pos_embed.shape == (1, 65, 192)
    assert model.feature_dim == 192
    assert len(model.blocks) == 6
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("name", list(BACKBONES))
def test_check_input_refuses_wrong_channels(name: str) -> None:
    model = BACKBONES[name]()
    side = model.image_size or 16
    bad = (2, model.in_channels + 1, side, side)
    with pytest.raises(ValueError, match=f"set in_channels={model.in_channels + 1}"):
        model.check_input(bad)
    with pytest.raises(ValueError, match="in_channels"):
        model(torch.randn(bad))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_check_input_refuses_wrong_size(name: str) -> None:
    model = BACKBONES[name]()
    assert model.image_size is not None
    side = model.image_size + 4
    with pytest.raises(ValueError, match=f"set image_size={side}"):
        model.check_input((2, model.in_channels, side, side))
    with pytest.raises(ValueError, match="square"):
        model.check_input((2, model.in_channels, model.image_size, side))
    # forward says the same instead of failing deep inside a Linear or a broadcast
    with pytest.raises(ValueError, match=f"set image_size={side}"):
        model(torch.randn(2, model.in_channels, side, side))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_features_refuse_unbatched_images(name: str) -> None:
    model = BACKBONES[name]()
    side = model.image_size or 16
    model.check_input((model.in_channels, side, side))  # one image's shape is a valid query
    with pytest.raises(ValueError, match=r"batch \[B, C, H, W\]"):
        model.features(torch.randn(model.in_channels, side, side))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model.check_input((side, side))


# ---------------------------------------------------------------------------- validation
BAD_ARGS: list[tuple[type[Classifier], dict[str, Any], str]] = [
    (CifarResNet18, {"num_classes": 0}, "num_classes must be a positive int"),
    (CifarResNet18, {"in_channels": -1}, "in_channels must be a positive int"),
    (CifarResNet18, {"width": 0}, "width must be a positive int"),
    (CifarResNet18, {"width": 4.0}, "width must be a positive int"),
    (CifarResNet18, {"image_size": 0}, "image_size must be a positive int"),
    (CifarResNet18, {"num_classes": True}, "num_classes must be a positive int"),
    (SmallCNN, {"num_classes": 0}, "num_classes must be a positive int"),
    (SmallCNN, {"in_channels": 0}, "in_channels must be a positive int"),
    (SmallCNN, {"image_size": 0}, "image_size must be a positive int"),
    (SmallCNN, {"hidden": 0}, "hidden must be a positive int"),
    (SmallCNN, {"channels": []}, "at least one conv block"),
    (SmallCNN, {"channels": [32, 0]}, r"channels\[1\] must be a positive int"),
    (SmallCNN, {"channels": 32}, "channels must be a list"),
    (SmallCNN, {"dropout": 1.0}, r"dropout must be a float in \[0, 1\)"),
    (SmallCNN, {"dropout": -0.1}, r"dropout must be a float in \[0, 1\)"),
    (SmallCNN, {"dropout": float("nan")}, r"dropout must be a float in \[0, 1\)"),
    (SmallCNN, {"dropout": "0.5"}, r"dropout must be a float in \[0, 1\)"),
    (VisionTransformer, {"num_classes": 0}, "num_classes must be a positive int"),
    (VisionTransformer, {"in_channels": 0}, "in_channels must be a positive int"),
    (VisionTransformer, {"image_size": 0}, "image_size must be a positive int"),
    (VisionTransformer, {"patch_size": 0}, "patch_size must be a positive int"),
    (VisionTransformer, {"dim": 0}, "dim must be a positive int"),
    (VisionTransformer, {"depth": 0}, "depth must be a positive int"),
    (VisionTransformer, {"heads": 0}, "heads must be a positive int"),
    (
        VisionTransformer,
        {"patch_size": 5},
        r"patch_size=5 does not divide image_size=32: set patch_size to one of "
        r"\[1, 2, 4, 8, 16, 32\]",
    ),
    (VisionTransformer, {"patch_size": 64}, "patch_size=64 does not divide image_size=32"),
    (VisionTransformer, {"dim": 100}, "heads=3 does not divide dim=100: set dim"),
    (VisionTransformer, {"mlp_ratio": 0.0}, "mlp_ratio must be a positive finite float"),
    (VisionTransformer, {"mlp_ratio": -1.0}, "mlp_ratio must be a positive finite float"),
    (VisionTransformer, {"mlp_ratio": float("inf")}, "mlp_ratio must be a positive finite"),
    (VisionTransformer, {"mlp_ratio": "4"}, "mlp_ratio must be a positive float"),
    (VisionTransformer, {"dropout": 1.5}, r"dropout must be a float in \[0, 1\)"),
]


@pytest.mark.parametrize(("cls", "kwargs", "match"), BAD_ARGS)
def test_constructor_validation(cls: type[Classifier], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_constructors_store_their_arguments() -> None:
    cnn = SmallCNN(channels=[8], hidden=32, dropout=0)
    assert cnn.channels == [8] and cnn.hidden == 32 and cnn.dropout == 0.0
    assert isinstance(cnn.dropout, float)
    vit = VisionTransformer(image_size=8, patch_size=2, dim=8, depth=1, heads=4, mlp_ratio=2)
    assert (vit.patch_size, vit.dim, vit.depth, vit.heads, vit.mlp_ratio) == (2, 8, 1, 4, 2.0)
    block = vit.blocks[0]
    assert isinstance(block, TransformerBlock)
    first = block.mlp[0]
    assert isinstance(first, torch.nn.Linear) and first.out_features == 16
    assert CifarResNet18(image_size=32).image_size == 32


# ---------------------------------------------------------------------------- autograd
def test_gradients_reach_every_parameter(backbone: tuple[str, Classifier]) -> None:
    name, model = backbone
    model.train()
    x, y = batch(model, size=4), torch.tensor([0, 1, 2, 3])
    F.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


def test_vit_supports_double_backward() -> None:
    # Hessian-vector products (influence-style unlearning) need second derivatives through
    # attention; the fused CPU attention kernel has none.
    torch.manual_seed(0)
    model = BACKBONES["vit"]().eval()
    x = batch(model, size=2)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1]))
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    hvp = torch.autograd.grad(torch.stack([g.sum() for g in grads]).sum(), params)
    assert all(torch.isfinite(h).all() for h in hvp)


# ---------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", list(BACKBONES))
def test_same_seed_same_model(name: str) -> None:
    torch.manual_seed(123)
    a = BACKBONES[name]()
    torch.manual_seed(123)
    b = BACKBONES[name]()
    torch.manual_seed(124)
    c = BACKBONES[name]()
    sb = b.state_dict()
    for key, value in a.state_dict().items():
        assert torch.equal(value, sb[key]), f"{name}: {key} differs under the same seed"
    pairs = zip(a.parameters(), c.parameters(), strict=True)
    assert any(not torch.equal(pa, pc) for pa, pc in pairs)
    x = batch(a)
    a.eval()
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_eval_mode_is_deterministic(backbone: tuple[str, Classifier]) -> None:
    _, model = backbone
    model.eval()
    x = batch(model)
    with torch.no_grad():
        first = model(x)
        torch.testing.assert_close(model(x), first, rtol=0, atol=0)
        torch.testing.assert_close(model(x[:1]), first[:1])  # no batch interaction in eval


@pytest.mark.parametrize("name", ["cnn-8", "vit"])
def test_dropout_only_in_train_mode(name: str) -> None:
    torch.manual_seed(0)
    model = BACKBONES[name]()
    x = batch(model)
    model.train()
    torch.manual_seed(1)
    a = model.features(x)
    torch.manual_seed(2)
    b = model.features(x)
    assert not torch.equal(a, b)
    torch.manual_seed(1)
    torch.testing.assert_close(model.features(x), a)  # same seed, same dropout mask


def test_state_dict_round_trip(backbone: tuple[str, Classifier]) -> None:
    name, model = backbone
    torch.manual_seed(99)
    other = BACKBONES[name]()
    other.load_state_dict(copy.deepcopy(model.state_dict()))
    model.eval()
    other.eval()
    x = batch(model)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x))


# ---------------------------------------------------------------------------- learning
def test_small_cnn_overfits_64_digits() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = torch.tensor(digits.data[:64], dtype=torch.float32) / 16
    x = ((x - x.mean()) / x.std()).view(-1, 1, 8, 8)
    y = torch.tensor(digits.target[:64])
    torch.manual_seed(0)
    model = SmallCNN(image_size=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9


# ---------------------------------------------------------------------------- CLI schema
@pytest.mark.parametrize(
    ("cls", "args", "attr", "expected"),
    [
        (SmallCNN, ["--model.channels=[8, 16]", "--model.image_size=28"], "channels", [8, 16]),
        (CifarResNet18, ["--model.width=8", "--model.image_size=32"], "image_size", 32),
        (VisionTransformer, ["--model.dim=32", "--model.heads=4", "--model.depth=1"], "dim", 32),
    ],
)
def test_constructor_signature_is_a_cli_schema(
    cls: type[Classifier], args: list[str], attr: str, expected: object
) -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(cls, "model")
    model = parser.instantiate_classes(parser.parse_args(args)).model
    assert isinstance(model, cls)
    assert getattr(model, attr) == expected
