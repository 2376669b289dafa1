"""The image-classification DataModule: forget classes, retain/forget loaders, source-free mode.

Class unlearning (DSDA, paper 004, Sec. 3.1) splits the label set Y into forget classes C_f and
retain classes C_r = Y minus C_f. This DataModule resolves C_f from indices or names and serves:

* ``data_dependent`` mode: the train split (all classes, or the retain classes only with
  ``train_on="retain"``: Retrain and Fine-tune), and retain / forget views of every split for
  methods and audits that need D_r or D_f (:meth:`ClassificationData.loader`);
* ``source_free`` mode: **no training data at all**. The training split is never loaded (the
  source is only asked for ``test``), the only training batches are what a synthesis method
  attached with :meth:`ClassificationData.attach_synthetic`, and the test split serves
  evaluation only. Normalisation then comes with the model (it is part of the task's
  checkpoint), never from training images.

Batches are ``{"image", "label", "index"}`` dicts gathered from whole tensors on the training
device (:class:`~lit_unlearn.datamodules.loaders.TensorBatchLoader`): no per-sample collate.
Images keep their stored dtype; the task converts and normalises on the device.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from lit_unlearn.datamodules.images.base import ImageSet, ImageSource
from lit_unlearn.datamodules.loaders import ShardedIndexSampler, TensorBatchLoader, on_device
from lit_unlearn.datamodules.schema import DataFormatError

__all__ = ["ClassMode", "ClassSubset", "ClassificationData", "EvalPart"]

logger = logging.getLogger(__name__)

ClassMode = Literal["data_dependent", "source_free"]
ClassSubset = Literal["all", "retain", "forget"]
EvalPart = Literal["train", "val", "test", "synthetic"]


def resolve_classes(
    requested: list[int | str], class_names: tuple[str, ...], what: str = "forget_classes"
) -> list[int]:
    """Class indices of ``requested`` (indices or names), in the order given.

    A string that is a class name is that class; otherwise a string of digits is an index
    (YAML may quote numbers). Names win: CIFAR's names are words, digits' names are "0".."9"
    and equal their indices.

    Raises:
        ValueError: A class is unknown, out of range or repeated.
    """
    out: list[int] = []
    for item in requested:
        if isinstance(item, str) and item in class_names:
            index = class_names.index(item)
        elif isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit()):
            index = int(item)
            if not 0 <= index < len(class_names):
                raise ValueError(
                    f"{what}: class index {index} is not in the label set 0..{len(class_names) - 1}"
                )
        else:
            shown = ", ".join(class_names[:12]) + (", ..." if len(class_names) > 12 else "")
            raise ValueError(f"{what}: no class named {item!r}; classes are: {shown}")
        if index in out:
            raise ValueError(f"{what}: class {item!r} is given twice")
        out.append(index)
    return out


class ClassificationData(pl.LightningDataModule):
    """Image classification data with a forget-class set, in data-dependent or source-free mode.

    Args:
        source: Where the images come from (``Digits``, ``MNIST5k``, ``CIFAR10``,
            ``CIFAR100``, ``ImageFolder``...).
        forget_classes: C_f, by index or name; empty for plain training. At least one class
            must remain.
        mode: ``data_dependent`` (training data available) or ``source_free`` (none: only
            synthetic batches a method attaches, test data for evaluation).
        train_on: ``all`` classes (Original) or ``retain`` only (Retrain, Fine-tune).
        batch_size: Training batch size (per process under DDP).
        eval_batch_size: Evaluation batch size.
        val_fraction: Share of every training class held out as a validation split (seeded,
            stratified); 0 serves no validation loader, as the paper selects no checkpoint.
        seed: Seed of the validation split and of the shuffling order.
    """

    def __init__(
        self,
        source: ImageSource,
        forget_classes: list[int | str] | None = None,
        mode: ClassMode = "data_dependent",
        train_on: Literal["all", "retain"] = "all",
        batch_size: int = 64,
        eval_batch_size: int = 512,
        val_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("data_dependent", "source_free"):
            raise ValueError(f"mode must be 'data_dependent' or 'source_free', got {mode!r}")
        if train_on not in ("all", "retain"):
            raise ValueError(f"train_on must be 'all' or 'retain', got {train_on!r}")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {eval_batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        self.source = source
        self.requested_forget: list[int | str] = list(forget_classes or [])
        self.mode: ClassMode = mode
        self.train_on = train_on
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self._splits: dict[str, ImageSet] = {}
        self._class_names: tuple[str, ...] | None = None
        self._forget: list[int] = []
        self._stats: tuple[Tensor, Tensor] | None = None
        self._synthetic: ImageSet | None = None
        self._fingerprint: dict[str, dict[str, str]] | None = None

    def __repr__(self) -> str:
        # LightningDataModule.__str__ builds every dataloader to print their sizes: that would
        # load the data (and jsonargparse prints DataModules while linking arguments).
        return (
            f"{type(self).__name__}(source={self.source.name}, mode={self.mode}, "
            f"forget_classes={self.requested_forget}, train_on={self.train_on})"
        )

    __str__ = __repr__

    # ------------------------------------------------------------------ loading
    def setup(self, stage: str) -> None:
        self.load()

    def load(self) -> None:
        """Load the splits the mode allows (once) and validate the forget-class request."""
        if self._splits:
            return
        test = self.source.load("test")
        splits = {"test": test}
        if self.mode == "data_dependent":
            train = self.source.load("train")
            if train.class_names != test.class_names:
                raise DataFormatError(f"{self.source.name}: train and test name different classes")
            if train.image_shape != test.image_shape:
                raise DataFormatError(
                    f"{self.source.name}: train images are {train.image_shape}, test images "
                    f"{test.image_shape}"
                )
            if self.val_fraction > 0:
                train, val = _stratified_holdout(train, self.val_fraction, self.seed)
                splits["val"] = val
            splits["train"] = train
        names = test.class_names
        forget = resolve_classes(self.requested_forget, names)
        if len(forget) == len(names):
            raise ValueError(
                f"forget_classes names every one of the {len(names)} classes: at least one "
                "class must be retained"
            )
        for split_name, data in splits.items():
            counts = data.class_counts()
            empty = [names[c] for c in range(len(names)) if int(counts[c]) == 0]
            if empty:
                raise DataFormatError(
                    f"{self.source.name}: the {split_name} split has no image of class(es) "
                    f"{empty}; every class needs images in every split (A_r / A_f and "
                    "per-class accuracy are undefined otherwise)"
                )
        self._class_names = names
        self._forget = forget
        self._splits = splits
        if "train" in splits:
            self._stats = _channel_stats(self._full_train())
        logger.info(
            "%s: %s, forget classes %s",
            self.source.name,
            ", ".join(f"{k} {len(v)}" for k, v in splits.items()),
            [names[c] for c in forget],
        )

    def _full_train(self) -> ImageSet:
        if "val" not in self._splits:
            return self._splits["train"]
        a, b = self._splits["train"], self._splits["val"]
        return ImageSet(
            torch.cat([a.images, b.images]),
            torch.cat([a.labels, b.labels]),
            a.class_names,
            torch.cat([a.ids, b.ids]),
        )

    # ------------------------------------------------------------------ what the data is
    @property
    def class_names(self) -> tuple[str, ...]:
        self.load()
        assert self._class_names is not None
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images."""
        self.load()
        return self._splits["test"].image_shape

    @property
    def forget_class_indices(self) -> list[int]:
        """C_f as indices (sorted)."""
        self.load()
        return sorted(self._forget)

    @property
    def retain_class_indices(self) -> list[int]:
        """C_r = Y minus C_f (sorted)."""
        forget = set(self.forget_class_indices)
        return [c for c in range(self.num_classes) if c not in forget]

    @property
    def has_training_data(self) -> bool:
        """True in data-dependent mode (training images are loaded)."""
        self.load()
        return "train" in self._splits

    def normalization(self) -> tuple[Tensor, Tensor] | None:
        """Per-channel mean and std of the whole train split in [0, 1] units.

        Computed on every training image (also those of forget classes and of a validation
        holdout), so Original and Retrain normalise their inputs identically. None in
        source-free mode: the statistics come with the model being unlearned.
        """
        self.load()
        return self._stats

    # ------------------------------------------------------------------ source-free synthesis
    def attach_synthetic(self, images: Tensor, labels: Tensor) -> None:
        """Serve synthetic samples (made from the model) as the training data.

        Args:
            images: float32 ``[N, C, H, W]`` in [0, 1] (the raw input range the task
                normalises), shaped like the dataset's images.
            labels: int64 ``[N]`` class indices (the class each sample was synthesised for).

        Raises:
            ValueError: Shapes or labels do not fit the dataset.
        """
        self.load()
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"synthetic images are {tuple(images.shape[1:])}, the data is {self.image_shape}"
            )
        n = int(images.shape[0])
        ids = torch.arange(n, dtype=torch.int64)
        try:
            self._synthetic = ImageSet(
                images.detach().to("cpu", torch.float32),
                labels.to("cpu", torch.int64),
                self.class_names,
                ids,
            )
        except DataFormatError as err:
            raise ValueError(f"synthetic samples do not fit: {err}") from err

    # ------------------------------------------------------------------ loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def dataset(self, part: EvalPart, classes: ClassSubset = "all") -> ImageSet:
        """The images of ``part`` restricted to ``classes``.

        Raises:
            RuntimeError: ``part`` is a training split in source-free mode (it is never
                loaded), or synthetic samples were requested before any were attached.
            ValueError: Unknown part or class subset, or no validation split configured.
        """
        self.load()
        if part == "synthetic":
            if self._synthetic is None:
                raise RuntimeError(
                    "no synthetic samples attached: a source-free method must call "
                    "attach_synthetic() before training"
                )
            data = self._synthetic
        elif part in ("train", "val") and self.mode == "source_free":
            raise RuntimeError(
                f"source_free mode serves no training data: the {part} split is never loaded "
                "(use mode=data_dependent, or a synthesis method)"
            )
        elif part == "val" and "val" not in self._splits:
            raise ValueError("no validation split: set val_fraction > 0")
        elif part in self._splits:
            data = self._splits[part]
        else:
            raise ValueError(f"part must be train, val, test or synthetic, got {part!r}")
        if classes == "all":
            return data
        if classes not in ("retain", "forget"):
            raise ValueError(f"classes must be all, retain or forget, got {classes!r}")
        chosen = self.forget_class_indices if classes == "forget" else self.retain_class_indices
        mask = torch.isin(data.labels, torch.tensor(chosen, dtype=torch.int64))
        return data.subset(mask)

    def loader(
        self,
        part: EvalPart,
        classes: ClassSubset = "all",
        shuffle: bool = False,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        shard: bool = True,
    ) -> TensorBatchLoader:
        """Batches of ``part`` / ``classes`` for this rank.

        Shuffled loaders give every rank an equal number of rows (training under DDP);
        unshuffled ones give rows ``rank::world_size`` with no duplicates, so per-class sums
        over ranks equal the single-process sums. ``shard=False`` serves every row to every
        rank (audits that fit a model on all outputs).
        """
        data = self.dataset(part, classes)
        rank, world = self._rank_world() if shard else (0, 1)
        sampler = ShardedIndexSampler(
            len(data),
            batch_size or (self.batch_size if shuffle else self.eval_batch_size),
            shuffle=shuffle,
            seed=self.seed,
            rank=rank,
            world_size=world,
            even_shards=shuffle,
        )
        columns = {"image": data.images, "label": data.labels, "index": data.ids}
        return TensorBatchLoader(columns, sampler, device=device or self._device())

    def train_dataloader(self) -> TensorBatchLoader:
        if self.mode == "source_free":
            return self.loader("synthetic", "all", shuffle=True)
        classes: ClassSubset = "retain" if self.train_on == "retain" else "all"
        return self.loader("train", classes, shuffle=True)

    def val_dataloader(self) -> list[TensorBatchLoader]:
        if self.mode == "source_free" or "val" not in self._splits:
            return []
        return [self.loader("val")]

    def test_dataloader(self) -> TensorBatchLoader:
        return self.loader("test")

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        if on_device(batch, device):  # gathered on the training device by our loaders
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ------------------------------------------------------------------ checkpoint state
    def fingerprint(self) -> dict[str, dict[str, str]]:
        """What a checkpoint trained on this data records of it (:mod:`lit_unlearn.fingerprint`).

        ``content``: the class names, the image shape, digests of the test split and, with
        training data, of the whole training split (train and validation holdout together, so
        the holdout settings do not matter). The forget classes are not part of it: the model
        to unlearn was trained before they were chosen. ``config``: source and split settings.
        """
        if self._fingerprint is None:
            from lit_unlearn.fingerprint import describe_object, digest

            self.load()
            test = self._splits["test"]
            content = {
                "classes": f"{self.num_classes}: {', '.join(self.class_names)}",
                "image shape": str(list(self.image_shape)),
                "test images": f"{len(test)}, sha256 {digest(test.ids, test.labels, test.images)}",
            }
            if "train" in self._splits:
                train = self._full_train()
                order = train.ids.argsort()  # the holdout reorders rows, not the data
                content["train images"] = (
                    f"{len(train)}, sha256 "
                    f"{digest(train.ids[order], train.labels[order], train.images[order])}"
                )
            config = {
                "source": describe_object(self.source),
                "split": f"val_fraction={self.val_fraction}, seed={self.seed}",
            }
            self._fingerprint = {"content": content, "config": config}
        return self._fingerprint

    def state_dict(self) -> dict[str, Any]:
        """The label set and the forget classes, so a checkpoint cannot meet other data."""
        return {
            "source": self.source.name,
            "class_names": list(self.class_names),
            "forget_classes": self.forget_class_indices,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        check_same_classes(state_dict, self.class_names)


def check_same_classes(state: dict[str, Any], class_names: tuple[str, ...]) -> None:
    """Refuse a checkpoint trained on another label set.

    Raises:
        ValueError: The stored class names differ from ``class_names``.
    """
    stored = tuple(state.get("class_names", ()))
    if stored and stored != class_names:
        shown = ", ".join(stored[:6]) + ("..." if len(stored) > 6 else "")
        raise ValueError(
            f"the checkpoint was trained on {len(stored)} classes ({shown}) from "
            f"{state.get('source', '?')!r}; this data has {len(class_names)} classes "
            f"({', '.join(class_names[:6])}...)"
        )


def _stratified_holdout(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Per class, a seeded permutation puts ``round(fraction * n)`` rows (>= 1) into holdout."""
    gen = torch.Generator().manual_seed(seed)
    held: list[Tensor] = []
    for c in range(data.num_classes):
        rows = torch.nonzero(data.labels == c).flatten()
        if len(rows) < 2:
            continue  # a class with one image stays in train (its emptiness is checked later)
        k = max(1, round(fraction * len(rows)))
        held.append(rows[torch.randperm(len(rows), generator=gen)[:k]])
    mask = torch.zeros(len(data), dtype=torch.bool)
    if held:
        mask[torch.cat(held)] = True
    return data.subset(~mask), data.subset(mask)


def _channel_stats(data: ImageSet) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std over all pixels, in [0, 1] units (chunked: no float copy)."""
    c = data.image_shape[0]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    scale = 255.0 if data.images.dtype == torch.uint8 else 1.0
    for chunk in data.images.split(4096):
        x = chunk.to(torch.float64) / scale
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    n = data.images.shape[0] * data.images.shape[2] * data.images.shape[3]
    mean = total / n
    std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
    if bool((std < 1e-8).any()):
        raise DataFormatError(
            "a channel of the training images is constant (std 0): cannot normalise"
        )
    return mean.float(), std.float()
