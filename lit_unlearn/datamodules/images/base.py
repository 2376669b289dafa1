"""Image sets and the sources that load them, one split at a time.

A source loads ``train`` and ``test`` separately, so the source-free mode of
:class:`~lit_unlearn.datamodules.classification.ClassificationData` can evaluate on the test
split without ever opening a training file. Images stay in their stored dtype (``uint8`` 0..255
or ``float32`` in [0, 1]): a CIFAR-10 train split is 150 MB as bytes and 600 MB as floats, and
the task converts and normalises each batch on the device (normalisation is part of the model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lit_unlearn.datamodules.schema import DataFormatError

__all__ = ["ImageSet", "ImageSource", "Split"]

Split = Literal["train", "test"]


@dataclass(frozen=True)
class ImageSet:
    """Aligned images and integer labels of one split.

    Attributes:
        images: ``uint8`` (0..255) or ``float32`` (0..1) tensor ``[N, C, H, W]``.
        labels: ``int64`` tensor ``[N]`` of class indices into ``class_names``.
        class_names: Name of every class of the dataset (also those absent from this split).
        ids: ``int64`` tensor ``[N]``: each image's position in the source's own order (the
            official file order), so exported outputs can be matched to the raw data.
    """

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    ids: Tensor

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise DataFormatError(
                f"images must be [N, C, H, W], got shape {tuple(self.images.shape)}"
            )
        if self.images.dtype not in (torch.uint8, torch.float32):
            raise DataFormatError(f"images must be uint8 or float32, got {self.images.dtype}")
        n = int(self.images.shape[0])
        if self.labels.shape != (n,) or self.ids.shape != (n,):
            raise DataFormatError(
                f"{n} images but labels {tuple(self.labels.shape)}, ids {tuple(self.ids.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.ids.dtype != torch.int64:
            raise DataFormatError("labels and ids must be int64")
        if len(set(self.class_names)) != len(self.class_names):
            raise DataFormatError(f"class names repeat: {self.class_names}")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise DataFormatError(
                f"labels span {int(self.labels.min())}..{int(self.labels.max())} but there are "
                f"{len(self.class_names)} classes"
            )
        if (
            n
            and self.images.dtype == torch.float32
            and (
                not bool(torch.isfinite(self.images).all())
                or float(self.images.min()) < 0
                or float(self.images.max()) > 1
            )
        ):
            raise DataFormatError("float32 images must be finite and lie in [0, 1]")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, index: Tensor) -> ImageSet:
        """The rows ``index`` (a LongTensor or BoolTensor mask), same class names."""
        return ImageSet(self.images[index], self.labels[index], self.class_names, self.ids[index])

    def class_counts(self) -> Tensor:
        """Images per class, ``[num_classes]``."""
        return torch.bincount(self.labels, minlength=self.num_classes)


class ImageSource(ABC):
    """Loads one split of an image dataset; no state beyond its configuration."""

    #: Short name used in messages and reports.
    name: str = "images"

    @abstractmethod
    def load(self, split: Split) -> ImageSet:
        """The ``train`` or ``test`` split (each split opens only its own files).

        Raises:
            DataNotFoundError: The files are missing (the message names them and how to get
                them).
            DataFormatError: The files are there but malformed.
        """
