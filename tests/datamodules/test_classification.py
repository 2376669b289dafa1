"""ClassificationData: forget classes, retain / forget views, loaders, sharding, source-free mode.

Most tests use :class:`ToySource`, an in-memory :class:`ImageSource` of a few 3x4x4 images per
class that records every split it is asked for; the CIFAR-10 tests write tiny batches in the
official pickle format (``tests/datamodules/cifar_files.py``). Nothing touches the network.
"""

from __future__ import annotations

import builtins
import io
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from lit_unlearn.datamodules import download as dl
from lit_unlearn.datamodules.classification import (
    ClassificationData,
    ClassSubset,
    EvalPart,
    check_same_classes,
    resolve_classes,
)
from lit_unlearn.datamodules.download import DownloadError
from lit_unlearn.datamodules.images import CIFAR10, Digits, ImageSet, ImageSource, Split
from lit_unlearn.datamodules.loaders import TensorBatchLoader
from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.datamodules.sources.base import DataNotFoundError
from lit_unlearn.metrics.classification import ClassAccuracy
from lit_unlearn.models.classifiers.cnn import SmallCNN
from lit_unlearn.tasks.classification import ClassificationTask
from tests.datamodules.cifar_files import CIFAR10_ALL_NAMES, write_cifar10

NAMES = ("ant", "bee", "cat", "dog")
TRAIN_COUNTS = (6, 8, 10, 12)  # unbalanced on purpose: stratification and pooled stats
TEST_COUNTS = (3, 4, 3, 5)
CIFAR_NAMES = tuple(n.decode() for n in CIFAR10_ALL_NAMES)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


# ---------------------------------------------------------------------------------------------
# An in-memory source
# ---------------------------------------------------------------------------------------------


def make_set(
    counts: tuple[int, ...],
    names: tuple[str, ...] = NAMES,
    dtype: torch.dtype = torch.uint8,
    seed: int = 0,
    id_start: int = 1000,
) -> ImageSet:
    """``counts[c]`` images of class ``c`` in a seeded shuffled order; class ``c`` is brighter
    the larger ``c`` (so per-class statistics differ); ids are ``id_start + 3 * row`` (never the
    row position)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    n = len(labels)
    base = torch.randint(0, 64, (n, 3, 4, 4), generator=g) + 48 * labels[:, None, None, None]
    images = base.to(torch.uint8) if dtype == torch.uint8 else (base.float() / 255.0)
    ids = id_start + 3 * torch.arange(n, dtype=torch.int64)
    return ImageSet(images, labels, names, ids)


class ToySource(ImageSource):
    """Serves fixed image sets and records every ``load(split)`` call (a spy)."""

    name = "toy"

    def __init__(self, train: ImageSet | None = None, test: ImageSet | None = None) -> None:
        self.sets = {
            "train": make_set(TRAIN_COUNTS, seed=1) if train is None else train,
            "test": make_set(TEST_COUNTS, seed=2, id_start=0) if test is None else test,
        }
        self.calls: list[str] = []

    def load(self, split: Split) -> ImageSet:
        self.calls.append(split)
        return self.sets[split]


def dm_for(source: ImageSource | None = None, **kwargs: Any) -> ClassificationData:
    dm = ClassificationData(source or ToySource(), **kwargs)
    dm.setup("fit")
    return dm


def on_rank(dm: ClassificationData, rank: int, world: int) -> None:
    """Attach a stand-in trainer: ``_rank_world`` / ``_device`` read only these attributes."""
    fake = SimpleNamespace(
        global_rank=rank,
        world_size=world,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    dm.trainer = cast(pl.Trainer, fake)


def drain(loader: TensorBatchLoader) -> dict[str, Tensor]:
    batches = list(loader)
    assert batches, "the loader yielded nothing"
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def by_id(data: ImageSet) -> dict[int, int]:
    """id -> row of ``data``."""
    return {int(i): r for r, i in enumerate(data.ids)}


# ---------------------------------------------------------------------------------------------
# Resolving forget classes
# ---------------------------------------------------------------------------------------------


def test_forget_by_index_sorted_and_retain_complement() -> None:
    dm = dm_for(forget_classes=[3, 1])
    assert dm.forget_class_indices == [1, 3]
    assert dm.retain_class_indices == [0, 2]
    assert dm.class_names == NAMES and dm.num_classes == 4 and dm.image_shape == (3, 4, 4)


def test_forget_by_name_and_mixed() -> None:
    assert dm_for(forget_classes=["dog", "ant"]).forget_class_indices == [0, 3]
    assert dm_for(forget_classes=["bee", 2]).forget_class_indices == [1, 2]


def test_quoted_digit_strings_are_indices() -> None:
    # YAML may quote numbers: "2" is class 2 when no class is named "2"; blanks are tolerated.
    assert dm_for(forget_classes=["2", " 0 "]).forget_class_indices == [0, 2]


def test_names_win_over_digit_strings() -> None:
    # Digit-named classes: "1" is the class *named* "1" (index 0 here), not index 1.
    assert resolve_classes(["1"], ("1", "0")) == [0]
    assert resolve_classes([1], ("1", "0")) == [1]
    assert resolve_classes(["3", 7], tuple(str(i) for i in range(10))) == [3, 7]


def test_digits_source_by_digit_name() -> None:
    dm = dm_for(Digits(), forget_classes=["3", 7])
    assert dm.forget_class_indices == [3, 7]
    assert set(dm.dataset("test", "forget").labels.tolist()) == {3, 7}


def test_forget_cifar_classes_by_name(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=4, n_test=10, names=list(CIFAR10_ALL_NAMES), noise_seed=0)
    dm = dm_for(CIFAR10(str(tmp_path), download=False), forget_classes=["truck", "cat"])
    assert dm.class_names == CIFAR_NAMES
    assert dm.forget_class_indices == [3, 9]
    assert set(dm.dataset("train", "forget").labels.tolist()) == {3, 9}
    assert set(dm.dataset("test", "retain").labels.tolist()) == set(range(10)) - {3, 9}
    # A name and an index may be mixed; the same class twice is refused.
    dm2 = dm_for(CIFAR10(str(tmp_path), download=False), forget_classes=["ship", 0])
    assert dm2.forget_class_indices == [0, 8]
    with pytest.raises(ValueError, match=r"class 3 is given twice"):
        dm_for(CIFAR10(str(tmp_path), download=False), forget_classes=["cat", 3])
    with pytest.raises(ValueError, match=r"no class named 'Cat'.*airplane, automobile"):
        dm_for(CIFAR10(str(tmp_path), download=False), forget_classes=["Cat"])


@pytest.mark.parametrize(
    ("forget", "match"),
    [
        (["zebra"], r"forget_classes: no class named 'zebra'; classes are: ant, bee, cat, dog"),
        (["-1"], r"no class named '-1'"),
        ([4], r"forget_classes: class index 4 is not in the label set 0\.\.3"),
        ([-1], r"class index -1 is not in the label set 0\.\.3"),
        (["7"], r"class index 7 is not in the label set 0\.\.3"),
        ([1, 1], r"class 1 is given twice"),
        (["bee", 1], r"class 1 is given twice"),
        ([1, "bee"], r"class 'bee' is given twice"),
        ([0, 1, 2, 3], r"every one of the 4 classes: at least one class must be retained"),
        (["ant", "bee", "cat", "dog"], r"at least one class must be retained"),
    ],
)
def test_bad_forget_classes(forget: list[int | str], match: str) -> None:
    dm = ClassificationData(ToySource(), forget_classes=forget)
    with pytest.raises(ValueError, match=match):
        dm.setup("fit")


def test_long_class_list_is_shortened_in_the_message() -> None:
    names = tuple(f"k{i}" for i in range(20))
    with pytest.raises(ValueError, match=r"classes are: k0, k1, .*k11, \.\.\.$"):
        resolve_classes(["nope"], names)


def test_no_forget_classes_is_plain_training() -> None:
    dm = dm_for()
    assert dm.forget_class_indices == [] and dm.retain_class_indices == [0, 1, 2, 3]
    assert len(dm.dataset("train", "forget")) == 0
    assert len(dm.dataset("train", "retain")) == sum(TRAIN_COUNTS)


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_without_some_class_is_refused(split: str) -> None:
    counts = (3, 0, 4, 0)  # no bee and no dog image
    empty = make_set(counts, seed=5)
    source = ToySource(**{split: empty})
    with pytest.raises(DataFormatError) as info:
        dm_for(source, forget_classes=[0])
    message = str(info.value)
    assert f"the {split} split has no image of class(es) ['bee', 'dog']" in message
    assert "toy" in message and "every class needs images in every split" in message


def test_empty_class_in_train_split_is_irrelevant_source_free() -> None:
    # The train split is never loaded in source-free mode, so its content cannot matter.
    source = ToySource(train=make_set((3, 0, 4, 0), seed=5))
    dm = dm_for(source, forget_classes=[1], mode="source_free")
    assert source.calls == ["test"] and dm.num_classes == 4


def test_train_and_test_must_agree() -> None:
    other = make_set(TEST_COUNTS, names=("ant", "bee", "cat", "eel"), seed=3)
    with pytest.raises(DataFormatError, match="train and test name different classes"):
        dm_for(ToySource(test=other))
    g = torch.Generator().manual_seed(0)
    small = ImageSet(
        torch.randint(0, 255, (4, 3, 2, 2), generator=g).to(torch.uint8),
        torch.arange(4),
        NAMES,
        torch.arange(4),
    )
    with pytest.raises(DataFormatError, match=r"train images are \(3, 4, 4\), test images"):
        dm_for(ToySource(test=small))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "dependent"}, r"mode must be 'data_dependent' or 'source_free', got 'dependent'"),
        ({"train_on": "forget"}, r"train_on must be 'all' or 'retain', got 'forget'"),
        ({"batch_size": 0}, r"batch sizes must be >= 1, got 0 and 512"),
        ({"eval_batch_size": -3}, r"batch sizes must be >= 1, got 64 and -3"),
        ({"val_fraction": 1.0}, r"val_fraction must lie in \[0, 1\), got 1\.0"),
        ({"val_fraction": -0.1}, r"val_fraction must lie in \[0, 1\), got -0\.1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    source = ToySource()
    with pytest.raises(ValueError, match=match):
        ClassificationData(source, **kwargs)
    assert source.calls == [], "arguments are checked before anything is loaded"


def test_bad_part_or_class_subset() -> None:
    dm = dm_for()
    with pytest.raises(ValueError, match="part must be train, val, test or synthetic"):
        dm.dataset("dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="classes must be all, retain or forget"):
        dm.dataset("test", "some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no validation split: set val_fraction > 0"):
        dm.dataset("val")
    assert dm.val_dataloader() == []


def test_repr_loads_nothing() -> None:
    source = ToySource()
    dm = ClassificationData(source, forget_classes=["ant"])
    assert "toy" in repr(dm) and "['ant']" in str(dm)
    assert source.calls == []


# ---------------------------------------------------------------------------------------------
# Retain / forget views and loaders
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["train", "test"])
def test_retain_and_forget_views(part: EvalPart) -> None:
    dm = dm_for(forget_classes=["bee", "dog"])
    full = dm.dataset(part)
    retain = dm.dataset(part, "retain")
    forget = dm.dataset(part, "forget")
    counts = TRAIN_COUNTS if part == "train" else TEST_COUNTS
    assert set(retain.labels.tolist()) == {0, 2} and set(forget.labels.tolist()) == {1, 3}
    assert retain.class_counts().tolist() == [counts[0], 0, counts[2], 0]
    assert forget.class_counts().tolist() == [0, counts[1], 0, counts[3]]
    # The views partition the split, keep ids and the rows' images.
    assert sorted(retain.ids.tolist() + forget.ids.tolist()) == sorted(full.ids.tolist())
    rows = by_id(full)
    for view in (retain, forget):
        idx = torch.tensor([rows[int(i)] for i in view.ids])
        assert torch.equal(full.images[idx], view.images)
        assert torch.equal(full.labels[idx], view.labels)
        assert view.class_names == NAMES


@pytest.mark.parametrize("train_on", ["retain", "all"])
def test_train_loader_classes(train_on: str) -> None:
    dm = dm_for(forget_classes=[1, 3], train_on=train_on, batch_size=5)
    loader = dm.train_dataloader()
    expected = dm.dataset("train", "retain" if train_on == "retain" else "all")
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        got = drain(loader)
        if train_on == "retain":
            assert not set(got["label"].tolist()) & {1, 3}
        else:
            assert set(got["label"].tolist()) == {0, 1, 2, 3}
        # One process: every row of the chosen classes exactly once per epoch.
        assert sorted(got["index"].tolist()) == sorted(expected.ids.tolist())
    assert len(loader) == -(-len(expected) // 5)


def test_train_loader_reshuffles_per_epoch_and_is_seeded() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        loader = dm_for(seed=seed).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return drain(loader)["index"].tolist()

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_loader_batches_are_dicts_in_stored_dtype_with_source_ids(dtype: torch.dtype) -> None:
    source = ToySource(
        train=make_set(TRAIN_COUNTS, dtype=dtype, seed=1),
        test=make_set(TEST_COUNTS, dtype=dtype, seed=2, id_start=500),
    )
    dm = dm_for(source, forget_classes=[0], eval_batch_size=4)
    for part, loader in (("train", dm.train_dataloader()), ("test", dm.test_dataloader())):
        data = source.sets[part]
        batches = list(loader)
        assert len(batches) == len(loader)
        for b in batches:
            assert set(b) == {"image", "label", "index"}
            assert b["image"].dtype == dtype and b["image"].shape[1:] == (3, 4, 4)
            assert b["label"].dtype == torch.int64 and b["index"].dtype == torch.int64
            assert b["image"].device.type == "cpu"
        got = drain(loader)
        rows = by_id(data)
        idx = torch.tensor([rows[int(i)] for i in got["index"]])  # KeyError: not a source id
        assert torch.equal(got["image"], data.images[idx])
        assert torch.equal(got["label"], data.labels[idx])
        assert sorted(got["index"].tolist()) == sorted(data.ids.tolist())
    # Evaluation batches keep the source order and use eval_batch_size.
    test = list(dm.test_dataloader())
    assert [len(b["label"]) for b in test] == [4, 4, 4, 3]
    assert torch.cat([b["index"] for b in test]).tolist() == source.sets["test"].ids.tolist()


def test_loader_batch_size_override_and_forget_loader() -> None:
    dm = dm_for(forget_classes=["cat"])
    loader = dm.loader("test", "forget", batch_size=2)
    got = drain(loader)
    assert [len(b["label"]) for b in loader] == [2, 1]
    assert got["label"].tolist() == [2, 2, 2]
    assert got["index"].tolist() == dm.dataset("test", "forget").ids.tolist()


@pytest.mark.parametrize("classes", ["all", "retain", "forget"])
def test_sharded_eval_loaders_partition_rows(classes: ClassSubset) -> None:
    dm = dm_for(forget_classes=[1], eval_batch_size=3)
    data = dm.dataset("test", classes)
    per_rank = []
    for rank in range(2):
        on_rank(dm, rank, 2)
        assert dm._rank_world() == (rank, 2)
        got = drain(dm.loader("test", classes))
        per_rank.append(got["index"].tolist())
        # Rows rank::2 of the split, in order.
        assert got["index"].tolist() == data.ids[rank::2].tolist()
        # shard=False: every row on every rank (audits fitting on all outputs).
        everything = drain(dm.loader("test", classes, shard=False))
        assert everything["index"].tolist() == data.ids.tolist()
    assert not set(per_rank[0]) & set(per_rank[1]), "no row on two ranks"
    assert sorted(per_rank[0] + per_rank[1]) == sorted(data.ids.tolist())
    assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1


def test_sharded_train_loader_gives_every_rank_the_same_step_count() -> None:
    dm = dm_for(forget_classes=[1], train_on="retain", batch_size=4)
    n = len(dm.dataset("train", "retain"))  # 6 + 10 + 12 = 28: odd shards would hang DDP
    shards = []
    for rank in range(2):
        on_rank(dm, rank, 2)
        got = drain(dm.train_dataloader())
        assert len(got["index"]) == -(-n // 2)
        assert 1 not in got["label"].tolist()
        shards.append(got["index"].tolist())
    assert set(shards[0] + shards[1]) == set(dm.dataset("train", "retain").ids.tolist())


def test_trainer_device_is_used() -> None:
    dm = dm_for()
    on_rank(dm, 0, 1)
    assert dm.test_dataloader().device == torch.device("cpu")
    assert dm._device() == torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Validation holdout
# ---------------------------------------------------------------------------------------------


def test_val_fraction_is_a_stratified_disjoint_seeded_holdout() -> None:
    source = ToySource()
    dm = dm_for(source, val_fraction=0.25, seed=3)
    train, val = dm.dataset("train"), dm.dataset("val")
    full = source.sets["train"]
    # Per class round(0.25 * n) (at least 1) held out: 6 -> 2 (1.5 rounds to 2), 8 -> 2, ...
    assert val.class_counts().tolist() == [round(0.25 * n) for n in TRAIN_COUNTS]
    assert (train.class_counts() + val.class_counts()).tolist() == list(TRAIN_COUNTS)
    assert not set(train.ids.tolist()) & set(val.ids.tolist())
    assert sorted(train.ids.tolist() + val.ids.tolist()) == sorted(full.ids.tolist())
    # Images stay attached to their ids.
    rows = by_id(full)
    idx = torch.tensor([rows[int(i)] for i in val.ids])
    assert torch.equal(val.images, full.images[idx]) and torch.equal(val.labels, full.labels[idx])
    # Seeded: the same seed gives the same holdout, another seed another.
    assert dm_for(val_fraction=0.25, seed=3).dataset("val").ids.tolist() == val.ids.tolist()
    assert dm_for(val_fraction=0.25, seed=4).dataset("val").ids.tolist() != val.ids.tolist()
    # The loader serves it; training never sees it.
    loaders = dm.val_dataloader()
    assert len(loaders) == 1 and drain(loaders[0])["index"].tolist() == val.ids.tolist()
    assert not set(drain(dm.train_dataloader())["index"].tolist()) & set(val.ids.tolist())


def test_small_fraction_still_holds_out_one_per_class() -> None:
    val = dm_for(val_fraction=0.01).dataset("val")
    assert val.class_counts().tolist() == [1, 1, 1, 1]
    forget_val = dm_for(val_fraction=0.01, forget_classes=["dog"]).dataset("val", "forget")
    assert forget_val.labels.tolist() == [3]


# ---------------------------------------------------------------------------------------------
# Normalisation statistics
# ---------------------------------------------------------------------------------------------


def direct_stats(images: Tensor) -> tuple[Tensor, Tensor]:
    x = images.double() / (255.0 if images.dtype == torch.uint8 else 1.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    return mean.float(), std.float()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalization_is_per_channel_mean_std_of_all_training_images(dtype: torch.dtype) -> None:
    train = make_set(TRAIN_COUNTS, dtype=dtype, seed=1)
    source = ToySource(train=train, test=make_set(TEST_COUNTS, dtype=dtype, seed=2))
    dm = dm_for(source, forget_classes=["dog"], train_on="retain", val_fraction=0.2)
    stats = dm.normalization()
    assert stats is not None
    mean, std = stats
    assert mean.shape == (3,) and std.shape == (3,) and mean.dtype == torch.float32
    want_mean, want_std = direct_stats(train.images)
    torch.testing.assert_close(mean, want_mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(std, want_std, rtol=0, atol=1e-6)
    assert bool((mean > 0).all()) and bool((mean < 1).all())
    # Forget classes (brightest here) and the validation holdout are included: the retain or
    # train-only statistics are clearly different.
    retain_mean, _ = direct_stats(dm.dataset("train", "retain").images)
    train_only_mean, _ = direct_stats(dm.dataset("train").images)
    assert float((mean - retain_mean).abs().min()) > 0.01
    assert not torch.allclose(mean, train_only_mean, atol=1e-5)
    # Identical for every train_on / forget set / holdout: Original and Retrain normalise alike.
    for kwargs in ({}, {"forget_classes": [0, 1, 2]}, {"val_fraction": 0.5, "seed": 9}):
        other = dm_for(ToySource(train=train), **kwargs).normalization()
        assert other is not None
        torch.testing.assert_close(other[0], mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(other[1], std, rtol=0, atol=1e-6)


def test_constant_channel_cannot_be_normalised() -> None:
    train = make_set(TRAIN_COUNTS, seed=1)
    images = train.images.clone()
    images[:, 2] = 7
    flat = ImageSet(images, train.labels, NAMES, train.ids)
    with pytest.raises(DataFormatError, match="constant"):
        dm_for(ToySource(train=flat))


# ---------------------------------------------------------------------------------------------
# Checkpoint state
# ---------------------------------------------------------------------------------------------


def test_state_dict_round_trip_and_refuses_other_label_sets() -> None:
    dm = dm_for(forget_classes=["cat"])
    state = dm.state_dict()
    assert state == {"source": "toy", "class_names": list(NAMES), "forget_classes": [2]}
    dm_for(forget_classes=[0]).load_state_dict(state)  # same labels: accepted
    dm.load_state_dict({})  # no stored state: nothing to check
    other_names = ("ant", "bee", "cat", "eel")
    other = dm_for(
        ToySource(
            train=make_set(TRAIN_COUNTS, names=other_names, seed=1),
            test=make_set(TEST_COUNTS, names=other_names, seed=2),
        )
    )
    with pytest.raises(ValueError) as info:
        other.load_state_dict(state)
    message = str(info.value)
    assert "trained on 4 classes (ant, bee, cat, dog) from 'toy'" in message
    assert "this data has 4 classes (ant, bee, cat, eel" in message
    with pytest.raises(ValueError, match=r"trained on 2 classes \(x, y\)"):
        check_same_classes({"class_names": ["x", "y"]}, NAMES)
    with pytest.raises(ValueError, match=r"\(dog, cat, bee, ant\)"):
        check_same_classes({"class_names": list(reversed(NAMES))}, NAMES)  # order matters
    check_same_classes({"class_names": list(NAMES)}, NAMES)


# ---------------------------------------------------------------------------------------------
# Source-free mode: the training split is never touched
# ---------------------------------------------------------------------------------------------


def test_source_free_asks_the_source_only_for_test() -> None:
    source = ToySource()
    dm = ClassificationData(source, forget_classes=["bee"], mode="source_free", val_fraction=0.2)
    dm.setup("fit")
    dm.setup("test")
    _ = (dm.class_names, dm.image_shape, dm.forget_class_indices, dm.normalization())
    drain(dm.test_dataloader())
    drain(dm.loader("test", "forget"))
    dm.state_dict()
    dm.attach_synthetic(torch.rand(4, 3, 4, 4), torch.tensor([0, 2, 3, 0]))
    drain(dm.train_dataloader())
    assert dm.val_dataloader() == []
    assert source.calls == ["test"]
    # Data-dependent mode loads each split once, however often it is set up.
    dd = ToySource()
    dm_dd = dm_for(dd)
    dm_dd.setup("test")
    assert dd.calls == ["test", "train"]


def test_source_free_api_without_training_data() -> None:
    dm = dm_for(forget_classes=[1], mode="source_free", val_fraction=0.3)
    assert dm.has_training_data is False
    assert dm.normalization() is None
    for call in (
        lambda: dm.dataset("train"),
        lambda: dm.dataset("train", "retain"),
        lambda: dm.loader("train"),
        lambda: dm.loader("train", "forget", shuffle=True),
        lambda: dm.dataset("val"),
        lambda: dm.loader("val"),
    ):
        with pytest.raises(RuntimeError, match=r"source_free mode serves no training data"):
            call()
    with pytest.raises(RuntimeError, match=r"no synthetic samples attached.*attach_synthetic"):
        dm.train_dataloader()
    with pytest.raises(RuntimeError, match="attach_synthetic"):
        dm.dataset("synthetic")
    assert dm.val_dataloader() == []
    # The test split serves evaluation as usual.
    test = drain(dm.test_dataloader())
    assert sorted(test["index"].tolist()) == sorted(dm.dataset("test").ids.tolist())
    assert dm_for().has_training_data is True


def test_attach_synthetic_serves_exactly_those_samples() -> None:
    dm = dm_for(forget_classes=[1], mode="source_free", batch_size=3)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(7, 3, 4, 4, generator=g)
    labels = torch.tensor([0, 2, 3, 0, 2, 3, 1])
    dm.attach_synthetic(images, labels)
    loader = dm.train_dataloader()
    assert len(loader) == 3
    got = drain(loader)
    order = torch.argsort(got["index"])
    assert got["index"][order].tolist() == list(range(7))
    assert got["image"].dtype == torch.float32
    assert torch.equal(got["image"][order], images)
    assert torch.equal(got["label"][order], labels)
    # Views of the synthetic part by class, and re-attaching replaces the samples.
    assert dm.dataset("synthetic", "forget").labels.tolist() == [1]
    dm.attach_synthetic(images[:2], labels[:2])
    assert sorted(drain(dm.train_dataloader())["index"].tolist()) == [0, 1]
    # Attaching is not a way around the missing training split.
    with pytest.raises(RuntimeError):
        dm.dataset("train")
    assert dm.normalization() is None


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2]), r"synthetic images are \(1, 4, 4\)"),
        (torch.rand(3, 3, 4, 5), torch.tensor([0, 1, 2]), r"the data is \(3, 4, 4\)"),
        (torch.rand(3, 3, 4, 4), torch.tensor([0, 1, 4]), r"do not fit: labels span 0\.\.4"),
        (torch.rand(3, 3, 4, 4), torch.tensor([0, -1, 2]), r"do not fit: labels span -1"),
        (torch.rand(3, 3, 4, 4), torch.tensor([0, 1]), r"do not fit: 3 images but labels"),
        (torch.rand(3, 3, 4, 4) * 2, torch.tensor([0, 1, 2]), r"do not fit.*\[0, 1\]"),
        (torch.rand(3, 3, 4, 4) - 0.5, torch.tensor([0, 1, 2]), r"do not fit.*\[0, 1\]"),
        (torch.full((3, 3, 4, 4), float("nan")), torch.tensor([0, 1, 2]), r"finite"),
    ],
)
def test_attach_synthetic_validates(images: Tensor, labels: Tensor, match: str) -> None:
    dm = dm_for(mode="source_free")
    with pytest.raises(ValueError, match=match):
        dm.attach_synthetic(images, labels)
    with pytest.raises(RuntimeError, match="attach_synthetic"):
        dm.train_dataloader()


# --- on tiny CIFAR-10 files whose training batches are gone ----------------------------------


def _fetch_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fetch(url: str, dest: Path, timeout: float = 30.0) -> None:
        calls.append(url)
        raise DownloadError(f"could not download {url}: no network in tests")

    monkeypatch.setattr(dl, "fetch", fetch)
    return calls


def _open_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every path opened through ``Path.open``, ``builtins.open`` or ``io.open``."""
    opened: list[str] = []
    real_path_open, real_open = Path.open, builtins.open

    def path_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(self))
        return real_path_open(self, *args, **kwargs)

    def plain_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(Path, "open", path_open)
    monkeypatch.setattr(builtins, "open", plain_open)
    monkeypatch.setattr(io, "open", plain_open)
    return opened


def _tiny_cifar(root: Path) -> Path:
    # 20 train images (2 per class) and 10 test images (1 per class), noisy pixels.
    return write_cifar10(root, per_batch=4, n_test=10, names=list(CIFAR10_ALL_NAMES), noise_seed=1)


def _evaluate(dm: ClassificationData) -> dict[str, float]:
    """What evaluation of a source-free run does: the model brings its normalisation, the
    DataModule only the test images."""
    model = SmallCNN(num_classes=10, in_channels=3, image_size=32, channels=[4], hidden=8)
    task = ClassificationTask(model)
    task.attach_data(dm)
    assert not bool(task.input_stats_set), "no statistics come from a source-free DataModule"
    task.set_input_stats(torch.full((3,), 0.5), torch.full((3,), 0.25))  # from the checkpoint
    logits, labels, ids = task.predict_logits(dm.test_dataloader())
    assert logits.shape == (10, 10) and ids.tolist() == list(range(10))
    metric = ClassAccuracy(10)
    metric.update(logits, labels)
    correct, total = metric.counts()
    assert total.tolist() == [1] * 10
    return dict(task.summarize(correct, total))


def test_source_free_cifar_needs_no_training_batch_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _tiny_cifar(tmp_path)
    train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
    for p in train_files:
        p.unlink()
    fetches = _fetch_spy(monkeypatch)
    opened = _open_spy(monkeypatch)
    # download=True: the source-free run must not even try to fetch the missing batches.
    dm = ClassificationData(
        CIFAR10(str(tmp_path), download=True), forget_classes=["cat"], mode="source_free"
    )
    dm.setup("test")
    assert not fetches
    test = drain(dm.test_dataloader())
    assert test["image"].shape == (10, 3, 32, 32) and test["image"].dtype == torch.uint8
    assert sorted(test["label"].tolist()) == list(range(10))
    result = _evaluate(dm)
    assert set(result) >= {"acc", "A_r", "A_f", "acc_class/cat", "acc_class/truck"}
    assert 0.0 <= result["A_r"] <= 1.0 and result["A_f"] in (0.0, 1.0)
    assert str(folder / "test_batch") in opened, "the spy sees the reader's opens"
    assert not [p for p in opened if "data_batch" in p]

    # A data-dependent run on the same folder needs the training batches and says which.
    dd = ClassificationData(CIFAR10(str(tmp_path), download=False), forget_classes=["cat"])
    with pytest.raises(DataNotFoundError) as info:
        dd.setup("fit")
    for p in train_files:
        assert str(p) in str(info.value)
    assert "download disabled" in str(info.value)
    with pytest.raises(DataNotFoundError, match="download failed"):
        ClassificationData(CIFAR10(str(tmp_path), download=True)).setup("fit")
    assert fetches == [CIFAR10.archive.url]


def test_source_free_cifar_with_corrupted_training_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _tiny_cifar(tmp_path)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(b"\x80\x04 this is not a pickle")
    opened = _open_spy(monkeypatch)
    dm = dm_for(CIFAR10(str(tmp_path), download=False), forget_classes=[3, 5], mode="source_free")
    assert dm.has_training_data is False and dm.normalization() is None
    assert len(drain(dm.loader("test", "forget"))["label"]) == 2
    _evaluate(dm)
    assert not [p for p in opened if "data_batch" in p]
    with pytest.raises(DataFormatError, match=r"data_batch_1: not a readable CIFAR pickle"):
        dm_for(CIFAR10(str(tmp_path), download=False), forget_classes=[3, 5])
    assert [p for p in opened if "data_batch_1" in p], "the data-dependent run did read them"


def test_data_dependent_cifar_opens_the_training_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Control for the spy: with intact files a data-dependent run opens all five batches.
    _tiny_cifar(tmp_path)
    opened = _open_spy(monkeypatch)
    dm = dm_for(CIFAR10(str(tmp_path), download=False), forget_classes=["airplane"])
    assert {Path(p).name for p in opened} >= {f"data_batch_{i}" for i in range(1, 6)}
    assert len(dm.dataset("train")) == 20 and dm.has_training_data
    stats = dm.normalization()
    assert stats is not None
    mean, std = direct_stats(dm.dataset("train").images)
    torch.testing.assert_close(stats[0], mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(stats[1], std, rtol=0, atol=1e-6)
